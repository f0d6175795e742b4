// `passlaunch run PROFILE [--dry-run]`.
#include <iostream>
#include <memory>

#include "cli/cli.h"
#include "core/cpulist.h"
#include "core/error.h"
#include "core/text.h"
#include "host/from_profile.h"
#include "host/handover.h"
#include "host/host_env.h"
#include "profile/argv.h"
#include "profile/profile.h"
#include "run/facts.h"
#include "run/launcher.h"

namespace pl::cli {
namespace {

/// `--dry-run`'s pin plan: what `run` applies to QEMU's threads before `cont`.
void print_pin_plan(const Profile& profile) {
  const Pinning& pin = profile.pinning;
  auto rt = [&](std::optional<int> prio) {
    if (!prio) return std::string();
    return std::string(pin.realtime_policy == RealtimePolicy::kRr ? " (SCHED_RR "
                                                                  : " (SCHED_FIFO ") +
           std::to_string(*prio) + ")";
  };
  std::cout << "\n# pin plan (applied with sched_setaffinity before the guest runs):\n";
  if (pin.vcpus.empty()) {
    std::cout << "#   vCPUs: not pinned\n";
  }
  for (size_t i = 0; i < pin.vcpus.size(); ++i) {
    std::vector<int> cpus = pin.vcpu_cpus(i);
    std::cout << "#   vCPU " << i << (cpus.size() == 1 ? " -> CPU " : " -> CPUs ")
              << format_cpulist(cpus) << rt(pin.realtime_priority) << "\n";
  }
  for (const IoThread& t : pin.iothreads) {
    std::vector<int> cpus = t.cpus.empty() ? pin.emulator : t.cpus;
    std::cout << "#   iothread " << t.id << " -> CPUs "
              << (cpus.empty() ? std::string("not pinned") : format_cpulist(cpus))
              << rt(t.realtime_priority) << "\n";
  }
  std::cout << "#   emulator and vhost threads -> CPUs "
            << (pin.emulator.empty() ? std::string("not pinned") : format_cpulist(pin.emulator))
            << rt(pin.emulator_realtime_priority) << "\n";
}

/// `--dry-run`'s host plan: what prepare would change on this host, step by
/// step, and the taps it would create. Changes nothing.
void print_host_plan(const Profile& profile, const std::string& host_root) {
  std::cout << "\n# host plan for " << profile.name << " on "
            << (host_root == "/" ? std::string("this host") : host_root) << ":\n";
  if (profile.devices.empty()) {
    std::cout << "#   no passthrough devices: the host is left as it is\n";
  } else {
    host::RealHost real(host_root);
    host::HostEnv env = real.env();
    try {
      for (const std::string& line : host::plan(host::handover_config(profile, real.fs), env)) {
        std::cout << "#   " << line << "\n";
      }
    } catch (const Error& e) {
      std::cout << "#   WOULD REFUSE: " << e.what() << "\n";
    }
  }
  for (size_t i = 0; i < profile.network.size(); ++i) {
    const NetDevice& n = profile.network[i];
    if (n.type == NetDevice::Type::kMacvtap) {
      std::cout << "#   network: create macvtap on " << n.link << " (mode " << n.mode
                << (n.mac.empty() ? "" : ", MAC " + n.mac) << "), pass its tap fd\n";
    } else if (n.type == NetDevice::Type::kBridge) {
      std::cout << "#   network: create a tap on bridge " << n.bridge << ", pass its fd\n";
    }
  }
}

}  // namespace

void add_run_commands(CLI::App& app, Action& action) {
  struct Options {
    std::string profile;
    bool dry_run = false;
    RunOptions run;
    int latency_ms = 10;
  };
  auto opts = std::make_shared<Options>();
  CLI::App* run = app.add_subcommand(
      "run", "Run the VM a profile describes: paused, every thread pinned, then supervised");
  run->add_option("PROFILE", opts->profile, "Profile file (JSON, see profiles/README.md)")
      ->required();
  run->add_flag("--dry-run", opts->dry_run,
                "Print the QEMU command line (one argument per line, shell-quoted) and stop");
  run->add_option("--host-root", opts->run.host_root,
                  "Root of the host's sysfs/procfs (for tests; default /)");
  run->add_option("--latency-log", opts->run.latency_log,
                  "Record the QEMU threads' latency for the VM's life; JSON report to this file");
  auto* interval = run->add_option("--latency-interval", opts->latency_ms,
                                   "Sampling interval of --latency-log in ms (default 10)")
                       ->check(CLI::Range(1, 10000));
  (void)interval;
  run->callback([opts, &action] {
    action = [opts]() -> int {
      Profile profile = load_profile(opts->profile);
      if (opts->dry_run) {
        std::vector<std::string> argv =
            build_qemu_argv(profile, probe_host_facts(profile, opts->run.host_root));
        size_t extra = argv.size() - qemu_args_tail(profile);
        for (size_t i = 0; i < argv.size(); ++i) {
          // A comment cannot end a continued line; `# ...` (an empty command
          // substitution) can stand inside it, so the output still runs as is.
          if (i == extra && i > 0) std::cout << "`# qemu_args (from the profile, verbatim)` ";
          std::cout << shell_quote(argv[i]) << (i + 1 < argv.size() ? " \\\n" : "\n");
        }
        print_pin_plan(profile);
        print_host_plan(profile, opts->run.host_root);
        return 0;
      }
      opts->run.latency_interval = std::chrono::milliseconds(opts->latency_ms);
      return run_vm(profile, opts->run);
    };
  });
}

}  // namespace pl::cli
