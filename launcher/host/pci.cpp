#include "host/pci.h"

extern "C" {
#include <pci/pci.h>
}

#include <algorithm>
#include <charconv>
#include <cstdarg>
#include <cstdio>

#include "core/error.h"

namespace pl::host {
namespace {

std::string hex(unsigned value, int width) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%0*x", width, value);
  return buf;
}

/// Parses sysfs hex attributes such as "0x10de\n".
std::optional<uint32_t> read_hex(const HostFs& fs, const std::string& path) {
  auto text = fs.read_trimmed(path);
  if (!text) return std::nullopt;
  std::string_view s = *text;
  if (s.starts_with("0x") || s.starts_with("0X")) s.remove_prefix(2);
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) {
    throw Error(Exit::kEnvironment,
                "unexpected contents in " + fs.real(path) + ": \"" + *text + "\"",
                "expected a hexadecimal number such as 0x10de");
  }
  return v;
}

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

}  // namespace

std::string PciDevice::id() const { return hex(vendor, 4) + ":" + hex(device, 4); }

bool PciDevice::is_bridge() const {
  if (header_type) return *header_type != 0;
  return (class_code >> 8) == 0x0604 || driver == "pcieport";
}

bool driver_managed_dma(const std::string& driver) {
  // vfio-pci and its variants (mlx5_vfio_pci, hisi_acc_vfio_pci, ...) set
  // .driver_managed_dma = true, as do pci-stub and the PCIe port driver.
  return driver == "pci-stub" || driver == "pcieport" || driver.find("vfio") != std::string::npos;
}

std::vector<GroupBlocker> group_blockers(const IommuGroup& g,
                                         const std::vector<std::string>& passed,
                                         const std::string& release) {
  int major = 0, minor = 0;
  std::sscanf(release.c_str(), "%d.%d", &major, &minor);
  const bool dma_owner = major > 5 || (major == 5 && minor >= 19) || major == 0;
  std::vector<GroupBlocker> out;
  for (const auto& d : g.devices) {
    const bool given = std::find(passed.begin(), passed.end(), d.address) != passed.end();
    if (given) {
      if (d.header_type && *d.header_type != 0) {
        out.push_back({d, "has header type " + std::to_string(*d.header_type) +
                              " (a bridge), which vfio-pci does not take"});
      }
      continue;
    }
    if (d.driver.empty()) continue;  // unbound: no driver uses its DMA
    if (dma_owner) {
      if (driver_managed_dma(d.driver)) continue;
      out.push_back({d, "is bound to " + d.driver +
                            (d.is_bridge() ? ", which does not leave DMA to the group's user "
                                             "(kernel 5.19+ needs each member unbound or on "
                                             "vfio-pci, pci-stub or pcieport)"
                                           : " and not passed through")});
    } else {
      if (d.driver == "pci-stub" || d.driver.find("vfio") != std::string::npos) continue;
      if (d.header_type ? *d.header_type != 0 : d.is_bridge()) continue;
      out.push_back({d, "is bound to " + d.driver + " and not passed through"});
    }
  }
  return out;
}

std::optional<std::string> normalize_pci_address(std::string_view text) {
  std::string s(text);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s.size() == 7) s = "0000:" + s;
  // DDDD:BB:DD.F
  if (s.size() != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.') return std::nullopt;
  if (!is_hex(s.substr(0, 4)) || !is_hex(s.substr(5, 2)) || !is_hex(s.substr(8, 2)))
    return std::nullopt;
  if (s[11] < '0' || s[11] > '7') return std::nullopt;
  if (std::stoi(s.substr(8, 2), nullptr, 16) > 0x1f) return std::nullopt;
  return s;
}

std::optional<PciDevice> read_pci_device(const HostFs& fs, const std::string& address) {
  const std::string dir = "/sys/bus/pci/devices/" + address;
  auto vendor = read_hex(fs, dir + "/vendor");
  if (!vendor) return std::nullopt;
  PciDevice d;
  d.address = address;
  d.vendor = static_cast<uint16_t>(*vendor);
  d.device = static_cast<uint16_t>(read_hex(fs, dir + "/device").value_or(0));
  d.class_code = read_hex(fs, dir + "/class").value_or(0);
  if (auto rev = read_hex(fs, dir + "/revision")) d.revision = static_cast<uint8_t>(*rev);
  if (auto link = fs.readlink(dir + "/driver")) d.driver = basename(*link);
  if (auto ov = fs.read_trimmed(dir + "/driver_override"); ov && *ov != "(null)")
    d.driver_override = *ov;
  if (auto link = fs.readlink(dir + "/iommu_group")) {
    int g = 0;
    std::string n = basename(*link);
    auto [p, ec] = std::from_chars(n.data(), n.data() + n.size(), g);
    if (ec == std::errc() && p == n.data() + n.size()) d.iommu_group = g;
  }
  d.boot_vga = fs.read_trimmed(dir + "/boot_vga").value_or("0") == "1";
  if (auto config = fs.read(dir + "/config"); config && config->size() > 0x0e)
    d.header_type = static_cast<uint8_t>((*config)[0x0e]) & 0x7f;
  return d;
}

