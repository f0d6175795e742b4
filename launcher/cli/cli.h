// Each area of passlaunch adds its subcommands to the CLI11 app here. A
// subcommand's callback stores what to do in `action`; main() runs it after
// parsing, so parsing errors and runtime errors are reported the same way.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace pl::cli {

/// What the chosen subcommand does; returns the process exit code.
using Action = std::function<int()>;

void add_run_commands(CLI::App& app, Action& action);      // run
void add_qmp_command(CLI::App& app, Action& action);       // qmp
void add_rom_commands(CLI::App& app, Action& action);      // rom inspect|patch
void add_ctl_commands(CLI::App& app, Action& action);      // list, ctl
void add_latency_commands(CLI::App& app, Action& action);  // latency
void add_host_commands(CLI::App& app, Action& action);     // iommu, vfio-conf, check, recover
void add_start_commands(CLI::App& app, Action& action);    // start, stop (VM names only)
void add_import_commands(CLI::App& app, Action& action);   // import libvirt, init

/// Every subcommand above, in --help order, and the hidden __complete (which
/// completes from all of them). main() and the man page and completion tests
/// use this one list.
void add_all_commands(CLI::App& app, Action& action);

}  // namespace pl::cli
