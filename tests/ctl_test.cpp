// `passlaunch ctl` and `list` against a VM run by `passlaunch run`, and the
// control socket as a QMP server for several clients at once.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>

#include "qmp/client.h"
#include "test_util.h"

namespace pl {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using test::passlaunch_cmd;

class CtlQemu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::may_pin_guest_profile()) GTEST_SKIP() << "the pin plan needs CPUs 0 and 1";
    name_ = "c" + std::to_string(::getpid());
  }
  /// Starts the VM and waits until its guest is ready.
  void start(const std::string& extra = "") {
    std::string path = dir_.path() + "/" + name_ + ".json";
    std::ofstream(path) << test::guest_profile(name_, "normal", extra);
    run_ = std::make_unique<test::Passlaunch>(std::vector<std::string>{"run", path}, dir_.path());
    ASSERT_TRUE(run_->out().wait_for("passlaunch-guest: ready")) << run_->out().text();
  }
  std::pair<int, std::string> ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"ctl", name_});
    return passlaunch_cmd(args, dir_.path());
  }
  std::string control_socket() const {
    return dir_.path() + "/passlaunch/" + name_ + "/control.sock";
  }
  void TearDown() override {
    if (run_) {
      ::kill(run_->pid(), SIGINT);
      ::kill(run_->pid(), SIGINT);
      run_->wait(30s);
    }
  }
  test::TempDir dir_;
  std::string name_;
  std::unique_ptr<test::Passlaunch> run_;
};

