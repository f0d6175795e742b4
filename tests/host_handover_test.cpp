// The handover against the simulated host (sim_host.h): prepare and release,
// crash injection at every step, recovery, and the bad inputs of issue 5.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "host/handover.h"
#include "host/journal.h"
#include "host/pci.h"
#include "sim_host.h"

namespace pl::host {
namespace {

namespace fsys = std::filesystem;
using sim::SimHost;

/// The seed's VM: the whole GPU group 14 and the NVMe of group 16.
HandoverConfig seed_config() {
  HandoverConfig c;
  c.vm_name = "win11";
  c.pci_addresses = {"01:00.0", "01:00.1", "01:00.2", "01:00.3", "03:00.0"};
  c.stop_units = {"nvidia-persistenced.service"};
  c.gpu_modules = {"nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia"};
  c.isolate_host_cpus = "4-7";
  c.vm_cpus = {0, 1, 2, 3};
  c.governor = "performance";
  return c;
}

std::string driver(SimHost& h, const std::string& addr) {
  return read_pci_device(h.fs(), addr)->driver;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A temporary directory for hook scripts and their output (outside the host root).
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/pl-hooks-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fsys::remove_all(path); }
  std::string script(const std::string& name, const std::string& body) {
    std::string p = path + "/" + name;
    std::ofstream(p) << "#!/bin/sh\n" << body << "\n";
    fsys::permissions(p, fsys::perms::owner_all);
    return p;
  }
  std::string path;
};

TEST(HostHandover, PrepareHandsGroupsToVfioAndReleaseRestoresExactly) {
  SimHost h;
  const auto before = h.snapshot();
  std::ostringstream log;
  HostEnv env = h.env(&log);
  Handover handover(seed_config(), env);
  handover.prepare();

  for (const char* a :
       {"0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3", "0000:03:00.0"}) {
    EXPECT_EQ(driver(h, a), "vfio-pci") << a;
    EXPECT_EQ(read_pci_device(h.fs(), a)->driver_override, "vfio-pci") << a;
  }
  EXPECT_EQ(driver(h, "0000:00:1d.0"), "pcieport");       // the bridge in group 16 stays
  EXPECT_EQ(driver(h, "0000:00:1f.3"), "snd_hda_intel");  // group 13 untouched
  EXPECT_FALSE(h.services().is_active("display-manager.service"));
  EXPECT_FALSE(h.services().is_active("nvidia-persistenced.service"));
  EXPECT_TRUE(h.services().is_active("sshd.service"));
  for (const char* m : {"nvidia", "nvidia_drm", "nvidia_modeset", "nvidia_uvm"}) {
    EXPECT_FALSE(h.fs().exists(std::string("/sys/module/") + m)) << m;
  }
  EXPECT_TRUE(h.fs().exists("/sys/module/vfio_pci"));
  // vtcon1 was unbound; then vfio-pci took the boot VGA and the kernel
  // removed the boot framebuffer and fbcon's vtcon1 for good (6.0+).
  EXPECT_FALSE(h.fs().exists("/sys/class/vtconsole/vtcon1"));
  EXPECT_FALSE(h.fs().exists("/sys/devices/platform/efi-framebuffer.0"));
  EXPECT_EQ(h.services().allowed_cpus("system.slice"), "4-7");
  EXPECT_EQ(h.fs().read_trimmed("/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor"),
            "performance");
  EXPECT_EQ(h.fs().read_trimmed("/sys/devices/system/cpu/cpu5/cpufreq/scaling_governor"),
            "powersave");
  EXPECT_TRUE(Journal::open(h.fs(), "win11"));
  // Each step is logged with its duration.
  for (const char* step : {"1/7 check", "2/7 display", "3/7 consoles", "4/7 modules", "5/7 vfio",
                           "6/7 cpus", "7/7 hooks: skipped (no hooks in the profile)"}) {
    EXPECT_NE(log.str().find(std::string("prepare ") + step), std::string::npos) << step << "\n"
                                                                                 << log.str();
  }
  EXPECT_NE(
      log.str().find("unload nvidia_uvm; unload nvidia_drm; unload nvidia_modeset; unload nvidia"),
      std::string::npos)
      << log.str();

  handover.release();
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
  EXPECT_FALSE(Journal::open(h.fs(), "win11"));
}

TEST(HostHandover, HostDriverReturnsEvenWithVfioIdsConfigured) {
  // vfio.conf's ids= would make vfio-pci take the GPU on any plain reprobe.
  SimHost h("10de:1e07,10de:10f7,10de:1ad6,10de:1ad7,144d:a808");
  ASSERT_EQ(driver(h, "0000:01:00.0"), "nvidia");  // nvidia registered first at boot
  const auto before = h.snapshot();
  HostEnv env = h.env();
  Handover handover(seed_config(), env);
  handover.prepare();
  EXPECT_EQ(driver(h, "0000:01:00.0"), "vfio-pci");
  handover.release();
  EXPECT_EQ(driver(h, "0000:01:00.0"), "nvidia");
  EXPECT_EQ(driver(h, "0000:03:00.0"), "nvme");
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
}

// ---- crash injection ------------------------------------------------------

/// Runs prepare then release in a forked child that SIGKILLs itself at event
/// number `kill_at` (1-based; 0 = never). Events are appended to `events`.
/// Returns the wait status.
int run_child(SimHost& h, const HandoverConfig& config, int kill_at, const std::string& events) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int n = 0;
    HostEnv env = h.env();
    env.on_event = [&](const std::string& e) {
      std::ofstream(events, std::ios::app) << e << "\n";
      if (++n == kill_at) ::raise(SIGKILL);
    };
    try {
      Handover handover(config, env);
      handover.prepare();
      handover.release();
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST(HostHandover, KilledAfterAnyStepOrChangeRecoverRestoresInitialState) {
  TempDir tmp;
  HandoverConfig config = seed_config();
  config.release_hook = tmp.script(
      "release", "echo \"$PASSLAUNCH_VM $PASSLAUNCH_PHASE\" >> " + tmp.path + "/released");
  config.prepare_hook = tmp.script("prepare", "exit 0");

  // A full run, to learn every point at which the launcher can die.
  const std::string all = tmp.path + "/all-events";
  {
    SimHost h;
    const auto before = h.snapshot();
    int status = run_child(h, config, 0, all);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
  }
  const auto events = lines_of(all);
  int prepare_steps = 0, release_steps = 0;
  for (const auto& e : events) {
    prepare_steps += e.starts_with("step:prepare:");
    release_steps += e.starts_with("step:release:");
  }
  ASSERT_EQ(prepare_steps, 7);
  ASSERT_GE(release_steps, 6);
  ASSERT_GT(events.size(), 30u);
  std::printf("crash points: %zu (prepare steps %d, release steps %d)\n", events.size(),
              prepare_steps, release_steps);

  for (size_t k = 1; k <= events.size(); ++k) {
    SCOPED_TRACE("killed after event " + std::to_string(k) + " (" + events[k - 1] + ")");
    SimHost h;
    const auto before = h.snapshot();
    int status =
        run_child(h, config, static_cast<int>(k), tmp.path + "/events-" + std::to_string(k));
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    HostEnv env = h.env();
    recover("", env);
    EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
    EXPECT_TRUE(Journal::list(h.fs()).empty());
    recover("win11", env);  // idempotent
    EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
  }
}

TEST(HostHandover, FailureAtAnyPointOfPrepareRestoresHostItself) {
  // Like the crash test, but the step fails (throws) instead of the process
  // dying: prepare must restore on its own and leave no journal.
  int points = 0;
  {
    SimHost h;
    HostEnv env = h.env();
    env.on_event = [&](const std::string& e) {
      points += e.starts_with("change:") || e.starts_with("journaled:");
    };
    Handover(seed_config(), env).prepare();
  }
  ASSERT_GT(points, 20);
  for (int k = 1; k <= points; ++k) {
    SCOPED_TRACE("failing at point " + std::to_string(k));
    SimHost h;
    const auto before = h.snapshot();
    HostEnv env = h.env();
    int n = 0;
    env.on_event = [&](const std::string& e) {
      if ((e.starts_with("change:") || e.starts_with("journaled:")) && ++n == k)
        throw std::runtime_error("injected");
    };
    try {
      Handover(seed_config(), env).prepare();
      ADD_FAILURE() << "prepare did not fail";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Exit::kFailed);
      EXPECT_EQ(std::string(e.what()), "injected (host restored)");
    }
    EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
    EXPECT_TRUE(Journal::list(h.fs()).empty());
  }
}

TEST(HostHandover, RecoverTwiceAfterCrashInsideReleaseIsHarmless) {
  SimHost h;
  const auto before = h.snapshot();
  HostEnv env = h.env();
  Handover handover(seed_config(), env);
  handover.prepare();
  // A release that dies half way leaves a journal whose first inverses already ran.
  int undone = 0;
  env.on_event = [&](const std::string& e) {
    if (e.starts_with("undo:") && ++undone == 9) throw std::runtime_error("power cut");
  };
  EXPECT_THROW(handover.release(), std::runtime_error);
  env.on_event = nullptr;
  ASSERT_TRUE(Journal::open(h.fs(), "win11"));
  EXPECT_EQ(recover("win11", env), std::vector<std::string>{"win11"});
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
  EXPECT_TRUE(recover("win11", env).empty());
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
}

// ---- refusals and bad inputs: each a clear error, host unchanged -------------

void expect_refused(SimHost& h, const HandoverConfig& config, Exit code,
                    const std::string& message) {
  const auto before = h.snapshot();
  HostEnv env = h.env();
  try {
    Handover handover(config, env);
    handover.prepare();
    ADD_FAILURE() << "prepare succeeded; expected: " << message;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
  }
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
  EXPECT_EQ(Journal::list(h.fs()), std::vector<std::string>{}) << "journal left behind";
}

TEST(HostHandover, RefusesDeviceInNoGroup) {
  SimHost h;
  h.add_groupless_device("0000:07:00.0");
  auto c = seed_config();
  c.pci_addresses.push_back("07:00.0");
  expect_refused(h, c, Exit::kEnvironment, "0000:07:00.0 is in no IOMMU group");
}

TEST(HostHandover, RefusesAbsentDevice) {
  SimHost h;
  auto c = seed_config();
  c.pci_addresses = {"09:00.0"};
  expect_refused(h, c, Exit::kUsage, "0000:09:00.0 does not exist");
}

TEST(HostHandover, RefusesGroupWithMemberNotPassedThrough) {
  SimHost h;
  auto c = seed_config();
  c.pci_addresses = {"01:00.0", "01:00.1"};  // 01:00.2 and 01:00.3 share group 14
  expect_refused(h, c, Exit::kUsage, "IOMMU group 14 also holds 01:00.2 USB controller");
}

TEST(HostHandover, RefusesDeviceHeldByAnotherVm) {
  SimHost h;
  Journal::create(h.fs(), "linux-vm", {"0000:03:00.0"});
  auto c = seed_config();
  const auto before = h.snapshot();
  HostEnv env = h.env();
  Handover handover(c, env);
  try {
    handover.prepare();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kHostDirty);
    EXPECT_NE(std::string(e.what()).find("0000:03:00.0 (IOMMU group 16) is held by VM linux-vm"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
  EXPECT_EQ(Journal::list(h.fs()), std::vector<std::string>{"linux-vm"});
}

TEST(HostHandover, RefusesGroupOpenedByAnotherProcess) {
  SimHost h;
  h.add_process(4242, "qemu-system-x86", "/dev/vfio/16");
  expect_refused(h, seed_config(), Exit::kHostDirty,
                 "IOMMU group 16 is in use: PID 4242 (qemu-system-x86)");
}

TEST(HostHandover, ModuleThatWillNotUnloadRestoresHost) {
  SimHost h;
  h.pin_module("nvidia_uvm");  // a CUDA context nobody accounts for
  expect_refused(h, seed_config(), Exit::kFailed,
                 "kernel module nvidia_uvm is still in use after 10000 ms (refcnt 1)");
}

TEST(HostHandover, ModuleNeededByUnlistedModuleFailsAtOnce) {
  SimHost h;
  auto c = seed_config();
  c.gpu_modules = {"nvidia"};  // nvidia_modeset and nvidia_uvm still need it
  expect_refused(
      h, c, Exit::kFailed,
      "kernel module nvidia is needed by nvidia_modeset, nvidia_uvm, which the profile does not "
      "unload");
}

TEST(HostHandover, UnitThatDoesNotExistIsRefusedBeforeAnyChange) {
  SimHost h;
  auto c = seed_config();
  c.stop_units.push_back("sunshine.service");
  expect_refused(h, c, Exit::kUsage, "unit sunshine.service (in the units to stop) does not exist");
}

TEST(HostHandover, ProcessStillHoldingGpuStopsWithItsNameAndRestores) {
  SimHost h;
  h.add_process(5151, "obs", "/dev/nvidia0");
  expect_refused(h, seed_config(), Exit::kFailed,
                 "the GPU is still in use after 10000 ms: PID 5151 (obs) holds /dev/nvidia0");
}

TEST(HostHandover, FailingPrepareHookAbortsAndRestores) {
  TempDir tmp;
  SimHost h;
  auto c = seed_config();
  c.prepare_hook = tmp.script(
      "prepare", "echo \"$PASSLAUNCH_VM $PASSLAUNCH_PHASE $PASSLAUNCH_DEVICES\"; exit 3");
  c.release_hook = tmp.script("release", "echo \"$PASSLAUNCH_PHASE\" > " + tmp.path + "/released");
  expect_refused(h, c, Exit::kFailed,
                 "failed with status 3: win11 prepare 0000:01:00.0 0000:01:00.1 0000:01:00.2 "
                 "0000:01:00.3 0000:03:00.0");
  EXPECT_EQ(slurp(tmp.path + "/released"), "release\n");
}

TEST(HostHandover, StuckUnbindTimesOutAndKeepsJournalForRecover) {
  SimHost h;
  const auto before = h.snapshot();
  std::ofstream(h.root() + "/.sim/state/hang_unbind") << "";  // a driver stuck in remove()
  auto c = seed_config();
  c.unbind_timeout = std::chrono::milliseconds(200);
  HostEnv env = h.env();
  Handover handover(c, env);
  try {
    handover.prepare();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kEnvironment);
    EXPECT_NE(std::string(e.what()).find(
                  "unbinding 0000:01:00.1 from snd_hda_intel did not finish within 200 ms"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("an unbind is still pending"), std::string::npos)
        << e.what();
    EXPECT_EQ(e.hint(), "once the driver lets go (see `dmesg`), run `passlaunch recover win11`");
  }
  EXPECT_TRUE(Journal::open(h.fs(), "win11"));
  // The driver lets go: the pending write lands and unbinds the device.
  fsys::remove(h.root() + "/.sim/state/hang_unbind");
  for (int i = 0; i < 6000 && h.fs().readlink("/sys/bus/pci/devices/0000:01:00.1/driver"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_FALSE(h.fs().readlink("/sys/bus/pci/devices/0000:01:00.1/driver"));
  // This process never touches the stuck device again (on a real host its
  // sysfs files could block on the device lock for good)...
  EXPECT_THROW(recover("win11", env), Error);
  EXPECT_TRUE(Journal::open(h.fs(), "win11")) << "the journal is kept for a later recover";
  // ...`passlaunch recover`, a new process, restores everything.
  HostEnv fresh = h.env();
  recover("win11", fresh);
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
}

TEST(HostHandover, LiveJournalRefusesWithExit4AndStaleOneIsDiscarded) {
  SimHost h;
  Journal::create(h.fs(), "win11", {"0000:01:00.0"});
  {
    HostEnv env = h.env();
    Handover handover(seed_config(), env);
    try {
      handover.check_can_start();
      FAIL();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Exit::kHostDirty);
      EXPECT_EQ(e.hint(), "run `passlaunch recover win11`");
    }
  }
  h.set_boot_id("00000000-0000-0000-0000-000000000001");  // rebooted since
  HostEnv env = h.env();
  Handover handover(seed_config(), env);
  handover.check_can_start();
  EXPECT_TRUE(Journal::list(h.fs()).empty());
}

TEST(HostHandover, TornLastJournalLineIsIgnored) {
  SimHost h;
  auto j = Journal::create(h.fs(), "win11", {"0000:01:00.0"});
  j.append({{"step", "cpus"}, {"undo", "allowed_cpus"}, {"unit", "user.slice"}, {"cpus", ""}});
  std::ofstream(j.path(), std::ios::app) << "{\"step\":\"cpus\",\"undo\":\"allow";
  auto again = Journal::open(h.fs(), "win11");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->entries().size(), 1u);
  EXPECT_EQ(again->header()["vm"], "win11");
}

TEST(HostHandover, PlanListsEachStepForThisHost) {
  SimHost h;
  const auto before = h.snapshot();
  HostEnv env = h.env();
  auto lines = plan(seed_config(), env);
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  EXPECT_NE(text.find("1/7 check: host clean, IOMMU groups viable\n"), std::string::npos) << text;
  EXPECT_NE(
      text.find(
          "2/7 display:\n    stop display-manager.service\n    stop nvidia-persistenced.service\n"),
      std::string::npos)
      << text;
  EXPECT_NE(
      text.find(
          "3/7 consoles:\n    unbind vtcon1\n    unbind efi-framebuffer.0 from efi-framebuffer\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("    load vfio-pci\n"), std::string::npos) << text;
  EXPECT_NE(text.find("    unbind 0000:01:00.1 from snd_hda_intel\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("00:1d.0"), std::string::npos) << "the bridge stays on pcieport\n" << text;
  EXPECT_NE(text.find("    cpu0 governor powersave -> performance\n"), std::string::npos) << text;
  EXPECT_NE(text.find("7/7 hooks: skipped (no hooks in the profile)"), std::string::npos) << text;
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
}

TEST(HostHandover, StepsThatDoNotApplyAreSkippedAndLogged) {
  SimHost h;
  const auto before = h.snapshot();
  HandoverConfig c;
  c.vm_name = "nas";
  c.pci_addresses = {"0000:03:00.0"};  // the NVMe alone; its root port stays
  c.display_manager = "";
  c.unbind_vtconsoles = false;
  c.unbind_framebuffer = false;
  std::ostringstream log;
  HostEnv env = h.env(&log);
  Handover handover(c, env);
  handover.prepare();
  for (const char* line :
       {"prepare 3/7 consoles: skipped (no bound virtual console or framebuffer)",
        "prepare 4/7 modules: skipped (no GPU modules in the profile)",
        "prepare 6/7 cpus: skipped (no host CPU isolation or governor in the profile)",
        "prepare 7/7 hooks: skipped (no hooks in the profile)"}) {
    EXPECT_NE(log.str().find(line), std::string::npos) << line << "\n" << log.str();
  }
  EXPECT_EQ(driver(h, "0000:03:00.0"), "vfio-pci");
  EXPECT_EQ(driver(h, "0000:00:1d.0"), "pcieport");
  EXPECT_TRUE(h.services().is_active("display-manager.service"));
  handover.release();
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
}

TEST(HostHandover, DryRunPlanLeavesStaleJournalAlone) {
  SimHost h;
  Journal::create(h.fs(), "win11", {"0000:01:00.0"});
  h.set_boot_id("00000000-0000-0000-0000-000000000002");
  HostEnv env = h.env();
  auto lines = plan(seed_config(), env);
  EXPECT_EQ(lines.front(), "1/7 check: host clean, IOMMU groups viable");
  EXPECT_EQ(Journal::list(h.fs()), std::vector<std::string>{"win11"});
}

TEST(HostHandover, DryRunPlanShowsRefusal) {
  SimHost h;
  Journal::create(h.fs(), "win11", {"0000:01:00.0"});
  HostEnv env = h.env();
  auto lines = plan(seed_config(), env);
  EXPECT_TRUE(lines.front().starts_with(
      "1/7 check: WOULD REFUSE: the host holds changes of an earlier run of win11"))
      << lines.front();
}

}  // namespace
}  // namespace pl::host

namespace pl::host {
namespace {

// A module that is still used at release (vfio held by a soft dependency such
// as vfio_iommu_type1, or by another VM) stays loaded: the release succeeds.
TEST(HostHandover, ModuleStillInUseAtReleaseIsLeftLoaded) {
  SimHost h;
  HostEnv env = h.env();
  std::ostringstream log;
  env.log = &log;
  Handover handover(seed_config(), env);
  handover.prepare();
  ASSERT_TRUE(h.fs().exists("/sys/module/vfio"));
  {  // someone else holds it too
    std::string path = h.root() + "/sys/module/vfio/refcnt";
    int refs = 0;
    std::ifstream(path) >> refs;
    std::ofstream(path) << refs + 1 << "\n";
  }
  handover.release();
  EXPECT_FALSE(Journal::open(h.fs(), "win11")) << "released";
  EXPECT_TRUE(h.fs().exists("/sys/module/vfio"));
  EXPECT_NE(log.str().find("kernel module vfio is in use (refcnt 1); left loaded"),
            std::string::npos)
      << log.str();
  EXPECT_EQ(driver(h, "0000:01:00.0"), "nvidia") << "the GPU is back on its host driver";
}

}  // namespace
}  // namespace pl::host

namespace pl::host {
namespace {

// A release hook runs once, even when the replay that ran it failed later and
// recover has to run again.
TEST(HostHandover, ReleaseHookIsNotRunAgainByALaterRecover) {
  SimHost h;
  HostEnv env = h.env();
  std::string counter = h.root() + "/hook-runs";
  std::string hook = h.root() + "/release-hook";
  std::ofstream(hook) << "#!/bin/sh\necho run >> " << counter << "\n";
  fsys::permissions(hook, fsys::perms::owner_all);
  {
    Journal j = Journal::create(h.fs(), "vmx", {});
    j.append({{"step", "modules"}, {"undo", "load_module"}, {"module", "no_such_module"}});
    j.append({{"step", "hooks"}, {"undo", "hook"}, {"path", hook}});
  }
  auto runs = [&] {
    std::ifstream in(counter);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) ++n;
    return n;
  };
  EXPECT_THROW(recover("vmx", env), Error);  // the module inverse fails
  EXPECT_EQ(runs(), 1);
  EXPECT_THROW(recover("vmx", env), Error);  // still failing; the hook is not run again
  EXPECT_EQ(runs(), 1);
  EXPECT_TRUE(Journal::open(h.fs(), "vmx")) << "kept until everything is undone";
}

}  // namespace
}  // namespace pl::host
