// `passlaunch run` end to end with the real test guest under TCG: boot, pins
// in /proc, graceful shutdown, forced quit, crash, second instance, startup
// failure. And `passlaunch ctl`/`list` against the running VM.
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "latency/role.h"
#include "run/spawn.h"
#include "test_util.h"

namespace pl {
namespace {

using test::guest_profile;
using test::Passlaunch;
using test::passlaunch_cmd;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string comm(pid_t pid, const std::string& tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + tid + "/comm");
  std::string s;
  std::getline(in, s);
  return s;
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

class RunQemu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::may_pin_guest_profile()) GTEST_SKIP() << "the pin plan needs CPUs 0 and 1";
    name_ = "t" + std::to_string(::getpid());
    // Journals and OVMF vars under this test's own state root, never the
    // host's /var/lib/passlaunch (a failed run would leave state there).
    ::setenv("PASSLAUNCH_STATE_DIR", (dir_.path() + "/state").c_str(), 1);
  }
  void TearDown() override { ::unsetenv("PASSLAUNCH_STATE_DIR"); }
  std::string write_profile(const std::string& text) {
    std::string path = dir_.path() + "/" + name_ + ".json";
    std::ofstream(path) << text;
    return path;
  }
  std::string runtime() const { return dir_.path() + "/passlaunch/" + name_; }
  pid_t qemu_pid() {
    std::ifstream in(runtime() + "/qemu.pid");
    pid_t pid = 0;
    in >> pid;
    return pid;
  }
  test::TempDir dir_;
  std::string name_;
};

/// Runs that are refused before QEMU starts: no "Qemu" in the suite name, so
/// they are not labelled qemu (tests/CMakeLists.txt).
class RunRefused : public RunQemu {};

