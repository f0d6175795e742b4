#include "qmp/client.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/detached.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <unordered_map>

namespace qmp {

namespace asio = boost::asio;
using asio::use_awaitable;
using Socket = asio::local::stream_protocol::socket;

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::command_error:
      return "command_error";
    case ErrorKind::timeout:
      return "timeout";
    case ErrorKind::disconnected:
      return "disconnected";
    case ErrorKind::protocol:
      return "protocol";
    case ErrorKind::busy:
      return "busy";
    case ErrorKind::connect_failed:
      return "connect_failed";
  }
  return "unknown";
}

namespace {

Clock::time_point deadline_after(std::optional<Duration> d) {
  return d ? Clock::now() + *d : Clock::time_point::max();
}

std::string seconds(Duration d) {
  char out[32];
  std::snprintf(out, sizeof out, "%.3g s", static_cast<double>(d.count()) / 1000.0);
  return out;
}

// The one waiting primitive: a coroutine sleeps on a timer until the deadline
// or until wake() cancels the timer. Single-threaded, so no lost wake-ups:
// wake() before wait_until() is seen through `done`.
struct Waiter {
  explicit Waiter(const asio::any_io_executor& ex) : timer(ex) {}
  asio::steady_timer timer;
  bool done = false;

  void wake() {
    done = true;
    timer.cancel();
  }
  /// True if woken, false if the deadline passed first.
  awaitable<bool> wait_until(Clock::time_point deadline) {
    if (done) co_return true;
    timer.expires_at(deadline);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
    co_return done;
  }
};

struct Call : Waiter {
  Call(const asio::any_io_executor& ex, std::string name) : Waiter(ex), command(std::move(name)) {}
  std::string command;
  std::optional<json> result;
  std::exception_ptr error;
};

struct Outgoing {
  std::string data;
  int fd = -1;           // our dup, closed once sent
  std::uint64_t id = 0;  // the command's id
};

// Shortens a message for error texts.
std::string excerpt(const json& msg) {
  std::string s = msg.dump();
  if (s.size() > 200) s = s.substr(0, 200) + "...";
  return s;
}

}  // namespace

namespace detail {

struct SubState {
  explicit SubState(const asio::any_io_executor& ex) : executor(ex) {}
  asio::any_io_executor executor;
  std::string name;  // "" = all
  std::size_t capacity = 1024;
  std::deque<json> queue;
  std::uint64_t dropped = 0;
  std::shared_ptr<Waiter> waiter;  // set while next() waits
  std::optional<Error> ended;      // set when the connection ends

