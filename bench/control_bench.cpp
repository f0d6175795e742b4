// The control socket under load, against QEMU's own monitors.
//
// Ours: a paused QEMU (-machine none), passlaunch's ControlServer in this
// process on its own thread, connected to it as `passlaunch run` does.
// Baseline: a second QEMU with 64 QMP monitors, one per client (one QEMU
// monitor serves one client; that is the best QEMU itself offers).
//
//  1. connect storm: 64 clients connect at once, read the greeting,
//     negotiate and run one query-status; time until the last is done.
//  2. steady load: 64 clients, each running query-status one at a time;
//     replies per second over all.
//  3. big command: one client sends a 1 MiB command (refused by the control
//     socket, over its 16 KiB limit; read by QEMU at ~10 us a byte) while
//     another runs query-status for at least a second; p50/p99 of that
//     latency. And the same with a 15 KiB command, just under the limit,
//     which the control socket forwards over its one QEMU connection.
//
// Usage: control_bench [requests-per-client]   (default 100)
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "qemu_fixture.h"
#include "qmp/client.h"
#include "run/control.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
constexpr int kClients = 64;

/// A blocking QMP client over a raw socket.
class Raw {
 public:
  explicit Raw(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    for (int i = 0; ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0; ++i) {
      if (i > 200) throw std::runtime_error("connect " + path + ": " + std::strerror(errno));
      std::this_thread::sleep_for(10ms);
    }
  }
  ~Raw() { ::close(fd_); }
  void send(const std::string& s) {
    for (size_t off = 0; off < s.size();) {
      ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("send failed");
      off += static_cast<size_t>(n);
    }
  }
  /// The next line that is not an event.
  std::string line() {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (l.find("\"event\"") != std::string::npos) continue;
        return l;
      }
      char b[65536];
      ssize_t n = ::read(fd_, b, sizeof b);
      if (n <= 0) throw std::runtime_error("connection closed");
      buf_.append(b, static_cast<size_t>(n));
    }
  }
  void negotiate() {
    line();
    send("{\"execute\":\"qmp_capabilities\"}\n");
    line();
  }
  void query() {
    send("{\"execute\":\"query-status\",\"id\":1}\n");
    line();
  }

 private:
  int fd_;
  std::string buf_;
};

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

/// 1: every client connects, negotiates and queries at once.
double storm(const std::vector<std::string>& paths) {
  std::atomic<bool> go{false};
  std::vector<std::thread> t;
  for (int i = 0; i < kClients; ++i) {
    t.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      Raw r(paths[i]);
      r.negotiate();
      r.query();
    });
  }
  auto t0 = Clock::now();
  go = true;
  for (auto& x : t) x.join();
  return seconds(Clock::now() - t0);
}

/// 2: replies per second with every client busy.
double load(const std::vector<std::string>& paths, int per_client) {
  std::vector<std::unique_ptr<Raw>> c;
  for (int i = 0; i < kClients; ++i) {
    c.push_back(std::make_unique<Raw>(paths[i]));
    c.back()->negotiate();
  }
  std::atomic<bool> go{false};
  std::vector<std::thread> t;
  for (int i = 0; i < kClients; ++i) {
    t.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      for (int k = 0; k < per_client; ++k) c[i]->query();
    });
  }
  auto t0 = Clock::now();
  go = true;
  for (auto& x : t) x.join();
  return kClients * per_client / seconds(Clock::now() - t0);
}

struct Latency {
  double p50 = 0, p99 = 0, max = 0;
  size_t samples = 0;
};

