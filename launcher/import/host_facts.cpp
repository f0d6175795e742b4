#include "import/host_facts.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <set>
#include <sstream>

#include "core/cpulist.h"

namespace pl::import {
namespace {

std::vector<int> read_cpulist(const host::HostFs& fs, const std::string& path) {
  auto text = fs.read_trimmed(path);
  if (!text || text->empty()) return {};
  return parse_cpulist(*text).value_or(std::vector<int>{});
}

}  // namespace

CpuLayout plan_cpus(const host::HostFs& fs) {
  CpuLayout out;
  std::vector<int> online = read_cpulist(fs, "/sys/devices/system/cpu/online");
  // Cores in the order of their first CPU; each core's CPUs as the kernel lists siblings.
  std::vector<Core> cores;
  std::set<int> seen;
  for (int cpu : online) {
    if (seen.count(cpu)) continue;
    std::vector<int> sib = read_cpulist(
        fs, "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list");
    if (sib.empty()) sib = {cpu};
    Core c;
    for (int s : sib) {
      if (std::find(online.begin(), online.end(), s) != online.end() && !seen.count(s)) {
        c.cpus.push_back(s);
        seen.insert(s);
      }
    }
    cores.push_back(std::move(c));
  }
  if (cores.empty()) {
    out.why = "no CPUs in /sys/devices/system/cpu/online";
    return out;
  }
  std::vector<int> big = read_cpulist(fs, "/sys/devices/cpu_core/cpus");
  std::vector<int> small = read_cpulist(fs, "/sys/devices/cpu_atom/cpus");
  auto in = [](const std::vector<int>& set, const Core& c) {
    return std::all_of(c.cpus.begin(), c.cpus.end(),
                       [&](int x) { return std::find(set.begin(), set.end(), x) != set.end(); });
  };
  if (!big.empty() && !small.empty()) {
    for (const Core& c : cores) {
      if (in(big, c)) {
        out.vcpu_cores.push_back(c);
      } else {
        out.host_cpus.insert(out.host_cpus.end(), c.cpus.begin(), c.cpus.end());
      }
    }
    out.why = "hybrid CPU: the performance cores (" + format_cpulist(big) +
              ") go to the guest, the efficiency cores (" + format_cpulist(small) +
              ") stay with the host, the emulator and the iothread";
  } else if (cores.size() > 1) {
    out.host_cpus = cores.front().cpus;
    out.vcpu_cores.assign(cores.begin() + 1, cores.end());
    out.why = "CPU 0's core (" + format_cpulist(cores.front().cpus) +
              ") stays with the host and the emulator; the other cores go to the guest, SMT "
              "siblings together";
  } else {
    out.vcpu_cores = cores;
    out.why = "one core only: nothing left for the host, the guest is not pinned";
  }
  return out;
}

uint64_t host_memory_mib(const host::HostFs& fs) {
  auto text = fs.read("/proc/meminfo");
  if (!text) return 0;
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("MemTotal:")) {
      std::istringstream l(line.substr(9));
      uint64_t kib = 0;
      l >> kib;
      return kib / 1024;
    }
  }
  return 0;
}

std::vector<std::string> gpu_modules(const host::HostFs& fs, const std::string& gpu,
                                     std::string* why) {
  auto link = fs.readlink("/sys/bus/pci/devices/" + gpu + "/driver");
  if (!link) {
    *why = gpu + " has no driver bound: no modules to unload";
    return {};
  }
  const std::string driver = host::basename(*link);
  if (driver == "vfio-pci") {
    *why = gpu + " is bound to vfio-pci already: no modules to unload";
    return {};
  }
  std::string module;
  if (auto m = fs.readlink("/sys/bus/pci/drivers/" + driver + "/module")) {
    module = host::basename(*m);
  } else {
    module = driver;
    std::replace(module.begin(), module.end(), '-', '_');
    if (!fs.exists("/sys/module/" + module)) {
      *why = "driver " + driver + " of " + gpu + " is built into the kernel: nothing to unload";
      return {};
    }
  }
  // Post-order over the holders: every module comes after the ones that hold it.
  std::vector<std::string> order;
  std::set<std::string> visited;
  auto visit = [&](auto&& self, const std::string& m) -> void {
    if (!visited.insert(m).second) return;
    std::vector<std::string> holders = fs.list("/sys/module/" + m + "/holders");
    std::sort(holders.rbegin(), holders.rend());
    for (const std::string& h : holders) self(self, h);
    order.push_back(m);
  };
  visit(visit, module);
  *why = "driver " + driver + " of " + gpu + " is module " + module +
         (order.size() > 1 ? ", held by the modules before it (/sys/module/*/holders)" : "");
  return order;
}