  void push(const json& ev) {
    if (queue.size() >= capacity) {
      queue.pop_front();
      ++dropped;
    }
    queue.push_back(ev);
    if (waiter) waiter->wake();
  }
};

struct Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::any_io_executor ex, Options o)
      : executor(std::move(ex)), opt(std::move(o)), socket(executor), framer(opt.max_message) {
    rbuf.resize(64 * 1024);
  }

  asio::any_io_executor executor;
  Options opt;
  Socket socket;
  Framer framer;
  std::vector<char> rbuf;
  std::string path;
  State state = State::idle;
  Greeting greeting;
  bool have_greeting = false;
  std::shared_ptr<Waiter> greeting_waiter;
  std::uint64_t next_id = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<Call>> pending;
  std::deque<Outgoing> outq;
  std::size_t out_offset = 0;  // bytes of outq.front() already sent
  /// An fd-bearing command that timed out after it was sent: the fd slot stays
  /// taken until its late reply arrives (or the connection ends).
  std::optional<std::uint64_t> late_fd_id;
  bool write_waiting = false;
  bool fd_busy = false;
  std::deque<std::shared_ptr<Waiter>> fd_waiters;
  bool quit_sent = false;
  bool oob = false;  ///< the oob capability was negotiated
  std::optional<json> last_shutdown;
  std::vector<std::pair<std::uint64_t, Client::Listener>> listeners;
  std::uint64_t next_listener = 1;
  std::vector<std::shared_ptr<SubState>> subs;
  std::optional<Ending> ending;
  std::optional<Error> end_error;  // what pending and later calls fail with
  std::vector<std::shared_ptr<Waiter>> closed_waiters;
  Stats stats;

  void log(const std::string& msg) {
    if (opt.log) opt.log(msg);
  }

  // Ends the connection once: records why, closes the socket and wakes every
  // waiter, so that nothing waits for a reply that cannot come.
  void finish(Ending::Reason reason, const Error& err) {
    if (state == State::closed) return;
    state = State::closed;
    ending = Ending{reason, err.what(), last_shutdown};
    end_error = err;
    boost::system::error_code ignored;
    socket.close(ignored);
    for (auto& o : outq) {
      if (o.fd >= 0) ::close(o.fd);
    }
    outq.clear();
    auto calls = std::move(pending);
    pending.clear();
    for (auto& [id, call] : calls) {
      if (reason == Ending::Reason::quit && call->command == "quit") {
        call->result = json::object();  // its reply was lost to the closing socket
      } else {
        call->error = std::make_exception_ptr(err);
      }
      call->wake();
    }
    if (greeting_waiter) greeting_waiter->wake();
    for (auto& w : fd_waiters) w->wake();
    fd_waiters.clear();
    for (auto& s : subs) {
      s->ended = err;
      if (s->waiter) s->waiter->wake();
    }
    for (auto& w : closed_waiters) w->wake();
    closed_waiters.clear();
  }

  void protocol_error(const std::string& what) {
    finish(Ending::Reason::failed,
           Error(ErrorKind::protocol, "QMP protocol error on " + path + ": " + what));
  }

  // ---- reading -------------------------------------------------------------

  static awaitable<void> reader(std::shared_ptr<Impl> self) {
    while (self->state != State::closed) {
      boost::system::error_code ec;
      std::size_t n = co_await self->socket.async_read_some(
          asio::buffer(self->rbuf), asio::redirect_error(use_awaitable, ec));
      if (self->state == State::closed) co_return;
      if (ec) {
        self->on_read_end(ec);
        co_return;
      }
      self->stats.reads++;
      self->stats.bytes_read += n;
      self->framer.feed(std::string_view(self->rbuf.data(), n));
      self->stats.max_buffered = std::max(self->stats.max_buffered, self->framer.max_buffered());
      try {
        while (auto msg = self->framer.next()) {
          self->stats.messages++;
          self->dispatch(*msg);
          if (self->state == State::closed) co_return;
        }
      } catch (const Error& e) {
        self->protocol_error(e.what());
      } catch (const std::exception& e) {
        // e.g. a greeting whose version numbers are strings: still the peer's fault
        self->protocol_error(std::string("unexpected message: ") + e.what());
      }
    }
  }

  void on_read_end(const boost::system::error_code& ec) {
    bool eof = ec == asio::error::eof || ec == asio::error::connection_reset;
    std::string how = ec == asio::error::eof ? "end of file" : ec.message();
    if (eof && quit_sent) {
      finish(Ending::Reason::quit,
             Error(ErrorKind::disconnected, "QMP connection " + path + " closed after quit"));
    } else if (!have_greeting) {
      finish(Ending::Reason::failed,
             Error(ErrorKind::disconnected,
                   "QMP socket " + path + " closed before the greeting (" + how + ")"));
    } else {
      finish(eof ? Ending::Reason::peer_closed : Ending::Reason::failed,
             Error(ErrorKind::disconnected, "QMP connection " + path + " lost: " + how));
    }
  }

  void dispatch(json& msg) {
    if (!msg.is_object()) return protocol_error("expected a JSON object, got " + excerpt(msg));
    if (auto ev = msg.find("event"); ev != msg.end()) {
      if (!ev->is_string()) return protocol_error("event name is not a string: " + excerpt(msg));
      return deliver(msg);
    }
    if (!have_greeting) {
      if (!msg.contains("QMP")) {
        return protocol_error("expected the QMP greeting, got " + excerpt(msg));
      }
      return on_greeting(msg);
    }
    if (msg.contains("QMP")) return protocol_error("a second greeting: " + excerpt(msg));
    auto ret = msg.find("return");
    auto err = msg.find("error");
    bool has_ret = ret != msg.end(), has_err = err != msg.end();
    if (has_ret == has_err) {
      return protocol_error(std::string("a reply needs exactly one of return and error, got ") +
                            (has_ret ? "both" : "neither") + ": " + excerpt(msg));
    }
    std::string cls, desc;
    if (has_err) {
      auto c = err->is_object() ? err->find("class") : err->end();
      auto d = err->is_object() ? err->find("desc") : err->end();
      if (!err->is_object() || c == err->end() || !c->is_string() || d == err->end() ||
          !d->is_string()) {
        return protocol_error("malformed error reply: " + excerpt(msg));
      }
      cls = c->get<std::string>();
      desc = d->get<std::string>();
    }
    auto id = msg.find("id");
    if (id == msg.end()) {
      // QEMU answers input it could not parse with an id-less error (often a
      // burst of them). It belongs to no command: log it and carry on.
      if (has_err) {
        stats.idless_errors++;
        log("QMP error without id from " + path + ": " + cls + ": " + desc);
      } else {
        stats.dropped_replies++;
        log("QMP reply without id dropped: " + excerpt(msg));
      }
      return;
    }
    std::shared_ptr<Call> call;
    if (id->is_number_unsigned()) {
      if (auto it = pending.find(id->get<std::uint64_t>()); it != pending.end()) {
        call = std::move(it->second);
        pending.erase(it);
      }
    }
    if (!call && late_fd_id && id->is_number_unsigned() &&
        id->get<std::uint64_t>() == *late_fd_id) {
      late_fd_id.reset();
      release_fd_slot();  // that fd-bearing command is done at last
    }
    if (!call) {
      stats.dropped_replies++;
      log("QMP reply with unknown id dropped (late after a timeout, or duplicate): " +
          excerpt(msg));
      return;
    }
    if (has_err) {
      call->error = std::make_exception_ptr(
          Error(ErrorKind::command_error,
                "QMP command '" + call->command + "' failed: " + cls + ": " + desc, call->command,
                cls, desc));
    } else {
      call->result = std::move(*ret);
    }
    call->wake();
  }

  void on_greeting(const json& msg) {
    const json& qmp = msg["QMP"];
    const json* version = qmp.is_object() && qmp.contains("version") ? &qmp["version"] : nullptr;
    const json* caps =
        qmp.is_object() && qmp.contains("capabilities") ? &qmp["capabilities"] : nullptr;
    if (!version || !version->is_object() || !caps || !caps->is_array()) {
      return protocol_error("malformed greeting (needs QMP.version and QMP.capabilities): " +
                            excerpt(msg));
    }
    Greeting g;
    g.raw = msg;
    if (auto q = version->find("qemu"); q != version->end() && q->is_object()) {
      g.major = q->value("major", 0);
      g.minor = q->value("minor", 0);
      g.micro = q->value("micro", 0);
    }
    g.package = version->value("package", "");
    for (const auto& c : *caps) {
      if (c.is_string()) g.capabilities.push_back(c.get<std::string>());
    }
    greeting = std::move(g);
    have_greeting = true;
    if (greeting_waiter) greeting_waiter->wake();
  }

  void deliver(const json& ev) {
    stats.events++;
    const auto& name = ev["event"].get_ref<const std::string&>();
    if (name == "SHUTDOWN") last_shutdown = ev;
    // A listener may add or remove listeners (or close the client): walk a
    // copy of the ids and call only those still registered at their turn.
    std::vector<std::uint64_t> ids;
    for (const auto& l : listeners) ids.push_back(l.first);
    for (std::uint64_t id : ids) {
      if (state == State::closed) break;
      auto it = std::find_if(listeners.begin(), listeners.end(),
                             [id](const auto& l) { return l.first == id; });
      if (it == listeners.end()) continue;
      Client::Listener fn = it->second;  // the listener may remove itself
      try {
        fn(ev);
      } catch (const std::exception& e) {
        log("QMP event listener threw: " + std::string(e.what()));
      } catch (...) {
        log("QMP event listener threw a non-standard exception");
      }
    }
    auto ss = subs;
    for (auto& s : ss) {
      if (s->name.empty() || s->name == name) s->push(ev);
    }
  }

  // ---- writing -------------------------------------------------------------

  void enqueue(std::string data, int fd, std::uint64_t id) {
    outq.push_back({std::move(data), fd, id});
    if (!write_waiting) flush();
  }

  /// Takes back a command that timed out before any of its bytes were sent,
  /// so that QEMU never runs it and a stalled peer cannot grow the queue.
  /// False when it is (partly) on the wire already.
  bool unsend(std::uint64_t id) {
    for (auto it = outq.begin(); it != outq.end(); ++it) {
      if (it->id != id) continue;
      if (it == outq.begin() && out_offset > 0) return false;
      if (it->fd >= 0) ::close(it->fd);
      outq.erase(it);
      return true;
    }
    return false;
  }

  // Sends what the socket takes now (non-blocking); on EAGAIN a coroutine
  // waits for writability and continues.
  void flush() {
    int sock = socket.native_handle();
    while (!outq.empty() && state != State::closed) {
      Outgoing& o = outq.front();
      const char* data = o.data.data() + out_offset;
      std::size_t len = o.data.size() - out_offset;
      ssize_t n;
      if (o.fd >= 0) {
        // The fd rides on the first byte of the command, in the same sendmsg.
        iovec iov{const_cast<char*>(data), len};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
        msghdr mh{};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control;
        mh.msg_controllen = sizeof control;
        cmsghdr* cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(cm), &o.fd, sizeof(int));
        n = ::sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
      } else {
        n = ::send(sock, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          write_waiting = true;
          asio::co_spawn(executor, wait_writable(shared_from_this()), asio::detached);
          return;
        }
        int err = errno;
        bool eof = err == EPIPE || err == ECONNRESET;
        Error e(ErrorKind::disconnected,
                "writing to QMP socket " + path + ": " + std::strerror(err));
        finish(eof && quit_sent ? Ending::Reason::quit
               : eof            ? Ending::Reason::peer_closed
                                : Ending::Reason::failed,
               e);
        return;
      }
      if (o.fd >= 0) {
        ::close(o.fd);
        o.fd = -1;
      }
      out_offset += static_cast<std::size_t>(n);
      if (out_offset == o.data.size()) {
        outq.pop_front();
        out_offset = 0;
      }
    }
  }

  static awaitable<void> wait_writable(std::shared_ptr<Impl> self) {
    boost::system::error_code ec;
    co_await self->socket.async_wait(Socket::wait_write, asio::redirect_error(use_awaitable, ec));
    self->write_waiting = false;
    if (!ec && self->state != State::closed) self->flush();
  }

  // ---- commands ------------------------------------------------------------

  void release_fd_slot() {
    fd_busy = false;
    if (!fd_waiters.empty()) {
      fd_waiters.front()->wake();
      fd_waiters.pop_front();
    }
  }

  static awaitable<json> command(std::shared_ptr<Impl> self, std::string name, json args, int fd,
                                 std::optional<Duration> timeout, bool exec_oob = false) {
    Duration limit = timeout.value_or(self->opt.command_timeout);
    Clock::time_point deadline = Clock::now() + limit;
    if (!args.is_null() && !args.is_object()) {
      throw std::invalid_argument("QMP command '" + name + "': arguments must be a JSON object");
    }
    bool negotiating = self->state == State::negotiating && name == "qmp_capabilities";
    if (self->state != State::ready && !negotiating) {
      if (self->end_error) throw *self->end_error;
      throw Error(ErrorKind::disconnected, "QMP command '" + name + "': not connected", name);
    }
    if (exec_oob && !self->oob) {
      throw Error(ErrorKind::protocol, "QMP command '" + name + "': oob was not negotiated", name);
    }
    json msg = {{exec_oob ? "exec-oob" : "execute", name}};
    if (!args.is_null()) msg["arguments"] = std::move(args);
    std::uint64_t id = self->next_id++;
    msg["id"] = id;
    std::string data;
    try {
      data = msg.dump();
    } catch (const json::type_error& e) {
      throw std::invalid_argument("QMP command '" + name + "': " + e.what());
    }
    data += "\r\n";

    // One fd-bearing command in flight: QEMU keeps only the fd it received
    // last, so a second one sent before the first is executed would replace it.
    struct FdSlot {
      Impl* impl = nullptr;
      ~FdSlot() {
        if (impl) impl->release_fd_slot();
      }
    } slot;
    if (fd >= 0) {
      while (self->fd_busy && self->state != State::closed) {
        auto w = std::make_shared<Waiter>(self->executor);
        self->fd_waiters.push_back(w);
        if (!co_await w->wait_until(deadline)) {
          std::erase(self->fd_waiters, w);
          throw Error(ErrorKind::timeout,
                      "QMP command '" + name + "' timed out after " + seconds(limit) +
                          " waiting for an earlier fd-passing command",
                      name);
        }
      }
      if (self->state == State::closed) throw *self->end_error;
      self->fd_busy = true;
      slot.impl = self.get();
    }

    int dup_fd = -1;
    if (fd >= 0) {
      dup_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (dup_fd < 0) {
        throw Error(ErrorKind::disconnected,
                    "QMP command '" + name + "': cannot duplicate fd " + std::to_string(fd) + ": " +
                        std::strerror(errno),
                    name);
      }
    }
    auto call = std::make_shared<Call>(self->executor, name);
    self->pending.emplace(id, call);
    if (name == "quit") self->quit_sent = true;
    self->enqueue(std::move(data), dup_fd, id);

    if (!co_await call->wait_until(deadline)) {
      self->pending.erase(id);  // a late reply is now an unknown id, dropped
      if (!self->unsend(id) && slot.impl) {
        // QEMU has (part of) it and may still run it with the fd attached:
        // the next fd-bearing command waits until this one's reply arrives.
        self->late_fd_id = id;
        slot.impl = nullptr;
      }
      throw Error(ErrorKind::timeout,
                  "QMP command '" + name + "' timed out after " + seconds(limit), name);
    }
    if (call->error) std::rethrow_exception(call->error);
    co_return std::move(*call->result);
  }

  static awaitable<Greeting> connect(std::shared_ptr<Impl> self, std::string path,
                                     ConnectOptions opts) {
    if (self->state != State::idle) {
      throw Error(ErrorKind::connect_failed, "QMP client already used for " + self->path);
    }
    self->path = path;
    self->state = State::connecting;
    const Clock::time_point deadline = Clock::now() + opts.timeout;
    auto fail = [&](ErrorKind kind, const std::string& msg) {
      Error e(kind, msg);
      self->finish(Ending::Reason::failed, e);
      return e;
    };

    asio::local::stream_protocol::endpoint endpoint;
    try {
      endpoint = asio::local::stream_protocol::endpoint(path);
    } catch (const boost::system::system_error& e) {
      throw fail(ErrorKind::connect_failed,
                 "cannot connect to QMP socket " + path + ": " + e.code().message());
    }
    Duration backoff{5};
    for (;;) {
      boost::system::error_code ec;
      co_await self->socket.async_connect(endpoint, asio::redirect_error(use_awaitable, ec));
      if (self->state == State::closed) throw *self->end_error;  // close() meanwhile
      if (!ec) break;
      boost::system::error_code ignored;
      self->socket.close(ignored);
      bool retryable = ec == boost::system::errc::no_such_file_or_directory ||
                       ec == boost::system::errc::connection_refused;
      std::string msg = "cannot connect to QMP socket " + path + ": " + ec.message();
      if (!retryable || !opts.peer_alive) throw fail(ErrorKind::connect_failed, msg);
      if (!opts.peer_alive()) throw fail(ErrorKind::connect_failed, msg + " (QEMU has exited)");
      if (Clock::now() + backoff > deadline) {
        throw fail(ErrorKind::connect_failed,
                   msg + " (gave up after " + seconds(opts.timeout) + ")");
      }
      asio::steady_timer timer(self->executor);
      timer.expires_after(backoff);
      co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
      if (self->state == State::closed) throw *self->end_error;
      backoff = std::min(backoff * 2, Duration{200});
    }

    self->state = State::negotiating;
    asio::co_spawn(self->executor, reader(self), asio::detached);
    self->greeting_waiter = std::make_shared<Waiter>(self->executor);
    bool got = co_await self->greeting_waiter->wait_until(Clock::now() + opts.greeting_timeout);
    self->greeting_waiter.reset();
    if (self->state == State::closed) throw *self->end_error;
    if (!got || !self->have_greeting) {
      throw fail(ErrorKind::busy,
                 "no QMP greeting from " + path + " within " + seconds(opts.greeting_timeout) +
                     ": the monitor is busy (QEMU serves one QMP client at a time; is another "
                     "client connected?)");
    }
    const auto& caps = self->greeting.capabilities;
    bool offered = std::find(caps.begin(), caps.end(), "oob") != caps.end();
    if (opts.oob && !offered) {
      throw fail(ErrorKind::protocol, "QEMU at " + path + " does not offer the oob capability");
    }
    bool want_oob = opts.oob || (opts.oob_if_offered && offered);
    json args = want_oob ? json{{"enable", json::array({"oob"})}} : json(nullptr);
    std::optional<Error> failure;
    try {
      co_await command(self, "qmp_capabilities", std::move(args), -1, opts.greeting_timeout);
    } catch (const Error& e) {
      failure = e;
    }
    if (failure) {
      if (self->state == State::closed) throw *self->end_error;
      throw fail(
          failure->kind() == ErrorKind::command_error ? ErrorKind::protocol : failure->kind(),
          "QMP negotiation with " + path + " failed: " + failure->what());
    }
    if (self->state == State::closed) throw *self->end_error;
    self->oob = want_oob;
    self->state = State::ready;
    co_return self->greeting;
  }
};

}  // namespace detail

