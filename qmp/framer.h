// Incremental framing of a stream of JSON values, as QMP sends them.
//
// QEMU ends each message with CRLF, but a monitor with pretty=on spreads one
// object over many lines, and a message may arrive one byte at a time or many
// in one read. So the framer does not split lines: it scans bytes with a small
// state machine (string/escape state and a bracket stack) to find where each
// top-level object or array ends, and only then parses those bytes with
// nlohmann_json. Whitespace between values (CR, LF, blank lines) is skipped.
//
// Errors are found as early as the bytes allow: a byte that cannot appear in
// JSON outside a string, a control character inside a string, a mismatched
// bracket or a top-level scalar fails at once, without waiting for more input.
// A value longer than max_message fails as soon as its first max_message bytes
// are scanned, so memory stays bounded by max_message plus one fed chunk.
//
// The framer is pure (no I/O). It is strict, as a client must be with a
// misbehaving QEMU: after an error it stays failed until reset(); values
// completed before the bad bytes are still returned. A QMP server must
// forgive its clients instead: the control socket uses qmp/server_parser.h.
#pragma once

#include <cstddef>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace qmp {

class Framer {
 public:
  static constexpr std::size_t kDefaultMaxMessage = 16u << 20;  // 16 MiB
  static constexpr std::size_t kMaxNesting = 1024;              // as QEMU's parser

  explicit Framer(std::size_t max_message = kDefaultMaxMessage) : max_message_(max_message) {}

  /// Appends bytes and scans them. Never throws; a framing error is remembered
  /// and reported by next() after the values that precede it.
  void feed(std::string_view bytes);

  /// The next complete value, or nullopt when more bytes are needed. Throws
  /// qmp::Error(ErrorKind::protocol) once every value before an error has
  /// been returned (and on every later call, until reset()).
  std::optional<nlohmann::json> next();

  /// True once the stream is known to be bad.
  bool failed() const { return !error_.empty(); }
  /// Bytes held: the unparsed part of the stream (for memory checks).
  std::size_t buffered() const { return buf_.size(); }
  /// The largest buffered() ever reached.
  std::size_t max_buffered() const { return max_buffered_; }

  /// Forgets everything, including an error.
  void reset();

 private:
  void fail(std::string message);
  void scan();

  std::size_t max_message_;
  std::string buf_;        // the value being scanned and what follows (feed() drops the rest)
  std::size_t pos_ = 0;    // next byte to scan
  std::size_t start_ = 0;  // start of the value being scanned
  bool in_value_ = false;
  bool in_string_ = false;
  bool escape_ = false;
  std::string stack_;  // open brackets of the value being scanned
  std::deque<std::pair<std::size_t, std::size_t>> complete_;  // [begin, end) of whole values
  std::string error_;
  std::size_t max_buffered_ = 0;
};

}  // namespace qmp
