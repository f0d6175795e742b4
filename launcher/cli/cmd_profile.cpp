#include "cli/cli.h"

namespace pl::cli {

void add_profile_commands(CLI::App& app, Action& action) {
  (void)app;
  (void)action;
}

}  // namespace pl::cli
