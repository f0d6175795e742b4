// What `init` and `import` learn from the host: CPU cores, memory, the GPU's
// driver modules, the display manager, OVMF from QEMU's firmware descriptors.
// Everything is read through a HostFs (sysfs/procfs under a movable root).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "host/host_fs.h"

namespace pl::import {

/// A physical core: its CPUs in sibling order ("0,1").
struct Core {
  std::vector<int> cpus;
};

struct CpuLayout {
  std::vector<Core> vcpu_cores;  ///< cores for the guest
  std::vector<int> host_cpus;    ///< left to the host, the emulator and iothreads
  std::string why;               ///< how the split was chosen
};

/// Whole physical cores for the guest, SMT siblings together. On a hybrid
/// CPU (sysfs cpu_core/cpu_atom) the performance cores go to the guest and the
/// efficiency cores stay with the host; otherwise every core but CPU 0's.
CpuLayout plan_cpus(const host::HostFs& fs);

/// MemTotal from /proc/meminfo in MiB (0 when unreadable).
uint64_t host_memory_mib(const host::HostFs& fs);

/// The module chain of the driver bound to `gpu`, in unload order (holders
/// first, from /sys/module/*/holders): nvidia_uvm, nvidia_drm, nvidia_modeset,
/// nvidia. Empty when the GPU has no driver or is on vfio-pci already.
std::vector<std::string> gpu_modules(const host::HostFs& fs, const std::string& gpu,
                                     std::string* why);

/// The display manager unit in use ("display-manager.service" when systemd's
/// alias exists, else the unit of a running display manager); "" for none.
std::string display_manager(const host::HostFs& fs, std::string* why);

/// An OVMF build from the firmware descriptors (/etc/qemu/firmware overrides
/// /usr/share/qemu/firmware by file name, first in name order wins).
struct OvmfChoice {
  std::string descriptor;  ///< the descriptor file it came from
  std::string code;
  std::string vars_template;
  bool secure_boot = false;
  bool enrolled_keys = false;
  bool requires_smm = false;
};
/// Features each nullopt: "don't care"; true/false: must (not) have it.
std::optional<OvmfChoice> find_ovmf(const host::HostFs& fs, std::optional<bool> secure_boot,
                                    std::optional<bool> enrolled_keys);

/// The bridge a libvirt network names (/etc/libvirt/qemu/networks/NAME.xml,
/// <bridge name=...>) when that bridge exists on the host; "" otherwise.
std::string libvirt_network_bridge(const host::HostFs& fs, const std::string& network);

/// The interface of the default route (/proc/net/route), "" for none.
std::string default_route_interface(const host::HostFs& fs);

}  // namespace pl::import
