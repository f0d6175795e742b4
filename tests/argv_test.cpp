// build_qemu_argv: golden files for every bundled profile, and real QEMU
// accepting what it builds.
#include "profile/argv.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/text.h"
#include "run/facts.h"
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
          "romfile=/roms/my card,, v2.rom,x-vga=on"));
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
  EXPECT_NE(all.find("host=0000:03:00.0,id=hostdev2,bus=rp1,addr=0x0.0,rombar=0,bootindex=2 "),
            std::string::npos);
}

TEST(Argv, MissingTapFdIsAnError) {
  Profile p = load_profile(std::string(PL_SOURCE_DIR) + "/profiles/win11.json",
                           ProfileChecks{.files = false});
  HostFacts f = golden_facts(p);
  f.net_fds.clear();
  try {
    build_qemu_argv(p, f);
    ADD_FAILURE() << "a tap interface without a prepared fd was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kUsage);
    EXPECT_EQ(static_cast<int>(e.code()), 2);
    EXPECT_EQ(std::string(e.what()),
              p.file + ": /network/0: no tap fd was prepared for this interface");
  }
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

// --- Fields for real gaming VMs (issue 13) ----------------------------------

/// The argv of a small KVM profile with `extra` top-level members, joined by spaces.
std::string argv_with(const std::string& extra, HostFacts* facts = nullptr) {
  Profile p = parse_profile(
      R"({"name": "t", "accel": "kvm", "memory": {"size_mib": 256}, "cpu": {"vcpus": 1}, )" +
          extra + "}",
      "p.json", ProfileChecks{.files = false});
  HostFacts f = facts ? *facts : golden_facts(p);
  return join(build_qemu_argv(p, f), " ");
}

TEST(Argv, CdromsAndSataDisksUseTheQ35AhciPorts) {
  std::string a = argv_with(R"("disks": [{"path": "/w.iso", "media": "cdrom", "boot_index": 0},
      {"path": "/d.raw", "interface": "sata", "boot_index": 1}, {"media": "cdrom"}])");
  EXPECT_NE(a.find("-blockdev driver=file,node-name=disk0-file,filename=/w.iso,read-only=on "
                   "-blockdev driver=raw,node-name=disk0,file=disk0-file,read-only=on "
                   "-device ide-cd,bus=ide.0,drive=disk0,id=disk0-dev,bootindex=0 "),
            std::string::npos)
      << a;
  EXPECT_NE(a.find("-device ide-hd,bus=ide.1,drive=disk1,id=disk1-dev,serial=" +
                   default_disk_serial("t", 1) + ",bootindex=1 "),
            std::string::npos)
      << a;
  EXPECT_NE(a.find("-device ide-cd,bus=ide.2,id=disk2-dev"), std::string::npos) << a;
  EXPECT_EQ(a.find("ich9-ahci"), std::string::npos) << "q35 has its own AHCI controller";
  std::string pc =
      argv_with(R"("machine": "pc-i440fx-7.2", "disks": [{"path": "/w.iso", "media": "cdrom"}])");
  EXPECT_NE(pc.find("-machine pc-i440fx-7.2 "), std::string::npos) << pc;
  EXPECT_NE(pc.find("-device ich9-ahci,id=sata0 "), std::string::npos) << pc;
  EXPECT_NE(pc.find("-device ide-cd,bus=sata0.0,drive=disk0,id=disk0-dev"), std::string::npos)
      << pc;
}

TEST(Argv, DiskCacheModesMapToBlockdevAndWriteCache) {
  struct Case {
    const char* cache;
    const char* node;
    const char* wce;
  };
  for (const Case& c : {Case{"none", "cache.direct=on,cache.no-flush=off", "on"},
                        Case{"writeback", "cache.direct=off,cache.no-flush=off", "on"},
                        Case{"writethrough", "cache.direct=off,cache.no-flush=off", "off"},
                        Case{"directsync", "cache.direct=on,cache.no-flush=off", "off"},
                        Case{"unsafe", "cache.direct=off,cache.no-flush=on", "on"}}) {
    std::string a = argv_with(std::string(R"("disks": [{"path": "/d.raw", "cache": ")") + c.cache +
                              R"(", "aio": "io_uring", "discard": "ignore", "serial": "S1"}])");
    EXPECT_NE(a.find(std::string("filename=/d.raw,read-only=off,discard=ignore,") + c.node +
                     ",aio=io_uring "),
              std::string::npos)
        << a;
    EXPECT_NE(a.find(std::string("virtio-blk-pci,drive=disk0,id=disk0-dev,serial=S1,write-cache=") +
                     c.wce),
              std::string::npos)
        << a;
  }
}

