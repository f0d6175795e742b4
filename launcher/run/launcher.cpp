#include "run/launcher.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

// clang-format off
#include <utility>  // first: Boost 1.74's awaitable.hpp uses std::exchange without it
// clang-format on

#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/cpulist.h"
#include "core/error.h"
#include "core/text.h"
#include "host/from_profile.h"
#include "host/handover.h"
#include "host/host_env.h"
#include "host/journal.h"
#include "latency/sampler.h"
#include "net/tap.h"
#include "profile/argv.h"
#include "qmp/client.h"
#include "rom/rom.h"
#include "run/control.h"
#include "run/facts.h"
#include "run/hotkey.h"
#include "run/pinning.h"
#include "run/runtime.h"
#include "run/spawn.h"

namespace pl {
namespace {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

/// The gid of group `name`, if it exists here.
std::optional<gid_t> lookup_group(const std::string& name) {
  if (name.empty()) return std::nullopt;
  struct group gr, *found = nullptr;
  std::vector<char> buf(16384);
  if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found) != 0 || !found) {
    return std::nullopt;
  }
  return found->gr_gid;
}

/// "12:34:56.789" in local time.
std::string wall_clock() {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm;
  ::localtime_r(&t, &tm);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

/// Copies the OVMF variables template once into the VM's state directory.
void prepare_ovmf_vars(const Profile& p, const HostFacts& f) {
  if (p.firmware.type != Firmware::Type::kOvmf) return;
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(fs::path(f.ovmf_vars).parent_path(), ec);
  bool present = fs::exists(f.ovmf_vars, ec);
  if (ec) {
    throw Error(Exit::kEnvironment, "cannot check " + f.ovmf_vars + ": " + ec.message(),
                "remove it (the VM's UEFI variables) to start from the profile's template");
  }
  if (present) return;
  std::string tmp = f.ovmf_vars + ".tmp";
  fs::copy_file(p.firmware.vars_template, tmp, fs::copy_options::overwrite_existing, ec);
  if (ec || ::rename(tmp.c_str(), f.ovmf_vars.c_str()) != 0) {
    throw Error(Exit::kEnvironment, "cannot copy " + p.firmware.vars_template + " to " +
                                        f.ovmf_vars + ": " + ec.message());
  }
}

/// The VM's tap devices; deleted when the run ends, however it ends.
struct TapSet {
  std::vector<TapDevice> devices;
  TapSet() = default;
  TapSet(const TapSet&) = delete;
  ~TapSet() {
    close_fds();
    for (const TapDevice& t : devices) {
      try {
        delete_link(t.ifname);
      } catch (const std::exception&) {
        // The journal's delete_link inverse tries again, and reports.
      }
    }
  }
  void close_fds() {
    for (TapDevice& t : devices) pl::close_fds(t);
  }
};

/// An interface name (at most 15 characters) for network entry `index` of VM
/// `name`: "pl-NAME-i", the name shortened with a hash when it is long.
std::string tap_ifname(const std::string& name, size_t index) {
  std::string base = name;
  if (base.size() > 9) {
    char hash[8];
    std::snprintf(hash, sizeof hash, "%04zx", std::hash<std::string>{}(name)&0xffff);
    base = name.substr(0, 5) + hash;
  }
  return "pl-" + base + "-" + std::to_string(index);
}

bool needs_taps(const Profile& p) {
  return std::any_of(p.network.begin(), p.network.end(),
                     [](const NetDevice& n) { return n.type != NetDevice::Type::kUser; });
}

/// Creates the macvtap/bridge taps of `profile` in order, each journaled
/// before it exists (so `recover` deletes it after a crash); the guest's MAC
/// is the tap's (the kernel picks one when the profile gives none).
void create_taps(Profile& profile, HostFacts& facts, TapSet& taps, host::Journal& journal) {
  size_t tap_index = 0;
  for (size_t i = 0; i < profile.network.size(); ++i) {
    NetDevice& n = profile.network[i];
    if (n.type == NetDevice::Type::kUser) continue;
    std::string where = profile.file + ": /network/" + std::to_string(i);
    std::string ifname = tap_ifname(profile.name, i);
    journal.append({{"step", "network"}, {"undo", "delete_link"}, {"ifname", ifname}});
    TapDevice t = n.type == NetDevice::Type::kMacvtap ? create_macvtap(n, ifname, where)
                                                      : create_bridge_tap(n, ifname, where);
    taps.devices.push_back(t);
    if (n.mac.empty()) n.mac = t.mac;
    NetFds& fds = facts.net_fds[tap_index++];
    if (t.vhost_fd < 0) fds.vhost = -1;
  }
}

/// swtpm serving the VM's TPM on a socket QEMU connects to. It is handed an
/// already listening socket, so QEMU can connect as soon as it starts, and
/// `--terminate` makes it exit when QEMU goes; we reap it in any case.
class Swtpm {
 public:
  Swtpm() = default;
  Swtpm(const Swtpm&) = delete;
  ~Swtpm() {
    if (child_.pid <= 0) return;
    ::kill(child_.pid, SIGTERM);
    ::waitpid(child_.pid, nullptr, 0);
    ::close(child_.pidfd);
  }
  void start(const Profile& p, const std::string& socket) {
    std::error_code ec;
    std::filesystem::create_directories(p.tpm_state_dir, ec);
    if (ec) {
      throw Error(Exit::kEnvironment, p.file + ": /tpm/state_dir: cannot create " +
                                          p.tpm_state_dir + ": " + ec.message());
    }
    ::chmod(p.tpm_state_dir.c_str(), 0700);
    int listener = listen_unix(socket);
    SpawnSpec spec;
    spec.argv = {"swtpm",  "socket",           "--tpm2",     "--tpmstate", "dir=" + p.tpm_state_dir,
                 "--ctrl", "type=unixio,fd=3", "--terminate"};
    spec.fds = {{listener, 3}};
    spec.stderr_fd = 2;
    spec.death_signal = SIGTERM;
    try {
      child_ = spawn_child(spec);
    } catch (const Error& e) {
      ::close(listener);
      throw Error(e.code(), std::string(e.what()), "the TPM needs swtpm: apt-get install swtpm");
    }
    ::close(listener);
  }

 private:
  Child child_;
};

/// The host's SMBIOS types 0-3 (read under host_root) copied into the runtime
/// dir, one structure per file, as QEMU's -smbios file= takes them.
std::vector<std::string> copy_host_smbios_into(const std::string& host_root,
                                               const std::string& dir) {
  std::string path = host_root + kHostDmiTable;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw system_error(Exit::kEnvironment, "cannot read the host's SMBIOS table", path, errno);
  std::stringstream buf;
  buf << in.rdbuf();
  std::vector<std::string> files;
  std::map<int, size_t> seen;
  for (const auto& [type, bytes] : smbios_structures(buf.str(), host_smbios_types())) {
    std::string file = smbios_file(dir, type, seen[type]++);
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
      int err = errno;
      if (fd >= 0) ::close(fd);
      throw system_error(Exit::kEnvironment, "cannot write", file, err);
    }
    ::close(fd);
    files.push_back(file);
  }
  return files;
}