// ---- Subscription -----------------------------------------------------------

Subscription& Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    unsubscribe();
    st_ = std::move(other.st_);
    impl_ = std::move(other.impl_);
  }
  return *this;
}

Subscription::~Subscription() { unsubscribe(); }

void Subscription::unsubscribe() {
  if (!st_) return;
  if (auto impl = impl_.lock()) std::erase(impl->subs, st_);
  if (st_->waiter) st_->waiter->wake();
  st_.reset();
}

awaitable<json> Subscription::next(std::optional<Duration> timeout) {
  return next_until(deadline_after(timeout));
}

namespace {

// The coroutine bodies take their state by value: an awaitable starts only when
// awaited (or later, when co_spawned), so it must not read through `this`.
awaitable<json> next_event(std::shared_ptr<detail::SubState> st, Clock::time_point deadline) {
  if (!st) throw std::logic_error("qmp::Subscription::next on an empty subscription");
  if (st->queue.empty() && !st->ended) {
    auto w = std::make_shared<Waiter>(st->executor);
    st->waiter = w;
    co_await w->wait_until(deadline);
    st->waiter.reset();
  }
  if (!st->queue.empty()) {
    json ev = std::move(st->queue.front());
    st->queue.pop_front();
    co_return ev;
  }
  if (st->ended) throw *st->ended;
  throw Error(ErrorKind::timeout,
              "no " + (st->name.empty() ? std::string("QMP event") : st->name + " event") +
                  " before the deadline");
}

}  // namespace