TEST(Argv, ScsiDisksShareOneControllerOnTheirIothread) {
  std::string a = argv_with(R"("pinning": {"iothreads": [{"id": "io1"}]},
      "disks": [{"path": "/a.raw", "interface": "scsi"}, {"path": "/b.raw", "interface": "scsi", "iothread": "io1"},
                {"path": "/c.iso", "media": "cdrom", "interface": "scsi"}])");
  EXPECT_NE(a.find("-device virtio-scsi-pci,id=scsi0,iothread=io1 "), std::string::npos) << a;
  EXPECT_NE(a.find("-device scsi-hd,bus=scsi0.0,drive=disk0,id=disk0-dev,serial="),
            std::string::npos)
      << a;
  EXPECT_NE(a.find("-device scsi-cd,bus=scsi0.0,drive=disk2,id=disk2-dev"), std::string::npos) << a;
  EXPECT_EQ(a.find("virtio-scsi-pci", a.find("virtio-scsi-pci") + 1), std::string::npos) << a;
}

TEST(Argv, NoDiskIsSerialNumberedAfterAVirtualMachine) {
  std::string a =
      argv_with(R"("disks": [{"path": "/a.raw", "interface": "nvme"}, {"path": "/b.raw"}])");
  EXPECT_EQ(a.find("serial=disk"), std::string::npos) << a;
  EXPECT_NE(a.find("nvme,drive=disk0,id=disk0-dev,serial=" + default_disk_serial("t", 0)),
            std::string::npos)
      << a;
}

TEST(Argv, SecureBootTurnsOnSmmAndProtectsTheVarstore) {
  std::string a = argv_with(
      R"("firmware": {"type": "ovmf", "code": "/c.fd", "vars_template": "/v.fd", "secure_boot": true})");
  EXPECT_NE(a.find("-machine q35,smm=on "), std::string::npos) << a;
  EXPECT_NE(a.find("-global driver=cfi.pflash01,property=secure,value=on -drive if=pflash"),
            std::string::npos)
      << a;
  std::string off =
      argv_with(R"("firmware": {"type": "ovmf", "code": "/c.fd", "vars_template": "/v.fd"})");
  EXPECT_EQ(off.find("smm"), std::string::npos) << off;
}

TEST(Argv, HypervFeaturesOverrideTheUsualSetAndPassthroughComesFirst) {
  std::string a =
      argv_with(R"("cpu": {"vcpus": 1, "hyperv": {"mode": "passthrough", "enlightenments": true,
      "features": {"hv-vapic": false, "hv-evmcs": true, "hv-spinlocks": 4095}}})");
  EXPECT_NE(a.find("-cpu host,hv-passthrough=on,hv-relaxed=on,hv-vapic=off,hv-spinlocks=0xfff,"),
            std::string::npos)
      << a;
  EXPECT_NE(a.find(",hv-time=on,hv-evmcs=on "), std::string::npos) << a;
}

TEST(Argv, MemoryLockedSharedAndHugepageMount) {
  std::string a = argv_with(R"("memory": {"size_mib": 256, "shared": true, "locked": true})");
  EXPECT_NE(a.find("-machine q35,memory-backend=mem0 "), std::string::npos) << a;
  EXPECT_NE(
      a.find("-object memory-backend-memfd,id=mem0,size=256M,share=on -overcommit mem-lock=on"),
      std::string::npos)
      << a;
  Profile p = parse_profile(R"({"name": "t", "memory": {"size_mib": 2048, "hugepage_size": "1G"},
                               "cpu": {"model": "max", "vcpus": 1}})",
                            "p.json", ProfileChecks{.files = false});
  HostFacts f = golden_facts(p);
  f.hugepage_path = "/dev/hugepages1G";
  std::string h = join(build_qemu_argv(p, f), " ");
  EXPECT_NE(h.find("memory-backend-file,id=mem0,size=2048M,mem-path=/dev/hugepages1G,prealloc=on "),
            std::string::npos)
      << h;
}

