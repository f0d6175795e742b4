// Single-GPU host handover: take the only GPU away from the host before the
// VM starts and give it back afterwards, crash-safely.
//
// prepare() runs these steps in order (docs/host.md explains each):
//   1 check     refuse when the host is dirty or a device is held elsewhere
//   2 display   stop the display manager and extra units; nobody may hold the GPU
//   3 consoles  unbind virtual consoles and the EFI/simple framebuffer
//   4 modules   unload the GPU driver modules in dependency order
//   5 vfio      bind every member of the passed IOMMU groups to vfio-pci
//   6 cpus      optional: confine host slices to non-VM CPUs, set governors
//   7 hooks     the user's prepare hook
// Before each change, its inverse goes to the journal (journal.h). release()
// and recover() replay the inverses newest first, so release undoes exactly
// what prepare did, and a crash at any point is undone by `passlaunch recover`.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "host/host_env.h"
#include "host/journal.h"
#include "host/pci.h"

namespace pl::host {

/// What the handover needs from a profile. Plain data, so the host library does
/// not depend on the profile model.
struct HandoverConfig {
  std::string vm_name;
  std::vector<std::string> pci_addresses;  ///< devices to pass ("0000:01:00.0" or "01:00.0")
  std::string display_manager = "display-manager.service";  ///< "" = leave it alone
  std::vector<std::string> stop_units;   ///< further units or user sessions to stop
  std::vector<std::string> gpu_modules;  ///< e.g. nvidia_uvm, nvidia_drm, nvidia_modeset, nvidia
  bool unbind_vtconsoles = true;
  bool unbind_framebuffer = true;
  /// Rebind the consoles on release (a kernel 5.19 regression crashes on vtcon
  /// rebind). When false, their unbinding is not journaled and not undone.
  bool rebind_vtconsoles = true;
  std::optional<std::string> isolate_host_cpus;  ///< cpulist for system/user slices, init.scope
  std::vector<int> vm_cpus;                      ///< CPUs whose governor is changed
  std::optional<std::string> governor;           ///< e.g. "performance"
  std::string prepare_hook, release_hook;        ///< executables; "" = none
  std::chrono::milliseconds unbind_timeout{10000};
  std::chrono::milliseconds unit_timeout{30000};
  std::chrono::milliseconds module_timeout{10000};
  /// How long processes may go on holding the GPU (or its sound device) once
  /// the units are stopped: a session's processes can outlive their unit.
  std::chrono::milliseconds holder_timeout{10000};
};

/// The steps of prepare, in order (release runs them backwards).
enum class Step { kCheck, kDisplay, kConsoles, kModules, kVfio, kCpus, kHooks };
inline constexpr int kStepCount = 7;
const char* step_name(Step s);

class Handover {
 public:
  /// Throws pl::Error (exit 2) for an invalid config.
  Handover(HandoverConfig config, HostEnv& env);

  /// Step 1 alone, changing nothing: exit 4 when the host holds unrestored
  /// changes of this VM or another VM holds a device of these groups; exit 2
  /// for a device that is absent, a group member that is not passed through,
  /// a unit or hook that does not exist. A journal of an earlier boot is
  /// deleted, unless `discard_stale` is false (dry runs), which ignores it.
  void check_can_start(bool discard_stale = true);
  /// Steps 1-7. On failure restores the host and rethrows (the message says so).
  void prepare();
  /// Undoes everything prepare did (journal replay), newest first.
  void release();

  const HandoverConfig& config() const { return config_; }
  /// The groups of the passed devices (valid after check_can_start).
  const std::vector<IommuGroup>& groups() const { return groups_; }

 private:
  void run_step(Step step, Journal& journal);

  HandoverConfig config_;
  HostEnv& env_;
  std::vector<IommuGroup> groups_;
};

/// Throws pl::Error(kHostDirty) when `vm` holds unrestored changes of this
/// boot (a live journal). A journal of an earlier boot is deleted and its path
/// returned, unless `discard_stale` is false (dry runs), which leaves it.
std::optional<std::string> refuse_unrestored(HostFs& fs, const std::string& vm,
                                             bool discard_stale = true);

/// Replays the journal of `vm` as the end of a run (Handover::release for a
/// VM without passthrough devices, whose journal holds only its taps).
void release_journal(const std::string& vm, HostEnv& env);

/// Replays the journal of `vm` (every VM with a journal when empty), newest
/// change first, then deletes it. Idempotent: running it again, or after a
/// crash during release, is harmless. A journal from an earlier boot is
/// discarded. Returns the VMs recovered; throws (exit 1) when some inverse
/// failed, keeping the journal for another try.
std::vector<std::string> recover(const std::string& vm, HostEnv& env);

/// `run --dry-run`: the host plan for this host, one line per step and one
/// indented line per change, without changing anything.
std::vector<std::string> plan(const HandoverConfig& config, HostEnv& env);

}  // namespace pl::host
