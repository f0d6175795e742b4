// The one list of passlaunch's subcommands (cli.h).
#include "cli/cli.h"
#include "cli/complete.h"

namespace pl::cli {

void add_all_commands(CLI::App& app, Action& action) {
  add_run_commands(app, action);
  add_rom_commands(app, action);
  add_qmp_command(app, action);
  add_ctl_commands(app, action);
  add_latency_commands(app, action);
  add_host_commands(app, action);
  add_import_commands(app, action);
  add_start_commands(app, action);
  add_complete_command(app, action);  // last: it completes from all the above
}

}  // namespace pl::cli
