// The seams between the handover logic and the host: files (HostFs), the
// service manager, kernel modules and the clock. Real implementations talk to
// systemd, libkmod and the steady clock; tests substitute a simulated host
// that follows the kernel's rules.
#pragma once

#include <chrono>
#include <functional>
#include <iosfwd>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "host/host_fs.h"

namespace pl::host {

/// systemd as the handover needs it. Errors throw pl::Error.
class ServiceManager {
 public:
  virtual ~ServiceManager() = default;
  /// The unit is known to the service manager (LoadState is not "not-found").
  virtual bool exists(const std::string& unit) = 0;
  virtual bool is_active(const std::string& unit) = 0;
  /// Stops / starts and waits for the job to finish.
  virtual void stop(const std::string& unit) = 0;
  virtual void start(const std::string& unit) = 0;
  /// AllowedCPUs of a slice or scope; "" when unrestricted.
  virtual std::string allowed_cpus(const std::string& unit) = 0;
  /// Sets AllowedCPUs for this boot only ("" lifts the restriction).
  virtual void set_allowed_cpus(const std::string& unit, const std::string& cpus) = 0;
};

/// Loading and unloading kernel modules. State (refcnt, holders) is read from
/// /sys/module through HostFs; these only act.
class ModuleLoader {
 public:
  virtual ~ModuleLoader() = default;
  /// Loads a module with its dependencies and modprobe.d options. 0 or errno.
  virtual int insert(const std::string& name) = 0;
  /// Unloads one module without waiting. 0, or errno (EBUSY/EAGAIN while in use).
  virtual int remove(const std::string& name) = 0;
  /// The modules `name` needs, transitively, in load order, without `name`
  /// itself (sysfs names, underscores).
  virtual std::vector<std::string> dependencies(const std::string& name) = 0;
};

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::steady_clock::time_point now() = 0;
  virtual void sleep_for(std::chrono::milliseconds d) = 0;
};

/// Everything host-facing code needs, passed explicitly.
struct HostEnv {
  HostFs& fs;
  ServiceManager& services;
  ModuleLoader& modules;
  Clock& clock;
  /// Progress lines ("prepare 2/7 display: ... (0.31 s)"); may be null.
  std::ostream* log = nullptr;
  /// Called after every host change and after every step ("change", "step");
  /// tests use it to kill the process at each point. May be empty.
  std::function<void(const std::string& event)> on_event;
  /// Devices whose unbind timed out: their driver may still hold the device
  /// lock, so any further sysfs access to them could block for good. They are
  /// not touched again by this process; the journal keeps their inverse.
  std::set<std::string> stuck_devices = {};
};

/// systemctl-backed service manager (the real host).
std::unique_ptr<ServiceManager> make_systemd_services();
/// libkmod-backed module loader (the real host). `module_dir` empty: the
/// running kernel's /lib/modules/RELEASE.
std::unique_ptr<ModuleLoader> make_kmod_loader(const std::string& module_dir = "");
std::unique_ptr<Clock> make_steady_clock();

/// The real host under `root` ("/" normally), owning its seams.
struct RealHost {
  explicit RealHost(const std::string& root);
  HostFs fs;
  std::unique_ptr<ServiceManager> services;
  std::unique_ptr<ModuleLoader> modules;
  std::unique_ptr<Clock> clock;
  HostEnv env(std::ostream* log = nullptr);
};

/// Result of a finished child process.
struct ProcessResult {
  int status = -1;     ///< exit status, or 128+signal
  std::string output;  ///< stdout (and stderr when merged)
};

/// Runs argv[0] (searched in PATH) in its own process group with extra
/// environment variables ("NAME=value"), capturing stdout+stderr until it
/// exits (not until every child it left closes the pipe). After `timeout`
/// the whole group is SIGKILLed (status 137). Throws when it cannot start.
ProcessResult run_process(const std::vector<std::string>& argv,
                          const std::vector<std::string>& env = {},
                          std::chrono::milliseconds timeout = std::chrono::minutes(5));

}  // namespace pl::host
