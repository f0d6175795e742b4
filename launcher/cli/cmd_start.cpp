// `passlaunch start NAME` and `passlaunch stop NAME`: the entry points a
// desktop hotkey reaches through sudo or a polkit-allowed systemd unit. They
// take VM names, never paths: NAME is /etc/passlaunch/NAME.json, checked by
// load_trusted_profile (cli/trusted_profile.h). `start` returns at once; the
// VM runs in a detached child that logs where the host logs, with the tag
// passlaunch-NAME: to journald when it runs, else to syslog (/dev/log), else
// to $XDG_RUNTIME_DIR/passlaunch-NAME.log (/run/passlaunch without it).
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>

#include "cli/cli.h"
#include "cli/control_client.h"
#include "cli/trusted_profile.h"
#include "core/error.h"
#include "run/launcher.h"
#include "run/runtime.h"

namespace pl::cli {
namespace {

/// Where the detached VM's output goes.
struct LogTarget {
  int fd = -1;
  std::string where;  ///< for the user: "journalctl -t TAG", syslog or the file
};

/// A stream to journald (what systemd-cat does): the native stdout protocol's
/// header, then every line is one journal entry with SYSLOG_IDENTIFIER=tag.
int journal_stream(const std::string& tag) {
  sockaddr_un addr{};
  const char* path = "/run/systemd/journal/stdout";
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  // identifier, unit id, priority, level prefix, to syslog, kmsg, console.
  std::string header = tag + "\n\n6\n0\n0\n0\n0\n";
  if (::write(fd, header.data(), header.size()) != static_cast<ssize_t>(header.size())) {
    ::close(fd);
    return -1;
  }
  ::shutdown(fd, SHUT_RD);
  return fd;
}

/// A datagram socket connected to syslog's `socket` (/dev/log), or -1.
int syslog_socket(const std::string& socket) {
  sockaddr_un addr{};
  if (socket.size() >= sizeof addr.sun_path) return -1;
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, socket.c_str());
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// What logger(1) does: a detached relay reads lines from a pipe and sends
/// each to syslog as one message "<30>TAG: LINE" (daemon.info). Returns
/// the pipe's write end for the VM's output; the relay ends at its EOF.
int syslog_relay(int sock, const std::string& tag) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    ::close(sock);
    return -1;
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(sock);
    ::close(p[0]);
    ::close(p[1]);
    return -1;
  }
  if (pid == 0) {
    ::setsid();
    ::close(p[1]);
    // Hold none of our caller's pipes open: it waits for their EOF.
    if (int null = ::open("/dev/null", O_RDWR | O_CLOEXEC); null >= 0) {
      for (int i = 0; i < 3; ++i) ::dup2(null, i);
    }
    std::string prefix = "<30>" + tag + ": ";
    std::string pending;
    char buf[4096];
    auto send_line = [&](const std::string& line) {
      std::string msg = prefix + line;
      while (::send(sock, msg.data(), msg.size(), 0) < 0 && errno == EINTR) {
      }
    };
    for (;;) {
      ssize_t n = ::read(p[0], buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      pending.append(buf, static_cast<size_t>(n));
      for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
        send_line(pending.substr(0, nl));
        pending.erase(0, nl + 1);
      }
    }
    if (!pending.empty()) send_line(pending);
    ::_exit(0);
  }
  ::close(sock);
  ::close(p[0]);
  return p[1];
}

/// The journal when journald runs, else syslog on `syslog_path` when it
/// listens, else `log_dir`/passlaunch-NAME.log (appended; never through a
/// symlink).
LogTarget open_log(const std::string& name, const std::string& syslog_path,
                   const std::string& log_dir) {
  std::string tag = "passlaunch-" + name;
  if (int fd = journal_stream(tag); fd >= 0) return {fd, "journalctl -t " + tag};
  if (int sock = syslog_socket(syslog_path); sock >= 0) {
    if (int fd = syslog_relay(sock, tag); fd >= 0) return {fd, "syslog, tag " + tag};
  }
  ::mkdir(log_dir.c_str(), 0755);
  std::string file = log_dir + "/" + tag + ".log";
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (fd < 0) throw system_error(Exit::kEnvironment, "cannot open the log", file, errno);
  return {fd, file};
}