TEST_F(RunQemu, BootsPinnedAndPowersOffOnSigterm) {
  Passlaunch run({"run", write_profile(guest_profile(name_, "normal"))}, dir_.path());
  ASSERT_TRUE(run.out().wait_for("passlaunch-guest: ready")) << run.out().text();
  EXPECT_NE(run.out().text().find("guest running"), std::string::npos);
  EXPECT_NE(run.out().text().find("ROLE"), std::string::npos) << "the pin table is printed";

  // Every thread's Cpus_allowed_list equals the plan.
  pid_t qemu = qemu_pid();
  ASSERT_GT(qemu, 0);
  int vcpus = 0, iothreads = 0, others = 0;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(qemu) + "/task")) {
    std::string tid = e.path().filename();
    std::string name = comm(qemu, tid);
    std::string allowed = test::cpus_allowed_list(qemu, std::stoi(tid));
    if (name.rfind("CPU 0/", 0) == 0) {
      ++vcpus;
      EXPECT_EQ(allowed, "1") << name;
    } else if (name == "IO io0") {
      ++iothreads;
      EXPECT_EQ(allowed, "1") << name;
    } else {
      ++others;
      EXPECT_EQ(allowed, "0") << name;
    }
  }
  EXPECT_EQ(vcpus, 1);
  EXPECT_EQ(iothreads, 1);
  EXPECT_GE(others, 1);
  EXPECT_EQ(fs::status(runtime()).permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_EQ(fs::status(runtime() + "/qmp.sock").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  ::kill(run.pid(), SIGTERM);
  EXPECT_EQ(run.wait(60s), 0) << run.out().text();
  EXPECT_NE(run.out().text().find("passlaunch-guest: powering off"), std::string::npos);
  EXPECT_FALSE(alive(qemu)) << "QEMU was reaped";
  EXPECT_FALSE(fs::exists(runtime())) << "runtime dir removed";
}

TEST_F(RunQemu, GuestIgnoringPowerButtonIsQuitAfterTimeout) {
  Passlaunch run({"run", write_profile(guest_profile(name_, "ignore-powerdown", "", 3))},
                 dir_.path());
  ASSERT_TRUE(run.out().wait_for("passlaunch-guest: ready")) << run.out().text();
  pid_t qemu = qemu_pid();
  auto t0 = Clock::now();
  ::kill(run.pid(), SIGTERM);
  EXPECT_EQ(run.wait(60s), 7) << run.out().text();
  EXPECT_GE(Clock::now() - t0, 3s);
  EXPECT_NE(run.out().text().find("did not shut down within 3 s"), std::string::npos);
  EXPECT_NE(run.out().text().find("pressing the power button again"), std::string::npos);
  EXPECT_FALSE(alive(qemu));
  EXPECT_FALSE(fs::exists(runtime()));
}

// A stop requested while the guest still boots (its ACPI driver not loaded, so the
// first press is lost) still ends in a graceful shutdown: the button is pressed again
// every 2 s, and the run ends well before the profile's timeout.
TEST_F(RunQemu, SigtermEarlyInBootStillShutsDownGracefully) {
  for (auto delay : {0ms, 40ms, 300ms}) {
    std::string name = name_ + "e" + std::to_string(delay.count());
    Passlaunch run({"run", write_profile(guest_profile(name, "normal", "", 120))}, dir_.path());
    ASSERT_TRUE(run.out().wait_for("guest running")) << run.out().text();
    std::this_thread::sleep_for(delay);
    auto t0 = Clock::now();
    ::kill(run.pid(), SIGTERM);
    EXPECT_EQ(run.wait(100s), 0) << "SIGTERM " << delay.count() << " ms after start\n"
                                 << run.out().text();
    EXPECT_LT(Clock::now() - t0, 60s) << run.out().text();
    EXPECT_NE(run.out().text().find("passlaunch-guest: powering off"), std::string::npos)
        << run.out().text();
    EXPECT_EQ(run.out().text().find("quitting QEMU"), std::string::npos) << run.out().text();
  }
}

TEST_F(RunQemu, SecondSignalQuitsAtOnce) {
  Passlaunch run({"run", write_profile(guest_profile(name_, "ignore-powerdown", "", 120))},
                 dir_.path());
  ASSERT_TRUE(run.out().wait_for("passlaunch-guest: ready")) << run.out().text();
  ::kill(run.pid(), SIGINT);
  ASSERT_TRUE(run.out().wait_for("shutting the guest down"));
  ::kill(run.pid(), SIGINT);
  auto t0 = Clock::now();
  EXPECT_EQ(run.wait(30s), 7) << run.out().text();
  EXPECT_LT(Clock::now() - t0, 10s);
}

TEST_F(RunQemu, QemuKilledIsReportedAsCrash) {
  Passlaunch run({"run", write_profile(guest_profile(name_, "normal"))}, dir_.path());
  ASSERT_TRUE(run.out().wait_for("passlaunch-guest: ready")) << run.out().text();
  ::kill(qemu_pid(), SIGKILL);
  EXPECT_EQ(run.wait(30s), 5) << run.out().text();
  EXPECT_NE(run.out().text().find("killed by signal SIGKILL"), std::string::npos)
      << run.out().text();
  EXPECT_FALSE(fs::exists(runtime()));
}

// A guest that panics (the panic variant, with the ISA pvpanic device) ends
// the run at once with exit 6: QEMU paused at the panic, quit by the launcher.
TEST_F(RunQemu, GuestPanicEndsTheRunWithExitSix) {
  Passlaunch run(
      {"run", write_profile(guest_profile(name_, "panic", R"(, "panic": {"model": "isa"})"))},
      dir_.path());
  EXPECT_EQ(run.wait(90s), 6) << run.out().text();
  const std::string& out = run.out().text();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(threads of QEMU \(pid (\d+)\))"))) << out;
  pid_t qemu = std::stoi(m[1]);
  EXPECT_NE(out.find("-device pvpanic,events=1 -action panic=pause"), std::string::npos) << out;
  EXPECT_NE(out.find("passlaunch-guest: pvpanic QEMU0001:00"), std::string::npos) << out;
  EXPECT_NE(out.find("event GUEST_PANICKED {\"action\":\"pause\"}"), std::string::npos) << out;
  EXPECT_NE(out.find("the guest panicked; QEMU exited with status 0"), std::string::npos) << out;
  EXPECT_FALSE(alive(qemu)) << "QEMU was quit and reaped";
  EXPECT_FALSE(fs::exists(runtime())) << "runtime dir removed";
}

TEST_F(RunQemu, SecondRunOfSameNameIsRefused) {
  std::string profile = write_profile(guest_profile(name_, "normal"));
  Passlaunch run({"run", profile}, dir_.path());
  // Ready: the guest reacts to the power button at the end of the test.
  ASSERT_TRUE(run.out().wait_for("passlaunch-guest: ready")) << run.out().text();
  auto [code, out] = passlaunch_cmd({"run", profile}, dir_.path());
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("is already running (pid " + std::to_string(run.pid()) + ")"),
            std::string::npos)
      << out;
  EXPECT_TRUE(alive(qemu_pid())) << "the first VM is untouched";
  ::kill(run.pid(), SIGTERM);
  EXPECT_EQ(run.wait(60s), 0) << run.out().text();
}

