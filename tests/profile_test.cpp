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

namespace pl {
namespace {

/// A KVM profile with `extra` members at the top level (for the new fields).
std::string kvm_with(const std::string& extra) {
  return R"({"name": "t", "accel": "kvm", "memory": {"size_mib": 256}, "cpu": {"vcpus": 2},
             "pinning": {"iothreads": [{"id": "io1"}, {"id": "io2"}]}, )" +
         extra + "}";
}

// Every bad value of every field added for real gaming VMs (issue 13): exit 2,
// the JSON path, and what was expected.
TEST(Profile, EveryBadValueOfTheNewFieldsNamesItsPath) {
  struct Case {
    const char* extra;
    const char* want;
  };
  const Case cases[] = {
      {R"("machine": "pc-q35")", "/machine: expected \"q35\", \"pc\" or a versioned name"},
      {R"("machine": "microvm")", "/machine: expected"},
      {R"("platform": {"vmport": "off"})", "/platform/vmport: expected true or false"},
      {R"("platform": {"kernel_irqchip": "yes"})",
       "/platform/kernel_irqchip: expected one of \"on\""},
      {R"("platform": {"smm": true})", "/platform/smm: unknown key"},
      {R"("clock": {"hpet": 0})", "/clock/hpet: expected true or false, got an integer"},
      {R"("clock": {"rtc_driftfix": "catchup"})",
       "/clock/rtc_driftfix: expected one of \"none\", \"slew\""},
      {R"("clock": {"pit_lost_tick_policy": "merge"})",
       "/clock/pit_lost_tick_policy: expected one of"},
      {R"("memory": {"size_mib": 256, "hugepage_size": "4K"})",
       "/memory/hugepage_size: expected one of \"2M\", \"1G\""},
      {R"("memory": {"size_mib": 1000, "hugepage_size": "1G"})",
       "/memory/size_mib: hugepage-backed memory must be a multiple of the page size (1024 MiB)"},
      {R"("memory": {"size_mib": 256, "locked": "yes"})", "/memory/locked: expected true or false"},
      {R"("memory": {"size_mib": 256, "shared": 1})", "/memory/shared: expected true or false"},
      {R"("cpu": {"vcpus": 1, "model": "max", "cache_passthrough": true})",
       "/cpu/cache_passthrough: needs /cpu/model \"host\""},
      {R"("cpu": {"vcpus": 1, "hyperv": {"mode": "auto"}})",
       "/cpu/hyperv/mode: expected one of \"custom\", \"passthrough\""},
      {R"("cpu": {"vcpus": 1, "hyperv": {"features": []}})",
       "/cpu/hyperv/features: expected an object of hv-* names"},
      {R"("cpu": {"vcpus": 1, "hyperv": {"features": {"relaxed": true}}})",
       "/cpu/hyperv/features/relaxed: unknown Hyper-V enlightenment"},
      {R"("cpu": {"vcpus": 1, "hyperv": {"features": {"hv-relaxed": "on"}}})",
       "/cpu/hyperv/features/hv-relaxed: expected true or false, got a string"},
      {R"("cpu": {"vcpus": 1, "hyperv": {"features": {"hv-spinlocks": 100}}})",
       "/cpu/hyperv/features/hv-spinlocks: expected a retry count from 4095"},
      {R"("cpu": {"vcpus": 1, "hyperv": {"features": {"hv-max-vps": 0}}})",
       "/cpu/hyperv/features/hv-max-vps: expected an integer from 1"},
      {R"("cpu": {"vcpus": 1, "hyperv": {"features": {"hv-no-nonarch-coresharing": true}}})",
       "/cpu/hyperv/features/hv-no-nonarch-coresharing: expected one of"},
      {R"("cpu": {"vcpus": 1, "hyperv": {"features": {"hv-passthrough": true}}})",
       "/cpu/hyperv/features/hv-passthrough: set /cpu/hyperv/mode"},
      {R"("cpu": {"vcpus": 1, "hyperv": {"features": {"hv-crash": false}}}, "panic": {"model": "hyperv"})",
       "/cpu/hyperv/features/hv-crash: false contradicts /panic/model"},
      {R"("pinning": {"vcpus": ["2,x", 3]})",
       "/pinning/vcpus/0: expected a CPU number from 0 to 8191 or a CPU list such as \"2,10\", got "
       "\"2,x\""},
      {R"("pinning": {"vcpus": ["2,3", 3, 3]})",
       "/pinning/vcpus: expected one host CPU per vCPU (2"},
      {R"("pinning": {"vcpus": ["1-2", 3], "emulator_realtime_priority": 0})",
       "/pinning/emulator_realtime_priority: expected an integer from 1 to 99, got 0"},
      {R"("pinning": {"vcpus": [1, 2], "emulator_realtime_priority": 5})",
       "/pinning/emulator_realtime_priority: needs /pinning/emulator"},
      {R"("pinning": {"vcpus": [1, 2], "realtime_policy": "batch"})",
       "/pinning/realtime_policy: expected one of \"fifo\", \"rr\""},
      {R"("pinning": {"iothreads": [{"id": "io1", "realtime_priority": 100}]})",
       "/pinning/iothreads/0/realtime_priority: expected an integer from 1 to 99, got 100"},
      {R"("firmware": {"type": "bios", "secure_boot": true})",
       "/firmware/secure_boot: needs /firmware/type \"ovmf\""},
      {R"("firmware": {"type": "ovmf", "code": "c.fd", "vars_template": "v.fd", "secure_boot": "yes"})",
       "/firmware/secure_boot: expected true or false"},
      {R"("machine": "pc", "firmware": {"type": "ovmf", "code": "c.fd", "vars_template": "v.fd", "secure_boot": true})",
       "/firmware/secure_boot: needs a q35 machine (SMM), got \"pc\""},
      {R"("devices": [{"type": "vfio", "address": "0000:01:00.0", "boot_index": -1}])",
       "/devices/0/boot_index: expected an integer from 0 to 9999, got -1"},
      {R"("devices": [{"type": "vfio", "address": "0000:01:00.0", "rombar": "off"}])",
       "/devices/0/rombar: expected true or false"},
      {R"("devices": [{"type": "vfio", "address": "0000:01:00.0", "x_vga": 1}])",
       "/devices/0/x_vga: expected true or false"},
      {R"("devices": [{"type": "vfio", "address": "0000:01:00.0", "ids": {"vendor": "10de0"}}])",
       "/devices/0/ids/vendor: expected 4 hex digits such as \"10de\", got \"10de0\""},
      {R"("devices": [{"type": "vfio", "address": "0000:01:00.0", "ids": {"sub_device": 4660}}])",
       "/devices/0/ids/sub_device: expected a string, got an integer"},
      {R"("devices": [{"type": "vfio", "address": "0000:01:00.0", "ids": {"revision": "a1"}}])",
       "/devices/0/ids/revision: unknown key"},
      {R"("devices": [{"type": "vfio", "address": "0000:01:00.0", "attach": false, "x_vga": true}])",
       "/devices/0/attach: a device with \"attach\": false is not in the guest"},
      {R"("disks": [{"path": "a.iso", "media": "dvd"}])",
       "/disks/0/media: expected one of \"disk\", \"cdrom\""},
      {R"("disks": [{"path": "a.iso", "media": "cdrom", "interface": "virtio"}])",
       "/disks/0/interface: a CD-ROM sits on \"sata\" or \"scsi\", got \"virtio\""},
      {R"("disks": [{"media": "disk"}])", "/disks/0/path: required key is missing"},
      {R"("disks": [{"path": "a.raw", "interface": "ide"}])",
       "/disks/0/interface: expected one of \"virtio\", \"nvme\", \"sata\", \"scsi\""},
      {R"("disks": [{"path": "a.raw", "cache": "directio"}])",
       "/disks/0/cache: expected one of \"none\""},
      {R"("disks": [{"path": "a.raw", "aio": "posix"}])",
       "/disks/0/aio: expected one of \"threads\", \"native\", \"io_uring\""},
      {R"("disks": [{"path": "a.raw", "aio": "native"}])",
       "/disks/0/aio: \"native\" needs /cache \"none\" or \"directsync\""},
      {R"("disks": [{"path": "a.raw", "discard": "on"}])",
       "/disks/0/discard: expected one of \"unmap\", \"ignore\""},
      {R"("disks": [{"path": "a.raw", "serial": "has space"}])",
       "/disks/0/serial: expected 1-20 letters"},
      {R"("disks": [{"path": "a.raw", "serial": "123456789012345678901"}])",
       "/disks/0/serial: expected 1-20"},
      {R"("disks": [{"path": "a.raw", "boot_index": "1"}])",
       "/disks/0/boot_index: expected an integer, got a string"},
      {R"("disks": [{"path": "a.raw", "interface": "sata", "iothread": "io1"}])",
       "/disks/0/iothread: only virtio and scsi disks run on an iothread"},
      {R"("disks": [{"path": "a.raw", "interface": "scsi", "iothread": "io1"}, {"path": "b.raw", "interface": "scsi", "iothread": "io2"}])",
       "/disks/1/iothread: all scsi disks share one controller, which runs on \"io1\" "
       "(/disks/0/iothread), got \"io2\""},
      {R"("disks": [{"path": "a.raw", "boot_index": 1}, {"path": "b.iso", "media": "cdrom", "boot_index": 1}])",
       "/disks/1/boot_index: boot_index 1 is also used by /disks/0/boot_index"},
      {R"("disks": [{"path": "a.raw", "boot_index": 0}], "network": [{"type": "user", "boot_index": 0}])",
       "/network/0/boot_index: boot_index 0 is also used by /disks/0/boot_index"},
      {R"("disks": [{"path": "1", "interface": "sata"}, {"path": "2", "interface": "sata"}, {"path": "3", "interface": "sata"}, {"path": "4", "interface": "sata"}, {"path": "5", "interface": "sata"}, {"path": "6", "interface": "sata"}, {"path": "7", "media": "cdrom"}])",
       "/disks: at most 6 sata disks and CD-ROMs (one AHCI controller), got 7"},
      {R"("smbios": {})", "/smbios/mode: required key is missing"},
      {R"("smbios": {"mode": "sysinfo"})", "/smbios/mode: expected one of \"host\", \"explicit\""},
      {R"("smbios": {"mode": "host", "bios": {"vendor": "x"}})",
       "/smbios/bios: needs /smbios/mode \"explicit\", got \"host\""},
      {R"("smbios": {"mode": "explicit", "system": {"uuid": "1234"}})",
       "/smbios/system/uuid: expected a UUID"},
      {R"("smbios": {"mode": "explicit", "bios": {"release": "5"}})",
       "/smbios/bios/release: expected \"major.minor\""},
      {R"("smbios": {"mode": "explicit", "bios": {"vendor": ""}})",
       "/smbios/bios/vendor: expected a non-empty string"},
      {R"("smbios": {"mode": "explicit", "chassis": {"product": "x"}})",
       "/smbios/chassis/product: unknown key"},
      {R"("smbios": {"mode": "explicit", "oem": {}})", "/smbios/oem: unknown key"},
      {R"("display": {})", "/display/type: required key is missing"},
      {R"("display": {"type": "sdl"})", "/display/type: expected one of \"vnc\", \"spice\""},
      {R"("display": {"type": "vnc", "listen": "0.0.0.0"})",
       "/display/listen: expected \"unix\" or \"ADDRESS:PORT\""},
      {R"("display": {"type": "vnc", "listen": "127.0.0.1:80"})",
       "(VNC ports start at 5900), got \"127.0.0.1:80\""},
      {R"("display": {"type": "spice", "listen": "127.0.0.1:70000"})", "/display/listen: expected"},
      {R"("display": {"type": "vnc", "vga": "cirrus"})",
       "/display/vga: expected one of \"std\", \"virtio\", \"qxl\""},
      {R"("sound": {"model": "ich9"})", "/sound/backend: required key is missing"},
      {R"("sound": {"backend": "jack"})",
       "/sound/backend: expected one of \"pa\", \"alsa\", \"none\""},
      {R"("sound": {"backend": "pa", "model": "ac97"})",
       "/sound/model: expected one of \"ich9\", \"hda\""},
      {R"("sound": {"backend": "pa", "codec": "stereo"})", "/sound/codec: expected one of"},
      {R"("sound": {"backend": "alsa", "server": "x"})",
       "/sound/server: only the \"pa\" backend has a server"},
      {R"("guest_agent": "yes")", "/guest_agent: expected true or false, got a string"},
      {R"("shmem": {"size_mib": 32})", "/shmem/name: required key is missing"},
      {R"("shmem": {"name": "../etc/passwd", "size_mib": 32})",
       "/shmem/name: expected a file name in /dev/shm"},
      {R"("shmem": {"name": "lg", "size_mib": 48})",
       "/shmem/size_mib: expected a power of two (ivshmem), got 48"},
      {R"("shmem": {"name": "lg", "size_mib": 0})",
       "/shmem/size_mib: expected an integer from 1 to 4096, got 0"},
      {R"("shmem": [{"name": "lg", "size_mib": 32}, {"name": "lg", "size_mib": 2}])",
       "/shmem/1/name: \"lg\" is used twice"},
      {R"("shmem": {"name": "lg", "size_mib": 32, "user": "Not A User"})",
       "/shmem/user: expected a user name"},
      {R"("shmem": "lg")", "/shmem: expected an object, got a string"},
      {R"("qemu_args": "-S")", "/qemu_args: expected an array, got a string"},
      {R"("qemu_args": [7])", "/qemu_args/0: expected a string, got an integer"},
  };
  for (const Case& c : cases) {
    std::string e = error_of(kvm_with(c.extra));
    EXPECT_NE(e.find(std::string("p.json: ") + (c.want[0] == '/' ? "" : "")), std::string::npos);
    EXPECT_NE(e.find(c.want), std::string::npos) << c.extra << "\n" << e;
  }
}

// The escape hatch refuses what passlaunch owns, naming the entry's index and
// the option; an option's value is not taken for an option.
TEST(Profile, QemuArgsRefusalsNameIndexAndOption) {
  struct Case {
    const char* args;
    const char* want;
  };
  const Case cases[] = {
      {R"(["-S"])", "/qemu_args/0: \"-S\" is refused: passlaunch starts every VM paused"},
      {R"(["-global", "x.y=1", "-daemonize"])", "/qemu_args/2: \"-daemonize\" is refused"},
      {R"(["-runas", "nobody"])", "/qemu_args/0: \"-runas\" is refused"},
      {R"(["-pidfile", "/tmp/p"])", "/qemu_args/0: \"-pidfile\" is refused"},
      {R"(["--name", "x"])", "/qemu_args/0: \"--name\" is refused"},
      {R"(["-nodefaults"])", "/qemu_args/0: \"-nodefaults\" is refused"},
      {R"(["-sandbox", "off"])", "/qemu_args/0: \"-sandbox\" is refused"},
      {R"(["-qmp", "unix:/tmp/q,server=on"])",
       "/qemu_args/0: \"-qmp\" is refused: passlaunch owns the monitors"},
      {R"(["-monitor", "stdio"])", "/qemu_args/0: \"-monitor\" is refused"},
      {R"(["-mon", "chardev=qmp"])", "/qemu_args/0: \"-mon\" is refused"},
      {R"(["-chardev", "socket,id=qmp,path=/tmp/x"])",
       "/qemu_args/1: -chardev id \"qmp\" is refused"},
      {R"(["-chardev", "socket,path=/tmp/x,id=qga0"])",
       "/qemu_args/1: -chardev id \"qga0\" is refused"},
      {R"(["-set", "chardev.serial0.path=/tmp/x"])",
       "/qemu_args/1: -set chardev.serial0.path=/tmp/x is refused"},
      {R"(["disk.img"])", "/qemu_args/0: expected an option such as \"-global\", got \"disk.img\""},
      {R"(["-global"])", "/qemu_args/0: \"-global\" needs a value in the next entry"},
  };
  for (const Case& c : cases) {
    std::string e = error_of(kvm_with(std::string("\"qemu_args\": ") + c.args));
    EXPECT_NE(e.find(c.want), std::string::npos) << c.args << "\n" << e;
  }
  // Allowed: values that look like options, flags, -set device.* on our ids.
  Profile p = parse_profile(kvm_with(R"("qemu_args": ["-append", "-S", "-no-reboot", "-set",
                 "device.hostdev0.x-pci-vendor-id=0x10de", "-chardev", "null,id=mine"])"),
                            "p.json", ProfileChecks{.files = false});
  EXPECT_EQ(p.qemu_args.size(), 7u);
}