TEST(Argv, HugetlbfsMountOfThePageSize) {
  const char* mounts =
      "proc /proc proc rw 0 0\n"
      "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n"
      "none /mnt/huge1g hugetlbfs rw,relatime,pagesize=1024M,pagesize=1G 0 0\n";
  EXPECT_EQ(hugetlbfs_mount(mounts, 2), "/dev/hugepages");
  EXPECT_EQ(hugetlbfs_mount(mounts, 1024), "/mnt/huge1g");
  EXPECT_EQ(hugetlbfs_mount("none /h hugetlbfs rw 0 0\n", 2), "/h") << "no pagesize= is 2M";
  EXPECT_EQ(hugetlbfs_mount("none /h hugetlbfs rw 0 0\n", 1024), "");
}

TEST(Argv, VfioOptionsAndBootIndex) {
  std::string a =
      argv_with(R"("devices": [{"type": "vfio", "address": "0000:01:00.0", "rombar": false,
      "x_vga": true, "boot_index": 4, "ids": {"vendor": "10de", "device": "1e87", "sub_vendor": "1462", "sub_device": "3721"}}])");
  EXPECT_NE(a.find("vfio-pci,host=0000:01:00.0,id=hostdev0,bus=rp0,addr=0x0.0,rombar=0,x-vga=on,"
                   "x-pci-vendor-id=0x10de,x-pci-device-id=0x1e87,x-pci-sub-vendor-id=0x1462,"
                   "x-pci-sub-device-id=0x3721,bootindex=4"),
            std::string::npos)
      << a;
}

TEST(Argv, MachineToggleAndClocks) {
  std::string a = argv_with(
      R"("machine": "pc-q35-7.2", "platform": {"vmport": false, "kernel_irqchip": "split"},
      "clock": {"hpet": false, "rtc_driftfix": "slew", "pit_lost_tick_policy": "delay"}, "rtc": "localtime")");
  EXPECT_NE(a.find("-machine pc-q35-7.2,hpet=off,vmport=off,kernel_irqchip=split "),
            std::string::npos)
      << a;
  EXPECT_NE(a.find("-rtc base=localtime,driftfix=slew -global kvm-pit.lost_tick_policy=delay "),
            std::string::npos)
      << a;
}

TEST(Argv, DisplaysOnUnixSocketsUnlessAskedForTcp) {
  std::string vnc = argv_with(R"("display": {"type": "vnc"})");
  EXPECT_NE(vnc.find("-display none"), std::string::npos) << vnc;
  EXPECT_NE(vnc.find("-device VGA,id=video0 -vnc unix:/run/passlaunch/t/vnc.sock"),
            std::string::npos)
      << vnc;
  std::string tcp =
      argv_with(R"("display": {"type": "vnc", "listen": "127.0.0.1:5901", "vga": "virtio"})");
  EXPECT_NE(tcp.find("-device virtio-vga,id=video0 -vnc 127.0.0.1:1"), std::string::npos) << tcp;
  std::string spice = argv_with(R"("display": {"type": "spice", "vga": "qxl"})");
  EXPECT_NE(spice.find("-device qxl-vga,id=video0 -spice unix=on,addr=/run/passlaunch/t/spice.sock,"
                       "disable-ticketing=on"),
            std::string::npos)
      << spice;
  std::string spice_tcp = argv_with(R"("display": {"type": "spice", "listen": "127.0.0.1:5930"})");
  EXPECT_NE(spice_tcp.find("-spice addr=127.0.0.1,port=5930,disable-ticketing=on"),
            std::string::npos)
      << spice_tcp;
  EXPECT_EQ(argv_with("\"rtc\": \"utc\"").find("VGA"), std::string::npos);
}