TEST_F(RunQemu, StaleLockOfADeadLauncherIsCleared) {
  fs::create_directories(runtime());
  std::ofstream(runtime() + "/lock") << "999999\n";
  std::ofstream(runtime() + "/qmp.sock") << "";
  Passlaunch run({"run", write_profile(guest_profile(name_, "normal"))}, dir_.path());
  ASSERT_TRUE(run.out().wait_for("passlaunch-guest: ready")) << run.out().text();
  ::kill(run.pid(), SIGTERM);
  EXPECT_EQ(run.wait(60s), 0) << run.out().text();
}

TEST_F(RunQemu, QemuRefusingToStartIsAStartupFailure) {
  std::string bad = dir_.path() + "/not-a.qcow2";
  std::ofstream(bad) << "this is not a qcow2 image";
  Passlaunch run({"run", write_profile(guest_profile(
                             name_, "normal",
                             R"(, "disks": [{"path": ")" + bad + R"(", "format": "qcow2"}])"))},
                 dir_.path());
  EXPECT_EQ(run.wait(60s), 8) << run.out().text();
  EXPECT_NE(run.out().text().find("before the guest started"), std::string::npos)
      << run.out().text();
  EXPECT_NE(run.out().text().find("qcow2"), std::string::npos) << "QEMU's own message is shown";
  EXPECT_FALSE(fs::exists(runtime()));
}

TEST_F(RunRefused, BadProfileStartsNothing) {
  auto [code, out] = passlaunch_cmd(
      {"run",
       write_profile(
           R"({"name": "x", "cpu": {"vcpus": 2}, "memory": {"size_mib": 64}, "pinning": {"vcpus": [1, 1]}})")},
      dir_.path());
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("/pinning/vcpus: host CPU 1 is pinned twice"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir_.path() + "/passlaunch/x"));
}

TEST_F(RunRefused, PinPlanOutsideTheHostIsRefusedBeforeStart) {
  std::string text = guest_profile(name_, "normal");
  text = std::regex_replace(text, std::regex(R"("vcpus": \[1\])"), R"("vcpus": [4000])");
  auto [code, out] = passlaunch_cmd({"run", write_profile(text)}, dir_.path());
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("CPU 4000 is not online on this host"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(runtime()));
}

}  // namespace
}  // namespace pl

