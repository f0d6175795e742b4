// The control socket as a QMP server, held against QEMU's own monitor.
//
// One VM run by `passlaunch run` and one reference QEMU (-machine none -S, its
// QMP monitor on a socket) are started for the whole suite. Each conformance
// case opens a fresh connection to both, sends both the same bytes, then a
// probe command, and compares what came back: the kind of every reply
// (return / error class), its id, and whether the connection survived (the
// probe was answered). A failure prints both transcripts.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "test_util.h"

namespace pl {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// A raw QMP connection: bytes in, JSON lines out (no library under test).
class Raw {
 public:
  explicit Raw(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("cannot connect to " + path + ": " + std::strerror(errno));
    }
  }
  ~Raw() { ::close(fd_); }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;

  void send(const std::string& bytes) {
    log_ += ">> " + shown(bytes) + "\n";
    for (size_t off = 0; off < bytes.size();) {
      ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) {
        log_ += "   (send failed: " + std::string(std::strerror(errno)) + ")\n";
        return;
      }
      off += static_cast<size_t>(n);
    }
  }
  void half_close() {
    log_ += ">> (shutdown SHUT_WR)\n";
    ::shutdown(fd_, SHUT_WR);
  }
  /// The next message that is not an event, or nothing at EOF / the deadline.
  std::optional<json> next(Clock::time_point deadline) {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) continue;
        json j = json::parse(line, nullptr, false);
        if (j.is_object() && j.contains("event")) continue;
        log_ += "<< " + (line.size() > 300 ? line.substr(0, 300) + "..." : line) + "\n";
        return j;
      }
      if (eof_) return std::nullopt;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
        log_ += "   (nothing more within the deadline)\n";
        return std::nullopt;
      }
      char b[65536];
      ssize_t n = ::read(fd_, b, sizeof b);
      if (n <= 0) {
        eof_ = true;
        log_ += "   (EOF)\n";
        continue;
      }
      buf_.append(b, static_cast<size_t>(n));
    }
  }
  bool eof() const { return eof_; }
  const std::string& log() const { return log_; }

 private:
  static std::string shown(const std::string& b) {
    std::string s;
    for (unsigned char c : b.substr(0, 200)) {
      if (c >= 0x20 && c < 0x7f) {
        s += static_cast<char>(c);
      } else {
        char hex[8];
        std::snprintf(hex, sizeof hex, "\\x%02x", c);
        s += hex;
      }
    }
    if (b.size() > 200) s += "... (" + std::to_string(b.size()) + " bytes)";
    return s;
  }
  int fd_ = -1;
  std::string buf_, log_;
  bool eof_ = false;
};

/// What a client can tell apart: "return" or the error class, and the id.
std::string kind_of(const json& r) {
  std::string k = r.contains("return")  ? "return"
                  : r.contains("error") ? "error " + r["error"].value("class", "?")
                  : r.contains("QMP")   ? "greeting"
                                        : "other";
  if (r.contains("id")) {
    json id = r["id"];
    // QEMU prints 1e5 as 100000: compare numbers by value.
    if (id.is_number_float() &&
        id.get<double>() == static_cast<double>(static_cast<int64_t>(id.get<double>())) &&
        std::abs(id.get<double>()) < 1e15) {
      id = static_cast<int64_t>(id.get<double>());
    }
    std::string d = id.dump();
    if (d.size() > 40) d = d.substr(0, 20) + "...(" + std::to_string(d.size()) + ")";
    k += " id=" + d;
  } else {
    k += " (no id)";
  }
  return k;
}

struct Case {
  std::string name;
  std::string bytes;
  bool negotiate = true;    // send qmp_capabilities first
  bool half_close = false;  // shutdown(SHUT_WR) instead of a probe
};

struct Outcome {
  std::vector<std::string> kinds;
  bool survived = false;  // the probe got its reply (or: EOF after a half-close)
  std::string log;
};

constexpr const char* kProbe = "{\"execute\": \"query-status\", \"id\": \"probe\"}\n";

Outcome play(const std::string& socket, const Case& c) {
  Outcome o;
  Raw r(socket);
  auto deadline = [] { return Clock::now() + 60s; };
  auto greeting = r.next(deadline());
  if (!greeting) {
    o.log = r.log();
    return o;
  }
  if (c.negotiate) {
    r.send("{\"execute\": \"qmp_capabilities\"}\n");
    r.next(deadline());
  }
  r.send(c.bytes);
  if (c.half_close) {
    r.half_close();
    while (auto m = r.next(deadline())) o.kinds.push_back(kind_of(*m));
    o.survived = r.eof();  // closed by the server after the replies
  } else {
    r.send(kProbe);
    while (auto m = r.next(deadline())) {
      if (m->value("id", json()) == "probe") {
        o.survived = true;
        break;
      }
      o.kinds.push_back(kind_of(*m));
    }
  }
  o.log = r.log();
  return o;
}

