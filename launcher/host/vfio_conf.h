// What a host needs configured once, as text: the /etc/modprobe.d/vfio.conf
// lines that let vfio-pci claim the passed-through IOMMU groups at boot, and
// the kernel command line that turns the IOMMU on.
#pragma once

#include <string>
#include <vector>

#include "host/host_fs.h"
#include "host/pci.h"

namespace pl::host {

/// The devices the given addresses drag along: every member of their IOMMU
/// groups, in group order, bridges included. Throws pl::Error (exit 2) for an
/// address that is malformed or absent, and (exit 3) for a device in no group.
std::vector<IommuGroup> groups_of(const HostFs& fs, const std::vector<std::string>& addresses);

struct VfioConf {
  std::vector<std::string> ids;             ///< "10de:1e07", unique, group order, bridges excluded
  bool disable_vga = false;                 ///< a VGA device is among them
  std::vector<std::string> kernel_cmdline;  ///< {"intel_iommu=on", "iommu=pt"}
};

VfioConf make_vfio_conf(const HostFs& fs, const std::vector<std::string>& addresses);

/// The text printed by `passlaunch vfio-conf`.
std::string format_vfio_conf(const VfioConf& conf);

/// "intel_iommu=on" or "amd_iommu=on" from /proc/cpuinfo's vendor_id ("" when unknown).
std::string iommu_cmdline_option(const HostFs& fs);

}  // namespace pl::host
