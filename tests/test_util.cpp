#include "test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <cstring>
#include <stdexcept>

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
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(listener, 1) != 0) {
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

}  // namespace pl::test