std::vector<Case> cases() {
  std::vector<Case> v;
  auto add = [&](std::string name, std::string bytes, bool negotiate = true) {
    v.push_back(Case{std::move(name), std::move(bytes), negotiate, false});
  };
  // Before negotiation.
  add("command before qmp_capabilities",
      R"({"execute": "query-status", "id": "x"})"
      "\n",
      false);
  add("unknown capability",
      R"({"execute": "qmp_capabilities", "arguments": {"enable": ["bogus"]}, "id": 1})"
      "\n",
      false);
  add("unknown qmp_capabilities argument",
      R"({"execute": "qmp_capabilities", "arguments": {"foo": 1}, "id": 2})"
      "\n",
      false);
  add("enable not a list",
      R"({"execute": "qmp_capabilities", "arguments": {"enable": "oob"}, "id": 3})"
      "\n",
      false);
  add("enable oob, then exec-oob",
      R"({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": 4})"
      "\n"
      R"({"exec-oob": "query-status", "id": 5})"
      "\n"
      R"({"exec-oob": "migrate-pause", "id": 6})"
      "\n",
      false);
  add("exec-oob without negotiating oob",
      R"({"execute": "qmp_capabilities", "id": null})"
      "\n"
      R"({"exec-oob": "query-status", "id": 7})"
      "\n",
      false);
  // After negotiation: bad bytes.
  add("garbage", "}}}not json\n");
  add("bare number", "42\n");
  add("bare string and list", "\"str\"\n[]\n");
  add("NUL byte", std::string("\0\n", 2));
  add("control byte 0x01", "\x01");
  add("byte 0xff", "\xff\n");
  add("upper-case garbage before a command", R"(XYZ{"execute": "query-status", "id": 8})"
                                             "\n");
  add("a comma after garbage", R"(X,{"execute": "query-status", "id": 9})"
                               "\n");
  add("control byte resets a partial object",
      "{\"execute\": \"query-status\", \x01{\"execute\": \"query-status\", \"id\": \"after\"}\n");
  add("single-quoted strings", "{'execute': 'query-status', 'id': 'sq'}\n");
  add("invalid UTF-8 in a string", "{\"execute\": \"query-status\", \"id\": \"\xc3\x28\"}\n");
  add("invalid UTF-8 then a good command",
      "{\"execute\": \"query-status\", \"id\": \"\xff\"}\n"
      R"({"execute": "query-status", "id": 10})"
      "\n");
  add("reply order: a command then garbage", R"({"execute": "query-status", "id": "t"} xyz)"
                                             "\n");
  add("duplicate key", R"({"execute": "query-status", "execute": "stop"})"
                       "\n");
  add("lone surrogate escape", R"({"execute": "query-status", "id": "\ud800"})"
                               "\n");
  add("deep nesting", std::string(1100, '[') + std::string(1100, ']') + "\n");
  // Valid JSON, invalid requests.
  add("empty object", "{}\n");
  add("id only", R"({"id": 11})"
                 "\n");
  add("execute not a string", R"({"execute": 1, "id": 12})"
                              "\n");
  add("arguments not an object", R"({"execute": "query-status", "arguments": [], "id": 13})"
                                 "\n");
  add("unknown top-level member", R"({"execute": "query-status", "foo": 1, "id": 14})"
                                  "\n");
  add("execute and exec-oob", R"({"execute": "query-status", "exec-oob": "query-status", "id": 15})"
                              "\n");
  add("unknown argument of a QEMU command",
      R"({"execute": "query-status", "arguments": {"x": 1}, "id": 16})"
      "\n");
  add("wrong argument type",
      R"({"execute": "qom-get", "arguments": {"path": 1, "property": "type"}, "id": 17})"
      "\n");
  add("unknown command", R"({"execute": "no-such-command", "id": 18})"
                         "\n");
  add("qmp_capabilities again", R"({"execute": "qmp_capabilities", "id": 19})"
                                "\n");
  // ids of every JSON type.
  add("id null", R"({"execute": "query-status", "id": null})"
                 "\n");
  add("id object", R"({"execute": "query-status", "id": {"a": [1, 2.5, true]}})"
                   "\n");
  add("id numbers", R"({"execute": "query-status", "id": 1e5})"
                    "\n"
                    R"({"execute": "query-status", "id": -0})"
                    "\n"
                    R"({"execute": "query-status", "id": 18446744073709551615})"
                    "\n");
  add("huge id", "{\"execute\": \"query-status\", \"id\": \"" + std::string(100000, 'i') + "\"}\n");
  // Pipelining and big lines.
  std::string pipe;
  for (int i = 0; i < 30; ++i)
    pipe += R"({"execute": "query-status", "id": )" + std::to_string(i) + "}";
  add("30 pipelined commands in one write", pipe + "\n");
  add("1 MiB of whitespace inside a command",
      "{\"execute\": \"query-status\"," + std::string(1 << 20, ' ') + "\"id\": \"ws\"}\n");
  add("1 MiB garbage line", std::string(1 << 20, 'X') + "\n");
  v.push_back(Case{"half-close after three commands",
                   R"({"execute": "query-status", "id": 1}{"execute": "query-status", "id": 2})"
                   R"({"execute": "query-version", "id": 3})",
                   true, true});
  return v;
}

