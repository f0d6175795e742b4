// The control socket: a QMP server in the VM's runtime dir (control.sock,
// 0600), because QEMU serves one QMP client and passlaunch holds that one.
//
// Any QMP client can connect, several at once. Each gets a greeting (QEMU's
// version), must negotiate `qmp_capabilities`, then its commands are
// forwarded over passlaunch's one QEMU connection (the client library gives
// them fresh ids) and each reply goes back to its sender with the sender's
// own id. Events fan out to every negotiated client. passlaunch adds its own
// commands (`passlaunch-status`, `passlaunch-shutdown`).
//
// Access: a peer that is root or our own user may run everything. The
// socket is 0600 unless open_to_group() shares it; then the group's members
// may connect, but only `qmp_capabilities` and `passlaunch-status` run for
// them (and they get no events), unless they are also in the profile's
// `control_group`: every other command reaches QEMU's monitor, and QMP can
// make QEMU open, create or overwrite host files as root (blockdev-add,
// drive-mirror, dump-guest-memory, screendump, migrate to exec:...).
//
// Isolation: each client has its own framer and a bounded output queue; a
// client that sends garbage, stops reading (more than kMaxQueued messages
// waiting) or disconnects mid-command is dropped alone. Its pending replies
// are discarded when they arrive.
#pragma once

// clang-format off
#include <utility>  // first: Boost 1.74's awaitable.hpp uses std::exchange without it
// clang-format on

#include <sys/types.h>

#include <boost/asio.hpp>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "qmp/client.h"

namespace pl {

class ControlServer {
 public:
  using json = nlohmann::json;
  /// A passlaunch command: returns the reply's `return`, or throws
  /// qmp::Error(command_error) for an error reply.
  using LocalCommand = std::function<boost::asio::awaitable<json>(const json& args)>;

  static constexpr size_t kMaxQueued = 4096;

  /// Listens on `path` (created 0600). `qemu` must be connected.
  ControlServer(boost::asio::any_io_executor ex, std::string path, qmp::Client& qemu);
  ~ControlServer();

  void add_command(const std::string& name, LocalCommand fn);
  /// Shares control.sock with group `gid` (0660, that group): status only,
  /// except for peers in `full_gid` (see "Access" above). False (the socket
  /// stays 0600) when we may not give it to that group.
  bool open_to_group(gid_t gid, std::optional<gid_t> full_gid);
  /// Starts accepting (a detached coroutine on the executor).
  void start();
  /// Sends an event to every negotiated client.
  void broadcast(const json& event);
  /// Stops accepting and drops every client.
  void close();

  size_t clients() const { return sessions_.size(); }

 private:
  struct Session;
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(std::shared_ptr<Session> s);
  boost::asio::awaitable<void> writer(std::shared_ptr<Session> s);
  boost::asio::awaitable<void> dispatch(std::shared_ptr<Session> s, json msg);
  void send(const std::shared_ptr<Session>& s, const json& msg);
  void drop(const std::shared_ptr<Session>& s, const std::string& why);

  boost::asio::any_io_executor ex_;
  std::string path_;
  qmp::Client& qemu_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::list<std::shared_ptr<Session>> sessions_;
  std::map<std::string, LocalCommand> commands_;
  std::optional<gid_t> full_gid_;
  bool closed_ = false;
};

}  // namespace pl