namespace pl {
namespace {

using test::NetNs;

TEST_F(RunQemu, MacvtapIsCreatedForTheGuestAndRemovedAfterShutdown) {
  NetNs ns;
  ASSERT_TRUE(ns.ok()) << "ip netns is needed";
  std::string profile = write_profile(guest_profile(
      name_, "normal",
      R"(, "network": [{"type": "macvtap", "link": "pl-veth0", "mode": "bridge", "mac": "52:54:00:a3:d3:f5"}])"));
  Passlaunch run({"ip", "netns", "exec", ns.name(), PL_PASSLAUNCH, "run", profile}, dir_.path(),
                 /*raw=*/true);
  ASSERT_TRUE(run.out().wait_for("passlaunch-guest: ready")) << run.out().text();
  EXPECT_NE(run.out().text().find("passlaunch-guest: net eth0 52:54:00:a3:d3:f5"),
            std::string::npos);
  std::string links = ns.links();
  EXPECT_NE(links.find("pl-" + name_ + "-0@pl-veth0"), std::string::npos) << links;
  EXPECT_NE(links.find("macvtap mode bridge"), std::string::npos) << links;
  EXPECT_NE(links.find("52:54:00:a3:d3:f5"), std::string::npos) << links;
  // recover refuses to undo a running VM's changes. (Not `recover` without a
  // name here: it would also recover journals of tests running in parallel.)
  auto [rc, rout] = passlaunch_cmd(
      {"ip", "netns", "exec", ns.name(), PL_PASSLAUNCH, "recover", name_}, dir_.path(), true);
  EXPECT_EQ(rc, 1) << rout;
  EXPECT_NE(rout.find("is running"), std::string::npos) << rout;
  EXPECT_NE(ns.links().find("macvtap"), std::string::npos) << "the guest keeps its macvtap";
  ::kill(run.pid(), SIGTERM);
  EXPECT_EQ(run.wait(60s), 0) << run.out().text();
  links = ns.links();
  EXPECT_EQ(links.find("macvtap"), std::string::npos) << links;
}

TEST_F(RunQemu, MacvtapOfAKilledLauncherIsRemovedByRecover) {
  NetNs ns;
  ASSERT_TRUE(ns.ok()) << "ip netns is needed";
  std::string profile = write_profile(guest_profile(
      name_, "normal",
      R"(, "network": [{"type": "macvtap", "link": "pl-veth0", "mac": "52:54:00:a3:d3:f6"}])"));
  Passlaunch run({"ip", "netns", "exec", ns.name(), PL_PASSLAUNCH, "run", profile}, dir_.path(),
                 true);
  ASSERT_TRUE(run.out().wait_for("guest running")) << run.out().text();
  pid_t qemu = qemu_pid();
  ::kill(run.pid(), SIGKILL);
  run.wait(10s);
  // QEMU follows its launcher (PR_SET_PDEATHSIG); the macvtap stays behind.
  for (int i = 0; i < 200 && alive(qemu); ++i) std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(alive(qemu));
  EXPECT_NE(ns.links().find("macvtap"), std::string::npos) << ns.links();

  // The host is dirty: a new run is refused until recover.
  auto [code, out] = passlaunch_cmd(
      {"ip", "netns", "exec", ns.name(), PL_PASSLAUNCH, "run", profile}, dir_.path(), true);
  EXPECT_EQ(code, 4) << out;
  EXPECT_NE(out.find("passlaunch recover " + name_), std::string::npos) << out;
  EXPECT_NE(ns.links().find("macvtap"), std::string::npos) << "a refused run changes nothing";

  auto [rc, rout] = passlaunch_cmd(
      {"ip", "netns", "exec", ns.name(), PL_PASSLAUNCH, "recover", name_}, dir_.path(), true);
  EXPECT_EQ(rc, 0) << rout;
  EXPECT_EQ(ns.links().find("macvtap"), std::string::npos) << ns.links();
  auto [rc2, rout2] = passlaunch_cmd(
      {"ip", "netns", "exec", ns.name(), PL_PASSLAUNCH, "recover", name_}, dir_.path(), true);
  EXPECT_EQ(rc2, 0) << "recover is idempotent: " << rout2;
}

TEST_F(RunRefused, MacvtapOnAMissingLinkStartsNothing) {
  NetNs ns;
  ASSERT_TRUE(ns.ok());
  std::string profile = write_profile(guest_profile(
      name_, "normal",
      R"(, "network": [{"type": "macvtap", "link": "pl-nosuch", "mac": "52:54:00:a3:d3:f5"}])"));
  Passlaunch run({"ip", "netns", "exec", ns.name(), PL_PASSLAUNCH, "run", profile}, dir_.path(),
                 true);
  EXPECT_EQ(run.wait(30s), 2) << run.out().text();
  EXPECT_NE(run.out().text().find("/network/0/link"), std::string::npos) << run.out().text();
  EXPECT_EQ(ns.links().find("macvtap"), std::string::npos);
  EXPECT_FALSE(fs::exists(runtime()));
}

}  // namespace
}  // namespace pl

