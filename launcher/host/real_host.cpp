// Real implementations of the host seams: systemctl, libkmod, steady clock,
// and a small process runner.
#include <dlfcn.h>
#include <fcntl.h>
#include <libkmod.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <thread>
#include <type_traits>

#include "core/error.h"
#include "core/text.h"
#include "host/host_env.h"

extern char** environ;

namespace pl::host {

ProcessResult run_process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                          std::chrono::milliseconds timeout) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0)
    throw system_error(Exit::kEnvironment, "pipe for", argv[0], errno);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  // Its own process group, so that a timeout can stop whatever it started.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  env_strings.insert(env_strings.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, args[0], &fa, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    throw system_error(Exit::kEnvironment, "cannot start", argv[0], rc);
  }
  // Read until EOF or until the process has exited (a background child it
  // left may hold the pipe open for ever), at most until the deadline.
  ProcessResult result;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  int status = 0;
  bool exited = false, eof = false;
  while (!exited) {
    if (!eof) {
      pollfd p{pipefd[0], POLLIN, 0};
      if (::poll(&p, 1, 100) > 0) {
        ssize_t n = ::read(pipefd[0], buf, sizeof buf);
        if (n > 0) {
          result.output.append(buf, static_cast<size_t>(n));
          continue;
        }
        if (n == 0) eof = true;
      }
    }
    pid_t w = ::waitpid(pid, &status, eof ? 0 : WNOHANG);
    if (w == pid) exited = true;
    if (!exited && std::chrono::steady_clock::now() > deadline) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.output += "\n(killed after " + std::to_string(timeout.count() / 1000) + " s)";
      exited = true;
    }
  }
  // What it wrote just before exiting.
  ::fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) {
    result.output.append(buf, static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

namespace {

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class SystemdServices : public ServiceManager {
 public:
  bool exists(const std::string& unit) override {
    return trim(systemctl({"show", "-p", "LoadState", "--value", unit}, true).output) !=
           "not-found";
  }
  // ActiveState itself, not `systemctl is-active`: that is false already
  // while the unit is deactivating and its processes still run.
  std::string active_state(const std::string& unit) override {
    return trim(systemctl({"show", "-p", "ActiveState", "--value", unit}, true).output);
  }
  // --no-block: the job is queued and the caller waits with its own deadline
  // (wait_inactive), so a unit with a long TimeoutStopSec cannot stall us.
  void stop(const std::string& unit) override { systemctl({"stop", "--no-block", unit}, true); }
  void start(const std::string& unit) override { systemctl({"start", unit}, true); }
  std::string allowed_cpus(const std::string& unit) override {
    return trim(systemctl({"show", "-p", "AllowedCPUs", "--value", unit}, true).output);
  }
  void set_allowed_cpus(const std::string& unit, const std::string& cpus) override {
    systemctl({"set-property", "--runtime", unit, "AllowedCPUs=" + cpus}, true);
  }
  std::string unit_of(pid_t pid) override { return cgroup_unit(pid); }
  // StartTransientUnit with PIDs= moves a running process into a new scope
  // (what systemd-machined does for libvirt's VMs); the job is asynchronous,
  // so wait until /proc/PID/cgroup shows the scope.
  void move_to_scope(const std::string& scope, const std::string& slice, pid_t pid) override {
    busctl({"StartTransientUnit", "ssa(sv)a(sa(sv))", scope, "fail", "3", "PIDs", "au", "1",
            std::to_string(pid), "Slice", "s", slice, "Description", "s",
            "passlaunch: the launcher and its QEMU", "0"});
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (cgroup_unit(pid) != scope) {
      if (std::chrono::steady_clock::now() > deadline) {
        throw Error(Exit::kEnvironment,
                    "process " + std::to_string(pid) + " did not move into " + scope +
                        " within 10 s (it is in " + cgroup_unit(pid) + ")",
                    "check `systemctl status " + scope + "`");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  void leave_scope(const std::string& scope, pid_t pid, const std::string& unit) override {
    // A dead launcher left the scope already; an empty scope is collected.
    if (cgroup_unit(pid) != scope) return;
    busctl({"AttachProcessesToUnit", "ssau", unit, "", "1", std::to_string(pid)});
  }

 private:
  /// Last component of the process's cgroup path (cgroup2 "0::" line, or the
  /// name=systemd hierarchy on a v1-only host); "" when the process is gone.
  static std::string cgroup_unit(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
    std::string line, v2, named;
    while (std::getline(in, line)) {
      if (line.starts_with("0::")) v2 = line.substr(3);
      if (line.find(":name=systemd:") != std::string::npos)
        named = line.substr(line.find(":name=systemd:") + 14);
    }
    std::string path = !v2.empty() && v2 != "/" ? v2 : named;
    return path.empty() ? "" : path.substr(path.rfind('/') + 1);
  }
  static void busctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"busctl", "call", "org.freedesktop.systemd1",
                               "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"});
    ProcessResult r = run_process(args);
    if (r.status != 0) {
      throw Error(Exit::kFailed, "`" + join(args, " ") + "` failed (status " +
                                     std::to_string(r.status) + "): " + trim(r.output));
    }
  }

 public:
 private:
  static ProcessResult systemctl(std::vector<std::string> args, bool must_succeed) {
    args.insert(args.begin(), "systemctl");
    ProcessResult r = run_process(args);
    if (must_succeed && r.status != 0) {
      throw Error(Exit::kFailed, "`" + join(args, " ") + "` failed (status " +
                                     std::to_string(r.status) + "): " + trim(r.output));
    }
    return r;
  }
};

/// libkmod, loaded when a module is first touched. libkmod brings libcrypto,
/// libzstd and liblzma (about 1.7 MiB resident); only the handover's module
/// steps need them, so a supervisor that never unloads a driver (no
/// passthrough) does not map them at all.
struct KmodApi {
  decltype(&kmod_new) new_ctx;
  decltype(&kmod_unref) unref;
  decltype(&kmod_load_resources) load_resources;
  decltype(&kmod_module_new_from_name) module_new_from_name;
  decltype(&kmod_module_probe_insert_module) probe_insert_module;
  decltype(&kmod_module_remove_module) remove_module;
  decltype(&kmod_module_unref) module_unref;
  decltype(&kmod_module_unref_list) module_unref_list;
  decltype(&kmod_module_get_dependencies) get_dependencies;
  decltype(&kmod_module_get_softdeps) get_softdeps;
  decltype(&kmod_module_get_module) get_module;
  decltype(&kmod_module_get_name) get_name;
  decltype(&kmod_list_next) list_next;

  static const KmodApi& get() {
    static const KmodApi api = load();
    return api;
  }

 private:
  static KmodApi load() {
    void* lib = ::dlopen("libkmod.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      throw Error(Exit::kEnvironment, std::string("cannot load libkmod: ") + ::dlerror(),
                  "install libkmod2");
    }
    KmodApi a;
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(lib, name));
      if (!fn) throw Error(Exit::kEnvironment, std::string("libkmod lacks ") + name);
    };
    sym(a.new_ctx, "kmod_new");
    sym(a.unref, "kmod_unref");
    sym(a.load_resources, "kmod_load_resources");
    sym(a.module_new_from_name, "kmod_module_new_from_name");
    sym(a.probe_insert_module, "kmod_module_probe_insert_module");
    sym(a.remove_module, "kmod_module_remove_module");
    sym(a.module_unref, "kmod_module_unref");
    sym(a.module_unref_list, "kmod_module_unref_list");
    sym(a.get_dependencies, "kmod_module_get_dependencies");
    sym(a.get_softdeps, "kmod_module_get_softdeps");
    sym(a.get_module, "kmod_module_get_module");
    sym(a.get_name, "kmod_module_get_name");
    sym(a.list_next, "kmod_list_next");
    return a;
  }
};

