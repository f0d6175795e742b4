#include "qemu_fixture.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <tuple>

#include "run/facts.h"
#include "run/spawn.h"

namespace pl::test {
namespace {

using Clock = Qemu::Clock;

/// Milliseconds left until `deadline`, for poll(); 0 once it has passed.
int ms_until(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path)
    throw std::runtime_error("socket path too long: " + path);
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

/// Generous: a loaded 2-core machine running TCG guests can be slow to answer.
constexpr auto kQmpTimeout = std::chrono::seconds(60);

}  // namespace

TempDir::TempDir() {
  char tmpl[] = "/tmp/passlaunch-test-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

bool kvm_works() { return kvm_usable(); }

std::string guest_kernel() { return std::string(PL_TEST_GUEST_DIR) + "/vmlinuz"; }

std::string guest_initrd(const std::string& variant) {
  return std::string(PL_TEST_GUEST_DIR) + "/initramfs-" + variant + ".cpio.gz";
}

namespace {

/// A q35 machine with no default devices and no display: `machine` (accelerator,
/// memory, ...), then QMP on the socket Qemu hands over as fd 3, then `extra`.
std::vector<std::string> q35_argv(const std::vector<std::string>& machine,
                                  const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {
      "qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
      "-machine",           "q35"};
  argv.insert(argv.end(), machine.begin(), machine.end());
  argv.insert(argv.end(), {"-chardev", "socket,id=qmp,fd=3,server=on,wait=off", "-mon",
                           "chardev=qmp,mode=control"});
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

}  // namespace

std::vector<std::string> paused_qemu_argv(const std::vector<std::string>& extra) {
  if (kvm_works()) {
    return q35_argv({"-S", "-m", "64", "-accel", "kvm", "-cpu", "host,-arch-capabilities"}, extra);
  }
  return q35_argv({"-S", "-m", "64", "-accel", "tcg", "-cpu", "max"}, extra);
}

std::vector<std::string> guest_qemu_argv(const std::string& variant,
                                         const std::vector<std::string>& extra) {
  return q35_argv({"-accel", "tcg", "-cpu", "max", "-m", "256", "-kernel", guest_kernel(),
                   "-initrd", guest_initrd(variant), "-append", "console=ttyS0 quiet", "-chardev",
                   "stdio,id=serial0,signal=off", "-serial", "chardev:serial0"},
                  extra);
}

Qemu::Qemu(const std::vector<std::string>& argv, Options options) {
  // QMP: bound and listening before QEMU starts, so a client can connect at
  // once (the connection waits in the backlog until QEMU accepts it).
  sockaddr_un addr = unix_address(qmp_socket());
  int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 1) != 0) {
    int e = errno;
    if (listener >= 0) ::close(listener);
    throw std::runtime_error("cannot listen on " + qmp_socket() + ": " + std::strerror(e));
  }
  int err =
      ::open(dir_.path("qemu.stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int serial_wr = -1;
  if (options.serial) std::tie(serial_.fd, serial_wr) = make_pipe();
  SpawnSpec spec;
  spec.argv = argv;
  spec.fds = {{listener, 3}};
  spec.fds.insert(spec.fds.end(), options.fds.begin(), options.fds.end());
  spec.stdout_fd = options.serial ? serial_wr : err;
  spec.stderr_fd = err;
  spec.death_signal = SIGKILL;  // also when the thread that started it ends
  started_ = Clock::now();
  try {
    Child child = spawn_child(spec);
    pid_ = child.pid;
    pidfd_ = child.pidfd;
  } catch (...) {
    for (int fd : {listener, err, serial_wr, serial_.fd}) {
      if (fd >= 0) ::close(fd);
    }
    throw;
  }
  // Only QEMU holds the listener now: once it exits, connecting fails at once.
  for (int fd : {listener, err, serial_wr}) {
    if (fd >= 0) ::close(fd);
  }
}

Qemu::~Qemu() {
  if (!status_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  for (int fd : {pidfd_, serial_.fd, qmp_.fd}) {
    if (fd >= 0) ::close(fd);
  }
}

bool Qemu::alive() {
  int status;
  if (!status_ && ::waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
  return !status_;
}

std::optional<int> Qemu::wait_exit(Clock::duration timeout) {
  if (status_) return status_;
  auto deadline = Clock::now() + timeout;
  pollfd p{pidfd_, POLLIN, 0};
  int n;
  while ((n = ::poll(&p, 1, ms_until(deadline))) < 0 && errno == EINTR) {
  }
  if (n <= 0) return std::nullopt;
  int status = 0;
  if (::waitpid(pid_, &status, 0) != pid_) throw std::runtime_error("waitpid failed");
  status_ = status;
  return status_;
}

std::optional<std::string> Qemu::LineStream::next(Clock::time_point deadline) {
  for (;;) {
    if (auto nl = buffer.find('\n'); nl != std::string::npos) {
      std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    if (eof) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, ms_until(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    char chunk[4096];
    ssize_t got = ::read(fd, chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      eof = true;
      continue;
    }
    buffer.append(chunk, static_cast<size_t>(got));
  }
}

std::string Qemu::qmp(const std::string& command_json) {
  auto deadline = Clock::now() + kQmpTimeout;
  if (qmp_.fd < 0) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr = unix_address(qmp_socket());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      int e = errno;
      ::close(fd);
      throw std::runtime_error(
          with_stderr("cannot connect to QMP: " + std::string(std::strerror(e))));
    }
    qmp_.fd = fd;
    auto greeting = qmp_.next(deadline);
    if (!greeting || !nlohmann::json::parse(*greeting).contains("QMP")) {
      throw std::runtime_error(with_stderr("no QMP greeting"));
    }
    auto reply = nlohmann::json::parse(qmp(R"({"execute": "qmp_capabilities"})"));
    if (!reply.contains("return")) throw std::runtime_error("qmp_capabilities: " + reply.dump());
  }
  std::string msg = command_json + "\n";
  for (std::string_view left = msg; !left.empty();) {
    ssize_t n = ::send(qmp_.fd, left.data(), left.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error(with_stderr("QMP write failed"));
    left.remove_prefix(static_cast<size_t>(n));
  }
  while (auto line = qmp_.next(deadline)) {
    auto j = nlohmann::json::parse(*line);
    if (!j.contains("event")) return j.dump();
  }
  throw std::runtime_error(with_stderr("no QMP reply to " + command_json));
}

std::string Qemu::query_status() {
  auto reply = nlohmann::json::parse(qmp(R"({"execute": "query-status"})"));
  return reply.at("return").at("status").get<std::string>();
}

std::optional<Clock::duration> Qemu::wait_for_line(std::string_view line, Clock::duration timeout) {
  if (serial_.fd < 0) throw std::logic_error("wait_for_line needs Qemu::Options::serial");
  auto deadline = Clock::now() + timeout;
  while (auto got = serial_.next(deadline)) {
    lines_.push_back(*got);
    if (*got == line) return Clock::now() - started_;
  }
  return std::nullopt;
}

std::string Qemu::stderr_text() const {
  std::ifstream in(dir_.path("qemu.stderr"));
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string Qemu::transcript() const {
  std::string out = "serial console:\n";
  for (const auto& l : lines_) out += "  " + l + "\n";
  out += "qemu stderr:\n" + stderr_text();
  return out;
}

std::string Qemu::with_stderr(const std::string& what) const {
  return what + "; QEMU said: " + stderr_text();
}

}  // namespace pl::test
