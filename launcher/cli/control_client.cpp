#include "cli/control_client.h"

#include <chrono>
#include <filesystem>

#include "core/error.h"
#include "run/facts.h"
#include "run/runtime.h"

namespace pl::cli {

using namespace std::chrono_literals;

void rethrow_qmp(const qmp::Error& e, const std::string& what) {
  if (e.kind() == qmp::ErrorKind::command_error) {
    throw Error(Exit::kFailed, what + ": " + e.error_class() + ": " + e.description());
  }
  throw Error(Exit::kEnvironment, what + ": " + e.what());
}

namespace {

std::string control_path(const std::string& name) {
  return find_runtime_dir(name) + "/control.sock";
}

}  // namespace

bool control_socket_up(const std::string& name) {
  std::error_code ec;  // an unreadable path is "not up", not an exception
  return running_launcher(name) && std::filesystem::exists(control_path(name), ec);
}

Control::Control(const std::string& name) : name_(name) {
  if (!control_socket_up(name)) {
    throw Error(Exit::kEnvironment, "VM \"" + name + "\" is not running",
                "`passlaunch list` shows the running VMs");
  }
  try {
    qmp::ConnectOptions co;
    co.timeout = 5s;
    co.greeting_timeout = 5s;
    client_.connect(control_path(name), co);
  } catch (const qmp::Error& e) {
    rethrow_qmp(e, "cannot reach VM \"" + name + "\"");
  }
}

Control::json Control::execute(const std::string& cmd, json args,
                               std::optional<qmp::Duration> timeout) {
  try {
    return client_.execute(cmd, std::move(args), timeout);
  } catch (const qmp::Error& e) {
    rethrow_qmp(e, cmd);
  }
}

}  // namespace pl::cli
