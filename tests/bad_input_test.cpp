// Bad input through the real binary: every case is one clear error with its
// documented exit code, never a crash. The profiles are in tests/bad_input/ and
// their expected exit codes and messages in tests/bad_input/cases.txt; what a
// file cannot hold (deep nesting, binary junk, symlink loops, a directory) is
// made here.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace pl {
namespace {

namespace fs = std::filesystem;

const std::string kBase =
    R"("name": "t", "memory": {"size_mib": 64}, "cpu": {"vcpus": 1, "model": "max"})";

/// `passlaunch run PROFILE --dry-run`: expects `code` and every fragment in the output,
/// and no sign of a crash.
void expect_rejected(const std::string& profile, int code,
                     const std::vector<std::string>& fragments) {
  test::TempDir runtime;
  auto [got, out] = test::passlaunch_cmd({"run", profile, "--dry-run"}, runtime.path());
  EXPECT_EQ(got, code) << profile << "\n" << out;
  for (const std::string& f : fragments) {
    EXPECT_NE(out.find(f), std::string::npos) << profile << ": no \"" << f << "\" in\n" << out;
  }
  EXPECT_EQ(out.find("terminate called"), std::string::npos) << out;
  EXPECT_EQ(out.find("internal error"), std::string::npos) << out;
}

std::string write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// Each line of cases.txt: FILE <tab> EXIT <tab> FRAGMENT (a file may have several lines).
TEST(BadInput, CorpusProfilesGiveTheirExitCodeAndMessage) {
  const std::string dir = std::string(PL_SOURCE_DIR) + "/tests/bad_input";
  std::ifstream cases(dir + "/cases.txt");
  ASSERT_TRUE(cases) << dir << "/cases.txt";
  std::map<std::string, std::pair<int, std::vector<std::string>>> want;
  std::string line;
  while (std::getline(cases, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string file, code, fragment;
    ASSERT_TRUE(std::getline(in, file, '\t') && std::getline(in, code, '\t') &&
                std::getline(in, fragment))
        << "bad line in cases.txt: " << line;
    auto& w = want[file];
    w.first = std::stoi(code);
    w.second.push_back(fragment);
  }
  // Every file of the corpus has a case, so none is silently skipped.
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".json") continue;
    ++files;
    EXPECT_TRUE(want.count(e.path().filename().string())) << e.path() << " has no case";
  }
  EXPECT_EQ(files, want.size());
  for (const auto& [file, w] : want) {
    std::vector<std::string> fragments = w.second;
    for (std::string& f : fragments) {
      if (f.rfind("/", 0) == 0) f = dir + "/" + file + ": " + f;  // a JSON path: file-qualified
    }
    expect_rejected(dir + "/" + file, w.first, fragments);
  }
}

// The parser is recursive (and so are dumping and destroying a document): 100000
// nested arrays must be refused, not overflow the stack.
TEST(BadInput, DeepNestingIsRefusedWithoutOverflowingTheStack) {
  test::TempDir dir;
  std::string arrays = write(dir.path() + "/arrays.json", std::string(100000, '['));
  expect_rejected(arrays, 2, {arrays + ": /0/0/0", "nested deeper than 64 levels"});

  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
  std::string path = write(dir.path() + "/objects.json", "{" + kBase + ", \"host\": " + objects);
  expect_rejected(path, 2, {path + ": /host/a/a/a", "nested deeper than 64 levels"});
}

TEST(BadInput, BinaryJunkIsNotValidJson) {
  test::TempDir dir;
  std::mt19937 rng(19);
  for (int round = 0; round < 5; ++round) {
    std::string junk(4096, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    std::string path = write(dir.path() + "/junk" + std::to_string(round) + ".json", junk);
    expect_rejected(path, 2, {path + ": not valid JSON"});
  }
  // Valid JSON, then junk.
  std::string path = write(dir.path() + "/tail.json", "{" + kBase + "}\x7f\x45\x4c\x46");
  expect_rejected(path, 2, {path + ": not valid JSON"});
}

TEST(BadInput, SymlinkLoopForAFileFieldNamesTheField) {
  test::TempDir dir;
  fs::create_symlink(dir.path() + "/loop-b", dir.path() + "/loop-a");
  fs::create_symlink(dir.path() + "/loop-a", dir.path() + "/loop-b");
  std::string path =
      write(dir.path() + "/p.json", "{" + kBase + R"(, "kernel": {"path": "loop-a"}})");
  expect_rejected(path, 2,
                  {path + ": /kernel/path: cannot access " + dir.path() + "/loop-a",
                   "Too many levels of symbolic links"});
}

TEST(BadInput, ProfilePathThatIsNoFile) {
  test::TempDir dir;
  expect_rejected(dir.path(), 2, {dir.path() + " is a directory, expected a profile file"});
  expect_rejected(dir.path() + "/missing.json", 2,
                  {"cannot read profile " + dir.path() + "/missing.json: No such file"});
  fs::create_symlink(dir.path() + "/l2", dir.path() + "/l1");
  fs::create_symlink(dir.path() + "/l1", dir.path() + "/l2");
  expect_rejected(dir.path() + "/l1", 2, {"Too many levels of symbolic links"});
  expect_rejected("/dev/zero", 2, {"/dev/zero is a device or socket, expected a profile file"});
  // Larger than any profile: refused after 16 MiB, not read without end.
  std::string big = write(dir.path() + "/big.json", std::string(17u << 20, ' '));
  expect_rejected(big, 2, {big + ": larger than 16 MiB"});
}

// Numeric options are range-checked with a readable message (CLI11's PositiveNumber
// printed the range of a double: 300 digits).
TEST(BadInput, NumericOptionsOutOfRangeSaySoBriefly) {
  test::TempDir dir;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"latency", "--pid", "-5"}, "--pid: Value -5 not in range 1 to 2147483647"},
      {{"latency", "--pid", "0"}, "--pid: Value 0 not in range 1 to"},
      {{"latency", "--pid", "99999999999999999999"}, "--pid: Value 99999999999999999999 not in"},
      {{"latency", "--max-threads", "0"}, "--max-threads: Value 0 not in range 1 to 4096"},
      {{"ctl", "x", "shutdown", "--timeout", "-1"}, "--timeout: Value -1 not in range 1 to 86400"},
      {{"qmp", "--socket", "/nonexistent", "--timeout", "-1", "query-status"},
       "--timeout: expected a positive number of seconds, at most 86400"},
      {{"qmp", "--socket", "/nonexistent", "--timeout", "inf", "query-status"},
       "--timeout: expected a positive number of seconds"},
      {{"qmp", "--socket", "/nonexistent", "--timeout", "1e300", "query-status"},
       "--timeout: expected a positive number of seconds"},
      {{"qmp", "--socket", "/nonexistent", "--timeout", "nan", "query-status"},
       "--timeout: expected a positive number of seconds"},
      {{"latency", "--pid", "1", "--duration", "99999999999h"},
       "latency: --duration '99999999999h' is not a duration"},
      {{"run", "x.json", "--dry-run", "--latency-interval", "0"},
       "--latency-interval: Value 0 not in range 1 to 10000"},
  };
  for (const auto& [args, fragment] : cases) {
    auto [code, out] = test::passlaunch_cmd(args, dir.path());
    EXPECT_EQ(code, 2) << args[0] << " " << args[1] << "\n" << out;
    EXPECT_NE(out.find(fragment), std::string::npos) << out;
    EXPECT_LT(out.size(), 600u) << out;
  }
}

}  // namespace
}  // namespace pl