/// Runs the VM in a child that outlives us: its own session, stdin from
/// /dev/null, stdout and stderr to `log`. The parent returns; the child
/// returns run_vm's code (main() prints its errors into the log).
int detach_and_run(const Profile& profile, const LogTarget& log) {
  std::cout.flush();
  std::cerr.flush();
  pid_t pid = ::fork();
  if (pid < 0) throw system_error(Exit::kEnvironment, "cannot fork for", profile.name, errno);
  if (pid > 0) {
    ::close(log.fd);
    std::cout << "passlaunch: starting " << profile.name << " (pid " << pid
              << ", log: " << log.where << ")\n";
    return 0;
  }
  ::setsid();
  int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null >= 0) ::dup2(null, 0);
  ::dup2(log.fd, 1);
  ::dup2(log.fd, 2);
  std::cerr << "passlaunch: starting " << profile.name << " from " << profile.file << "\n";
  int code = run_vm(profile, RunOptions{});
  std::cerr << "passlaunch: " << profile.name << " ended, exit " << code << "\n";
  return code;
}

/// True when a user other than root reached us through sudo or pkexec: then
/// only a name may be chosen, never a directory.
bool on_behalf_of_a_user() {
  for (const char* var : {"SUDO_UID", "PKEXEC_UID"}) {
    const char* v = std::getenv(var);
    if (v && *v && std::string(v) != "0") return true;
  }
  return false;
}

}  // namespace

void add_start_commands(CLI::App& app, Action& action) {
  struct Options {
    std::string name;
    std::string config_dir;
    bool foreground = false;
  };
  auto o = std::make_shared<Options>();
  CLI::App* start = app.add_subcommand(
      "start", "Start the VM of /etc/passlaunch/NAME.json and return at once (log: journal)");
  start->add_option("NAME", o->name, "VM name: /etc/passlaunch/NAME.json (never a path)")
      ->required();
  start->add_flag("--foreground", o->foreground,
                  "Run in place, output to stdout/stderr (for the systemd unit)");
  start->add_option("--config-dir", o->config_dir,
                    "Directory of the profiles (default /etc/passlaunch; root only, refused "
                    "under sudo)");
  start->callback([o, &action] {
    action = [o]() -> int {
      // Read the environment here, once: what runs below is told.
      bool for_user = on_behalf_of_a_user();
      if (!o->config_dir.empty() && for_user) {
        throw Error(Exit::kUsage, "--config-dir is refused under sudo or pkexec",
                    "a user may name a VM of /etc/passlaunch, never a directory");
      }
      std::string dir = o->config_dir.empty() ? kConfigDir : o->config_dir;
      Profile profile = load_trusted_profile(dir, o->name);
      if (auto pid = running_launcher(profile.name)) {
        throw Error(
            Exit::kFailed,
            "VM \"" + profile.name + "\" is already running (pid " + std::to_string(*pid) + ")",
            "stop it with `passlaunch stop " + profile.name + "`");
      }
      if (o->foreground) return run_vm(profile, RunOptions{});
      const char* xdg = std::getenv("XDG_RUNTIME_DIR");
      std::string log_dir = xdg && *xdg ? std::string(xdg) : std::string("/run/passlaunch");
      // syslog's socket; tests point it at their own listener.
      // A user reaching us through sudo does not choose where root's log goes.
      const char* sys = for_user ? nullptr : std::getenv("PASSLAUNCH_SYSLOG_SOCKET");
      std::string syslog_path = sys && *sys ? std::string(sys) : std::string("/dev/log");
      return detach_and_run(profile, open_log(profile.name, syslog_path, log_dir));
    };
  });

  auto name = std::make_shared<std::string>();
  CLI::App* stop =
      app.add_subcommand("stop", "Shut VM NAME down gracefully (as SIGTERM) and return at once");
  stop->add_option("NAME", *name, "VM name (never a path)")->required();
  stop->callback([name, &action] {
    action = [name]() -> int {
      check_vm_name(*name);
      Control c(*name);
      c.execute("__org.passlaunch_shutdown");
      std::cout << "passlaunch: stopping " << *name << "\n";
      return 0;
    };
  });
}

}  // namespace pl::cli
