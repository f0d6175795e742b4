// `passlaunch run`: the whole life of one VM, as ordered steps:
//   load profile -> check the pin plan against the host -> plan host changes
//   -> build argv -> spawn QEMU paused -> connect QMP -> pin every thread
//   -> read the pins back -> cont -> supervise -> restore the host.
#pragma once

#include <chrono>
#include <string>

#include "profile/profile.h"

namespace pl {
namespace host {
struct HostEnv;
}

struct RunOptions {
  std::string host_root = "/";  ///< sysfs/procfs root (tests use a simulated host)
  bool quiet = false;           ///< no progress lines on stderr
  /// Records the pinned threads' latency for the VM's whole life and writes
  /// the report (the JSON of `passlaunch latency`) here when it ends.
  std::string latency_log;
  std::chrono::milliseconds latency_interval{10};
  /// The host to hand over and restore; null: the real one under host_root.
  /// Tests pass a simulated host (its filesystem under host_root).
  host::HostEnv* host_env = nullptr;
  /// Members of this group (when it exists) may find the VM and read its
  /// status (`list`, `ctl NAME status`); nothing else (run/control.h).
  std::string status_group = "passlaunch";
};

/// Runs the VM until it ends; returns the exit code (see README "Exit codes").
/// Throws pl::Error for failures before the guest starts.
int run_vm(const Profile& profile, const RunOptions& options);

}  // namespace pl
