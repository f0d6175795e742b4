#include "host/vfio_conf.h"

#include <algorithm>

#include "core/error.h"
#include "core/text.h"

namespace pl::host {

std::vector<IommuGroup> groups_of(const HostFs& fs, const std::vector<std::string>& addresses) {
  std::vector<IommuGroup> groups;
  for (const auto& text : addresses) {
    auto address = normalize_pci_address(text);
    if (!address) {
      throw Error(Exit::kUsage, "invalid PCI address \"" + text + "\"",
                  "expected DDDD:BB:DD.F or BB:DD.F, e.g. 0000:01:00.0");
    }
    auto dev = read_pci_device(fs, *address);
    if (!dev) {
      throw Error(Exit::kUsage, "PCI device " + *address + " does not exist on this host",
                  "list the devices with `passlaunch iommu`");
    }
    if (!dev->iommu_group) {
      throw Error(
          Exit::kEnvironment, "PCI device " + *address + " is in no IOMMU group",
          "enable the IOMMU: VT-d/AMD-Vi in the firmware and " +
              (iommu_cmdline_option(fs).empty() ? std::string("intel_iommu=on or amd_iommu=on")
                                                : iommu_cmdline_option(fs)) +
              " iommu=pt on the kernel command line");
    }
    bool seen = std::any_of(groups.begin(), groups.end(),
                            [&](const IommuGroup& g) { return g.number == *dev->iommu_group; });
    if (!seen) groups.push_back({*dev->iommu_group, read_group_members(fs, *dev->iommu_group)});
  }
  return groups;
}

std::string iommu_cmdline_option(const HostFs& fs) {
  auto info = fs.read("/proc/cpuinfo").value_or("");
  if (info.find("GenuineIntel") != std::string::npos) return "intel_iommu=on";
  if (info.find("AuthenticAMD") != std::string::npos) return "amd_iommu=on";
  return "";
}

VfioConf make_vfio_conf(const HostFs& fs, const std::vector<std::string>& addresses) {
  VfioConf conf;
  for (const auto& group : groups_of(fs, addresses)) {
    for (const auto& dev : group.devices) {
      if (dev.is_bridge()) continue;
      if (std::find(conf.ids.begin(), conf.ids.end(), dev.id()) == conf.ids.end())
        conf.ids.push_back(dev.id());
      if (dev.is_vga()) conf.disable_vga = true;
    }
  }
  std::string iommu = iommu_cmdline_option(fs);
  conf.kernel_cmdline = {iommu.empty() ? "intel_iommu=on|amd_iommu=on" : iommu, "iommu=pt"};
  return conf;
}

std::string format_vfio_conf(const VfioConf& conf) {
  std::string out = "# /etc/modprobe.d/vfio.conf\n";
  out += "options vfio-pci ids=" + join(conf.ids, ",") + "\n";
  if (conf.disable_vga) out += "options vfio-pci disable_vga=1\n";
  out += "# kernel command line (e.g. GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub)\n";
  out += join(conf.kernel_cmdline, " ") + "\n";
  return out;
}

}  // namespace pl::host
