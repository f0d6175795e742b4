// qemu_spy stands in for qemu-system-x86_64 in the run tests (a symlink of
// that name first in PATH), so that the tests see the launcher's promises
// from outside the launcher:
//   1. At exec it records what the launcher handed over: its pid, process
//      group, CPU affinity and every open fd.
//   2. It then becomes the real QEMU (exec, same pid, so the launcher pins
//      QEMU's own threads), with fd 3 replaced by a listening socket of its
//      own; a child it forked first relays the launcher's QMP connection (on
//      the launcher's fd 3) to QEMU.
//   3. The relay records each command and event with a timestamp and, as
//      each command passes (before QEMU sees it), the affinity of every QEMU
//      thread: at `cont`, every thread must already be pinned.
//   4. On request it changes the world at an exact point of the protocol:
//      shrinks a cpuset when a command passes (between plan and pin), or
//      stops QEMU (SIGSTOP) when it emits an event.
//
// Environment (without PL_SPY_DIR it just execs the real QEMU):
//   PL_SPY_DIR      directory for `record` (lines below) and real-qmp.sock
//   PL_SPY_QEMU     the real QEMU (default /usr/bin/qemu-system-x86_64)
//   PL_SPY_SHRINK   FILE=CPUS@COMMAND: write CPUS to FILE when COMMAND passes
//   PL_SPY_STOP_ON  EVENT: SIGSTOP QEMU when it emits EVENT, before relaying it
//
// Record lines:
//   exec pid=P pgid=G cpus=LIST          fd N -> TARGET
//   command NAME ms=T                    thread TID CPUS COMM   (one per QEMU thread)
//   event NAME ms=T                      shrunk FILE CPUS       stopped EVENT
//   end ms=T
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

std::string g_record;

long now_ms() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/// Appends one line to the record (opened each time: the relay and the exec
/// side both write, and a line is never torn).
void record(const std::string& line) {
  int fd = ::open(g_record.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return;
  std::string l = line + "\n";
  (void)!::write(fd, l.data(), l.size());
  ::close(fd);
}

std::string read_line_of(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key, 0) == 0) {
      size_t v = line.find_first_not_of(" \t", key.size());
      return v == std::string::npos ? "" : line.substr(v);
    }
  }
  return "";
}

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

/// Every thread of `pid`: "thread TID CPUS COMM".
void record_threads(pid_t pid) {
  std::string task = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(task.c_str());
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string t = task + "/" + e->d_name;
    record(std::string("thread ") + e->d_name + " " +
           read_line_of(t + "/status", "Cpus_allowed_list:") + " " + first_line(t + "/comm"));
  }
  ::closedir(d);
}

void record_exec() {
  record("exec pid=" + std::to_string(::getpid()) + " pgid=" + std::to_string(::getpgid(0)) +
         " cpus=" + read_line_of("/proc/self/status", "Cpus_allowed_list:"));
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.' || std::atoi(e->d_name) == ::dirfd(d)) continue;
    char target[512];
    ssize_t n =
        ::readlink((std::string("/proc/self/fd/") + e->d_name).c_str(), target, sizeof target - 1);
    target[n > 0 ? n : 0] = 0;
    record(std::string("fd ") + e->d_name + " -> " + target);
  }
  ::closedir(d);
}

bool is_listening_socket(int fd) {
  int v = 0;
  socklen_t len = sizeof v;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v;
}

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  return a;
}

bool write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

struct Actions {
  std::string shrink_file, shrink_cpus, shrink_at, stop_on;
};

