// passlaunch: run a QEMU VM with single-GPU VFIO passthrough, without libvirt.
// main() only wires the subcommands and turns errors into exit codes.
#include <exception>
#include <iostream>
#include <string>

#include "cli/cli.h"
#include "core/error.h"
#include "version.h"  // generated: launcher/cli/version.cmake

int main(int argc, char** argv) {
  CLI::App app{"passlaunch: run a QEMU VM with single-GPU VFIO passthrough, without libvirt"};
  app.require_subcommand(1);
  // The version, and from a git checkout what `git describe` said at build time.
  app.set_version_flag(
      "--version",
      std::string("passlaunch ") + PASSLAUNCH_VERSION +
          (*PASSLAUNCH_GIT_DESCRIBE ? std::string(" (git ") + PASSLAUNCH_GIT_DESCRIBE + ")" : ""));

  pl::cli::Action action;
  pl::cli::add_all_commands(app, action);

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
  } catch (const std::exception& e) {
    // A bug or an unplanned failure (bad_alloc, a filesystem_error): a message and
    // exit 1, never std::terminate and a core dump.
    std::cerr << "passlaunch: internal error: " << e.what() << "\n";
    return pl::exit_code(pl::Exit::kFailed);
  } catch (...) {
    std::cerr << "passlaunch: internal error: an unknown exception\n";
    return pl::exit_code(pl::Exit::kFailed);
  }
}