TEST_F(CtlQemu, StatusPauseResumeAndRawQmp) {
  start();
  auto [code, out] = ctl({"status"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(name_ + ": running, launcher pid " + std::to_string(run_->pid())),
            std::string::npos)
      << out;

  EXPECT_EQ(ctl({"pause"}).first, 0);
  auto [c2, st] = ctl({"qmp", "query-status"});
  EXPECT_EQ(c2, 0);
  EXPECT_EQ(json::parse(st)["status"], "paused") << st;
  EXPECT_EQ(ctl({"resume"}).first, 0);
  EXPECT_EQ(json::parse(ctl({"qmp", "query-status"}).second)["status"], "running");
  EXPECT_TRUE(run_->out().wait_for("event STOP"));
  EXPECT_TRUE(run_->out().wait_for("event RESUME"));

  auto [c3, js] = ctl({"status", "--json"});
  EXPECT_EQ(json::parse(js)["qemu-pid"].get<int>() > 0, true) << js;
  // Raw QMP with arguments, and QEMU's own errors passed through (exit 1).
  auto [c4, obj] = ctl({"qmp", "qom-get", R"({"path": "/machine", "property": "type"})"});
  EXPECT_EQ(c4, 0) << obj;
  auto [c5, err] = ctl({"qmp", "no-such-command"});
  EXPECT_EQ(c5, 1) << err;
  EXPECT_NE(err.find("CommandNotFound"), std::string::npos) << err;
  auto [c6, bad] = ctl({"qmp", "query-status", "[1]"});
  EXPECT_EQ(c6, 2) << bad;
}

TEST_F(CtlQemu, TwoClientsGetEventsAndOneLeavingMidCommandDisturbsNobody) {
  start();
  qmp::SyncClient a, b;
  a.connect(control_socket());
  b.connect(control_socket());
  qmp::Subscription stops_a = a.client().subscribe("STOP");
  qmp::Subscription stops_b = b.client().subscribe("STOP");
  a.execute("stop");
  EXPECT_EQ(a.next_event(stops_a, 10s)["event"], "STOP");
  EXPECT_EQ(b.next_event(stops_b, 10s)["event"], "STOP");

  // A third client sends a command and hangs up before the reply.
  int raw = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, control_socket().c_str());
  ASSERT_EQ(::connect(raw, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::string msg = R"({"execute": "qmp_capabilities"}{"execute": "query-status", "id": 7})";
  ASSERT_EQ(::write(raw, msg.data(), msg.size()), static_cast<ssize_t>(msg.size()));
  ::close(raw);

  // And a fourth sends garbage and closes its write side: it is told so (as
  // QEMU would, the connection is kept), then closed once answered.
  int junk = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_EQ(::connect(junk, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::string bad = "}}}not json";
  ASSERT_EQ(::write(junk, bad.data(), bad.size()), static_cast<ssize_t>(bad.size()));
  ::shutdown(junk, SHUT_WR);
  std::string got;
  char buf[512];
  for (ssize_t n; (n = ::read(junk, buf, sizeof buf)) > 0;) got.append(buf, n);
  ::close(junk);
  EXPECT_NE(got.find("GenericError"), std::string::npos) << got;

  EXPECT_EQ(b.execute("query-status")["status"], "paused");
  b.execute("cont");
  EXPECT_EQ(a.execute("query-status")["status"], "running");
}

TEST_F(CtlQemu, ClientMustNegotiateCapabilitiesFirst) {
  start();
  int raw = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, control_socket().c_str());
  ASSERT_EQ(::connect(raw, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  test::Output out(raw);
  ASSERT_TRUE(out.wait_for("\"QMP\"", 10s));
  std::string msg = R"({"execute": "query-status", "id": "x"})";
  ASSERT_EQ(::write(raw, msg.data(), msg.size()), static_cast<ssize_t>(msg.size()));
  ASSERT_TRUE(out.wait_for("Expecting capabilities negotiation", 10s)) << out.text();
}

TEST_F(CtlQemu, SnapshotsSaveListLoadDeleteAndFailures) {
  std::string disk = dir_.path() + "/disk.qcow2";
  ASSERT_EQ(test::run_command({"qemu-img", "create", "-q", "-f", "qcow2", disk, "32M"}), 0);
  start(R"(, "disks": [{"path": ")" + disk + R"(", "format": "qcow2", "iothread": "io0"}])");
  auto [c1, o1] = ctl({"snapshot", "save", "first"});
  ASSERT_EQ(c1, 0) << o1;
  auto [c2, o2] = ctl({"snapshot", "list"});
  EXPECT_EQ(c2, 0);
  EXPECT_NE(o2.find("first"), std::string::npos) << o2;
  EXPECT_NE(o2.find("MiB"), std::string::npos) << "full snapshots carry VM state: " << o2;
  auto [c3, o3] = ctl({"snapshot", "load", "first"});
  EXPECT_EQ(c3, 0) << o3;
  EXPECT_EQ(json::parse(ctl({"qmp", "query-status"}).second)["status"], "running");

  auto [cd, od] = ctl({"snapshot", "save", "first"});
  EXPECT_EQ(cd, 1) << "a duplicate tag is an error: " << od;
  EXPECT_NE(od.find("snapshot-save failed"), std::string::npos) << od;
  EXPECT_NE(od.find("first"), std::string::npos) << od;

  auto [c4, o4] = ctl({"snapshot", "load", "missing"});
  EXPECT_EQ(c4, 1) << o4;
  EXPECT_NE(o4.find("snapshot-load failed"), std::string::npos) << o4;
  auto [c5, o5] = ctl({"snapshot", "delete", "missing"});
  EXPECT_EQ(c5, 1) << o5;

  auto [c6, o6] = ctl({"snapshot", "delete", "first"});
  EXPECT_EQ(c6, 0) << o6;
  EXPECT_EQ(ctl({"snapshot", "list"}).second.find("first"), std::string::npos);
}

TEST_F(CtlQemu, ListShowsTheRunningVm) {
  start();
  auto [code, out] = passlaunch_cmd({"list", "--json"}, dir_.path());
  EXPECT_EQ(code, 0) << out;
  json vms = json::parse(out)["vms"];
  ASSERT_EQ(vms.size(), 1u) << out;
  EXPECT_EQ(vms[0]["name"], name_);
  EXPECT_EQ(vms[0]["status"], "running");
  auto [c2, table] = passlaunch_cmd({"list"}, dir_.path());
  EXPECT_NE(table.find(name_), std::string::npos) << table;
}

TEST_F(CtlQemu, CtlShutdownEndsRunWithExitZero) {
  start();
  auto [code, out] = ctl({"shutdown", "--timeout", "30"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(run_->wait(30s), 0) << run_->out().text();
  EXPECT_NE(run_->out().text().find("shutdown requested by the control socket"), std::string::npos);
  run_.reset();
}

TEST_F(CtlQemu, PoweroffQuitsAtOnce) {
  start();
  auto [code, out] = ctl({"poweroff"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(run_->wait(30s), 7) << run_->out().text();
  run_.reset();
}

TEST(Ctl, VmThatIsNotRunningIsExit3) {
  test::TempDir dir;
  auto [code, out] = passlaunch_cmd({"ctl", "nosuchvm", "status"}, dir.path());
  EXPECT_EQ(code, 3) << out;
  EXPECT_NE(out.find("VM \"nosuchvm\" is not running"), std::string::npos) << out;
  auto [c2, o2] = passlaunch_cmd({"list", "--json"}, dir.path());
  EXPECT_EQ(c2, 0);
  EXPECT_EQ(json::parse(o2)["vms"].size(), 0u);
}

}  // namespace
}  // namespace pl

namespace pl {
namespace {

// The hotkey helpers (scripts/start, stop, toggle) return at once and log
// where the host logs: to journald when its socket exists, else to syslog,
// else to a file. Each path is tested in a mount namespace of its own whose
// /run is a fresh tmpfs (so this host's own journald, if any, is hidden),
// with tests/helpers/log_sink listening where journald or syslog would.
class HotkeyLogQemu : public CtlQemu {
 protected:
  void TearDown() override {
    // What toggle_round set for the scripts: later tests must not inherit it.
    ::unsetenv("PASSLAUNCH_SYSLOG_SOCKET");
    ::unsetenv("PASSLAUNCH");
    ::unsetenv("XDG_RUNTIME_DIR");
    // A VM the scripts started that is still up (a failed test) is powered off.
    if (passlaunch_cmd({"ctl", name_, "poweroff"}, dir_.path()).first == 0) {
      for (int i = 0; i < 300 && passlaunch_cmd({"ctl", name_, "status"}, dir_.path()).first == 0;
           ++i) {
        std::this_thread::sleep_for(100ms);
      }
    }
    CtlQemu::TearDown();
  }
  /// Starts the namespace's holder: log_sink on `sockets` ("stream:PATH",
  /// "dgram:PATH"), writing to sink_out().
  void start_sink(const std::vector<std::string>& sockets) {
    std::vector<std::string> argv = {
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && exec \"$@\"",
        "sh",
        PL_LOG_SINK,
        sink_out()};
    argv.insert(argv.end(), sockets.begin(), sockets.end());
    sink_ = std::make_unique<test::Passlaunch>(argv, dir_.path(), true);
    ASSERT_TRUE(sink_->out().wait_for("ready", 10s)) << sink_->out().text();
  }
  std::string sink_out() const { return dir_.path() + "/sink.log"; }
  /// A hotkey script run inside the namespace: {exit code, output, seconds taken}.
  std::tuple<int, std::string, double> script(const std::string& which, const std::string& arg) {
    auto t0 = std::chrono::steady_clock::now();
    auto [code, out] =
        test::capture({"nsenter", "--target", std::to_string(sink_->pid()), "--mount", "--",
                       std::string(PL_SOURCE_DIR) + "/scripts/" + which, arg});
    return {code, out,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
  }
  /// Waits until `file` contains `needle`.
  static bool file_has(const std::string& file, const std::string& needle,
                       std::chrono::seconds timeout = 90s) {
    for (auto t0 = std::chrono::steady_clock::now();
         std::chrono::steady_clock::now() - t0 < timeout; std::this_thread::sleep_for(100ms)) {
      std::ifstream in(file);
      std::string text((std::istreambuf_iterator<char>(in)), {});
      if (text.find(needle) != std::string::npos) return true;
    }
    return false;
  }
  /// toggle starts the VM and returns at once, its output reaches `log`;
  /// toggle again shuts the guest down and returns at once; the shutdown's
  /// outcome reaches `log` too.
  void toggle_round(const std::string& log) {
    std::string profile = dir_.path() + "/" + name_ + ".json";
    std::ofstream(profile) << test::guest_profile(name_, "normal");
    ::setenv("PASSLAUNCH", PL_PASSLAUNCH, 1);
    ::setenv("XDG_RUNTIME_DIR", dir_.path().c_str(), 1);
    auto [code, out, took] = script("toggle", profile);
    EXPECT_EQ(code, 0) << out;
    EXPECT_NE(out.find("starting " + name_), std::string::npos) << out;
    EXPECT_LT(took, 5.0) << "toggle (start) returns at once";
    ASSERT_TRUE(file_has(log, "passlaunch-guest: ready")) << "the VM's output goes to " << log;
    EXPECT_EQ(passlaunch_cmd({"ctl", name_, "status"}, dir_.path()).first, 0);

    auto [c2, o2, took2] = script("toggle", profile);
    EXPECT_EQ(c2, 0) << o2;
    EXPECT_NE(o2.find("stopping " + name_), std::string::npos) << o2;
    EXPECT_LT(took2, 5.0) << "toggle (stop) returns at once, before the guest is down";
    EXPECT_TRUE(file_has(log, "the guest shut down")) << log;
    bool gone = false;
    for (int i = 0; i < 600 && !gone; ++i) {
      gone = passlaunch_cmd({"ctl", name_, "status"}, dir_.path()).first == 3;
      if (!gone) std::this_thread::sleep_for(100ms);
    }
    EXPECT_TRUE(gone);
  }
  std::unique_ptr<test::Passlaunch> sink_;
};

TEST_F(HotkeyLogQemu, TogglesLogToTheJournalWhenJournaldRuns) {
  start_sink({"dgram:/run/systemd/journal/socket", "stream:/run/systemd/journal/stdout"});
  ::setenv("PASSLAUNCH_SYSLOG_SOCKET", (dir_.path() + "/unused.sock").c_str(), 1);
  toggle_round(sink_out());
  // systemd-cat's stream header names the tag (journalctl -t passlaunch-NAME).
  EXPECT_TRUE(file_has(sink_out(), "passlaunch-" + name_ + "\n", 1s));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/passlaunch-" + name_ + ".log"));
}

TEST_F(HotkeyLogQemu, TogglesLogToSyslogWhenNoJournalRuns) {
  std::string socket = dir_.path() + "/dev-log";
  start_sink({"dgram:" + socket});
  ::setenv("PASSLAUNCH_SYSLOG_SOCKET", socket.c_str(), 1);
  toggle_round(sink_out());
  EXPECT_TRUE(file_has(sink_out(), "passlaunch-" + name_ + ": ", 1s)) << "logger's tag";
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/passlaunch-" + name_ + ".log"));
}

TEST_F(HotkeyLogQemu, TogglesLogToAFileWithoutJournalOrSyslog) {
  start_sink({});
  ::setenv("PASSLAUNCH_SYSLOG_SOCKET", (dir_.path() + "/no-such.sock").c_str(), 1);
  toggle_round(dir_.path() + "/passlaunch-" + name_ + ".log");
}

TEST(Scripts, SystemdUnitVerifies) {
  test::TempDir dir;
  std::ifstream in(std::string(PL_SOURCE_DIR) + "/scripts/passlaunch@.service.in");
  std::string unit((std::istreambuf_iterator<char>(in)), {});
  const std::string bin = "@PL_BIN@";  // filled in at install (scripts/CMakeLists.txt)
  for (size_t p; (p = unit.find(bin)) != std::string::npos;) {
    unit.replace(p, bin.size(), PL_PASSLAUNCH);
  }
  std::string path = dir.path() + "/passlaunch@.service";
  std::ofstream(path) << unit;
  auto [code, out] = test::capture({"systemd-analyze", "verify", "--man=no", path});
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out.find("passlaunch@"), std::string::npos) << out;
}

}  // namespace
}  // namespace pl
