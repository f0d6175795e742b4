// `passlaunch run`: the whole life of one VM, as ordered steps:
//   load profile -> check the pin plan against the host -> plan host changes
//   -> build argv -> spawn QEMU paused -> connect QMP -> pin every thread
//   -> read the pins back -> cont -> supervise -> restore the host.
#pragma once

#include <string>

#include "profile/profile.h"

namespace pl {

struct RunOptions {
  std::string host_root = "/";  ///< sysfs/procfs root (tests use a simulated host)
  bool quiet = false;           ///< no progress lines on stderr
};

/// Runs the VM until it ends; returns the exit code (see README "Exit codes").
/// Throws pl::Error for failures before the guest starts.
int run_vm(const Profile& profile, const RunOptions& options);

}  // namespace pl