/// Relays whole lines between the launcher (`client`) and QEMU (`server`).
[[noreturn]] void relay(int listener, const std::string& qemu_socket, pid_t qemu,
                        const Actions& act) {
  int client = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(listener);
  int server = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a = unix_address(qemu_socket);
  if (client < 0 || server < 0 ||
      ::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    record("end ms=" + std::to_string(now_ms()) + " error=" + std::strerror(errno));
    ::_exit(1);
  }
  std::string from_client, from_server;
  auto on_command = [&](const std::string& line) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    std::string name = j.is_object() ? j.value("execute", "") : "";
    if (name.empty()) return;
    record("command " + name + " ms=" + std::to_string(now_ms()));
    record_threads(qemu);
    if (name == act.shrink_at && !act.shrink_file.empty()) {
      std::ofstream(act.shrink_file) << act.shrink_cpus << "\n";
      record("shrunk " + act.shrink_file + " " + act.shrink_cpus);
    }
  };
  auto on_reply = [&](const std::string& line) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    std::string name = j.is_object() ? j.value("event", "") : "";
    if (name.empty()) return;
    record("event " + name + " ms=" + std::to_string(now_ms()));
    if (name == act.stop_on) {
      ::kill(qemu, SIGSTOP);
      record("stopped " + name);
    }
  };
  // Moves the complete lines of `buf` to `to`, calling `see` on each first.
  auto pass = [](std::string& buf, int to, auto&& see) {
    for (size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
      std::string line = buf.substr(0, nl + 1);
      buf.erase(0, nl + 1);
      see(line);
      if (!write_all(to, line)) return false;
    }
    return true;
  };
  for (;;) {
    pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    char chunk[65536];
    bool ok = true;
    if (p[0].revents) {
      ssize_t n = ::read(client, chunk, sizeof chunk);
      if (n <= 0) break;
      from_client.append(chunk, static_cast<size_t>(n));
      ok = pass(from_client, server, on_command);
    }
    if (ok && p[1].revents) {
      ssize_t n = ::read(server, chunk, sizeof chunk);
      if (n <= 0) break;
      from_server.append(chunk, static_cast<size_t>(n));
      ok = pass(from_server, client, on_reply);
    }
    if (!ok) break;
  }
  record("end ms=" + std::to_string(now_ms()));
  ::_exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  const char* real_env = std::getenv("PL_SPY_QEMU");
  std::string real = real_env && *real_env ? real_env : "/usr/bin/qemu-system-x86_64";
  std::vector<char*> args(argv, argv + argc);
  args[0] = real.data();
  args.push_back(nullptr);
  const char* dir = std::getenv("PL_SPY_DIR");
  if (!dir || !*dir || !is_listening_socket(3)) {
    ::execv(real.c_str(), args.data());
    std::perror(real.c_str());
    return 127;
  }
  g_record = std::string(dir) + "/record";
  record_exec();

  Actions act;
  if (const char* s = std::getenv("PL_SPY_SHRINK")) {
    std::string v = s;
    size_t eq = v.find('='), at = v.find('@');
    if (eq != std::string::npos && at != std::string::npos && eq < at) {
      act.shrink_file = v.substr(0, eq);
      act.shrink_cpus = v.substr(eq + 1, at - eq - 1);
      act.shrink_at = v.substr(at + 1);
    }
  }
  if (const char* s = std::getenv("PL_SPY_STOP_ON")) act.stop_on = s;

  // QEMU's own listener, ready before the fork so the relay can connect at once.
  std::string qemu_socket = std::string(dir) + "/real-qmp.sock";
  ::unlink(qemu_socket.c_str());
  int own = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a = unix_address(qemu_socket);
  if (own < 0 || ::bind(own, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(own, 4) != 0) {
    std::perror("qemu_spy: QMP socket");
    return 127;
  }
  pid_t qemu = ::getpid();
  pid_t relay_pid = ::fork();
  if (relay_pid < 0) {
    std::perror("qemu_spy: fork");
    return 127;
  }
  if (relay_pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // gone with QEMU
    if (::getppid() != qemu) ::_exit(1);
    ::close(own);
    int null = ::open("/dev/null", O_RDWR);
    for (int fd = 0; fd <= 2; ++fd) ::dup2(null, fd);
    ::syscall(SYS_close_range, 4, ~0U, 0);  // the taps and pipes belong to QEMU
    relay(3, qemu_socket, qemu, act);
  }
  ::dup2(own, 3);
  ::close(own);
  ::execv(real.c_str(), args.data());
  std::perror(real.c_str());
  return 127;
}
