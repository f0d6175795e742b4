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
      return run_vm(profile, opts->run);
    };
  });
}

}  // namespace pl::cli
