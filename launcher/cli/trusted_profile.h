// The profiles that `passlaunch start NAME` may run as root for a user who
// is not root (through sudo or a polkit-allowed systemd unit): a VM *name*,
// never a path, resolved inside one root-owned directory (/etc/passlaunch).
// A user must never be able to make root run a profile, hook or path of
// their choosing, so the directory, the file and the profile's hooks must all
// be owned by root and writable by no one else, and none may be a symlink.
#pragma once

#include <string>

#include "profile/profile.h"

namespace pl::cli {

/// The directory `start` and `stop` resolve names in.
inline constexpr const char* kConfigDir = "/etc/passlaunch";

/// True when `name` is a valid VM name (the profile's "name" rule: letters,
/// digits, '.', '_', '-', at most 64, starting with a letter or digit).
bool valid_vm_name(const std::string& name);

/// Throws pl::Error(kUsage) naming `what` when `name` is not a valid VM name.
void check_vm_name(const std::string& name);

/// Reads and parses `config_dir`/NAME.json after checking that the directory
/// and the file are root-owned, not group- or world-writable and not
/// symlinks, that the profile's "name" is NAME, and that its hooks pass the
/// same checks. The file is read through the descriptor that was checked.
/// Throws pl::Error(kUsage) with the reason otherwise.
Profile load_trusted_profile(const std::string& config_dir, const std::string& name);

}  // namespace pl::cli
