// The control socket: a QMP server in the VM's runtime dir (control.sock,
// 0600), because QEMU serves one QMP client and passlaunch holds that one.
// docs/control.md describes its behaviour for clients.
//
// Any QMP client can connect, several at once, and sees what QEMU's own
// monitor would show it:
//  1. a greeting with QEMU's version, offering `oob` when passlaunch's own
//     connection to QEMU has it;
//  2. `qmp_capabilities` first, validated as QEMU does (unknown arguments or
//     capabilities are errors);
//  3. then each command is validated (QEMU's rules and error classes), and
//     forwarded over passlaunch's one QEMU connection (the client library gives
//     it a fresh id) or run here (passlaunch's own commands). Replies go out in
//     the order the requests came, with the request's `id` whatever its JSON
//     type, `null` included; `exec-oob` replies go out as soon as they come.
//     Events fan out to every negotiated client.
//
// Access: a peer that is root or our own user may run everything. The
// socket is 0600 unless open_to_group() shares it; then the group's members
// may connect, but only `qmp_capabilities` and the status command run for
// them (and they get no events), unless they are also in the profile's
// `control_group`: every other command reaches QEMU's monitor, and QMP can
// make QEMU open, create or overwrite host files as root (blockdev-add,
// drive-mirror, dump-guest-memory, screendump, migrate to exec:...).
//
// Input is parsed by qmp::ServerParser, which, like QEMU, answers malformed
// input with a GenericError and resynchronises; a client is never dropped for
// what it sends. It is dropped when its output queue passes kMaxQueued (it
// does not read) or when it hangs up; after a half-close (shutdown(SHUT_WR))
// it still gets every reply, then the server closes. A command whose compact
// JSON exceeds kMaxCommand is refused here: QEMU reads its monitor a byte at a
// time (about 10 us a byte), and every client shares passlaunch's connection,
// so a big command would hold up everyone's.
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
#include <vector>

#include "qmp/client.h"
#include "qmp/server_parser.h"

namespace pl {

class ControlServer {
 public:
  using json = nlohmann::json;
  /// A passlaunch command: returns the reply's `return`, or throws
  /// qmp::Error(command_error) for an error reply.
  using LocalCommand = std::function<boost::asio::awaitable<json>(const json& args)>;

  /// One of passlaunch's own commands. `name` follows the QMP spec's rule for
  /// downstream additions (`__org.passlaunch_...`); `aliases` are older names.
  /// `args`: the optional arguments and their QAPI types ("int", "str",
  /// "bool"); others are refused as QEMU refuses them, before `fn` runs.
  struct Command {
    std::string name;
    std::vector<std::string> aliases;
    std::vector<std::pair<std::string, std::string>> args;
    LocalCommand fn;
  };

  /// Messages waiting for a client that does not read before it is dropped.
  static constexpr size_t kMaxQueued = 4096;
  /// The largest command forwarded to QEMU, as compact JSON (docs/control.md).
  static constexpr size_t kMaxCommand = 16 * 1024;
  /// The largest input message parsed at all (QEMU: 64 MiB).
  static constexpr size_t kMaxMessage = qmp::ServerParser::kDefaultMaxMessage;
  /// Commands of one client awaiting their reply before its socket is no
  /// longer read (back-pressure; QEMU itself reads one command at a time).
  static constexpr size_t kMaxInFlight = 256;

  /// The names passlaunch's own commands have in `query-commands`.
  static constexpr const char* kStatus = "__org.passlaunch_status";
  static constexpr const char* kShutdown = "__org.passlaunch_shutdown";

  /// Listens on `path` (created 0600). `qemu` must be connected.
  ControlServer(boost::asio::any_io_executor ex, std::string path, qmp::Client& qemu);
  ~ControlServer();

  void add_command(Command command);
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
  struct Slot;
  struct Request;
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(std::shared_ptr<Session> s);
  boost::asio::awaitable<void> writer(std::shared_ptr<Session> s);
  void handle(const std::shared_ptr<Session>& s, qmp::ServerParser::Item item);
  std::optional<json> check_capabilities(const Session& s, const json& args) const;
  std::optional<json> check_local_args(const Command& c, const json& args) const;
  boost::asio::awaitable<void> run(std::shared_ptr<Session> s, std::shared_ptr<Slot> slot,
                                   std::shared_ptr<Request> r);
  void complete(const std::shared_ptr<Session>& s, const std::shared_ptr<Slot>& slot, json reply);
  void send(const std::shared_ptr<Session>& s, std::string msg);
  void finish_if_done(const std::shared_ptr<Session>& s);
  void drop(const std::shared_ptr<Session>& s, const std::string& why);
  void add_own_commands(const std::string& name, json& ret) const;

  boost::asio::any_io_executor ex_;
  std::string path_;
  qmp::Client& qemu_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::list<std::shared_ptr<Session>> sessions_;
  std::vector<Command> commands_;
  std::map<std::string, size_t> by_name_;  // names and aliases -> commands_
  std::optional<gid_t> full_gid_;
  bool closed_ = false;
};

}  // namespace pl