std::vector<PciDevice> read_pci_devices(const HostFs& fs) {
  std::vector<PciDevice> out;
  for (const auto& name : fs.list("/sys/bus/pci/devices")) {
    if (auto d = read_pci_device(fs, name)) out.push_back(std::move(*d));
  }
  return out;
}

std::vector<PciDevice> read_group_members(const HostFs& fs, int group) {
  std::vector<PciDevice> out;
  for (const auto& name :
       fs.list("/sys/kernel/iommu_groups/" + std::to_string(group) + "/devices")) {
    if (auto d = read_pci_device(fs, name)) {
      d->iommu_group = group;
      out.push_back(std::move(*d));
    }
  }
  return out;
}

std::vector<IommuGroup> read_iommu_groups(const HostFs& fs) {
  std::vector<int> numbers;
  for (const auto& name : fs.list("/sys/kernel/iommu_groups")) {
    int g = 0;
    auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), g);
    if (ec == std::errc() && p == name.data() + name.size()) numbers.push_back(g);
  }
  std::sort(numbers.begin(), numbers.end());
  std::vector<IommuGroup> groups;
  for (int g : numbers) groups.push_back({g, read_group_members(fs, g)});
  return groups;
}

namespace {
// libpci reports a missing or broken database through these; names then fall
// back to numbers instead of ending the process.
void pci_quiet(char*, ...) {}
[[noreturn]] void pci_fatal(char* msg, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, msg);
  std::vsnprintf(buf, sizeof buf, msg, ap);
  va_end(ap);
  throw Error(Exit::kEnvironment, std::string("libpci: ") + buf);
}
}  // namespace

PciNames::PciNames(const std::string& ids_file) : access_(pci_alloc()) {
  access_->error = pci_fatal;
  access_->warning = pci_quiet;
  access_->debug = pci_quiet;
  if (!ids_file.empty()) pci_set_name_list_path(access_, const_cast<char*>(ids_file.c_str()), 0);
}

PciNames::~PciNames() { pci_cleanup(access_); }

std::optional<std::string> PciNames::vendor(uint16_t vendor) {
  char buf[256];
  const char* n =
      pci_lookup_name(access_, buf, sizeof buf,
                      PCI_LOOKUP_VENDOR | PCI_LOOKUP_NO_NUMBERS | PCI_LOOKUP_NO_HWDB, vendor);
  return n ? std::optional<std::string>(n) : std::nullopt;
}

std::optional<std::string> PciNames::device(uint16_t vendor, uint16_t device) {
  char buf[256];
  const char* n = pci_lookup_name(access_, buf, sizeof buf,
                                  PCI_LOOKUP_DEVICE | PCI_LOOKUP_NO_NUMBERS | PCI_LOOKUP_NO_HWDB,
                                  vendor, device);
  return n ? std::optional<std::string>(n) : std::nullopt;
}

std::optional<std::string> PciNames::klass(uint32_t class_code) {
  char buf[256];
  const char* n = pci_lookup_name(access_, buf, sizeof buf,
                                  PCI_LOOKUP_CLASS | PCI_LOOKUP_NO_NUMBERS | PCI_LOOKUP_NO_HWDB,
                                  class_code >> 8);
  return n ? std::optional<std::string>(n) : std::nullopt;
}

std::string describe_pci_device(const PciDevice& d, PciNames& names) {
  std::string s = d.address.substr(0, 5) == "0000:" ? d.address.substr(5) : d.address;
  // Appended piece by piece: GCC 12 at -O3 takes `" " + std::string&&` for an
  // overlapping copy (-Wrestrict, a false positive).
  s += ' ';
  s += names.klass(d.class_code).value_or("Class");
  s += " [";
  s += hex(d.class_code >> 8, 4);
  s += "]: ";
  auto vendor = names.vendor(d.vendor);
  auto device = names.device(d.vendor, d.device);
  if (vendor) s += *vendor + " ";
  s += device.value_or("Device") + " [" + d.id() + "]";
  if (d.revision && *d.revision) {
    s += " (rev ";
    s += hex(*d.revision, 2);
    s += ')';
  }
  return s;
}

}  // namespace pl::host