TEST(Argv, SoundGuestAgentShmemAndSmbios) {
  std::string a = argv_with(
      R"("sound": {"backend": "pa", "server": "unix:/run/user/1000/pulse/native", "model": "hda", "codec": "output"},
      "guest_agent": true, "shmem": {"name": "looking-glass", "size_mib": 64},
      "smbios": {"mode": "explicit", "bios": {"vendor": "AMI, Inc."}, "system": {"manufacturer": "ASUS"}})");
  EXPECT_NE(a.find("-audiodev pa,id=snd0,server=unix:/run/user/1000/pulse/native -device "
                   "intel-hda,id=sound0 "
                   "-device hda-output,id=sound0-codec,bus=sound0.0,audiodev=snd0"),
            std::string::npos)
      << a;
  EXPECT_NE(
      a.find(
          "-chardev socket,id=qga0,path=/run/passlaunch/t/qga.sock,server=on,wait=off "
          "-device virtio-serial-pci,id=virtio-serial0 -device virtserialport,bus=virtio-serial0.0,"
          "chardev=qga0,name=org.qemu.guest_agent.0"),
      std::string::npos)
      << a;
  EXPECT_NE(
      a.find(
          "-object memory-backend-file,id=shmem0,mem-path=/dev/shm/looking-glass,size=64M,share=on "
          "-device ivshmem-plain,memdev=shmem0,id=shmem0-dev"),
      std::string::npos)
      << a;
  EXPECT_NE(a.find("-smbios type=0,vendor=AMI,, Inc. -smbios type=1,manufacturer=ASUS "),
            std::string::npos)
      << a;
  HostFacts f;
  f.runtime_dir = "/run/passlaunch/t";
  f.accel = Accel::kKvm;
  f.smbios_files = {"/run/passlaunch/t/smbios-type0.bin", "/run/passlaunch/t/smbios-type1.bin"};
  std::string host = argv_with(R"("smbios": {"mode": "host"})", &f);
  EXPECT_NE(host.find("-smbios file=/run/passlaunch/t/smbios-type0.bin -smbios "
                      "file=/run/passlaunch/t/smbios-type1.bin "),
            std::string::npos)
      << host;
}

TEST(Argv, QemuArgsComeLastVerbatim) {
  Profile p = parse_profile(
      R"({"name": "t", "memory": {"size_mib": 64}, "cpu": {"model": "max", "vcpus": 1},
      "qemu_args": ["-global", "ICH9-LPC.disable_s3=1", "-no-reboot"]})",
      "p.json", ProfileChecks{.files = false});
  auto argv = build_qemu_argv(p, golden_facts(p));
  ASSERT_GE(argv.size(), 3u);
  EXPECT_EQ(std::vector<std::string>(argv.end() - 3, argv.end()),
            (std::vector<std::string>{"-global", "ICH9-LPC.disable_s3=1", "-no-reboot"}));
  EXPECT_EQ(qemu_args_tail(p), 3u);
}

/// A synthetic SMBIOS structure: type, formatted area of `len` bytes, strings.
std::string smbios_struct(int type, int len, std::vector<std::string> strings) {
  std::string s(static_cast<size_t>(len), '\0');
  s[0] = static_cast<char>(type);
  s[1] = static_cast<char>(len);
  s[2] = static_cast<char>(type + 0x10);
  for (size_t i = 4; i < s.size(); ++i) s[i] = static_cast<char>(i);
  for (const std::string& str : strings) s += str + std::string(1, '\0');
  if (strings.empty()) s += std::string(1, '\0');
  return s + std::string(1, '\0');
}

TEST(Facts, SmbiosStructuresOfTheWantedTypesUpToTheEnd) {
  std::string t0 = smbios_struct(0, 0x18, {"American Megatrends", "F21"});
  std::string t1 = smbios_struct(1, 0x1b, {"Micro-Star", "MS-7C56"});
  std::string t4 = smbios_struct(4, 0x30, {"CPU"});
  std::string t3 = smbios_struct(3, 0x16, {});
  std::string end = smbios_struct(127, 4, {});
  std::string after = smbios_struct(2, 0x0f, {"never"});
  auto got = smbios_structures(t0 + t4 + t1 + t3 + end + after, {0, 1, 2, 3});
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], (std::pair<int, std::string>{0, t0}));
  EXPECT_EQ(got[1], (std::pair<int, std::string>{1, t1}));
  EXPECT_EQ(got[2], (std::pair<int, std::string>{3, t3}));
  EXPECT_THROW(smbios_structures(t0.substr(0, t0.size() - 3), {0}), Error);
  EXPECT_THROW(smbios_structures(std::string("\x00\x02\x00\x00\x00\x00", 6), {0}), Error);
}

TEST(Facts, SmbiosHostModeListsACopyPerStructure) {
  test::TempDir root;
  fs::create_directories(root.path() + "/sys/firmware/dmi/tables");
  std::ofstream(root.path() + kHostDmiTable, std::ios::binary)
      << smbios_struct(0, 0x18, {"AMI"}) + smbios_struct(1, 0x1b, {"MSI"}) +
             smbios_struct(17, 0x28, {"DIMM"}) + smbios_struct(17, 0x28, {"DIMM"}) +
             smbios_struct(127, 4, {});
  Profile p = parse_profile(
      R"({"name": "t", "memory": {"size_mib": 64}, "cpu": {"model": "max", "vcpus": 1},
      "smbios": {"mode": "host"}})",
      "p.json", ProfileChecks{.files = false});
  HostFacts f = probe_host_facts(p, root.path());
  EXPECT_EQ(f.smbios_files, (std::vector<std::string>{f.runtime_dir + "/smbios-type0.bin",
                                                      f.runtime_dir + "/smbios-type1.bin"}));
  test::TempDir empty;
  try {
    probe_host_facts(p, empty.path());
    ADD_FAILURE() << "a host without DMI tables was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kEnvironment);
    EXPECT_NE(
        std::string(e.what()).find("p.json: /smbios/mode: \"host\" needs the host's SMBIOS table"),
        std::string::npos)
        << e.what();
  }
}

