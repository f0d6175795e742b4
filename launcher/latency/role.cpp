#include "latency/role.h"

#include <charconv>

namespace pl::latency {

namespace {

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

}  // namespace

Role classify_thread(std::string_view name) {
  Role role;
  // "CPU <n>/KVM" or "CPU <n>/TCG" (QEMU's qemu_thread_create names, debug-threads=on).
  if (name.starts_with("CPU ")) {
    std::string_view rest = name.substr(4);
    auto slash = rest.find('/');
    if (slash != std::string_view::npos) {
      std::string_view num = rest.substr(0, slash);
      std::string_view accel = rest.substr(slash + 1);
      int n = 0;
      if (all_digits(num) && (accel == "KVM" || accel == "TCG") &&
          std::from_chars(num.data(), num.data() + num.size(), n).ec == std::errc{}) {
        role.kind = Role::Kind::kVcpu;
        role.vcpu = n;
        return role;
      }
    }
  }
  if (name.starts_with("IO ") && name.size() > 3) {
    role.kind = Role::Kind::kIothread;
    role.id = name.substr(3);
    return role;
  }
  if (name.starts_with("vhost-") && all_digits(name.substr(6))) {
    role.kind = Role::Kind::kVhost;
    return role;
  }
  return role;
}

std::string to_string(const Role& role) {
  switch (role.kind) {
    case Role::Kind::kVcpu:
      return "vcpu " + std::to_string(role.vcpu);
    case Role::Kind::kIothread:
      return "iothread " + std::string(role.id);
    case Role::Kind::kVhost:
      return "vhost";
    case Role::Kind::kEmulator:
      break;
  }
  return "emulator";
}

}  // namespace pl::latency