awaitable<json> Subscription::next_until(Clock::time_point deadline) {
  return next_event(st_, deadline);
}

std::optional<json> Subscription::try_next() {
  if (!st_ || st_->queue.empty()) return std::nullopt;
  json ev = std::move(st_->queue.front());
  st_->queue.pop_front();
  return ev;
}

std::size_t Subscription::size() const { return st_ ? st_->queue.size() : 0; }
std::uint64_t Subscription::dropped() const { return st_ ? st_->dropped : 0; }

// ---- Client -----------------------------------------------------------------

Client::Client(asio::any_io_executor executor, Options options)
    : impl_(std::make_shared<detail::Impl>(std::move(executor), std::move(options))) {}

Client::~Client() { close(); }

awaitable<Greeting> Client::connect(std::string path, ConnectOptions opts) {
  return detail::Impl::connect(impl_, std::move(path), std::move(opts));
}

awaitable<json> Client::execute(std::string name, json args, std::optional<Duration> timeout) {
  return detail::Impl::command(impl_, std::move(name), std::move(args), -1, timeout);
}

awaitable<json> Client::execute_oob(std::string name, json args, std::optional<Duration> timeout) {
  return detail::Impl::command(impl_, std::move(name), std::move(args), -1, timeout, true);
}

bool Client::oob_enabled() const { return impl_->oob; }

