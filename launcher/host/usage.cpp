#include "host/usage.h"

#include <charconv>
#include <set>
#include <sstream>

#include "core/text.h"

namespace pl::host {

std::vector<Holder> processes_holding(const HostFs& fs,
                                      const std::function<bool(const std::string&)>& match) {
  std::vector<Holder> out;
  for (const auto& name : fs.list("/proc")) {
    int pid = 0;
    auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), pid);
    if (ec != std::errc() || p != name.data() + name.size()) continue;
    std::set<std::string> seen;
    for (const auto& fd : fs.list("/proc/" + name + "/fd")) {
      auto target = fs.readlink("/proc/" + name + "/fd/" + fd);
      if (!target || !match(*target) || !seen.insert(*target).second) continue;
      out.push_back({pid, fs.read_trimmed("/proc/" + name + "/comm").value_or("?"), *target});
    }
  }
  return out;
}

std::string describe_holders(const std::vector<Holder>& holders) {
  std::vector<std::string> parts;
  for (const auto& h : holders)
    parts.push_back("PID " + std::to_string(h.pid) + " (" + h.comm + ") holds " + h.file);
  return join(parts, ", ");
}

std::function<bool(const std::string&)> gpu_files(const HostFs& fs,
                                                  const std::vector<PciDevice>& devices) {
  bool nvidia = false;
  std::set<std::string> files;
  for (const auto& d : devices) {
    if (d.vendor == 0x10de) nvidia = true;
    for (const auto& n : fs.list("/sys/bus/pci/devices/" + d.address + "/drm")) {
      if (n.starts_with("card") || n.starts_with("renderD")) files.insert("/dev/dri/" + n);
    }
  }
  return [nvidia, files](const std::string& target) {
    return (nvidia && target.starts_with("/dev/nvidia")) || files.count(target) > 0;
  };
}

std::vector<std::string> sound_nodes(const HostFs& fs, const std::string& address) {
  std::vector<std::string> out;
  const std::string dir = "/sys/bus/pci/devices/" + address + "/sound";
  for (const auto& card : fs.list(dir)) {
    if (!card.starts_with("card")) continue;
    for (const auto& n : fs.list(dir + "/" + card)) {
      if (n.starts_with("controlC") || n.starts_with("pcmC") || n.starts_with("hwC") ||
          n.starts_with("midiC"))
        out.push_back("/dev/snd/" + n);
    }
  }
  return out;
}

namespace {

/// mountinfo(5): "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw".
struct Mount {
  std::string dev;  ///< "major:minor"
  std::string mountpoint;
  std::string source;
};

std::vector<Mount> read_mounts(const HostFs& fs) {
  std::vector<Mount> out;
  std::istringstream in(fs.read("/proc/self/mountinfo").value_or(""));
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string id, parent, dev, root, mountpoint, word;
    if (!(f >> id >> parent >> dev >> root >> mountpoint)) continue;
    while (f >> word && word != "-") {
    }
    std::string fstype, source;
    f >> fstype >> source;
    out.push_back({dev, mountpoint, source});
  }
  return out;
}

std::string dm_name(const HostFs& fs, const std::string& holder) {
  auto n = fs.read_trimmed("/sys/block/" + holder + "/dm/name");
  return n ? holder + " (" + *n + ")" : holder;
}

}  // namespace

std::vector<std::string> block_device_users(const HostFs& fs, const std::string& address) {
  std::vector<std::string> out;
  const std::string needle = "/" + address + "/";
  const auto mounts = read_mounts(fs);
  std::istringstream swaps_in(fs.read("/proc/swaps").value_or(""));
  std::set<std::string> swaps;
  for (std::string line; std::getline(swaps_in, line);) {
    std::istringstream f(line);
    std::string file;
    if (f >> file && file.starts_with("/dev/")) swaps.insert(file);
  }
  for (const auto& disk : fs.list("/sys/block")) {
    auto target = fs.readlink("/sys/block/" + disk);
    if (!target || target->find(needle) == std::string::npos) continue;
    // The disk itself, then each partition (a subdirectory with "partition").
    std::vector<std::pair<std::string, std::string>> parts = {{disk, "/sys/block/" + disk}};
    for (const auto& sub : fs.list("/sys/block/" + disk)) {
      if (fs.exists("/sys/block/" + disk + "/" + sub + "/partition"))
        parts.push_back({sub, "/sys/block/" + disk + "/" + sub});
    }
    std::set<std::string> nodes;
    for (const auto& [name, dir] : parts) {
      const std::string node = "/dev/" + name;
      nodes.insert(node);
      const std::string dev = fs.read_trimmed(dir + "/dev").value_or("");
      for (const auto& m : mounts) {
        if ((!dev.empty() && m.dev == dev) || m.source == node)
          out.push_back(name + " is mounted on " + m.mountpoint);
      }
      if (swaps.count(node)) out.push_back(name + " is in use as swap");
      for (const auto& h : fs.list(dir + "/holders"))
        out.push_back(name + " is held by " + dm_name(fs, h));
    }
    for (const auto& h :
         processes_holding(fs, [&](const std::string& t) { return nodes.count(t) > 0; })) {
      out.push_back("PID " + std::to_string(h.pid) + " (" + h.comm + ") holds " + h.file);
    }
  }
  return out;
}

}  // namespace pl::host
