// Shared fixtures for the tests: programs run to completion, the test guest's
// profile, passlaunch as a child. Real QEMU, temp dirs and the test guest's
// files: qemu_fixture.h.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qemu_fixture.h"

namespace pl::test {

/// Runs a program (no shell), returns its exit status (or -1).
int run_command(const std::vector<std::string>& argv);

/// Runs a program (no shell): {exit status or -1, stdout and stderr}.
std::pair<int, std::string> capture(const std::vector<std::string>& argv);

/// The CPUs this process may run on (its affinity, inside its cpuset).
std::vector<int> allowed_cpus();
/// True when this process may run on CPUs 0 and 1, which guest_profile pins to.
bool may_pin_guest_profile();

/// Cpus_allowed_list of a thread, from /proc/PID/task/TID/status ("" if gone).
std::string cpus_allowed_list(pid_t pid, pid_t tid);

/// A profile for the test guest under TCG (vCPU on CPU 1, emulator on 0,
/// iothread io0 on 1, serial logged); `extra` adds top-level members.
std::string guest_profile(const std::string& name, const std::string& variant,
                          const std::string& extra = "", int timeout_s = 30);

/// Output of a process, read as it comes.
class Output {
 public:
  explicit Output(int fd) : fd_(fd) {}
  ~Output();
  /// Waits until `needle` has appeared (at or after offset `from` of the
  /// text); false on EOF or timeout.
  bool wait_for(const std::string& needle,
                std::chrono::milliseconds timeout = std::chrono::seconds(90), size_t from = 0);
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

/// A network namespace with a veth pair pl-veth0/pl-veth1 (both up), removed
/// at the end. Named after the test process and `tag`, so tests never collide.
class NetNs {
 public:
  explicit NetNs(const std::string& tag = "");
  ~NetNs();
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;
  bool ok() const { return ok_; }
  const std::string& name() const { return name_; }
  /// `ip -d link show` inside the namespace.
  std::string links();

 private:
  std::string name_;
  bool ok_ = false;
};

/// Runs `passlaunch ARGS...` to completion: {exit code, output}.
std::pair<int, std::string> passlaunch_cmd(const std::vector<std::string>& args,
                                           const std::string& runtime_base, bool raw = false);

}  // namespace pl::test
