#include "test_util.h"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "run/spawn.h"

namespace pl::test {

int run_command(const std::vector<std::string>& argv) {
  SpawnSpec spec;
  spec.argv = argv;
  spec.stderr_fd = 2;
  Child c = spawn_child(spec);
  int status = 0;
  ::waitpid(c.pid, &status, 0);
  ::close(c.pidfd);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::pair<int, std::string> capture(const std::vector<std::string>& argv) {
  auto [rd, wr] = make_pipe();
  SpawnSpec spec;
  spec.argv = argv;
  spec.stdout_fd = wr;
  spec.stderr_fd = wr;
  Child c = spawn_child(spec);
  ::close(wr);
  Output out(rd);
  out.drain();
  int status = 0;
  ::waitpid(c.pid, &status, 0);
  ::close(c.pidfd);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out.text()};
}

NetNs::NetNs(const std::string& tag) : name_("pl-test-" + std::to_string(::getpid()) + tag) {
  run_command({"ip", "netns", "del", name_});
  ok_ = run_command({"ip", "netns", "add", name_}) == 0 &&
        run_command({"ip", "-n", name_, "link", "add", "pl-veth0", "type", "veth", "peer", "name",
                     "pl-veth1"}) == 0 &&
        run_command({"ip", "-n", name_, "link", "set", "pl-veth0", "up"}) == 0 &&
        run_command({"ip", "-n", name_, "link", "set", "pl-veth1", "up"}) == 0;
}

NetNs::~NetNs() { run_command({"ip", "netns", "del", name_}); }

std::string NetNs::links() { return capture({"ip", "-n", name_, "-d", "link", "show"}).second; }

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  std::vector<int> out;
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

bool may_pin_guest_profile() {
  std::vector<int> cpus = allowed_cpus();
  return std::find(cpus.begin(), cpus.end(), 0) != cpus.end() &&
         std::find(cpus.begin(), cpus.end(), 1) != cpus.end();
}

std::string cpus_allowed_list(pid_t pid, pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Cpus_allowed_list:", 0) == 0)
      return line.substr(line.find_first_not_of(" \t", 18));
  }
  return "";
}

std::string guest_profile(const std::string& name, const std::string& variant,
                          const std::string& extra, int timeout_s) {
  return R"({"name": ")" + name + R"(", "accel": "tcg", "memory": {"size_mib": 256},
    "cpu": {"model": "max", "vcpus": 1},
    "pinning": {"vcpus": [1], "emulator": "0", "iothreads": [{"id": "io0", "cpus": "1"}]},
    "kernel": {"path": ")" +
         guest_kernel() + R"(", "initrd": ")" + guest_initrd(variant) +
         R"(", "append": "console=ttyS0 quiet"},
    "serial": "log", "shutdown_timeout_s": )" +
         std::to_string(timeout_s) + extra + "}";
}

Output::~Output() { ::close(fd_); }

bool Output::wait_for(const std::string& needle, std::chrono::milliseconds timeout, size_t from) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (text_.find(needle, from) == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd_, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[4096];
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) return false;
    text_.append(buf, n);
  }
  return true;
}

void Output::drain() { wait_for(std::string("\x01") + "never", std::chrono::seconds(30)); }

Passlaunch::Passlaunch(const std::vector<std::string>& args, const std::string& runtime_base,
                       bool raw) {
  ::setenv("XDG_RUNTIME_DIR", runtime_base.c_str(), 1);
  auto [rd, wr] = make_pipe();
  SpawnSpec spec;
  if (!raw) spec.argv = {PL_PASSLAUNCH};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.stdout_fd = wr;
  spec.stderr_fd = wr;
  spec.death_signal = SIGKILL;
  Child c = spawn_child(spec);
  ::close(wr);
  ::close(c.pidfd);
  pid_ = c.pid;
  out_ = std::make_unique<Output>(rd);
}

Passlaunch::~Passlaunch() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

int Passlaunch::wait(std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) return 1000;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  reaped_ = true;
  out_->drain();
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

std::pair<int, std::string> passlaunch_cmd(const std::vector<std::string>& args,
                                           const std::string& runtime_base, bool raw) {
  Passlaunch p(args, runtime_base, raw);
  int code = p.wait(std::chrono::seconds(180));
  return {code, p.out().text()};
}

}  // namespace pl::test
