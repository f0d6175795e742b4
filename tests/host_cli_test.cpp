// The host commands of the passlaunch binary against the simulated host tree.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sim_host.h"

namespace pl::host {
namespace {

struct Output {
  int status = -1;
  std::string text;
};

Output passlaunch(const std::string& args) {
  Output out;
  std::string cmd = std::string(PL_PASSLAUNCH) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.text.append(buf, n);
  int st = ::pclose(p);
  out.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

TEST(HostCli, IommuListsSeedGroupsLikeTheSeed) {
  sim::SimHost h;
  auto out = passlaunch("iommu --host-root " + h.root());
  ASSERT_EQ(out.status, 0) << out.text;
  EXPECT_NE(out.text.find("IOMMU Group 14:\n"
                          "\t01:00.0 VGA compatible controller [0300]: NVIDIA Corporation TU102 "
                          "[GeForce RTX 2080 Ti "
                          "Rev. A] [10de:1e07] (rev a1)  driver: nvidia  boot_vga\n"
                          "\t01:00.1 Audio device [0403]: NVIDIA Corporation TU102 High Definition "
                          "Audio Controller "
                          "[10de:10f7] (rev a1)  driver: snd_hda_intel\n"),
            std::string::npos)
      << out.text;
  EXPECT_NE(out.text.find("IOMMU Group 16:\n\t00:1d.0 PCI bridge [0604]"), std::string::npos)
      << out.text;
  EXPECT_NE(
      out.text.find(
          "\t03:00.0 Non-Volatile memory controller [0108]: Samsung Electronics Co Ltd NVMe SSD "
          "Controller SM981/PM981/PM983 [144d:a808]  driver: nvme\n"),
      std::string::npos)
      << out.text;
}

TEST(HostCli, IommuJsonCarriesIdsAndDrivers) {
  sim::SimHost h;
  auto out = passlaunch("iommu --json --host-root " + h.root());
  ASSERT_EQ(out.status, 0) << out.text;
  auto j = nlohmann::json::parse(out.text);
  const nlohmann::json* g14 = nullptr;
  for (const auto& g : j["groups"]) {
    if (g["group"] == 14) g14 = &g;
  }
  ASSERT_TRUE(g14);
  const auto& gpu = (*g14)["devices"][0];
  EXPECT_EQ(gpu["address"], "0000:01:00.0");
  EXPECT_EQ(gpu["vendor"], "10de");
  EXPECT_EQ(gpu["device"], "1e07");
  EXPECT_EQ(gpu["class"], "0300");
  EXPECT_EQ(gpu["driver"], "nvidia");
  EXPECT_EQ(gpu["revision"], "a1");
  EXPECT_EQ(gpu["boot_vga"], true);
}

TEST(HostCli, IommuWithoutGroupsExplainsHowToEnableIt) {
  auto out = passlaunch("iommu --host-root /nonexistent-root");
  EXPECT_EQ(out.status, 3);
  EXPECT_NE(out.text.find("no IOMMU groups"), std::string::npos) << out.text;
}

TEST(HostCli, VfioConfForSeedDevicesMatchesSeedFile) {
  sim::SimHost h;
  auto out = passlaunch("vfio-conf --host-root " + h.root() + " 01:00.0 00:1f.3 03:00.0");
  ASSERT_EQ(out.status, 0) << out.text;
  // The seed's vfio.conf, minus the root port that shares group 16 here.
  EXPECT_EQ(out.text,
            "# /etc/modprobe.d/vfio.conf\n"
            "options vfio-pci "
            "ids=10de:1e07,10de:10f7,10de:1ad6,10de:1ad7,8086:7a84,8086:7ad0,8086:7aa3,8086:7aa4,"
            "144d:a808\n"
            "options vfio-pci disable_vga=1\n"
            "# kernel command line (e.g. GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub)\n"
            "intel_iommu=on iommu=pt\n");
}

TEST(HostCli, CheckPassesViableGroupsAndFailsPartialOne) {
  sim::SimHost h;
  auto good = passlaunch("check --host-root " + h.root() +
                         " --device 01:00.0 --device 01:00.1 --device 01:00.2 --device 01:00.3");
  EXPECT_EQ(good.status, 0) << good.text;
  EXPECT_EQ(good.text.find("FAIL"), std::string::npos) << good.text;
  EXPECT_NE(good.text.find(
                "pass  CPU virtualization (vmx)\npass  /dev/kvm\npass  IOMMU active (dmar0)\n"
                "pass  kernel command line: intel_iommu=on iommu=pt\npass  vfio-pci available"),
            std::string::npos)
      << good.text;
  EXPECT_NE(good.text.find("pass  hugepages: 8192 x 2048 kB (8192 free)"), std::string::npos)
      << good.text;
  EXPECT_NE(good.text.find("pass  IOMMU group 14 viable"), std::string::npos) << good.text;
  EXPECT_NE(good.text.find("pass  boot VGA: 0000:01:00.0 (passed through"), std::string::npos)
      << good.text;
  EXPECT_NE(good.text.find("warn  processes holding the GPU: 1200 (Xorg), 1300 (gnome-shell), 900 "
                           "(nvidia-persiste)"),
            std::string::npos)
      << good.text;

  auto bad = passlaunch("check --host-root " + h.root() + " --device 01:00.0 --device 09:00.0");
  EXPECT_EQ(bad.status, 3) << bad.text;
  EXPECT_NE(
      bad.text.find("FAIL  IOMMU group 14 not viable: 0000:01:00.1 is bound to snd_hda_intel and "
                    "not passed through\n      fix: add it to the profile's devices"),
      std::string::npos)
      << bad.text;
  EXPECT_NE(bad.text.find("FAIL  device 0000:09:00.0 is not present\n      fix: "),
            std::string::npos)
      << bad.text;
}

TEST(HostCli, CheckReportsMountedStorageOpenSoundAndNonViableGroupsBeforeTouchingAnything) {
  sim::SimHost h;
  h.put_file(
      "/proc/self/mountinfo",
      "22 1 8:2 / / rw - ext4 /dev/sda2 rw\n41 22 259:2 / /data rw - ext4 /dev/nvme0n1p2 rw\n");
  h.add_process(2000, "pipewire", "/dev/snd/controlC1");
  h.set_driver("0000:00:1d.0", "shpchp");
  const auto before = h.snapshot();
  auto out = passlaunch("check --host-root " + h.root() +
                        " --device 01:00.0 --device 01:00.1 --device 01:00.2 --device 01:00.3"
                        " --device 03:00.0");
  EXPECT_EQ(out.status, 3) << out.text;
  for (const char* line :
       {"FAIL  device 0000:03:00.0 holds storage the host is using: nvme0n1p2 is mounted on /data",
        "warn  processes holding the sound devices of 0000:01:00.1: 2000 (pipewire)",
        "FAIL  IOMMU group 16 not viable: 0000:00:1d.0 is bound to shpchp, which does not leave "
        "DMA to the group's user"}) {
    EXPECT_NE(out.text.find(line), std::string::npos) << line << "\n" << out.text;
  }
  EXPECT_EQ(sim::diff(before, h.snapshot()), "");
}

TEST(HostCli, CheckAndVfioConfTakeDevicesFromProfile) {
  sim::SimHost h;
  const std::string profile =
      h.root() + "/../" + "pl-cli-profile-" + std::to_string(::getpid()) + ".json";
  {
    std::ofstream(profile)
        << R"({"name": "win11", "memory": {"size_mib": 1024}, "cpu": {"vcpus": 1},
      "firmware": {"type": "ovmf", "code": "/usr/share/OVMF/OVMF_CODE_4M.fd",
                   "vars_template": "/usr/share/OVMF/OVMF_VARS_4M.fd"},
      "devices": [{"type": "vfio", "address": "0000:03:00.0"}]})";
  }
  auto conf = passlaunch("vfio-conf --host-root " + h.root() + " --profile " + profile);
  EXPECT_EQ(conf.status, 0) << conf.text;
  EXPECT_NE(conf.text.find("options vfio-pci ids=144d:a808\n"), std::string::npos) << conf.text;
  EXPECT_EQ(conf.text.find("disable_vga"), std::string::npos) << conf.text;