TEST(Profile, CdromDefaultsToSataReadOnlyAndMayBeEmpty) {
  Profile p = parse_profile(kvm_with(R"("disks": [{"path": "w.iso", "media": "cdrom"},
                                                  {"media": "cdrom", "interface": "scsi"}])"),
                            "p.json", ProfileChecks{.files = false});
  ASSERT_EQ(p.disks.size(), 2u);
  EXPECT_TRUE(p.disks[0].cdrom);
  EXPECT_EQ(p.disks[0].interface, "sata");
  EXPECT_TRUE(p.disks[0].readonly);
  EXPECT_TRUE(p.disks[1].path.empty());
}

TEST(Profile, VcpuSetsAndRealtimePolicies) {
  Profile p = parse_profile(
      kvm_with(R"("pinning": {"vcpus": ["2,10", 3], "emulator": "0", "realtime_priority": 2,
                  "emulator_realtime_priority": 1, "realtime_policy": "rr",
                  "iothreads": [{"id": "io1", "realtime_priority": 3}]})"),
      "p.json", ProfileChecks{.files = false});
  EXPECT_EQ(p.pinning.vcpu_cpus(0), (std::vector<int>{2, 10}));
  EXPECT_EQ(p.pinning.vcpu_cpus(1), (std::vector<int>{3}));
  EXPECT_EQ(p.pinning.all_vcpu_cpus(), (std::vector<int>{2, 3, 10}));
  EXPECT_EQ(p.pinning.realtime_policy, RealtimePolicy::kRr);
  EXPECT_EQ(p.pinning.emulator_realtime_priority, 1);
  EXPECT_EQ(p.pinning.iothreads.at(0).realtime_priority, 3);
}

