// From a profile's host section to the handover, on the simulated host.
#include <gtest/gtest.h>

#include "core/error.h"
#include "host/from_profile.h"
#include "host/handover.h"
#include "profile/profile.h"
#include "sim_host.h"

namespace pl::host {
namespace {

constexpr const char* kSeedProfile = R"({
  "name": "win11",
  "memory": { "size_mib": 1024 },
  "cpu": { "vcpus": 4 },
  "pinning": { "vcpus": "0-3", "emulator": "4" },
  "devices": [
    { "type": "vfio", "address": "0000:01:00.0" },
    { "type": "vfio", "address": "0000:01:00.1" },
    { "type": "vfio", "address": "0000:01:00.2", "attach": false },
    { "type": "vfio", "address": "0000:01:00.3", "attach": false }
  ],
  "host": {
    "stop_units": [ "nvidia-persistenced.service" ],
    "gpu_modules": [ "nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia" ],
    "isolate_cpus": true,
    "governor": "performance"
  }
})";

TEST(HostProfile, HostSectionBecomesHandoverConfig) {
  sim::SimHost h;
  Profile p = parse_profile(kSeedProfile, "win11.json", {.files = false});
  HandoverConfig c = handover_config(p, h.fs());
  EXPECT_EQ(c.vm_name, "win11");
  EXPECT_EQ(c.pci_addresses, (std::vector<std::string>{"0000:01:00.0", "0000:01:00.1",
                                                       "0000:01:00.2", "0000:01:00.3"}));
  EXPECT_EQ(c.display_manager, "display-manager.service");
  EXPECT_EQ(c.isolate_host_cpus, "4-7");  // online 0-7 minus the vCPUs 0-3
  EXPECT_EQ(c.vm_cpus, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(c.governor, "performance");

  const auto before = h.snapshot();
  HostEnv env = h.env();
  Handover handover(c, env);
  handover.prepare();
  EXPECT_EQ(read_pci_device(h.fs(), "0000:01:00.3")->driver, "vfio-pci");  // attach=false too
  EXPECT_EQ(h.services().allowed_cpus("user.slice"), "4-7");
  handover.release();
  EXPECT_EQ(sim::diff(h.after_restore(before), h.snapshot()), "");
}

TEST(HostProfile, IsolationWithoutCpusLeftForHostIsRefused) {
  sim::SimHost h;
  std::string text = kSeedProfile;
  auto swap = [&](const std::string& from, const std::string& to) {
    text.replace(text.find(from), from.size(), to);
  };
  swap(R"("vcpus": 4)", R"("vcpus": 8)");
  swap(R"("vcpus": "0-3")", R"("vcpus": "0-7")");
  Profile p = parse_profile(text, "win11.json", {.files = false});
  try {
    handover_config(p, h.fs());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kUsage);
    EXPECT_EQ(std::string(e.what()),
              "win11.json: host.isolate_cpus: the vCPUs take every online CPU (0-7), none is left "
              "for the host");
  }
}

}  // namespace
}  // namespace pl::host
