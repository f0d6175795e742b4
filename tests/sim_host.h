// A simulated host for the handover tests: a temporary directory laid out
// like real sysfs/procfs (symlinks, "0x..." attributes), a HostFs whose
// write() applies the kernel's rules, a module loader and a service manager
// that change the tree the way the kernel and systemd would.
//
// All state lives in files under the root, none in these objects, so a
// forked child can change the host, be SIGKILLed, and the parent sees
// exactly what the child left behind.
//
// Kernel and systemd rules emulated (docs/host.md lists each with its source):
//  - /sys/bus/pci/drivers/D/unbind removes the device's `driver` link (ENODEV
//    when it is not bound to D); D/bind binds when D matches. An unbind
//    blocks while a process holds the device's sound nodes, DRM nodes, or
//    (on vfio-pci) its /dev/vfio/GROUP; a probe blocks while
//    /.sim/state/hang_probe names the device.
//  - driver_override: "(null)" when unset; drivers_probe binds an unbound
//    device to the override driver only, else to the first loaded driver
//    whose id table matches (vfio-pci: its ids= option and new_id).
//  - loading a module loads its dependencies, then it, then its "post:" soft
//    dependencies (vfio -> vfio_iommu_type1; iommufd from 6.2); its drivers
//    take every unbound matching device; unloading unbinds them. A module
//    with holders or a non-zero refcnt refuses to unload with EAGAIN, as
//    delete_module does. refcnt counts holders and users.
//  - vtconsole bind files, platform framebuffer bind/unbind, cpufreq
//    governors that accept only the available ones; from 6.0 on vfio-pci
//    binding the boot VGA removes the boot framebuffer and vtcon1 for good.
//  - units own processes (/proc/PID/fd links to device nodes) and module
//    references; a stop passes through "deactivating" for `stop_ms`, and a
//    session process with `linger_ms` outlives the unit by that long; time
//    passes only in Clock::sleep_for. Starting a unit takes both again.
//  - AllowedCPUs narrows along a process's slice path (effective_cpus());
//    move_to_scope/leave_scope place a process in machine.slice and back.
//  - block devices below the NVMe (nvme0n1, p1, p2) with mountinfo, swaps
//    and holders the tests can fill in.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "host/host_env.h"

namespace pl::host::sim {

/// Path -> "D" (directory), "L:target" (link) or "F:contents" (file).
using Snapshot = std::map<std::string, std::string>;

class SimHost {
 public:
  /// The seed's machine (groups 13, 14, 16, a root port in group 16, other
  /// devices), NVIDIA driver stack loaded, display manager running.
  /// `vfio_ids` is the vfio-pci ids= option (as if in /etc/modprobe.d);
  /// `kernel` the release (6.2 on: vfio needs iommufd; 5.19 on: group
  /// viability by driver_managed_dma).
  explicit SimHost(const std::string& vfio_ids = "", const std::string& kernel = "6.1.0-13-amd64");
  ~SimHost();
  SimHost(const SimHost&) = delete;
  SimHost& operator=(const SimHost&) = delete;

  const std::string& root() const { return root_; }
  HostEnv env(std::ostream* log = nullptr);
  HostFs& fs() { return *fs_; }
  ServiceManager& services() { return *services_; }
  ModuleLoader& modules() { return *modules_; }

  /// Everything under the root except /var/lib/passlaunch (the journal).
  Snapshot snapshot() const;

  // Scenario knobs.
  /// A process outside any unit that holds `file` open.
  void add_process(int pid, const std::string& comm, const std::string& file);
  void remove_process(int pid);
  /// Binds a device to `driver` (registered if it is not: pci-stub,
  /// shpchp), or leaves it unbound ("").
  void set_driver(const std::string& address, const std::string& driver);
  /// Writes a file under the root (a mountinfo line, a holders entry).
  void put_file(const std::string& host_path, const std::string& text);
  /// A relative symlink under the root, as sysfs makes them.
  void put_link(const std::string& host_link, const std::string& host_target);
  /// A reference on a module that no process accounts for (it will not unload).
  void pin_module(const std::string& module);
  /// Adds a PCI device that belongs to no IOMMU group.
  void add_groupless_device(const std::string& address);
  void set_boot_id(const std::string& id);

  // Observations.
  /// `before` as a complete restore leaves it: itself, less what the kernel
  /// removed for good (the boot framebuffer and its vtcon once vfio-pci took
  /// the boot VGA on 6.0+, see sysfb_disable in sim_host.cpp).
  Snapshot after_restore(const Snapshot& before) const;
  /// The CPUs a process may run on: its cgroup's cpuset.cpus.effective, the
  /// intersection of AllowedCPUs along its slice path. Processes the
  /// simulation does not place (the test itself, the launcher) start in
  /// user.slice/session-1.scope.
  std::vector<int> effective_cpus(pid_t pid) const;

 private:
  std::string root_;
  std::unique_ptr<HostFs> fs_;
  std::unique_ptr<ServiceManager> services_;
  std::unique_ptr<ModuleLoader> modules_;
  std::unique_ptr<Clock> clock_;
};

/// Differences between two snapshots, one line each ("" when equal).
std::string diff(const Snapshot& a, const Snapshot& b);

}  // namespace pl::host::sim
