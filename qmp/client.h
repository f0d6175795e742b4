// Asynchronous QMP client: Boost.Asio C++20 coroutines on a Unix stream socket.
//
// The client runs on an executor the caller owns and starts no thread. All
// member functions must be called from that executor (one thread, or a
// strand); none blocks. Everything it does to the socket is one reader
// coroutine plus non-blocking writes, so a slow caller never stalls it.
//
// Lifecycle (State): idle -> connecting -> negotiating -> ready -> closed.
// One Client makes one connection; create another to reconnect.
//
//   qmp::Client c(io.get_executor());
//   auto stops = c.subscribe("STOP");             // before the command that causes it
//   co_await c.connect(path, opts);              // opts.peer_alive = qemu is alive
//   co_await c.execute("stop");
//   json ev = co_await stops.next(5s);
//   co_await c.execute("quit");
//   qmp::Ending end = co_await c.wait_closed();   // end.normal() after quit
//
// Errors are qmp::Error (qmp/error.h). docs/qmp.md describes the protocol
// handling, the overflow policy and when each error kind is raised.
#pragma once

// clang-format off
#include <utility>  // first: Boost 1.74's awaitable.hpp uses std::exchange without it
// clang-format on

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qmp/error.h"
#include "qmp/framer.h"

namespace qmp {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using Duration = std::chrono::milliseconds;
template <class T>
using awaitable = boost::asio::awaitable<T>;

struct Options {
  Duration command_timeout{30000};  ///< default for execute()
  std::size_t max_message = Framer::kDefaultMaxMessage;
  std::size_t event_queue_capacity = 1024;  ///< default for subscribe()
  /// Diagnostics that are not errors (dropped replies, id-less errors,
  /// throwing listeners). Default: silent.
  std::function<void(const std::string&)> log;
};

struct ConnectOptions {
  /// Deadline for reaching the socket, retries included.
  Duration timeout{10000};
  /// Deadline for the greeting after the socket connected, and again for the
  /// qmp_capabilities reply. No greeting in time means ErrorKind::busy.
  Duration greeting_timeout{5000};
  /// While this returns true, ENOENT and ECONNREFUSED are retried with backoff
  /// (QEMU has not created or not yet listens on the socket). Empty: one try.
  std::function<bool()> peer_alive;
  /// Ask for the oob capability (fails with ErrorKind::protocol if not offered).
  bool oob = false;
  /// Ask for oob only if the greeting offers it (Client::oob_enabled() says).
  bool oob_if_offered = false;
};

struct Greeting {
  int major = 0, minor = 0, micro = 0;
  std::string package;
  std::vector<std::string> capabilities;  ///< offered by QEMU, e.g. "oob"
  json raw;
};

enum class State { idle, connecting, negotiating, ready, closed };

/// How the connection ended.
struct Ending {
  enum class Reason {
    closed,       ///< close() or the Client was destroyed
    quit,         ///< EOF or ECONNRESET after a `quit` command was sent
    peer_closed,  ///< EOF or ECONNRESET without `quit` (see shutdown_event)
    failed,       ///< protocol error, I/O error, or connect()/negotiation failed
  };
  Reason reason = Reason::closed;
  std::string detail;                  ///< human-readable cause
  std::optional<json> shutdown_event;  ///< the last SHUTDOWN event, if one came
  /// closed or quit: the end the caller asked for.
  bool normal() const { return reason == Reason::closed || reason == Reason::quit; }
};

/// Counters, for diagnostics and tests.
struct Stats {
  std::uint64_t reads = 0, bytes_read = 0, messages = 0, events = 0;
  std::uint64_t dropped_replies = 0;  ///< replies whose id matched no pending command
  std::uint64_t idless_errors = 0;    ///< error replies without an id (logged, dropped)
  std::size_t max_buffered = 0;       ///< framer high-water mark, bytes
};

namespace detail {
struct Impl;
struct SubState;
}  // namespace detail

/// A bounded queue of events (all, or one name), filled by the reader from the
/// moment subscribe() returns. Overflow policy: when full, the OLDEST queued
/// event is dropped and dropped() counts it; the reader never waits. Destroying
/// the Subscription unsubscribes. Move-only; one next() at a time.
class Subscription {
 public:
  Subscription() = default;
  Subscription(Subscription&&) noexcept = default;
  Subscription& operator=(Subscription&&) noexcept;
  ~Subscription();

  /// The next event. nullopt timeout waits until an event comes or the
  /// connection ends. Throws ErrorKind::timeout, or ErrorKind::disconnected
  /// once the connection has ended and the queue is empty.
  awaitable<json> next(std::optional<Duration> timeout = std::nullopt);
  awaitable<json> next_until(Clock::time_point deadline);
  /// A queued event, if any.
  std::optional<json> try_next();
  std::size_t size() const;
  std::uint64_t dropped() const;
  /// Stops receiving events (also done by the destructor).
  void unsubscribe();

