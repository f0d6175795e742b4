// passlaunch qmp: one QMP command (or the event stream) from the command line.
#include <cmath>
#include <iostream>

#include "cli/cli.h"
#include "core/error.h"
#include "qmp/client.h"

namespace pl::cli {
namespace {

struct QmpArgs {
  std::string socket;
  double timeout = 10;
  bool events = false;
  bool pretty = false;
  std::string command;
  std::string arguments;
};

// QMP errors exit 1; connection, protocol and timeout failures exit 3.
Error to_pl_error(const qmp::Error& e, const std::string& socket) {
  switch (e.kind()) {
    case qmp::ErrorKind::command_error:
      return Error(Exit::kFailed, e.what());
    case qmp::ErrorKind::busy:
      return Error(Exit::kEnvironment, e.what(),
                   "close the other QMP client (passlaunch itself holds qmp.sock while a VM runs)");
    case qmp::ErrorKind::connect_failed:
      return Error(Exit::kEnvironment, e.what(),
                   "is QEMU running with -qmp unix:" + socket + ",server=on?");
    default:
      return Error(Exit::kEnvironment, e.what());
  }
}

int run_qmp(const QmpArgs& a) {
  // At most a day: a larger double would overflow the deadline's clock arithmetic.
  if (!std::isfinite(a.timeout) || a.timeout <= 0 || a.timeout > 86400) {
    throw Error(Exit::kUsage, "--timeout: expected a positive number of seconds, at most 86400");
  }
  if (a.events != a.command.empty()) {
    throw Error(Exit::kUsage,
                a.events ? "--events takes no COMMAND" : "expected a COMMAND (or --events)");
  }
  nlohmann::json args = nullptr;
  if (!a.arguments.empty()) {
    try {
      args = nlohmann::json::parse(a.arguments);
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(Exit::kUsage, "ARGUMENTS-JSON is not valid JSON: " + std::string(e.what()));
    }
    if (!args.is_object()) {
      throw Error(Exit::kUsage, "ARGUMENTS-JSON must be a JSON object, e.g. '{\"fdname\":\"x\"}'");
    }
  }
  auto timeout = qmp::Duration(static_cast<qmp::Duration::rep>(std::ceil(a.timeout * 1000)));
  qmp::Options options;
  options.command_timeout = timeout;
  options.log = [](const std::string& m) { std::cerr << "passlaunch: qmp: " << m << "\n"; };
  qmp::SyncClient client(options);
  try {
    if (a.events) {
      client.client().add_listener([](const nlohmann::json& ev) {
        std::cout << ev.dump() << "\n" << std::flush;
      });
    }
    qmp::ConnectOptions connect;  // one try: no peer to watch, a wrong path should fail fast
    connect.timeout = connect.greeting_timeout = timeout;
    client.connect(a.socket, connect);
    if (!a.events) {
      nlohmann::json ret = client.execute(a.command, std::move(args));
      std::cout << (a.pretty ? ret.dump(2) : ret.dump()) << "\n";
      return 0;
    }
    std::cerr << "passlaunch: listening for QMP events on " << a.socket << "\n";
    qmp::Ending end = client.wait_closed();
    if (end.reason == qmp::Ending::Reason::failed) {
      throw Error(Exit::kEnvironment, end.detail);
    }
    return 0;
  } catch (const qmp::Error& e) {
    throw to_pl_error(e, a.socket);
  }
}

}  // namespace

void add_qmp_command(CLI::App& app, Action& action) {
  auto a = std::make_shared<QmpArgs>();
  CLI::App* sub = app.add_subcommand(
      "qmp", "Send one QMP command to a running QEMU and print its return value as JSON");
  sub->add_option("--socket", a->socket, "QMP Unix socket of the VM (e.g. .../NAME/qmp.sock)")
      ->required();
  sub->add_option("--timeout", a->timeout, "Seconds to wait for the connection and the reply")
      ->capture_default_str();
  sub->add_flag("--events", a->events, "Print events as JSON lines until the connection ends");
  sub->add_flag("--pretty", a->pretty, "Indent the printed return value");
  sub->add_option("COMMAND", a->command, "QMP command, e.g. query-status");
  sub->add_option("ARGUMENTS-JSON", a->arguments, "The command's arguments as a JSON object");
  sub->footer(
      "Exit status: 0 success, 1 QMP error reply, 2 bad arguments, 3 connection, protocol or "
      "timeout failure.");
  sub->callback([a, &action] { action = [a] { return run_qmp(*a); }; });
}

}  // namespace pl::cli
