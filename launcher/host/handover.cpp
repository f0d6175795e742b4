#include "host/handover.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <ostream>
#include <set>
#include <thread>

#include "core/cpulist.h"
#include "core/error.h"
#include "core/text.h"
#include "host/usage.h"
#include "host/vfio_conf.h"
#include "net/tap.h"

namespace pl::host {

using nlohmann::json;
using std::chrono::milliseconds;

const char* step_name(Step s) {
  switch (s) {
    case Step::kCheck:
      return "check";
    case Step::kDisplay:
      return "display";
    case Step::kConsoles:
      return "consoles";
    case Step::kModules:
      return "modules";
    case Step::kVfio:
      return "vfio";
    case Step::kCpus:
      return "cpus";
    case Step::kHooks:
      return "hooks";
  }
  return "?";
}

namespace {

constexpr milliseconds kPoll{100};
constexpr const char* kIsolatedUnits[] = {"system.slice", "user.slice", "init.scope"};
constexpr const char* kMachineSlice = "machine.slice";
constexpr const char* kFramebufferDrivers[] = {"efi-framebuffer", "simple-framebuffer",
                                               "vesa-framebuffer"};

int step_number(const std::string& name) {
  for (int i = 0; i < kStepCount; ++i) {
    if (name == step_name(static_cast<Step>(i))) return i + 1;
  }
  return 0;
}

std::string seconds(std::chrono::steady_clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f s", std::chrono::duration<double>(d).count());
  return buf;
}

void emit(HostEnv& env, const std::string& event) {
  if (env.on_event) env.on_event(event);
}

void log(HostEnv& env, const std::string& line) {
  if (env.log) *env.log << "passlaunch: " << line << "\n" << std::flush;
}

/// Writes a sysfs attribute; errnos in `done_if` count as done ("No such device").
void write_attr(HostFs& fs, const std::string& path, const std::string& value,
                std::initializer_list<int> done_if = {}) {
  int err = fs.write(path, value);
  if (err == 0 || std::find(done_if.begin(), done_if.end(), err) != done_if.end()) return;
  std::string shown = value == "\n" ? "\\n" : value;
  throw system_error(Exit::kFailed, "writing \"" + shown + "\" to", fs.real(path), err);
}

std::string sysfs_module(std::string name) {
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

struct ModuleState {
  bool loaded = false;
  bool builtin = false;
  int refcnt = 0;
  std::vector<std::string> holders;
};

ModuleState module_state(const HostFs& fs, const std::string& name) {
  const std::string dir = "/sys/module/" + sysfs_module(name);
  ModuleState s;
  if (!fs.exists(dir)) return s;
  s.loaded = true;
  if (!fs.exists(dir + "/initstate")) {  // built in: nothing to unload
    s.builtin = true;
    return s;
  }
  auto ref = fs.read_trimmed(dir + "/refcnt").value_or("0");
  std::from_chars(ref.data(), ref.data() + ref.size(), s.refcnt);
  s.holders = fs.list(dir + "/holders");
  return s;
}

/// A driver call (unbind, probe, module load) that did not finish in time: it
/// may still complete later, so the journal must outlive the restore.
class StuckTimeout : public Error {
 public:
  StuckTimeout(std::string message, std::string hint, std::string pending)
      : Error(Exit::kEnvironment, std::move(message), std::move(hint)),
        pending_(std::move(pending)) {}
  /// "an unbind is still pending"
  const std::string& pending() const { return pending_; }

 private:
  std::string pending_;
};

/// Runs `call` (a sysfs write or a module load: both run a driver's remove()
/// or probe(), which can hang, e.g. on a GPU that did not reset after a guest)
/// on its own thread and waits at most `timeout`. On timeout `stuck` joins
/// env.stuck_devices and StuckTimeout is thrown; the call is left running.
int bounded(HostEnv& env, std::function<int()> call, milliseconds timeout, const std::string& what,
            const std::string& stuck, const std::string& pending) {
  auto result = std::make_shared<std::promise<int>>();
  auto done = result->get_future();
  std::thread([call = std::move(call), result] { result->set_value(call()); }).detach();
  if (done.wait_for(timeout) != std::future_status::ready) {
    env.stuck_devices.insert(stuck);
    throw StuckTimeout(what + " did not finish within " + std::to_string(timeout.count()) + " ms",
                       "the driver is stuck with the device; check `dmesg`; a reboot may be needed",
                       pending);
  }
  return done.get();
}

/// Unbinds a PCI device from its driver, bounded: a driver that hangs in
/// remove() must not hang the launcher.
void unbind_pci(HostEnv& env, const std::string& driver, const std::string& address,
                milliseconds timeout) {
  const std::string path = "/sys/bus/pci/drivers/" + driver + "/unbind";
  HostFs* fs = &env.fs;
  int err = bounded(
      env, [fs, path, address] { return fs->write(path, address); }, timeout,
      "unbinding " + address + " from " + driver, address, "an unbind is still pending");
  if (err != 0 && err != ENODEV)
    throw system_error(Exit::kFailed, "writing \"" + address + "\" to", fs->real(path), err);
}

/// Writes the address to drivers_probe, bounded: the probe runs in the write.
/// ENODEV (no driver matched) counts as done.
void probe_pci(HostEnv& env, const std::string& address, milliseconds timeout) {
  const std::string path = "/sys/bus/pci/drivers_probe";
  HostFs* fs = &env.fs;
  int err = bounded(
      env, [fs, path, address] { return fs->write(path, address); }, timeout, "probing " + address,
      address, "a probe is still pending");
  if (err != 0 && err != ENODEV)
    throw system_error(Exit::kFailed, "writing \"" + address + "\" to", fs->real(path), err);
}

/// A device whose unbind or probe timed out is not touched again (see
/// HostEnv); after a module load timed out ("*"), no device is: its probe
/// holds the lock of a device we cannot name.
void refuse_stuck(HostEnv& env, const std::string& address) {
  if (env.stuck_devices.count(address) || env.stuck_devices.count("*")) {
    throw Error(Exit::kFailed,
                "PCI device " + address +
                    (env.stuck_devices.count(address)
                         ? " is still held by its driver after a timed-out unbind or probe"
                         : " may be locked by a module load that timed out") +
                    "; not touched again by this process",
                "once `dmesg` shows the driver let go, run `passlaunch recover`");
  }
}

/// Waits until the unit's ActiveState is "inactive" or "failed". Not `is-active`:
/// that is false already in "deactivating", while ExecStop runs and the
/// unit's processes (Xorg, the compositor) may still hold the GPU.
void wait_inactive(HostEnv& env, const std::string& unit, milliseconds timeout) {
  auto deadline = env.clock.now() + timeout;
  for (;;) {
    const std::string state = env.services.active_state(unit);
    if (state == "inactive" || state == "failed") return;
    if (env.clock.now() >= deadline) {
      throw Error(Exit::kEnvironment,
                  "unit " + unit + " is still " + state + " " + std::to_string(timeout.count()) +
                      " ms after stopping it",
                  "check `systemctl status " + unit + "`");
    }
    env.clock.sleep_for(kPoll);
  }
}

/// Waits until no process holds any of the files `match` selects; session
/// processes may outlive their unit for a while. Throws naming them.
void wait_unheld(HostEnv& env, const std::function<bool(const std::string&)>& match,
                 const std::string& what, milliseconds timeout, const std::string& hint) {
  auto deadline = env.clock.now() + timeout;
  for (;;) {
    auto holders = processes_holding(env.fs, match);
    if (holders.empty()) return;
    if (env.clock.now() >= deadline) {
      throw Error(Exit::kFailed,
                  what + " still in use after " + std::to_string(timeout.count()) +
                      " ms: " + describe_holders(holders),
                  hint);
    }
    env.clock.sleep_for(kPoll);
  }
}

void unload_module(HostEnv& env, const std::string& name, milliseconds timeout) {
  // Another module needing it will not go away by waiting: say so at once.
  if (auto holders = module_state(env.fs, name).holders; !holders.empty()) {
    throw Error(Exit::kFailed,
                "kernel module " + name + " is needed by " + join(holders, ", ") +
                    ", which the profile does not unload",
                "add " + join(holders, ", ") + " to host.gpu_modules, before " + name);
  }
  auto deadline = env.clock.now() + timeout;
  for (;;) {
    int err = env.modules.remove(name);
    if (err == 0 || err == ENOENT) return;
    if (err != EBUSY && err != EAGAIN)
      throw system_error(Exit::kFailed, "unloading kernel module", name, err);
    if (env.clock.now() >= deadline) {
      ModuleState s = module_state(env.fs, name);
      std::string users = s.holders.empty() ? "" : ", used by " + join(s.holders, ", ");
      throw Error(
          Exit::kFailed,
          "kernel module " + name + " is still in use after " + std::to_string(timeout.count()) +
              " ms (refcnt " + std::to_string(s.refcnt) + users + ")",
          "stop the programs using the GPU (`passlaunch check` lists them), or add their units to "
          "the profile's units to stop");
    }
    env.clock.sleep_for(kPoll);
  }
}

/// Loads a module, bounded: its drivers probe their devices while it loads.
void load_module(HostEnv& env, const std::string& name, milliseconds timeout) {
  if (env.stuck_devices.count("*")) {
    throw Error(Exit::kFailed,
                "kernel module " + name + " not loaded: an earlier module load is still pending",
                "once `dmesg` shows the driver let go, run `passlaunch recover`");
  }
  if (module_state(env.fs, name).loaded) return;
  ModuleLoader* modules = &env.modules;
  int err = bounded(
      env, [modules, name] { return modules->insert(name); }, timeout,
      "loading kernel module " + name, "*", "a module load is still pending");
  if (err != 0 && err != EEXIST)
    throw system_error(Exit::kFailed, "loading kernel module", name, err);
}

ProcessResult run_hook(const std::string& path, const std::string& vm, const std::string& phase,
                       const std::string& devices) {
  return run_process({path}, {"PASSLAUNCH_VM=" + vm, "PASSLAUNCH_PHASE=" + phase,
                              "PASSLAUNCH_DEVICES=" + devices});
}

/// Puts a device back on `driver`: pins driver_override to it (so vfio-pci's
/// ids= cannot take it back), leaves any other driver, and reprobes. When the
/// driver's module is not loaded yet, the device waits unbound and the module
/// takes it when it loads.
void pin_pci(HostEnv& env, const std::string& address, const std::string& driver,
             milliseconds timeout) {
  refuse_stuck(env, address);
  auto d = read_pci_device(env.fs, address);
  if (!d) throw Error(Exit::kFailed, "PCI device " + address + " has disappeared");
  if (d->driver == driver) return;
  const std::string dev = "/sys/bus/pci/devices/" + address;
  if (!driver.empty() && d->driver_override != driver)
    write_attr(env.fs, dev + "/driver_override", driver);
  if (!d->driver.empty()) unbind_pci(env, d->driver, address, timeout);
  if (!driver.empty()) probe_pci(env, address, timeout);
}

/// After every inverse ran (modules are back): restore driver_override and
/// check that each device sits on its original driver again.
void settle_pci(HostEnv& env, const json& e, std::vector<std::string>& failures) {
  const std::string address = e.at("address");
  const std::string driver = e.value("driver", "");
  const std::string override_ = e.value("override", "");
  try {
    refuse_stuck(env, address);
    auto d = read_pci_device(env.fs, address);
    if (!d) throw Error(Exit::kFailed, "PCI device " + address + " has disappeared");
    if (d->driver != driver && !driver.empty() && env.fs.exists("/sys/bus/pci/drivers/" + driver)) {
      pin_pci(env, address, driver, env.restore_timeout);
    }
    d = read_pci_device(env.fs, address);
    if (!d) throw Error(Exit::kFailed, "PCI device " + address + " has disappeared");
    if (d->driver_override != override_) {
      write_attr(env.fs, "/sys/bus/pci/devices/" + address + "/driver_override",
                 override_.empty() ? "\n" : override_);
    }
    d = read_pci_device(env.fs, address);
    if (!d) throw Error(Exit::kFailed, "PCI device " + address + " has disappeared");
    if (d->driver != driver) {
      failures.push_back(address + " is " +
                         (d->driver.empty() ? "unbound" : "bound to " + d->driver) + ", expected " +
                         (driver.empty() ? "unbound" : driver));
    }
  } catch (const Error& err) {
    failures.push_back(err.what());
  }
}

/// What the console inverses find when the boot framebuffer is gone: since
/// 6.0, vfio-pci binding the boot VGA calls aperture_remove_conflicting_pci_devices,
/// whose sysfb_disable() unregisters efi-framebuffer.0 / simple-framebuffer.0
/// for good (drivers/firmware/sysfb.c); with the last framebuffer fbcon
/// unregisters and its vtcon disappears.
const char* const kSysfbGone =
    " is gone for good: vfio-pci took the boot VGA and the kernel removed the boot framebuffer "
    "(sysfb_disable); the text console comes back with the GPU driver's own framebuffer "
    "(nvidia_drm modeset=1 fbdev=1, amdgpu, i915), or after a reboot";

/// Runs one inverse. Each is idempotent: it checks the state first. Returns
/// a note for the log when what it would restore no longer exists.
std::string undo_one(HostEnv& env, const json& e, const std::string& vm,
                     const std::string& devices) {
  const std::string op = e.at("undo");
  if (op == "start_unit") {
    const std::string unit = e.at("unit");
    if (!env.services.is_active(unit)) env.services.start(unit);
  } else if (op == "write") {
    const std::string path = e.at("path"), value = e.at("value");
    auto cur = env.fs.read_trimmed(path);
    if (!cur && path.starts_with("/sys/class/vtconsole/")) {
      return path.substr(21, path.rfind('/') - 21) + kSysfbGone;
    }
    if (cur && *cur != value) write_attr(env.fs, path, value, {ENODEV});
  } else if (op == "platform_bind") {
    const std::string driver = e.at("driver"), device = e.at("device");
    if (!env.fs.exists("/sys/bus/platform/devices/" + device)) return device + kSysfbGone;
    if (!env.fs.readlink("/sys/bus/platform/devices/" + device + "/driver")) {
      write_attr(env.fs, "/sys/bus/platform/drivers/" + driver + "/bind", device, {ENODEV});
    }
  } else if (op == "load_module") {
    load_module(env, e.at("module"), env.restore_timeout);
  } else if (op == "unload_modules") {
    // Newest first (the journal lists them in unload order): vfio_pci before
    // vfio_pci_core, vfio_iommu_type1 before the vfio it holds.
    if (!env.stuck_devices.empty()) {
      // Unregistering a driver takes each of its devices' locks, which a
      // stuck unbind or probe holds: the unload would hang with it.
      throw Error(Exit::kFailed, "kernel modules " +
                                     join(e.at("modules").get<std::vector<std::string>>(), ", ") +
                                     " left loaded: a device's unbind or probe is still pending");
    }
    for (const std::string m : e.at("modules")) {
      ModuleState s = module_state(env.fs, m);
      if (!s.loaded) continue;
      int err = env.modules.remove(m);
      if (err == EAGAIN || err == EBUSY) {
        // delete_module says EWOULDBLOCK (== EAGAIN) while another module
        // holds it or its refcount is not zero, EBUSY while it is still
        // coming or going (kernel/module/main.c). Still used (by another
        // VM's devices, kvm, a module loaded since): a loaded module changes
        // nothing for the host, so it is left loaded and that is no failure.
        s = module_state(env.fs, m);
        std::string by = s.holders.empty() ? "refcnt " + std::to_string(s.refcnt)
                                           : "held by " + join(s.holders, ", ");
        log(env, "release: kernel module " + m + " is in use (" + by + "); left loaded");
        continue;
      }
      if (err != 0 && err != ENOENT)
        throw system_error(Exit::kFailed, "unloading kernel module", m, err);
    }
  } else if (op == "pci_restore") {
    pin_pci(env, e.at("address"), e.value("driver", ""), env.restore_timeout);
  } else if (op == "leave_scope") {
    env.services.leave_scope(e.at("scope"), e.at("pid").get<pid_t>(), e.at("unit"));
  } else if (op == "allowed_cpus") {
    const std::string unit = e.at("unit"), cpus = e.at("cpus");
    if (env.services.allowed_cpus(unit) != cpus) env.services.set_allowed_cpus(unit, cpus);
  } else if (op == "delete_link") {
    // A macvtap or tap that `run` created (launcher/net); absent = done.
    delete_link(e.at("ifname").get<std::string>());
  } else if (op == "hook") {
    const std::string path = e.at("path");
    auto r = run_hook(path, vm, "release", devices);
    if (r.status != 0) {
      throw Error(Exit::kFailed, "release hook " + path + " failed with status " +
                                     std::to_string(r.status) + ": " + r.output);
    }
  } else {
    throw Error(Exit::kFailed, "unknown journal entry \"" + op + "\"");
  }
  return "";
}

/// Replays a journal newest first, logging each step with its duration, then
/// deletes it. Throws (keeping the journal) when an inverse failed.
void replay(Journal& journal, HostEnv& env, const std::string& phase, bool keep_journal = false) {
  const std::string vm = journal.header().value("vm", "");
  std::vector<std::string> devs;
  if (journal.header().contains("devices"))
    devs = journal.header()["devices"].get<std::vector<std::string>>();
  const std::string devices = join(devs, " ");
  std::vector<std::string> failures;
  std::vector<json> pci;
  // A hook is not idempotent: once it ran, a "done" record says so, and a
  // later replay (after another inverse failed, or a crash in release) skips
  // it. Every other inverse checks the host first and may simply run again.
  std::set<int> done;
  for (const json& e : journal.entries()) {
    if (e.contains("done")) done.insert(e["done"].get<int>());
  }
  std::vector<json> entries;  // a copy: appending "done" records grows the journal
  for (const json& e : journal.entries()) {
    if (!e.contains("done") && !done.count(e.value("seq", 0))) entries.push_back(e);
  }
  size_t i = entries.size();
  while (i > 0) {
    // One group of inverses per prepare step, newest step first.
    const std::string step = entries[i - 1].value("step", "");
    auto t0 = env.clock.now();
    int count = 0;
    while (i > 0 && entries[i - 1].value("step", "") == step) {
      const json& e = entries[--i];
      try {
        if (auto note = undo_one(env, e, vm, devices); !note.empty()) log(env, phase + ": " + note);
        if (e.value("undo", "") == "pci_restore") pci.push_back(e);
        if (e.value("undo", "") == "hook") {
          journal.append({{"step", "done"}, {"done", e.value("seq", 0)}});
        }
      } catch (const std::exception& err) {
        failures.push_back(err.what());
      }
      ++count;
      emit(env, "undo:" + step);
    }
    log(env, phase + " " + std::to_string(step_number(step)) + "/" + std::to_string(kStepCount) +
                 " " + step + ": undid " + std::to_string(count) + " change" +
                 (count == 1 ? "" : "s") + " (" + seconds(env.clock.now() - t0) + ")");
    emit(env, "step:" + phase + ":" + step);
  }
  if (!pci.empty()) {
    auto t0 = env.clock.now();
    for (const auto& e : pci) settle_pci(env, e, failures);
    log(env, phase + ": driver_override restored on " + std::to_string(pci.size()) +
                 " device(s) (" + seconds(env.clock.now() - t0) + ")");
    emit(env, "step:" + phase + ":settle");
  }
  if (!failures.empty()) {
    throw Error(
        Exit::kFailed,
        "could not restore the host completely for " + vm + ":\n  " + join(failures, "\n  "),
        "fix the cause, then run `passlaunch recover " + vm + "` again (journal kept in " +
            journal.path() + ")");
  }
  if (!keep_journal) journal.remove();
}

bool valid_vm_name(const std::string& n) {
  if (n.empty() || n.size() > 64 || n[0] == '.' || n[0] == '-') return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

/// One change of a step: its inverse is journaled before apply() runs.
struct Change {
  std::string what;
  json undo;  ///< null: nothing to undo (a check, or covered by another inverse)
  std::function<void()> apply;
};

struct StepPlan {
  std::vector<Change> changes;
  std::string skipped;  ///< why the step does nothing, when it does nothing
};

}  // namespace

// ---- Handover -------------------------------------------------------------

Handover::Handover(HandoverConfig config, HostEnv& env) : config_(std::move(config)), env_(env) {
  if (!valid_vm_name(config_.vm_name)) {
    throw Error(Exit::kUsage, "invalid VM name \"" + config_.vm_name + "\"",
                "use letters, digits, '-', '_' and '.', at most 64 characters");
  }
  if (config_.pci_addresses.empty()) throw Error(Exit::kUsage, "no PCI devices to pass through");
  for (auto& a : config_.pci_addresses) {
    auto n = normalize_pci_address(a);
    if (!n)
      throw Error(Exit::kUsage, "invalid PCI address \"" + a + "\"",
                  "expected DDDD:BB:DD.F or BB:DD.F, e.g. 0000:01:00.0");
    a = *n;
  }
  if (config_.isolate_host_cpus && !parse_cpulist(*config_.isolate_host_cpus)) {
    throw Error(Exit::kUsage, "invalid host CPU list \"" + *config_.isolate_host_cpus + "\"",
                "expected e.g. 16-23");
  }
}

namespace {

class Steps {
 public:
  Steps(const HandoverConfig& c, HostEnv& env, const std::vector<IommuGroup>& groups,
        std::map<std::string, std::string> initial_driver)
      : c_(c), env_(env), groups_(groups), initial_driver_(std::move(initial_driver)) {}

  StepPlan plan(Step s) {
    switch (s) {
      case Step::kCheck:
        return {};
      case Step::kDisplay:
        return display();
      case Step::kConsoles:
        return consoles();
      case Step::kModules:
        return modules();
      case Step::kVfio:
        return vfio();
      case Step::kCpus:
        return cpus();
      case Step::kHooks:
        return hooks();
    }
    return {};
  }

 private:
  /// The passed devices (a member left out is unbound or on a driver the
  /// group tolerates, check_can_start made sure; it is not touched).
  std::vector<PciDevice> members(bool fresh) const {
    std::vector<PciDevice> out;
    for (const auto& g : groups_) {
      for (const auto& d : fresh ? read_group_members(env_.fs, g.number) : g.devices) {
        if (!d.is_bridge() && std::find(c_.pci_addresses.begin(), c_.pci_addresses.end(),
                                        d.address) != c_.pci_addresses.end())
          out.push_back(d);
      }
    }
    return out;
  }

  Change stop_unit(const std::string& unit) {
    return {"stop " + unit, {{"undo", "start_unit"}, {"unit", unit}}, [this, unit] {
              env_.services.stop(unit);
              wait_inactive(env_, unit, c_.unit_timeout);
            }};
  }

  StepPlan display() {
    StepPlan p;
    const std::string& dm = c_.display_manager;
    if (!dm.empty() && env_.services.exists(dm) && env_.services.is_active(dm))
      p.changes.push_back(stop_unit(dm));
    for (const auto& u : c_.stop_units) {
      if (env_.services.is_active(u)) p.changes.push_back(stop_unit(u));
    }
    auto devices = members(false);
    p.changes.push_back(
        {"wait until no process holds the GPU", nullptr, [this, devices] {
           wait_unheld(env_, gpu_files(env_.fs, devices), "the GPU is", c_.holder_timeout,
                       "stop these programs, or add their units to the profile's units to stop");
         }});
    // Unbinding a sound driver blocks, uninterruptibly, until every handle on
    // the card is closed: wait for (and name) pipewire/pulseaudio first.
    std::set<std::string> snd;
    std::vector<std::string> cards;
    for (const auto& d : devices) {
      auto nodes = sound_nodes(env_.fs, d.address);
      if (!nodes.empty()) cards.push_back(d.address);
      snd.insert(nodes.begin(), nodes.end());
    }
    if (!snd.empty()) {
      p.changes.push_back(
          {"wait until no process holds the sound devices of " + join(cards, ", "), nullptr,
           [this, snd, cards] {
             wait_unheld(
                 env_, [snd](const std::string& t) { return snd.count(t) > 0; },
                 "the sound devices of " + join(cards, ", ") + " are", c_.holder_timeout,
                 "stop the sound server of the sessions using them (pipewire, pulseaudio), or add "
                 "its unit to the profile's units to stop");
           }});
    }
    return p;
    return p;
  }

  StepPlan consoles() {
    StepPlan p;
    if (c_.unbind_vtconsoles) {
      for (const auto& v : env_.fs.list("/sys/class/vtconsole")) {
        const std::string bind = "/sys/class/vtconsole/" + v + "/bind";
        if (env_.fs.read_trimmed(bind).value_or("0") != "1") continue;
        json undo =
            c_.rebind_vtconsoles ? json{{"undo", "write"}, {"path", bind}, {"value", "1"}} : json();
        p.changes.push_back(
            {"unbind " + v, undo, [this, bind] { write_attr(env_.fs, bind, "0", {ENODEV}); }});
      }
    }
    if (c_.unbind_framebuffer) {
      for (const char* drv : kFramebufferDrivers) {
        const std::string dir = std::string("/sys/bus/platform/drivers/") + drv;
        for (const auto& dev : env_.fs.list(dir)) {
          if (dev == "module" || !env_.fs.readlink(dir + "/" + dev)) continue;
          p.changes.push_back(
              {"unbind " + dev + " from " + drv,
               {{"undo", "platform_bind"}, {"driver", drv}, {"device", dev}},
               [this, dir, dev] { write_attr(env_.fs, dir + "/unbind", dev, {ENODEV}); }});
        }
      }
    }
    if (p.changes.empty()) p.skipped = "no bound virtual console or framebuffer";
    return p;
  }

  StepPlan modules() {
    StepPlan p;
    std::vector<std::string> left;
    for (const auto& m : c_.gpu_modules) {
      ModuleState s = module_state(env_.fs, m);
      if (s.loaded && !s.builtin) left.push_back(sysfs_module(m));
    }
    // Dependency order: a module goes once none of the others still needs it.
    while (!left.empty()) {
      auto next = std::find_if(left.begin(), left.end(), [&](const std::string& m) {
        auto holders = module_state(env_.fs, m).holders;
        return std::none_of(holders.begin(), holders.end(), [&](const std::string& h) {
          return std::find(left.begin(), left.end(), h) != left.end();
        });
      });
      if (next == left.end()) next = left.begin();
      const std::string m = *next;
      left.erase(next);
      p.changes.push_back({"unload " + m, {{"undo", "load_module"}, {"module", m}}, [this, m] {
                             unload_module(env_, m, c_.module_timeout);
                           }});
    }
    if (p.changes.empty())
      p.skipped = c_.gpu_modules.empty() ? "no GPU modules in the profile"
                                         : "none of the GPU modules is loaded";
    return p;
  }

  StepPlan vfio() {
    StepPlan p;
    if (!env_.fs.exists("/sys/bus/pci/drivers/vfio-pci")) {
      // Everything modprobe will load (soft dependencies too: vfio brings
      // vfio_iommu_type1, which then holds it), journaled in unload order.
      std::vector<std::string> load;
      for (const auto& m : env_.modules.load_order("vfio-pci")) {
        if (!module_state(env_.fs, m).loaded) load.push_back(sysfs_module(m));
      }
      if (std::find(load.begin(), load.end(), "vfio_pci") == load.end()) load.push_back("vfio_pci");
      std::reverse(load.begin(), load.end());
      p.changes.push_back(
          {"load vfio-pci", {{"undo", "unload_modules"}, {"modules", load}}, [this] {
             load_module(env_, "vfio-pci", c_.module_timeout);
             if (!env_.fs.exists("/sys/bus/pci/drivers/vfio-pci")) {
               throw Error(Exit::kEnvironment, "vfio-pci loaded but its driver is not registered");
             }
           }});
    }
    auto devices = members(true);
    for (const auto& d : devices) {
      if (d.driver == "vfio-pci" && d.driver_override == "vfio-pci") continue;
      auto init = initial_driver_.find(d.address);
      std::string original = init != initial_driver_.end() ? init->second : d.driver;
      const std::string addr = d.address;
      p.changes.push_back(
          {addr + ": driver_override=vfio-pci",
           {{"undo", "pci_restore"},
            {"address", addr},
            {"driver", original},
            {"override", d.driver_override}},
           [this, addr] {
             write_attr(env_.fs, "/sys/bus/pci/devices/" + addr + "/driver_override", "vfio-pci");
           }});
    }
    // Unbind every member first, then bind them all (as libvirt does for a group).
    for (const auto& d : devices) {
      if (d.driver.empty() || d.driver == "vfio-pci") continue;
      const std::string addr = d.address;
      p.changes.push_back({"unbind " + addr + " from " + d.driver, nullptr, [this, addr] {
                             auto now = read_pci_device(env_.fs, addr);
                             if (now && !now->driver.empty() && now->driver != "vfio-pci") {
                               unbind_pci(env_, now->driver, addr, c_.unbind_timeout);
                             }
                           }});
    }
    std::vector<std::string> sysfb;  // the boot framebuffer, if still there
    for (const char* dev : {"efi-framebuffer.0", "simple-framebuffer.0", "vesa-framebuffer.0"}) {
      if (env_.fs.exists(std::string("/sys/bus/platform/devices/") + dev)) sysfb.push_back(dev);
    }
    int major = 0, minor = 0;
    std::sscanf(env_.fs.read_trimmed("/proc/sys/kernel/osrelease").value_or("").c_str(), "%d.%d",
                &major, &minor);
    for (const auto& d : devices) {
      if (d.driver == "vfio-pci") continue;
      const std::string addr = d.address;
      std::string what = "bind " + addr + " to vfio-pci";
      if (d.boot_vga && major >= 6 && !sysfb.empty()) {
        what += " (the boot VGA: the kernel removes " + join(sysfb, ", ") +
                " for good, the console returns with the GPU driver's framebuffer)";
      }
      p.changes.push_back({what, nullptr, [this, addr] {
                             auto now = read_pci_device(env_.fs, addr);
                             if (now && now->driver.empty())
                               probe_pci(env_, addr, c_.unbind_timeout);
                             now = read_pci_device(env_.fs, addr);
                             if (!now || now->driver != "vfio-pci") {
                               throw Error(
                                   Exit::kFailed,
                                   addr + " did not bind to vfio-pci (driver: " +
                                       (now && !now->driver.empty() ? now->driver : "none") + ")",
                                   "check `dmesg` for vfio-pci errors");
                             }
                           }});
    }
    if (p.changes.empty()) p.skipped = "every device is already on vfio-pci";
    return p;
  }

  StepPlan cpus() {
    StepPlan p;
    if (c_.isolate_host_cpus) {
      const std::string cpus = *c_.isolate_host_cpus;
      // AllowedCPUs confines everything below a slice, this launcher and the
      // QEMU it will start included (cpusets are hierarchical): pinning a
      // vCPU to a VM CPU would then fail with EINVAL. So first move the
      // launcher into a scope of its own in machine.slice, outside the
      // slices restricted below (as libvirt runs its VMs); QEMU is born there.
      const pid_t self = ::getpid();
      const std::string scope = "passlaunch-" + c_.vm_name + ".scope";
      const std::string here = env_.services.unit_of(self);
      if (here != scope) {
        p.changes.push_back(
            {"move the launcher (pid " + std::to_string(self) + ") into " + kMachineSlice + "/" +
                 scope,
             {{"undo", "leave_scope"}, {"scope", scope}, {"pid", self}, {"unit", here}},
             [this, scope, self] { env_.services.move_to_scope(scope, kMachineSlice, self); }});
      }
      for (const char* u : kIsolatedUnits) {
        const std::string unit = u;
        std::string old = env_.services.allowed_cpus(unit);
        if (old == cpus) continue;
        p.changes.push_back({unit + ": AllowedCPUs=" + cpus,
                             {{"undo", "allowed_cpus"}, {"unit", unit}, {"cpus", old}},
                             [this, unit, cpus] { env_.services.set_allowed_cpus(unit, cpus); }});
      }
    }
    if (c_.governor) {
      const std::string gov = *c_.governor;
      for (int cpu : c_.vm_cpus) {
        const std::string path =
            "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/cpufreq/scaling_governor";
        auto old = env_.fs.read_trimmed(path);
        if (!old || *old == gov) continue;
        p.changes.push_back({"cpu" + std::to_string(cpu) + " governor " + *old + " -> " + gov,
                             {{"undo", "write"}, {"path", path}, {"value", *old}},
                             [this, path, gov] { write_attr(env_.fs, path, gov); }});
      }
    }
    if (p.changes.empty())
      p.skipped = c_.isolate_host_cpus || c_.governor
                      ? "already in place"
                      : "no host CPU isolation or governor in the profile";
    return p;
  }

  StepPlan hooks() {
    StepPlan p;
    if (!c_.release_hook.empty()) {
      p.changes.push_back({"arm release hook " + c_.release_hook,
                           {{"undo", "hook"}, {"path", c_.release_hook}},
                           [] {}});
    }
    if (!c_.prepare_hook.empty()) {
      p.changes.push_back(
          {"run prepare hook " + c_.prepare_hook, nullptr, [this] {
             auto r = run_hook(c_.prepare_hook, c_.vm_name, "prepare", join(c_.pci_addresses, " "));
             if (r.status != 0) {
               throw Error(Exit::kFailed, "prepare hook " + c_.prepare_hook +
                                              " failed with status " + std::to_string(r.status) +
                                              ": " + r.output);
             }
           }});
    }
    if (p.changes.empty()) p.skipped = "no hooks in the profile";
    return p;
  }

  const HandoverConfig& c_;
  HostEnv& env_;
  const std::vector<IommuGroup>& groups_;
  std::map<std::string, std::string> initial_driver_;  ///< drivers before prepare began
};

std::map<std::string, std::string> drivers_of(const std::vector<IommuGroup>& groups) {
  std::map<std::string, std::string> m;
  for (const auto& g : groups) {
    for (const auto& d : g.devices) m[d.address] = d.driver;
  }
  return m;
}

}  // namespace

std::optional<std::string> refuse_unrestored(HostFs& fs, const std::string& vm,
                                             bool discard_stale) {
  auto j = Journal::open(fs, vm);
  if (!j) return std::nullopt;
  if (j->live(fs)) {
    throw Error(Exit::kHostDirty,
                "the host holds changes of an earlier run of " + vm + " that were not restored (" +
                    j->path() + ")",
                "run `passlaunch recover " + vm + "`");
  }
  if (!discard_stale) return std::nullopt;
  j->remove();  // from an earlier boot: nothing of it is left on this host
  return j->path();
}

void Handover::check_can_start(bool discard_stale) {
  HostFs& fs = env_.fs;
  const std::string& vm = config_.vm_name;
  if (auto stale = refuse_unrestored(fs, vm, discard_stale)) {
    log(env_, "discarded the journal of " + vm + " from an earlier boot (" + *stale + ")");
  }
  groups_ = groups_of(fs, config_.pci_addresses);
  // The group goes to the VM whole, as the kernel decides it: every member
  // not passed through must be unbound or on a driver that leaves DMA to the
  // group's user; a passed member must not be a bridge.
  const std::string release = fs.read_trimmed("/proc/sys/kernel/osrelease").value_or("");
  for (const auto& g : groups_) {
    auto blockers = group_blockers(g, config_.pci_addresses, release);
    if (blockers.empty()) continue;
    const PciDevice& d = blockers.front().device;
    PciNames names;
    const bool passed = std::find(config_.pci_addresses.begin(), config_.pci_addresses.end(),
                                  d.address) != config_.pci_addresses.end();
    if (passed) {
      throw Error(Exit::kUsage,
                  "PCI device " + describe_pci_device(d, names) + " " + blockers.front().reason,
                  "leave it out of the profile's devices: bridges stay with the host");
    }
    if (d.is_bridge()) {
      throw Error(Exit::kUsage,
                  "IOMMU group " + std::to_string(g.number) + " is not viable: bridge " +
                      describe_pci_device(d, names) + " " + blockers.front().reason,
                  "unbind it (echo " + d.address + " > /sys/bus/pci/drivers/" + d.driver +
                      "/unbind) or keep its driver from loading (modprobe.d blacklist)");
    }
    throw Error(Exit::kUsage,
                "IOMMU group " + std::to_string(g.number) + " also holds " +
                    describe_pci_device(d, names) + " (driver " + d.driver +
                    "), which the profile does not pass through",
                "a group goes to the VM whole: add " + d.address +
                    " to the profile's devices, unbind it, or move the card to another slot");
  }
  // A block device the host uses: unbinding its controller would pull
  // mounted filesystems, swap or an LVM/MD/dm-crypt member away from under
  // the host and destroy its data. Refuse, naming every user.
  for (const auto& g : groups_) {
    for (const auto& d : g.devices) {
      if (d.is_bridge() || d.driver == "vfio-pci" ||
          std::find(config_.pci_addresses.begin(), config_.pci_addresses.end(), d.address) ==
              config_.pci_addresses.end())
        continue;
      auto users = block_device_users(fs, d.address);
      if (!users.empty()) {
        throw Error(
            Exit::kUsage,
            "PCI device " + d.address + " holds storage the host is using: " + join(users, "; "),
            "unmount it, swapoff it, or deactivate the volume on it (vgchange -an, "
            "mdadm --stop, cryptsetup close) first, or leave the device out of the "
            "profile");
      }
    }
  }
  // Another VM, or any process, holding a device of these groups.
  for (const auto& other : Journal::list(fs)) {
    if (other == vm) continue;
    auto j = Journal::open(fs, other);
    if (!j || !j->live(fs) || !j->header().contains("devices")) continue;
    for (const std::string addr : j->header()["devices"]) {
      for (const auto& g : groups_) {
        for (const auto& d : g.devices) {
          if (d.address == addr) {
            throw Error(Exit::kHostDirty,
                        "device " + addr + " (IOMMU group " + std::to_string(g.number) +
                            ") is held by VM " + other,
                        "stop " + other + " first; if it is not running, run `passlaunch recover " +
                            other + "`");
          }
        }
      }
    }
  }
  for (const auto& g : groups_) {
    const std::string node = "/dev/vfio/" + std::to_string(g.number);
    auto holders = processes_holding(fs, [&](const std::string& t) { return t == node; });
    if (!holders.empty()) {
      throw Error(
          Exit::kHostDirty,
          "IOMMU group " + std::to_string(g.number) + " is in use: " + describe_holders(holders),
          "another VM or program owns these devices; stop it first");
    }
  }
  for (const auto& u : config_.stop_units) {
    if (!env_.services.exists(u)) {
      throw Error(Exit::kUsage, "unit " + u + " (in the units to stop) does not exist",
                  "check the name with `systemctl list-units`");
    }
  }
  for (const auto* hook : {&config_.prepare_hook, &config_.release_hook}) {
    if (!hook->empty() && ::access(hook->c_str(), X_OK) != 0) {
      throw system_error(Exit::kUsage, "hook", *hook, errno, "the hook must be an executable file");
    }
  }
}

void Handover::run_step(Step step, Journal& journal) {
  auto t0 = env_.clock.now();
  Steps steps(config_, env_, groups_, drivers_of(groups_));
  StepPlan p = steps.plan(step);
  std::vector<std::string> done;
  for (auto& c : p.changes) {
    if (!c.undo.is_null()) {
      c.undo["step"] = step_name(step);
      journal.append(c.undo);  // synced before the change is made
      emit(env_, std::string("journaled:") + step_name(step));
    }
    c.apply();
    done.push_back(c.what);
    emit(env_, std::string("change:") + step_name(step));
  }
  std::string what = p.changes.empty() ? "skipped (" + p.skipped + ")" : join(done, "; ");
  log(env_, "prepare " + std::to_string(static_cast<int>(step) + 1) + "/" +
                std::to_string(kStepCount) + " " + step_name(step) + ": " + what + " (" +
                seconds(env_.clock.now() - t0) + ")");
  emit(env_, std::string("step:prepare:") + step_name(step));
}

void Handover::prepare() {
  auto t0 = env_.clock.now();
  check_can_start();
  log(env_, "prepare 1/" + std::to_string(kStepCount) +
                " check: host clean, IOMMU groups viable (" + seconds(env_.clock.now() - t0) + ")");
  Journal journal = Journal::create(env_.fs, config_.vm_name, config_.pci_addresses);
  emit(env_, "step:prepare:check");
  for (Step s :
       {Step::kDisplay, Step::kConsoles, Step::kModules, Step::kVfio, Step::kCpus, Step::kHooks}) {
    try {
      run_step(s, journal);
    } catch (const StuckTimeout& e) {
      // The stuck call may still land after the restore; keep the journal so
      // that `recover` can put that device back once the driver lets go.
      log(env_,
          std::string("prepare ") + step_name(s) + " failed: " + e.what() + "; restoring the host");
      std::string restore;
      try {
        replay(journal, env_, "restore", true);
      } catch (const Error& r) {
        restore = std::string("; restoring failed too: ") + r.what();
      }
      throw Error(e.code(), std::string(e.what()) + restore + "; " + e.pending(),
                  "once the driver lets go (see `dmesg`), run `passlaunch recover " +
                      config_.vm_name + "`");
    } catch (const std::exception& e) {
      // Any failure, not only ours (a filesystem or JSON error), restores the host.
      const auto* err = dynamic_cast<const Error*>(&e);
      const Exit code = err ? err->code() : Exit::kFailed;
      const std::string hint = err ? err->hint() : "";
      log(env_,
          std::string("prepare ") + step_name(s) + " failed: " + e.what() + "; restoring the host");
      try {
        replay(journal, env_, "restore");
      } catch (const Error& r) {
        throw Error(code, std::string(e.what()) + "\nrestoring the host failed too: " + r.what(),
                    r.hint());
      }
      throw Error(code, std::string(e.what()) + " (host restored)", hint);
    }
  }
}

void Handover::release() { release_journal(config_.vm_name, env_); }

void release_journal(const std::string& vm, HostEnv& env) {
  auto j = Journal::open(env.fs, vm);
  if (!j) {
    log(env, "release: nothing to restore for " + vm);
    return;
  }
  replay(*j, env, "release");
}

namespace {

/// The launcher that wrote a journal is still running (not us): its VM is up.
std::optional<pid_t> live_writer(const Journal& j) {
  pid_t pid = j.header().value("pid", 0);
  if (pid <= 0 || pid == ::getpid() || ::kill(pid, 0) != 0) return std::nullopt;
  std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(comm, name);
  if (name != "passlaunch") return std::nullopt;
  return pid;
}

/// Refuses (exit 1, journal kept) while a process holds /dev/vfio/N of a
/// group of the journal's devices.
void refuse_open_groups(const Journal& j, HostEnv& env) {
  if (!j.header().contains("devices")) return;
  std::set<std::string> nodes;
  for (const std::string addr : j.header()["devices"]) {
    auto d = read_pci_device(env.fs, addr);
    if (d && d->iommu_group) nodes.insert("/dev/vfio/" + std::to_string(*d->iommu_group));
  }
  auto holders =
      processes_holding(env.fs, [&](const std::string& t) { return nodes.count(t) > 0; });
  if (holders.empty()) return;
  std::vector<std::string> pids;
  for (const auto& h : holders) pids.push_back(std::to_string(h.pid));
  throw Error(Exit::kFailed,
              "the VM's devices are still open: " + describe_holders(holders) +
                  "; undoing now would block until that process exits",
              "stop it (kill " + join(pids, " ") + "), then run `passlaunch recover " +
                  j.header().value("vm", "") + "` again");
}

}  // namespace

std::vector<std::string> recover(const std::string& vm, HostEnv& env) {
  std::vector<std::string> names =
      vm.empty() ? Journal::list(env.fs) : std::vector<std::string>{vm};
  std::vector<std::string> recovered;
  for (const auto& name : names) {
    auto j = Journal::open(env.fs, name);
    if (!j) {
      log(env, "recover: no journal for " + name + ", nothing to do");
      continue;
    }
    if (!j->live(env.fs)) {
      log(env, "recover: discarding the journal of " + name + " from an earlier boot");
      j->remove();
      continue;
    }
    if (auto pid = live_writer(*j)) {
      // Undoing a running VM's changes would pull its devices away.
      if (!vm.empty()) {
        throw Error(Exit::kFailed,
                    "VM " + name + " is running (launcher pid " + std::to_string(*pid) +
                        "): its host changes are in use",
                    "stop it with `passlaunch ctl " + name + " shutdown`; it restores the host");
      }
      log(env, "recover: " + name + " is running (pid " + std::to_string(*pid) + "), left alone");
      continue;
    }
    // A QEMU that outlived its launcher still has the groups open: unbinding
    // from vfio-pci would block in vfio_unregister_group_dev until it exits.
    refuse_open_groups(*j, env);
    log(env, "recover: undoing " + std::to_string(j->entries().size()) + " change(s) of " + name);
    replay(*j, env, "recover");
    recovered.push_back(name);
  }
  return recovered;
}

std::vector<std::string> plan(const HandoverConfig& config, HostEnv& env) {
  std::vector<std::string> lines;
  Handover h(config, env);
  std::string n = "/" + std::to_string(kStepCount) + " ";
  try {
    h.check_can_start(false);
    lines.push_back("1" + n + "check: host clean, IOMMU groups viable");
  } catch (const Error& e) {
    lines.push_back("1" + n + "check: WOULD REFUSE: " + e.what());
  }
  auto initial = drivers_of(h.groups());
  Steps steps(h.config(), env, h.groups(), initial);
  for (Step s :
       {Step::kDisplay, Step::kConsoles, Step::kModules, Step::kVfio, Step::kCpus, Step::kHooks}) {
    StepPlan p = steps.plan(s);
    std::string head = std::to_string(static_cast<int>(s) + 1) + n + step_name(s) + ":";
    if (p.changes.empty()) {
      lines.push_back(head + " skipped (" + p.skipped + ")");
      continue;
    }
    lines.push_back(head);
    for (const auto& c : p.changes) lines.push_back("    " + c.what);
  }
  return lines;
}

}  // namespace pl::host