// --- Real QEMU: every new field accepted --------------------------------------

/// Whether this host's KVM lets QEMU set the Hyper-V MSRs. The nested KVM of
/// the test machine does not ("failed to set MSR 0x40000021", "kernel doesn't
/// allow setting HyperV VP_INDEX"): there only hv-relaxed, hv-crash and
/// hv-passthrough start. Probed once: a QEMU that still runs after 5 s took them.
bool hyperv_msrs_work() {
  static int works = -1;
  if (works < 0) {
    works = test::kvm_works() &&
            test::run_command({"timeout", "5", "qemu-system-x86_64", "-accel", "kvm", "-cpu",
                               "host,-arch-capabilities,hv-vpindex=on,hv-vapic=on,hv-time=on",
                               "-machine", "q35", "-nodefaults", "-display", "none", "-S", "-m",
                               "64"}) == 124;
  }
  return works == 1;
}

/// Whether this host's KVM offers SMM, which Secure Boot needs (the nested KVM
/// of the test machine does not: "System Management Mode not supported by this
/// hypervisor"); without it Secure Boot VMs run under TCG here.
bool kvm_smm_works() {
  static int works = -1;
  if (works < 0) {
    works = test::kvm_works() &&
            test::run_command({"timeout", "5", "qemu-system-x86_64", "-accel", "kvm", "-cpu",
                               "host,-arch-capabilities", "-machine", "q35,smm=on", "-nodefaults",
                               "-display", "none", "-S", "-m", "64"}) == 124;
  }
  return works == 1;
}

/// Keeps the Hyper-V settings that this host can start (see hyperv_msrs_work).
void hyperv_as_this_host_allows(HypervConfig& hv) {
  if (hyperv_msrs_work()) return;
  hv.enlightenments = false;
  hv.features = {{"hv-relaxed", "on"}};
}

/// The everything profile as QEMU on this machine can start it: no host
/// devices (vfio, evdev, taps, TPM), real image files, the Secure Boot OVMF.
struct EverythingHere {
  test::TempDir dir;
  Profile p;
  HostFacts f;
  std::string shm;
  bool kvm;

  /// `secure_boot`: keep the profile's Secure Boot (under TCG where KVM has no SMM).
  explicit EverythingHere(bool secure_boot) {
    kvm = test::kvm_works() && (!secure_boot || kvm_smm_works());
    p = load_profile(std::string(PL_SOURCE_DIR) + "/tests/profiles/everything.json",
                     ProfileChecks{.files = false});
    p.devices.clear();
    p.evdev.clear();
    p.tpm_state_dir.clear();
    std::erase_if(p.network, [](const NetDevice& n) { return n.type != NetDevice::Type::kUser; });
    p.memory_mib = 64;
    p.hugepages = false;  // ArgvQemu.HugepagesFromAHugetlbfsMount covers them
    for (size_t i = 0; i < p.disks.size(); ++i) {
      Disk& d = p.disks[i];
      if (d.path.empty()) continue;
      d.path =
          dir.path("disk" + std::to_string(i) + "," + (d.format == "qcow2" ? ".qcow2" : ".img"));
      EXPECT_EQ(test::run_command({"qemu-img", "create", "-q", "-f", d.format, d.path, "16M"}), 0);
    }
    p.firmware.secure_boot = secure_boot;
    p.firmware.code =
        secure_boot ? "/usr/share/OVMF/OVMF_CODE_4M.ms.fd" : "/usr/share/OVMF/OVMF_CODE_4M.fd";
    f = golden_facts(p);
    f.runtime_dir = dir.path();
    f.ovmf_vars = dir.path("vars.fd");
    fs::copy_file(
        secure_boot ? "/usr/share/OVMF/OVMF_VARS_4M.ms.fd" : "/usr/share/OVMF/OVMF_VARS_4M.fd",
        f.ovmf_vars);
    // A /dev/shm name of our own: other tests run at the same time.
    p.shmem.at(0).name = "pl-test-everything-" + std::to_string(::getpid());
    shm = f.shm_dir + "/" + p.shmem[0].name;
    std::ofstream(shm).close();
    fs::resize_file(shm, p.shmem[0].size_mib << 20);
    if (!kvm) {  // what only KVM has
      p.accel = Accel::kTcg;
      f.accel = Accel::kTcg;
      p.cpu.model = "max";
      p.cpu.cache_passthrough = false;
      p.cpu.hyperv = {};
      p.cpu.features = {};
      p.platform.kernel_irqchip.clear();
    }
    hyperv_as_this_host_allows(p.cpu.hyperv);
  }
  ~EverythingHere() { fs::remove(shm); }
};