  auto check = passlaunch("check --host-root " + h.root() + " " + profile);
  EXPECT_EQ(check.status, 3) << check.text;  // the vars template is missing under this root
  EXPECT_NE(check.text.find("pass  IOMMU group 16 viable"), std::string::npos) << check.text;
  EXPECT_NE(check.text.find(
                "FAIL  firmware missing: /usr/share/OVMF/OVMF_VARS_4M.fd\n      fix: install OVMF"),
            std::string::npos)
      << check.text;
  std::remove(profile.c_str());
}

TEST(HostCli, CheckFailsOnUnrestoredJournal) {
  sim::SimHost h;
  std::filesystem::create_directories(h.root() + "/var/lib/passlaunch/win11");
  std::ofstream(h.root() + "/var/lib/passlaunch/win11/journal")
      << R"({"passlaunch_journal":1,"vm":"win11","boot_id":"6f1e4c39-1f0b-4b7e-9d8e-0c9a3e2f4b11"})"
      << "\n";
  auto out = passlaunch("check --host-root " + h.root());
  EXPECT_EQ(out.status, 3) << out.text;
  EXPECT_NE(out.text.find("FAIL  the host holds unrestored changes of win11"), std::string::npos)
      << out.text;
  EXPECT_NE(out.text.find("      fix: run `passlaunch recover win11`"), std::string::npos)
      << out.text;
}

}  // namespace
}  // namespace pl::host