/// /dev/shm files for the profile's shmem entries: created with their size and
/// mode 0660 (owned by their user), removed when this goes out of scope.
class ShmemFiles {
 public:
  ShmemFiles(const Profile& p, const std::string& dir) {
    for (size_t i = 0; i < p.shmem.size(); ++i) {
      const Shmem& m = p.shmem[i];
      std::string path = dir + "/" + m.name;
      std::string what = p.file + ": /shmem" + (p.shmem.size() > 1 ? "/" + std::to_string(i) : "");
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0660);
      if (fd < 0) throw system_error(Exit::kEnvironment, what + ": cannot create", path, errno);
      paths_.push_back(path);
      int err = 0;
      if (::ftruncate(fd, static_cast<off_t>(m.size_mib) << 20) != 0) err = errno;
      if (!err && ::fchmod(fd, 0660) != 0) err = errno;
      if (!err && !m.user.empty()) {
        passwd* pw = ::getpwnam(m.user.c_str());
        if (!pw) {
          ::close(fd);
          throw Error(Exit::kUsage, what + "/user: no user \"" + m.user + "\" on this host");
        }
        if (::fchown(fd, pw->pw_uid, pw->pw_gid) != 0) err = errno;
      }
      ::close(fd);
      if (err) throw system_error(Exit::kEnvironment, what + ": cannot size or own", path, err);
    }
  }
  ~ShmemFiles() {
    for (const std::string& p : paths_) ::unlink(p.c_str());
  }
  ShmemFiles(const ShmemFiles&) = delete;

 private:
  std::vector<std::string> paths_;
};

/// How the run ended, decided when QEMU is gone.
struct Outcome {
  bool started = false;         ///< `cont` was acknowledged
  bool shutting_down = false;   ///< graceful shutdown requested (signal or ctl)
  bool guest_shutdown = false;  ///< SHUTDOWN with guest=true
  bool panicked = false;
  bool forced = false;   ///< we sent quit or SIGKILL
  bool aborted = false;  ///< stopped before the guest ran, on request
  std::exception_ptr startup_error;
};

