// Thread roles of a QEMU process started with `-name NAME,debug-threads=on`.
#pragma once

#include <sys/types.h>

#include <map>
#include <nlohmann/json.hpp>
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

/// What QMP says about QEMU's threads. It knows every iothread: one whose
/// "IO <id>" does not fit a thread name (15 bytes) is left unnamed by QEMU
/// (pthread_setname_np fails), so its name says "emulator".
struct QemuThreads {
  std::map<int, pid_t> vcpus;              ///< cpu-index -> thread-id (query-cpus-fast)
  std::map<std::string, pid_t> iothreads;  ///< id -> thread-id (query-iothreads)
};

/// Reads the `return` values of `query-cpus-fast` ([{"cpu-index": 0,
/// "thread-id": 1234, ...}]) and `query-iothreads` ([{"id": "io0",
/// "thread-id": 1240, ...}]). Pure. Throws pl::Error(kEnvironment, a protocol
/// error) naming the command, the entry and the field when a reply is not of
/// that shape, or when two entries claim the same cpu-index, id or thread.
QemuThreads parse_qemu_threads(const nlohmann::json& cpus_fast, const nlohmann::json& iothreads);

/// tid -> role label (to_string's format: "vcpu 0", "iothread io0") for
/// SamplerOptions::roles. Pure.
std::map<int, std::string> thread_roles(const QemuThreads& qemu);

/// thread_roles(parse_qemu_threads(cpus_fast, iothreads)).
std::map<int, std::string> roles_from_qmp(const nlohmann::json& cpus_fast,
                                          const nlohmann::json& iothreads);

}  // namespace pl::latency
