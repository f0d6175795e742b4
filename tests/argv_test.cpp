// build_qemu_argv: golden files for every bundled profile, and real QEMU
// accepting what it builds.
#include "profile/argv.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/text.h"
#include "test_util.h"

namespace pl {
namespace {

namespace fs = std::filesystem;

/// The facts a golden file is written for: fixed, so the output is stable.
HostFacts golden_facts(const Profile& p) {
  HostFacts f;
  f.runtime_dir = "/run/passlaunch/" + p.name;
  f.qmp_fd = 3;
  f.accel = p.accel == Accel::kTcg ? Accel::kTcg : Accel::kKvm;
  int next = 4;
  for (const NetDevice& n : p.network) {
    if (n.type != NetDevice::Type::kUser) f.net_fds.push_back({next, next + 1}), next += 2;
  }
  f.ovmf_vars = "/var/lib/passlaunch/" + p.name + "/OVMF_VARS.fd";
  return f;
}

std::string render(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) out += shell_quote(a) + "\n";
  // Paths inside the source tree differ between checkouts.
  std::string src = PL_SOURCE_DIR;
  for (size_t pos; (pos = out.find(src)) != std::string::npos;)
    out.replace(pos, src.size(), "@SRC@");
  return out;
}

std::vector<fs::path> golden_profiles() {
  std::vector<fs::path> list;
  for (const char* dir : {"profiles", "tests/profiles"}) {
    for (const auto& e : fs::directory_iterator(fs::path(PL_SOURCE_DIR) / dir)) {
      if (e.path().extension() == ".json") list.push_back(e.path());
    }
  }
  std::sort(list.begin(), list.end());
  return list;
}

// Set PL_UPDATE_GOLDEN=1 to rewrite the files after an intended change.
TEST(Argv, MatchesGoldenFileForEveryProfile) {
  auto profiles = golden_profiles();
  ASSERT_GE(profiles.size(), 3u);
  std::vector<std::string> updated;
  for (const fs::path& path : profiles) {
    Profile p = load_profile(path.string(), ProfileChecks{.files = false});
    std::string got = render(build_qemu_argv(p, golden_facts(p)));
    fs::path golden = fs::path(PL_SOURCE_DIR) / "tests/golden" / (path.stem().string() + ".argv");
    if (std::getenv("PL_UPDATE_GOLDEN")) {
      std::ofstream(golden) << got;
      updated.push_back(golden.filename());
      continue;
    }
    std::ifstream in(golden);
    ASSERT_TRUE(in) << "no golden file " << golden << " (run with PL_UPDATE_GOLDEN=1)";
    std::stringstream want;
    want << in.rdbuf();
    EXPECT_EQ(got, want.str()) << "for " << path;
  }
  // A rewrite compares nothing: say so, and do not pass as if it had.
  if (!updated.empty()) {
    GTEST_SKIP() << "PL_UPDATE_GOLDEN is set: rewrote " << join(updated, ", ")
                 << " and compared nothing; check `git diff tests/golden`, then run without it";
  }
}

TEST(Argv, Win11HasEverySettingOfTheSeed) {
  Profile p = load_profile(std::string(PL_SOURCE_DIR) + "/profiles/win11.json",
                           ProfileChecks{.files = false});
  std::string got = render(build_qemu_argv(p, golden_facts(p)));
  for (const char* want :
       {"-S\n", "-nodefaults\n", "-no-user-config\n", "win11,debug-threads=on\n",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny\n",
        "host,hypervisor=off,", "16,sockets=1,cores=8,threads=2\n", "iothread,id=io1\n",
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd\n",
        "vfio-pci,host=0000:01:00.0,id=hostdev0,bus=rp0,addr=0x0.0,multifunction=on\n",
        "vfio-pci,host=0000:01:00.3,id=hostdev3,bus=rp0,addr=0x0.3\n",
        "vfio-pci,host=0000:03:00.0,", "vfio-pci,host=0000:00:1f.3,",
        "tap,id=net0,fd=4,vhost=on,vhostfd=5\n",
        "virtio-net-pci,netdev=net0,id=net0-dev,mac=52:54:00:a3:d3:f4\n"}) {
    EXPECT_NE(got.find(want), std::string::npos) << want;
  }
  EXPECT_EQ(got.find("balloon"), std::string::npos);
  EXPECT_EQ(got.find("0000:00:1f.4"), std::string::npos) << "attach:false devices stay out";
  EXPECT_EQ(p.pinning.vcpus,
            (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}));
}

TEST(Argv, CommasInPathsAreDoubled) {
  Profile p = load_profile(std::string(PL_SOURCE_DIR) + "/tests/profiles/everything.json",
                           ProfileChecks{.files = false});
  auto argv = build_qemu_argv(p, golden_facts(p));
  auto has = [&](const std::string& s) {
    return std::find(argv.begin(), argv.end(), s) != argv.end();
  };
  EXPECT_TRUE(
      has("vfio-pci,host=0000:0a:00.0,id=hostdev0,bus=rp0,addr=0x0.0,multifunction=on,"
          "romfile=/roms/my card,, v2.rom"));
  EXPECT_TRUE(has("if=pflash,format=raw,unit=0,readonly=on,file=/fw/code,, with comma.fd"));
}

