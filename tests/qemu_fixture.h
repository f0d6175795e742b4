// Real QEMU for tests and benchmarks: started as our own child (killed if we
// die, reaped by us: PID 1 here reaps orphans only every ~2 s), QMP on a
// socket we listen on and hand over as fd 3 (the launcher's way), stderr kept
// in a file, the serial console read line by line when asked for.
// No GoogleTest here: bench/ links this too (library pl_testsupport).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pl::test {

/// A fresh directory under /tmp (short enough for socket paths), removed with
/// everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string path(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// True when a paused VM can run under KVM here.
bool kvm_works();

/// The test guest built by scripts/make-test-guest into the build directory.
std::string guest_kernel();
std::string guest_initrd(const std::string& variant);  // "normal" | "ignore-powerdown" | "panic"

/// A small paused machine (-S, q35, 64 MiB, no devices): KVM with
/// -cpu host,-arch-capabilities when it works, else TCG with -cpu max.
/// `extra` is appended.
std::vector<std::string> paused_qemu_argv(const std::vector<std::string>& extra = {});

/// The test guest under TCG (KVM cannot boot it here), serial console on
/// stdout (start it with Qemu::Options::serial); `extra` is appended.
std::vector<std::string> guest_qemu_argv(const std::string& variant,
                                         const std::vector<std::string>& extra = {});

/// One QEMU child. Killed (SIGKILL) and reaped on destruction if still running.
class Qemu {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    /// More fds for QEMU: {our fd, its number in QEMU}, e.g. a tap as fd 4.
    std::vector<std::pair<int, int>> fds = {};
    /// Stdout (the serial console of guest_qemu_argv) on a pipe that
    /// wait_for_line reads; otherwise it goes to the stderr file.
    bool serial = false;
  };

  /// Starts `argv`, which must serve QMP on the listening socket it inherits as
  /// fd 3 (as the two argv above do, and build_qemu_argv with HostFacts::qmp_fd = 3).
  /// Throws when QEMU cannot be executed.
  explicit Qemu(const std::vector<std::string>& argv) : Qemu(argv, Options{}) {}
  Qemu(const std::vector<std::string>& argv, Options options);
  ~Qemu();
  Qemu(const Qemu&) = delete;
  Qemu& operator=(const Qemu&) = delete;

  pid_t pid() const { return pid_; }
  /// The QMP socket's path: connect to it with any client (one at a time).
  std::string qmp_socket() const { return dir_.path("qmp.sock"); }

  /// True while QEMU has not exited (reaps it once it has).
  bool alive();
  /// Waits for the exit and reaps: the wait status, or nothing if QEMU still
  /// runs after `timeout`.
  std::optional<int> wait_exit(Clock::duration timeout);

  /// A minimal blocking QMP exchange on a connection of our own, made and
  /// negotiated on first use (independent of the qmp library under test):
  /// `command_json` in, the reply as compact JSON out (events skipped).
  /// Throws with QEMU's stderr when QEMU closes the connection or is silent
  /// for 60 s.
  std::string qmp(const std::string& command_json);
  /// query-status's status: "prelaunch", "running", ...
  std::string query_status();

  /// Reads serial lines (Options::serial) until one equals `line`: the time
  /// since QEMU was started, or nothing at the timeout or end of output.
  std::optional<Clock::duration> wait_for_line(std::string_view line, Clock::duration timeout);
  /// The serial lines read so far.
  const std::vector<std::string>& lines() const { return lines_; }
  /// What QEMU wrote to stderr so far.
  std::string stderr_text() const;
  /// Serial lines and stderr, for failure messages.
  std::string transcript() const;

 private:
  /// A stream read line by line (a trailing "\r" is dropped).
  struct LineStream {
    int fd = -1;
    std::string buffer;
    bool eof = false;
    /// The next line, or nothing at the deadline or end of stream.
    std::optional<std::string> next(Clock::time_point deadline);
  };
  std::string with_stderr(const std::string& what) const;

  TempDir dir_;
  pid_t pid_ = -1;
  int pidfd_ = -1;
  std::optional<int> status_;
  Clock::time_point started_;
  LineStream serial_;
  std::vector<std::string> lines_;
  LineStream qmp_;
};

}  // namespace pl::test
