// passlaunch latency NAME|--pid PID: how long each thread of a VM (or any
// process) waits to run, sampled from procfs through io_uring.
#include <signal.h>
#include <sys/resource.h>

#include <atomic>
#include <charconv>
#include <ctime>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <thread>

#include "cli/cli.h"
#include "cli/control_client.h"
#include "core/error.h"
#include "latency/procfs.h"
#include "latency/profiler.h"
#include "latency/report.h"
#include "latency/role.h"
#include "latency/sampler.h"
#include "run/facts.h"

namespace pl::cli {

namespace {

struct LatencyArgs {
  std::string name;
  int pid = 0;
  std::string duration = "10s";
  std::string interval = "1ms";
  std::string rescan = "100ms";
  std::string cpu_sample = "50ms";
  std::string host_scan = "1s";
  std::string reader = "uring";
  bool json = false;
  std::string csv;
  std::string plot;
  size_t max_threads = 256;
  std::string source = "auto";
  std::string threshold = "100us";
  std::string window = "100ms";
  bool watch = false;
  bool duration_given = false;
};

std::chrono::nanoseconds duration_arg(const std::string& option, const std::string& text,
                                      bool allow_zero = false) {
  if (allow_zero && (text == "0" || text == "off")) return std::chrono::nanoseconds(0);
  auto d = latency::parse_duration(text);
  if (!d)
    throw Error(Exit::kUsage, "latency: " + option + " '" + text + "' is not a duration",
                "expected a number with a unit: ns, us, ms, s, m or h (e.g. 10s, 1ms)");
  return *d;
}

// Runs the profiler on this thread; SIGINT/SIGTERM stop it early (the report
// still prints). The signals are blocked (by the caller, before the profiler
// was made); the BPF source takes them through its own signalfd, the procfs
// sampler through a waiter thread.
void sample_until_done(latency::Profiler& sampler, bool takes_signals, const sigset_t& set,
                       const sigset_t& old) {
  if (takes_signals) {
    try {
      sampler.run();
    } catch (...) {
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
      throw;
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return;
  }
  std::atomic<bool> done{false};
  std::thread waiter([&, set] {
    timespec tick{0, 100'000'000};
    while (!done.load()) {
      if (sigtimedwait(&set, nullptr, &tick) > 0) sampler.stop();
    }
  });
  try {
    sampler.run();
  } catch (...) {
    done = true;
    waiter.join();
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    throw;
  }
  done = true;
  waiter.join();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

/// QEMU's pid for a VM started by `passlaunch run NAME`: its runtime dir's
/// qemu.pid. Throws kUsage for a bad name, kEnvironment if the VM is not running.
int find_vm_pid(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find_first_of("/\n") != std::string::npos)
    throw Error(Exit::kUsage, "latency: bad VM name '" + name + "'",
                "a VM name is the profile's name, without '/'");
  std::string pid_file = runtime_dir_for(name) + "/qemu.pid";
  std::ifstream in(pid_file);
  if (!in)
    throw Error(Exit::kEnvironment,
                "latency: VM '" + name + "' is not running (no " + pid_file + ")",
                "start it with `passlaunch run`, or give --pid PID");
  std::string text;
  std::getline(in, text);
  int pid = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (ec != std::errc{} || p != text.data() + text.size() || pid <= 0)
    throw Error(Exit::kEnvironment,
                "latency: " + pid_file + ": expected a decimal pid, got '" + text + "'");
  if (kill(pid, 0) != 0 && errno == ESRCH)
    throw Error(Exit::kEnvironment, "latency: VM '" + name + "' is not running (pid " + text +
                                        " from " + pid_file + " does not exist)");
  return pid;
}

/// VM `name`'s thread roles from its control socket (QMP query-cpus-fast and
/// query-iothreads), which knows every iothread (one with an id over 12 bytes
/// keeps QEMU's process name, as QEMU cannot name it). Without a control
/// socket (QEMU still starting, or not started by `passlaunch run` but writing
/// qemu.pid) roles come from thread names, and a warning says so. A socket
/// that is there but fails is an error.
std::map<int, std::string> vm_roles(const std::string& name) {
  if (!control_socket_up(name)) {
    std::cerr << "warning: VM '" << name
              << "' has no control socket: roles come from thread names (an iothread with an "
                 "id over 12 bytes looks like the emulator)\n";
    return {};
  }
  Control c(name);
  return latency::roles_from_qmp(c.execute("query-cpus-fast"), c.execute("query-iothreads"));
}

int run_latency(const LatencyArgs& a) {
  if (a.name.empty() == (a.pid == 0))
    throw Error(Exit::kUsage, "latency: give a VM NAME or --pid PID (exactly one)");
  latency::SamplerOptions o;
  auto source = latency::parse_source(a.source);
  if (!source)
    throw Error(Exit::kUsage, "latency: --source '" + a.source + "'",
                "expected auto, bpf, tracefs or procfs");
  o.source = *source;
  o.threshold = duration_arg("--threshold", a.threshold);
  o.window = duration_arg("--window", a.window);
  if (o.window < std::chrono::milliseconds(1))
    throw Error(Exit::kUsage,
                "latency: --window " + a.window + " is too short; expected at least 1ms");
  // --watch runs until Ctrl-C unless a duration is given.
  if (a.watch && !a.duration_given)
    o.duration = std::chrono::nanoseconds(0);
  else
    o.duration = duration_arg("--duration", a.duration);
  o.interval = duration_arg("--interval", a.interval);
  o.rescan_interval = duration_arg("--rescan", a.rescan);
  o.cpu_sample_interval = duration_arg("--cpu-sample", a.cpu_sample);
  o.host_scan_interval = duration_arg("--host-scan", a.host_scan, true);
  if (a.reader == "uring")
    o.reader = latency::ReadMethod::kUring;
  else if (a.reader == "pread")
    o.reader = latency::ReadMethod::kPread;
  else
    throw Error(Exit::kUsage, "latency: --reader '" + a.reader + "': expected uring or pread");
  if (o.interval < std::chrono::microseconds(10))  // checked for every source, as the sampler does
    throw Error(Exit::kUsage,
                "latency: --interval " + a.interval + " is too short; expected at least 10us");
  if (o.duration.count() > 0 && o.interval > o.duration)
    throw Error(Exit::kUsage,
                "latency: --interval " + a.interval + " is longer than --duration " + a.duration);
  o.max_threads = a.max_threads;
  o.csv_path = a.csv;
  if (!a.plot.empty()) {
    std::ofstream probe(a.plot, std::ios::app);  // fail now, not after sampling
    if (!probe) throw system_error(Exit::kUsage, "latency: cannot write --plot", a.plot, errno);
  }
  if (!a.name.empty()) {
    o.pid = find_vm_pid(a.name);
    o.vm = a.name;
    o.roles = vm_roles(a.name);
  } else {
    o.pid = a.pid;
  }

  // Three fds per sampled thread: allow as many as the hard limit does.
  rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  if (a.watch)
    o.on_second = [](const latency::Report& r) {
      std::cout << "\033[H\033[J" << latency::format_table(r) << std::flush;
    };
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  o.stop_on_signals = true;  // the BPF source's signalfd; the procfs sampler ignores it
  latency::ProfilerChoice choice;
  try {
    choice = latency::make_profiler(o);
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    throw;
  }
  if (!choice.notice.empty()) std::cerr << choice.notice << "\n";
  if (a.watch && choice.source != latency::Source::kBpf)
    std::cerr << "latency: --watch needs the bpf source; the report prints at the end\n";
  sample_until_done(*choice.profiler, choice.source == latency::Source::kBpf, set, old);
  latency::Report report = choice.profiler->report();
  report.source_notice = choice.notice;

  if (!a.plot.empty()) {
    std::ofstream out(a.plot, std::ios::trunc);
    out << latency::render_svg(report);
    if (!out.flush())
      throw system_error(Exit::kFailed, "latency: cannot write --plot", a.plot, errno);
  }
  if (a.json)
    std::cout << latency::to_json(report).dump(2) << "\n";
  else
    std::cout << latency::format_table(report);
  return 0;
}

}  // namespace

void add_latency_commands(CLI::App& app, Action& action) {
  auto args = std::make_shared<LatencyArgs>();
  CLI::App* cmd = app.add_subcommand(
      "latency",
      "Show how long each thread of a VM (or --pid) waits to run, and who got in its way");
  cmd->add_option("NAME", args->name, "VM name (its QEMU pid comes from the runtime dir)");
  cmd->add_option("--pid", args->pid, "Sample this process instead of a VM")
      ->check(CLI::Range(1, std::numeric_limits<int>::max()));
  cmd->add_option("--duration", args->duration, "How long to sample (e.g. 10s, 2m)")
      ->capture_default_str()
      ->each([args](const std::string&) { args->duration_given = true; });
  cmd->add_option("--source", args->source,
                  "Where the numbers come from: auto (bpf if it can run, else procfs), bpf, "
                  "tracefs or procfs")
      ->capture_default_str();
  cmd->add_option("--threshold", args->threshold,
                  "bpf: stream every wait at least this long (the report's events)")
      ->capture_default_str();
  cmd->add_option("--window", args->window,
                  "bpf: resolution of the plot, CSV and --watch (longest wait per window)")
      ->capture_default_str();
  cmd->add_flag("--watch", args->watch,
                "bpf: redraw the table every second until Ctrl-C (or --duration)");
  cmd->add_option("--interval", args->interval, "Sampling interval (e.g. 1ms, 500us)")
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "Print the report as JSON");
  cmd->add_option("--csv", args->csv, "Write one row per thread and tick to FILE");
  cmd->add_option("--plot", args->plot, "Write an SVG of run-queue delay over time to FILE");
  cmd->add_option("--reader", args->reader, "How ticks read procfs: uring or pread")
      ->capture_default_str();
  cmd->add_option("--cpu-sample", args->cpu_sample,
                  "Sample the CPU a running thread is on this often (reads its stat; "
                  "at most every interval)")
      ->capture_default_str();
  cmd->add_option("--rescan", args->rescan, "Re-list threads and read their status this often")
      ->capture_default_str();
  cmd->add_option("--host-scan", args->host_scan,
                  "Scan /proc for other tasks on the CPUs this often (0: off)")
      ->capture_default_str();
  cmd->add_option("--max-threads", args->max_threads, "Threads sampled at once")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  cmd->callback([args, &action] { action = [args] { return run_latency(*args); }; });
}

}  // namespace pl::cli
