// The handover against the kernel's and systemd's stricter rules, each as the
// simulated host models it (tests/sim_host.h; docs/host.md lists each rule
// with its source file). Each test failed on the code before issue 22.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <thread>

#include "core/cpulist.h"
#include "core/error.h"
#include "host/handover.h"
#include "host/journal.h"
#include "host/pci.h"
#include "sim_host.h"

namespace pl::host {
namespace {

using sim::SimHost;

HandoverConfig seed_config() {
  HandoverConfig c;
  c.vm_name = "win11";
  c.pci_addresses = {"01:00.0", "01:00.1", "01:00.2", "01:00.3", "03:00.0"};
  c.stop_units = {"nvidia-persistenced.service"};
  c.gpu_modules = {"nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia"};
  return c;
}

std::string driver(SimHost& h, const std::string& addr) {
  return read_pci_device(h.fs(), addr)->driver;
}

/// prepare, expecting `message` in the error; the host unchanged, no journal.
void expect_refused(SimHost& h, const HandoverConfig& config, Exit code,
                    const std::string& message) {
  const auto before = h.snapshot();
  HostEnv env = h.env();
  try {
    Handover(config, env).prepare();
    ADD_FAILURE() << "prepare succeeded; expected: " << message;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
  }
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
  EXPECT_TRUE(Journal::list(h.fs()).empty()) << "journal left behind";
}

// ---- 1: delete_module answers EAGAIN; vfio is held by its soft dependency ----

TEST(HostKernelRules, ReleaseUnloadsVfioAfterTheSoftDependencyThatHoldsIt) {
  for (const char* kernel : {"6.1.0-13-amd64", "6.12.48+deb13-amd64"}) {
    SCOPED_TRACE(kernel);
    SimHost h("", kernel);
    const auto before = h.snapshot();
    std::ostringstream log;
    HostEnv env = h.env(&log);
    Handover handover(seed_config(), env);
    handover.prepare();
    // modprobe vfio-pci loaded vfio_iommu_type1 (vfio's post: soft
    // dependency), which holds vfio; from 6.2 on vfio needs iommufd.
    EXPECT_TRUE(h.fs().exists("/sys/module/vfio_iommu_type1"));
    EXPECT_EQ(h.fs().list("/sys/module/vfio/holders"),
              (std::vector<std::string>{"vfio_iommu_type1", "vfio_pci_core"}));
    EXPECT_EQ(h.fs().exists("/sys/module/iommufd"), std::string(kernel).starts_with("6.12"));
    EXPECT_TRUE(h.fs().exists("/sys/module/irqbypass")) << "kvm loaded it at boot";
    handover.release();  // threw "Resource temporarily unavailable" for vfio before
    EXPECT_FALSE(Journal::open(h.fs(), "win11"));
    EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "") << log.str();
  }
}

TEST(HostKernelRules, ModuleStillReferencedAtReleaseIsLeftLoadedNamingWhy) {
  SimHost h;
  std::ostringstream log;
  HostEnv env = h.env(&log);
  Handover handover(seed_config(), env);
  handover.prepare();
  h.pin_module("vfio");  // another program opened /dev/vfio/vfio meanwhile
  handover.release();
  EXPECT_FALSE(Journal::open(h.fs(), "win11")) << "released";
  EXPECT_TRUE(h.fs().exists("/sys/module/vfio"));
  EXPECT_FALSE(h.fs().exists("/sys/module/vfio_pci"));
  EXPECT_NE(log.str().find("kernel module vfio is in use (refcnt 1); left loaded"),
            std::string::npos)
      << log.str();
  EXPECT_EQ(driver(h, "0000:01:00.0"), "nvidia");
}

// ---- 2: units pass through deactivating; session processes linger ----------

TEST(HostKernelRules, DisplayManagerIsWaitedForUntilInactiveAndItsSessionHasLetGo) {
  // display-manager.service is "deactivating" for 300 ms after the stop job
  // starts (is-active already says no), and gnome-shell holds renderD128 for
  // 500 ms more. Before: "the GPU is still in use: PID 1200 (Xorg)".
  SimHost h;
  const auto before = h.snapshot();
  HostEnv env = h.env();
  Handover handover(seed_config(), env);
  handover.prepare();
  EXPECT_EQ(h.services().active_state("display-manager.service"), "inactive");
  EXPECT_FALSE(h.fs().exists("/proc/1300")) << "gnome-shell has exited";
  EXPECT_EQ(driver(h, "0000:01:00.0"), "vfio-pci");
  handover.release();
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
}

TEST(HostKernelRules, UnitStillDeactivatingAtTheDeadlineFailsNamingItsState) {
  SimHost h;
  auto c = seed_config();
  c.unit_timeout = std::chrono::milliseconds(200);  // the unit needs 300 ms
  expect_refused(h, c, Exit::kEnvironment,
                 "unit display-manager.service is still deactivating 200 ms after stopping it");
}

TEST(HostKernelRules, SessionProcessOutlivingTheDeadlineIsNamed) {
  SimHost h;
  auto c = seed_config();
  c.holder_timeout = std::chrono::milliseconds(300);  // gnome-shell needs 500 ms
  expect_refused(h, c, Exit::kFailed,
                 "the GPU is still in use after 300 ms: PID 1300 (gnome-shell) holds "
                 "/dev/dri/renderD128");
}

// ---- 3: AllowedCPUs confines every process below a slice ---------------------

TEST(HostKernelRules, IsolatingHostCpusLeavesTheLauncherFreeToUseTheVmCpus) {
  SimHost h;
  const auto before = h.snapshot();
  auto c = seed_config();
  c.isolate_host_cpus = "4-7";
  c.vm_cpus = {0, 1, 2, 3};
  ASSERT_EQ(h.effective_cpus(::getpid()), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  HostEnv env = h.env();
  Handover handover(c, env);
  handover.prepare();
  EXPECT_EQ(h.services().allowed_cpus("user.slice"), "4-7");
  // The launcher (and the QEMU it forks next) is in a scope of its own in
  // machine.slice; in user.slice it would be confined to 4-7, and pinning a
  // vCPU to CPU 0 would fail with EINVAL.
  EXPECT_EQ(h.services().unit_of(::getpid()), "passlaunch-win11.scope");
  EXPECT_EQ(format_cpulist(h.effective_cpus(::getpid())), "0-7");
  handover.release();
  EXPECT_EQ(h.services().unit_of(::getpid()), "session-1.scope");
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
}

// ---- 4: storage and sound of the group --------------------------------------

TEST(HostKernelRules, RefusesNvmeWithAMountedPartitionNamingIt) {
  SimHost h;
  h.put_file("/proc/self/mountinfo",
             "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw\n"
             "41 22 259:2 / /data rw,relatime shared:9 - ext4 /dev/nvme0n1p2 rw\n");
  expect_refused(h, seed_config(), Exit::kUsage,
                 "PCI device 0000:03:00.0 holds storage the host is using: nvme0n1p2 is mounted "
                 "on /data");
}

TEST(HostKernelRules, RefusesNvmeBehindBtrfsMountedByUuidSwapLvmAndOpenHandles) {
  {  // btrfs shows an anonymous 0:NN device; the source names the partition
    SimHost h;
    h.put_file("/proc/self/mountinfo",
               "22 1 8:2 / / rw - ext4 /dev/sda2 rw\n"
               "43 22 0:45 /@home /home rw - btrfs /dev/nvme0n1p1 rw,subvol=/@home\n");
    expect_refused(h, seed_config(), Exit::kUsage, "nvme0n1p1 is mounted on /home");
  }
  {
    SimHost h;
    h.put_file("/proc/swaps",
               "Filename\tType\tSize\tUsed\tPriority\n/dev/nvme0n1p2 partition 8388604 0 -2\n");
    expect_refused(h, seed_config(), Exit::kUsage, "nvme0n1p2 is in use as swap");
  }
  {
    SimHost h;
    h.put_file("/sys/devices/virtual/block/dm-0/dm/name", "vg-root\n");
    h.put_link("/sys/block/dm-0", "/sys/devices/virtual/block/dm-0");
    h.put_link("/sys/block/nvme0n1/nvme0n1p1/holders/dm-0", "/sys/devices/virtual/block/dm-0");
    expect_refused(h, seed_config(), Exit::kUsage, "nvme0n1p1 is held by dm-0 (vg-root)");
  }
  {
    SimHost h;
    h.add_process(880, "fsck.ext4", "/dev/nvme0n1p2");
    expect_refused(h, seed_config(), Exit::kUsage, "PID 880 (fsck.ext4) holds /dev/nvme0n1p2");
  }
}

TEST(HostKernelRules, SoundServerHoldingTheHdmiAudioIsNamedInsteadOfABlockedUnbind) {
  // snd_hda_intel's remove waits for every open handle of card1; before, the
  // unbind hung until its timeout.
  SimHost h;
  h.add_process(2000, "pipewire", "/dev/snd/controlC1");
  auto c = seed_config();
  c.unbind_timeout = std::chrono::milliseconds(300);
  expect_refused(h, c, Exit::kFailed,
                 "the sound devices of 0000:01:00.1 are still in use after 10000 ms: PID 2000 "
                 "(pipewire) holds /dev/snd/controlC1");
}

TEST(HostKernelRules, SoundServerThatExitsWithTheSessionIsWaitedFor) {
  SimHost h;
  const auto before = h.snapshot();
  h.add_process(2000, "pipewire", "/dev/snd/pcmC1D3p");
  h.put_file("/.sim/state/linger/2000", "700\n");  // exits 700 ms from now
  HostEnv env = h.env();
  Handover handover(seed_config(), env);
  handover.prepare();
  EXPECT_EQ(driver(h, "0000:01:00.1"), "vfio-pci");
  handover.release();
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
}

TEST(HostKernelRules, OnboardAudioOutsideTheGroupsIsNotWaitedFor) {
  SimHost h;
  h.add_process(2001, "pipewire", "/dev/snd/controlC0");  // 00:1f.3, group 13
  HostEnv env = h.env();
  Handover handover(seed_config(), env);
  handover.prepare();
  handover.release();
}

// ---- 5: probes that hang are bounded -----------------------------------------

TEST(HostKernelRules, ProbeThatHangsInPrepareIsBoundedAndRecoverFinishesLater) {
  SimHost h;
  const auto before = h.snapshot();
  h.put_file("/.sim/state/hang_probe", "0000:01:00.0");  // vfio-pci's probe of the GPU stalls
  auto c = seed_config();
  c.unbind_timeout = std::chrono::milliseconds(200);
  HostEnv env = h.env();
  try {
    Handover(c, env).prepare();  // blocked for good in the drivers_probe write before
    FAIL() << "prepare did not fail";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kEnvironment);
    EXPECT_NE(std::string(e.what()).find("probing 0000:01:00.0 did not finish within 200 ms"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("a probe is still pending"), std::string::npos);
  }
  EXPECT_TRUE(Journal::open(h.fs(), "win11")) << "kept: the probe may still land";
  std::remove((h.root() + "/.sim/state/hang_probe").c_str());
  for (int i = 0; i < 2000 && driver(h, "0000:01:00.0") != "vfio-pci"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(driver(h, "0000:01:00.0"), "vfio-pci") << "the pending probe landed";
  HostEnv fresh = h.env();
  recover("win11", fresh);
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
}

TEST(HostKernelRules, ModuleLoadWhoseProbeHangsAtReleaseIsBoundedAndKeepsTheJournal) {
  SimHost h;
  HostEnv env = h.env();
  Handover handover(seed_config(), env);
  handover.prepare();
  // The guest left the GPU unreset: nvidia's probe stalls when it loads.
  h.put_file("/.sim/state/hang_probe", "0000:01:00.0");
  env.restore_timeout = std::chrono::milliseconds(200);
  try {
    handover.release();  // blocked for good in the module load before
    FAIL() << "release did not fail";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kFailed);
    EXPECT_NE(
        std::string(e.what()).find("loading kernel module nvidia did not finish within 200 ms"),
        std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(Journal::open(h.fs(), "win11"));
  std::remove((h.root() + "/.sim/state/hang_probe").c_str());
  for (int i = 0; i < 2000 && driver(h, "0000:01:00.0") != "nvidia"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  HostEnv fresh = h.env();
  recover("win11", fresh);
  EXPECT_FALSE(Journal::open(h.fs(), "win11"));
  for (const char* a : {"0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3"})
    EXPECT_NE(driver(h, a), "vfio-pci") << a;
  EXPECT_EQ(driver(h, "0000:01:00.0"), "nvidia");
  EXPECT_TRUE(h.fs().exists("/sys/module/nvidia_drm"));
}

// ---- 6: the boot framebuffer does not come back on 6.x ----------------------

TEST(HostKernelRules, BootFramebufferTheKernelRemovedIsReportedAtReleaseNotSwallowed) {
  SimHost h;  // 6.1
  const auto before = h.snapshot();
  HostEnv env = h.env();
  auto lines = plan(seed_config(), env);
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  EXPECT_NE(text.find("bind 0000:01:00.0 to vfio-pci (the boot VGA: the kernel removes "
                      "efi-framebuffer.0 for good"),
            std::string::npos)
      << text;
  std::ostringstream log;
  env.log = &log;
  Handover handover(seed_config(), env);
  handover.prepare();
  EXPECT_FALSE(h.fs().exists("/sys/bus/platform/devices/efi-framebuffer.0"));
  EXPECT_FALSE(h.fs().exists("/sys/class/vtconsole/vtcon1"));
  handover.release();
  // Before: the rebind's ENODEV was swallowed and nothing said so.
  EXPECT_NE(log.str().find("release: efi-framebuffer.0 is gone for good: vfio-pci took the boot "
                           "VGA and the kernel removed the boot framebuffer (sysfb_disable)"),
            std::string::npos)
      << log.str();
  EXPECT_NE(log.str().find("release: vtcon1 is gone for good"), std::string::npos) << log.str();
  EXPECT_NE(sim::diff(before, h.snapshot()), "") << "the loss is real";
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "") << "and nothing else is lost";
}

TEST(HostKernelRules, BootFramebufferComesBackBefore60) {
  SimHost h("", "5.15.0-91-generic");
  const auto before = h.snapshot();
  std::ostringstream log;
  HostEnv env = h.env(&log);
  Handover handover(seed_config(), env);
  handover.prepare();
  handover.release();
  EXPECT_EQ(sim::diff(before, h.snapshot()), "");
  EXPECT_EQ(log.str().find("gone for good"), std::string::npos) << log.str();
}

// ---- 7: group viability as the kernel decides it ----------------------------

TEST(HostKernelRules, UnboundOrPciStubMemberLeftOutOfTheProfileKeepsTheGroupViable) {
  for (const char* drv : {"", "pci-stub"}) {
    SCOPED_TRACE(std::string("01:00.3 on ") + (*drv ? drv : "no driver"));
    SimHost h;
    h.set_driver("0000:01:00.3", drv);
    const auto before = h.snapshot();
    auto c = seed_config();
    c.pci_addresses = {"01:00.0", "01:00.1", "01:00.2", "03:00.0"};
    HostEnv env = h.env();
    Handover handover(c, env);
    handover.prepare();  // refused before: "IOMMU group 14 also holds 01:00.3"
    EXPECT_EQ(driver(h, "0000:01:00.0"), "vfio-pci");
    EXPECT_EQ(driver(h, "0000:01:00.3"), drv) << "a member left out is not touched";
    handover.release();
    EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
  }
}

TEST(HostKernelRules, BridgeOnANonDmaManagedDriverMakesTheGroupNotViableFrom519On) {
  {
    SimHost h;  // 6.1: iommu_group_claim_dma_owner refuses shpchp
    h.set_driver("0000:00:1d.0", "shpchp");
    expect_refused(h, seed_config(), Exit::kUsage, "IOMMU group 16 is not viable: bridge 00:1d.0");
  }
  {
    SimHost h("", "5.15.0-91-generic");  // before 5.19 any bridge was tolerated
    h.set_driver("0000:00:1d.0", "shpchp");
    HostEnv env = h.env();
    Handover handover(seed_config(), env);
    handover.prepare();
    handover.release();
  }
}

TEST(HostKernelRules, PassingABridgeIsRefusedByItsHeaderType) {
  SimHost h;
  auto c = seed_config();
  c.pci_addresses.push_back("00:1d.0");
  expect_refused(h, c, Exit::kUsage, "has header type 1 (a bridge), which vfio-pci does not take");
}

// ---- 8: recover with a QEMU that outlived its launcher ----------------------

TEST(HostKernelRules, RecoverRefusesWhileAProcessStillHoldsTheGroupNamingIt) {
  SimHost h;
  const auto before = h.snapshot();
  {
    HostEnv env = h.env();
    Handover(seed_config(), env).prepare();  // the launcher dies here, QEMU lives on
  }
  h.add_process(4242, "qemu-system-x86", "/dev/vfio/14");
  HostEnv env = h.env();
  try {
    recover("win11", env);
    FAIL() << "recover did not refuse";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kFailed);
    EXPECT_NE(std::string(e.what()).find("PID 4242 (qemu-system-x86) holds /dev/vfio/14"),
              std::string::npos)
        << e.what();
    EXPECT_EQ(e.hint(), "stop it (kill 4242), then run `passlaunch recover win11` again");
  }
  EXPECT_TRUE(Journal::open(h.fs(), "win11"));
  EXPECT_EQ(driver(h, "0000:01:00.0"), "vfio-pci") << "nothing was touched";
  h.remove_process(4242);
  EXPECT_EQ(recover("win11", env), std::vector<std::string>{"win11"});
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
}

}  // namespace
}  // namespace pl::host
