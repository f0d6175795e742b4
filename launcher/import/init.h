// `passlaunch init`: a profile for this host from what is there (sysfs/procfs
// under the host root): the GPU's whole IOMMU group, the GPU driver's module
// chain, the display manager, vCPUs on whole cores, half the memory, OVMF.
#pragma once

#include <string>
#include <vector>

#include "host/host_fs.h"
#include "import/profile_writer.h"

namespace pl::import {

struct InitOptions {
  std::string gpu;                   ///< the GPU's PCI address
  std::vector<std::string> devices;  ///< further functions to pass through
  std::string name = "win11";
  std::string os = "win11";  ///< win11 (TPM, Secure Boot), win10, linux
};

struct InitResult {
  CommentedProfile profile;
  std::vector<std::string> notes;  ///< what was found and chosen, for stderr
};

/// Throws pl::Error (Exit::kUsage) for a bad or absent address, a GPU that is
/// not a display controller, a device in no IOMMU group.
InitResult init_profile(const host::HostFs& fs, const InitOptions& options);

/// The `host` section for a GPU at `gpu` (display manager, modules, consoles),
/// with a comment on each setting; `why` collects one line per setting.
void add_host_settings(CommentedProfile& p, const host::HostFs& fs, const std::string& gpu,
                       std::vector<std::pair<std::string, std::string>>* why);

}  // namespace pl::import