class Supervisor {
 public:
  Supervisor(const Profile& profile, const RunOptions& options)
      : profile_(profile),
        options_(options),
        signals_(io_, SIGINT, SIGTERM),
        qmp_(io_.get_executor()),
        timeout_s_(profile.shutdown_timeout_s) {}

  int run() {
    t0_ = Clock::now();
    // 1. Check the pin plan against this host before touching anything.
    for (const std::string& w : check_pin_plan(profile_, read_cpu_topology(options_.host_root))) {
      log("warning: " + w);
    }
    // ... and every romfile: a valid option ROM chain for the device it is on.
    check_romfiles();
    // 2. One instance per name; the runtime dir holds the sockets. The group
    // passlaunch may read the VM's status; the profile's control_group more.
    if (!profile_.control_group.empty()) {
      control_gid_ = lookup_group(profile_.control_group);
      if (!control_gid_) {
        throw Error(Exit::kUsage, profile_.file + ": /control_group: no group \"" +
                                      profile_.control_group + "\" on this host");
      }
    }
    RuntimeDir runtime(profile_.name);
    status_gid_ = lookup_group(options_.status_group);
    if (status_gid_ && !runtime.share_with_group(*status_gid_)) {
      log("warning: cannot share " + runtime.path() + " with the group " + options_.status_group +
          ": only this user sees the VM");
      status_gid_.reset();
    }
    // 3. The host: hand the devices over (journaled), refuse a dirty host.
    // The service manager and libkmod are set up only when the host changes.
    bool passthrough = !profile_.devices.empty();
    bool journaled = passthrough || needs_taps(profile_);
    std::optional<host::RealHost> real;
    std::optional<host::HostEnv> env;
    if (options_.host_env) {
      env.emplace(*options_.host_env);
    } else if (journaled) {
      real.emplace(options_.host_root);
      env.emplace(real->env(options_.quiet ? nullptr : &std::cerr));
    }
    host::HostFs fs(options_.host_root);
    if (passthrough) {
      host::Handover handover(host::handover_config(profile_, fs), *env);
      handover.prepare();  // restores the host itself when it fails
    } else {
      // Only taps change the host here; an unrestored journal still means an
      // earlier run of this name crashed.
      host::refuse_unrestored(fs, profile_.name);
    }
    // From here on, the host is given back however the run ends.
    int code;
    try {
      code = run_guest(runtime, fs, passthrough);
    } catch (const std::exception& e) {
      // The run failed; the host must still be given back, and if it cannot
      // be, that is what the user must act on first (exit 4).
      if (journaled && !release_host(*env)) {
        throw Error(Exit::kHostDirty,
                    std::string(e.what()) + "; and restoring the host failed (see above)",
                    "fix the cause, then run `passlaunch recover " + profile_.name + "`");
      }
      throw;
    }
    if (journaled && !release_host(*env)) return exit_code(Exit::kHostDirty);
    return code;
  }

 private:
  /// Replays the journal: taps deleted, devices back to their drivers, the
  /// display manager started. False (and a hint to recover) when it failed.
  bool release_host(host::HostEnv& env) {
    try {
      host::release_journal(profile_.name, env);
      return true;
    } catch (const std::exception& e) {
      std::cerr << "passlaunch: error: restoring the host failed: " << e.what()
                << "\n  hint: fix the cause, then run `passlaunch recover " << profile_.name
                << "`\n";
      return false;
    }
  }

  std::vector<std::string> copy_host_smbios(RuntimeDir& runtime) {
    return copy_host_smbios_into(options_.host_root, runtime.path());
  }

  /// The display and guest agent sockets QEMU made: only their owner may use
  /// them (the runtime dir is 0700 already; this keeps them so if it is not).
  void restrict_sockets() {
    for (const char* name : {"vnc.sock", "spice.sock", "qga.sock"}) {
      std::string path = std::filesystem::path(qmp_path_).parent_path() / name;
      if (::chmod(path.c_str(), 0600) != 0 && errno != ENOENT)
        log(std::string("warning: cannot chmod 0600 ") + path + ": " + std::strerror(errno));
    }
  }

