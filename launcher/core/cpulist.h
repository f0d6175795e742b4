// CPU lists in the kernel's notation ("0-15,17"), as used by profiles,
// /proc/PID/status (Cpus_allowed_list) and sysfs (cpu/online).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pl {

/// Parses "0-3,8,10-11" into the ordered CPUs it names, keeping the written
/// order and duplicates (so a caller can detect a CPU named twice).
/// Returns nullopt for anything else (empty items, reversed ranges, signs,
/// CPUs above 8191). Whitespace is not allowed.
std::optional<std::vector<int>> parse_cpulist(std::string_view text);

/// Formats a set of CPUs in the kernel's compact notation: {0,1,2,5} -> "0-2,5".
/// Input need not be sorted; duplicates are ignored.
std::string format_cpulist(std::vector<int> cpus);

}  // namespace pl
