// Test fixtures for the qmp tests: a scripted fake QMP server (a blocking
// thread on a real Unix socket), a child process runner for the passlaunch
// binary, and the paused real QEMU of qemu_fixture.h as these tests use it.
#pragma once

#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "qemu_fixture.h"
#include "qmp/client.h"
#include "qmp/framer.h"

extern char** environ;

namespace qmp::testing {

using json = nlohmann::json;
using namespace std::chrono_literals;

using pl::test::Qemu;
using pl::test::TempDir;

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Polls `cond` until it holds or `limit` passes (a bounded wait on a real
/// condition, not a sleep used as synchronisation).
inline bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds limit = 60s) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

/// A child process started with posix_spawn (no shell), stdout and stderr on
/// pipes; killed and reaped by the destructor if still running.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    int out[2] = {-1, -1}, err[2] = {-1, -1};
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe");
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    ::close(err[1]);
    out_ = out[0];
    err_ = err[0];
    if (rc != 0) throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  }
  ~Child() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      int st;
      ::waitpid(pid_, &st, 0);
    }
    if (out_ >= 0) ::close(out_);
    if (err_ >= 0) ::close(err_);
  }
  pid_t pid() const { return pid_; }
  /// True while the child has not exited (reaps it if it has).
  bool alive() {
    if (status_) return false;
    int st;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) status_ = st;
    return !status_;
  }
  /// Waits (bounded) for the exit; returns the wait status, or nullopt.
  std::optional<int> wait(std::chrono::milliseconds limit = 60s) {
    eventually([&] { return !alive(); }, limit);
    return status_;
  }
  /// Reads stdout/stderr to EOF and waits for the exit.
  int finish(std::string& out, std::string& err) {
    drain(out, err, true);
    auto st = wait();
    if (!st) throw std::runtime_error("child did not exit");
    return WIFEXITED(*st) ? WEXITSTATUS(*st) : 128 + WTERMSIG(*st);
  }
  /// Reads stderr until it holds `needle`.
  bool stderr_contains(const std::string& needle, std::string& err,
                       std::chrono::milliseconds limit = 60s) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (err.find(needle) == std::string::npos) {
      if (std::chrono::steady_clock::now() > end) return false;
      pollfd p{err_, POLLIN, 0};
      if (::poll(&p, 1, 100) > 0) {
        char buf[4096];
        ssize_t n = ::read(err_, buf, sizeof buf);
        if (n <= 0) return err.find(needle) != std::string::npos;
        err.append(buf, static_cast<std::size_t>(n));
      }
    }
    return true;
  }

 private:
  void drain(std::string& out, std::string& err, bool) {
    auto end = std::chrono::steady_clock::now() + 120s;
    bool out_open = true, err_open = true;
    while ((out_open || err_open) && std::chrono::steady_clock::now() < end) {
      pollfd p[2] = {{out_open ? out_ : -1, POLLIN, 0}, {err_open ? err_ : -1, POLLIN, 0}};
      if (::poll(p, 2, 100) <= 0) continue;
      char buf[4096];
      for (int i = 0; i < 2; ++i) {
        if (!p[i].revents) continue;
        ssize_t n = ::read(i == 0 ? out_ : err_, buf, sizeof buf);
        if (n <= 0) {
          (i == 0 ? out_open : err_open) = false;
        } else {
          (i == 0 ? out : err).append(buf, static_cast<std::size_t>(n));
        }
      }
    }
  }

  pid_t pid_ = -1;
  std::optional<int> status_;
  int out_ = -1, err_ = -1;
};

