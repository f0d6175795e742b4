#include "run/facts.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>

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

HostFacts probe_host_facts(const Profile& profile) {
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
  return f;
}

}  // namespace pl
