// `passlaunch run` with passthrough devices against the simulated host: the
// handover really happens before QEMU starts, and the host comes back exactly
// when QEMU fails (there is no vfio here, so QEMU cannot realize the devices).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "host/journal.h"
#include "profile/profile.h"
#include "run/launcher.h"
#include "sim_host.h"
#include "test_util.h"

namespace pl {
namespace {

TEST(RunHostQemu, HandoverBeforeQemuAndExactRestoreWhenQemuFails) {
  if (!test::kvm_works()) GTEST_SKIP() << "passthrough profiles need KVM";
  host::sim::SimHost h;
  const auto before = h.snapshot();
  std::ostringstream log;
  host::HostEnv env = h.env(&log);
  test::TempDir runtime;
  ::setenv("XDG_RUNTIME_DIR", runtime.path().c_str(), 1);

  Profile p = parse_profile(R"({"name": "simgpu", "accel": "kvm", "memory": {"size_mib": 128},
      "cpu": {"model": "host", "vcpus": 1, "features": ["-arch-capabilities"]},
      "devices": [{"type": "vfio", "address": "0000:01:00.0"}, {"type": "vfio", "address": "0000:01:00.1"},
                  {"type": "vfio", "address": "0000:01:00.2"}, {"type": "vfio", "address": "0000:01:00.3"},
                  {"type": "vfio", "address": "0000:03:00.0"}],
      "host": {"stop_units": ["nvidia-persistenced.service"],
               "gpu_modules": ["nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia"]}})",
                            "simgpu.json");
  RunOptions o;
  o.host_root = h.root();
  o.host_env = &env;
  o.quiet = true;
  try {
    run_vm(p, o);
    FAIL() << "QEMU cannot start vfio-pci devices here";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kStartupFailed) << e.what();
    EXPECT_NE(std::string(e.what()).find("vfio"), std::string::npos) << e.what();
    if (std::getenv("PL_VERBOSE")) std::cerr << e.what() << "\n";
  }
  // The handover happened (every step ran), then release undid all of it.
  EXPECT_NE(log.str().find("prepare 5/7 vfio"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("release"), std::string::npos) << log.str();
  EXPECT_FALSE(host::Journal::open(h.fs(), "simgpu")) << "journal replayed and removed";
  EXPECT_EQ(host::sim::diff(h.after_restore(before), h.snapshot()), "") << log.str();
  EXPECT_FALSE(std::filesystem::exists(runtime.path() + "/passlaunch/simgpu"));
  if (std::getenv("PL_VERBOSE")) std::cerr << log.str();
}

}  // namespace
}  // namespace pl
