// Starting QEMU: directly (no shell), as our own child, in its own process
// group (a terminal's Ctrl-C reaches only the launcher), with only the fds
// meant for it, and with its CPU affinity set before exec so every thread it
// creates starts inside the emulator set.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace pl {

struct SpawnSpec {
  std::vector<std::string> argv;
  /// {fd in the launcher, fd number in the child}; all others are closed.
  std::vector<std::pair<int, int>> fds;
  std::vector<int> cpus;  ///< affinity applied in the child before exec; empty: inherit
  int stdout_fd = -1;     ///< installed as the child's stdout; -1: /dev/null
  int stderr_fd = -1;     ///< installed as the child's stderr; -1: /dev/null
  int death_signal = 0;   ///< sent to the child if the launcher dies (PR_SET_PDEATHSIG)
};

struct Child {
  pid_t pid = -1;
  int pidfd = -1;  ///< readable when the child exits (pidfd_open)
};

/// Forks and execs. Throws pl::Error: kEnvironment when the program cannot be
/// executed (missing QEMU), kFailed when the affinity cannot be applied.
Child spawn_child(const SpawnSpec& spec);

/// A pipe whose both ends are close-on-exec: {read end, write end}.
std::pair<int, int> make_pipe();

/// "exited with status N" / "killed by signal SIGKILL" for a waitpid status.
std::string describe_wait_status(int status);

}  // namespace pl
