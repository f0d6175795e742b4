#include "run/control.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <deque>

#include "qmp/framer.h"
#include "run/runtime.h"

namespace pl {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using json = nlohmann::json;
using stream = asio::local::stream_protocol;

struct ControlServer::Session {
  explicit Session(stream::socket sock) : socket(std::move(sock)), wake(socket.get_executor()) {
    wake.expires_at(asio::steady_timer::time_point::max());
  }
  stream::socket socket;
  qmp::Framer framer;
  bool negotiated = false;
  bool dead = false;
  bool full = true;  ///< false: passlaunch-status only (see "Access" in control.h)
  std::deque<std::string> out;
  asio::steady_timer wake;  ///< poked when `out` gets a message
};

namespace {

/// True when the peer on `fd` may run every command: root, our own user, or
/// a member of `full_gid` (its primary or a supplementary group).
bool full_access(int fd, std::optional<gid_t> full_gid) {
  struct ucred cred {};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  if (cred.uid == 0 || cred.uid == ::geteuid()) return true;
  if (!full_gid) return false;
  if (cred.gid == *full_gid) return true;
  gid_t groups[256];
  len = sizeof groups;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0) return false;
  for (size_t i = 0; i < len / sizeof(gid_t); ++i) {
    if (groups[i] == *full_gid) return true;
  }
  return false;
}

json error_reply(const std::string& cls, const std::string& desc, const json& id) {
  json r = {{"error", {{"class", cls}, {"desc", desc}}}};
  if (!id.is_null()) r["id"] = id;
  return r;
}

}  // namespace

ControlServer::ControlServer(asio::any_io_executor ex, std::string path, qmp::Client& qemu)
    : ex_(ex), path_(std::move(path)), qemu_(qemu), acceptor_(ex) {
  acceptor_.assign(stream(), listen_unix(path_));
}

ControlServer::~ControlServer() { close(); }

void ControlServer::add_command(const std::string& name, LocalCommand fn) {
  commands_[name] = std::move(fn);
}

bool ControlServer::open_to_group(gid_t gid, std::optional<gid_t> full_gid) {
  full_gid_ = full_gid;
  return ::chown(path_.c_str(), static_cast<uid_t>(-1), gid) == 0 &&
         ::chmod(path_.c_str(), 0660) == 0;
}

void ControlServer::start() { asio::co_spawn(ex_, accept_loop(), asio::detached); }

void ControlServer::close() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  ::unlink(path_.c_str());
  auto all = sessions_;
  for (auto& s : all) drop(s, "passlaunch is stopping");
}

awaitable<void> ControlServer::accept_loop() {
  while (!closed_) {
    boost::system::error_code ec;
    stream::socket sock = co_await acceptor_.async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (closed_ || ec == asio::error::operation_aborted) co_return;
      // EMFILE and the like: back off instead of spinning the only thread.
      asio::steady_timer t(ex_, std::chrono::milliseconds(100));
      co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    auto s = std::make_shared<Session>(std::move(sock));
    s->full = full_access(s->socket.native_handle(), full_gid_);
    sessions_.push_back(s);
    const qmp::Greeting& g = qemu_.greeting();
    json version =
        g.raw.is_object() && g.raw.contains("QMP") ? g.raw["QMP"]["version"] : json::object();
    send(s, {{"QMP", {{"version", version}, {"capabilities", json::array()}}}});
    asio::co_spawn(ex_, writer(s), asio::detached);
    asio::co_spawn(ex_, serve(s), asio::detached);
  }
}

void ControlServer::send(const std::shared_ptr<Session>& s, const json& msg) {
  if (s->dead) return;
  if (s->out.size() >= kMaxQueued) {
    drop(s, "it does not read its messages");
    return;
  }
  s->out.push_back(msg.dump() + "\r\n");
  s->wake.cancel();
}

void ControlServer::broadcast(const json& event) {
  auto all = sessions_;  // send() may drop a session
  for (auto& s : all) {
    if (s->negotiated && s->full) send(s, event);
  }
}

