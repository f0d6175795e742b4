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

  /// "10de:1e07"
  std::string id() const;
  /// PCI-to-PCI bridges (class 0604) and devices bound to pcieport stay with the
  /// host; they never go to vfio-pci.
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
