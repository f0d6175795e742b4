#include "run/control.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <deque>

#include "run/runtime.h"

namespace pl {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using json = nlohmann::json;
using stream = asio::local::stream_protocol;

/// One request's place in its client's reply order.
struct ControlServer::Slot {
  std::optional<std::string> reply;
};

/// A validated command, ready to run.
struct ControlServer::Request {
  std::string name;
  json args;  // an object
  std::optional<json> id;
  bool oob = false;                // exec-oob: replied to out of order
  const Command* local = nullptr;  // one of ours, else QEMU's
};

struct ControlServer::Session {
  explicit Session(stream::socket sock)
      : socket(std::move(sock)), wake(socket.get_executor()), room(socket.get_executor()) {
    wake.expires_at(asio::steady_timer::time_point::max());
    room.expires_at(asio::steady_timer::time_point::max());
  }
  stream::socket socket;
  qmp::ServerParser parser{kMaxMessage};
  bool negotiated = false;
  bool oob = false;      // the client enabled oob
  bool dead = false;     // dropped: nothing more is read or written
  bool eof = false;      // the client will send nothing more
  bool writing = false;  // the writer holds a message being written
  bool full = true;      ///< false: the status command only (see "Access" in control.h)
  std::deque<std::shared_ptr<Slot>> order;  // requests without their reply sent yet
  std::deque<std::string> out;
  asio::steady_timer wake;  ///< poked when `out` gets a message
  asio::steady_timer room;  ///< poked when `order` shrinks
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

json error_reply(const std::string& cls, const std::string& desc,
                 const std::optional<json>& id = std::nullopt) {
  json r = {{"error", {{"class", cls}, {"desc", desc}}}};
  if (id) r["id"] = *id;
  return r;
}

/// QEMU's qmp_dispatch_check_obj: the members a request may have.
std::optional<std::string> check_members(const json& msg, bool allow_oob) {
  const char* exec_key = nullptr;
  for (auto it = msg.begin(); it != msg.end(); ++it) {
    const std::string& k = it.key();
    if (k == "execute" || (k == "exec-oob" && allow_oob)) {
      if (!it->is_string()) return "QMP input member '" + k + "' must be a string";
      if (exec_key) {
        return "QMP input member '" + k + "' clashes with '" + std::string(exec_key) + "'";
      }
      exec_key = k == "execute" ? "execute" : "exec-oob";
    } else if (k == "arguments") {
      if (!it->is_object()) return std::string("QMP input member 'arguments' must be an object");
    } else if (k != "id") {
      return "QMP input member '" + k + "' is unexpected";
    }
  }
  if (!exec_key) return std::string("QMP input lacks member 'execute'");
  return std::nullopt;
}

/// True when the peer has closed both directions (POLLHUP on a Unix socket),
/// not just its write side.
bool peer_gone(int fd) {
  pollfd p{fd, POLLOUT, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR));
}

bool has_type(const json& v, const std::string& type) {
  if (type == "int") return v.is_number_integer();
  if (type == "str") return v.is_string();
  if (type == "bool") return v.is_boolean();
  if (type == "number") return v.is_number();
  return true;
}

const char* type_word(const std::string& type) {
  if (type == "int") return "integer";
  if (type == "str") return "string";
  if (type == "bool") return "boolean";
  if (type == "number") return "number";
  return "any";
}

}  // namespace

ControlServer::ControlServer(asio::any_io_executor ex, std::string path, qmp::Client& qemu)
    : ex_(ex), path_(std::move(path)), qemu_(qemu), acceptor_(ex) {
  acceptor_.assign(stream(), listen_unix(path_));
}

ControlServer::~ControlServer() { close(); }

void ControlServer::add_command(Command command) {
  size_t index = commands_.size();
  by_name_[command.name] = index;
  for (const std::string& a : command.aliases) by_name_[a] = index;
  commands_.push_back(std::move(command));
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
    json caps = json::array();
    if (qemu_.oob_enabled()) caps.push_back("oob");
    send(s, json{{"QMP", {{"version", version}, {"capabilities", caps}}}}.dump());
    asio::co_spawn(ex_, writer(s), asio::detached);
    asio::co_spawn(ex_, serve(s), asio::detached);
  }
}

void ControlServer::send(const std::shared_ptr<Session>& s, std::string msg) {
  if (s->dead) return;
  if (s->out.size() >= kMaxQueued) {
    drop(s, "it does not read its messages");
    return;
  }
  s->out.push_back(std::move(msg) + "\r\n");
  s->wake.cancel();
}

void ControlServer::broadcast(const json& event) {
  std::string msg = event.dump();
  auto all = sessions_;  // send() may drop a session
  for (auto& s : all) {
    if (s->negotiated && s->full) send(s, msg);
  }
}

void ControlServer::drop(const std::shared_ptr<Session>& s, const std::string& why) {
  if (s->dead) return;
  (void)why;
  s->dead = true;
  boost::system::error_code ec;
  s->socket.close(ec);
  // Everything the client held goes now; commands still at QEMU find the
  // session dead when their replies come, and discard them.
  s->out.clear();
  s->order.clear();
  s->parser.reset();
  s->wake.cancel();
  s->room.cancel();
  sessions_.remove(s);
}

