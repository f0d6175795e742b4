// Pinning every QEMU thread: the plan is pure (roles from QMP's thread ids and
// the threads' names), applying and reading back are thin syscall wrappers.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "latency/role.h"
#include "profile/profile.h"

namespace pl {

enum class ThreadRole { kVcpu, kIothread, kVhost, kEmulator };
std::string to_string(ThreadRole r);

struct ThreadInfo {
  pid_t tid = 0;
  std::string name;  ///< /proc/PID/task/TID/comm
};

/// What QMP says about QEMU's threads (parsed by latency::parse_qemu_threads).
using latency::QemuThreads;

struct ThreadPin {
  pid_t tid = 0;
  std::string name;
  ThreadRole role = ThreadRole::kEmulator;
  std::string label;      ///< "vCPU 3", "iothread io1", "emulator", "vhost"
  std::vector<int> cpus;  ///< empty: left as inherited
  std::optional<int> realtime_priority = std::nullopt;  ///< real-time priority from the profile
};

/// Classifies each thread and gives it its CPUs: vCPU n -> pinning.vcpus[n],
/// iothread -> its set (or the emulator set), everything else (and vhost
/// workers) -> the emulator set. Throws pl::Error(kFailed) when QMP names a
/// vCPU the profile does not have, or a thread QMP names is not in `threads`.
std::vector<ThreadPin> plan_pins(const Pinning& pinning, const QemuThreads& qemu,
                                 const std::vector<ThreadInfo>& threads);

/// Host facts the pin plan is checked against.
struct CpuTopology {
  std::vector<int> online;                   ///< /sys/devices/system/cpu/online
  std::map<int, std::vector<int>> siblings;  ///< cpu -> its SMT siblings (itself included)
  std::vector<int> allowed;                  ///< the launcher's own affinity (cgroup cpuset)
};

/// Reads the topology under `host_root` (sysfs) and our own affinity.
CpuTopology read_cpu_topology(const std::string& host_root);

/// Checks the profile's CPUs against the host. Throws pl::Error(kUsage) for a
/// CPU that does not exist, is offline, or is outside our cpuset (with the
/// cpuset in the message); returns warnings (split SMT siblings, emulator
/// sharing vCPU CPUs).
std::vector<std::string> check_pin_plan(const Profile& profile, const CpuTopology& topo);

/// The threads of a process: /proc/PID/task/*/comm under `proc_root`.
std::vector<ThreadInfo> list_threads(pid_t pid, const std::string& proc_root = "/proc");

/// Kernel vhost workers of `qemu_pid` that are not QEMU threads (kernels
/// before 6.4 run them as kernel threads named vhost-PID).
std::vector<ThreadInfo> find_vhost_kthreads(pid_t qemu_pid, const std::string& proc_root = "/proc");

/// Applies each pin with sched_setaffinity, and the real-time `policy` for a
/// pin with a realtime_priority (or, for vCPUs, `realtime_priority`). Throws
/// pl::Error(kFailed) naming the thread, the CPUs and, for EINVAL, the
/// launcher's cpuset.
void apply_pins(const std::vector<ThreadPin>& pins, std::optional<int> realtime_priority,
                RealtimePolicy policy = RealtimePolicy::kFifo);

/// The CPUs a thread may run on now (sched_getaffinity).
std::vector<int> thread_affinity(pid_t tid);

/// A human table: thread name, tid, role, allowed CPUs (read back).
std::string format_pin_table(const std::vector<ThreadPin>& pins);

}  // namespace pl
