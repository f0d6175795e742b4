// `passlaunch run PROFILE --dry-run`: the exact argv, nothing started.
#include <iostream>
#include <memory>

#include "cli/cli.h"
#include "core/error.h"
#include "core/text.h"
#include "profile/argv.h"
#include "profile/profile.h"
#include "run/facts.h"

namespace pl::cli {

void add_profile_commands(CLI::App& app, Action& action) {
  struct Options {
    std::string profile;
    bool dry_run = false;
  };
  auto opts = std::make_shared<Options>();
  CLI::App* run = app.add_subcommand("run", "Run the VM a profile describes");
  run->add_option("PROFILE", opts->profile, "Profile file (JSON)")->required();
  run->add_flag("--dry-run", opts->dry_run,
                "Print the QEMU command line (one argument per line, shell-quoted) and stop");
  run->callback([opts, &action] {
    action = [opts]() -> int {
      Profile profile = load_profile(opts->profile);
      HostFacts facts = probe_host_facts(profile);
      std::vector<std::string> argv = build_qemu_argv(profile, facts);
      if (opts->dry_run) {
        for (size_t i = 0; i < argv.size(); ++i) {
          std::cout << shell_quote(argv[i]) << (i + 1 < argv.size() ? " \\\n" : "\n");
        }
        return 0;
      }
      throw Error(Exit::kUsage, "run without --dry-run is not available yet");
    };
  });
}

}  // namespace pl::cli
