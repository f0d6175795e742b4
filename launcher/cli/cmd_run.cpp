// `passlaunch run PROFILE [--dry-run]`.
#include <iostream>
#include <memory>

#include "cli/cli.h"
#include "core/error.h"
#include "core/text.h"
#include "profile/argv.h"
#include "profile/profile.h"
#include "run/facts.h"
#include "run/launcher.h"

namespace pl::cli {

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
        std::vector<std::string> argv = build_qemu_argv(profile, probe_host_facts(profile));
        for (size_t i = 0; i < argv.size(); ++i) {
          std::cout << shell_quote(argv[i]) << (i + 1 < argv.size() ? " \\\n" : "\n");
        }
        return 0;
      }
      opts->run.latency_interval = std::chrono::milliseconds(opts->latency_ms);
      return run_vm(profile, opts->run);
    };
  });
}

}  // namespace pl::cli