namespace pl {
namespace {

// An iothread id longer than a thread name can hold: QEMU's
// pthread_setname_np("IO iothread-disk0") fails (ERANGE), so the thread keeps
// the name "qemu-system-x86" and its name says "emulator". `latency NAME`
// (through the control socket) and `run --latency-log` (from the launcher's
// own QMP replies) must both give it its role, in full.
TEST_F(RunQemu, LatencyLogAndLatencyByNameRecordPinnedThreadsWithRolesFromQmp) {
  std::string report = dir_.path() + "/latency.json";
  std::string profile = guest_profile(name_, "normal");
  const std::string io0 = R"("id": "io0")";
  ASSERT_NE(profile.find(io0), std::string::npos);
  profile.replace(profile.find(io0), io0.size(), R"("id": "iothread-disk0")");
  Passlaunch run(
      {"run", write_profile(profile), "--latency-log", report, "--latency-interval", "5"},
      dir_.path());
  ASSERT_TRUE(run.out().wait_for("passlaunch-guest: ready")) << run.out().text();

  // The iothread's tid, as QEMU itself says (not through passlaunch latency).
  auto [qcode, qtext] = passlaunch_cmd({"ctl", name_, "qmp", "query-iothreads"}, dir_.path());
  ASSERT_EQ(qcode, 0) << qtext;
  int io_tid = 0;
  for (const auto& t : nlohmann::json::parse(qtext))
    if (t["id"] == "iothread-disk0") io_tid = t["thread-id"];
  ASSERT_GT(io_tid, 0) << qtext;
  std::string io_name = comm(qemu_pid(), std::to_string(io_tid));
  EXPECT_NE(latency::to_string(latency::classify_thread(io_name)), "iothread iothread-disk0")
      << "the thread name '" << io_name << "' alone names the role: this test proves nothing";

  auto by_tid = [](const nlohmann::json& j) {
    std::map<int, nlohmann::json> out;
    for (const auto& t : j["threads"]) out[t["tid"].get<int>()] = t;
    return out;
  };
  auto vcpu0 = [](const nlohmann::json& j) {
    for (const auto& t : j["threads"])
      if (t["name"] == "CPU 0/TCG") return t;
    return nlohmann::json();
  };
  auto [code, text] = passlaunch_cmd(
      {"latency", name_, "--duration", "300ms", "--interval", "2ms", "--host-scan", "0", "--json"},
      dir_.path());
  ASSERT_EQ(code, 0) << text;
  EXPECT_EQ(text.find("warning"), std::string::npos) << text;
  nlohmann::json cli = nlohmann::json::parse(text);
  ASSERT_TRUE(by_tid(cli).count(io_tid)) << cli.dump(1);
  EXPECT_EQ(by_tid(cli)[io_tid]["role"], "iothread iothread-disk0") << cli.dump(1);
  EXPECT_EQ(vcpu0(cli)["role"], "vcpu 0") << cli.dump(1);

  ::kill(run.pid(), SIGTERM);
  EXPECT_EQ(run.wait(60s), 0) << run.out().text();
  std::ifstream in(report);
  ASSERT_TRUE(in) << run.out().text();
  nlohmann::json j = nlohmann::json::parse(in);
  ASSERT_TRUE(by_tid(j).count(io_tid)) << j.dump(1);
  EXPECT_EQ(by_tid(j)[io_tid]["role"], "iothread iothread-disk0") << j.dump(1);
  EXPECT_EQ(by_tid(j)[io_tid]["allowed_cpus"], "1") << j.dump(1);
  nlohmann::json v = vcpu0(j);
  EXPECT_EQ(v["role"], "vcpu 0") << j.dump(1);
  EXPECT_EQ(v["allowed_cpus"], "1") << v.dump();
  EXPECT_EQ(v["outside_allowed_samples"], 0) << v.dump();
}

}  // namespace
}  // namespace pl

