// The real HostFs/PCI reader against a static tree laid out exactly like real
// sysfs (symlinks and "0x..." attribute text), and vfio-conf on it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "host/pci.h"
#include "host/vfio_conf.h"

namespace pl::host {
namespace {

namespace fs = std::filesystem;

class StaticSysfs : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pl-sysfs-XXXXXX";
    root_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { fs::remove_all(root_); }

  void file(const std::string& path, const std::string& text) {
    fs::create_directories(fs::path(root_ + path).parent_path());
    std::ofstream(root_ + path) << text;
  }
  void link(const std::string& path, const std::string& target) {
    fs::create_directories(fs::path(root_ + path).parent_path());
    fs::create_symlink(target, root_ + path);
  }
  // A device as the kernel lays it out: the real directory under
  // /sys/devices/pci0000:00/..., a /sys/bus/pci/devices link, driver and group links.
  void device(const std::string& parent, const std::string& addr, const std::string& vendor,
              const std::string& device, const std::string& klass, const std::string& rev,
              const std::string& driver, int group, bool boot_vga = false) {
    const std::string dir = "/sys/devices/" + parent + addr;
    file(dir + "/vendor", "0x" + vendor + "\n");
    file(dir + "/device", "0x" + device + "\n");
    file(dir + "/class", "0x" + klass + "\n");
    file(dir + "/revision", "0x" + rev + "\n");
    file(dir + "/driver_override", "(null)\n");
    if (klass.substr(0, 4) == "0300") file(dir + "/boot_vga", boot_vga ? "1\n" : "0\n");
    const int depth = static_cast<int>(std::count(dir.begin(), dir.end(), '/')) - 1;
    std::string up;
    for (int i = 0; i < depth; ++i) up += "../";
    link("/sys/bus/pci/devices/" + addr, "../../../devices/" + parent + addr);
    if (!driver.empty()) {
      fs::create_directories(root_ + "/sys/bus/pci/drivers/" + driver);
      link(dir + "/driver", up + "bus/pci/drivers/" + driver);
    }
    link(dir + "/iommu_group", up + "kernel/iommu_groups/" + std::to_string(group));
    link("/sys/kernel/iommu_groups/" + std::to_string(group) + "/devices/" + addr,
         "../../../../devices/" + parent + addr);
  }

  std::string root_;
};

TEST_F(StaticSysfs, RealReaderFollowsSysfsSymlinks) {
  device("pci0000:00/", "0000:00:01.0", "8086", "460d", "060400", "02", "pcieport", 2);
  device("pci0000:00/0000:00:01.0/", "0000:01:00.0", "10de", "1e07", "030000", "a1", "nvidia", 14,
         true);
  device("pci0000:00/0000:00:01.0/", "0000:01:00.1", "10de", "10f7", "040300", "a1",
         "snd_hda_intel", 14);
  device("pci0000:00/", "0000:03:00.0", "144d", "a808", "010802", "00", "", 16);

  HostFs hfs(root_);
  auto groups = read_iommu_groups(hfs);
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0].number, 2);
  EXPECT_TRUE(groups[0].devices[0].is_bridge());
  ASSERT_EQ(groups[1].number, 14);
  ASSERT_EQ(groups[1].devices.size(), 2u);
  const PciDevice& gpu = groups[1].devices[0];
  EXPECT_EQ(gpu.address, "0000:01:00.0");
  EXPECT_EQ(gpu.id(), "10de:1e07");
  EXPECT_EQ(gpu.class_code, 0x030000u);
  EXPECT_EQ(gpu.revision, 0xa1);
  EXPECT_EQ(gpu.driver, "nvidia");
  EXPECT_EQ(gpu.driver_override, "");
  EXPECT_EQ(gpu.iommu_group, 14);
  EXPECT_TRUE(gpu.boot_vga);
  EXPECT_EQ(groups[1].devices[1].driver, "snd_hda_intel");
  EXPECT_EQ(groups[2].devices[0].driver, "");

  PciNames names;
  EXPECT_EQ(
      describe_pci_device(gpu, names),
      "01:00.0 VGA compatible controller [0300]: NVIDIA Corporation TU102 [GeForce RTX 2080 Ti "
      "Rev. A] [10de:1e07] (rev a1)");
  // No revision printed for rev 00, as lspci does.
  EXPECT_EQ(describe_pci_device(groups[2].devices[0], names),
            "03:00.0 Non-Volatile memory controller [0108]: Samsung Electronics Co Ltd NVMe SSD "
            "Controller SM981/PM981/PM983 [144d:a808]");
}

TEST_F(StaticSysfs, UnknownIdsFallBackToNumbers) {
  device("pci0000:00/", "0000:05:00.0", "8086", "fffe", "770000", "01", "", 5);
  HostFs hfs(root_);
  PciNames names;
  auto d = read_pci_device(hfs, "0000:05:00.0");
  ASSERT_TRUE(d);
  EXPECT_EQ(describe_pci_device(*d, names),
            "05:00.0 Class [7700]: Intel Corporation Device [8086:fffe] (rev 01)");
}

TEST_F(StaticSysfs, VfioConfCoversWholeGroupsExceptBridges) {
  file("/proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\n");
  device("pci0000:00/", "0000:00:01.0", "8086", "460d", "060400", "02", "pcieport", 14);
  device("pci0000:00/0000:00:01.0/", "0000:01:00.0", "10de", "1e07", "030000", "a1", "nvidia", 14);
  device("pci0000:00/0000:00:01.0/", "0000:01:00.1", "10de", "10f7", "040300", "a1",
         "snd_hda_intel", 14);
  device("pci0000:00/", "0000:03:00.0", "144d", "a808", "010802", "00", "nvme", 16);
  device("pci0000:00/", "0000:00:1f.3", "8086", "7ad0", "040380", "11", "snd_hda_intel", 13);
  HostFs hfs(root_);
  EXPECT_EQ(format_vfio_conf(make_vfio_conf(hfs, {"01:00.0", "0000:03:00.0"})),
            "# /etc/modprobe.d/vfio.conf\n"
            "options vfio-pci ids=10de:1e07,10de:10f7,144d:a808\n"
            "options vfio-pci disable_vga=1\n"
            "# kernel command line (e.g. GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub)\n"
            "intel_iommu=on iommu=pt\n");
}

TEST_F(StaticSysfs, VfioConfNamesTheBadDevice) {
  device("pci0000:00/", "0000:03:00.0", "144d", "a808", "010802", "00", "nvme", 16);
  file("/sys/bus/pci/devices/0000:04:00.0/vendor", "0x1234\n");  // present, but in no group
  HostFs hfs(root_);
  try {
    make_vfio_conf(hfs, {"09:00.0"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kUsage);
    EXPECT_NE(std::string(e.what()).find("0000:09:00.0 does not exist"), std::string::npos);
  }
  try {
    make_vfio_conf(hfs, {"0000:04:00.0"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in no IOMMU group"), std::string::npos);
  }
  EXPECT_THROW(make_vfio_conf(hfs, {"1:0.0"}), Error);
}

}  // namespace
}  // namespace pl::host
