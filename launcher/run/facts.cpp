#include "run/facts.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"

namespace pl {

std::string runtime_dir_for(const std::string& name) {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  std::string base = (xdg && *xdg) ? std::string(xdg) + "/passlaunch" : "/run/passlaunch";
  return base + "/" + name;
}

std::string state_dir_for(const std::string& name) {
  const char* dir = std::getenv("PASSLAUNCH_STATE_DIR");
  std::string base = (dir && *dir) ? std::string(dir) : "/var/lib/passlaunch";
  return base + "/" + name;
}

bool kvm_usable() {
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  int version = ::ioctl(fd, KVM_GET_API_VERSION, 0);
  ::close(fd);
  return version == KVM_API_VERSION;
}

namespace {

std::string read_file(const std::string& path, bool& ok) {
  std::ifstream in(path, std::ios::binary);
  ok = static_cast<bool>(in);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace

std::vector<std::pair<int, std::string>> smbios_structures(std::string_view table,
                                                           const std::vector<int>& types) {
  std::vector<std::pair<int, std::string>> out;
  size_t i = 0;
  while (i + 4 <= table.size()) {
    int type = static_cast<unsigned char>(table[i]);
    size_t len = static_cast<unsigned char>(table[i + 1]);
    if (len < 4 || i + len > table.size()) {
      throw Error(Exit::kEnvironment, "the SMBIOS table is malformed: structure at byte " +
                                          std::to_string(i) + " has length " + std::to_string(len));
    }
    // The strings follow the formatted area and end with an empty string.
    size_t end = table.find(std::string_view("\0\0", 2), i + len);
    if (end == std::string_view::npos) {
      throw Error(Exit::kEnvironment, "the SMBIOS table is truncated in the strings of the type " +
                                          std::to_string(type) + " structure at byte " +
                                          std::to_string(i));
    }
    end += 2;
    if (type == 127) break;
    if (std::find(types.begin(), types.end(), type) != types.end())
      out.push_back({type, std::string(table.substr(i, end - i))});
    i = end;
  }
  return out;
}

std::string smbios_file(const std::string& runtime_dir, int type, size_t n) {
  return runtime_dir + "/smbios-type" + std::to_string(type) + (n ? "-" + std::to_string(n) : "") +
         ".bin";
}

std::string hugetlbfs_mount(std::string_view mounts, int size_mib) {
  std::istringstream in{std::string(mounts)};
  std::string line;
  std::string want = size_mib == 1024 ? "pagesize=1G" : "pagesize=2M";
  std::string fallback;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string dev, dir, type, opts;
    if (!(f >> dev >> dir >> type >> opts) || type != "hugetlbfs") continue;
    if (("," + opts + ",").find("," + want + ",") != std::string::npos) return dir;
    if (opts.find("pagesize=") == std::string::npos && size_mib == 2 && fallback.empty())
      fallback = dir;
  }
  return fallback;
}

HostFacts probe_host_facts(const Profile& profile, const std::string& host_root) {
  HostFacts f;
  f.runtime_dir = runtime_dir_for(profile.name);
  f.qmp_fd = kQmpFd;
  f.accel =
      profile.accel == Accel::kAuto ? (kvm_usable() ? Accel::kKvm : Accel::kTcg) : profile.accel;
  bool vhost = ::access("/dev/vhost-net", R_OK | W_OK) == 0;
  int next = kQmpFd + 1;
  for (const NetDevice& n : profile.network) {
    if (n.type == NetDevice::Type::kUser) continue;
    NetFds fds;
    fds.tap = next++;
    if (vhost) fds.vhost = next++;
    f.net_fds.push_back(fds);
  }
  if (profile.firmware.type == Firmware::Type::kOvmf) {
    f.ovmf_vars = state_dir_for(profile.name) + "/OVMF_VARS.fd";
  }
  if (profile.hugepages) {
    bool ok = false;
    std::string mounts = read_file(host_root + "/proc/mounts", ok);
    f.hugepage_path = hugetlbfs_mount(mounts, profile.hugepage_size_mib);
    if (f.hugepage_path.empty()) {
      std::string size = profile.hugepage_size_mib == 1024 ? "1G" : "2M";
      throw Error(Exit::kEnvironment,
                  profile.file + ": /memory/hugepages: no hugetlbfs mount of " + size +
                      " pages in /proc/mounts",
                  "mount -t hugetlbfs -o pagesize=" + size + " none /dev/hugepages" +
                      (size == "1G" ? "1G" : "") +
                      " (and reserve pages in /sys/kernel/mm/hugepages)");
    }
  }
  if (profile.smbios.mode == Smbios::Mode::kHost) {
    bool ok = false;
    std::string path = host_root + kHostDmiTable;
    std::string table = read_file(path, ok);
    if (!ok) {
      throw Error(Exit::kEnvironment,
                  profile.file + ": /smbios/mode: \"host\" needs the host's SMBIOS table, but " +
                      path + " cannot be read",
                  "the host has no DMI tables (a VM without SMBIOS?): use mode \"explicit\"");
    }
    std::map<int, size_t> seen;
    for (const auto& [type, bytes] : smbios_structures(table, host_smbios_types()))
      f.smbios_files.push_back(smbios_file(f.runtime_dir, type, seen[type]++));
  }
  return f;
}

}  // namespace pl
