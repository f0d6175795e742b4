#include "import/init.h"

#include <algorithm>
#include <cstdio>
#include <functional>

#include "core/cpulist.h"
#include "core/error.h"
#include "host/pci.h"
#include "import/host_facts.h"
#include "profile/profile.h"

namespace pl::import {
namespace {

using ojson = nlohmann::ordered_json;

std::string hex_class(uint32_t class_code) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04x", class_code >> 8);
  return buf;
}

host::PciDevice need_device(const host::HostFs& fs, const std::string& text, const char* flag) {
  auto addr = host::normalize_pci_address(text);
  if (!addr) {
    throw Error(Exit::kUsage,
                std::string(flag) + " " + text + ": expected a PCI address such as 0000:01:00.0");
  }
  auto dev = host::read_pci_device(fs, *addr);
  if (!dev) {
    throw Error(Exit::kUsage,
                std::string(flag) + " " + *addr + ": no such PCI device in " +
                    fs.real("/sys/bus/pci/devices"),
                "`passlaunch iommu` lists the devices and their groups");
  }
  if (!dev->iommu_group) {
    throw Error(Exit::kUsage, std::string(flag) + " " + *addr + ": the device is in no IOMMU group",
                "enable the IOMMU (intel_iommu=on or amd_iommu=on) and check `passlaunch iommu`");
  }
  return *dev;
}

/// A bridge of any kind (host, ISA, PCI-to-PCI; class 06) or a pcieport: it
/// stays with the host and needs no vfio-pci.
bool stays_with_host(const host::PciDevice& d) {
  return d.is_bridge() || (d.class_code >> 16) == 0x06;
}

/// Appends the group of `dev` to /devices: `attach(d)` says which members go
/// to the guest; other endpoints are bound with the group but stay out.
void add_group(CommentedProfile& p, InitResult& r, const host::HostFs& fs,
               const host::PciDevice& dev, const std::string& what,
               const std::function<bool(const host::PciDevice&)>& attach) {
  const ojson& devs = p.json.value("devices", ojson::array());
  for (const auto& d : devs) {
    if (d["address"] == dev.address) return;  // its group is in already
  }
  std::vector<host::PciDevice> members = host::read_group_members(fs, *dev.iommu_group);
  bool first = true;
  for (const host::PciDevice& m : members) {
    if (stays_with_host(m)) {
      r.notes.push_back("IOMMU group " + std::to_string(*dev.iommu_group) + ": " + m.address +
                        " is a bridge (class " + hex_class(m.class_code) + "), left with the host");
      continue;
    }
    ojson d = {{"type", "vfio"}, {"address", m.address}};
    std::string comment;
    if (first) {
      comment = "IOMMU group " + std::to_string(*dev.iommu_group) + ": " + what + "\n";
      first = false;
    }
    if (attach(m)) {
      comment += m.address + " [" + m.id() + "]";
    } else {
      d["attach"] = false;
      comment += m.address + " [" + m.id() +
                 "]: in the same IOMMU group, so bound to vfio-pci with it (the group must be "
                 "viable), but not given to the guest";
    }
    p.push("/devices", std::move(d), comment);
  }
}

}  // namespace

void add_host_settings(CommentedProfile& p, const host::HostFs& fs, const std::string& gpu,
                       std::vector<std::pair<std::string, std::string>>* why) {
  std::string dm_why, mod_why;
  std::string dm = display_manager(fs, &dm_why);
  std::vector<std::string> modules = gpu_modules(fs, gpu, &mod_why);
  p.set("/host/display_manager", dm, "from the host: " + dm_why);
  p.set("/host/gpu_modules", modules, "from the host: " + mod_why);
  bool fb = fs.exists("/sys/bus/platform/devices/efi-framebuffer.0") ||
            fs.exists("/sys/bus/platform/devices/simple-framebuffer.0");
  bool vtcon = !fs.list("/sys/class/vtconsole").empty();
  p.set(
      "/host/unbind_vtconsoles", vtcon,
      vtcon ? "from the host: /sys/class/vtconsole has consoles" : "from the host: no vtconsoles");
  p.set("/host/unbind_framebuffer", fb,
        fb ? "from the host: the boot framebuffer holds the GPU's memory"
           : "from the host: no EFI/simple framebuffer");
  p.set("/host/rebind_vtconsoles", vtcon);
  if (why) {
    why->push_back({"/host/display_manager", dm_why});
    why->push_back({"/host/gpu_modules", mod_why});
    why->push_back({"/host/unbind_vtconsoles", "from the host's /sys/class/vtconsole"});
    why->push_back({"/host/unbind_framebuffer", "from the host's platform framebuffer"});
  }
}

