// The runtime side of the profile fields for real gaming VMs (issue 13), with
// `passlaunch run` and the test guest under TCG: the guest agent (shutdown,
// filesystem freeze around disk-only snapshots), the display socket and
// `ctl display`, and Looking Glass shared memory.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"

namespace pl {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using test::passlaunch_cmd;

class VmFeaturesQemu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) GTEST_SKIP() << "the pin plan needs 2 CPUs";
    name_ = "f" + std::to_string(::getpid());
  }
  /// Starts the test guest `variant` with `extra` profile members; waits for its ready line.
  void start(const std::string& variant, const std::string& extra) {
    std::string path = dir_.path() + "/" + name_ + ".json";
    std::ofstream(path) << test::guest_profile(name_, variant, extra);
    run_ = std::make_unique<test::Passlaunch>(std::vector<std::string>{"run", path}, dir_.path());
    ASSERT_TRUE(run_->out().wait_for("passlaunch-guest: ready", 120s)) << run_->out().text();
  }
  std::pair<int, std::string> ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"ctl", name_});
    return passlaunch_cmd(args, dir_.path());
  }
  std::string runtime(const std::string& file) const {
    return dir_.path() + "/passlaunch/" + name_ + "/" + file;
  }
  void TearDown() override {
    if (run_ && !stopped_) {
      ::kill(run_->pid(), SIGINT);
      ::kill(run_->pid(), SIGINT);
      run_->wait(30s);
    }
  }
  test::TempDir dir_;
  std::string name_;
  std::unique_ptr<test::Passlaunch> run_;
  bool stopped_ = false;
};

