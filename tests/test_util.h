// Shared fixtures for the tests: temporary directories, the test guest, and a
// paused real QEMU to talk to.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
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

/// Runs a program (no shell): {exit status or -1, stdout and stderr}.
std::pair<int, std::string> capture(const std::vector<std::string>& argv);

/// Cpus_allowed_list of a thread, from /proc/PID/task/TID/status ("" if gone).
std::string cpus_allowed_list(pid_t pid, pid_t tid);

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

/// A profile for the test guest under TCG (vCPU on CPU 1, emulator on 0,
/// iothread io0 on 1, serial logged); `extra` adds top-level members.
std::string guest_profile(const std::string& name, const std::string& variant,
                          const std::string& extra = "", int timeout_s = 30);

/// Output of a process, read as it comes.
class Output {
 public:
  explicit Output(int fd) : fd_(fd) {}
  ~Output();
  /// Waits until `needle` has appeared; false on EOF or timeout.
  bool wait_for(const std::string& needle,
                std::chrono::milliseconds timeout = std::chrono::seconds(90));
  /// Reads until EOF (at most 30 s).
  void drain();
  const std::string& text() const { return text_; }

 private:
  int fd_;
  std::string text_;
};

/// `passlaunch ARGS...` with stdout and stderr captured; XDG_RUNTIME_DIR is
/// set to `runtime_base` so tests never collide. Killed if still running.
class Passlaunch {
 public:
  /// With `raw`, args is the whole argv (e.g. to run passlaunch under `ip netns exec`).
  Passlaunch(const std::vector<std::string>& args, const std::string& runtime_base,
             bool raw = false);
  ~Passlaunch();
  pid_t pid() const { return pid_; }
  Output& out() { return *out_; }
  /// The exit code (or -signal); 1000 on timeout.
  int wait(std::chrono::seconds timeout = std::chrono::seconds(120));

 private:
  pid_t pid_;
  bool reaped_ = false;
  std::unique_ptr<Output> out_;
};

/// Runs `passlaunch ARGS...` to completion: {exit code, output}.
std::pair<int, std::string> passlaunch_cmd(const std::vector<std::string>& args,
                                           const std::string& runtime_base, bool raw = false);

}  // namespace pl::test