TEST(ArgvQemu, QemuAcceptsTheEverythingProfile) {
  EverythingHere e(/*secure_boot=*/true);
  test::Qemu qemu(build_qemu_argv(e.p, e.f));
  EXPECT_EQ(qemu.query_status(), "prelaunch") << qemu.stderr_text();
  std::string tree = nlohmann::json::parse(qemu.qmp(
      R"({"execute": "human-monitor-command", "arguments": {"command-line": "info qtree"}})"))
      ["return"];
  for (const char* dev :
       {"dev: ide-cd, id \"disk2-dev\"", "dev: ide-hd, id \"disk4-dev\"",
        "dev: scsi-hd, id \"disk5-dev\"", "dev: scsi-cd, id \"disk6-dev\"",
        "dev: virtio-scsi-pci, id \"scsi0\"", "dev: VGA, id \"video0\"",
        "dev: ich9-intel-hda, id \"sound0\"", "dev: hda-duplex, id \"sound0-codec\"",
        "dev: ivshmem-plain, id \"shmem0-dev\"", "dev: virtserialport, id \"\"",
        "dev: nvme, id \"disk1-dev\""}) {
    EXPECT_NE(tree.find(dev), std::string::npos) << dev;
  }
  EXPECT_NE(tree.find("physical_block_size = 4096"), std::string::npos) << "qemu_args -set applied";
  auto qom = [&](const std::string& path, const std::string& prop) {
    return qemu.qmp(R"({"execute": "qom-get", "arguments": {"path": ")" + path +
                    R"(", "property": ")" + prop + R"("}})");
  };
  EXPECT_EQ(qom("/machine/peripheral/disk2-dev", "bootindex"), R"({"return":0})");
  EXPECT_EQ(qom("/machine/peripheral/disk0-dev", "bootindex"), R"({"return":1})");
  EXPECT_EQ(qom("/machine/peripheral/net0-dev", "bootindex"), R"({"return":3})");
  EXPECT_EQ(qom("/machine", "smm"), R"({"return":"on"})");
  EXPECT_EQ(qom("/machine/peripheral/disk0-dev", "serial"),
            R"({"return":")" + default_disk_serial("everything", 0) + R"("})");
  EXPECT_EQ(qom("/machine", "hpet"), R"({"return":false})");
  EXPECT_EQ(qom("/machine", "vmport"), R"({"return":"off"})");
  EXPECT_EQ(qom("/machine/peripheral/disk4-dev", "serial"), R"({"return":"WD-WX12A3456789"})");
  if (e.kvm) {
    std::string cpus = qemu.qmp(R"({"execute": "query-cpus-fast"})");
    auto cpu = nlohmann::json::parse(cpus)["return"][0]["qom-path"].get<std::string>();
    if (hyperv_msrs_work()) {
      EXPECT_EQ(qom(cpu, "hv-stimer-direct"), R"({"return":true})");
      EXPECT_EQ(qom(cpu, "hv-vapic"), R"({"return":false})");
    } else {
      EXPECT_EQ(qom(cpu, "hv-relaxed"), R"({"return":true})");
    }
    EXPECT_EQ(qom(cpu, "host-cache-info"), R"({"return":true})");
  }
  std::string block = qemu.qmp(R"({"execute": "query-block"})");
  EXPECT_NE(block.find("disk3,.img"), std::string::npos) << block;
  // The display and the agent listen on Unix sockets in the runtime dir.
  EXPECT_TRUE(fs::is_socket(e.dir.path("vnc.sock")));
  EXPECT_TRUE(fs::is_socket(e.dir.path("qga.sock")));
  std::string vnc = qemu.qmp(R"({"execute": "query-vnc"})");
  EXPECT_NE(vnc.find(R"("family":"unix")"), std::string::npos) << vnc;
}

