// Profiles: strict parsing, every problem reported with file, JSON path and
// what was expected.
#include "profile/profile.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace pl {
namespace {

const char* kMinimal =
    R"({"name": "t", "memory": {"size_mib": 256}, "cpu": {"model": "max", "vcpus": 2}})";

/// Parses `text` and returns the error message, or "" when it parsed.
std::string error_of(const std::string& text) {
  try {
    parse_profile(text, "p.json", ProfileChecks{.files = false});
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kUsage);
    return e.what();
  }
  return "";
}

/// A minimal profile with `extra` members added at the top level.
std::string with(const std::string& extra) {
  std::string base = kMinimal;
  return base.substr(0, base.size() - 1) + ", " + extra + "}";
}

TEST(Profile, MinimalProfileParsesWithDefaults) {
  Profile p = parse_profile(kMinimal, "p.json", ProfileChecks{.files = false});
  EXPECT_EQ(p.name, "t");
  EXPECT_EQ(p.accel, Accel::kAuto);
  EXPECT_EQ(p.cpu.cores, 2);
  EXPECT_EQ(p.shutdown_timeout_s, 120);
  EXPECT_TRUE(p.cpu.hypervisor_bit);
}

TEST(Profile, CommentsAreAllowed) {
  EXPECT_EQ(error_of("// a VM\n/* block */ " + std::string(kMinimal)), "");
}

TEST(Profile, UnknownKeyNamesFileAndPath) {
  std::string e = error_of(with(R"("cpu_pinning": {})"));
  EXPECT_NE(e.find("p.json: /cpu_pinning: unknown key"), std::string::npos) << e;
  e = error_of(
      R"({"name": "t", "memory": {"size_mib": 256, "hugepage": true}, "cpu": {"vcpus": 1, "model": "max"}})");
  EXPECT_NE(e.find("p.json: /memory/hugepage: unknown key"), std::string::npos) << e;
}

TEST(Profile, WrongTypeSaysWhatWasExpected) {
  std::string e = error_of(R"({"name": "t", "memory": {"size_mib": "4G"}, "cpu": {"vcpus": 1}})");
  EXPECT_NE(e.find("/memory/size_mib: expected an integer, got a string"), std::string::npos) << e;
}

TEST(Profile, BadPciAddressNamesDeviceIndex) {
  std::string e = error_of(with(
      R"("accel": "kvm", "cpu_x": 1, "devices": [{"type": "vfio", "address": "0000:01:00.0"}, {"type": "vfio", "address": "01:00.1"}])"));
  EXPECT_NE(e.find("/devices/1/address: expected a PCI address DDDD:BB:DD.F"), std::string::npos)
      << e;
  EXPECT_NE(e.find("\"01:00.1\""), std::string::npos) << e;
}

TEST(Profile, AllProblemsAreReportedTogether) {
  std::string e =
      error_of(R"({"name": "t", "memory": {"size_mib": 256}, "cpu": {"vcpus": 1, "model": "max"},
      "devices": [{"type": "vfio", "address": "zz"}], "typo": 1, "rtc": "mars"})");
  EXPECT_NE(e.find("3 problems"), std::string::npos) << e;
  EXPECT_NE(e.find("/devices/0/address"), std::string::npos) << e;
  EXPECT_NE(e.find("/typo: unknown key"), std::string::npos) << e;
  EXPECT_NE(e.find("/rtc: expected one of \"utc\", \"localtime\", got \"mars\""), std::string::npos)
      << e;
}

TEST(Profile, BadCpuListIsRejected) {
  std::string e = error_of(with(R"("pinning": {"vcpus": "0-1", "emulator": "3-2"})"));
  EXPECT_NE(e.find("/pinning/emulator: expected a CPU list such as \"0-15,17\", got \"3-2\""),
            std::string::npos)
      << e;
}

TEST(Profile, VcpuPinCountMustMatchVcpus) {
  std::string e = error_of(with(R"("pinning": {"vcpus": "0-2"})"));
  EXPECT_NE(e.find("/pinning/vcpus: expected one host CPU per vCPU (2 from /cpu/vcpus), got 3"),
            std::string::npos)
      << e;
}

TEST(Profile, CpuPinnedTwiceIsAnError) {
  std::string e = error_of(with(R"("pinning": {"vcpus": [4, 4]})"));
  EXPECT_NE(e.find("host CPU 4 is pinned twice (vCPU 0 and vCPU 1)"), std::string::npos) << e;
}

TEST(Profile, BadAndDuplicateMacs) {
  std::string e = error_of(with(R"("network": [{"type": "user", "mac": "52:54:00:zz:00:01"},
      {"type": "user", "mac": "01:00:5e:00:00:01"},
      {"type": "user", "mac": "52:54:00:00:00:02"}, {"type": "user", "mac": "52:54:00:00:00:02"}])"));
  EXPECT_NE(e.find("/network/0/mac: expected a unicast MAC address"), std::string::npos) << e;
  EXPECT_NE(e.find("/network/1/mac: expected a unicast MAC address"), std::string::npos) << e;
  EXPECT_NE(e.find("/network/3/mac: MAC 52:54:00:00:00:02 is also used by /network/2"),
            std::string::npos)
      << e;
}

