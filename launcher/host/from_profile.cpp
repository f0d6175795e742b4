#include "host/from_profile.h"

#include <algorithm>

#include "core/cpulist.h"
#include "core/error.h"

namespace pl::host {

HandoverConfig handover_config(const Profile& profile, const HostFs& fs) {
  HandoverConfig c;
  c.vm_name = profile.name;
  for (const auto& d : profile.devices) c.pci_addresses.push_back(d.address.str());
  const HostConfig& h = profile.host;
  c.display_manager = h.display_manager;
  c.stop_units = h.stop_units;
  c.gpu_modules = h.gpu_modules;
  c.unbind_vtconsoles = h.unbind_vtconsoles;
  c.unbind_framebuffer = h.unbind_framebuffer;
  c.rebind_vtconsoles = h.rebind_vtconsoles;
  c.prepare_hook = h.prepare_hook;
  c.release_hook = h.release_hook;
  c.vm_cpus = profile.pinning.all_vcpu_cpus();
  std::sort(c.vm_cpus.begin(), c.vm_cpus.end());
  c.vm_cpus.erase(std::unique(c.vm_cpus.begin(), c.vm_cpus.end()), c.vm_cpus.end());
  if (!h.governor.empty()) {
    if (c.vm_cpus.empty()) {
      throw Error(Exit::kUsage,
                  profile.file + ": host.governor: needs pinning.vcpus to know the VM's CPUs");
    }
    c.governor = h.governor;
  }
  if (h.isolate_cpus) {
    if (c.vm_cpus.empty()) {
      throw Error(Exit::kUsage,
                  profile.file + ": host.isolate_cpus: needs pinning.vcpus to know the VM's CPUs");
    }
    auto online_text = fs.read_trimmed("/sys/devices/system/cpu/online");
    auto online = online_text ? parse_cpulist(*online_text) : std::nullopt;
    if (!online) {
      throw Error(Exit::kEnvironment,
                  "cannot read the online CPUs from " + fs.real("/sys/devices/system/cpu/online"));
    }
    std::vector<int> rest;
    for (int cpu : *online) {
      if (!std::binary_search(c.vm_cpus.begin(), c.vm_cpus.end(), cpu)) rest.push_back(cpu);
    }
    if (rest.empty()) {
      throw Error(Exit::kUsage,
                  profile.file + ": host.isolate_cpus: the vCPUs take every online CPU (" +
                      *online_text + "), none is left for the host",
                  "leave some CPUs out of pinning.vcpus, or set isolate_cpus to false");
    }
    c.isolate_host_cpus = format_cpulist(rest);
  }
  return c;
}

}  // namespace pl::host