  /// Everything between the prepared host and its release.
  int run_guest(RuntimeDir& runtime, host::HostFs& fs, bool passthrough) {
    HostFacts facts = probe_host_facts(profile_, options_.host_root);
    facts.runtime_dir = runtime.path();
    prepare_ovmf_vars(profile_, facts);
    // The host's SMBIOS structures (smbios.mode "host"), one file each.
    if (profile_.smbios.mode == Smbios::Mode::kHost) facts.smbios_files = copy_host_smbios(runtime);
    // Shared memory files (Looking Glass): created here, removed when the run ends.
    ShmemFiles shmem(profile_, facts.shm_dir);
    // 4. macvtap and bridge taps, handed to QEMU as open fds.
    Profile effective = profile_;
    TapSet taps;
    if (needs_taps(profile_)) {
      host::Journal journal = passthrough ? *host::Journal::open(fs, profile_.name)
                                          : host::Journal::create(fs, profile_.name, {});
      create_taps(effective, facts, taps, journal);
    }
    // 5. The TPM emulator, when the profile has one: our own child, gone with QEMU.
    Swtpm swtpm;
    if (!profile_.tpm_state_dir.empty()) swtpm.start(profile_, runtime.file("swtpm.sock"));
    // The host hotkey's keyboards, read (never grabbed) from now on.
    if (profile_.host_hotkey) start_hotkey();
    // 6. The exact argv, printed before exec.
    std::vector<std::string> argv = build_qemu_argv(effective, facts);
    log("starting: " + join_quoted(argv));
    // 7. Spawn paused, already inside the emulator set.
    qmp_path_ = runtime.file("qmp.sock");
    control_path_ = runtime.file("control.sock");
    int listener = listen_unix(qmp_path_);
    auto [out_rd, out_wr] = make_pipe();
    auto [err_rd, err_wr] = make_pipe();
    SpawnSpec spec;
    spec.argv = argv;
    spec.fds = {{listener, kQmpFd}};
    for (size_t i = 0; i < taps.devices.size(); ++i) {
      spec.fds.push_back({taps.devices[i].tap_fd, facts.net_fds[i].tap});
      if (taps.devices[i].vhost_fd >= 0 && facts.net_fds[i].vhost >= 0) {
        spec.fds.push_back({taps.devices[i].vhost_fd, facts.net_fds[i].vhost});
      }
    }
    spec.cpus = profile_.pinning.emulator;
    spec.stdout_fd = out_wr;
    spec.stderr_fd = err_wr;
    spec.death_signal = SIGTERM;  // a launcher that dies takes its QEMU down
    Child child;
    try {
      child = spawn_child(spec);
    } catch (...) {
      for (int fd : {listener, out_rd, out_wr, err_rd, err_wr}) ::close(fd);
      throw;
    }
    ::close(listener);
    ::close(out_wr);
    ::close(err_wr);
    taps.close_fds();  // QEMU holds them now
    pid_ = child.pid;
    try {
      pidfd_.emplace(io_, child.pidfd);
      stdout_.emplace(io_, out_rd);
      stderr_.emplace(io_, err_rd);
      runtime.write_qemu_pid(pid_);
    } catch (...) {
      // Never restore the host around a QEMU that still holds its devices.
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      throw;
    }

    // 8. Everything else happens on this one event loop.
    asio::co_spawn(io_, watch_child(), asio::detached);
    asio::co_spawn(io_, read_lines(*stdout_, "guest", false), asio::detached);
    asio::co_spawn(io_, read_lines(*stderr_, "qemu", true), asio::detached);
    asio::co_spawn(io_, watch_signals(), asio::detached);
    asio::co_spawn(io_, start(), [this](std::exception_ptr e) {
      if (e) {
        outcome_.startup_error = e;
        kill_qemu();
      }
    });
    io_.run();
    return finish();
  }

  void log(const std::string& line) {
    if (!options_.quiet) std::cerr << "[" << wall_clock() << "] " << line << std::endl;
  }

  static std::string join_quoted(const std::vector<std::string>& argv) {
    std::vector<std::string> q;
    for (const auto& a : argv) q.push_back(shell_quote(a));
    return join(q, " ");
  }

  /// A romfile must be a valid ROM chain from offset 0, of the device's own
  /// vendor and device id when sysfs knows the device.
  void check_romfiles() {
    host::HostFs fs(options_.host_root);
    for (size_t i = 0; i < profile_.devices.size(); ++i) {
      const VfioDevice& d = profile_.devices[i];
      if (d.romfile.empty()) continue;
      std::optional<uint16_t> vendor, device;
      if (auto pci = host::read_pci_device(fs, d.address.str())) {
        vendor = pci->vendor;
        device = pci->device;
      }
      try {
        rom::validate_romfile(d.romfile, vendor, device);
      } catch (const Error& e) {
        throw Error(e.code(),
                    profile_.file + ": /devices/" + std::to_string(i) + "/romfile: " + e.what(),
                    e.hint());
      }
    }
  }

