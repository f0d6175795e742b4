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
  bool is_active(const std::string& unit) override {
    return run_process({"systemctl", "is-active", "--quiet", unit}).status == 0;
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
  std::vector<std::string> dependencies(const std::string& name) override {
    const KmodApi& k = KmodApi::get();
    std::vector<std::string> out;
    kmod_module* mod = nullptr;
    if (k.module_new_from_name(ctx(), name.c_str(), &mod) < 0) return out;
    add_deps(k, mod, out);
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
  // Depth first, so a dependency comes before the modules that need it.
  static void add_deps(const KmodApi& k, kmod_module* mod, std::vector<std::string>& out) {
    kmod_list* deps = k.get_dependencies(mod);
    for (kmod_list* it = deps; it != nullptr; it = k.list_next(deps, it)) {
      kmod_module* dep = k.get_module(it);
      add_deps(k, dep, out);
      std::string n = k.get_name(dep);
      if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
      k.module_unref(dep);
    }
    k.module_unref_list(deps);
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