/// One VM under `passlaunch run` and one reference QEMU, for the whole suite.
class ControlQemu : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) return;
    dir_ = new test::TempDir();
    name_ = "cs" + std::to_string(::getpid());
    std::string path = dir_->path() + "/" + name_ + ".json";
    std::ofstream(path) << test::guest_profile(name_, "normal");
    run_ = new test::Passlaunch({"run", path}, dir_->path());
    if (!run_->out().wait_for("passlaunch-guest: ready")) {
      failure_ = "the VM did not come up:\n" + run_->out().text();
    }
    ref_ = new test::Qemu({"qemu-system-x86_64", "-machine", "none", "-S", "-nodefaults",
                           "-no-user-config", "-display", "none", "-chardev",
                           "socket,id=qmp,fd=3,server=on,wait=off", "-mon",
                           "chardev=qmp,mode=control"});
  }
  static void TearDownTestSuite() {
    if (run_) {
      ::kill(run_->pid(), SIGINT);
      ::kill(run_->pid(), SIGINT);
      run_->wait(30s);
    }
    delete run_;
    delete ref_;
    delete dir_;
    run_ = nullptr, ref_ = nullptr, dir_ = nullptr;
  }
  void SetUp() override {
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) GTEST_SKIP() << "the pin plan needs 2 CPUs";
    ASSERT_TRUE(failure_.empty()) << failure_;
  }
  static std::string control_socket() {
    return dir_->path() + "/passlaunch/" + name_ + "/control.sock";
  }
  static inline test::TempDir* dir_ = nullptr;
  static inline std::string name_, failure_;
  static inline test::Passlaunch* run_ = nullptr;
  static inline test::Qemu* ref_ = nullptr;
};

