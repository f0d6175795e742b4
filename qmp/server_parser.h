// Input parsing for a QMP *server*: forgiving, like QEMU's own monitor.
//
// The QMP client's Framer (qmp/framer.h) is strict on purpose: a QEMU that
// sends bad bytes is broken, and the client gives up on it. A server must not
// give up on a client for bad bytes: QEMU's monitor answers each malformed
// input with an error and carries on. This parser follows QEMU's three stages
// (qobject/json-lexer.c, json-streamer.c, json-parser.c) so a client sees the
// same results from passlaunch's control socket as from QEMU's socket:
//
// 1. Lexer: bytes to tokens. QEMU's extensions are accepted: single-quoted
//    strings and the \' escape. A byte that cannot start or continue a token
//    (an upper-case letter, a control byte, 0xFE/0xFF, a control byte inside
//    a string, ...) is an error token; the lexer then skips input up to the
//    next structural character ({ } [ ] : ,), ASCII control byte (newline
//    included; tab excepted) or 0xFE/0xFF and starts afresh there. So a client
//    can always resynchronise by sending a newline or a control byte.
// 2. Streamer: counts braces and brackets; when they return to zero (or go
//    negative) the tokens so far form one message. Limits, as QEMU's: nesting
//    depth 1024 and 2^21 tokens per message; size per message max_message
//    (QEMU: 64 MiB). A limit hit is an error, and the tokens so far are
//    dropped.
// 3. Parser: the tokens of one message to a JSON value, or an error: invalid
//    UTF-8 in a string, a bad escape, a duplicate key, an unknown keyword, a
//    missing separator...
//
// Each message yields exactly one Item: a JSON value (any type: whether it is
// a valid QMP command is for the server to decide) or an error whose text is
// QEMU's ("JSON parse error, ..."). Items come out in input order. Incomplete
// input at the end of the stream yields nothing (QEMU discards it too).
//
// Pure: no I/O, never throws for any input. Memory stays within about
// max_message plus the bytes of one feed() call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qmp {

class ServerParser {
 public:
  static constexpr std::size_t kDefaultMaxMessage = 8u << 20;  // 8 MiB (QEMU: 64 MiB)
  static constexpr std::size_t kMaxNesting = 1024;             // as QEMU
  static constexpr std::size_t kMaxTokens = 2u << 20;          // as QEMU

  /// One message: a value, or (value empty) an error description.
  struct Item {
    std::optional<nlohmann::json> value;
    std::string error;  ///< "JSON parse error, ..." when !value
  };

  explicit ServerParser(std::size_t max_message = kDefaultMaxMessage) : max_message_(max_message) {}

  /// Scans `bytes`; every message they complete is queued for next().
  void feed(std::string_view bytes);
  /// The next message, in input order, or nullopt.
  std::optional<Item> next();
  /// Forgets partial input and queued items.
  void reset();

  /// Bytes held by the partial message (tokens and the token being lexed).
  std::size_t buffered() const { return token_size_ + token_.size(); }

 private:
  enum class Tok : std::uint8_t {
    lcurly,
    rcurly,
    lsquare,
    rsquare,
    colon,
    comma,
    integer,
    floating,
    keyword,
    string,
    error,
  };
  enum class State : std::uint8_t {
    start,
    recovery,
    dq_string,
    dq_escape,
    sq_string,
    sq_escape,
    zero,
    sign,
    digits,
    mantissa,
    mantissa_digits,
    exp_e,
    exp_sign,
    exp_digits,
    keyword,
  };
  struct Token {
    Tok type;
    std::string text;
  };

  void feed_byte(unsigned char c);
  void token(Tok type);
  void emit_value();
  void emit_error(std::string message);

  std::size_t max_message_;
  State state_ = State::start;
  std::string token_;          // the token being lexed
  std::vector<Token> tokens_;  // the message being collected
  std::size_t token_size_ = 0;
  long braces_ = 0, brackets_ = 0;
  std::deque<Item> items_;
};

}  // namespace qmp
