// `passlaunch run`'s host promises against the simulated host (tests/sim_host.h):
// a refused hook changes nothing (exit 2), a restore that fails is exit 4 with
// the hint to recover and `recover` then restores, and rebind_vtconsoles:false
// leaves the consoles unbound, with no rebind in the journal.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "host/from_profile.h"
#include "host/handover.h"
#include "host/journal.h"
#include "profile/profile.h"
#include "run/launcher.h"
#include "sim_host.h"
#include "test_util.h"

namespace pl {
namespace {

namespace fs = std::filesystem;

/// The simulated GPU's whole group plus the NVMe controller, with `host` as
/// the profile's "host" member.
Profile sim_profile(const std::string& name, const std::string& host) {
  return parse_profile(R"({"name": ")" + name + R"(", "accel": "kvm", "memory": {"size_mib": 128},
      "cpu": {"model": "host", "vcpus": 1, "features": ["-arch-capabilities"]},
      "devices": [{"type": "vfio", "address": "0000:01:00.0"}, {"type": "vfio", "address": "0000:01:00.1"},
                  {"type": "vfio", "address": "0000:01:00.2"}, {"type": "vfio", "address": "0000:01:00.3"},
                  {"type": "vfio", "address": "0000:03:00.0"}],
      "host": {"stop_units": ["nvidia-persistenced.service"],
               "gpu_modules": ["nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia"])" +
                           host + "}}",
                       name + ".json");
}

/// An executable shell script at `path`.
void write_script(const std::string& path, const std::string& body, mode_t mode = 0755) {
  std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
  ::chmod(path.c_str(), mode);
}

class RunRestore : public ::testing::Test {
 protected:
  void SetUp() override {
    // The journal lives under the simulated root, never in a state root of a
    // test that ran before in this process.
    ::unsetenv("PASSLAUNCH_STATE_DIR");
    ::setenv("XDG_RUNTIME_DIR", runtime_.path().c_str(), 1);
    env_.emplace(h_.env(&log_));
    options_.host_root = h_.root();
    options_.host_env = &*env_;
    options_.quiet = true;
  }
  /// run_vm's error (it must throw).
  Error run_error(const Profile& p) {
    try {
      run_vm(p, options_);
    } catch (const Error& e) {
      return e;
    }
    ADD_FAILURE() << "run_vm did not fail";
    return Error(Exit::kOk, "");
  }
  host::sim::SimHost h_;
  std::ostringstream log_;
  std::optional<host::HostEnv> env_;
  test::TempDir runtime_;
  test::TempDir dir_;
  RunOptions options_;
};

// A hook that is not executable is refused before the host changes: exit 2,
// nothing touched, no journal, no runtime dir. No QEMU is started.
TEST_F(RunRestore, NonExecutableHookIsExitTwoBeforeAnythingChanges) {
  const auto before = h_.snapshot();
  std::string hook = dir_.path("prepare.sh");
  write_script(hook, "exit 0", 0644);
  Error e = run_error(sim_profile("hookvm", R"(, "hooks": {"prepare": ")" + hook + R"("})"));
  EXPECT_EQ(e.code(), Exit::kUsage) << e.what();
  EXPECT_NE(std::string(e.what()).find(hook), std::string::npos) << e.what();
  EXPECT_NE(e.hint().find("must be an executable file"), std::string::npos) << e.hint();
  EXPECT_EQ(host::sim::diff(before, h_.snapshot()), "") << log_.str();
  EXPECT_FALSE(host::Journal::open(h_.fs(), "hookvm"));
  EXPECT_EQ(log_.str().find("prepare 2/"), std::string::npos) << "no step ran\n" << log_.str();
  EXPECT_FALSE(fs::exists(runtime_.path() + "/passlaunch/hookvm"));
}

// rebind_vtconsoles:false: the consoles are unbound and stay so after the
// release, because the journal holds no rebind for them (so `recover` will
// not rebind them either); everything else comes back.
TEST_F(RunRestore, RebindVtconsolesFalseLeavesConsolesUnboundAndOutOfTheJournal) {
  // A GPU that is not the boot VGA: on 6.x, vfio-pci taking the boot VGA
  // removes the boot framebuffer and vtcon1 for good (sysfb_disable), which
  // would leave nothing to rebind or leave unbound.
  std::ofstream(h_.root() + "/sys/bus/pci/devices/0000:01:00.0/boot_vga") << "0\n";
  const auto before = h_.snapshot();
  Profile p = sim_profile("vtvm", R"(, "rebind_vtconsoles": false)");
  host::Handover handover(host::handover_config(p, h_.fs()), *env_);
  handover.prepare();
  auto journal = host::Journal::open(h_.fs(), "vtvm");
  ASSERT_TRUE(journal);
  for (const auto& e : journal->entries()) {
    EXPECT_EQ(e.dump().find("vtconsole"), std::string::npos) << e.dump();
  }
  EXPECT_EQ(h_.fs().read_trimmed("/sys/class/vtconsole/vtcon1/bind"), "0");
  EXPECT_NE(log_.str().find("unbind vtcon1"), std::string::npos) << log_.str();
  handover.release();
  EXPECT_EQ(h_.fs().read_trimmed("/sys/class/vtconsole/vtcon1/bind"), "0") << "left unbound";
  EXPECT_EQ(host::sim::diff(before, h_.snapshot()),
            "~ /sys/devices/virtual/vtconsole/vtcon1/bind F:1\n -> F:0\n\n")
      << "only the console differs\n"
      << log_.str();

  // The default rebinds them, journaled.
  Profile q = sim_profile("vtvm", "");
  host::Handover again(host::handover_config(q, h_.fs()), *env_);
  std::ofstream(h_.root() + "/sys/class/vtconsole/vtcon1/bind") << "1\n";
  const auto bound = h_.snapshot();
  again.prepare();
  bool journaled = false;
  auto rebind = host::Journal::open(h_.fs(), "vtvm");
  ASSERT_TRUE(rebind);
  for (const auto& e : rebind->entries()) {
    journaled |= e.dump().find("/sys/class/vtconsole/vtcon1/bind") != std::string::npos;
  }
  EXPECT_TRUE(journaled);
  again.release();
  EXPECT_EQ(host::sim::diff(bound, h_.snapshot()), "") << log_.str();
}

/// Starts QEMU (under KVM, paused): the suite name says so (tests/CMakeLists.txt).
class RunRestoreQemu : public RunRestore {};

// The handover happens, QEMU cannot start (no vfio here), and the release
// hook fails while giving the host back: exit 4 with the hint to recover,
// the journal kept. Once the hook works, `recover` restores everything.
TEST_F(RunRestoreQemu, FailedRestoreIsExitFourWithRecoverHintAndRecoverRestores) {
  if (!test::kvm_works()) GTEST_SKIP() << "passthrough profiles need KVM";
  const auto before = h_.snapshot();
  std::string flag = dir_.path("hook-fails");
  std::ofstream(flag) << "";
  std::string hook = dir_.path("release.sh");
  write_script(hook, "[ -e " + flag + " ] && { echo cannot release; exit 1; }; exit 0");
  Error e = run_error(sim_profile("restorevm", R"(, "hooks": {"release": ")" + hook + R"("})"));
  EXPECT_EQ(e.code(), Exit::kHostDirty) << e.what();
  EXPECT_NE(std::string(e.what()).find("restoring the host failed"), std::string::npos) << e.what();
  EXPECT_NE(e.hint().find("passlaunch recover restorevm"), std::string::npos) << e.hint();
  EXPECT_TRUE(host::Journal::open(h_.fs(), "restorevm")) << "the journal is kept for recover";

  fs::remove(flag);
  auto done = host::recover("restorevm", *env_);
  EXPECT_EQ(done, std::vector<std::string>{"restorevm"}) << log_.str();
  EXPECT_FALSE(host::Journal::open(h_.fs(), "restorevm"));
  // Less what the kernel removed for good (the boot framebuffer, vtcon1).
  EXPECT_EQ(host::sim::diff(h_.after_restore(before), h_.snapshot()), "") << log_.str();
}

}  // namespace
}  // namespace pl
