#include "test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>

#include "run/facts.h"
#include "run/spawn.h"

namespace pl::test {

TempDir::TempDir() {
  char tmpl[] = "/tmp/passlaunch-test-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string guest_kernel() { return std::string(PL_TEST_GUEST_DIR) + "/vmlinuz"; }

std::string guest_initrd(const std::string& variant) {
  return std::string(PL_TEST_GUEST_DIR) + "/initramfs-" + variant + ".cpio.gz";
}

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

std::string cpus_allowed_list(pid_t pid, pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Cpus_allowed_list:", 0) == 0)
      return line.substr(line.find_first_not_of(" \t", 18));
  }
  return "";
}

bool kvm_works() { return kvm_usable(); }

namespace {

/// Reads one CRLF-terminated JSON message that is not an event.
nlohmann::json read_reply(int fd, bool skip_events) {
  std::string line;
  for (;;) {
    char c;
    ssize_t n = ::read(fd, &c, 1);
    if (n <= 0) throw std::runtime_error("QMP connection closed");
    if (c != '\n') {
      line += c;
      continue;
    }
    auto j = nlohmann::json::parse(line);
    line.clear();
    if (skip_events && j.contains("event")) continue;
    return j;
  }
}

}  // namespace

std::string qmp_exchange(int fd, const std::string& command_json) {
  std::string msg = command_json + "\n";
  if (::write(fd, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) {
    throw std::runtime_error("QMP write failed");
  }
  return read_reply(fd, true).dump();
}

PausedQemu::PausedQemu(const std::vector<std::string>& argv) {
  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // Abstract address: nothing to clean up.
  std::string name = "passlaunch-test-" + std::to_string(::getpid()) + "-" + std::to_string(rand());
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  socklen_t len = offsetof(sockaddr_un, sun_path) + 1 + name.size();
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::listen(listener, 1) != 0) {
    throw std::runtime_error("cannot listen for QMP");
  }
  auto [err_rd, err_wr] = make_pipe();
  SpawnSpec spec;
  spec.argv = argv;
  spec.fds = {{listener, 3}};
  spec.stderr_fd = err_wr;
  spec.death_signal = SIGKILL;
  Child c = spawn_child(spec);
  pid_ = c.pid;
  ::close(c.pidfd);
  ::close(err_wr);
  stderr_ = err_rd;
  qmp_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(qmp_, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    throw std::runtime_error("cannot connect to QMP");
  }
  ::close(listener);
  try {
    auto greeting = read_reply(qmp_, false);
    if (!greeting.contains("QMP")) throw std::runtime_error("no QMP greeting");
    qmp_exchange(qmp_, R"({"execute": "qmp_capabilities"})");
  } catch (const std::exception& e) {
    // QEMU refused its argv: show why.
    std::string err;
    char buf[4096];
    ssize_t n;
    ::kill(pid_, SIGKILL);
    while ((n = ::read(stderr_, buf, sizeof buf)) > 0) err.append(buf, n);
    throw std::runtime_error(std::string(e.what()) + "; QEMU said: " + err);
  }
}

PausedQemu::~PausedQemu() {
  try {
    qmp_exchange(qmp_, R"({"execute": "quit"})");
  } catch (...) {
  }
  int status;
  ::waitpid(pid_, &status, 0);
  ::close(qmp_);
  ::close(stderr_);
}

std::string PausedQemu::query_status() {
  auto reply = nlohmann::json::parse(qmp_exchange(qmp_, R"({"execute": "query-status"})"));
  return reply.at("return").at("status").get<std::string>();
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

bool Output::wait_for(const std::string& needle, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (text_.find(needle) == std::string::npos) {
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
