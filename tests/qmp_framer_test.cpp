#include <gtest/gtest.h>

#include "qmp/error.h"
#include "qmp/framer.h"

namespace qmp {
namespace {

using json = nlohmann::json;

std::vector<json> drain(Framer& f) {
  std::vector<json> out;
  while (auto v = f.next()) out.push_back(*v);
  return out;
}

// Expects the stream to fail with a protocol error mentioning `what`.
void expect_protocol_error(Framer& f, const std::string& what) {
  try {
    drain(f);
    FAIL() << "no error; expected " << what;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::protocol);
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(QmpFramer, SplitsSeveralMessagesInOneChunk) {
  Framer f;
  f.feed("{\"a\":1}\r\n{\"b\":[1,2]}\r\n{\"c\":\"}\"}\r\n");
  auto v = drain(f);
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[0], json({{"a", 1}}));
  EXPECT_EQ(v[1], json({{"b", {1, 2}}}));
  EXPECT_EQ(v[2], json({{"c", "}"}}));  // a brace inside a string does not end it
}

TEST(QmpFramer, ByteByByteYieldsEachMessageOnceComplete) {
  std::string stream =
      "{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}\r\n"
      "{\"return\": {\"s\": \"a\\\"b\\\\\"}, \"id\": 1}\r\n";
  Framer f;
  std::vector<json> got;
  for (char c : stream) {
    f.feed(std::string_view(&c, 1));
    for (auto& v : drain(f)) got.push_back(v);
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1]["return"]["s"], "a\"b\\");
  EXPECT_LE(f.buffered(), 1u);  // consumed bytes are dropped on the next feed
}

TEST(QmpFramer, PrettyMultiLineBareLfAndBlankLines) {
  json msg = {{"return", {{"list", {1, 2, {{"x", "y"}}}}}}, {"id", 7}};
  std::string pretty = msg.dump(4);  // spread over many lines, LF only
  ASSERT_NE(pretty.find('\n'), std::string::npos);
  Framer f;
  f.feed("\n\r\n\n" + pretty + "\n\n" + pretty + "\r\n\r\n   \t\n");
  auto v = drain(f);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0], msg);
  EXPECT_EQ(v[1], msg);
}

TEST(QmpFramer, AdjacentValuesWithoutSeparator) {
  Framer f;
  f.feed("{}[1]{\"a\":{}}");
  EXPECT_EQ(drain(f).size(), 3u);
}

TEST(QmpFramer, GarbageFailsAtOnceWithoutWaitingForMore) {
  Framer f;
  f.feed("garbage");
  expect_protocol_error(f, "expected a JSON object");
  EXPECT_TRUE(f.failed());
}

TEST(QmpFramer, ImpossibleByteInsideAnOpenValueFailsAtOnce) {
  Framer f;
  f.feed("{\"return\": oops");  // unfinished, but can never become JSON
  expect_protocol_error(f, "unexpected 'o'");
}

TEST(QmpFramer, MismatchedBracketFailsAtOnce) {
  Framer f;
  f.feed("{\"a\": [1}");
  expect_protocol_error(f, "mismatched");
}

TEST(QmpFramer, ControlCharacterInStringFailsAtOnce) {
  Framer f;
  f.feed("{\"a\": \"line\nbreak");
  expect_protocol_error(f, "control character");
}

TEST(QmpFramer, CompleteButInvalidJsonFailsWhenParsed) {
  Framer f;
  f.feed("{\"a\" 1}\r\n");
  expect_protocol_error(f, "invalid JSON");
}

TEST(QmpFramer, ValuesBeforeAnErrorAreStillReturned) {
  Framer f;
  f.feed("{\"ok\":1}\r\n#");
  auto first = f.next();
  ASSERT_TRUE(first);
  EXPECT_EQ((*first)["ok"], 1);
  expect_protocol_error(f, "'#'");
  expect_protocol_error(f, "'#'");  // sticky
  f.reset();
  f.feed("{}");
  EXPECT_TRUE(f.next());
}

TEST(QmpFramer, TopLevelScalarIsRejected) {
  Framer f;
  f.feed("42\r\n");
  expect_protocol_error(f, "expected a JSON object");
}

TEST(QmpFramer, OversizeMessageFailsWithBoundedMemory) {
  const std::size_t limit = 1 << 20;
  Framer f(limit);
  f.feed("{\"return\": \"");
  std::string chunk(64 * 1024, 'a');
  std::size_t fed = 0;
  while (!f.failed() && fed < 4 * limit) {
    f.feed(chunk);
    fed += chunk.size();
    EXPECT_LE(f.buffered(), limit + chunk.size());
  }
  EXPECT_TRUE(f.failed());
  EXPECT_LE(fed, limit + chunk.size());  // detected as soon as the limit is passed
  EXPECT_LE(f.max_buffered(), limit + chunk.size() + 16);
  EXPECT_EQ(f.buffered(), 0u);  // the oversize bytes are freed at once
  expect_protocol_error(f, "larger than 1048576 bytes");
}

TEST(QmpFramer, MessageOfExactlyTheLimitIsAccepted) {
  std::string msg = "{\"s\":\"" + std::string(100, 'x') + "\"}";
  Framer f(msg.size());
  f.feed(msg + "\r\n");
  EXPECT_EQ(drain(f).size(), 1u);
  Framer g(msg.size() - 1);
  g.feed(msg);
  expect_protocol_error(g, "larger than");
}

TEST(QmpFramer, DefaultLimitIs16MiB) { EXPECT_EQ(Framer::kDefaultMaxMessage, 16u * 1024 * 1024); }

TEST(QmpFramer, DeepNestingIsRejected) {
  Framer f;
  f.feed(std::string(Framer::kMaxNesting + 1, '['));
  expect_protocol_error(f, "nested deeper");
}

TEST(QmpFramer, BufferIsCompactedAcrossManyMessages) {
  Framer f;
  std::string one = "{\"event\":\"X\",\"data\":{}}\r\n";
  for (int i = 0; i < 10000; ++i) {
    f.feed(one);
    ASSERT_EQ(drain(f).size(), 1u);
  }
  EXPECT_LE(f.max_buffered(), 2 * one.size());
}

TEST(QmpFramer, Utf8AndEscapesSurvive) {
  Framer f;
  f.feed("{\"s\":\"h\\u00e9 \xc3\xa9 \\n\"}");
  auto v = drain(f);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0]["s"], "h\xc3\xa9 \xc3\xa9 \n");
}

}  // namespace
}  // namespace qmp

namespace qmp {
namespace {

// nlohmann reports a number out of range (1e400) as out_of_range, not
// parse_error: still a protocol error of the stream, reported at once.
TEST(QmpFramer, NumberOutOfRangeIsAProtocolError) {
  Framer f;
  f.feed("{\"return\": 1e400}\r\n");
  expect_protocol_error(f, "1e400");
  EXPECT_TRUE(f.failed());
}

}  // namespace
}  // namespace qmp