 private:
  friend class Client;
  std::shared_ptr<detail::SubState> st_;
  std::weak_ptr<detail::Impl> impl_;
};

class Client {
 public:
  explicit Client(boost::asio::any_io_executor executor, Options options = {});
  ~Client();  ///< close()s; pending calls fail with ErrorKind::disconnected
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// Connects to the Unix socket at `path` (retrying while opts.peer_alive()
  /// holds), reads and validates the greeting, sends qmp_capabilities (with
  /// oob if asked) and waits for its reply. Events arriving meanwhile go to
  /// subscribers. On failure the client is closed and the error thrown:
  /// connect_failed, busy (no greeting), protocol, timeout or disconnected.
  awaitable<Greeting> connect(std::string path, ConnectOptions opts = {});

  /// Sends {"execute": name, "arguments": args, "id": N} and waits for the
  /// reply with id N. args must be an object or null (omitted). Returns the
  /// reply's `return`. Throws command_error (QEMU's class and desc), timeout
  /// (the late reply will be dropped), disconnected or protocol. Any number
  /// may be in flight. `quit` whose reply is lost to the closing socket
  /// returns {} (a normal end).
  awaitable<json> execute(std::string name, json args = nullptr,
                          std::optional<Duration> timeout = std::nullopt);

  /// Like execute(), sent as {"exec-oob": name, ...}: QEMU runs it out of
  /// band (only commands that allow it; others get QEMU's error). Throws
  /// ErrorKind::protocol unless oob was negotiated.
  awaitable<json> execute_oob(std::string name, json args = nullptr,
                              std::optional<Duration> timeout = std::nullopt);
  /// True once oob was negotiated with QEMU.
  bool oob_enabled() const;

  /// Like execute(), with `fd` attached by SCM_RIGHTS to the same sendmsg as
  /// the command (for getfd / add-fd). The fd is duplicated: the caller keeps
  /// ownership of `fd`. Only one fd-bearing command is in flight at a time
  /// (QEMU keeps only the latest fd received); later ones wait their turn
  /// within their own timeout.
  awaitable<json> execute_with_fd(std::string name, json args, int fd,
                                  std::optional<Duration> timeout = std::nullopt);

  /// Events named `event` ("" = all) from now on; capacity 0 = options default.
  Subscription subscribe(std::string event = {}, std::size_t capacity = 0);

  using Listener = std::function<void(const json& event)>;
  /// Calls `listener` from the reader for every event, in order, from now on.
  /// It must not block; an exception it throws is logged and ignored.
  std::uint64_t add_listener(Listener listener);
  void remove_listener(std::uint64_t id);

  using Predicate = std::function<bool(const json& event)>;
  /// The first event named `name` (matching `pred`, if given) that arrives
  /// AFTER this call; the subscription is made here, not when the result is
  /// awaited, so call it before the command that causes the event:
  ///   auto stopped = c.wait_for_event("STOP");
  ///   co_await c.execute("stop");
  ///   co_await std::move(stopped);
  /// The timeout is counted from this call (nullopt: no timeout).
  awaitable<json> wait_for_event(std::string name, Predicate pred = {},
                                 std::optional<Duration> timeout = std::nullopt);

  /// Waits until the connection ends (returns at once if it has).
  awaitable<Ending> wait_closed();

  /// Closes the socket; pending calls fail with ErrorKind::disconnected.
  void close();

  State state() const;
  /// Set once the connection has ended.
  std::optional<Ending> ending() const;
  /// The greeting (valid after connect()).
  const Greeting& greeting() const;
  Stats stats() const;
  boost::asio::any_io_executor get_executor() const;

 private:
  std::shared_ptr<detail::Impl> impl_;
};

/// For synchronous users (the CLI, tests): a Client on a private io_context
/// that runs only inside these calls. Events that arrive between calls wait in
/// the socket or in subscriptions.
class SyncClient {
 public:
  explicit SyncClient(Options options = {});

  Greeting connect(const std::string& path, ConnectOptions opts = {});
  json execute(const std::string& name, json args = nullptr,
               std::optional<Duration> timeout = std::nullopt);
  json execute_with_fd(const std::string& name, json args, int fd,
                       std::optional<Duration> timeout = std::nullopt);
  json next_event(Subscription& sub, std::optional<Duration> timeout = std::nullopt);
  Ending wait_closed();
  void close();

  Client& client();

  boost::asio::io_context& context() { return io_; }

  /// Runs the io_context until `op` completes; returns its result or rethrows.
  template <class T>
  T run(awaitable<T> op) {
    std::optional<T> result;
    std::exception_ptr error;
    bool done = false;
    boost::asio::co_spawn(io_, std::move(op), [&](std::exception_ptr e, T value) {
      done = true;
      error = e;
      if (!e) result.emplace(std::move(value));
    });
    pump(done);
    if (error) std::rethrow_exception(error);
    return std::move(*result);
  }

 private:
  void pump(const bool& done);

  boost::asio::io_context io_;
  Client client_;
};

}  // namespace qmp