InitResult init_profile(const host::HostFs& fs, const InitOptions& o) {
  if (o.os != "win11" && o.os != "win10" && o.os != "linux") {
    throw Error(Exit::kUsage, "--os " + o.os + ": expected win11, win10 or linux");
  }
  InitResult r;
  CommentedProfile& p = r.profile;
  const bool windows = o.os != "linux";
  host::PciDevice gpu = need_device(fs, o.gpu, "--gpu");
  if ((gpu.class_code >> 16) != 0x03) {
    throw Error(Exit::kUsage, "--gpu " + gpu.address + ": not a display controller (class " +
                                  hex_class(gpu.class_code) + ")");
  }
  p.header = "Written by `passlaunch init` from this host's sysfs/procfs; review it.";
  p.set("/name", o.name);
  p.set("/accel", "kvm", "passthrough needs KVM");
  p.set("/machine", "q35");

  uint64_t mem = host_memory_mib(fs) / 2 / 2 * 2;
  if (mem == 0) mem = 4096;
  p.set("/memory/size_mib", mem, "half the host's MemTotal (/proc/meminfo)");
  p.set("/memory/hugepages", false);

  CpuLayout cpus = plan_cpus(fs);
  std::vector<int> vcpus;
  size_t threads = cpus.vcpu_cores.empty() ? 1 : cpus.vcpu_cores.front().cpus.size();
  for (const Core& c : cpus.vcpu_cores) {
    vcpus.insert(vcpus.end(), c.cpus.begin(), c.cpus.end());
    if (c.cpus.size() != threads) threads = 0;
  }
  r.notes.push_back("CPUs: " + cpus.why);
  p.set("/cpu/model", "host", "host-passthrough");
  p.set("/cpu/vcpus", vcpus.size(), "every CPU of the guest's cores");
  if (threads > 0) {
    p.set("/cpu/topology",
          ojson{{"sockets", 1}, {"cores", cpus.vcpu_cores.size()}, {"threads", threads}},
          "guest core k is host core k with its SMT siblings");
  } else {
    p.set("/cpu/topology", ojson{{"sockets", 1}, {"cores", vcpus.size()}, {"threads", 1}},
          "the guest's host cores differ in thread count: one thread per guest core");
  }
  if (windows) {
    p.set("/cpu/hyperv", ojson{{"enlightenments", true}},
          "Hyper-V enlightenments for Windows (they need the hypervisor bit, on by default)");
  }
  if (!cpus.host_cpus.empty() && !vcpus.empty()) {
    std::vector<int> sorted = vcpus;
    std::sort(sorted.begin(), sorted.end());
    if (sorted == vcpus) {
      p.set("/pinning/vcpus", format_cpulist(vcpus), cpus.why);
    } else {
      p.set("/pinning/vcpus", vcpus, cpus.why);
    }
    p.set("/pinning/emulator", format_cpulist(cpus.host_cpus),
          "the CPUs left to the host take QEMU's other threads");
    p.push("/pinning/iothreads", ojson{{"id", "io1"}, {"cpus", format_cpulist(cpus.host_cpus)}});
  }

  const bool secure = o.os == "win11";
  auto ovmf = find_ovmf(fs, secure ? std::optional<bool>(true) : std::optional<bool>(false),
                        secure ? std::optional<bool>(true) : std::nullopt);
  if (!ovmf && secure) {
    r.notes.push_back(
        "no Secure Boot OVMF with enrolled keys among the firmware descriptors: "
        "using one without");
    ovmf = find_ovmf(fs, std::nullopt, std::nullopt);
  }
  if (ovmf) {
    p.set("/firmware/type", "ovmf", "from " + ovmf->descriptor);
    p.set("/firmware/code", ovmf->code);
    p.set("/firmware/vars_template", ovmf->vars_template,
          ovmf->enrolled_keys ? "with Microsoft's Secure Boot keys enrolled: Secure Boot is on"
                              : "copied once per VM");
  } else {
    r.notes.push_back(
        "no OVMF firmware descriptor in /usr/share/qemu/firmware: SeaBIOS (apt "
        "install ovmf for UEFI)");
  }

  add_group(p, r, fs, gpu, "the GPU and its functions", [&](const host::PciDevice& d) {
    auto a = PciAddress::parse(d.address), g = PciAddress::parse(gpu.address);
    return a && g && a->same_device(*g);
  });
  std::vector<std::string> wanted;
  for (const std::string& text : o.devices) {
    host::PciDevice dev = need_device(fs, text, "--device");
    if (stays_with_host(dev)) {
      throw Error(Exit::kUsage, "--device " + dev.address + ": a bridge stays with the host");
    }
    wanted.push_back(dev.address);
  }
  for (const std::string& text : o.devices) {
    host::PciDevice dev = need_device(fs, text, "--device");
    add_group(p, r, fs, dev, "--device " + dev.address, [&](const host::PciDevice& d) {
      return std::find(wanted.begin(), wanted.end(), d.address) != wanted.end() ||
             d.address == gpu.address;
    });
    // A later --device in a group already listed is attached there.
    for (auto& d : p.json["devices"]) {
      if (std::find(wanted.begin(), wanted.end(), d["address"]) != wanted.end()) d.erase("attach");
    }
  }

  std::string iface = default_route_interface(fs);
  if (!iface.empty()) {
    p.push("/network", ojson{{"type", "macvtap"}, {"link", iface}, {"mode", "bridge"}},
           "macvtap on the default route's interface (/proc/net/route); the host cannot reach "
           "the guest through it");
  } else {
    p.push("/network", ojson{{"type", "user"}}, "no default route found: user networking");
  }
  if (o.os == "win11") {
    p.set("/tpm/state_dir", "/var/lib/passlaunch/" + o.name + "/tpm", "Windows 11 needs a TPM 2.0");
  }
  if (windows) p.set("/rtc", "localtime", "Windows keeps the RTC in local time");

  std::vector<std::pair<std::string, std::string>> why;
  add_host_settings(p, fs, gpu.address, &why);
  for (const auto& [k, w] : why) r.notes.push_back(k + ": " + w);
  p.order_fields();
  return r;
}

}  // namespace pl::import
