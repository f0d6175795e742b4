// QMP round trips against one real, paused QEMU, in one run:
//   raw        a minimal blocking client (write, read to CRLF): the floor
//   library    sequential qmp::Client::execute("query-status")
//   pipelined  the library with 64 commands in flight
// Goal (issue 3): library >= 0.9x raw; pipelined well above raw.
// Each is measured in several alternating rounds; the best round counts, so
// that load from other processes on the machine hurts all of them alike.
// Usage: qmp_bench [ROUND_TRIPS_PER_ROUND]  (default 20000)
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "qemu_fixture.h"  // the paused QEMU the tests use too
#include "qmp/client.h"    // first: it works around Boost 1.74's awaitable.hpp

namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using pl::test::Qemu;
using qmp::awaitable;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// Connect options that retry while `qemu` lives.
qmp::ConnectOptions connect_options(Qemu& qemu) {
  qmp::ConnectOptions o;
  o.timeout = std::chrono::seconds(60);
  o.greeting_timeout = std::chrono::seconds(60);
  o.peer_alive = [&qemu] { return qemu.alive(); };
  return o;
}

// The floor: blocking socket, no JSON parsing, one message per CRLF line.
class RawClient {
 public:
  explicit RawClient(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("raw connect: " + std::string(std::strerror(errno)));
    }
    read_line();  // greeting
    write("{\"execute\":\"qmp_capabilities\"}\r\n");
    read_line();
  }
  ~RawClient() { ::close(fd_); }
  // Keeps `window` commands in flight: QEMU's own ceiling, no client cost.
  void pipelined(int n, int window) {
    int sent = 0, got = 0;
    while (got < n) {
      std::string batch;
      while (sent < n && sent - got < window) batch += command(static_cast<unsigned long>(sent++));
      if (!batch.empty()) write(batch);
      std::string line = read_line();
      if (line.find("\"return\"") == std::string::npos) throw std::runtime_error("raw: " + line);
      ++got;
    }
  }
  static std::string command(unsigned long id) {
    char cmd[96];
    int n = std::snprintf(cmd, sizeof cmd, "{\"execute\":\"query-status\",\"id\":%lu}\r\n", id);
    return std::string(cmd, static_cast<std::size_t>(n));
  }
  void round_trip(unsigned long id) {
    char cmd[96];
    int n = std::snprintf(cmd, sizeof cmd, "{\"execute\":\"query-status\",\"id\":%lu}\r\n", id);
    write(std::string_view(cmd, static_cast<std::size_t>(n)));
    std::string line = read_line();
    if (line.find("\"return\"") == std::string::npos) throw std::runtime_error("raw: " + line);
  }

 private:
  void write(std::string_view s) {
    while (!s.empty()) {
      ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("raw send failed");
      s.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  std::string read_line() {
    for (;;) {
      auto nl = buf_.find("\r\n");
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 2);
        return line;
      }
      char tmp[4096];
      ssize_t n = ::read(fd_, tmp, sizeof tmp);
      if (n <= 0) throw std::runtime_error("raw read failed");
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
  }
  int fd_ = -1;
  std::string buf_;
};

double raw_rate(Qemu& q, int n, int window = 1) {
  RawClient raw(q.qmp_socket());
  auto t = Clock::now();
  if (window > 1) {
    raw.pipelined(n, window);
  } else {
    for (int i = 0; i < n; ++i) raw.round_trip(static_cast<unsigned long>(i));
  }
  return n / seconds_since(t);
}

awaitable<void> sequential(qmp::Client& c, int n) {
  for (int i = 0; i < n; ++i) co_await c.execute("query-status");
}

// Library rate with `inflight` coroutines each doing n / inflight commands.
double library_rate(Qemu& q, int n, int inflight, bool oob = false) {
  asio::io_context io;
  qmp::Client c(io.get_executor());
  double rate = 0;
  std::exception_ptr error;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        qmp::ConnectOptions o = connect_options(q);
        o.oob = oob;  // QEMU then reads requests in its monitor I/O thread
        co_await c.connect(q.qmp_socket(), o);
        co_await c.execute("query-status");  // warm up
        int per = n / inflight;
        int left = inflight;
        auto t = Clock::now();
        auto ex = co_await asio::this_coro::executor;
        asio::steady_timer done(ex, Clock::time_point::max());
        for (int w = 0; w < inflight; ++w) {
          asio::co_spawn(ex, sequential(c, per), [&](std::exception_ptr e) {
            if (e) error = e;
            if (--left == 0) done.cancel();
          });
        }
        while (left) {
          boost::system::error_code ec;
          co_await done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        }
        rate = per * inflight / seconds_since(t);
        c.close();
      },
      [&](std::exception_ptr e) {
        if (e) error = e;
      });
  io.run();
  if (error) std::rethrow_exception(error);
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 20000;
  if (n < 64) n = 64;
  const int rounds = 3;
  try {
    Qemu q(pl::test::paused_qemu_argv());
    std::printf("QEMU pid %d, %s, paused\n", q.pid(), pl::test::kvm_works() ? "KVM" : "TCG");
    {  // wait until QEMU answers
      qmp::SyncClient probe;
      probe.connect(q.qmp_socket(), connect_options(q));
    }
    double raw = 0, lib = 0, pipe = 0, pipe_oob = 0, raw_pipe = 0;
    for (int r = 0; r < rounds; ++r) {
      double a = raw_rate(q, n), b = library_rate(q, n, 1), c = library_rate(q, n, 64),
             d = library_rate(q, n, 64, true), e = raw_rate(q, n, 64);
      std::printf(
          "round %d: raw %.0f/s  library %.0f/s  pipelined(64) %.0f/s  with oob %.0f/s  "
          "raw pipelined(64) %.0f/s\n",
          r + 1, a, b, c, d, e);
      raw = std::max(raw, a);
      lib = std::max(lib, b);
      pipe = std::max(pipe, c);
      pipe_oob = std::max(pipe_oob, d);
      raw_pipe = std::max(raw_pipe, e);
    }
    std::printf("\nquery-status round trips, best of %d rounds of %d:\n", rounds, n);
    std::printf("  raw blocking client (floor)  %9.0f /s\n", raw);
    std::printf("  library, sequential          %9.0f /s   %.2fx raw   (goal >= 0.90x)\n", lib,
                lib / raw);
    std::printf("  library, 64 in flight        %9.0f /s   %.2fx raw   (goal well above 1x)\n",
                pipe, pipe / raw);
    std::printf("  library, 64 in flight, oob   %9.0f /s   %.2fx raw\n", pipe_oob, pipe_oob / raw);
    std::printf("  raw, 64 in flight (QEMU's ceiling) %5.0f /s   library pipelined = %.2fx of it\n",
                raw_pipe, pipe / raw_pipe);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qmp_bench: %s\n", e.what());
    return 3;
  }
}
