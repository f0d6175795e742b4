// A client of a running VM's control socket (control.sock, the QMP server run
// by `passlaunch run`; see run/control.h), for `ctl`, `list` and `latency`.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "qmp/client.h"

namespace pl::cli {

/// Maps the qmp library's errors to passlaunch's exit codes: an error reply
/// is kFailed ("WHAT: CLASS: DESCRIPTION"), anything else kEnvironment.
[[noreturn]] void rethrow_qmp(const qmp::Error& e, const std::string& what);

/// True when VM `name`'s launcher runs and its control socket exists (it
/// appears once the guest runs, after pinning).
bool control_socket_up(const std::string& name);

/// A connection to VM `name`'s control socket; exit 3 when it is not running.
class Control {
 public:
  using json = nlohmann::json;

  explicit Control(const std::string& name);

  /// Runs a QMP command and returns its `return`; errors as rethrow_qmp.
  json execute(const std::string& cmd, json args = nullptr,
               std::optional<qmp::Duration> timeout = std::nullopt);

  qmp::SyncClient& sync() { return client_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  qmp::SyncClient client_;
};

}  // namespace pl::cli
