#include "qmp/server_parser.h"

#include <cerrno>
#include <cstdlib>
#include <utility>

namespace qmp {

using json = nlohmann::json;

namespace {

bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }

/// A token's bytes as printable UTF-8, for an error message (the JSON writer
/// refuses invalid UTF-8): bytes >= 0x80 become U+FFFD, NUL is dropped as in
/// QEMU (whose messages are C strings).
std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == 0) break;
    if (c >= 0x80) {
      out += "\xEF\xBF\xBD";
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// Decodes one UTF-8 sequence at s[i]: the code point and its length, or
/// nothing when it is invalid (overlong, surrogate, beyond U+10FFFF, cut
/// short). "\xC0\x80" is U+0000, as in QEMU's modified UTF-8.
std::optional<std::pair<std::uint32_t, std::size_t>> decode_utf8(std::string_view s,
                                                                 std::size_t i) {
  auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  unsigned char c = b(0);
  std::size_t n;
  std::uint32_t cp;
  if (c < 0x80) return std::pair<std::uint32_t, std::size_t>{c, 1};
  if (c == 0xC0 && i + 1 < s.size() && b(1) == 0x80)
    return std::pair<std::uint32_t, std::size_t>{0, 2};
  if ((c & 0xE0) == 0xC0) {
    n = 2, cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, cp = c & 0x07;
  } else {
    return std::nullopt;
  }
  if (i + n > s.size()) return std::nullopt;
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xC0) != 0x80) return std::nullopt;
    cp = (cp << 6) | (b(k) & 0x3F);
  }
  static constexpr std::uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return std::nullopt;
  return std::pair<std::uint32_t, std::size_t>{cp, n};
}