// The agent variant ignores the power button: only the agent can shut it down.
TEST_F(VmFeaturesQemu, CtlShutdownGoesThroughTheGuestAgent) {
  start("agent", R"(, "guest_agent": true)");
  ASSERT_TRUE(run_->out().wait_for("passlaunch-guest: agent /dev/vport")) << run_->out().text();
  struct stat st {};
  ASSERT_EQ(::stat(runtime("qga.sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto [code, out] = ctl({"shutdown"});
  EXPECT_EQ(code, 0) << out << run_->out().text();
  EXPECT_NE(out.find(name_ + ": asked the guest agent to shut the guest down"), std::string::npos)
      << out;
  EXPECT_EQ(run_->wait(60s), 0) << run_->out().text();
  stopped_ = true;
  EXPECT_NE(run_->out().text().find("passlaunch-guest: agent shutdown -h -P +0"), std::string::npos)
      << run_->out().text();
  EXPECT_EQ(run_->out().text().find("ignoring power button"), std::string::npos)
      << "the power button was not needed\n"
      << run_->out().text();
}

// Without an agent answering, `ctl shutdown` says so and presses the power
// button (the normal variant powers off on it).
TEST_F(VmFeaturesQemu, CtlShutdownFallsBackToThePowerButton) {
  start("normal", R"(, "guest_agent": true)");
  auto [code, out] = ctl({"shutdown"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(name_ + ": the guest agent does not answer: pressing the power button"),
            std::string::npos)
      << out;
  EXPECT_EQ(run_->wait(60s), 0) << run_->out().text();
  stopped_ = true;
  EXPECT_NE(run_->out().text().find("passlaunch-guest: powering off"), std::string::npos);
}

TEST_F(VmFeaturesQemu, DiskOnlySnapshotFreezesAndThawsThroughTheAgent) {
  std::string disk = dir_.path() + "/d.qcow2";
  ASSERT_EQ(test::run_command({"qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"}), 0);
  start("agent",
        R"(, "guest_agent": true, "disks": [{"path": ")" + disk + R"(", "format": "qcow2"}])");
  ASSERT_TRUE(run_->out().wait_for("passlaunch-guest: agent /dev/vport")) << run_->out().text();
  auto [code, out] = ctl({"snapshot", "save", "--disk-only", "t1"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(name_ + ": guest agent froze 0 filesystems"), std::string::npos) << out;
  EXPECT_NE(out.find(name_ + ": guest agent thawed 0 filesystems"), std::string::npos) << out;
  EXPECT_NE(out.find("now writes to " + disk + ".t1.qcow2"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(disk + ".t1.qcow2"));
  ASSERT_TRUE(run_->out().wait_for("passlaunch-guest: fsfreeze thaw")) << run_->out().text();
  const std::string& text = run_->out().text();
  EXPECT_LT(text.find("passlaunch-guest: fsfreeze freeze"),
            text.find("passlaunch-guest: fsfreeze thaw"));
  EXPECT_EQ(ctl({"snapshot", "load", "--disk-only", "t1"}).first, 2) << "no such flag for load";
}

TEST_F(VmFeaturesQemu, VncDisplayOnAnOwnerOnlySocketAndCtlDisplay) {
  start("normal", R"(, "display": {"type": "vnc"})");
  struct stat st {};
  ASSERT_EQ(::stat(runtime("vnc.sock").c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto [code, out] = ctl({"display"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(name_ + ": VNC on the Unix socket " + runtime("vnc.sock")), std::string::npos)
      << out;
  EXPECT_NE(out.find("ssh -L 5900:" + runtime("vnc.sock")), std::string::npos) << out;
}

TEST_F(VmFeaturesQemu, CtlDisplayWithoutADisplayIsExitOne) {
  start("normal", "");
  auto [code, out] = ctl({"display"});
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("has no display"), std::string::npos) << out;
}

TEST_F(VmFeaturesQemu, ShmemFileIsCreatedSizedAndRemoved) {
  std::string shm_name = "pl-test-" + name_;
  std::string shm = "/dev/shm/" + shm_name;
  start("normal", R"(, "shmem": {"name": ")" + shm_name + R"(", "size_mib": 2})");
  struct stat st {};
  ASSERT_EQ(::stat(shm.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 2 << 20);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  ::kill(run_->pid(), SIGTERM);
  EXPECT_EQ(run_->wait(60s), 0) << run_->out().text();
  stopped_ = true;
  EXPECT_FALSE(fs::exists(shm)) << "removed after the run";
}

// --- Firmware and boot order, with OVMF under TCG -------------------------------
//
// OVMF's boot manager prints each boot option it loads on the serial console
// ("BdsDxe: loading Boot0001 ... from PciRoot(...)/..."), and why one fails
// ("Access Denied" when Secure Boot refuses an image): the tests wait for
// those lines. OVMF under TCG on a loaded machine takes a minute or more.

class FirmwareQemu : public VmFeaturesQemu {
 protected:
  void SetUp() override {
    VmFeaturesQemu::SetUp();
    // The VM's OVMF variables go to our own state dir.
    ::setenv("PASSLAUNCH_STATE_DIR", dir_.path().c_str(), 1);
  }
  /// A FAT image whose removable-media boot file is the test guest's kernel,
  /// an EFI stub that no key in Microsoft's db has signed.
  std::string efi_image() {
    std::string img = dir_.path() + "/efi.img";
    std::ofstream(img).close();
    fs::resize_file(img, 24 << 20);
    EXPECT_EQ(test::run_command({"mformat", "-i", img, "::"}), 0);
    EXPECT_EQ(test::run_command({"mmd", "-i", img, "::/EFI", "::/EFI/BOOT"}), 0);
    EXPECT_EQ(
        test::run_command({"mcopy", "-i", img, test::guest_kernel(), "::/EFI/BOOT/BOOTX64.EFI"}),
        0);
    return img;
  }
  /// An ISO 9660 image booting `efi` (El Torito, no emulation), as installer ISOs do.
  std::string iso_of(const std::string& efi) {
    std::string tree = dir_.path() + "/iso";
    fs::create_directories(tree);
    fs::copy_file(efi, tree + "/efi.img");
    std::string iso = dir_.path() + "/boot.iso";
    EXPECT_EQ(test::run_command({"xorriso", "-as", "mkisofs", "-quiet", "-o", iso, "-e", "efi.img",
                                 "-no-emul-boot", tree}),
              0);
    return iso;
  }
  /// Runs the VM with OVMF (`secure`: the Secure Boot build with Microsoft's
  /// keys) and `disks` (a JSON array).
  void start_ovmf(bool secure, const std::string& disks) {
    std::string fw = secure ? R"("firmware": {"type": "ovmf", "secure_boot": true,
        "code": "/usr/share/OVMF/OVMF_CODE_4M.ms.fd", "vars_template": "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"})"
                            : R"("firmware": {"type": "ovmf",
        "code": "/usr/share/OVMF/OVMF_CODE_4M.fd", "vars_template": "/usr/share/OVMF/OVMF_VARS_4M.fd"})";
    std::string path = dir_.path() + "/" + name_ + ".json";
    std::ofstream(path) << R"({"name": ")" << name_
                        << R"(", "accel": "tcg", "memory": {"size_mib": 256},
        "cpu": {"model": "max", "vcpus": 1}, "pinning": {"vcpus": [1], "emulator": "0"},
        "serial": "log", "shutdown_timeout_s": 5, )"
                        << fw << R"(, "disks": )" << disks << "}";
    run_ = std::make_unique<test::Passlaunch>(std::vector<std::string>{"run", path}, dir_.path());
  }
  /// The first boot option OVMF loads: the rest of its "BdsDxe: loading" line.
  std::string first_boot_option() {
    // Without Secure Boot the first option loads and starts; its "starting"
    // line follows the whole "loading" line.
    if (!run_->out().wait_for("BdsDxe: starting Boot", 240s)) return "";
    const std::string& t = run_->out().text();
    size_t at = t.find("BdsDxe: loading ");
    return t.substr(at, t.find('\n', at) - at);
  }
};

TEST_F(FirmwareQemu, SecureBootRefusesAnImageMicrosoftDidNotSign) {
  std::string img = efi_image();
  start_ovmf(true, R"([{"path": ")" + img + R"(", "boot_index": 0}])");
  ASSERT_TRUE(run_->out().wait_for("guest running", 60s)) << run_->out().text();
  // Secure Boot is on: the image is refused ("Access Denied"), never started.
  ASSERT_TRUE(run_->out().wait_for("Access Denied", 240s)) << run_->out().text();
  const std::string& t = run_->out().text();
  size_t denied = t.find("BdsDxe: failed to load Boot");
  ASSERT_NE(denied, std::string::npos) << t;
  EXPECT_LT(denied, t.find("Access Denied"));
  EXPECT_EQ(t.find("EFI stub:"), std::string::npos) << "the kernel never ran\n" << t;
}

TEST_F(FirmwareQemu, WithoutSecureBootTheSameImageBoots) {
  std::string img = efi_image();
  start_ovmf(false, R"([{"path": ")" + img + R"(", "boot_index": 0}])");
  ASSERT_TRUE(run_->out().wait_for("BdsDxe: starting Boot", 240s)) << run_->out().text();
  EXPECT_EQ(run_->out().text().find("Access Denied"), std::string::npos) << run_->out().text();
}

TEST_F(FirmwareQemu, SecureBootWithAnSmmLessCodeImageIsRefusedBeforeQemuStarts) {
  std::string path = dir_.path() + "/sb.json";
  std::ofstream(path) << R"({"name": ")" << name_
                      << R"(", "accel": "tcg", "memory": {"size_mib": 64},
      "cpu": {"model": "max", "vcpus": 1}, "firmware": {"type": "ovmf", "secure_boot": true,
      "code": "/usr/share/OVMF/OVMF_CODE_4M.fd", "vars_template": "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"}})";
  auto [code, out] = passlaunch_cmd({"run", path}, dir_.path());
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(
      out.find(path + ": /firmware/code: /usr/share/OVMF/OVMF_CODE_4M.fd is built without SMM, "
                      "which Secure Boot needs; expected an SMM image such as "
                      "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"),
      std::string::npos)
      << out;
  EXPECT_EQ(out.find("starting:"), std::string::npos) << "QEMU never started\n" << out;
}

