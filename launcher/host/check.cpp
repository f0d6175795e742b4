#include "host/check.h"

#include <unistd.h>

#include <algorithm>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/text.h"
#include "host/host_env.h"
#include "host/journal.h"
#include "host/pci.h"
#include "host/usage.h"
#include "host/vfio_conf.h"

namespace pl::host {
namespace {

bool has_word(const std::string& text, const std::string& word) {
  std::istringstream in(text);
  for (std::string w; in >> w;) {
    if (w == word) return true;
  }
  return false;
}

/// "1200 (Xorg), 1300 (gnome-shell)": each holding process once.
std::string short_holders(const std::vector<Holder>& holders) {
  std::vector<std::string> out;
  std::set<int> seen;
  for (const auto& h : holders) {
    if (seen.insert(h.pid).second) out.push_back(std::to_string(h.pid) + " (" + h.comm + ")");
  }
  return join(out, ", ");
}

/// First "Key: value" of /proc/meminfo-like text, as a number.
long meminfo(const std::string& text, const std::string& key) {
  auto pos = text.find(key + ":");
  if (pos == std::string::npos) return -1;
  return std::atol(text.c_str() + pos + key.size() + 1);
}

}  // namespace

std::vector<CheckLine> check_host(const HostFs& fs, const CheckOptions& options) {
  std::vector<CheckLine> out;
  auto pass = [&](std::string what) { out.push_back({CheckLine::kPass, std::move(what), ""}); };
  auto warn = [&](std::string what, std::string fix) {
    out.push_back({CheckLine::kWarn, std::move(what), std::move(fix)});
  };
  auto fail = [&](std::string what, std::string fix) {
    out.push_back({CheckLine::kFail, std::move(what), std::move(fix)});
  };

  // CPU virtualization and /dev/kvm.
  const std::string cpuinfo = fs.read("/proc/cpuinfo").value_or("");
  const bool intel = cpuinfo.find("GenuineIntel") != std::string::npos;
  if (has_word(cpuinfo, "vmx") || has_word(cpuinfo, "svm")) {
    pass(std::string("CPU virtualization (") + (has_word(cpuinfo, "vmx") ? "vmx" : "svm") + ")");
  } else if (fs.exists("/dev/kvm")) {
    warn(
        "CPU virtualization: no vmx/svm flag in /proc/cpuinfo, but /dev/kvm exists (nested "
        "virtualization?)",
        "if KVM fails to start, enable VT-x/AMD-V (SVM) in the firmware or in the outer "
        "hypervisor");
  } else {
    fail("CPU virtualization: no vmx/svm flag in /proc/cpuinfo",
         "enable VT-x/AMD-V (SVM) in the firmware setup");
  }
  if (!fs.exists("/dev/kvm")) {
    fail("/dev/kvm is missing",
         std::string("load the KVM module: modprobe ") + (intel ? "kvm_intel" : "kvm_amd"));
  } else if (::access(fs.real("/dev/kvm").c_str(), R_OK | W_OK) != 0) {
    warn("/dev/kvm is not writable by this user",
         "run passlaunch as root, or add the user to the kvm group");
  } else {
    pass("/dev/kvm");
  }

  // IOMMU and kernel command line.
  const std::string iommu_opt = iommu_cmdline_option(fs);
  const std::string cmdline = fs.read("/proc/cmdline").value_or("");
  auto iommus = fs.list("/sys/class/iommu");
  if (!iommus.empty()) {
    pass("IOMMU active (" + join(iommus, ", ") + ")");
  } else {
    fail("IOMMU not active: /sys/class/iommu is empty",
         "enable VT-d/AMD-Vi in the firmware and add " +
             (iommu_opt.empty() ? "intel_iommu=on" : iommu_opt) +
             " iommu=pt to the kernel command line (`passlaunch vfio-conf` prints it)");
  }
  if (intel && !has_word(cmdline, "intel_iommu=on")) {
    warn("kernel command line lacks intel_iommu=on",
         "add intel_iommu=on to GRUB_CMDLINE_LINUX_DEFAULT and regenerate the boot config");
  } else if (!has_word(cmdline, "iommu=pt")) {
    warn("kernel command line lacks iommu=pt",
         "add iommu=pt (host devices skip IOMMU translation)");
  } else {
    pass("kernel command line: " + (iommu_opt.empty() ? std::string() : iommu_opt + " ") +
         "iommu=pt");
  }

  // vfio-pci: loaded, built in, or installed for the running kernel.
  const std::string release = fs.read_trimmed("/proc/sys/kernel/osrelease").value_or("");
  const std::string moddir = "/lib/modules/" + release;
  if (fs.exists("/sys/bus/pci/drivers/vfio-pci")) {
    pass("vfio-pci loaded");
  } else if (fs.read(moddir + "/modules.dep").value_or("").find("/vfio-pci.ko") !=
                 std::string::npos ||
             fs.read(moddir + "/modules.builtin").value_or("").find("/vfio-pci.ko") !=
                 std::string::npos) {
    pass("vfio-pci available for kernel " + release);
  } else {
    fail("vfio-pci is not available for kernel " + release + " (" + moddir + ")",
         "install the modules of the running kernel, or boot the kernel whose modules are "
         "installed");
  }

  // The devices, their groups, the boot VGA and who holds the GPU.
  std::vector<PciDevice> all = read_pci_devices(fs);
  std::vector<std::string> passed;
  for (const auto& text : options.devices) {
    auto addr = normalize_pci_address(text);
    if (!addr) {
      fail("invalid PCI address \"" + text + "\"", "write it as DDDD:BB:DD.F, e.g. 0000:01:00.0");
      continue;
    }
    auto dev = read_pci_device(fs, *addr);
    if (!dev) {
      fail("device " + *addr + " is not present",
           "check the address with `passlaunch iommu` (or lspci -D)");
      continue;
    }
    passed.push_back(*addr);
    if (!dev->iommu_group) {
      fail("device " + *addr + " is in no IOMMU group", "enable the IOMMU (see above)");
      continue;
    }
    PciNames names;
    pass("device " + describe_pci_device(*dev, names) + ", group " +
         std::to_string(*dev->iommu_group) + ", driver " +
         (dev->driver.empty() ? "none" : dev->driver));
  }
  std::vector<int> groups;
  for (const auto& a : passed) {
    auto d = read_pci_device(fs, a);
    if (d && d->iommu_group &&
        std::find(groups.begin(), groups.end(), *d->iommu_group) == groups.end()) {
      groups.push_back(*d->iommu_group);
    }
  }
  // Viability as the kernel decides it (group_blockers, pci.h).
  for (int g : groups) {
    IommuGroup group{g, read_group_members(fs, g)};
    auto blockers = group_blockers(group, passed, release);
    if (blockers.empty()) {
      pass("IOMMU group " + std::to_string(g) +
           " viable (each member passed through, unbound, or on a driver that allows it)");
      continue;
    }
    for (const auto& b : blockers) {
      const bool given = std::find(passed.begin(), passed.end(), b.device.address) != passed.end();
      fail("IOMMU group " + std::to_string(g) + " not viable: " + b.device.address + " " + b.reason,
           given ? "leave the bridge out of the profile's devices"
           : b.device.is_bridge()
               ? "unbind it from " + b.device.driver + " or keep that driver from loading"
               : "add it to the profile's devices (a group goes to the VM whole), unbind it, or "
                 "move the card to another slot");
    }
  }
  // Storage the host uses would be destroyed by unbinding its controller.
  for (const auto& a : passed) {
    auto d = read_pci_device(fs, a);
    if (!d || d->driver == "vfio-pci") continue;
    auto users = block_device_users(fs, a);
    if (!users.empty()) {
      fail("device " + a + " holds storage the host is using: " + join(users, "; "),
           "unmount it, swapoff it, or deactivate the volume on it first, or leave the device out; "
           "`passlaunch run` refuses to unbind it");
    }
  }
  // Sound devices: unbinding waits until every handle is closed.
  for (const auto& a : passed) {
    auto nodes = sound_nodes(fs, a);
    if (nodes.empty()) continue;
    std::set<std::string> set(nodes.begin(), nodes.end());
    auto holders = processes_holding(fs, [&](const std::string& t) { return set.count(t) > 0; });
    if (holders.empty()) {
      pass("no process holds the sound devices of " + a);
    } else {
      warn("processes holding the sound devices of " + a + ": " + short_holders(holders),
           "they must close them before the VM starts (passlaunch waits for them); a sound "
           "server of the desktop session ends with it, others: add their units to the "
           "profile's units to stop");
    }
  }
  std::vector<PciDevice> gpus;
  for (const auto& d : all) {
    if (d.boot_vga) {
      bool given = std::find(passed.begin(), passed.end(), d.address) != passed.end();
      pass("boot VGA: " + d.address +
           (given ? " (passed through: the host display goes to the VM)" : ""));
    }
    if (d.is_vga() && std::find(passed.begin(), passed.end(), d.address) != passed.end())
      gpus.push_back(d);
  }
  if (!gpus.empty()) {
    auto holders = processes_holding(fs, gpu_files(fs, gpus));
    if (holders.empty()) {
      pass("no process holds the GPU");
    } else {
      warn("processes holding the GPU: " + short_holders(holders),
           "they must exit before the VM starts: the display manager is stopped for you; add other "
           "units to the profile's units to stop");
    }
  }

  // Hugepages.
  const std::string mem = fs.read("/proc/meminfo").value_or("");
  long total = meminfo(mem, "HugePages_Total"), size_kb = meminfo(mem, "Hugepagesize");
  if (total > 0) {
    pass("hugepages: " + std::to_string(total) + " x " + std::to_string(size_kb) + " kB (" +
         std::to_string(meminfo(mem, "HugePages_Free")) + " free)");
  } else {
    warn("no hugepages reserved",
         "optional: reserve them for the guest RAM, e.g. sysctl vm.nr_hugepages=8192 (16 GiB of 2 "
         "MiB pages)");
  }

  // Firmware.
  std::vector<std::string> firmware = options.firmware;
  bool any = firmware.empty();
  if (any)
    firmware = {"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd",
                "/usr/share/edk2/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_CODE.fd"};
  std::vector<std::string> found, absent;
  for (const auto& f : firmware) (fs.exists(f) ? found : absent).push_back(f);
  if (any ? !found.empty() : absent.empty()) {
    pass("firmware: " + join(found, ", "));
  } else {
    fail("firmware missing: " + join(any ? firmware : absent, ", "),
         "install OVMF (Debian: apt install ovmf)");
  }

  // Journals of earlier runs that were not restored.
  for (const auto& vm : Journal::list(fs)) {
    auto j = Journal::open(fs, vm);
    if (j && j->live(fs)) {
      fail("the host holds unrestored changes of " + vm + " (" + j->path() + ")",
           "run `passlaunch recover " + vm + "`");
    } else {
      warn("stale journal of " + vm + " from an earlier boot",
           "it is discarded on the next run or `passlaunch recover`");
    }
  }

  // QEMU.
  try {
    auto r = run_process({options.qemu, "--version"});
    std::string first = r.output.substr(0, r.output.find('\n'));
    if (r.status == 0 && first.starts_with("QEMU emulator version ")) {
      pass(first);
    } else {
      fail(options.qemu + " --version failed (status " + std::to_string(r.status) + ")",
           "reinstall QEMU");
    }
  } catch (const Error&) {
    fail(options.qemu + " not found", "install QEMU (Debian: apt install qemu-system-x86)");
  }
  return out;
}

std::string format_check(const std::vector<CheckLine>& lines) {
  std::string out;
  for (const auto& l : lines) {
    out += l.level == CheckLine::kPass   ? "pass  "
           : l.level == CheckLine::kWarn ? "warn  "
                                         : "FAIL  ";
    out += l.what + "\n";
    if (!l.fix.empty()) out += "      fix: " + l.fix + "\n";
  }
  return out;
}

}  // namespace pl::host
