// qmp::ServerParser: QEMU's monitor input rules, fed as bytes.
#include "qmp/server_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace qmp {
namespace {

using json = nlohmann::json;

/// "v:<compact json>" or "e:<error>" for each message in `input`.
std::vector<std::string> parse(const std::string& input, size_t chunk = 0,
                               size_t max = ServerParser::kDefaultMaxMessage) {
  ServerParser p(max);
  std::vector<std::string> out;
  auto drain = [&] {
    while (auto it = p.next())
      out.push_back(it->value ? "v:" + it->value->dump() : "e:" + it->error);
  };
  if (chunk == 0) {
    p.feed(input);
  } else {
    for (size_t i = 0; i < input.size(); i += chunk) p.feed(input.substr(i, chunk));
  }
  drain();
  return out;
}

using V = std::vector<std::string>;

TEST(ServerParser, ObjectsOneAfterAnotherInAnyChunking) {
  std::string in = "{\"execute\": \"a\", \"id\": 1}\r\n{'execute':'b','id':[1,{\"x\":null}]}";
  V want = {R"(v:{"execute":"a","id":1})", R"(v:{"execute":"b","id":[1,{"x":null}]})"};
  for (size_t chunk : {0, 1, 2, 7}) EXPECT_EQ(parse(in, chunk), want) << chunk;
}

TEST(ServerParser, SingleQuotedStringsAndTheApostropheEscape) {
  EXPECT_EQ(parse(R"({'a': 'it\'s "x"', "b": "\'"})"), V{R"(v:{"a":"it's \"x\"","b":"'"})"});
}

TEST(ServerParser, ScalarsAreValuesTheServerRefuses) {
  EXPECT_EQ(parse("42\n\"s\"\ntrue\n"), (V{"v:42", "v:\"s\"", "v:true"}));
  // A number or keyword ends only at the next byte, as in QEMU.
  EXPECT_EQ(parse("42"), V{});
}

TEST(ServerParser, StrayBytesAreErrorsAndTheLexerResynchronises) {
  // 'X' is an error; the rest up to '{' is skipped.
  EXPECT_EQ(parse("XYZ{\"a\":1}"), (V{"e:JSON parse error, stray 'X'", R"(v:{"a":1})"}));
  // A control byte inside a string: the partial object is dropped, one error.
  EXPECT_EQ(parse("{\"a\": \"x\x01 junk\n{\"b\":2}"),
            (V{"e:JSON parse error, stray '\"x\x01'", R"(v:{"b":2})"}));
  EXPECT_EQ(parse(std::string("\0\n", 2)), V{"e:JSON parse error, stray ''"});
  EXPECT_EQ(parse("\xff{}"), (V{"e:JSON parse error, stray '\xEF\xBF\xBD'", "v:{}"}));
  // After an error a newline restarts lexing: the object after it counts.
  EXPECT_EQ(parse("X junk \"\n{}"), (V{"e:JSON parse error, stray 'X'", "v:{}"}));
}

TEST(ServerParser, ParserErrorsNameWhatIsWrong) {
  EXPECT_EQ(parse("xyz\n"), V{"e:JSON parse error, invalid keyword 'xyz'"});
  EXPECT_EQ(parse("{\"a\":1,\"a\":2}"), V{"e:JSON parse error, duplicate key"});
  EXPECT_EQ(parse("{\"a\" 1}"), V{"e:JSON parse error, missing : in object pair"});
  EXPECT_EQ(parse("{\"a\":1 \"b\":2}"), V{"e:JSON parse error, expected separator in dict"});
  EXPECT_EQ(parse("{1:2}"), V{"e:JSON parse error, key is not a string in object"});
  EXPECT_EQ(parse("[1 2]"), V{"e:JSON parse error, expected separator in list"});
  EXPECT_EQ(parse("}"), V{"e:JSON parse error, expecting value"});
  EXPECT_EQ(parse("\"\\q\""), V{"e:JSON parse error, invalid escape sequence in string"});
  EXPECT_EQ(parse("\"\\ud800\""),
            V{"e:JSON parse error, \\ud800 is not a valid Unicode character"});
}

TEST(ServerParser, InvalidUtf8InAStringIsAParseErrorLikeAnyOther) {
  EXPECT_EQ(parse("{\"id\":\"\xc3\x28\"}{\"ok\":1}"),
            (V{"e:JSON parse error, invalid UTF-8 sequence in string", R"(v:{"ok":1})"}));
  EXPECT_EQ(parse("\"\xed\xa0\x80\""), V{"e:JSON parse error, invalid UTF-8 sequence in string"});
  EXPECT_EQ(parse("\"\xe2\x82\xac \\u20ac \\ud83d\\ude00\""), V{"v:\"€ € 😀\""});
}

TEST(ServerParser, NumbersAsQemuReadsThem) {
  ServerParser p;
  p.feed("[-0, 9223372036854775807, 18446744073709551615, 18446744073709551616, 1e5, 0.5]");
  auto it = p.next();
  ASSERT_TRUE(it && it->value);
  const json& a = *it->value;
  EXPECT_TRUE(a[0].is_number_integer());
  EXPECT_EQ(a[1].get<int64_t>(), INT64_MAX);
  EXPECT_TRUE(a[2].is_number_unsigned());
  EXPECT_TRUE(a[3].is_number_float());
  EXPECT_EQ(a[4], 100000.0);
  EXPECT_EQ(parse("05 "), V{"e:JSON parse error, stray '05'"});
}

TEST(ServerParser, NestingDeeperThan1024IsRefusedAsQemuDoes) {
  std::string ok = std::string(1024, '[') + std::string(1024, ']');
  EXPECT_EQ(parse(ok).size(), 1u);
  EXPECT_EQ(parse(ok)[0].substr(0, 2), "v:");
  V deep = parse(std::string(1025, '[') + "\n");
  ASSERT_EQ(deep.size(), 1u);
  EXPECT_EQ(deep[0], "e:JSON nesting depth limit exceeded");
}

TEST(ServerParser, AMessageOverTheSizeLimitIsAnErrorAndMemoryStaysBounded) {
  ServerParser p(1000);
  std::string big = "{\"execute\":\"x\",\"id\":\"" + std::string(5000, 'a') + "\"}\n{}";
  for (char c : big) {
    p.feed(std::string_view(&c, 1));
    EXPECT_LE(p.buffered(), 1001u);
  }
  auto first = p.next();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->error, "JSON token size limit exceeded");
  // The parser goes on; the last item is the {} after the newline.
  std::optional<ServerParser::Item> last, it;
  while ((it = p.next())) last = it;
  ASSERT_TRUE(last && last->value);
  EXPECT_EQ(*last->value, json::object());
}

TEST(ServerParser, ResetForgetsPartialInput) {
  ServerParser p;
  p.feed("{\"a\": [1, ");
  p.reset();
  p.feed("{}");
  auto it = p.next();
  ASSERT_TRUE(it && it->value);
  EXPECT_EQ(*it->value, json::object());
}

}  // namespace
}  // namespace qmp
