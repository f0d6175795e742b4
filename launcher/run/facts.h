// Host facts for one run: where the VM's runtime and state live, which
// accelerator `auto` means here, and which fds QEMU will inherit.
#pragma once

#include <string>

#include "profile/argv.h"
#include "profile/profile.h"

namespace pl {

/// `$XDG_RUNTIME_DIR/passlaunch/NAME`, or `/run/passlaunch/NAME` when unset.
std::string runtime_dir_for(const std::string& name);

/// `/var/lib/passlaunch/NAME` (OVMF vars copy, journal), or `$PASSLAUNCH_STATE_DIR/NAME`.
std::string state_dir_for(const std::string& name);

/// True when /dev/kvm can be opened read-write and answers KVM_GET_API_VERSION.
bool kvm_usable();

/// The fd numbers QEMU inherits are fixed: 3 is the QMP listening socket, then
/// each tap-backed network entry gets its tap fd and, when /dev/vhost-net
/// exists, a vhost fd. The launcher dup2()s its fds onto these in the child.
constexpr int kQmpFd = 3;

/// Decides the facts for `profile` on this host (no side effects).
HostFacts probe_host_facts(const Profile& profile);

}  // namespace pl
