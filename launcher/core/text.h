// Small text helpers shared by the command line builder and the CLI.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pl {

/// Quotes one argument for a POSIX shell so that it can be pasted: plain words
/// stay as they are, anything else is single-quoted.
std::string shell_quote(std::string_view arg);

/// Escapes a value inside a QEMU option string ("a,b" -> "a,,b"), so that a
/// path holding commas cannot inject further options.
std::string qemu_escape(std::string_view value);

/// Joins strings with a separator.
std::string join(const std::vector<std::string>& parts, std::string_view sep);

}  // namespace pl
