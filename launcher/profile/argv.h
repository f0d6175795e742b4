// build_qemu_argv: the pure function from a profile (and a few host facts the
// launcher decides) to QEMU's argv. No I/O: golden tests pin its output.
#pragma once

#include <string>
#include <vector>

#include "profile/profile.h"

namespace pl {

/// Fds that QEMU inherits for one tap-backed network entry (macvtap, bridge).
struct NetFds {
  int tap = -1;
  int vhost = -1;  ///< -1: no vhost-net
};

/// What the launcher knows or has decided about this run on this host.
struct HostFacts {
  std::string qemu_binary = "qemu-system-x86_64";
  std::string runtime_dir;      ///< private directory of this VM (sockets)
  int qmp_fd = -1;              ///< listening QMP socket QEMU inherits; -1: runtime_dir/qmp.sock
  Accel accel = Accel::kTcg;    ///< resolved: never kAuto
  std::vector<NetFds> net_fds;  ///< one per macvtap/bridge entry of profile.network, in order
  std::string ovmf_vars;        ///< this VM's copy of the OVMF variables
  /// The hugetlbfs mount of the profile's page size (used with memory.hugepages).
  std::string hugepage_path = "/dev/hugepages";
  /// smbios.mode "host": the host's structures, one file each, in the runtime dir.
  std::vector<std::string> smbios_files;
  std::string shm_dir = "/dev/shm";  ///< where shmem files live
};

/// How many of the argv's last entries are the profile's qemu_args (the
/// dry-run prints them under a comment).
inline size_t qemu_args_tail(const Profile& p) { return p.qemu_args.size(); }

/// The argv to exec, argv[0] included. The guest starts paused (-S).
/// Throws pl::Error(kUsage) when facts and profile disagree (missing fds).
std::vector<std::string> build_qemu_argv(const Profile& profile, const HostFacts& facts);

}  // namespace pl