// Where KVM has no SMM, the test above runs under TCG: this one starts the
// KVM-only fields (host CPU, cache passthrough, kernel irqchip, KVM PIT,
// Hyper-V) under KVM, without Secure Boot.
TEST(ArgvQemu, QemuAcceptsTheEverythingProfileUnderKvm) {
  if (!test::kvm_works()) GTEST_SKIP() << "no usable /dev/kvm";
  EverythingHere e(/*secure_boot=*/false);
  ASSERT_TRUE(e.kvm);
  test::Qemu qemu(build_qemu_argv(e.p, e.f));
  EXPECT_EQ(qemu.query_status(), "prelaunch") << qemu.stderr_text();
  std::string cpus = qemu.qmp(R"({"execute": "query-cpus-fast"})");
  auto cpu = nlohmann::json::parse(cpus)["return"][0]["qom-path"].get<std::string>();
  EXPECT_EQ(qemu.qmp(R"({"execute": "qom-get", "arguments": {"path": ")" + cpu +
                     R"(", "property": "host-cache-info"}})"),
            R"({"return":true})");
}

TEST(ArgvQemu, QemuAcceptsSpiceAndPassthroughHyperv) {
  test::TempDir dir;
  bool kvm = test::kvm_works();
  Profile p = parse_profile(std::string(R"({"name": "spice", "accel": ")") + (kvm ? "kvm" : "tcg") +
                                R"(", "memory": {"size_mib": 64, "shared": true},
          "cpu": {"vcpus": 1, "model": ")" +
                                (kvm ? "host" : "max") + R"(", "features": [)" +
                                (kvm ? R"("-arch-capabilities")" : "") + R"(])" +
                                (kvm ? R"(, "hyperv": {"mode": "passthrough"})" : "") + R"(},
          "display": {"type": "spice", "vga": "qxl"}, "sound": {"backend": "none", "model": "hda"}})",
                            dir.path("spice.json"));
  HostFacts f = golden_facts(p);
  f.runtime_dir = dir.path();
  test::Qemu qemu(build_qemu_argv(p, f));
  EXPECT_EQ(qemu.query_status(), "prelaunch") << qemu.stderr_text();
  EXPECT_TRUE(fs::is_socket(dir.path("spice.sock")));
  std::string spice = qemu.qmp(R"({"execute": "query-spice"})");
  EXPECT_NE(spice.find(R"("enabled":true)"), std::string::npos) << spice;
}

// Hugepage-backed RAM from a hugetlbfs mount of our own (the host has none
// mounted); pages are reserved for the test and given back after it.
TEST(ArgvQemu, HugepagesFromAHugetlbfsMount) {
  test::TempDir dir;
  std::string mnt = dir.path("huge");
  fs::create_directories(mnt);
  ASSERT_EQ(test::run_command({"mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", mnt}), 0);
  struct Unmount {
    std::string path;
    ~Unmount() { test::run_command({"umount", path}); }
  } unmount{mnt};
  auto read_num = [](const std::string& path) {
    long v = 0;
    std::ifstream(path) >> v;
    return v;
  };
  const std::string nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
  const std::string free_pages = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";
  long before = read_num(nr);
  long need = 32 - read_num(free_pages);
  struct Restore {
    std::string nr;
    long added = 0;
    ~Restore() {
      if (added <= 0) return;
      long now = 0;
      std::ifstream(nr) >> now;
      std::ofstream(nr) << std::max(0L, now - added);
    }
  } restore{nr};
  if (need > 0) {
    std::ofstream(nr) << before + need;
    restore.added = read_num(nr) - before;
    if (read_num(free_pages) < 32) GTEST_SKIP() << "the kernel cannot reserve 32 hugepages now";
  }
  Profile p = parse_profile(
      R"({"name": "huge", "accel": "tcg", "memory": {"size_mib": 64, "hugepages": true},
                               "cpu": {"model": "max", "vcpus": 1}})",
      dir.path("huge.json"));
  HostFacts f = golden_facts(p);
  f.runtime_dir = dir.path();
  f.hugepage_path = mnt;
  test::Qemu qemu(build_qemu_argv(p, f));
  EXPECT_EQ(qemu.query_status(), "prelaunch") << qemu.stderr_text();
  std::string mem = qemu.qmp(R"({"execute": "query-memdev"})");
  EXPECT_NE(mem.find(R"("prealloc":true)"), std::string::npos) << mem;
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

