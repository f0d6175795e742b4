// Real implementations of the host seams: systemctl, libkmod, steady clock,
// and a small process runner.
#include <fcntl.h>
#include <libkmod.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "core/error.h"
#include "core/text.h"
#include "host/host_env.h"

extern char** environ;

namespace pl::host {

ProcessResult run_process(const std::vector<std::string>& argv,
                          const std::vector<std::string>& env) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0)
    throw system_error(Exit::kEnvironment, "pipe for", argv[0], errno);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
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
  int rc = ::posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    throw system_error(Exit::kEnvironment, "cannot start", argv[0], rc);
  }
  ProcessResult result;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    result.output.append(buf, static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
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
  void stop(const std::string& unit) override { systemctl({"stop", unit}, true); }
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

class KmodLoader : public ModuleLoader {
 public:
  explicit KmodLoader(const std::string& dir)
      : ctx_(kmod_new(dir.empty() ? nullptr : dir.c_str(), nullptr)) {
    if (!ctx_) throw Error(Exit::kEnvironment, "libkmod: cannot create a context");
    kmod_load_resources(ctx_);
  }
  ~KmodLoader() override { kmod_unref(ctx_); }

  int insert(const std::string& name) override {
    kmod_module* mod = nullptr;
    int rc = kmod_module_new_from_name(ctx_, name.c_str(), &mod);
    if (rc < 0) return -rc;
    rc = kmod_module_probe_insert_module(mod, KMOD_PROBE_APPLY_BLACKLIST_ALIAS_ONLY, nullptr,
                                         nullptr, nullptr, nullptr);
    kmod_module_unref(mod);
    return rc < 0 ? -rc : 0;
  }
  int remove(const std::string& name) override {
    kmod_module* mod = nullptr;
    int rc = kmod_module_new_from_name(ctx_, name.c_str(), &mod);
    if (rc < 0) return -rc;
    rc = kmod_module_remove_module(mod, 0);
    kmod_module_unref(mod);
    return rc < 0 ? -rc : 0;
  }
  std::vector<std::string> dependencies(const std::string& name) override {
    std::vector<std::string> out;
    kmod_module* mod = nullptr;
    if (kmod_module_new_from_name(ctx_, name.c_str(), &mod) < 0) return out;
    add_deps(mod, out);
    kmod_module_unref(mod);
    return out;
  }

 private:
  // Depth first, so a dependency comes before the modules that need it.
  static void add_deps(kmod_module* mod, std::vector<std::string>& out) {
    kmod_list* deps = kmod_module_get_dependencies(mod);
    kmod_list* it = nullptr;
    kmod_list_foreach(it, deps) {
      kmod_module* dep = kmod_module_get_module(it);
      add_deps(dep, out);
      std::string n = kmod_module_get_name(dep);
      if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
      kmod_module_unref(dep);
    }
    kmod_module_unref_list(deps);
  }
  kmod_ctx* ctx_;
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
