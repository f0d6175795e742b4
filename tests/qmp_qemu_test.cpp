// The QMP client and `passlaunch qmp` against a real, paused QEMU (KVM when
// KVM works, else TCG). Test names contain "Qemu" (labelled).
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "qmp/client.h"
#include "qmp_test_util.h"

namespace qmp::testing {
namespace {

std::string comm(pid_t pid, long tid) {
  std::string s =
      read_file("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/comm");
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

/// Runs passlaunch with `args`; returns the exit code, stdout and stderr.
struct CliResult {
  int code;
  std::string out, err;
};
CliResult passlaunch(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {PL_PASSLAUNCH};
  argv.insert(argv.end(), args.begin(), args.end());
  Child child(argv);
  CliResult r;
  r.code = child.finish(r.out, r.err);
  return r;
}

/// A paused QEMU (pltest_argv) and a client that has negotiated with its QMP monitor.
struct Connected {
  explicit Connected(const std::vector<std::string>& extra = {}) : qemu(pltest_argv(extra)) {
    qmp.connect(qemu.qmp_socket(), connect_options(qemu));
  }
  Qemu qemu;
  SyncClient qmp;
};

TEST(QmpQemu, GreetingNegotiationAndQueryStatus) {
  Qemu qemu(pltest_argv());
  SyncClient c;
  Greeting g = c.connect(qemu.qmp_socket(), connect_options(qemu));
  EXPECT_GE(g.major, 7);
  EXPECT_NE(std::find(g.capabilities.begin(), g.capabilities.end(), "oob"), g.capabilities.end());
  json status = c.execute("query-status");
  EXPECT_EQ(status["running"], false);
  EXPECT_EQ(status["status"], "prelaunch");
}

TEST(QmpQemu, OobNegotiation) {
  Qemu qemu(pltest_argv());
  SyncClient c;
  ConnectOptions o = connect_options(qemu);
  o.oob = true;
  c.connect(qemu.qmp_socket(), o);
  EXPECT_EQ(c.execute("query-status")["status"], "prelaunch");
}

TEST(QmpQemu, CpuThreadIdsAreQemuVcpuThreads) {
  Connected vm;
  json cpus = vm.qmp.execute("query-cpus-fast");
  ASSERT_EQ(cpus.size(), 1u);
  long tid = cpus[0]["thread-id"];
  EXPECT_NE(tid, vm.qemu.pid());
  EXPECT_EQ(comm(vm.qemu.pid(), tid).rfind("CPU 0/", 0), 0u) << comm(vm.qemu.pid(), tid);
}

TEST(QmpQemu, IothreadIsListedWithItsThread) {
  Connected vm;
  json threads = vm.qmp.execute("query-iothreads");
  ASSERT_EQ(threads.size(), 1u);
  EXPECT_EQ(threads[0]["id"], "io0");
  EXPECT_EQ(comm(vm.qemu.pid(), threads[0]["thread-id"]), "IO io0");
}

TEST(QmpQemu, StopAndContEmitStopAndResume) {
  Connected vm;
  auto resumed = vm.qmp.client().wait_for_event("RESUME", {}, 60s);
  vm.qmp.execute("cont");
  EXPECT_EQ(vm.qmp.run(std::move(resumed))["event"], "RESUME");
  EXPECT_EQ(vm.qmp.execute("query-status")["running"], true);
  auto stopped = vm.qmp.client().wait_for_event("STOP", {}, 60s);  // STOP comes before stop's reply
  vm.qmp.execute("stop");
  EXPECT_EQ(vm.qmp.run(std::move(stopped))["event"], "STOP");
  EXPECT_EQ(vm.qmp.execute("query-status")["status"], "paused");
}

TEST(QmpQemu, UnknownCommandIsCommandNotFound) {
  Connected vm;
  try {
    vm.qmp.execute("no-such-command");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::command_error);
    EXPECT_EQ(e.error_class(), "CommandNotFound");
    EXPECT_EQ(e.command(), "no-such-command");
  }
  EXPECT_EQ(vm.qmp.execute("query-status")["status"], "prelaunch");  // still usable
}

// The fd must arrive in QEMU's fd table: the same open file (inode) shows up
// under /proc/PID/fd, and disappears after closefd.
TEST(QmpQemu, GetfdAndAddFdPassTheFdIntoQemu) {
  Connected vm;
  int memfd = ::memfd_create("pl-qmp-test", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  struct stat want {};
  ::fstat(memfd, &want);
  auto qemu_has_it = [&] {
    std::string fds = "/proc/" + std::to_string(vm.qemu.pid()) + "/fd";
    for (const auto& e : std::filesystem::directory_iterator(fds)) {
      struct stat st {};
      if (::stat(e.path().c_str(), &st) == 0 && st.st_ino == want.st_ino &&
          st.st_dev == want.st_dev) {
        return true;
      }
    }
    return false;
  };
  ASSERT_FALSE(qemu_has_it());
  vm.qmp.execute_with_fd("getfd", {{"fdname", "tap0"}}, memfd);
  EXPECT_TRUE(qemu_has_it());
  vm.qmp.execute("closefd", {{"fdname", "tap0"}});
  EXPECT_FALSE(qemu_has_it());
  json added = vm.qmp.execute_with_fd("add-fd", {{"fdset-id", 3}}, memfd);
  EXPECT_EQ(added["fdset-id"], 3);
  struct stat st {};
  ASSERT_EQ(
      ::stat(("/proc/" + std::to_string(vm.qemu.pid()) + "/fd/" + added["fd"].dump()).c_str(), &st),
      0);
  EXPECT_EQ(st.st_ino, want.st_ino);
  ::close(memfd);
}

TEST(QmpQemu, QuitIsANormalEnd) {
  Connected vm;
  auto shutdown = vm.qmp.client().wait_for_event("SHUTDOWN", {}, 60s);
  EXPECT_EQ(vm.qmp.execute("quit"), json::object());
  EXPECT_EQ(vm.qmp.run(std::move(shutdown))["data"]["reason"], "host-qmp-quit");
  Ending end = vm.qmp.wait_closed();
  EXPECT_EQ(end.reason, Ending::Reason::quit) << end.detail;
  EXPECT_TRUE(end.normal());
  auto status = vm.qemu.wait_exit(60s);
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
}

TEST(QmpQemu, SecondClientIsToldTheMonitorIsBusy) {
  Connected first;
  SyncClient second;
  ConnectOptions o = connect_options(first.qemu);
  o.greeting_timeout = 500ms;
  try {
    second.connect(first.qemu.qmp_socket(), o);
    FAIL() << "second client connected";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::busy) << e.what();
  }
  EXPECT_EQ(first.qmp.execute("query-status")["status"], "prelaunch");
}

TEST(QmpQemu, PrettyMonitorSpreadsRepliesOverLines) {
  TempDir dir;
  std::string pretty = dir.path("pretty.sock");
  Qemu qemu(pltest_argv({"-chardev", "socket,id=mon1,path=" + pretty + ",server=on,wait=off",
                         "-mon", "chardev=mon1,mode=control,pretty=on"}));
  SyncClient c;
  c.connect(pretty, connect_options(qemu));
  json cpus = c.execute("query-cpus-fast");
  ASSERT_EQ(cpus.size(), 1u);
  EXPECT_TRUE(cpus[0].contains("thread-id"));
  EXPECT_GT(c.client().stats().bytes_read, c.client().stats().messages * 40);  // really pretty
}

TEST(QmpQemu, CliPrintsReturnValueAndMapsErrorsToExitCodes) {
  Qemu qemu(pltest_argv());
  // passlaunch qmp tries once: wait until QEMU answers.
  {
    SyncClient probe;
    probe.connect(qemu.qmp_socket(), connect_options(qemu));
  }
  auto ok = passlaunch({"qmp", "--socket", qemu.qmp_socket(), "query-status"});
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(json::parse(ok.out)["status"], "prelaunch");

  auto args = passlaunch({"qmp", "--socket", qemu.qmp_socket(), "qom-get",
                          R"({"path": "/machine", "property": "type"})"});
  EXPECT_EQ(args.code, 0) << args.err;
  EXPECT_EQ(json::parse(args.out).get<std::string>().rfind("pc-q35-", 0), 0u) << args.out;

  auto unknown = passlaunch({"qmp", "--socket", qemu.qmp_socket(), "no-such-command"});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_NE(unknown.err.find("CommandNotFound"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("no-such-command has not been found"), std::string::npos);
  EXPECT_EQ(unknown.out, "");

  auto badjson = passlaunch({"qmp", "--socket", qemu.qmp_socket(), "qom-get", "{not json"});
  EXPECT_EQ(badjson.code, 2);
  EXPECT_NE(badjson.err.find("ARGUMENTS-JSON"), std::string::npos) << badjson.err;
}

// --events on a second monitor while the test drives the first one.
TEST(QmpQemu, CliEventsPrintsJsonLinesUntilQemuQuits) {
  TempDir dir;
  std::string second = dir.path("events.sock");
  Connected vm({"-qmp", "unix:" + second + ",server=on,wait=off"});
  Child cli({PL_PASSLAUNCH, "qmp", "--socket", second, "--events"});
  std::string out, err;
  ASSERT_TRUE(cli.stderr_contains("listening for QMP events", err)) << err;
  vm.qmp.execute("cont");
  vm.qmp.execute("stop");
  vm.qmp.execute("quit");
  EXPECT_EQ(cli.finish(out, err), 0) << err;
  std::vector<std::string> names;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) names.push_back(json::parse(line)["event"]);
  EXPECT_EQ(names, (std::vector<std::string>{"RESUME", "STOP", "SHUTDOWN"})) << out;
}

TEST(QmpCli, ConnectionFailuresExitThree) {
  TempDir dir;
  auto missing = passlaunch({"qmp", "--socket", dir.path("absent.sock"), "query-status"});
  EXPECT_EQ(missing.code, 3);
  EXPECT_NE(missing.err.find("No such file"), std::string::npos) << missing.err;

  FakeServer silent([](Peer& p) { p.wait_eof(); });
  auto busy = passlaunch({"qmp", "--socket", silent.path, "--timeout", "0.3", "query-status"});
  EXPECT_EQ(busy.code, 3);
  EXPECT_NE(busy.err.find("busy"), std::string::npos) << busy.err;
}

TEST(QmpCli, ProtocolErrorAndTimeoutExitThree) {
  {
    FakeServer bad([](Peer& p) {
      p.negotiate();
      p.expect("query-status");
      p.send("not json\r\n");
      p.wait_eof();
    });
    auto r = passlaunch({"qmp", "--socket", bad.path, "query-status"});
    EXPECT_EQ(r.code, 3);
    EXPECT_NE(r.err.find("protocol error"), std::string::npos) << r.err;
  }
  {
    FakeServer stalled([](Peer& p) {
      p.negotiate();
      p.expect("query-status");
      p.wait_eof();
    });
    // Long enough to negotiate on a loaded machine, short for the stalled reply.
    auto r = passlaunch({"qmp", "--socket", stalled.path, "--timeout", "2", "query-status"});
    EXPECT_EQ(r.code, 3);
    EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.err;
  }
}

TEST(QmpCli, BadArgumentsExitTwo) {
  TempDir dir;
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"qmp", "--socket", dir.path("s"), "query-status", "[1]"},
           {"qmp", "--socket", dir.path("s")},
           {"qmp", "--socket", dir.path("s"), "--events", "query-status"},
           {"qmp", "--socket", dir.path("s"), "--timeout", "-1", "query-status"},
           {"qmp", "query-status"},
       }) {
    auto r = passlaunch(args);
    EXPECT_EQ(r.code, 2) << args.back() << ": " << r.err;
  }
}

}  // namespace
}  // namespace qmp::testing
