// The runtime directory of one VM: `$XDG_RUNTIME_DIR/passlaunch/NAME` or
// `/run/passlaunch/NAME`, mode 0700, holding the lock (one launcher per
// name), the pid files and the sockets. Removed on every exit path.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

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

 private:
  std::string name_;
  std::string path_;
  int lock_fd_ = -1;
};

/// A listening Unix socket at `path` (mode 0600, replacing a stale file):
/// QMP and swtpm inherit one, the control socket serves on one. The backlog
/// is SOMAXCONN, so a burst of clients connecting at once all get through.
int listen_unix(const std::string& path);

/// The launcher pid recorded in a VM's lock file, if a launcher holds it now.
std::optional<pid_t> running_launcher(const std::string& name);

}  // namespace pl