class KmodLoader : public ModuleLoader {
 public:
  explicit KmodLoader(std::string dir) : dir_(std::move(dir)) {}
  ~KmodLoader() override {
    if (ctx_) KmodApi::get().unref(ctx_);
  }

  int insert(const std::string& name) override {
    const KmodApi& k = KmodApi::get();
    kmod_module* mod = nullptr;
    int rc = k.module_new_from_name(ctx(), name.c_str(), &mod);
    if (rc < 0) return -rc;
    rc = k.probe_insert_module(mod, KMOD_PROBE_APPLY_BLACKLIST_ALIAS_ONLY, nullptr, nullptr,
                               nullptr, nullptr);
    k.module_unref(mod);
    return rc < 0 ? -rc : 0;
  }
  int remove(const std::string& name) override {
    const KmodApi& k = KmodApi::get();
    kmod_module* mod = nullptr;
    int rc = k.module_new_from_name(ctx(), name.c_str(), &mod);
    if (rc < 0) return -rc;
    rc = k.remove_module(mod, 0);
    k.module_unref(mod);
    return rc < 0 ? -rc : 0;
  }
  std::vector<std::string> load_order(const std::string& name) override {
    const KmodApi& k = KmodApi::get();
    std::vector<std::string> out;
    kmod_module* mod = nullptr;
    if (k.module_new_from_name(ctx(), name.c_str(), &mod) < 0) return out;
    add_module(k, mod, out);
    k.module_unref(mod);
    return out;
  }

