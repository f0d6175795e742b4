// The pin plan (pure), its checks against a host topology, and pinning a real
// paused QEMU's threads.
#include "run/pinning.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/cpulist.h"
#include "core/error.h"
#include "test_util.h"

namespace pl {
namespace {

/// `f` throws pl::Error with `code` and a message containing `what`.
template <typename F>
void expect_error(F f, Exit code, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no error; expected " << what;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

Pinning seed_like() {
  Pinning p;
  p.vcpus = {0, 1, 2, 3};
  p.emulator = {6, 7};
  p.iothreads = {{"io1", {5}}, {"io2", {}}};
  return p;
}

TEST(PinPlan, EveryThreadGetsItsRoleAndCpus) {
  QemuThreads q{{{0, 101}, {1, 102}, {2, 103}, {3, 104}}, {{"io1", 110}, {"io2", 111}}};
  std::vector<ThreadInfo> threads = {
      {100, "qemu-system-x86"}, {101, "CPU 0/KVM"}, {102, "CPU 1/KVM"},
      {103, "CPU 2/KVM"},       {104, "CPU 3/KVM"}, {110, "IO io1"},
      {111, "IO io2"},          {120, "worker"},    {130, "vhost-100"}};
  auto pins = plan_pins(seed_like(), q, threads);
  ASSERT_EQ(pins.size(), threads.size());
  std::map<pid_t, ThreadPin> by;
  for (auto& p : pins) by[p.tid] = p;
  EXPECT_EQ(by[101].role, ThreadRole::kVcpu);
  EXPECT_EQ(by[103].cpus, std::vector<int>{2});
  EXPECT_EQ(by[103].label, "vCPU 2");
  EXPECT_EQ(by[110].cpus, std::vector<int>{5});
  EXPECT_EQ(by[111].cpus, (std::vector<int>{6, 7}))
      << "an iothread without cpus uses the emulator set";
  EXPECT_EQ(by[100].role, ThreadRole::kEmulator);
  EXPECT_EQ(by[120].cpus, (std::vector<int>{6, 7}));
  EXPECT_EQ(by[130].role, ThreadRole::kVhost);
  EXPECT_EQ(by[130].cpus, (std::vector<int>{6, 7}));
}

TEST(PinPlan, ThreadRolesComeFromQmpNotNames) {
  // A vCPU thread is known by its thread-id from query-cpus-fast, whatever its name.
  QemuThreads q{{{0, 7}}, {}};
  auto pins = plan_pins(Pinning{{3}, {}, {}, {}}, q, {{7, "renamed"}, {8, "CPU 1/KVM"}});
  EXPECT_EQ(pins[0].role, ThreadRole::kVcpu);
  EXPECT_EQ(pins[1].role, ThreadRole::kEmulator);
  EXPECT_TRUE(pins[1].cpus.empty()) << "no emulator set: left as inherited";
}

TEST(PinPlan, MoreVcpusThanPinsIsAnError) {
  QemuThreads q{{{0, 1}, {1, 2}}, {}};
  expect_error(
      [&] {
        plan_pins(Pinning{{3}, {}, {}, {}}, q, {{1, "a"}, {2, "b"}});
      },
      Exit::kFailed, "QEMU reports vCPU 1, but the profile pins 1 vCPUs");
}

TEST(PinPlan, UnknownThreadIdIsAnError) {
  QemuThreads q{{{0, 99}}, {}};
  expect_error(
      [&] {
        plan_pins(Pinning{{3}, {}, {}, {}}, q, {{1, "a"}});
      },
      Exit::kFailed, "QMP names thread 99 for vCPU 0, but QEMU has no such thread");
}

CpuTopology host8() {
  CpuTopology t;
  t.online = {0, 1, 2, 3, 4, 5, 6, 7};
  for (int c = 0; c < 8; ++c) t.siblings[c] = {c & ~1, c | 1};  // (0,1) (2,3) ...
  t.allowed = t.online;
  return t;
}

Profile with_pins(std::vector<int> vcpus, std::vector<int> emulator, int threads = 1) {
  Profile p;
  p.file = "p.json";
  p.cpu.vcpus = static_cast<int>(vcpus.size());
  p.cpu.threads = threads;
  p.pinning.vcpus = std::move(vcpus);
  p.pinning.emulator = std::move(emulator);
  return p;
}

TEST(PinCheck, OfflineAndCpusetCpusAreErrorsNamingThePath) {
  CpuTopology t = host8();
  t.allowed = {0, 1, 2, 3, 4, 5};
  try {
    check_pin_plan(with_pins({0, 9}, {6}), t);
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_EQ(e.code(), Exit::kUsage);
    EXPECT_NE(m.find("p.json: /pinning/vcpus: CPU 9 is not online on this host (online: 0-7)"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("p.json: /pinning/emulator: CPU 6 is outside the launcher's cpuset"),
              std::string::npos)
        << m;
  }
}

TEST(PinCheck, WarnsWhenSiblingsServeDifferentGuestCores) {
  // threads=1: vCPU 0 and 1 are different guest cores on host siblings 0 and 1.
  auto w = check_pin_plan(with_pins({0, 1}, {4}), host8());
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find("host CPUs 0 and 1 are SMT siblings"), std::string::npos);
  // threads=2: vCPUs 0,1 form one guest core on siblings 0,1: fine.
  EXPECT_TRUE(check_pin_plan(with_pins({0, 1, 2, 3}, {4}, 2), host8()).empty());
  // threads=2 but pinned across cores: vCPU 1 (core 0) and vCPU 2 (core 1) on siblings 2,3.
  EXPECT_FALSE(check_pin_plan(with_pins({0, 2, 3, 5}, {6}, 2), host8()).empty());
}

TEST(PinCheck, WarnsWhenEmulatorSharesVcpuCpus) {
  auto w = check_pin_plan(with_pins({0, 2}, {2, 4}), host8());
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find("shares CPUs 2 with vCPUs"), std::string::npos) << w[0];
}

TEST(PinCheck, WarnsWhenAnIothreadIdIsTooLongForAThreadName) {
  Profile p = with_pins({0, 2}, {4});
  p.pinning.iothreads = {{"disk0", {4}}, {"iothread-disk", {4}}, {"iothread-dsk", {4}}};
  auto w = check_pin_plan(p, host8());
  ASSERT_EQ(w.size(), 1u);  // 13 bytes warns, 12 does not
  EXPECT_NE(w[0].find("p.json: /pinning/iothreads/1/id: \"iothread-disk\" is longer than 12 bytes"),
            std::string::npos)
      << w[0];
}

TEST(PinCheck, ReadsTopologyFromSysfsLayout) {
  test::TempDir root;
  std::string cpu = root.path() + "/sys/devices/system/cpu";
  std::filesystem::create_directories(cpu + "/cpu0/topology");
  std::filesystem::create_directories(cpu + "/cpu1/topology");
  std::ofstream(cpu + "/online") << "0-1\n";
  std::ofstream(cpu + "/cpu0/topology/thread_siblings_list") << "0-1\n";
  std::ofstream(cpu + "/cpu1/topology/thread_siblings_list") << "0-1\n";
  CpuTopology t = read_cpu_topology(root.path());
  EXPECT_EQ(t.online, (std::vector<int>{0, 1}));
  EXPECT_EQ(t.siblings[1], (std::vector<int>{0, 1}));
}

// Real QEMU, paused: thread ids from QMP, pins applied, /proc agrees.
TEST(PinQemu, PinsEveryThreadOfAPausedQemu) {
  if (!test::may_pin_guest_profile()) GTEST_SKIP() << "needs CPUs 0 and 1";
  test::Qemu qemu(test::paused_qemu_argv(
      {"-name", "pintest,debug-threads=on", "-smp", "2", "-object", "iothread,id=io1"}));
  auto cpus = nlohmann::json::parse(qemu.qmp(R"({"execute": "query-cpus-fast"})"))["return"];
  auto ios = nlohmann::json::parse(qemu.qmp(R"({"execute": "query-iothreads"})"))["return"];
  QemuThreads q;
  for (auto& c : cpus) q.vcpus[c["cpu-index"]] = c["thread-id"];
  for (auto& i : ios) q.iothreads[i["id"]] = i["thread-id"];
  ASSERT_EQ(q.vcpus.size(), 2u);
  ASSERT_EQ(q.iothreads.size(), 1u);

  Pinning pin{{1, 0}, {0}, {{"io1", {1}}}, {}};
  auto pins = plan_pins(pin, q, list_threads(qemu.pid()));
  apply_pins(pins, std::nullopt);
  EXPECT_EQ(test::cpus_allowed_list(qemu.pid(), q.vcpus[0]), "1");
  EXPECT_EQ(test::cpus_allowed_list(qemu.pid(), q.vcpus[1]), "0");
  EXPECT_EQ(test::cpus_allowed_list(qemu.pid(), q.iothreads["io1"]), "1");
  for (const ThreadInfo& t : list_threads(qemu.pid())) {
    if (t.tid != q.vcpus[0] && t.tid != q.vcpus[1] && t.tid != q.iothreads["io1"]) {
      EXPECT_EQ(test::cpus_allowed_list(qemu.pid(), t.tid), "0") << t.name;
    }
  }
  std::string table = format_pin_table(pins);
  EXPECT_NE(table.find("vCPU 0"), std::string::npos) << table;
  EXPECT_NE(table.find("iothread io1"), std::string::npos) << table;
}

TEST(PinApply, PinToCpuOutsideCpusetFailsWithCpusetInMessage) {
  std::vector<ThreadPin> pins = {{::gettid(), "self", ThreadRole::kVcpu, "vCPU 0", {4000}}};
  try {
    apply_pins(pins, std::nullopt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kFailed);
    EXPECT_NE(std::string(e.what()).find("cannot pin vCPU 0"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("allows CPUs"), std::string::npos) << e.hint();
  }
}

}  // namespace
}  // namespace pl
