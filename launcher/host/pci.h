// PCI devices and IOMMU groups as sysfs shows them, and their names from the
// PCI ID database (pci.ids, through libpci).
//
// Layout read (every path under the HostFs root):
//   /sys/kernel/iommu_groups/N/devices/DDDD:BB:DD.F -> ../../../../devices/pci.../DDDD:BB:DD.F
//   /sys/bus/pci/devices/DDDD:BB:DD.F/{vendor,device,class,revision,boot_vga,driver_override}
//   /sys/bus/pci/devices/DDDD:BB:DD.F/driver -> ../../../bus/pci/drivers/NAME
//   /sys/bus/pci/devices/DDDD:BB:DD.F/iommu_group -> ../../../kernel/iommu_groups/N
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/host_fs.h"

struct pci_access;

namespace pl::host {

struct PciDevice {
  std::string address;      ///< "0000:01:00.0"
  uint16_t vendor = 0;      ///< 0x10de
  uint16_t device = 0;      ///< 0x1e07
  uint32_t class_code = 0;  ///< 24 bits: class, subclass, prog-if (0x030000)
  std::optional<uint8_t> revision;
  std::string driver;           ///< bound driver, "" when unbound
  std::string driver_override;  ///< "" when unset ("(null)" in sysfs)
  std::optional<int> iommu_group;
  bool boot_vga = false;
  /// Config space byte 0x0e without the multi-function bit (0 normal, 1
  /// PCI-PCI bridge, 2 CardBus bridge), read from the first bytes of
  /// `config`; nullopt when that file is absent.
  std::optional<uint8_t> header_type;

  /// "10de:1e07"
  std::string id() const;
  /// Bridges stay with the host; vfio-pci refuses them (vfio_pci_probe:
  /// header type != PCI_HEADER_TYPE_NORMAL is -EINVAL). Decided by the
  /// header type, by class 0604 or the pcieport driver where it is unknown.
  bool is_bridge() const;
  bool is_vga() const { return (class_code >> 8) == 0x0300; }
};

struct IommuGroup {
  int number = 0;
  std::vector<PciDevice> devices;
};

/// "01:00.0" or "0000:01:00.0" (any case) -> "0000:01:00.0"; nullopt when malformed.
std::optional<std::string> normalize_pci_address(std::string_view text);

/// One device from /sys/bus/pci/devices/ADDRESS; nullopt when absent.
std::optional<PciDevice> read_pci_device(const HostFs& fs, const std::string& address);
/// Every PCI device, sorted by address.
std::vector<PciDevice> read_pci_devices(const HostFs& fs);
/// Every IOMMU group in numeric order with its devices; empty when the IOMMU is off.
std::vector<IommuGroup> read_iommu_groups(const HostFs& fs);
/// The members of one group, sorted by address (empty when the group does not exist).
std::vector<PciDevice> read_group_members(const HostFs& fs, int group);

/// A member that keeps its IOMMU group from going to a VM, as the kernel
/// decides it, and why.
struct GroupBlocker {
  PciDevice device;
  std::string reason;  ///< "is bound to snd_hda_intel and not passed through"
};

/// Drivers that leave DMA ownership to the group's user (driver_managed_dma,
/// kernel 5.19 on): vfio-pci and its variant drivers, pci-stub, pcieport.
bool driver_managed_dma(const std::string& driver);

/// Why group `g` cannot go to a VM that takes the devices `passed`, under the
/// kernel `release` ("6.1.0-13-amd64"): from 5.19 on (iommu_group_claim_dma_owner,
/// drivers/iommu/iommu.c) every member must be unbound or on a driver_managed_dma
/// driver; before (vfio_dev_viable, drivers/vfio/vfio.c) unbound, vfio, pci-stub
/// or header type != 0. A passed member must have header type 0 (vfio_pci_probe).
/// Passed members are counted as on vfio-pci. Empty: viable.
std::vector<GroupBlocker> group_blockers(const IommuGroup& g,
                                         const std::vector<std::string>& passed,
                                         const std::string& release);

/// Names from the PCI ID database. Unknown ids fall back to the raw numbers,
/// the way lspci does ("Device [8086:7a84]").
class PciNames {
 public:
  /// `ids_file` empty: libpci's default database (/usr/share/misc/pci.ids).
  explicit PciNames(const std::string& ids_file = {});
  ~PciNames();
  PciNames(const PciNames&) = delete;
  PciNames& operator=(const PciNames&) = delete;

  std::optional<std::string> vendor(uint16_t vendor);
  std::optional<std::string> device(uint16_t vendor, uint16_t device);
  /// Subclass name for a 24-bit class code ("VGA compatible controller").
  std::optional<std::string> klass(uint32_t class_code);

 private:
  pci_access* access_;
};

/// lspci -nn style line: "01:00.0 VGA compatible controller [0300]: NVIDIA
/// Corporation TU102 [GeForce RTX 2080 Ti Rev. A] [10de:1e07] (rev a1)".
std::string describe_pci_device(const PciDevice& dev, PciNames& names);

}  // namespace pl::host