TEST(Profile, DefaultDiskSerialIsStableAndNamesNoVm) {
  std::string a = default_disk_serial("win11", 0);
  EXPECT_EQ(a.size(), 20u);
  EXPECT_EQ(a, default_disk_serial("win11", 0));
  EXPECT_NE(a, default_disk_serial("win11", 1));
  EXPECT_NE(a, default_disk_serial("win10", 0));
  for (const char* bad : {"QEMU", "VM", "DISK", "VIRT"}) {
    EXPECT_EQ(a.find(bad), std::string::npos) << a;
  }
}

// Secure Boot needs an OVMF build with SMM: the firmware descriptors say which
// images have it, and the error names the image to use.
TEST(Profile, SecureBootRefusesACodeImageWithoutSmm) {
  auto text = [](const std::string& code) {
    return R"({"name": "sb", "memory": {"size_mib": 256}, "cpu": {"model": "max", "vcpus": 1},
      "firmware": {"type": "ovmf", "code": ")" +
           code +
           R"(", "vars_template": "/usr/share/OVMF/OVMF_VARS_4M.ms.fd", "secure_boot": true}})";
  };
  try {
    parse_profile(text("/usr/share/OVMF/OVMF_CODE_4M.fd"), "sb.json");
    ADD_FAILURE() << "an SMM-less code image was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kUsage);
    std::string m = e.what();
    EXPECT_NE(m.find("sb.json: /firmware/code: /usr/share/OVMF/OVMF_CODE_4M.fd is built without "
                     "SMM, which Secure Boot needs; expected an SMM image such as "
                     "/usr/share/OVMF/OVMF_CODE_4M.ms.fd (with /usr/share/OVMF/OVMF_VARS_4M.ms.fd "
                     "as vars_template)"),
              std::string::npos)
        << m;
  }
  for (const char* good :
       {"/usr/share/OVMF/OVMF_CODE_4M.ms.fd", "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"}) {
    Profile p = parse_profile(text(good), "sb.json");
    EXPECT_TRUE(p.firmware.secure_boot) << good;
  }
}

}  // namespace
}  // namespace pl
