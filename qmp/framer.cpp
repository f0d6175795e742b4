#include "qmp/framer.h"

#include <algorithm>
#include <cstdio>

#include "qmp/error.h"

namespace qmp {
namespace {

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Bytes that may appear outside strings inside a JSON value: structure,
// numbers and the letters of true, false and null. Anything else can never
// become valid JSON, so it is reported without waiting for the value's end.
bool is_value_byte(unsigned char c) {
  switch (c) {
    case ':':
    case ',':
    case '-':
    case '+':
    case '.':
    case 't':
    case 'r':
    case 'u':
    case 'e':
    case 'E':
    case 'f':
    case 'a':
    case 'l':
    case 's':
    case 'n':
      return true;
    default:
      return is_space(c) || (c >= '0' && c <= '9');
  }
}

std::string describe(unsigned char c) {
  char out[16];
  if (c >= 0x20 && c < 0x7f) {
    std::snprintf(out, sizeof out, "'%c'", c);
  } else {
    std::snprintf(out, sizeof out, "byte 0x%02x", c);
  }
  return out;
}

}  // namespace

void Framer::reset() {
  buf_.clear();
  buf_.shrink_to_fit();
  pos_ = start_ = 0;
  in_value_ = in_string_ = escape_ = false;
  stack_.clear();
  complete_.clear();
  error_.clear();
}

void Framer::fail(std::string message) {
  error_ = std::move(message);
  // Keep only the values completed before the error; free the rest at once,
  // so that an oversize message does not stay in memory.
  std::size_t keep = complete_.empty() ? 0 : complete_.back().second;
  buf_.resize(keep);
  buf_.shrink_to_fit();
  pos_ = start_ = keep;
  in_value_ = in_string_ = escape_ = false;
  stack_.clear();
}

void Framer::feed(std::string_view bytes) {
  if (failed()) return;
  // Drop what was returned or skipped, so the buffer holds at most the value
  // being scanned plus this chunk.
  std::size_t keep_from = !complete_.empty() ? complete_.front().first : in_value_ ? start_ : pos_;
  if (keep_from > 0) {
    buf_.erase(0, keep_from);
    pos_ -= keep_from;
    start_ = in_value_ ? start_ - keep_from : 0;
    for (auto& [b, e] : complete_) b -= keep_from, e -= keep_from;
    if (buf_.capacity() > (1u << 20) && buf_.size() < buf_.capacity() / 4) buf_.shrink_to_fit();
  }
  buf_.append(bytes);
  max_buffered_ = std::max(max_buffered_, buf_.size());
  scan();
}

void Framer::scan() {
  const auto* d = reinterpret_cast<const unsigned char*>(buf_.data());
  const std::size_t n = buf_.size();
  for (; pos_ < n; ++pos_) {
    unsigned char c = d[pos_];
    if (!in_value_) {
      if (is_space(c)) continue;
      if (c != '{' && c != '[') {
        return fail("expected a JSON object, got " + describe(c));
      }
      in_value_ = true;
      start_ = pos_;
      stack_.assign(1, static_cast<char>(c));
      continue;
    }
    if (pos_ - start_ >= max_message_) {
      return fail("message larger than " + std::to_string(max_message_) + " bytes");
    }
    if (in_string_) {
      if (escape_) {
        escape_ = false;  // the escape's validity is left to the parser
      } else if (c == '\\') {
        escape_ = true;
      } else if (c == '"') {
        in_string_ = false;
      } else if (c < 0x20) {
        return fail("invalid JSON: control character (" + describe(c) + ") inside a string");
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string_ = true;
        break;
      case '{':
      case '[':
        if (stack_.size() >= kMaxNesting) {
          return fail("invalid JSON: nested deeper than " + std::to_string(kMaxNesting) +
                      " levels");
        }
        stack_.push_back(static_cast<char>(c));
        break;
      case '}':
      case ']':
        if (stack_.back() != (c == '}' ? '{' : '[')) {
          return fail("invalid JSON: mismatched " + describe(c));
        }
        stack_.pop_back();
        if (stack_.empty()) {
          complete_.emplace_back(start_, pos_ + 1);
          in_value_ = false;
        }
        break;
      default:
        if (!is_value_byte(c)) return fail("invalid JSON: unexpected " + describe(c));
    }
  }
}

std::optional<nlohmann::json> Framer::next() {
  if (!complete_.empty()) {
    auto [b, e] = complete_.front();
    complete_.pop_front();
    try {
      return nlohmann::json::parse(buf_.begin() + static_cast<std::ptrdiff_t>(b),
                                   buf_.begin() + static_cast<std::ptrdiff_t>(e));
    } catch (const nlohmann::json::exception& ex) {
      // parse_error, and also out_of_range for numbers such as 1e400.
      complete_.clear();
      fail(std::string("invalid JSON: ") + ex.what());
    }
  }
  if (failed()) throw Error(ErrorKind::protocol, error_);
  return std::nullopt;
}

}  // namespace qmp