TEST_F(ControlQemu, EveryInputGetsTheRepliesQemusOwnMonitorGives) {
  int mismatches = 0;
  for (const Case& c : cases()) {
    Outcome ours = play(control_socket(), c);
    Outcome qemu = play(ref_->qmp_socket(), c);
    bool same = ours.kinds == qemu.kinds && ours.survived == qemu.survived;
    EXPECT_TRUE(same) << "case \"" << c.name << "\" differs\n--- passlaunch control socket"
                      << (ours.survived ? "" : " (connection lost)") << ":\n"
                      << ours.log << "--- QEMU" << (qemu.survived ? "" : " (connection lost)")
                      << ":\n"
                      << qemu.log;
    if (!same) ++mismatches;
    if (!ours.survived && !c.half_close) {
      ADD_FAILURE() << c.name << ": the control socket lost the client; passlaunch's output:\n"
                    << run_->out().text();
      break;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST_F(ControlQemu, GreetingOffersOobAsQemuDoes) {
  Raw ours(control_socket()), qemu(ref_->qmp_socket());
  auto a = ours.next(Clock::now() + 10s), b = qemu.next(Clock::now() + 10s);
  ASSERT_TRUE(a && b);
  EXPECT_EQ((*a)["QMP"]["capabilities"], (*b)["QMP"]["capabilities"]) << ours.log() << qemu.log();
  EXPECT_EQ((*a)["QMP"]["version"], (*b)["QMP"]["version"]);
}

TEST_F(ControlQemu, QueryCommandsAndSchemaListPasslaunchsOwnCommands) {
  Raw r(control_socket());
  r.next(Clock::now() + 10s);
  r.send(
      "{\"execute\": \"qmp_capabilities\"}{\"execute\": \"query-commands\", \"id\": 1}"
      "{\"execute\": \"query-qmp-schema\", \"id\": 2}\n");
  r.next(Clock::now() + 10s);
  auto cmds = r.next(Clock::now() + 10s);
  auto schema = r.next(Clock::now() + 10s);
  ASSERT_TRUE(cmds && schema) << r.log();
  std::set<std::string> names;
  for (const json& c : (*cmds)["return"]) names.insert(c["name"].get<std::string>());
  for (const char* n : {"__org.passlaunch_status", "__org.passlaunch_shutdown", "passlaunch-status",
                        "passlaunch-shutdown", "query-status"}) {
    EXPECT_TRUE(names.count(n)) << n;
  }
  bool found = false;
  for (const json& e : (*schema)["return"]) {
    if (e.value("name", "") == "__org.passlaunch_shutdown") found = e["meta-type"] == "command";
  }
  EXPECT_TRUE(found);
  // Both names run; arguments are checked as QEMU checks them.
  r.send(
      "{\"execute\": \"__org.passlaunch_status\", \"id\": 3}"
      "{\"execute\": \"passlaunch-status\", \"id\": 4}"
      "{\"execute\": \"passlaunch-status\", \"arguments\": {\"x\": 1}, \"id\": 5}"
      "{\"execute\": \"__org.passlaunch_shutdown\", \"arguments\": {\"timeout\": \"9\"}, "
      "\"id\": 6}\n");
  for (int id = 3; id <= 6; ++id) {
    auto m = r.next(Clock::now() + 10s);
    ASSERT_TRUE(m) << r.log();
    EXPECT_EQ((*m)["id"], id);
    EXPECT_EQ(m->contains("return"), id <= 4) << r.log();
  }
}

TEST_F(ControlQemu, ACommandOverTheForwardLimitIsRefusedWithoutReachingQemu) {
  Raw r(control_socket());
  r.next(Clock::now() + 10s);
  r.send("{\"execute\": \"qmp_capabilities\"}\n");
  r.next(Clock::now() + 10s);
  auto t0 = Clock::now();
  r.send(
      "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"info "
      "status " +
      std::string(1 << 20, 'a') +
      "\"}, \"id\": \"big\"}{\"execute\": \"query-status\", \"id\": 2}\n");
  auto big = r.next(Clock::now() + 10s);
  auto next = r.next(Clock::now() + 10s);
  ASSERT_TRUE(big && next) << r.log();
  EXPECT_EQ((*big)["id"], "big");
  EXPECT_EQ((*big)["error"]["class"], "GenericError") << r.log();
  EXPECT_NE((*big)["error"]["desc"].get<std::string>().find("16384"), std::string::npos);
  EXPECT_EQ((*next)["id"], 2);
  // QEMU would need about 10 s to read 1 MiB; refused here it costs nothing.
  EXPECT_LT(Clock::now() - t0, 5s);
}

TEST_F(ControlQemu, AClientThatHangsUpIsFreedAtOnce) {
  // The case from the issue: invalid UTF-8, then hang up. The server must
  // close its end (no CLOSE_WAIT left behind).
  auto count_sockets = [&] {
    int n = 0;
    for (auto& e :
         std::filesystem::directory_iterator("/proc/" + std::to_string(run_->pid()) + "/fd")) {
      std::error_code ec;
      auto target = std::filesystem::read_symlink(e.path(), ec);
      if (!ec && target.string().rfind("socket:", 0) == 0) ++n;
    }
    return n;
  };
  int before = count_sockets();
  for (int i = 0; i < 20; ++i) {
    Raw r(control_socket());
    r.next(Clock::now() + 10s);
    r.send(
        "{\"execute\": \"qmp_capabilities\"}{\"execute\": \"query-status\", \"id\": \"\xc3\x28\"}");
  }
  // Wait for the server to see the hang-ups (it reads them on its own loop).
  auto deadline = Clock::now() + 10s;
  int n = count_sockets();
  while (n > before && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    n = count_sockets();
  }
  EXPECT_LE(n, before) << "the launcher still holds " << n - before << " client sockets";
}

TEST_F(ControlQemu, ABurstOf64ConnectsAllGetThrough) {
  // Non-blocking connects fail with EAGAIN once the listen backlog is full
  // (it was 4); with SOMAXCONN all 64 must be accepted and greeted.
  std::vector<int> fds;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, control_socket().c_str(), sizeof addr.sun_path - 1);
  int failed = 0;
  for (int i = 0; i < 64; ++i) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ++failed;
    fds.push_back(fd);
  }
  EXPECT_EQ(failed, 0);
  int greeted = 0;
  for (int fd : fds) {
    pollfd p{fd, POLLIN, 0};
    char b[512];
    if (::poll(&p, 1, 10000) > 0 && ::read(fd, b, sizeof b) > 0) ++greeted;
    ::close(fd);
  }
  EXPECT_EQ(greeted, 64 - failed);
}

TEST_F(ControlQemu, ThirdPartyClientWrittenFromTheQmpSpec) {
  // tests/qmp_spec_client.py: Python's asyncio, standard library only.
  auto [code, out] = test::capture(
      {"python3", std::string(PL_SOURCE_DIR) + "/tests/qmp_spec_client.py", control_socket()});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("all checks passed"), std::string::npos) << out;
}

}  // namespace
}  // namespace pl
