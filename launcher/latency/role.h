// Thread roles of a QEMU process started with `-name NAME,debug-threads=on`.
#pragma once

#include <string>
#include <string_view>

namespace pl::latency {

/// What a thread does for the VM, from its name alone.
struct Role {
  enum class Kind { kVcpu, kIothread, kVhost, kEmulator };
  Kind kind = Kind::kEmulator;
  int vcpu = -1;        ///< kVcpu: the vCPU index.
  std::string_view id;  ///< kIothread: the iothread id (a view into the name).
};

/// Classifies a thread name (as in /proc/PID/task/TID/comm, at most 15 bytes):
///   "CPU 3/KVM", "CPU 3/TCG" -> vcpu 3;  "IO iothread0" -> iothread "iothread0";
///   "vhost-1234" -> vhost;  anything else (qemu-system-x86, worker, call_rcu) -> emulator.
/// Pure: no I/O. The returned id views `name`.
Role classify_thread(std::string_view name);

/// "vcpu 3", "iothread iothread0", "vhost", "emulator".
std::string to_string(const Role& role);

}  // namespace pl::latency