awaitable<json> Client::execute_with_fd(std::string name, json args, int fd,
                                        std::optional<Duration> timeout) {
  if (fd < 0) throw std::invalid_argument("qmp::Client::execute_with_fd: invalid fd");
  return detail::Impl::command(impl_, std::move(name), std::move(args), fd, timeout);
}

Subscription Client::subscribe(std::string event, std::size_t capacity) {
  auto st = std::make_shared<detail::SubState>(impl_->executor);
  st->name = std::move(event);
  st->capacity = std::max<std::size_t>(1, capacity ? capacity : impl_->opt.event_queue_capacity);
  if (impl_->end_error) st->ended = impl_->end_error;
  impl_->subs.push_back(st);
  Subscription sub;
  sub.st_ = std::move(st);
  sub.impl_ = impl_;
  return sub;
}

std::uint64_t Client::add_listener(Listener listener) {
  std::uint64_t id = impl_->next_listener++;
  impl_->listeners.emplace_back(id, std::move(listener));
  return id;
}

void Client::remove_listener(std::uint64_t id) {
  std::erase_if(impl_->listeners, [id](const auto& l) { return l.first == id; });
}

namespace {
awaitable<json> wait_for(Subscription sub, Client::Predicate pred, Clock::time_point deadline) {
  for (;;) {
    json ev = co_await sub.next_until(deadline);
    if (!pred || pred(ev)) co_return ev;
  }
}
}  // namespace