/// The paused QEMU the QMP tests talk to: VM name pltest (so threads are
/// named), one vCPU, iothread io0; `extra` is appended.
inline std::vector<std::string> pltest_argv(const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv = {"-name", "pltest,debug-threads=on", "-object",
                                   "iothread,id=io0"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return pl::test::paused_qemu_argv(argv);
}

/// Connect options that retry while `qemu` lives.
inline ConnectOptions connect_options(Qemu& qemu) {
  ConnectOptions o;
  o.timeout = 60s;
  o.greeting_timeout = 30s;
  o.peer_alive = [&qemu] { return qemu.alive(); };
  return o;
}

/// The peer side of one fake-server connection: blocking I/O, own framer.
class Peer {
 public:
  explicit Peer(int fd) : fd_(fd) {
    timeval tv{60, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  ~Peer() {
    for (int f : fds) ::close(f);
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }

  /// Sends all bytes; false once the client has gone.
  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  bool send_json(const json& msg) { return send(msg.dump() + "\r\n"); }
  /// One byte per send, each consumed by the client before the next is sent
  /// (SIOCOUTQ counts the bytes the receiver has not read yet).
  void send_bytewise(std::string_view bytes) {
    for (char c : bytes) {
      if (!send(std::string_view(&c, 1))) throw std::runtime_error("peer gone");
      if (!eventually([&] {
            int q = 0;
            return ::ioctl(fd_, SIOCOUTQ, &q) == 0 && q == 0;
          })) {
        throw std::runtime_error("client did not read");
      }
    }
  }
  /// The next message from the client; nullopt at EOF. Received fds go to `fds`.
  std::optional<json> read() {
    for (;;) {
      if (auto m = framer_.next()) return m;
      char buf[65536];
      iovec iov{buf, sizeof buf};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
      msghdr mh{};
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      mh.msg_control = control;
      mh.msg_controllen = sizeof control;
      ssize_t n = ::recvmsg(fd_, &mh, MSG_CMSG_CLOEXEC);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
          std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          for (std::size_t i = 0; i < count; ++i) {
            int f;
            std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
            fds.push_back(f);
          }
        }
      }
      framer_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
    }
  }
  /// Reads a command, requiring its name.
  json expect(const std::string& name) {
    auto m = read();
    if (!m) throw std::runtime_error("EOF while expecting " + name);
    if (m->value("execute", "") != name)
      throw std::runtime_error("expected " + name + ", got " + m->dump());
    return *m;
  }
  static json greeting() {
    return {
        {"QMP",
         {{"version", {{"qemu", {{"micro", 0}, {"minor", 2}, {"major", 7}}}, {"package", "fake"}}},
          {"capabilities", json::array({"oob"})}}}};
  }
  void greet() { send_json(greeting()); }
  /// Greeting plus the qmp_capabilities exchange.
  void negotiate() {
    greet();
    json cmd = expect("qmp_capabilities");
    reply(cmd, json::object());
  }
  void reply(const json& cmd, const json& ret) {
    send_json(json{{"return", ret}, {"id", cmd["id"]}});
  }
  void error(const json& cmd, const std::string& cls, const std::string& desc) {
    send_json(json{{"error", {{"class", cls}, {"desc", desc}}}, {"id", cmd["id"]}});
  }
  static json event(const std::string& name, json data = json::object()) {
    return {{"event", name},
            {"data", std::move(data)},
            {"timestamp", {{"seconds", 1}, {"microseconds", 2}}}};
  }
  /// Waits for the client to close the connection.
  void wait_eof() {
    while (read()) {
    }
  }

  std::deque<int> fds;

 private:
  int fd_;
  Framer framer_;
};

/// A scripted QMP server on `path` (in a temp dir of its own): accepts one
/// client in a thread and runs `script` on it. The destructor joins; script
/// failures are kept in failure() for the test to check.
class FakeServer {
 public:
  explicit FakeServer(std::function<void(Peer&)> script, bool listen_now = true)
      : script_(std::move(script)) {
    path = dir_.path("fake.sock");  // dir_ is made after path
    if (listen_now) listen();
  }
  /// Creates the listening socket and starts the thread (once).
  void listen() {
    if (listen_fd_ >= 0) return;
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 4) != 0) {
      throw std::runtime_error("bind " + path + ": " + std::strerror(errno));
    }
    thread_ = std::thread([this] {
      try {
        pollfd p{listen_fd_, POLLIN, 0};
        if (::poll(&p, 1, 120000) != 1) throw std::runtime_error("no client connected");
        Peer peer(::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC));
        script_(peer);
      } catch (const std::exception& e) {
        failure_ = e.what();
      }
    });
  }
  ~FakeServer() {
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }
  /// Joins the script; returns its failure ("" if it ran through).
  std::string failure() {
    if (thread_.joinable()) thread_.join();
    return failure_;
  }

  std::string path;

 private:
  TempDir dir_;
  std::function<void(Peer&)> script_;
  int listen_fd_ = -1;
  std::thread thread_;
  std::string failure_;
};

/// Connect options for the fake server: one try, short greeting timeout.
inline ConnectOptions fake_connect(Duration greeting = 30s) {
  ConnectOptions o;
  o.timeout = 30s;
  o.greeting_timeout = greeting;
  return o;
}

}  // namespace qmp::testing