int hex_value(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/// Four hex digits at s[i], or -1.
long hex4(std::string_view s, std::size_t i) {
  if (i + 4 > s.size()) return -1;
  long v = 0;
  for (std::size_t k = 0; k < 4; ++k) {
    int h = hex_value(s[i + k]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

}  // namespace

// ---- lexer -------------------------------------------------------------------

void ServerParser::feed(std::string_view bytes) {
  for (char c : bytes) {
    feed_byte(static_cast<unsigned char>(c));
    // Nor may the token being lexed take the message past the limit (QEMU's
    // lexer checks the token alone, and then lexes the rest of it afresh).
    if (token_size_ + token_.size() > max_message_) {
      token_.clear();
      emit_error("JSON token size limit exceeded");
      state_ = State::start;
    }
  }
}

void ServerParser::feed_byte(unsigned char c) {
  // Each pass either consumes c, or ends a token that needed c as lookahead
  // and looks at c again from the start state.
  for (;;) {
    auto consume = [&](State next) {
      token_ += static_cast<char>(c);
      state_ = next;
    };
    auto error = [&] {  // c is part of the bad token, as in QEMU
      token_ += static_cast<char>(c);
      token(Tok::error);
      state_ = State::recovery;
    };
    auto finish = [&](Tok t) {  // ends a token without c: look at c again
      token(t);
      state_ = State::start;
    };
    switch (state_) {
      case State::recovery:
        if (c < 0x20 ? c != '\t'
                     : (c >= 0xFE || c == '[' || c == ']' || c == '{' || c == '}' || c == ':' ||
                        c == ',')) {
          token_.clear();
          state_ = State::start;
          continue;
        }
        return;
      case State::dq_string:
      case State::sq_string: {
        char quote = state_ == State::dq_string ? '"' : '\'';
        if (c < 0x20 || c >= 0xFE) return error();
        if (c == '\\')
          return consume(state_ == State::dq_string ? State::dq_escape : State::sq_escape);
        token_ += static_cast<char>(c);
        if (c == static_cast<unsigned char>(quote)) {
          token(Tok::string);
          state_ = State::start;
        }
        return;
      }
      case State::dq_escape:
      case State::sq_escape:
        if (c < 0x20 || c >= 0xFE) return error();
        return consume(state_ == State::dq_escape ? State::dq_string : State::sq_string);
      case State::zero:
        if (is_digit(c)) return error();
        if (c == '.') return consume(State::mantissa);
        finish(Tok::integer);
        continue;
      case State::sign:
        if (c == '0') return consume(State::zero);
        if (is_digit(c)) return consume(State::digits);
        return error();
      case State::digits:
        if (is_digit(c)) return consume(State::digits);
        if (c == 'e' || c == 'E') return consume(State::exp_e);
        if (c == '.') return consume(State::mantissa);
        finish(Tok::integer);
        continue;
      case State::mantissa:
        if (is_digit(c)) return consume(State::mantissa_digits);
        return error();
      case State::mantissa_digits:
        if (is_digit(c)) return consume(State::mantissa_digits);
        if (c == 'e' || c == 'E') return consume(State::exp_e);
        finish(Tok::floating);
        continue;
      case State::exp_e:
        if (c == '-' || c == '+') return consume(State::exp_sign);
        if (is_digit(c)) return consume(State::exp_digits);
        return error();
      case State::exp_sign:
        if (is_digit(c)) return consume(State::exp_digits);
        return error();
      case State::exp_digits:
        if (is_digit(c)) return consume(State::exp_digits);
        finish(Tok::floating);
        continue;
      case State::keyword:
        if (is_lower(c)) return consume(State::keyword);
        finish(Tok::keyword);
        continue;
      case State::start:
        switch (c) {
          case ' ':
          case '\t':
          case '\r':
          case '\n':
            return;
          case '"':
            return consume(State::dq_string);
          case '\'':
            return consume(State::sq_string);
          case '0':
            return consume(State::zero);
          case '-':
            return consume(State::sign);
          case '{':
            token_ = "{";
            return token(Tok::lcurly);
          case '}':
            token_ = "}";
            return token(Tok::rcurly);
          case '[':
            token_ = "[";
            return token(Tok::lsquare);
          case ']':
            token_ = "]";
            return token(Tok::rsquare);
          case ':':
            token_ = ":";
            return token(Tok::colon);
          case ',':
            token_ = ",";
            return token(Tok::comma);
          default:
            if (is_digit(c)) return consume(State::digits);
            if (is_lower(c)) return consume(State::keyword);
            return error();
        }
    }
  }
}

// ---- streamer ----------------------------------------------------------------

void ServerParser::token(Tok type) {
  std::string text = std::move(token_);
  token_.clear();
  switch (type) {
    case Tok::lcurly:
      ++braces_;
      break;
    case Tok::rcurly:
      --braces_;
      break;
    case Tok::lsquare:
      ++brackets_;
      break;
    case Tok::rsquare:
      --brackets_;
      break;
    case Tok::error:
      return emit_error("JSON parse error, stray '" + printable(text) + "'");
    default:
      break;
  }
  // Limits, checked before the token is kept (as QEMU does).
  if (token_size_ + text.size() + 1 > max_message_) {
    return emit_error("JSON token size limit exceeded");
  }
  if (tokens_.size() + 1 > kMaxTokens) return emit_error("JSON token count limit exceeded");
  if (braces_ + brackets_ > static_cast<long>(kMaxNesting)) {
    return emit_error("JSON nesting depth limit exceeded");
  }
  token_size_ += text.size();
  tokens_.push_back(Token{type, std::move(text)});
  if ((braces_ > 0 || brackets_ > 0) && braces_ >= 0 && brackets_ >= 0) return;
  emit_value();
}

void ServerParser::emit_error(std::string message) {
  tokens_.clear();
  token_size_ = 0;
  braces_ = brackets_ = 0;
  items_.push_back(Item{std::nullopt, std::move(message)});
}

// ---- parser ------------------------------------------------------------------

namespace {

/// Recursive descent over the tokens of one message; the first error wins.
template <class Token, class Tok>
class TokenParser {
 public:
  explicit TokenParser(const std::vector<Token>& tokens) : t_(tokens) {}

  std::optional<json> parse() { return value(); }
  const std::string& error() const { return error_; }

 private:
  const Token* peek() const { return i_ < t_.size() ? &t_[i_] : nullptr; }
  const Token* pop() { return i_ < t_.size() ? &t_[i_++] : nullptr; }
  std::nullopt_t fail(const std::string& message) {
    if (error_.empty()) error_ = "JSON parse error, " + message;
    return std::nullopt;
  }

  std::optional<json> value() {
    const Token* t = peek();
    if (!t) return fail("premature EOI");
    switch (t->type) {
      case Tok::lcurly:
        return object();
      case Tok::lsquare:
        return array();
      case Tok::string:
        return string(*pop());
      case Tok::integer:
      case Tok::floating:
        return number(*pop());
      case Tok::keyword: {
        const std::string& k = pop()->text;
        if (k == "true") return json(true);
        if (k == "false") return json(false);
        if (k == "null") return json(nullptr);
        return fail("invalid keyword '" + k + "'");
      }
      default:
        return fail("expecting value");
    }
  }

  std::optional<json> object() {
    pop();  // {
    json obj = json::object();
    const Token* t = peek();
    if (!t) return fail("premature EOI");
    if (t->type == Tok::rcurly) {
      pop();
      return obj;
    }
    for (;;) {
      if (!pair(obj)) return std::nullopt;
      t = pop();
      if (!t) return fail("premature EOI");
      if (t->type == Tok::rcurly) return obj;
      if (t->type != Tok::comma) return fail("expected separator in dict");
    }
  }

  bool pair(json& obj) {
    const Token* k = peek();
    if (!k) return fail("premature EOI"), false;
    if (k->type != Tok::string) return fail("key is not a string in object"), false;
    std::optional<json> key = string(*pop());
    if (!key) return false;
    const Token* colon = pop();
    if (!colon) return fail("premature EOI"), false;
    if (colon->type != Tok::colon) return fail("missing : in object pair"), false;
    std::optional<json> v = value();
    if (!v) return fail("Missing value in dict"), false;
    const std::string& name = key->template get_ref<const std::string&>();
    if (obj.contains(name)) return fail("duplicate key"), false;
    obj[name] = std::move(*v);
    return true;
  }

  std::optional<json> array() {
    pop();  // [
    json arr = json::array();
    const Token* t = peek();
    if (!t) return fail("premature EOI");
    if (t->type == Tok::rsquare) {
      pop();
      return arr;
    }
    for (;;) {
      std::optional<json> v = value();
      if (!v) return fail("expecting value");
      arr.push_back(std::move(*v));
      t = pop();
      if (!t) return fail("premature EOI");
      if (t->type == Tok::rsquare) return arr;
      if (t->type != Tok::comma) return fail("expected separator in list");
    }
  }

  std::optional<json> string(const Token& t) {
    std::string_view s = t.text;
    char quote = s.front();
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 1; i < s.size() && s[i] != quote;) {
      if (s[i] == '\\') {
        std::size_t begin = i;
        ++i;
        char e = i < s.size() ? s[i++] : '\0';
        switch (e) {
          case '"':
          case '\'':
          case '\\':
          case '/':
            out += e;
            break;
          case 'b':
            out += '\b';
            break;
          case 'f':
            out += '\f';
            break;
          case 'n':
            out += '\n';
            break;
          case 'r':
            out += '\r';
            break;
          case 't':
            out += '\t';
            break;
          case 'u': {
            long cp = hex4(s, i);
            if (cp < 0) return fail("invalid hex escape sequence in string");
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && i + 1 < s.size() && s[i] == '\\' &&
                s[i + 1] == 'u') {
              long low = hex4(s, i + 2);
              if (low >= 0xDC00 && low <= 0xDFFF) {
                cp = 0x10000 + ((cp & 0x3FF) << 10) + (low & 0x3FF);
                i += 6;
              } else {
                cp = -1;
              }
            }
            if (cp < 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
              return fail(printable(s.substr(begin, i - begin)) +
                          " is not a valid Unicode character");
            }
            append_utf8(out, static_cast<std::uint32_t>(cp));
            break;
          }
          default:
            return fail("invalid escape sequence in string");
        }
        continue;
      }
      auto cp = decode_utf8(s, i);
      if (!cp) return fail("invalid UTF-8 sequence in string");
      if (cp->first == 0) {
        out += '\0';
      } else {
        out.append(s.substr(i, cp->second));
      }
      i += cp->second;
    }
    return json(std::move(out));
  }

  std::optional<json> number(const Token& t) {
    const char* s = t.text.c_str();
    if (t.type == Tok::integer) {
      // int64 if it fits, else uint64, else a double (as QEMU's QNum).
      errno = 0;
      long long v = std::strtoll(s, nullptr, 10);
      if (errno == 0) return json(static_cast<std::int64_t>(v));
      if (s[0] != '-') {
        errno = 0;
        unsigned long long u = std::strtoull(s, nullptr, 10);
        if (errno == 0) return json(static_cast<std::uint64_t>(u));
      }
    }
    return json(std::strtod(s, nullptr));
  }

  const std::vector<Token>& t_;
  std::size_t i_ = 0;
  std::string error_;
};

}  // namespace

void ServerParser::emit_value() {
  TokenParser<Token, Tok> p(tokens_);
  std::optional<json> v = p.parse();
  tokens_.clear();
  token_size_ = 0;
  braces_ = brackets_ = 0;
  if (v) {
    items_.push_back(Item{std::move(v), {}});
  } else {
    items_.push_back(Item{std::nullopt, p.error()});
  }
}

std::optional<ServerParser::Item> ServerParser::next() {
  if (items_.empty()) return std::nullopt;
  Item it = std::move(items_.front());
  items_.pop_front();
  return it;
}

void ServerParser::reset() {
  state_ = State::start;
  token_.clear();
  tokens_.clear();
  token_size_ = 0;
  braces_ = brackets_ = 0;
  items_.clear();
}

}  // namespace qmp
