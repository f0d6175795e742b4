// Shared fixtures for the tests: temporary directories, the test guest, and a
// paused real QEMU to talk to.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace pl::test {

/// A fresh directory under /tmp, removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// The test guest built by scripts/make-test-guest into the build directory.
std::string guest_kernel();
std::string guest_initrd(const std::string& variant);  // "normal" | "ignore-powerdown"

/// Runs a program (no shell), returns its exit status (or -1).
int run_command(const std::vector<std::string>& argv);

/// True when a paused VM can run under KVM here.
bool kvm_works();

/// A minimal blocking QMP exchange over a connected socket (for fixtures;
/// passlaunch itself uses the qmp library).
std::string qmp_exchange(int fd, const std::string& command_json);

/// QEMU started from `argv` (which must ask for QMP on inherited fd 3 and -S),
/// with a listening socket handed over as fd 3. Quits and reaps on destruction.
class PausedQemu {
 public:
  explicit PausedQemu(const std::vector<std::string>& argv);
  ~PausedQemu();
  PausedQemu(const PausedQemu&) = delete;
  pid_t pid() const { return pid_; }
  /// "prelaunch", "running", ...
  std::string query_status();
  std::string execute(const std::string& command_json) { return qmp_exchange(qmp_, command_json); }

 private:
  pid_t pid_ = -1;
  int qmp_ = -1;
  int stderr_ = -1;
};

}  // namespace pl::test