awaitable<json> Client::wait_for_event(std::string name, Predicate pred,
                                       std::optional<Duration> timeout) {
  // Not a coroutine: the subscription exists from this call on.
  return wait_for(subscribe(std::move(name)), std::move(pred), deadline_after(timeout));
}

namespace {

awaitable<Ending> wait_ending(std::shared_ptr<detail::Impl> self) {
  if (!self->ending) {
    auto w = std::make_shared<Waiter>(self->executor);
    self->closed_waiters.push_back(w);
    co_await w->wait_until(Clock::time_point::max());
  }
  co_return *self->ending;
}

}  // namespace

awaitable<Ending> Client::wait_closed() { return wait_ending(impl_); }

void Client::close() {
  impl_->finish(
      Ending::Reason::closed,
      Error(ErrorKind::disconnected, "QMP connection " + impl_->path + " closed by caller"));
}

State Client::state() const { return impl_->state; }
std::optional<Ending> Client::ending() const { return impl_->ending; }
const Greeting& Client::greeting() const { return impl_->greeting; }
Stats Client::stats() const { return impl_->stats; }
asio::any_io_executor Client::get_executor() const { return impl_->executor; }

// ---- SyncClient -------------------------------------------------------------

SyncClient::SyncClient(Options options) : client_(io_.get_executor(), std::move(options)) {}

void SyncClient::pump(const bool& done) {
  io_.restart();
  while (!done) {
    if (io_.run_one() == 0 && !done) {
      throw std::logic_error("qmp::SyncClient: the operation can never complete");
    }
  }
}

Greeting SyncClient::connect(const std::string& path, ConnectOptions opts) {
  return run(client_.connect(path, std::move(opts)));
}

json SyncClient::execute(const std::string& name, json args, std::optional<Duration> timeout) {
  return run(client_.execute(name, std::move(args), timeout));
}

json SyncClient::execute_with_fd(const std::string& name, json args, int fd,
                                 std::optional<Duration> timeout) {
  return run(client_.execute_with_fd(name, std::move(args), fd, timeout));
}

json SyncClient::next_event(Subscription& sub, std::optional<Duration> timeout) {
  return run(sub.next(timeout));
}

Ending SyncClient::wait_closed() { return run(client_.wait_closed()); }

void SyncClient::close() { client_.close(); }

Client& SyncClient::client() { return client_; }

}  // namespace qmp
