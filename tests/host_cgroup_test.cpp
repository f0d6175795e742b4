// Issue 22, item 3, on this machine's real cpuset hierarchy (cgroup v1 at
// /sys/fs/cgroup/cpuset): AllowedCPUs on the slices confines every process
// below them, the launcher and the QEMU it forks included, so pinning a vCPU
// to a VM CPU fails with EINVAL -- unless the launcher first moves into a
// scope of its own outside the restricted slices (machine.slice).
//
// systemd is not PID 1 here, so a small ServiceManager plays systemd's part
// on real cgroupfs: each unit is a cpuset cgroup below a test directory, and
// AllowedCPUs is the cgroup's cpuset.cpus. What is tested is the kernel's
// rule (a child cgroup's CPUs are within its parent's; sched_setaffinity
// outside the task's cpuset is EINVAL) and what the handover does about it.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "core/cpulist.h"
#include "core/error.h"
#include "host/handover.h"
#include "sim_host.h"

namespace pl::host {
namespace {

namespace fsys = std::filesystem;

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

void write_file(const std::string& path, const std::string& value) {
  std::ofstream out(path);
  out << value << std::flush;
  if (!out) throw Error(Exit::kFailed, "writing \"" + value + "\" to " + path + " failed");
}

/// systemd's unit tree on real cpuset (v1) cgroups under `base`.
class CgroupfsServices : public ServiceManager {
 public:
  explicit CgroupfsServices(std::string base) : base_(std::move(base)) {
    const std::string root_cpus = read_line("/sys/fs/cgroup/cpuset/cpuset.cpus");
    const std::string mems = read_line("/sys/fs/cgroup/cpuset/cpuset.mems");
    for (const char* u : {"", "/system.slice", "/user.slice", "/init.scope", "/machine.slice",
                          "/user.slice/session-1.scope"}) {
      fsys::create_directory(base_ + u);
      write_file(base_ + u + "/cpuset.cpus", root_cpus);
      write_file(base_ + u + "/cpuset.mems", mems);
    }
    paths_ = {{"system.slice", "/system.slice"},
              {"user.slice", "/user.slice"},
              {"init.scope", "/init.scope"},
              {"machine.slice", "/machine.slice"},
              {"session-1.scope", "/user.slice/session-1.scope"}};
  }
  std::string dir(const std::string& unit) const { return base_ + paths_.at(unit); }

  bool exists(const std::string& unit) override { return paths_.count(unit) > 0; }
  std::string active_state(const std::string& unit) override {
    return exists(unit) ? "active" : "inactive";
  }
  void stop(const std::string&) override {}
  void start(const std::string&) override {}
  std::string allowed_cpus(const std::string& unit) override { return allowed_[unit]; }
  /// AllowedCPUs= on a slice narrows everything below it: on v1, where a
  /// child's cpuset.cpus must stay within its parent's, narrow the children
  /// first and widen the parent first.
  void set_allowed_cpus(const std::string& unit, const std::string& cpus) override {
    const std::string d = dir(unit);
    const std::string parent = read_line(fsys::path(d).parent_path().string() + "/cpuset.cpus");
    const std::string mask = cpus.empty() ? parent : cpus;
    std::vector<std::string> below;
    for (const auto& [u, p] : paths_) {
      if (u != unit && (base_ + p).starts_with(d + "/")) below.push_back(base_ + p);
    }
    if (!cpus.empty()) {
      for (const auto& b : below) write_file(b + "/cpuset.cpus", mask);
      write_file(d + "/cpuset.cpus", mask);
    } else {
      write_file(d + "/cpuset.cpus", mask);
      for (const auto& b : below) write_file(b + "/cpuset.cpus", mask);
    }
    allowed_[unit] = cpus;
  }
  std::string unit_of(pid_t pid) override {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
    for (std::string line; std::getline(in, line);) {
      if (auto at = line.find(":cpuset:"); at != std::string::npos)
        return line.substr(line.rfind('/') + 1);
    }
    return "";
  }
  void move_to_scope(const std::string& scope, const std::string& slice, pid_t pid) override {
    const std::string d = dir(slice) + "/" + scope;
    fsys::create_directory(d);
    write_file(d + "/cpuset.cpus", read_line(dir(slice) + "/cpuset.cpus"));
    write_file(d + "/cpuset.mems", read_line(dir(slice) + "/cpuset.mems"));
    write_file(d + "/cgroup.procs", std::to_string(pid));
    paths_[scope] = paths_.at(slice) + "/" + scope;
  }
  void leave_scope(const std::string& scope, pid_t pid, const std::string& unit) override {
    if (!paths_.count(scope)) return;
    if (unit_of(pid) == scope) write_file(dir(unit) + "/cgroup.procs", std::to_string(pid));
    if (read_line(dir(scope) + "/cgroup.procs").empty()) {
      ::rmdir(dir(scope).c_str());
      paths_.erase(scope);
    }
  }

