#include "run/pinning.h"

#include <dirent.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "core/cpulist.h"
#include "core/error.h"

namespace pl {

std::string to_string(ThreadRole r) {
  switch (r) {
    case ThreadRole::kVcpu:
      return "vcpu";
    case ThreadRole::kIothread:
      return "iothread";
    case ThreadRole::kVhost:
      return "vhost";
    case ThreadRole::kEmulator:
      break;
  }
  return "emulator";
}

std::vector<ThreadPin> plan_pins(const Pinning& pinning, const QemuThreads& qemu,
                                 const std::vector<ThreadInfo>& threads) {
  std::map<pid_t, const ThreadInfo*> by_tid;
  for (const ThreadInfo& t : threads) by_tid[t.tid] = &t;
  auto name_of = [&](pid_t tid, const std::string& what) -> std::string {
    auto it = by_tid.find(tid);
    if (it == by_tid.end()) {
      throw Error(Exit::kFailed, "QMP names thread " + std::to_string(tid) + " for " + what +
                                     ", but QEMU has no such thread");
    }
    return it->second->name;
  };

  std::vector<ThreadPin> pins;
  std::set<pid_t> placed;
  for (const auto& [index, tid] : qemu.vcpus) {
    ThreadPin p{tid,
                name_of(tid, "vCPU " + std::to_string(index)),
                ThreadRole::kVcpu,
                "vCPU " + std::to_string(index),
                {},
                pinning.realtime_priority};
    if (!pinning.vcpus.empty()) {
      if (index < 0 || static_cast<size_t>(index) >= pinning.vcpus.size()) {
        throw Error(Exit::kFailed, "QEMU reports vCPU " + std::to_string(index) +
                                       ", but the profile pins " +
                                       std::to_string(pinning.vcpus.size()) + " vCPUs");
      }
      p.cpus = pinning.vcpu_cpus(index);
    }
    pins.push_back(p);
    placed.insert(tid);
  }
  for (const auto& [id, tid] : qemu.iothreads) {
    ThreadPin p{tid, name_of(tid, "iothread " + id), ThreadRole::kIothread, "iothread " + id,
                pinning.emulator};
    for (const IoThread& t : pinning.iothreads) {
      if (t.id == id && !t.cpus.empty()) p.cpus = t.cpus;
      if (t.id == id) p.realtime_priority = t.realtime_priority;
    }
    pins.push_back(p);
    placed.insert(tid);
  }
  for (const ThreadInfo& t : threads) {
    if (placed.count(t.tid)) continue;
    bool vhost = t.name.rfind("vhost-", 0) == 0;
    pins.push_back({t.tid, t.name, vhost ? ThreadRole::kVhost : ThreadRole::kEmulator,
                    vhost ? "vhost" : "emulator", pinning.emulator,
                    vhost ? std::nullopt : pinning.emulator_realtime_priority});
  }
  return pins;
}

namespace {

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string own_cpuset() {
  std::string cgroup = read_first_line("/proc/self/cgroup");  // "0::/path"
  auto colon = cgroup.rfind(':');
  std::string path = colon == std::string::npos ? "" : cgroup.substr(colon + 1);
  std::string cpus = read_first_line("/sys/fs/cgroup" + path + "/cpuset.cpus.effective");
  return "cgroup " + (path.empty() ? std::string("?") : path) + " allows CPUs " +
         (cpus.empty() ? format_cpulist(thread_affinity(0)) : cpus);
}

}  // namespace

CpuTopology read_cpu_topology(const std::string& host_root) {
  CpuTopology t;
  std::string base = host_root + "/sys/devices/system/cpu";
  auto online = parse_cpulist(read_first_line(base + "/online"));
  if (!online) {
    throw Error(Exit::kEnvironment, "cannot read the online CPUs from " + base + "/online");
  }
  t.online = *online;
  for (int cpu : t.online) {
    auto s = parse_cpulist(
        read_first_line(base + "/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list"));
    t.siblings[cpu] = s ? *s : std::vector<int>{cpu};
  }
  t.allowed = thread_affinity(0);
  return t;
}

std::vector<std::string> check_pin_plan(const Profile& profile, const CpuTopology& topo) {
  const Pinning& pin = profile.pinning;
  std::set<int> online(topo.online.begin(), topo.online.end());
  std::set<int> allowed(topo.allowed.begin(), topo.allowed.end());
  std::vector<std::pair<std::string, std::vector<int>>> sets = {
      {"/pinning/vcpus", pin.all_vcpu_cpus()}, {"/pinning/emulator", pin.emulator}};
  for (size_t i = 0; i < pin.iothreads.size(); ++i) {
    sets.push_back({"/pinning/iothreads/" + std::to_string(i) + "/cpus", pin.iothreads[i].cpus});
  }
  std::vector<std::string> problems;
  for (const auto& [path, cpus] : sets) {
    for (int c : cpus) {
      if (!online.count(c)) {
        problems.push_back(profile.file + ": " + path + ": CPU " + std::to_string(c) +
                           " is not online on this host (online: " + format_cpulist(topo.online) +
                           ")");
      } else if (!allowed.count(c)) {
        problems.push_back(profile.file + ": " + path + ": CPU " + std::to_string(c) +
                           " is outside the launcher's cpuset (" + own_cpuset() + ")");
      }
    }
  }
  if (!problems.empty()) {
    std::string msg = "the pin plan does not fit this host:";
    for (const auto& p : problems) msg += "\n  " + p;
    throw Error(Exit::kUsage, msg, "pick CPUs from the online set, or widen the cpuset");
  }

  std::vector<std::string> warnings;
  // Guest core k holds vCPUs [k*T, (k+1)*T). Host SMT siblings should serve
  // one guest core, or the guest schedules two "cores" on one physical core.
  int threads = std::max(1, profile.cpu.threads);
  std::map<int, int> guest_core_of_cpu;
  for (size_t v = 0; v < pin.vcpus.size(); ++v) guest_core_of_cpu[pin.vcpus[v]] = int(v) / threads;
  std::set<std::pair<int, int>> reported;
  for (const auto& [cpu, core] : guest_core_of_cpu) {
    auto sib = topo.siblings.find(cpu);
    if (sib == topo.siblings.end()) continue;
    for (int other : sib->second) {
      auto it = guest_core_of_cpu.find(other);
      if (other != cpu && it != guest_core_of_cpu.end() && it->second != core &&
          reported.insert({std::min(cpu, other), std::max(cpu, other)}).second) {
        warnings.push_back("host CPUs " + std::to_string(std::min(cpu, other)) + " and " +
                           std::to_string(std::max(cpu, other)) +
                           " are SMT siblings but serve different guest cores; pin sibling "
                           "pairs to the vCPUs of one guest core (cpu.topology.threads)");
      }
    }
  }
  std::vector<int> shared;
  std::vector<int> vcpu_cpus = pin.all_vcpu_cpus();
  for (int c : pin.emulator) {
    if (std::find(vcpu_cpus.begin(), vcpu_cpus.end(), c) != vcpu_cpus.end()) shared.push_back(c);
  }
  if (!shared.empty()) {
    warnings.push_back("the emulator set shares CPUs " + format_cpulist(shared) +
                       " with vCPUs; emulator work will preempt the guest there");
  }
  // QEMU names an iothread "IO <id>"; the kernel keeps names to 15 bytes and
  // refuses longer ones, so the thread stays "qemu-system-x86".
  for (size_t i = 0; i < pin.iothreads.size(); ++i) {
    const std::string& id = pin.iothreads[i].id;
    if (id.size() > 12) {
      warnings.push_back(profile.file + ": /pinning/iothreads/" + std::to_string(i) + "/id: \"" +
                         id + "\" is longer than 12 bytes, too long for a thread name (\"IO " + id +
                         "\" > 15): top, ps and `latency --pid` will show the iothread as "
                         "qemu-system-x86");
    }
  }
  return warnings;
}

std::vector<ThreadInfo> list_threads(pid_t pid, const std::string& proc_root) {
  std::string dir = proc_root + "/" + std::to_string(pid) + "/task";
  std::vector<ThreadInfo> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw system_error(Exit::kFailed, "cannot list the threads in", dir, errno);
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    ThreadInfo t;
    t.tid = std::stoi(e->d_name);
    t.name = read_first_line(dir + "/" + e->d_name + "/comm");
    out.push_back(t);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.tid < b.tid; });
  return out;
}

