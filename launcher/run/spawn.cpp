#include "run/spawn.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "core/error.h"

namespace pl {
namespace {

/// Everything the child does between fork and exec, with async-signal-safe
/// calls only. On failure it writes {step, errno} to `report` and exits 127.
[[noreturn]] void child_main(const SpawnSpec& spec, char* const* argv, int report, pid_t parent) {
  auto fail = [&](int step) {
    int msg[2] = {step, errno};
    (void)!::write(report, msg, sizeof msg);
    ::_exit(127);
  };
  ::setpgid(0, 0);
  if (spec.death_signal) {
    ::prctl(PR_SET_PDEATHSIG, spec.death_signal);
    // The launcher may have died before the prctl: then no signal will come.
    if (::getppid() != parent) ::_exit(127);
  }
  // Signals were blocked across fork; the launcher's handlers (Asio's) must
  // not run here, so every disposition goes back to the default first.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (!spec.cpus.empty()) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : spec.cpus) CPU_SET(c, &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0) fail(1);
  }
  // Move every source fd above all targets first, so that dup2 onto a target
  // never clobbers a source that is still to be moved.
  int high = 100;
  for (const auto& [from, to] : spec.fds) high = std::max(high, to + 1);
  int devnull = ::open("/dev/null", O_RDWR);
  if (devnull < 0) fail(2);
  int out = ::fcntl(spec.stdout_fd >= 0 ? spec.stdout_fd : devnull, F_DUPFD, high);
  int err = ::fcntl(spec.stderr_fd >= 0 ? spec.stderr_fd : devnull, F_DUPFD, high);
  int in = ::fcntl(devnull, F_DUPFD, high);
  if (out < 0 || err < 0 || in < 0) fail(2);
  int staged[64];
  size_t n = spec.fds.size() < 64 ? spec.fds.size() : 64;
  for (size_t i = 0; i < n; ++i) {
    staged[i] = ::fcntl(spec.fds[i].first, F_DUPFD, high);
    if (staged[i] < 0) fail(2);
  }
  if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) fail(2);
  for (size_t i = 0; i < n; ++i) {
    if (::dup2(staged[i], spec.fds[i].second) < 0) fail(2);
  }
  // Close everything else except the report pipe (close-on-exec).
  int max_target = 2;
  for (const auto& fd : spec.fds) max_target = std::max(max_target, fd.second);
  for (int fd = 3; fd <= max_target; ++fd) {
    bool wanted = false;
    for (const auto& p : spec.fds) wanted |= p.second == fd;
    if (!wanted) ::close(fd);
  }
  // The report pipe was placed above every target, so this keeps only it.
  auto close_from_to = [](int lo, unsigned hi) {
    if (::syscall(SYS_close_range, lo, hi, 0) == 0) return;
    for (unsigned fd = lo; fd <= hi && fd < 65536; ++fd) ::close(static_cast<int>(fd));
  };
  if (report > max_target + 1) close_from_to(max_target + 1, static_cast<unsigned>(report - 1));
  close_from_to(report + 1, ~0U);
  ::execvp(argv[0], argv);
  fail(4);
  ::_exit(127);
}

}  // namespace

std::pair<int, int> make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0)
    throw system_error(Exit::kEnvironment, "cannot create", "a pipe", errno);
  return {p[0], p[1]};
}

Child spawn_child(const SpawnSpec& spec) {
  if (spec.fds.size() > 64) {
    throw Error(Exit::kUsage, "too many fds for " + spec.argv[0] + " (at most 64)");
  }
  std::vector<char*> argv;
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  // The report pipe sits above every target fd so the child can keep it open.
  int max_target = 2;
  for (const auto& fd : spec.fds) max_target = std::max(max_target, fd.second);
  auto [rd0, wr0] = make_pipe();
  int rd = ::fcntl(rd0, F_DUPFD_CLOEXEC, max_target + 1);
  int wr = ::fcntl(wr0, F_DUPFD_CLOEXEC, max_target + 1);
  ::close(rd0);
  ::close(wr0);

  // No signal may reach the child while it still has our handlers.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &old);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) child_main(spec, argv.data(), wr, parent);
  int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    ::close(rd);
    ::close(wr);
    throw system_error(Exit::kEnvironment, "cannot fork for", spec.argv[0], fork_errno);
  }
  ::close(wr);
  int msg[2];
  ssize_t got;
  do {
    got = ::read(rd, msg, sizeof msg);
  } while (got < 0 && errno == EINTR);
  ::close(rd);
  if (got == sizeof msg) {
    int status;
    ::waitpid(pid, &status, 0);
    errno = msg[1];
    switch (msg[0]) {
      case 1:
        throw system_error(Exit::kFailed, "cannot set the CPU affinity of", spec.argv[0], msg[1],
                           "the emulator CPUs must be online and inside this process's cpuset");
      case 4:
        throw system_error(
            Exit::kEnvironment, "cannot execute", spec.argv[0], msg[1],
            msg[1] == ENOENT ? "is QEMU installed? (apt-get install qemu-system-x86)" : "");
      default:
        throw system_error(Exit::kEnvironment, "cannot prepare the fds of", spec.argv[0], msg[1]);
    }
  }
  Child child;
  child.pid = pid;
  child.pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (child.pidfd < 0) {
    int e = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw system_error(Exit::kEnvironment, "pidfd_open for", spec.argv[0], e);
  }
  ::fcntl(child.pidfd, F_SETFD, FD_CLOEXEC);
  return child;
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return std::string("killed by signal ") +
           (name ? std::string("SIG") + name : std::to_string(WTERMSIG(status)));
  }
  return "ended with wait status " + std::to_string(status);
}

}  // namespace pl