TEST(Argv, FunctionsOfOneDeviceShareASlotInHostOrder) {
  Profile p = load_profile(std::string(PL_SOURCE_DIR) + "/tests/profiles/everything.json",
                           ProfileChecks{.files = false});
  auto argv = build_qemu_argv(p, golden_facts(p));
  std::string all = join(argv, " ");
  auto f0 = all.find("host=0000:0a:00.0"), f1 = all.find("host=0000:0a:00.1");
  ASSERT_NE(f0, std::string::npos);
  ASSERT_NE(f1, std::string::npos);
  EXPECT_LT(f0, f1);
  EXPECT_NE(all.find("host=0000:0a:00.1,id=hostdev1,bus=rp0,addr=0x0.1"), std::string::npos);
  EXPECT_NE(all.find("host=0000:03:00.0,id=hostdev2,bus=rp1,addr=0x0.0 "), std::string::npos);
}

TEST(Argv, MissingTapFdIsAnError) {
  Profile p = load_profile(std::string(PL_SOURCE_DIR) + "/profiles/win11.json",
                           ProfileChecks{.files = false});
  HostFacts f = golden_facts(p);
  f.net_fds.clear();
  EXPECT_THROW(build_qemu_argv(p, f), Error);
}

TEST(Argv, PanicModelsAddTheirNotifierAndPauseOnPanic) {
  const std::string base =
      R"({"name": "t", "accel": "kvm", "memory": {"size_mib": 256}, "cpu": {"vcpus": 1}})";
  auto argv_of = [&](const std::string& extra) {
    Profile p = parse_profile(base.substr(0, base.size() - 1) + extra + "}", "p.json",
                              ProfileChecks{.files = false});
    return join(build_qemu_argv(p, golden_facts(p)), " ");
  };
  std::string none = argv_of("");
  EXPECT_EQ(none.find("pvpanic"), std::string::npos) << none;
  EXPECT_EQ(none.find("-action"), std::string::npos) << none;
  EXPECT_EQ(none.find("hv-crash"), std::string::npos) << none;

  std::string isa = argv_of(R"(, "panic": {"model": "isa"})");
  EXPECT_NE(isa.find(" -device pvpanic,events=1 -action panic=pause"), std::string::npos) << isa;
  std::string pci = argv_of(R"(, "panic": {"model": "pci"})");
  EXPECT_NE(pci.find(" -device pvpanic-pci,events=1 -action panic=pause"), std::string::npos)
      << pci;
  std::string hv = argv_of(R"(, "panic": {"model": "hyperv"})");
  EXPECT_NE(hv.find(" -cpu host,hv-crash=on "), std::string::npos) << hv;
  EXPECT_NE(hv.find(" -action panic=pause"), std::string::npos) << hv;
  EXPECT_EQ(hv.find("pvpanic"), std::string::npos) << hv;
}

// QEMU itself must accept every option the builder emits: start it paused
// with the argv (the QMP socket inherited as fd 3) and ask it over QMP.
TEST(ArgvQemu, QemuAcceptsTheDemoArgv) {
  Profile p = load_profile(std::string(PL_SOURCE_DIR) + "/profiles/demo.json",
                           ProfileChecks{.files = false});
  p.kernel->kernel = test::guest_kernel();
  p.kernel->initrd = test::guest_initrd("normal");
  p.disks.at(0).path = std::string(PL_TEST_GUEST_DIR) + "/demo-disk.qcow2";
  test::TempDir dir;
  HostFacts f = golden_facts(p);
  f.runtime_dir = dir.path();
  auto argv = build_qemu_argv(p, f);
  test::Qemu qemu(argv);
  EXPECT_EQ(qemu.query_status(), "prelaunch");
}

// The same for a rich profile without passthrough (no vfio here): OVMF,
// iothreads, qcow2 and NVMe disks, USB host, CPU feature toggles.
TEST(ArgvQemu, QemuAcceptsARichProfile) {
  test::TempDir dir;
  std::string disk = dir.path() + "/system, 1.qcow2";
  std::string raw = dir.path() + "/data.raw";
  ASSERT_EQ(test::run_command({"qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"}), 0);
  ASSERT_EQ(test::run_command({"qemu-img", "create", "-q", "-f", "raw", raw, "16M"}), 0);
  std::string vars = dir.path() + "/vars.fd";
  fs::copy_file("/usr/share/OVMF/OVMF_VARS_4M.fd", vars);
  bool kvm = test::kvm_works();
  std::string text = R"({"name": "rich", "accel": ")" + std::string(kvm ? "kvm" : "tcg") + R"(",
    "memory": {"size_mib": 512},
    "cpu": {"model": ")" +
                     std::string(kvm ? "host" : "max") + R"(", "vcpus": 2,
            "hypervisor_bit": false, "features": ["-arch-capabilities"]},
    "pinning": {"vcpus": [0, 1], "emulator": "0-1", "iothreads": [{"id": "io1"}]},
    "firmware": {"type": "ovmf", "code": "/usr/share/OVMF/OVMF_CODE_4M.fd",
                 "vars_template": "/usr/share/OVMF/OVMF_VARS_4M.fd"},
    "disks": [{"path": ")" +
                     disk + R"(", "format": "qcow2", "iothread": "io1"},
              {"path": ")" +
                     raw + R"(", "interface": "nvme", "readonly": true}],
    "network": [{"type": "user", "mac": "52:54:00:00:00:09"}],
    "input": {"usb": [{"vendor": "046d", "product": "c52b"}]},
    "rtc": "localtime"})";
  Profile p = parse_profile(text, dir.path() + "/rich.json");
  HostFacts f = golden_facts(p);
  f.runtime_dir = dir.path();
  f.ovmf_vars = vars;
  test::Qemu qemu(build_qemu_argv(p, f));
  EXPECT_EQ(qemu.query_status(), "prelaunch");
}