std::vector<ThreadInfo> find_vhost_kthreads(pid_t qemu_pid, const std::string& proc_root) {
  std::vector<ThreadInfo> out;
  std::string want = "vhost-" + std::to_string(qemu_pid);
  DIR* d = ::opendir(proc_root.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string comm = read_first_line(proc_root + "/" + e->d_name + "/comm");
    if (comm == want) out.push_back({std::stoi(e->d_name), comm});
  }
  ::closedir(d);
  return out;
}

std::vector<int> thread_affinity(pid_t tid) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(tid, sizeof set, &set) != 0) return {};
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

void apply_pins(const std::vector<ThreadPin>& pins, std::optional<int> realtime_priority,
                RealtimePolicy policy) {
  for (const ThreadPin& p : pins) {
    if (p.cpus.empty()) continue;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : p.cpus) CPU_SET(c, &set);
    if (::sched_setaffinity(p.tid, sizeof set, &set) != 0) {
      int err = errno;
      if (err == ESRCH) continue;  // the thread exited meanwhile: nothing to pin
      throw system_error(
          Exit::kFailed,
          "cannot pin " + p.label + " (" + p.name + ", tid " + std::to_string(p.tid) + ") to CPUs",
          format_cpulist(p.cpus), err, err == EINVAL ? "the launcher's " + own_cpuset() : "");
    }
    std::optional<int> prio = p.realtime_priority;
    if (!prio && p.role == ThreadRole::kVcpu) prio = realtime_priority;
    if (prio) {
      sched_param param{};
      param.sched_priority = *prio;
      bool rr = policy == RealtimePolicy::kRr;
      if (::sched_setscheduler(p.tid, rr ? SCHED_RR : SCHED_FIFO, &param) != 0) {
        int err = errno;
        if (err == ESRCH) continue;
        throw system_error(Exit::kFailed,
                           std::string("cannot set ") + (rr ? "SCHED_RR" : "SCHED_FIFO") +
                               " priority " + std::to_string(*prio) + " for",
                           p.label, err, "real-time scheduling needs root or CAP_SYS_NICE");
      }
    }
  }
}

std::string format_pin_table(const std::vector<ThreadPin>& pins) {
  std::ostringstream out;
  char line[160];
  std::snprintf(line, sizeof line, "  %-18s %8s  %-14s %s\n", "THREAD", "TID", "ROLE", "CPUS");
  out << line;
  for (const ThreadPin& p : pins) {
    std::snprintf(line, sizeof line, "  %-18s %8d  %-14s %s\n", p.name.c_str(), p.tid,
                  p.label.c_str(), format_cpulist(thread_affinity(p.tid)).c_str());
    out << line;
  }
  return out.str();
}

}  // namespace pl