void ControlServer::finish_if_done(const std::shared_ptr<Session>& s) {
  if (s->eof && s->order.empty() && s->out.empty() && !s->writing) {
    drop(s, "it closed its side and has every reply");
  }
}

awaitable<void> ControlServer::writer(std::shared_ptr<Session> s) {
  while (!s->dead) {
    if (s->out.empty()) {
      finish_if_done(s);
      if (s->dead) break;
      boost::system::error_code ec;
      co_await s->wake.async_wait(asio::redirect_error(use_awaitable, ec));
      s->wake.expires_at(asio::steady_timer::time_point::max());
      continue;
    }
    std::string msg = std::move(s->out.front());
    s->out.pop_front();
    s->writing = true;
    boost::system::error_code ec;
    co_await asio::async_write(s->socket, asio::buffer(msg),
                               asio::redirect_error(use_awaitable, ec));
    s->writing = false;
    if (ec) drop(s, "write failed");
  }
}

awaitable<void> ControlServer::serve(std::shared_ptr<Session> s) {
  std::vector<char> buf(64 * 1024);
  while (!s->dead) {
    if (s->order.size() >= kMaxInFlight) {
      // Back-pressure: read on once replies have gone out.
      boost::system::error_code ec;
      co_await s->room.async_wait(asio::redirect_error(use_awaitable, ec));
      s->room.expires_at(asio::steady_timer::time_point::max());
      continue;
    }
    boost::system::error_code ec;
    size_t n = co_await s->socket.async_read_some(asio::buffer(buf),
                                                  asio::redirect_error(use_awaitable, ec));
    if (s->dead) co_return;
    if (ec) {
      // EOF: a client that only closed its write side still gets its replies;
      // one that is gone altogether is dropped at once. Incomplete input is
      // discarded, as QEMU does.
      if (ec == asio::error::eof && !peer_gone(s->socket.native_handle())) {
        s->eof = true;
        s->parser.reset();
        finish_if_done(s);
      } else {
        drop(s, "disconnected");
      }
      co_return;
    }
    s->parser.feed(std::string_view(buf.data(), n));
    while (auto item = s->parser.next()) {
      handle(s, std::move(*item));
      if (s->dead) co_return;
    }
  }
}

void ControlServer::complete(const std::shared_ptr<Session>& s, const std::shared_ptr<Slot>& slot,
                             json reply) {
  if (s->dead) return;
  if (!slot) {  // exec-oob: not in order
    send(s, reply.dump());
    return;
  }
  slot->reply = reply.dump();
  bool freed = false;
  while (!s->dead && !s->order.empty() && s->order.front()->reply) {
    std::string msg = std::move(*s->order.front()->reply);
    s->order.pop_front();
    freed = true;
    send(s, std::move(msg));
  }
  if (freed && !s->dead) {
    s->room.cancel();
    finish_if_done(s);
  }
}

std::optional<json> ControlServer::check_capabilities(const Session& s, const json& args) const {
  // As QEMU's QAPI visitor for qmp_capabilities(enable: [QMPCapability]).
  for (auto it = args.begin(); it != args.end(); ++it) {
    if (it.key() != "enable") return json("Parameter '" + it.key() + "' is unexpected");
  }
  if (!args.contains("enable")) return std::nullopt;
  const json& enable = args["enable"];
  if (!enable.is_array()) return json("Invalid parameter type for 'enable', expected: array");
  std::string unavailable;
  for (const json& cap : enable) {
    if (!cap.is_string()) return json("Invalid parameter type for 'null', expected: string");
    if (cap != "oob") {
      return json("Parameter 'null' does not accept value '" + cap.get<std::string>() + "'");
    }
    if (!qemu_.oob_enabled() && unavailable.find("oob") == std::string::npos) {
      unavailable += unavailable.empty() ? "oob" : ", oob";
    }
  }
  (void)s;
  if (!unavailable.empty()) return json("Capability " + unavailable + " not available");
  return std::nullopt;
}

std::optional<json> ControlServer::check_local_args(const Command& c, const json& args) const {
  for (auto it = args.begin(); it != args.end(); ++it) {
    auto spec = std::find_if(c.args.begin(), c.args.end(),
                             [&](const auto& a) { return a.first == it.key(); });
    if (spec == c.args.end()) return json("Parameter '" + it.key() + "' is unexpected");
    if (!has_type(*it, spec->second)) {
      return json("Invalid parameter type for '" + it.key() +
                  "', expected: " + type_word(spec->second));
    }
  }
  return std::nullopt;
}