// Each panic model as QEMU sees it: the pvpanic device in its device tree, or
// hv-crash on the vCPU.
TEST(ArgvQemu, QemuAcceptsEveryPanicModel) {
  bool kvm = test::kvm_works();
  for (const char* model : {"isa", "pci", "hyperv"}) {
    test::TempDir dir;
    Profile p = parse_profile(
        R"({"name": "panic", "accel": "auto", "memory": {"size_mib": 64},
            "cpu": {"model": ")" +
            std::string(kvm ? "host" : "max") + R"(", "vcpus": 1, "features": [)" +
            (kvm ? R"("-arch-capabilities")" : "") + R"(]}, "panic": {"model": ")" + model +
            R"("}})",
        dir.path("panic.json"));
    HostFacts f = golden_facts(p);
    f.accel = kvm ? Accel::kKvm : Accel::kTcg;
    f.runtime_dir = dir.path();
    test::Qemu qemu(build_qemu_argv(p, f));
    EXPECT_EQ(qemu.query_status(), "prelaunch") << model;
    std::string tree = qemu.qmp(
        R"({"execute": "human-monitor-command", "arguments": {"command-line": "info qtree"}})");
    if (std::string(model) == "isa") {
      EXPECT_NE(tree.find("dev: pvpanic, id"), std::string::npos) << tree;
      EXPECT_NE(tree.find("events = 1 (0x1)"), std::string::npos) << tree;
    } else if (std::string(model) == "pci") {
      EXPECT_NE(tree.find("dev: pvpanic-pci, id"), std::string::npos) << tree;
      EXPECT_NE(tree.find("events = 1 (0x1)"), std::string::npos) << tree;
    } else {
      EXPECT_EQ(tree.find("pvpanic"), std::string::npos) << tree;
      std::string cpus = qemu.qmp(R"({"execute": "query-cpus-fast"})");
      auto path = nlohmann::json::parse(cpus)["return"][0]["qom-path"].get<std::string>();
      EXPECT_EQ(qemu.qmp(R"({"execute": "qom-get", "arguments": {"path": ")" + path +
                         R"(", "property": "hv-crash"}})"),
                R"({"return":true})");
    }
  }
}

}  // namespace
}  // namespace pl

namespace pl {
namespace {

// `run --dry-run` shows every element of the seed's setup: the argv, the
// seed's vcpupin/emulatorpin/iothreadpin, and starts nothing.
TEST(DryRun, Win11ShowsArgvAndPinPlan) {
  test::TempDir dir;
  auto [code, out] = test::passlaunch_cmd(
      {"run", std::string(PL_SOURCE_DIR) + "/profiles/win11.json", "--dry-run"}, dir.path());
  EXPECT_EQ(code, 0) << out;
  for (const char* want :
       {"qemu-system-x86_64 \\\n", "-S \\\n",
        "vfio-pci,host=0000:01:00.0,id=hostdev0,bus=rp0,addr=0x0.0,multifunction=on",
        "#   vCPU 0 -> CPU 0\n", "#   vCPU 15 -> CPU 15\n", "#   iothread io1 -> CPUs 16-23\n",
        "#   emulator and vhost threads -> CPUs 16-23\n",
        "create macvtap on enp7s0f0 (mode bridge, MAC 52:54:00:a3:d3:f4)"}) {
    EXPECT_NE(out.find(want), std::string::npos) << want << "\n" << out;
  }
  EXPECT_FALSE(fs::exists(dir.path() + "/passlaunch/win11")) << "a dry run starts nothing";
}

TEST(DryRun, ProfileWithATypoIsExitTwoNamingTheKey) {
  test::TempDir dir;
  std::string path = dir.path() + "/typo.json";
  std::ofstream(path)
      << R"({"name": "t", "memory": {"size_mib": 64}, "cpu": {"vcpus": 1, "model": "max"}, "pinnig": {}})";
  auto [code, out] = test::passlaunch_cmd({"run", path, "--dry-run"}, dir.path());
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find(path + ": /pinnig: unknown key"), std::string::npos) << out;
}

}  // namespace
}  // namespace pl