 private:
  kmod_ctx* ctx() {
    if (!ctx_) {
      const KmodApi& k = KmodApi::get();
      ctx_ = k.new_ctx(dir_.empty() ? nullptr : dir_.c_str(), nullptr);
      if (!ctx_) throw Error(Exit::kEnvironment, "libkmod: cannot create a context");
      k.load_resources(ctx_);
    }
    return ctx_;
  }
  // As libkmod builds modprobe's probe list: for each module, its "pre:"
  // soft dependencies, its hard dependencies (depth first), the module, then
  // its "post:" soft dependencies. A soft dependency that is not installed
  // (vfio_iommu_spapr_tce on x86) resolves to nothing and is skipped.
  static void add_module(const KmodApi& k, kmod_module* mod, std::vector<std::string>& out) {
    const std::string n = k.get_name(mod);
    if (std::find(out.begin(), out.end(), n) != out.end()) return;
    kmod_list *pre = nullptr, *post = nullptr;
    k.get_softdeps(mod, &pre, &post);
    add_list(k, pre, out);
    kmod_list* deps = k.get_dependencies(mod);
    for (kmod_list* it = deps; it != nullptr; it = k.list_next(deps, it)) {
      kmod_module* dep = k.get_module(it);
      add_module(k, dep, out);
      k.module_unref(dep);
    }
    k.module_unref_list(deps);
    if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
    add_list(k, post, out);
  }
  static void add_list(const KmodApi& k, kmod_list* list, std::vector<std::string>& out) {
    for (kmod_list* it = list; it != nullptr; it = k.list_next(list, it)) {
      kmod_module* m = k.get_module(it);
      add_module(k, m, out);
      k.module_unref(m);
    }
    if (list) k.module_unref_list(list);
  }
  std::string dir_;
  kmod_ctx* ctx_ = nullptr;
};

class SteadyClock : public Clock {
 public:
  std::chrono::steady_clock::time_point now() override { return std::chrono::steady_clock::now(); }
  void sleep_for(std::chrono::milliseconds d) override { std::this_thread::sleep_for(d); }
};

}  // namespace

std::unique_ptr<ServiceManager> make_systemd_services() {
  return std::make_unique<SystemdServices>();
}
std::unique_ptr<ModuleLoader> make_kmod_loader(const std::string& module_dir) {
  return std::make_unique<KmodLoader>(module_dir);
}
std::unique_ptr<Clock> make_steady_clock() { return std::make_unique<SteadyClock>(); }

RealHost::RealHost(const std::string& root)
    : fs(root),
      services(make_systemd_services()),
      modules(make_kmod_loader()),
      clock(make_steady_clock()) {}

HostEnv RealHost::env(std::ostream* log) {
  return HostEnv{fs, *services, *modules, *clock, log, {}};
}

}  // namespace pl::host