// Boot order for real: a CD-ROM and a disk with the same bootable image; OVMF
// tries the one with the lower boot_index first.
TEST_F(FirmwareQemu, BootIndexPutsTheCdromFirst) {
  std::string img = efi_image();
  std::string iso = iso_of(img);
  start_ovmf(false, R"([{"path": ")" + img + R"(", "boot_index": 1},
                        {"path": ")" +
                        iso + R"(", "media": "cdrom", "boot_index": 0}])");
  std::string first = first_boot_option();
  EXPECT_NE(first.find("Sata("), std::string::npos) << first << "\n" << run_->out().text();
}

TEST_F(FirmwareQemu, BootIndexPutsTheDiskFirst) {
  std::string img = efi_image();
  std::string iso = iso_of(img);
  start_ovmf(false, R"([{"path": ")" + img + R"(", "boot_index": 0},
                        {"path": ")" +
                        iso + R"(", "media": "cdrom", "boot_index": 1}])");
  std::string first = first_boot_option();
  ASSERT_FALSE(first.empty()) << run_->out().text();
  EXPECT_EQ(first.find("Sata("), std::string::npos) << first;
}

}  // namespace
}  // namespace pl

#include "run/pinning.h"

namespace pl {
namespace {

// The host's SMBIOS structures reach QEMU: `run --host-root` reads a DMI
// table of our own, copies types 0-3 into the runtime dir, and QEMU (which
// refuses a malformed file) starts the guest with them.
TEST_F(VmFeaturesQemu, SmbiosHostModeCopiesTheHostTablesIntoTheRuntimeDir) {
  std::string root = dir_.path() + "/host";
  for (int cpu : {0, 1}) {
    std::string d = root + "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology";
    fs::create_directories(d);
    std::ofstream(d + "/thread_siblings_list") << cpu << "\n";
  }
  std::ofstream(root + "/sys/devices/system/cpu/online") << "0-1\n";
  fs::create_directories(root + "/sys/firmware/dmi/tables");
  // Type 0 (BIOS: vendor, version, date), type 1 (system), type 17, end of table.
  auto structure = [](int type, int len, const std::string& strings) {
    std::string s(static_cast<size_t>(len), '\0');
    s[0] = static_cast<char>(type);
    s[1] = static_cast<char>(len);
    if (type == 0) s[4] = 1, s[5] = 2, s[8] = 3;  // string numbers of vendor, version, date
    if (type == 1) s[4] = 1, s[5] = 2;            // manufacturer, product
    return s + strings + std::string(1, '\0');
  };
  using namespace std::string_literals;
  std::ofstream(root + "/sys/firmware/dmi/tables/DMI", std::ios::binary)
      << structure(0, 0x18, "Test BIOS Inc.\0"s + "F21\0"s + "10/01/2024\0"s)
      << structure(1, 0x1b, "Test Maker\0"s + "Board 1\0"s) << structure(17, 0x28, "DIMM\0"s)
      << structure(127, 4, "\0"s);
  std::string path = dir_.path() + "/" + name_ + ".json";
  std::ofstream(path) << test::guest_profile(name_, "normal", R"(, "smbios": {"mode": "host"})");
  run_ = std::make_unique<test::Passlaunch>(
      std::vector<std::string>{"run", path, "--host-root", root}, dir_.path());
  ASSERT_TRUE(run_->out().wait_for("passlaunch-guest: ready", 120s)) << run_->out().text();
  EXPECT_NE(run_->out().text().find("-smbios file=" + runtime("smbios-type0.bin") +
                                    " -smbios file=" + runtime("smbios-type1.bin")),
            std::string::npos)
      << run_->out().text();
  EXPECT_EQ(fs::file_size(runtime("smbios-type0.bin")), 0x18u + 31u);
  EXPECT_FALSE(fs::exists(runtime("smbios-type17.bin")));
}

TEST(PinPlanRealtime, IothreadsAndEmulatorGetTheirPriorities) {
  Pinning pin;
  pin.vcpus = {1};
  pin.emulator = {0};
  pin.iothreads = {{"io1", {1}, 3}, {"io2", {}}};
  pin.realtime_priority = 2;
  pin.emulator_realtime_priority = 1;
  QemuThreads q;
  q.vcpus = {{0, 10}};
  q.iothreads = {{"io1", 11}, {"io2", 12}};
  auto pins = plan_pins(
      pin, q, {{10, "CPU 0/KVM"}, {11, "IO io1"}, {12, "IO io2"}, {13, "qemu"}, {14, "vhost-9"}});
  ASSERT_EQ(pins.size(), 5u);
  std::map<pid_t, std::optional<int>> prio;
  for (const ThreadPin& p : pins) prio[p.tid] = p.realtime_priority;
  EXPECT_EQ(prio[10], 2);
  EXPECT_EQ(prio[11], 3);
  EXPECT_EQ(prio[12], std::nullopt);
  EXPECT_EQ(prio[13], 1);
  EXPECT_EQ(prio[14], std::nullopt) << "vhost workers are not emulator threads here";
}

}  // namespace
}  // namespace pl
