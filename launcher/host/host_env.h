// The seams between the handover logic and the host: files (HostFs), the
// service manager, kernel modules and the clock. Real implementations talk to
// systemd, libkmod and the steady clock; tests substitute a simulated host
// that follows the kernel's rules.
#pragma once

#include <sys/types.h>

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
  /// The unit's ActiveState: "active", "reloading", "refreshing" (systemd 256+),
  /// "inactive", "failed", "activating", "deactivating" (systemd's
  /// src/basic/unit-def.c).
  virtual std::string active_state(const std::string& unit) = 0;
  /// What `systemctl is-active` answers (UNIT_IS_ACTIVE_OR_RELOADING): true
  /// for active, reloading and refreshing only, so already false while the
  /// unit is still `deactivating` and its processes may still hold devices
  /// (see wait_inactive in handover.cpp).
  bool is_active(const std::string& unit) {
    const std::string s = active_state(unit);
    return s == "active" || s == "reloading" || s == "refreshing";
  }
  /// Stop queues the stop job and returns (the caller waits for ActiveState
  /// with its own deadline); start waits for the job to finish.
  virtual void stop(const std::string& unit) = 0;
  virtual void start(const std::string& unit) = 0;
  /// AllowedCPUs of a slice or scope; "" when unrestricted.
  virtual std::string allowed_cpus(const std::string& unit) = 0;
  /// Sets AllowedCPUs for this boot only ("" lifts the restriction).
  virtual void set_allowed_cpus(const std::string& unit, const std::string& cpus) = 0;
  /// The unit whose cgroup holds `pid` ("session-2.scope", "passlaunch@win11.service").
  virtual std::string unit_of(pid_t pid) = 0;
  /// Moves `pid` into a new scope `scope` under `slice` (as libvirt puts VMs in
  /// machine.slice), returning once the move is done: processes it starts
  /// later are born there, outside any slice whose AllowedCPUs is restricted.
  virtual void move_to_scope(const std::string& scope, const std::string& slice, pid_t pid) = 0;
  /// The inverse: when `pid` still lives in `scope`, moves it into `unit`;
  /// an empty scope goes away (systemd collects it).
  virtual void leave_scope(const std::string& scope, pid_t pid, const std::string& unit) = 0;
};

/// Loading and unloading kernel modules. State (refcnt, holders) is read from
/// /sys/module through HostFs; these only act.
class ModuleLoader {
 public:
  virtual ~ModuleLoader() = default;
  /// Loads a module with its dependencies, soft dependencies and modprobe.d
  /// options, as modprobe does. 0 or errno.
  virtual int insert(const std::string& name) = 0;
  /// Unloads one module without waiting (delete_module with O_NONBLOCK). 0, or
  /// errno: EAGAIN (== EWOULDBLOCK) while another module holds it or its
  /// refcount is not zero, EBUSY while it is still loading or unloading,
  /// ENOENT when it is not loaded (kernel/module/main.c).
  virtual int remove(const std::string& name) = 0;
  /// Every module insert(name) loads, `name` included, in load order: each
  /// hard dependency before its user, a soft dependency's "pre:" modules
  /// before and its "post:" modules after the module naming them (libkmod's
  /// probe list), e.g. for vfio-pci: ... vfio, vfio_iommu_type1, ...,
  /// vfio_pci_core, vfio_pci. Sysfs names (underscores).
  virtual std::vector<std::string> load_order(const std::string& name) = 0;
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
  /// Devices whose unbind or probe timed out: their driver may still hold the
  /// device lock, so any further sysfs access to them could block for good.
  /// They are not touched again by this process; the journal keeps their
  /// inverse. "*" (a module load timed out): no device is touched again.
  std::set<std::string> stuck_devices = {};
  /// Bound on each unbind, probe and module load of a restore (release,
  /// recover): a probe can hang on a device the guest left in a bad state.
  std::chrono::milliseconds restore_timeout{10000};
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