void ControlServer::drop(const std::shared_ptr<Session>& s, const std::string& why) {
  if (s->dead) return;
  (void)why;
  s->dead = true;
  boost::system::error_code ec;
  s->socket.close(ec);
  s->wake.cancel();
  sessions_.remove(s);
}

awaitable<void> ControlServer::writer(std::shared_ptr<Session> s) {
  while (!s->dead) {
    if (s->out.empty()) {
      boost::system::error_code ec;
      co_await s->wake.async_wait(asio::redirect_error(use_awaitable, ec));
      s->wake.expires_at(asio::steady_timer::time_point::max());
      continue;
    }
    std::string msg = std::move(s->out.front());
    s->out.pop_front();
    boost::system::error_code ec;
    co_await asio::async_write(s->socket, asio::buffer(msg),
                               asio::redirect_error(use_awaitable, ec));
    if (ec) drop(s, "write failed");
  }
}

awaitable<void> ControlServer::serve(std::shared_ptr<Session> s) {
  char buf[8192];
  while (!s->dead) {
    boost::system::error_code ec;
    size_t n = co_await s->socket.async_read_some(asio::buffer(buf),
                                                  asio::redirect_error(use_awaitable, ec));
    if (ec) {
      drop(s, "disconnected");
      co_return;
    }
    s->framer.feed(std::string_view(buf, n));
    bool bad = false;
    for (;;) {
      std::optional<json> msg;
      try {
        msg = s->framer.next();
      } catch (const std::exception& e) {
        send(s, error_reply("GenericError", std::string("JSON parse error: ") + e.what(), nullptr));
        bad = true;
        break;
      }
      if (!msg) break;
      asio::co_spawn(ex_, dispatch(s, std::move(*msg)), asio::detached);
    }
    if (bad) {
      // Let the writer flush the error, then hang up on this client alone.
      asio::steady_timer t(ex_, std::chrono::milliseconds(100));
      co_await t.async_wait(use_awaitable);
      drop(s, "protocol error");
      co_return;
    }
  }
}

awaitable<void> ControlServer::dispatch(std::shared_ptr<Session> s, json msg) {
  json id = msg.is_object() && msg.contains("id") ? msg["id"] : json();
  if (!msg.is_object() || !msg.contains("execute") || !msg["execute"].is_string()) {
    send(s, error_reply("GenericError", "QMP input must be an object with \"execute\"", id));
    co_return;
  }
  std::string name = msg["execute"].get<std::string>();
  json args = msg.contains("arguments") ? msg["arguments"] : json();
  if (!args.is_null() && !args.is_object()) {
    send(s, error_reply("GenericError", "QMP input member 'arguments' must be an object", id));
    co_return;
  }
  if (!s->negotiated) {
    if (name != "qmp_capabilities") {
      send(s, error_reply("CommandNotFound",
                          "Expecting capabilities negotiation with 'qmp_capabilities'", id));
      co_return;
    }
    s->negotiated = true;
    json r = {{"return", json::object()}};
    if (!id.is_null()) r["id"] = id;
    send(s, r);
    co_return;
  }
  if (name == "qmp_capabilities") {
    send(s, error_reply("CommandNotFound",
                        "Capabilities negotiation is already complete, "
                        "command ignored",
                        id));
    co_return;
  }
  if (!s->full && name != "passlaunch-status") {
    send(s, error_reply("GenericError",
                        "permission denied: only passlaunch-status is open to the group; " + name +
                            " is for root (QMP can make QEMU open host files)",
                        id));
    co_return;
  }
  json reply;
  try {
    json ret;
    if (auto it = commands_.find(name); it != commands_.end()) {
      ret = co_await it->second(args);
    } else {
      ret = co_await qemu_.execute(name, args);
    }
    reply = {{"return", ret}};
    if (!id.is_null()) reply["id"] = id;
  } catch (const qmp::Error& e) {
    if (e.kind() == qmp::ErrorKind::command_error) {
      reply = error_reply(e.error_class(), e.description(), id);
    } else {
      reply = error_reply("GenericError", std::string("passlaunch: ") + e.what(), id);
    }
  }
  send(s, reply);  // a client that left meanwhile is marked dead: dropped
}

}  // namespace pl
