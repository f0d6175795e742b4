// Shell completion from the CLI11 tree itself: `passlaunch __complete WORD...`
// (hidden) prints what the last WORD may become, and the bash, zsh and fish
// scripts in scripts/completions/ only show it. New subcommands and options
// complete with no second list to keep in step.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "cli/cli.h"

namespace pl::cli {

/// Candidates for words.back() given the words before it (the words after
/// "passlaunch"; the last may be empty). Plain words are candidates already
/// filtered by prefix; the directive ":files" or ":dirs" asks the shell to
/// complete file or directory names. `vm_names` lists the running VMs (for
/// ctl NAME and latency NAME).
std::vector<std::string> completions(CLI::App& root, const std::vector<std::string>& words,
                                     const std::function<std::vector<std::string>()>& vm_names);

/// The names of the VMs whose launcher runs now (their runtime dirs).
std::vector<std::string> running_vm_names();

/// Adds the hidden `__complete` subcommand; call after every other add_*.
void add_complete_command(CLI::App& app, Action& action);

}  // namespace pl::cli