std::string display_manager(const host::HostFs& fs, std::string* why) {
  if (auto target = fs.readlink("/etc/systemd/system/display-manager.service")) {
    *why = "systemd's display-manager.service is " + host::basename(*target);
    return "display-manager.service";
  }
  static const char* kManagers[] = {"gdm3", "gdm", "sddm",   "lightdm",
                                    "lxdm", "xdm", "greetd", "ly"};
  for (const std::string& pid : fs.list("/proc")) {
    if (pid.empty() || !std::all_of(pid.begin(), pid.end(), ::isdigit)) continue;
    auto comm = fs.read_trimmed("/proc/" + pid + "/comm");
    if (!comm) continue;
    for (const char* m : kManagers) {
      if (*comm == m) {
        *why = "display manager " + *comm + " runs (pid " + pid + ")";
        return *comm + ".service";
      }
    }
  }
  *why = "no display manager found (no display-manager.service alias, none running)";
  return "";
}

std::optional<OvmfChoice> find_ovmf(const host::HostFs& fs, std::optional<bool> secure_boot,
                                    std::optional<bool> enrolled_keys) {
  // QEMU's firmware.json: the same file name in /etc/qemu/firmware overrides.
  std::map<std::string, std::string> files;
  for (const char* dir : {"/usr/share/qemu/firmware", "/etc/qemu/firmware"}) {
    for (const std::string& f : fs.list(dir)) {
      if (f.ends_with(".json")) files[f] = std::string(dir) + "/" + f;
    }
  }
  for (const auto& [name, path] : files) {
    auto text = fs.read(path);
    if (!text) continue;
    nlohmann::json d = nlohmann::json::parse(*text, nullptr, false);
    if (!d.is_object()) continue;
    auto types = d.value("interface-types", nlohmann::json::array());
    if (std::find(types.begin(), types.end(), "uefi") == types.end()) continue;
    const nlohmann::json map = d.value("mapping", nlohmann::json::object());
    if (map.value("device", "") != "flash") continue;
    bool target_ok = false;
    for (const auto& t : d.value("targets", nlohmann::json::array())) {
      if (t.value("architecture", "") != "x86_64") continue;
      for (const auto& m : t.value("machines", nlohmann::json::array())) {
        if (m.is_string() && m.get<std::string>().starts_with("pc-q35")) target_ok = true;
      }
    }
    if (!target_ok) continue;
    auto features = d.value("features", nlohmann::json::array());
    auto has = [&](const char* f) {
      return std::find(features.begin(), features.end(), f) != features.end();
    };
    OvmfChoice c;
    c.descriptor = path;
    c.secure_boot = has("secure-boot");
    c.enrolled_keys = has("enrolled-keys");
    c.requires_smm = has("requires-smm");
    if (secure_boot && *secure_boot != c.secure_boot) continue;
    if (enrolled_keys && *enrolled_keys != c.enrolled_keys) continue;
    c.code = map.value("executable", nlohmann::json::object()).value("filename", "");
    c.vars_template = map.value("nvram-template", nlohmann::json::object()).value("filename", "");
    if (c.code.empty() ||
        map.value("executable", nlohmann::json::object()).value("format", "raw") != "raw") {
      continue;
    }
    return c;
  }
  return std::nullopt;
}

std::string libvirt_network_bridge(const host::HostFs& fs, const std::string& network) {
  for (const char* dir : {"/etc/libvirt/qemu/networks/", "/var/lib/libvirt/network/"}) {
    auto text = fs.read(std::string(dir) + network + ".xml");
    if (!text) continue;
    pugi::xml_document doc;
    if (!doc.load_string(text->c_str())) continue;
    std::string bridge = doc.child("network").child("bridge").attribute("name").value();
    if (!bridge.empty() && fs.exists("/sys/class/net/" + bridge + "/bridge")) return bridge;
  }
  return "";
}

std::string default_route_interface(const host::HostFs& fs) {
  auto text = fs.read("/proc/net/route");
  if (!text) return "";
  std::istringstream in(*text);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string iface, dest;
    l >> iface >> dest;
    if (dest == "00000000") return iface;
  }
  return "";
}

}  // namespace pl::import
