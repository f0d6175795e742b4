// The runtime directory of one VM: `$XDG_RUNTIME_DIR/passlaunch/NAME` or
// `/run/passlaunch/NAME`, mode 0700, holding the lock (one launcher per
// name), the pid files and the sockets. Removed on every exit path.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace pl {

class RuntimeDir {
 public:
  /// Creates the directory and takes the lock. Throws pl::Error(kFailed)
  /// "already running (pid N)" when another launcher holds it; clears what a
  /// dead launcher left behind; refuses (kHostDirty) when a QEMU of an earlier
  /// run of this name is still alive.
  explicit RuntimeDir(const std::string& name);
  ~RuntimeDir();
  RuntimeDir(const RuntimeDir&) = delete;
  RuntimeDir& operator=(const RuntimeDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& leaf) const { return path_ + "/" + leaf; }

  /// Writes qemu.pid (read by `list`, `latency NAME` and stale-lock checks).
  void write_qemu_pid(pid_t pid);

  /// Lets group `gid` find the VM and read its status: the directory becomes
  /// 0750 and the lock 0640, both of group `gid` (`list` and `ctl NAME
  /// status` probe the lock). The sockets stay 0600 unless the launcher opens
  /// them too (README, "Hotkeys": what the group may do on control.sock).
  /// False (nothing shared) when we may not give files to that group.
  bool share_with_group(gid_t gid);

 private:
  std::string name_;
  std::string path_;
  int lock_fd_ = -1;
};

/// A listening Unix socket at `path` (mode 0600, replacing a stale file):
/// QMP and swtpm inherit one, the control socket serves on one. The backlog
/// is SOMAXCONN, so a burst of clients connecting at once all get through.
int listen_unix(const std::string& path);

/// The launcher pid recorded in the lock file of runtime dir `dir`, if a
/// launcher holds it now.
std::optional<pid_t> running_launcher_in(const std::string& dir);

/// Where running VM `name` lives: runtime_dir_for(name) when a launcher holds
/// it; else, for a user other than root, /run/passlaunch/NAME when a launcher
/// holds that (a system VM whose status the group passlaunch may read); else
/// runtime_dir_for(name).
std::string find_runtime_dir(const std::string& name);

/// The launcher pid of VM `name` (in find_runtime_dir), if one runs now.
std::optional<pid_t> running_launcher(const std::string& name);

/// The directories holding runtime dirs that `list` reads: the one of
/// runtime_dir_for, then /run/passlaunch for a user other than root.
std::vector<std::string> runtime_bases();

}  // namespace pl