 private:
  std::string base_;
  std::map<std::string, std::string> paths_;  // unit -> path below base_
  std::map<std::string, std::string> allowed_;
};

/// Removes a cgroup tree deepest first (rmdir is how cgroups go).
void remove_cgroups(const std::string& base) {
  if (!fsys::exists(base)) return;
  std::vector<fsys::path> dirs;
  for (auto it = fsys::recursive_directory_iterator(base);
       it != fsys::recursive_directory_iterator(); ++it) {
    if (it->is_directory()) dirs.push_back(it->path());
  }
  std::sort(dirs.rbegin(), dirs.rend());
  for (const auto& d : dirs) ::rmdir(d.c_str());
  ::rmdir(base.c_str());
}

/// What QEMU's vCPU pinning does: a forked child sets its affinity to `cpu`.
/// Returns 0 or the errno of sched_setaffinity.
int fork_and_pin(int cpu) {
  pid_t pid = ::fork();
  if (pid == 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ::_exit(::sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : errno);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

TEST(HostCgroup, IsolatedHostCpusDoNotConfineTheLauncherOrQemuOnARealCpuset) {
  if (!fsys::exists("/sys/fs/cgroup/cpuset/cpuset.cpus") || ::geteuid() != 0)
    GTEST_SKIP() << "needs root and the cgroup v1 cpuset hierarchy";
  auto online = parse_cpulist(read_line("/sys/fs/cgroup/cpuset/cpuset.cpus"));
  if (!online || online->size() < 2) GTEST_SKIP() << "needs two CPUs in the root cpuset";
  const int vm_cpu = online->front(), host_cpu = online->back();
  const std::string base = "/sys/fs/cgroup/cpuset/pl-test-" + std::to_string(::getpid());

  // The launcher runs in a child process: it moves between real cgroups.
  pid_t launcher = ::fork();
  if (launcher == 0) {
    int rc = 0;
    try {
      sim::SimHost sim;
      CgroupfsServices services(base);
      // Started from a terminal: in the login session's scope below user.slice.
      write_file(services.dir("session-1.scope") + "/cgroup.procs", std::to_string(::getpid()));
      HandoverConfig c;
      c.vm_name = "cg" + std::to_string(::getpid());
      c.pci_addresses = {"0000:03:00.0"};
      c.display_manager = "";
      c.isolate_host_cpus = std::to_string(host_cpu);
      c.vm_cpus = {vm_cpu};
      HostEnv henv = sim.env();
      HostEnv real_env{henv.fs, services, henv.modules, henv.clock, &std::cerr, {}};
      Handover handover(c, real_env);
      handover.prepare();
      const std::string cpuset =
          read_line(services.dir(services.unit_of(::getpid())) + "/cpuset.cpus");
      std::fprintf(stderr, "launcher in %s, cpuset %s; user.slice cpuset %s\n",
                   services.unit_of(::getpid()).c_str(), cpuset.c_str(),
                   read_line(services.dir("user.slice") + "/cpuset.cpus").c_str());
      int err = fork_and_pin(vm_cpu);  // QEMU's vCPU onto the VM's CPU
      if (err != 0) {
        std::fprintf(stderr, "pinning to CPU %d failed: %s\n", vm_cpu, std::strerror(err));
        rc = 10;
      }
      handover.release();
      if (services.unit_of(::getpid()) != "session-1.scope") rc = rc ? rc : 11;
      // Out of the test tree before it is removed.
      write_file("/sys/fs/cgroup/cpuset/cgroup.procs", std::to_string(::getpid()));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "launcher: %s\n", e.what());
      write_file("/sys/fs/cgroup/cpuset/cgroup.procs", std::to_string(::getpid()));
      rc = 12;
    }
    ::_exit(rc);
  }
  int status = 0;
  ::waitpid(launcher, &status, 0);
  const bool left =
      fsys::exists(base + "/machine.slice/passlaunch-cg" + std::to_string(launcher) + ".scope");
  remove_cgroups(base);
  EXPECT_FALSE(left) << "the launcher's scope was left behind";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "10: pinning a vCPU to the VM's CPU failed (EINVAL: the launcher was confined); 11: "
         "the launcher did not return to its session; 12: the handover failed";
  EXPECT_FALSE(fsys::exists(base)) << "the test's cgroups could not be removed";
}

}  // namespace
}  // namespace pl::host
