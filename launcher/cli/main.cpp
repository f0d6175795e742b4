// passlaunch: run a QEMU VM with single-GPU VFIO passthrough, without libvirt.
// main() only wires the subcommands and turns errors into exit codes.
#include <iostream>

#include "cli/cli.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"passlaunch: run a QEMU VM with single-GPU VFIO passthrough, without libvirt"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "passlaunch 0.1");

  pl::cli::Action action;
  pl::cli::add_run_commands(app, action);
  pl::cli::add_rom_commands(app, action);
  pl::cli::add_qmp_command(app, action);
  pl::cli::add_ctl_commands(app, action);
  pl::cli::add_latency_commands(app, action);
  pl::cli::add_host_commands(app, action);
  pl::cli::add_start_commands(app, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints CLI11's message and usage hint
    return pl::exit_code(pl::Exit::kUsage);
  }

  try {
    return action ? action() : 0;
  } catch (const pl::Error& e) {
    std::cerr << "passlaunch: error: " << e.what() << "\n";
    if (!e.hint().empty()) std::cerr << "  hint: " << e.hint() << "\n";
    return pl::exit_code(e.code());
  }
}