  long elapsed_ms() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0_).count();
  }

  /// Connect, pin every thread, read the pins back, and only then `cont`.
  awaitable<void> start() {
    qmp::ConnectOptions co;
    co.timeout = 30s;
    co.greeting_timeout = 30s;  // TCG on a loaded host can be slow to greet
    co.peer_alive = [this] { return !exited_; };
    co.oob_if_offered = true;  // so the control socket can offer oob to its clients
    qmp_.add_listener([this](const json& ev) { on_event(ev); });
    co_await qmp_.connect(qmp_path_, co);
    long connected = elapsed_ms();
    restrict_sockets();  // QEMU made them before it served QMP

    json cpus = co_await qmp_.execute("query-cpus-fast");
    json ios = co_await qmp_.execute("query-iothreads");
    QemuThreads threads = latency::parse_qemu_threads(cpus, ios);
    roles_ = latency::thread_roles(threads);  // --latency-log: names miss long iothread ids
    std::vector<ThreadInfo> all = list_threads(pid_);
    for (const ThreadInfo& k : find_vhost_kthreads(pid_)) all.push_back(k);
    std::vector<ThreadPin> pins = plan_pins(profile_.pinning, threads, all);
    apply_pins(pins, profile_.pinning.realtime_priority, profile_.pinning.realtime_policy);
    verify_pins(pins);
    std::cerr << "pinned " << pins.size() << " threads of QEMU (pid " << pid_ << "):\n"
              << format_pin_table(pins);
    if (outcome_.shutting_down) {  // asked to stop while we were starting
      outcome_.aborted = true;
      co_await quit();
      co_return;
    }
    co_await qmp_.execute("cont");
    outcome_.started = true;
    // A request that came while `cont` was in flight is served now.
    if (outcome_.shutting_down) request_shutdown("a request during start");
    started_at_ = std::chrono::system_clock::now();
    log("guest running (" + std::to_string(elapsed_ms()) + " ms after start; QMP ready at " +
        std::to_string(connected) + " ms)");
    if (!options_.latency_log.empty()) start_latency_log();
    start_control();
  }

  /// `--latency-log`: a sampler on its own thread, started after pinning so
  /// that it records each thread's pinned CPUs as its allowed set.
  void start_latency_log() {
    latency::SamplerOptions o;
    o.pid = pid_;
    o.vm = profile_.name;
    o.interval = options_.latency_interval;
    o.roles = roles_;
    o.source = latency::Source::kAuto;  // every wait from BPF where it can run, else procfs
    latency_.emplace(o);
    if (!latency_->notice().empty()) log(latency_->notice());
    log("recording thread latency (" +
        std::string(latency_->notice().empty()
                        ? "source bpf"
                        : "procfs, every " + std::to_string(options_.latency_interval.count()) +
                              " ms") +
        ") into " + options_.latency_log);
  }

  /// The profile's host_hotkey (run/hotkey.h): held once, the graceful
  /// shutdown; held again (or with action "poweroff"), quit at once.
  void start_hotkey() {
    const HostHotkey& hk = *profile_.host_hotkey;
    hotkey_.emplace(
        io_.get_executor(), hk.codes, [this](const std::string& dev) { on_hotkey(dev); },
        [this](const std::string& dev, const std::string& why) {
          log("host hotkey: no longer reading " + dev + ": " + why);
        });
    for (const std::string& dev : hk.devices) hotkey_->watch(dev);
    log("host hotkey " + join(hk.keys, "+") + " watched on " + join(hk.devices, ", "));
  }

  void on_hotkey(const std::string& dev) {
    if (profile_.host_hotkey->action == HostHotkey::Action::kPoweroff || outcome_.shutting_down) {
      log("host hotkey on " + dev + ": quitting QEMU now");
      if (outcome_.started) {
        asio::co_spawn(io_, quit(), asio::detached);
      } else {
        outcome_.shutting_down = true;  // start() quits before `cont`
      }
      return;
    }
    log("host hotkey on " + dev + ": shutting the guest down (hold it again to quit at once)");
    request_shutdown("");
  }

  /// The QMP-speaking control socket for `ctl`, `list` and any QMP client.
  void start_control() {
    control_.emplace(io_.get_executor(), control_path_, qmp_);
    if (status_gid_ && !control_->open_to_group(*status_gid_, control_gid_)) {
      log("warning: cannot share control.sock with the group " + options_.status_group);
    }
    // Named as the QMP spec asks of downstream additions; the old names stay
    // as aliases.
    ControlServer::Command status{ControlServer::kStatus, {"passlaunch-status"}, {}, {}};
    status.fn = [this](const json&) -> awaitable<json> {
      json st = co_await qmp_.execute("query-status");
      auto up = std::chrono::system_clock::now() - started_at_;
      co_return json{{"name", profile_.name},
                     {"launcher-pid", ::getpid()},
                     {"qemu-pid", pid_},
                     {"status", st.value("status", "unknown")},
                     {"running", st.value("running", false)},
                     {"uptime-s", std::chrono::duration_cast<std::chrono::seconds>(up).count()},
                     {"shutting-down", outcome_.shutting_down},
                     {"vfio", std::any_of(profile_.devices.begin(), profile_.devices.end(),
                                          [](const VfioDevice& d) { return d.attach; })}};
    };
    control_->add_command(std::move(status));
    ControlServer::Command shutdown{ControlServer::kShutdown,
                                    {"passlaunch-shutdown"},
                                    {{"timeout", "int"}, {"power-button", "bool"}},
                                    {}};
    shutdown.fn = [this](const json& args) -> awaitable<json> {
      if (args.is_object() && args.contains("timeout")) {
        if (!args["timeout"].is_number_integer() || args["timeout"].get<int>() < 1) {
          throw qmp::Error(qmp::ErrorKind::command_error, "bad timeout", ControlServer::kShutdown,
                           "GenericError", "'timeout' must be a positive integer (seconds)");
        }
        timeout_s_ = args["timeout"].get<int>();
      }
      // "power-button": false — `ctl shutdown` has asked the guest agent already.
      if (args.is_object() && args.contains("power-button")) {
        if (!args["power-button"].is_boolean()) {
          throw qmp::Error(qmp::ErrorKind::command_error, "bad power-button",
                           ControlServer::kShutdown, "GenericError",
                           "'power-button' must be true or false");
        }
        first_press_ = args["power-button"].get<bool>();
      }
      request_shutdown(first_press_ ? "the control socket"
                                    : "the control socket (through the guest agent)");
      co_return json::object();
    };
    control_->add_command(std::move(shutdown));
    control_->start();
  }

  /// Every pinned thread must now be allowed exactly its planned CPUs.
  void verify_pins(const std::vector<ThreadPin>& pins) {
    for (const ThreadPin& p : pins) {
      if (p.cpus.empty()) continue;
      std::vector<int> want = p.cpus;
      std::sort(want.begin(), want.end());
      std::vector<int> got = thread_affinity(p.tid);
      if (got.empty()) continue;  // the thread has exited meanwhile (an idle worker)
      if (got != want) {
        throw Error(Exit::kFailed, p.label + " (tid " + std::to_string(p.tid) + ") runs on CPUs " +
                                       format_cpulist(got) + " after pinning, not " +
                                       format_cpulist(want));
      }
    }
  }

  void on_event(const json& ev) {
    std::string name = ev.value("event", "");
    std::string data = ev.contains("data") ? " " + ev["data"].dump() : "";
    log("event " + name + data);
    if (control_) control_->broadcast(ev);
    if (name == "SHUTDOWN" && ev.contains("data") && ev["data"].value("guest", false)) {
      outcome_.guest_shutdown = true;
    } else if (name == "SHUTDOWN") {
      // quit from a control client (`ctl poweroff`) or a signal to QEMU.
      outcome_.forced = true;
    } else if (name == "GUEST_PANICKED") {
      // The profile's panic notifier; QEMU has paused the guest (-action
      // panic=pause, profile/argv.cpp) and stays until we quit it.
      outcome_.panicked = true;
      asio::co_spawn(io_, quit(), asio::detached);
    } else if (name == "RESET") {
      log("the guest reset (reboot); it keeps running");
    }
  }

  awaitable<void> watch_child() {
    co_await pidfd_->async_wait(asio::posix::descriptor::wait_read, use_awaitable);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exited_ = true;
    status_ = status;
    // QEMU is gone: no more control clients.
    if (control_) control_->close();
    if (hotkey_) hotkey_->close();
    // Its last events (SHUTDOWN, GUEST_PANICKED) may still be unread on the
    // QMP socket when the exit is seen first: read the connection to its
    // end (QEMU's exit closed it), at most a second. Then nothing else on
    // this loop matters.
    if (qmp_.state() != qmp::State::idle && qmp_.state() != qmp::State::closed) {
      asio::steady_timer limit(io_, std::chrono::seconds(1));
      limit.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) io_.stop();
      });
      co_await qmp_.wait_closed();
    }
    io_.stop();
  }

  awaitable<void> watch_signals() {
    for (int count = 0;; ++count) {
      boost::system::error_code ec;
      int sig = co_await signals_.async_wait(asio::redirect_error(use_awaitable, ec));
      if (ec) co_return;
      if (count == 0) {
        log(std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") +
            ": shutting the guest down (again to quit at once)");
        request_shutdown("");
      } else {
        log("received a second signal: quitting QEMU now");
        asio::co_spawn(io_, quit(), asio::detached);
      }
    }
  }

  /// Power button, pressed again if the guest does not react, then quit after
  /// the profile's timeout, then SIGKILL.
  /// Starts the graceful shutdown once; before `cont` it only sets the flag
  /// that start() checks (then QEMU is quit, the guest never ran).
  void request_shutdown(const std::string& from) {
    outcome_.shutting_down = true;
    if (!outcome_.started || shutdown_running_) return;
    shutdown_running_ = true;
    if (!from.empty()) log("shutdown requested by " + from);
    asio::co_spawn(io_, graceful_shutdown(), asio::detached);
  }

  awaitable<void> graceful_shutdown() {
    auto deadline = Clock::now() + std::chrono::seconds(timeout_s_);
    // A guest still booting has no ACPI driver yet and ignores a press: press again
    // every 2 s until it reacts or the timeout ends, so a stop early in boot is not
    // lost. After `ctl shutdown` asked the guest agent, the first press waits 5 s.
    constexpr auto kPressEvery = 2s;
    auto next = Clock::now() + std::min<Clock::duration>(5s, std::chrono::seconds(timeout_s_) / 2);
    if (first_press_) {
      next = std::min(Clock::now() + kPressEvery, deadline);
      co_await press_power_button(next);
    }
    asio::steady_timer timer(io_);
    bool logged = false;
    for (;;) {
      timer.expires_at(next);
      co_await timer.async_wait(use_awaitable);
      if (outcome_.guest_shutdown || Clock::now() >= deadline) break;
      if (!logged) {
        log(first_press_ ? "the guest has not shut down yet: pressing the power button again "
                           "every 2 s"
                         : "the guest has not shut down yet: pressing the power button "
                           "every 2 s");
        logged = true;
      }
      next = std::min(Clock::now() + kPressEvery, deadline);
      co_await press_power_button(next);
    }
    timer.expires_at(deadline);
    co_await timer.async_wait(use_awaitable);
    log("the guest did not shut down within " + std::to_string(timeout_s_) + " s: quitting QEMU");
    co_await quit();
  }

  /// system_powerdown, its reply awaited at most until `until`: a QEMU that
  /// does not answer must not hold up the timeout that follows.
  awaitable<void> press_power_button(Clock::time_point until) {
    try {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      co_await qmp_.execute("system_powerdown", nullptr, std::max(left, 100ms));
    } catch (const std::exception& e) {
      log(std::string("system_powerdown failed: ") + e.what());
    }
  }

  /// `quit`, then SIGKILL if QEMU is still there 5 s after it was sent,
  /// whether or not QEMU answered (a stopped or hung QEMU answers nothing).
  awaitable<void> quit() {
    if (quitting_) co_return;
    quitting_ = true;
    outcome_.forced = !outcome_.guest_shutdown;
    asio::steady_timer timer(io_, 5s);
    try {
      co_await qmp_.execute("quit", nullptr, 5s);
    } catch (const std::exception& e) {
      log(std::string("quit: ") + e.what());
    }
    co_await timer.async_wait(use_awaitable);
    log("QEMU did not exit 5 s after quit: SIGKILL");
    kill_qemu();
  }

  void kill_qemu() {
    if (exited_ || pid_ <= 0) return;
    // Already gone, but not yet reaped: it died on its own, not by us.
    pollfd p{pidfd_->native_handle(), POLLIN, 0};
    if (::poll(&p, 1, 0) == 1) return;
    killed_by_us_ = true;
    ::kill(pid_, SIGKILL);
  }

  awaitable<void> read_lines(asio::posix::stream_descriptor& pipe, std::string prefix,
                             bool keep_tail) {
    std::string buf;
    for (;;) {
      boost::system::error_code ec;
      size_t n = co_await asio::async_read_until(pipe, asio::dynamic_buffer(buf), '\n',
                                                 asio::redirect_error(use_awaitable, ec));
      if (ec) co_return;
      std::string line = buf.substr(0, n - 1);
      buf.erase(0, n);
      take_line(prefix, std::move(line), keep_tail);
    }
  }

  /// Decides the exit code once QEMU is gone.
  int finish() {
    // Drain what QEMU wrote last (it is gone, so the pipes end).
    drain(*stderr_, true);
    drain(*stdout_, false);
    if (latency_) {
      try {
        latency_->stop_and_write(options_.latency_log);
        log("latency report written to " + options_.latency_log);
      } catch (const std::exception& e) {
        log(std::string("warning: no latency report: ") + e.what());
      }
    }
    std::string how = describe_wait_status(status_);
    // Killed by us = we sent SIGKILL and that is how it ended (a QEMU that was
    // already exiting keeps its own status).
    bool by_us = killed_by_us_ && WIFSIGNALED(status_) && WTERMSIG(status_) == SIGKILL;
    if (outcome_.startup_error && by_us) {
      // We stopped QEMU because starting failed: that failure is the news.
      try {
        std::rethrow_exception(outcome_.startup_error);
      } catch (const Error&) {
        throw;
      } catch (const std::exception& e) {
        throw Error(Exit::kEnvironment, e.what());
      }
    }
    if (!outcome_.started && !outcome_.aborted) {
      // QEMU ended before `cont` on its own (bad option, device realize error).
      throw Error(Exit::kStartupFailed, "QEMU " + how + " before the guest started" + tail_text(),
                  "the QEMU messages above say why");
    }
    if (outcome_.aborted) {
      log("stopped before the guest started, as asked");
      return exit_code(Exit::kOk);
    }
    if (outcome_.panicked) {
      log("the guest panicked; QEMU " + how);
      return exit_code(Exit::kGuestPanic);
    }
    if (outcome_.guest_shutdown && WIFEXITED(status_) && WEXITSTATUS(status_) == 0) {
      log("the guest shut down; QEMU " + how);
      return exit_code(Exit::kOk);
    }
    if (outcome_.forced) {
      log("QEMU was quit by force; it " + how);
      return exit_code(Exit::kForcedQuit);
    }
    log("QEMU " + how + " on its own" + tail_text());
    return exit_code(Exit::kQemuCrashed);
  }

  std::string tail_text() const {
    if (tail_.empty()) return "";
    std::string out = "; its last messages:";
    for (const std::string& l : tail_) out += "\n    " + l;
    return out;
  }

  /// One line of QEMU's stdout (the guest's serial console) or stderr: logged,
  /// and for stderr kept in the tail shown when QEMU fails.
  void take_line(const std::string& prefix, std::string line, bool keep_tail) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (keep_tail) {
      tail_.push_back(line);
      if (tail_.size() > 20) tail_.pop_front();
    }
    log(prefix + ": " + line);
  }

  void drain(asio::posix::stream_descriptor& pipe, bool keep_tail) {
    // QEMU is gone, but a process it left behind could still hold the pipe:
    // wait at most a second for more, never for EOF alone.
    std::string buf;
    char chunk[4096];
    for (;;) {
      pollfd p{pipe.native_handle(), POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) break;
      ssize_t n = ::read(pipe.native_handle(), chunk, sizeof chunk);
      if (n <= 0) break;
      buf.append(chunk, static_cast<size_t>(n));
    }
    size_t start = 0;
    for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
      take_line(keep_tail ? "qemu" : "guest", buf.substr(start, nl - start), keep_tail);
    }
  }

  const Profile& profile_;
  RunOptions options_;
  asio::io_context io_;
  asio::signal_set signals_;
  qmp::Client qmp_;
  std::optional<ControlServer> control_;
  std::optional<HotkeyWatcher> hotkey_;
  std::optional<gid_t> status_gid_, control_gid_;
  std::optional<latency::BackgroundSampler> latency_;
  std::map<int, std::string> roles_;  ///< tid -> role label, from QMP (latency/role.h)
  std::optional<asio::posix::stream_descriptor> pidfd_, stdout_, stderr_;
  std::string qmp_path_, control_path_;
  int timeout_s_;
  std::chrono::system_clock::time_point started_at_;
  pid_t pid_ = -1;
  bool exited_ = false;
  bool quitting_ = false;
  bool shutdown_running_ = false;
  bool first_press_ = true;    ///< graceful shutdown presses the power button at once
  bool killed_by_us_ = false;  ///< QEMU was SIGKILLed by us
  int status_ = 0;
  Outcome outcome_;
  std::deque<std::string> tail_;
  Clock::time_point t0_;
};

}  // namespace

int run_vm(const Profile& profile, const RunOptions& options) {
  Supervisor s(profile, options);
  return s.run();
}

}  // namespace pl