namespace pl {
namespace {

// The hand-written Windows 11 install profile (ISO + virtio-win ISO + Secure
// Boot + TPM + VNC) starts paused under QEMU with no error: its own image
// paths replaced by files of the test, its TPM served by a real swtpm.
TEST(ArgvQemu, Win11InstallProfileStartsPaused) {
  test::TempDir dir;
  Profile p = load_profile(std::string(PL_SOURCE_DIR) + "/profiles/win11-install.json",
                           ProfileChecks{.files = false});
  ASSERT_TRUE(p.firmware.secure_boot);
  ASSERT_EQ(p.disks.size(), 3u);
  p.disks[0].path = dir.path("win11.qcow2");
  ASSERT_EQ(test::run_command({"qemu-img", "create", "-q", "-f", "qcow2", p.disks[0].path, "64M"}),
            0);
  for (size_t i : {1u, 2u}) {
    p.disks[i].path = dir.path("cd" + std::to_string(i) + ".iso");
    ASSERT_EQ(test::run_command({"qemu-img", "create", "-q", "-f", "raw", p.disks[i].path, "4M"}),
              0);
  }
  p.memory_mib = 512;
  bool kvm = kvm_smm_works();  // Secure Boot: under TCG where KVM has no SMM
  if (kvm) {
    p.cpu.features.push_back("-arch-capabilities");  // nested KVM here
    hyperv_as_this_host_allows(p.cpu.hyperv);
  } else {
    p.accel = Accel::kTcg;
    p.cpu.model = "max";
    p.cpu.hyperv = {};
  }
  HostFacts f = golden_facts(p);
  f.accel = kvm ? Accel::kKvm : Accel::kTcg;
  f.runtime_dir = dir.path();
  f.ovmf_vars = dir.path("vars.fd");
  fs::copy_file(p.firmware.vars_template, f.ovmf_vars);
  // swtpm on the socket the argv names, as `run` starts it.
  std::string tpm_dir = dir.path("tpm");
  fs::create_directories(tpm_dir);
  pid_t swtpm = ::fork();
  if (swtpm == 0) {
    ::execlp("swtpm", "swtpm", "socket", "--tpm2", "--tpmstate", ("dir=" + tpm_dir).c_str(),
             "--ctrl", ("type=unixio,path=" + dir.path("swtpm.sock")).c_str(), "--terminate",
             nullptr);
    ::_exit(127);
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{swtpm};
  for (int i = 0; i < 500 && !fs::exists(dir.path("swtpm.sock")); ++i) ::usleep(10000);
  ASSERT_TRUE(fs::exists(dir.path("swtpm.sock"))) << "swtpm did not start";
  test::Qemu qemu(build_qemu_argv(p, f));
  EXPECT_EQ(qemu.query_status(), "prelaunch") << qemu.stderr_text();
  std::string block = qemu.qmp(R"({"execute": "query-block"})");
  EXPECT_NE(block.find("cd1.iso"), std::string::npos) << block;
  EXPECT_NE(block.find("cd2.iso"), std::string::npos) << block;
  std::string tpm = qemu.qmp(R"({"execute": "query-tpm"})");
  EXPECT_NE(tpm.find("tpm-crb"), std::string::npos) << tpm;
  EXPECT_TRUE(fs::is_socket(dir.path("vnc.sock")));
  EXPECT_EQ(
      qemu.qmp(R"({"execute": "qom-get", "arguments": {"path": "/machine", "property": "smm"}})"),
      R"({"return":"on"})");
}

TEST(DryRun, QemuArgsAreMarkedWhereTheyStart) {
  test::TempDir dir;
  std::string path = dir.path() + "/x.json";
  std::ofstream(path) << R"({"name": "x", "accel": "tcg", "memory": {"size_mib": 64},
      "cpu": {"vcpus": 1, "model": "max"}, "qemu_args": ["-global", "ICH9-LPC.disable_s3=1"]})";
  auto [code, out] = test::passlaunch_cmd({"run", path, "--dry-run"}, dir.path());
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(
      out.find("`# qemu_args (from the profile, verbatim)` -global \\\nICH9-LPC.disable_s3=1\n"),
      std::string::npos)
      << out;
}

}  // namespace
}  // namespace pl