namespace pl {
namespace {

/// Pids whose command line mentions `needle`.
std::vector<pid_t> processes_with(const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), {});
    if (cmd.find(needle) != std::string::npos) out.push_back(std::stoi(name));
  }
  return out;
}

TEST_F(RunQemu, TpmIsServedBySwtpmForTheVmsLife) {
  std::string state = dir_.path() + "/tpm-" + name_;
  Passlaunch run({"run", write_profile(guest_profile(
                             name_, "normal", R"(, "tpm": {"state_dir": ")" + state + R"("})"))},
                 dir_.path());
  ASSERT_TRUE(run.out().wait_for("passlaunch-guest: ready")) << run.out().text();
  auto [code, out] = passlaunch_cmd({"ctl", name_, "qmp", "query-tpm"}, dir_.path());
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("tpm-crb"), std::string::npos) << out;
  EXPECT_NE(out.find("emulator"), std::string::npos) << out;
  EXPECT_EQ(processes_with("dir=" + state).size(), 1u) << "one swtpm for the VM";
  EXPECT_TRUE(fs::exists(state + "/tpm2-00.permall")) << "the TPM state is kept";
  ::kill(run.pid(), SIGTERM);
  EXPECT_EQ(run.wait(60s), 0) << run.out().text();
  EXPECT_TRUE(processes_with("dir=" + state).empty()) << "swtpm is gone with the VM";
}

}  // namespace
}  // namespace pl

namespace pl {
namespace {

/// The scheduling policy of a thread (field 41 of /proc/PID/task/TID/stat).
int sched_policy(pid_t pid, pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  std::istringstream rest(text.substr(text.rfind(')') + 2));  // after "(comm) "
  std::string field;
  for (int i = 3; i <= 41 && rest >> field; ++i) {
    if (i == 41) return std::stoi(field);
  }
  return -1;
}

TEST_F(RunQemu, RealtimePriorityAppliesToVcpuThreadsOnly) {
  Passlaunch run({"run", write_profile(std::regex_replace(
                             guest_profile(name_, "normal"), std::regex(R"("vcpus": \[1\],)"),
                             R"("vcpus": [1], "realtime_priority": 1,)"))},
                 dir_.path());
  ASSERT_TRUE(run.out().wait_for("passlaunch-guest: ready")) << run.out().text();
  pid_t qemu = qemu_pid();
  int fifo = 0, other = 0;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(qemu) + "/task")) {
    pid_t tid = std::stoi(e.path().filename());
    if (comm(qemu, e.path().filename()).rfind("CPU 0/", 0) == 0) {
      EXPECT_EQ(sched_policy(qemu, tid), SCHED_FIFO);
      ++fifo;
    } else {
      EXPECT_EQ(sched_policy(qemu, tid), SCHED_OTHER);
      ++other;
    }
  }
  EXPECT_EQ(fifo, 1);
  EXPECT_GE(other, 1);
  ::kill(run.pid(), SIGTERM);
  EXPECT_EQ(run.wait(60s), 0) << run.out().text();
}

}  // namespace
}  // namespace pl