TEST(Profile, MissingFilesAreNamed) {
  std::string text = with(
      R"("kernel": {"path": "/nonexistent/vmlinuz"}, "disks": [{"path": "/nonexistent/d.qcow2", "format": "qcow2"}])");
  try {
    parse_profile(text, "p.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("/kernel/path: file not found: /nonexistent/vmlinuz"), std::string::npos) << m;
    EXPECT_NE(m.find("/disks/0/path: file not found: /nonexistent/d.qcow2"), std::string::npos)
        << m;
  }
}

TEST(Profile, RelativePathsAreTakenFromTheProfileDirectory) {
  Profile p = parse_profile(with(R"("kernel": {"path": "k/vmlinuz"})"), "/etc/passlaunch/p.json",
                            ProfileChecks{.files = false});
  EXPECT_EQ(p.kernel->kernel, "/etc/passlaunch/k/vmlinuz");
}

TEST(Profile, CrossSectionRules) {
  EXPECT_NE(error_of(with(R"("accel": "tcg", "cpu_": 1)")).find("unknown key"), std::string::npos);
  std::string e = error_of(
      R"({"name": "t", "accel": "tcg", "memory": {"size_mib": 256}, "cpu": {"vcpus": 1}})");
  EXPECT_NE(e.find("/cpu/model: \"host\" needs accel \"kvm\""), std::string::npos) << e;
  e = error_of(with(R"("disks": [{"path": "/d", "iothread": "nope"}])"));
  EXPECT_NE(e.find("/disks/0/iothread: expected the id of an iothread"), std::string::npos) << e;
  e = error_of(
      R"({"name": "t", "memory": {"size_mib": 256}, "cpu": {"vcpus": 6, "topology": {"sockets": 1, "cores": 2, "threads": 2}}})");
  EXPECT_NE(e.find("/cpu/topology: sockets x cores x threads must equal vcpus (6)"),
            std::string::npos)
      << e;
}

TEST(Profile, PanicNotifierIsOffUnlessAModelIsGiven) {
  EXPECT_EQ(parse_profile(kMinimal, "p.json", ProfileChecks{.files = false}).panic,
            PanicModel::kNone);
  for (auto [name, model] : {std::pair{"isa", PanicModel::kIsa}, std::pair{"pci", PanicModel::kPci},
                             std::pair{"hyperv", PanicModel::kHyperv}}) {
    Profile p = parse_profile(with(std::string(R"("panic": {"model": ")") + name + R"("})"),
                              "p.json", ProfileChecks{.files = false});
    EXPECT_EQ(p.panic, model) << name;
  }
}

TEST(Profile, BadPanicNotifierIsNamed) {
  std::string e = error_of(with(R"("panic": {"model": "pvpanic"})"));
  EXPECT_NE(e.find("p.json: /panic/model: expected one of \"isa\", \"pci\", \"hyperv\", got "
                   "\"pvpanic\""),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("1 problem in"), std::string::npos) << e;
  e = error_of(with(R"("panic": {})"));
  EXPECT_NE(e.find("/panic/model: required key is missing"), std::string::npos) << e;
  e = error_of(with(R"("panic": "isa")"));
  EXPECT_NE(e.find("/panic: expected an object, got a string"), std::string::npos) << e;
  e = error_of(with(R"("panic": {"model": "isa", "action": "pause"})"));
  EXPECT_NE(e.find("/panic/action: unknown key"), std::string::npos) << e;
}

// The seed hides the hypervisor bit; Windows then never finds the Hyper-V
// crash MSRs, and a BSOD would go unreported without a word.
TEST(Profile, HypervPanicWithHiddenHypervisorBitIsAnError) {
  std::string e = error_of(
      R"({"name": "t", "memory": {"size_mib": 256}, "cpu": {"vcpus": 1, "hypervisor_bit": false},
          "panic": {"model": "hyperv"}})");
  EXPECT_NE(e.find("p.json: /panic/model: \"hyperv\" reports through the Hyper-V crash MSRs, "
                   "which a guest only uses when it sees a hypervisor, but /cpu/hypervisor_bit "
                   "is false"),
            std::string::npos)
      << e;
  EXPECT_EQ(error_of(R"({"name": "t", "memory": {"size_mib": 256}, "cpu": {"vcpus": 1,
          "hypervisor_bit": false}, "panic": {"model": "isa"}})"),
            "");
  e = error_of(with(R"("accel": "tcg", "panic": {"model": "hyperv"})"));
  EXPECT_NE(e.find("/panic/model: \"hyperv\" needs accel \"kvm\""), std::string::npos) << e;
}

TEST(Profile, InvalidJsonIsOneClearError) {
  std::string e = error_of("{\"name\": \"t\",");
  EXPECT_NE(e.find("p.json: not valid JSON"), std::string::npos) << e;
}

TEST(Profile, NameMustBeSafeForPaths) {
  std::string e = error_of(
      R"({"name": "../x", "memory": {"size_mib": 256}, "cpu": {"vcpus": 1, "model": "max"}})");
  EXPECT_NE(e.find("/name: expected letters, digits"), std::string::npos) << e;
}

TEST(Profile, PciAddressRoundTrips) {
  auto a = PciAddress::parse("0000:0A:1f.7");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->str(), "0000:0a:1f.7");
  EXPECT_FALSE(PciAddress::parse("0000:01:20.0"));  // slot is 5 bits
  EXPECT_FALSE(PciAddress::parse("0000:01:00.8"));
}

}  // namespace
}  // namespace pl