void ControlServer::handle(const std::shared_ptr<Session>& s, qmp::ServerParser::Item item) {
  // Every request but exec-oob takes its place in the reply order now, so
  // an immediate error cannot overtake an earlier command's reply.
  auto slot = std::make_shared<Slot>();
  auto in_order = [&](json reply) {
    s->order.push_back(slot);
    complete(s, slot, std::move(reply));
  };
  if (!item.value) return in_order(error_reply("GenericError", item.error));
  const json& msg = *item.value;
  if (!msg.is_object())
    return in_order(error_reply("GenericError", "QMP input must be a JSON object"));

  auto r = std::make_shared<Request>();
  if (msg.contains("id")) r->id = msg["id"];
  if (auto bad = check_members(msg, s->oob))
    return in_order(error_reply("GenericError", *bad, r->id));
  r->oob = !msg.contains("execute");
  r->name = msg[r->oob ? "exec-oob" : "execute"].get<std::string>();
  r->args = msg.contains("arguments") ? msg["arguments"] : json::object();

  if (!s->negotiated && r->name != "qmp_capabilities") {
    return in_order(error_reply(
        "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'", r->id));
  }
  if (r->name == "qmp_capabilities") {
    json reply;
    if (auto bad = check_capabilities(*s, r->args)) {
      reply = error_reply("GenericError", bad->get<std::string>(), r->id);
    } else if (r->oob) {
      reply =
          error_reply("GenericError", "The command qmp_capabilities does not support OOB", r->id);
    } else if (s->negotiated) {
      reply = error_reply("CommandNotFound",
                          "Capabilities negotiation is already complete, command ignored", r->id);
    } else {
      s->negotiated = true;
      s->oob = r->args.contains("enable") && !r->args["enable"].empty();
      reply = {{"return", json::object()}};
      if (r->id) reply["id"] = *r->id;
    }
    return in_order(std::move(reply));
  }
  auto found = by_name_.find(r->name);
  if (!s->full && (found == by_name_.end() || commands_[found->second].name != kStatus)) {
    return in_order(error_reply("GenericError",
                                "permission denied: only " + std::string(kStatus) +
                                    " is open to the group; " + r->name +
                                    " is for root (QMP can make QEMU open host files)",
                                r->id));
  }
  if (found != by_name_.end()) {
    auto it = found;
    r->local = &commands_[it->second];
    if (r->oob) {
      return in_order(
          error_reply("GenericError", "The command " + r->name + " does not support OOB", r->id));
    }
    if (auto bad = check_local_args(*r->local, r->args)) {
      return in_order(error_reply("GenericError", bad->get<std::string>(), r->id));
    }
  } else {
    // QEMU reads its monitor a byte at a time, and every client's commands
    // share one connection: a huge command would hold up all of them.
    size_t size = r->name.size() + r->args.dump().size() + 32;
    if (size > kMaxCommand) {
      return in_order(error_reply(
          "GenericError",
          "passlaunch: the command is " + std::to_string(size) +
              " bytes as compact JSON, more than the control socket forwards to QEMU (" +
              std::to_string(kMaxCommand) + " bytes, docs/control.md)",
          r->id));
    }
  }
  if (!r->oob) s->order.push_back(slot);
  asio::co_spawn(ex_, run(s, r->oob ? nullptr : slot, r), asio::detached);
}

void ControlServer::add_own_commands(const std::string& name, json& ret) const {
  if (name == "query-commands" && ret.is_array()) {
    for (const Command& c : commands_) {
      ret.push_back({{"name", c.name}});
      for (const std::string& a : c.aliases) ret.push_back({{"name", a}});
    }
  } else if (name == "query-qmp-schema" && ret.is_array()) {
    for (const Command& c : commands_) {
      std::string arg_type = c.name + "-arg";
      json members = json::array();
      for (const auto& [arg, type] : c.args) {
        members.push_back({{"name", arg}, {"type", type}, {"default", nullptr}});
      }
      ret.push_back({{"name", arg_type}, {"meta-type", "object"}, {"members", members}});
      std::vector<std::string> names = c.aliases;
      names.insert(names.begin(), c.name);
      for (const std::string& n : names) {
        ret.push_back(
            {{"name", n}, {"meta-type", "command"}, {"arg-type", arg_type}, {"ret-type", "any"}});
      }
    }
  }
}

awaitable<void> ControlServer::run(std::shared_ptr<Session> s, std::shared_ptr<Slot> slot,
                                   std::shared_ptr<Request> r) {
  json reply;
  // No temporaries or ?: inside the co_await expressions: GCC 12 destroys
  // such temporaries twice.
  json args;
  if (!r->args.empty()) args = r->args;
  try {
    json ret;
    if (r->local) {
      ret = co_await r->local->fn(r->args);
    } else if (r->oob) {
      ret = co_await qemu_.execute_oob(r->name, std::move(args));
    } else {
      ret = co_await qemu_.execute(r->name, std::move(args));
    }
    add_own_commands(r->name, ret);
    reply = {{"return", std::move(ret)}};
  } catch (const qmp::Error& e) {
    if (e.kind() == qmp::ErrorKind::command_error) {
      reply = error_reply(e.error_class(), e.description());
    } else {
      reply = error_reply("GenericError", std::string("passlaunch: ") + e.what());
    }
  }
  if (r->id) reply["id"] = *r->id;
  complete(s, slot, std::move(reply));  // a client that left meanwhile is dead: discarded
}

}  // namespace pl