/// 3: query-status latency on `a` while `b` sends one command of `size` bytes.
Latency under_big(const std::string& a_path, const std::string& b_path, size_t size) {
  Raw a(a_path), b(b_path);
  a.negotiate();
  b.negotiate();
  std::string big =
      "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info "
      "status " +
      std::string(size, 'a') + "\"},\"id\":\"big\"}\n";
  std::atomic<bool> done{false};
  std::thread sender([&] {
    b.send(big);
    b.line();
    done = true;
  });
  std::vector<double> ms;
  // Sample for at least a second, so both sides have enough samples for a p99.
  auto t_end = Clock::now() + 1s;
  while (!done || Clock::now() < t_end) {
    auto t0 = Clock::now();
    a.query();
    ms.push_back(seconds(Clock::now() - t0) * 1000);
    if (ms.size() > 100000) break;
  }
  sender.join();
  std::sort(ms.begin(), ms.end());
  Latency l;
  l.samples = ms.size();
  l.p50 = ms[ms.size() / 2];
  l.p99 = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  l.max = ms.back();
  return l;
}

}  // namespace

int main(int argc, char** argv) {
  int per_client = argc > 1 ? std::atoi(argv[1]) : 100;
  std::vector<std::string> none = {"qemu-system-x86_64",
                                   "-machine",
                                   "none",
                                   "-S",
                                   "-nodefaults",
                                   "-no-user-config",
                                   "-display",
                                   "none",
                                   "-chardev",
                                   "socket,id=qmp,fd=3,server=on,wait=off",
                                   "-mon",
                                   "chardev=qmp,mode=control"};
  pl::test::TempDir dir;
  // Baseline: one QEMU, 64 monitors of its own.
  std::vector<std::string> ref_argv = none, qemu_paths;
  for (int i = 0; i < kClients; ++i) {
    std::string p = dir.path("m" + std::to_string(i) + ".sock");
    qemu_paths.push_back(p);
    ref_argv.insert(
        ref_argv.end(),
        {"-chardev", "socket,id=m" + std::to_string(i) + ",path=" + p + ",server=on,wait=off",
         "-mon", "chardev=m" + std::to_string(i) + ",mode=control"});
  }
  pl::test::Qemu ref(ref_argv);

  // Ours: the control socket in front of another QEMU, on its own thread.
  pl::test::Qemu qemu(none);
  boost::asio::io_context io;
  qmp::Client client(io.get_executor());
  qmp::ConnectOptions co;
  co.oob_if_offered = true;
  bool connected = false;
  boost::asio::co_spawn(io, client.connect(qemu.qmp_socket(), co),
                        [&](std::exception_ptr e, qmp::Greeting) {
                          if (e) std::rethrow_exception(e);
                          connected = true;
                        });
  while (!connected) io.run_one();
  std::string control = dir.path("control.sock");
  pl::ControlServer server(io.get_executor(), control, client);
  server.start();
  auto guard = boost::asio::make_work_guard(io);
  std::thread loop([&] { io.run(); });
  std::vector<std::string> ours_paths(kClients, control);
  Raw(qemu_paths[0]).negotiate();  // QEMU has created its sockets

  std::printf("64 clients; QEMU: one monitor per client; ours: one control socket\n");
  double s_ours = storm(ours_paths), s_qemu = storm(qemu_paths);
  std::printf("connect storm     ours %8.1f ms   qemu %8.1f ms   ratio %.2f\n", s_ours * 1e3,
              s_qemu * 1e3, s_ours / s_qemu);
  double l_ours = load(ours_paths, per_client), l_qemu = load(qemu_paths, per_client);
  std::printf("steady load       ours %8.0f /s   qemu %8.0f /s   ratio %.2f\n", l_ours, l_qemu,
              l_ours / l_qemu);
  for (size_t size : {size_t(1) << 20, size_t(15) << 10}) {
    Latency o = under_big(control, control, size);
    Latency q = under_big(qemu_paths[1], qemu_paths[2], size);
    std::printf(
        "%4zu KiB command  ours p50 %6.2f p99 %7.2f max %7.1f ms (%zu)   qemu p50 %6.2f p99 %7.2f "
        "max %7.1f ms (%zu)   p99 ratio %.2f\n",
        size >> 10, o.p50, o.p99, o.max, o.samples, q.p50, q.p99, q.max, q.samples, o.p99 / q.p99);
  }
  boost::asio::post(io, [&] {
    server.close();
    client.close();
    io.stop();
  });
  loop.join();
  return 0;
}
