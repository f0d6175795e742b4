// Host facts for one run: where the VM's runtime and state live, which
// accelerator `auto` means here, and which fds QEMU will inherit.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

/// Decides the facts for `profile` on this host (no side effects): files are
/// read under `host_root`. Throws pl::Error(kEnvironment) when the host lacks
/// what the profile needs (a hugetlbfs mount of its page size, a DMI table).
HostFacts probe_host_facts(const Profile& profile, const std::string& host_root = "");

/// The host's SMBIOS table, for smbios.mode "host".
constexpr const char* kHostDmiTable = "/sys/firmware/dmi/tables/DMI";

/// The structures of an SMBIOS structure table (as in kHostDmiTable), each
/// whole (formatted area and strings), whose type is in `types`, in order.
/// Stops at the end-of-table structure (127). Throws pl::Error(kEnvironment)
/// for a truncated or malformed table.
std::vector<std::pair<int, std::string>> smbios_structures(std::string_view table,
                                                           const std::vector<int>& types);

/// The types smbios.mode "host" copies: BIOS, system, baseboard, chassis.
inline const std::vector<int>& host_smbios_types() {
  static const std::vector<int> t{0, 1, 2, 3};
  return t;
}

/// The runtime-dir file of the Nth copied host SMBIOS structure of `type`.
std::string smbios_file(const std::string& runtime_dir, int type, size_t n);

/// The hugetlbfs mount of pages of `size_mib` in a /proc/mounts text: a mount
/// with "pagesize=1G"/"pagesize=2M", or without pagesize= for the default 2M.
std::string hugetlbfs_mount(std::string_view mounts, int size_mib);

}  // namespace pl
