// Launch overhead and idle cost of `passlaunch run`, against bare QEMU.
//
// Launch: from exec of `passlaunch run demo.json` to its "guest running" line
// (cont acknowledged), against bare QEMU started with the same argv (-S) by a
// minimal raw client that does qmp_capabilities + cont. Same VM, alternated,
// medians. Goal: passlaunch adds at most 10 ms.
// Idle: while the demo guest runs, passlaunch's voluntary context switches
// over 10 s (wakeups) and its RSS. Goal: 0 wakeups/s, RSS under 8 MiB.
//
// Usage: launch_bench [ROUNDS] (default 15). Prints medians and ratios.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "run/spawn.h"

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

/// Reads from fd until `needle` appears; returns false on EOF or timeout.
bool wait_for(int fd, const std::string& needle, std::string& seen, int timeout_ms = 60000) {
  auto t0 = Clock::now();
  char buf[4096];
  while (seen.find(needle) == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    int left = timeout_ms - static_cast<int>(ms_since(t0));
    if (left <= 0 || ::poll(&p, 1, left) <= 0) return false;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    seen.append(buf, n);
  }
  return true;
}

std::vector<std::string> dry_run_argv(const std::string& passlaunch, const std::string& profile) {
  auto [rd, wr] = pl::make_pipe();
  pl::SpawnSpec spec;
  spec.argv = {passlaunch, "run", profile, "--dry-run"};
  spec.stdout_fd = wr;
  pl::Child c = pl::spawn_child(spec);
  ::close(wr);
  std::string out, tmp;
  wait_for(rd, "\x01", out, 10000);  // until EOF
  ::close(rd);
  ::waitpid(c.pid, nullptr, 0);
  ::close(c.pidfd);
  // One shell-quoted argument per line, joined by " \".
  std::vector<std::string> argv;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) break;  // the host plan follows, as # comments
    if (line.size() >= 2 && line.compare(line.size() - 2, 2, " \\") == 0)
      line.resize(line.size() - 2);
    if (line.size() >= 2 && line.front() == '\'' && line.back() == '\'') {
      line = line.substr(1, line.size() - 2);
      for (size_t p; (p = line.find("'\\''")) != std::string::npos;) line.replace(p, 4, "'");
    }
    argv.push_back(line);
  }
  return argv;
}

/// Bare QEMU: exec with -S and an inherited listening socket, then a raw
/// blocking client: greeting, qmp_capabilities, cont. Returns ms to cont's reply.
double bare_launch(const std::vector<std::string>& argv) {
  auto t0 = Clock::now();
  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string name = "pl-bench-" + std::to_string(::getpid());
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  socklen_t len = offsetof(sockaddr_un, sun_path) + 1 + name.size();
  ::bind(listener, reinterpret_cast<sockaddr*>(&addr), len);
  ::listen(listener, 1);
  pl::SpawnSpec spec;
  spec.argv = argv;
  spec.fds = {{listener, 3}};
  spec.death_signal = SIGKILL;
  pl::Child c = pl::spawn_child(spec);
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ::connect(s, reinterpret_cast<sockaddr*>(&addr), len);
  ::close(listener);
  std::string seen;
  wait_for(s, "\r\n", seen);
  std::string cmd = "{\"execute\":\"qmp_capabilities\"}\r\n";
  (void)!::write(s, cmd.data(), cmd.size());
  seen.clear();
  wait_for(s, "return", seen);
  cmd = "{\"execute\":\"cont\"}\r\n";
  (void)!::write(s, cmd.data(), cmd.size());
  seen.clear();
  wait_for(s, "return", seen);
  double ms = ms_since(t0);
  cmd = "{\"execute\":\"quit\"}\r\n";
  (void)!::write(s, cmd.data(), cmd.size());
  ::waitpid(c.pid, nullptr, 0);
  ::close(c.pidfd);
  ::close(s);
  return ms;
}

struct Launched {
  pl::Child child;
  int out = -1;
  double ms = 0;
};

Launched passlaunch_launch(const std::string& passlaunch, const std::string& profile) {
  auto t0 = Clock::now();
  auto [rd, wr] = pl::make_pipe();
  pl::SpawnSpec spec;
  spec.argv = {passlaunch, "run", profile};
  spec.stderr_fd = wr;
  spec.stdout_fd = wr;
  Launched l;
  l.child = pl::spawn_child(spec);
  ::close(wr);
  l.out = rd;
  std::string seen;
  if (!wait_for(rd, "guest running", seen)) {
    std::cerr << "passlaunch did not start the guest:\n" << seen << "\n";
    std::exit(1);
  }
  l.ms = ms_since(t0);
  return l;
}

void stop(Launched& l) {
  ::kill(l.child.pid, SIGINT);
  ::kill(l.child.pid, SIGINT);  // the second goes straight to quit
  std::string rest;
  wait_for(l.out, "\x01", rest, 20000);
  ::waitpid(l.child.pid, nullptr, 0);
  ::close(l.child.pidfd);
  ::close(l.out);
}

long status_field(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  }
  return -1;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 15;
  ::signal(SIGPIPE, SIG_IGN);
  std::string passlaunch = PL_PASSLAUNCH;
  std::string profile = std::string(PL_SOURCE_DIR) + "/profiles/demo.json";
  std::vector<std::string> qemu_argv = dry_run_argv(passlaunch, profile);

  std::vector<double> bare, ours;
  for (int i = 0; i < rounds; ++i) {  // alternated, so drift hits both alike
    bare.push_back(bare_launch(qemu_argv));
    Launched l = passlaunch_launch(passlaunch, profile);
    ours.push_back(l.ms);
    stop(l);
  }
  double b = median(bare), o = median(ours);
  std::printf("launch to cont acknowledged, median of %d (alternated):\n", rounds);
  std::printf("  bare QEMU + raw client   %8.1f ms\n", b);
  std::printf("  passlaunch run           %8.1f ms\n", o);
  std::printf("  passlaunch adds          %8.1f ms (goal <= 10 ms)   ratio %.2fx\n", o - b, o / b);

  // Idle supervision: let the guest boot, then count passlaunch's wakeups.
  Launched l = passlaunch_launch(passlaunch, profile);
  std::string seen;
  wait_for(l.out, "passlaunch-guest: ready", seen);
  // Let the boot's last output drain.
  ::usleep(500 * 1000);
  long v0 = status_field(l.child.pid, "voluntary_ctxt_switches");
  long n0 = status_field(l.child.pid, "nonvoluntary_ctxt_switches");
  ::sleep(10);
  long v1 = status_field(l.child.pid, "voluntary_ctxt_switches");
  long n1 = status_field(l.child.pid, "nonvoluntary_ctxt_switches");
  long rss_kib = status_field(l.child.pid, "VmRSS");
  stop(l);
  std::printf("idle supervision over 10 s (guest running):\n");
  std::printf("  wakeups                  %8.1f /s (voluntary %ld, involuntary %ld; goal 0/s)\n",
              (v1 - v0) / 10.0, v1 - v0, n1 - n0);
  std::printf(
      "  RSS                      %8.1f MiB (goal < 8 MiB; libvirtd + virtlogd: 34 MiB)"
      "   ratio %.2fx\n",
      rss_kib / 1024.0, rss_kib / 1024.0 / 34.0);
  return 0;
}
