// `passlaunch list` and `passlaunch ctl NAME ...`: talk to a running VM
// through its control socket (a QMP server run by `passlaunch run`).
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/cli.h"
#include "cli/control_client.h"
#include "core/error.h"
#include "qmp/client.h"
#include "run/facts.h"
#include "run/guest_agent.h"
#include "run/runtime.h"

namespace pl::cli {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

std::string format_uptime(long s) {
  char buf[64];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lds", s);
  }
  return buf;
}

/// Waits until VM `name` is gone: its launcher has released the lock, which
/// happens when it exits, after QEMU is reaped and the host restored.
bool wait_gone(const std::string& name, std::chrono::steady_clock::time_point deadline) {
  while (running_launcher(name)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    ::usleep(20 * 1000);
  }
  return true;
}

/// The end of the VM after `quit` or a graceful shutdown.
int wait_until_stopped(Control& c, int timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  if (!wait_gone(c.name(), deadline)) {
    throw Error(Exit::kEnvironment,
                "VM \"" + c.name() + "\" still runs after " + std::to_string(timeout_s) + " s",
                "`passlaunch ctl " + c.name() + " poweroff` quits it at once");
  }
  std::cout << c.name() << ": stopped\n";
  return 0;
}

/// The top qcow2 node of each of the VM's disks (query-block), for snapshots:
/// after an external snapshot the top is the overlay, not the profile's node.
std::vector<json> qcow2_disks(Control& c) {
  std::vector<json> out;
  for (const json& b : c.execute("query-block")) {
    if (!b.contains("inserted")) continue;
    const json& in = b["inserted"];
    if (in.value("drv", "") != "qcow2") continue;
    out.push_back(
        {{"node-name", in.value("node-name", "")}, {"image", in.value("image", json::object())}});
  }
  return out;
}

/// Runs a snapshot job to its end: JOB_STATUS_CHANGE to "concluded", then the
/// job's error from query-jobs (the command itself returns {} even when the
/// job fails), then job-dismiss.
void run_job(Control& c, const std::string& cmd, json args, const std::string& job_id) {
  qmp::Client& client = c.sync().client();
  qmp::Subscription changes = client.subscribe("JOB_STATUS_CHANGE");
  c.execute(cmd, std::move(args));
  for (;;) {
    json ev;
    try {
      ev = c.sync().next_event(changes, 600s);
    } catch (const qmp::Error& e) {
      rethrow_qmp(e, cmd);
    }
    const json& d = ev["data"];
    if (d.value("id", "") == job_id && d.value("status", "") == "concluded") break;
  }
  std::string error;
  for (const json& j : c.execute("query-jobs")) {
    if (j.value("id", "") == job_id && j.contains("error")) error = j["error"].get<std::string>();
  }
  c.execute("job-dismiss", {{"id", job_id}});
  if (!error.empty()) {
    std::string hint;
    if (cmd == "snapshot-load") {
      json st = c.execute("query-status");
      if (st.value("status", "") == "restore-vm") {
        hint = "QEMU is left paused in state restore-vm; load another snapshot or power off";
      }
    }
    throw Error(Exit::kFailed, cmd + " failed: " + error, hint);
  }
}

/// The VM's guest agent when the profile has one and it answers, else none.
std::unique_ptr<GuestAgent> answering_agent(const std::string& name,
                                            std::chrono::milliseconds timeout) {
  std::string path = runtime_dir_for(name) + "/qga.sock";
  if (::access(path.c_str(), F_OK) != 0) return nullptr;
  try {
    auto agent = std::make_unique<GuestAgent>(path);
    if (agent->sync(timeout)) return agent;
  } catch (const Error&) {
  }
  return nullptr;
}

/// Freezes the guest's filesystems (when its agent answers) for as long as it
/// lives; thaws them when it goes, whether the snapshot worked or not.
class FsFreeze {
 public:
  explicit FsFreeze(const std::string& name) : name_(name) {
    agent_ = answering_agent(name, 3s);
    if (!agent_) {
      if (::access((runtime_dir_for(name) + "/qga.sock").c_str(), F_OK) == 0)
        std::cout << name << ": the guest agent does not answer: the filesystems are not frozen\n";
      return;
    }
    json n = agent_->execute("guest-fsfreeze-freeze", nullptr, 60s);
    frozen_ = true;
    std::cout << name << ": guest agent froze " << n.dump() << " filesystems\n";
  }
  ~FsFreeze() {
    if (!frozen_) return;
    try {
      json n = agent_->execute("guest-fsfreeze-thaw", nullptr, 60s);
      std::cout << name_ << ": guest agent thawed " << n.dump() << " filesystems\n";
    } catch (const Error& e) {
      std::cerr << "passlaunch: warning: " << name_ << ": " << e.what()
                << "\n  hint: `passlaunch ctl " << name_
                << " qmp` cannot reach the agent; run guest-fsfreeze-thaw in the guest\n";
    }
  }
  FsFreeze(const FsFreeze&) = delete;

 private:
  std::string name_;
  std::unique_ptr<GuestAgent> agent_;
  bool frozen_ = false;
};

int snapshot(Control& c, const std::string& op, const std::string& tag, bool disk_only) {
  json status = c.execute("__org.passlaunch_status");
  bool vfio = status.value("vfio", false) || (disk_only && op == "save");
  auto disks = qcow2_disks(c);
  if (op == "list") {
    if (disks.empty()) {
      std::cout << c.name() << ": no qcow2 disks, so no snapshots\n";
      return 0;
    }
    std::printf("%-20s %-10s %12s  %s\n", "TAG", "DISK", "VM STATE", "DATE");
    for (const json& d : disks) {
      for (const json& s : d["image"].value("snapshots", json::array())) {
        std::time_t t = s.value("date-sec", 0L);
        char date[32];
        std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
        std::printf("%-20s %-10s %12s  %s\n", s.value("name", "").c_str(),
                    d.value("node-name", "").c_str(),
                    s.value("vm-state-size", 0L)
                        ? (std::to_string(s.value("vm-state-size", 0L) >> 20) + " MiB").c_str()
                        : "-",
                    date);
      }
      const json* img = &d["image"];
      while (img->contains("backing-image")) {
        img = &(*img)["backing-image"];
        std::printf("%-20s %-10s %12s  %s\n", "(external)", d.value("node-name", "").c_str(), "-",
                    img->value("filename", "").c_str());
      }
    }
    return 0;
  }
  if (disks.empty()) {
    throw Error(Exit::kFailed, "VM \"" + c.name() + "\" has no qcow2 disk to snapshot",
                "snapshots need a qcow2 disk in the profile's /disks");
  }
  if (disk_only && op != "save") {
    throw Error(Exit::kUsage, "--disk-only goes with `snapshot save`");
  }
  if (vfio) {
    // VFIO devices cannot save their state: only the disks can be kept.
    if (op != "save") {
      throw Error(Exit::kFailed, "VM \"" + c.name() +
                                     "\" has VFIO devices: its snapshots are "
                                     "external disk overlays, which passlaunch "
                                     "does not " +
                                     op +
                                     "; the VM state is never "
                                     "included");
    }
    FsFreeze freeze(c.name());  // consistent filesystems in the overlays' backing files
    for (const json& d : disks) {
      std::string node = d.value("node-name", "");
      std::string file = d["image"].value("filename", "");
      std::string overlay = file + "." + tag + ".qcow2";
      c.execute("blockdev-snapshot-sync", {{"node-name", node},
                                           {"snapshot-file", overlay},
                                           {"snapshot-node-name", node + "-" + tag},
                                           {"format", "qcow2"}});
      std::cout << c.name() << ": " << node << " now writes to " << overlay << "\n";
    }
    std::cout << c.name() << ": disk-only snapshot \"" << tag << "\" taken; the VM state is not "
              << "included"
              << (status.value("vfio", false) ? " because VFIO devices cannot save their state"
                                              : " (--disk-only)")
              << "\n";
    return 0;
  }
  std::vector<std::string> nodes;
  for (const json& d : disks) nodes.push_back(d.value("node-name", ""));
  std::string job = "passlaunch-" + op + "-" + std::to_string(::getpid());
  if (op == "save") {
    run_job(c, "snapshot-save",
            {{"job-id", job}, {"tag", tag}, {"vmstate", nodes[0]}, {"devices", nodes}}, job);
  } else if (op == "load") {
    run_job(c, "snapshot-load",
            {{"job-id", job}, {"tag", tag}, {"vmstate", nodes[0]}, {"devices", nodes}}, job);
  } else {
    // QEMU deletes a missing tag without complaint: say so ourselves.
    bool found = false;
    for (const json& d : disks) {
      for (const json& snap : d["image"].value("snapshots", json::array())) {
        found |= snap.value("name", "") == tag;
      }
    }
    if (!found) {
      throw Error(Exit::kFailed, "VM \"" + c.name() + "\" has no snapshot \"" + tag + "\"",
                  "`passlaunch ctl " + c.name() + " snapshot list` shows them");
    }
    run_job(c, "snapshot-delete", {{"job-id", job}, {"tag", tag}, {"devices", nodes}}, job);
  }
  std::cout << c.name() << ": snapshot \"" << tag << "\" "
            << (op == "save"   ? "saved"
                : op == "load" ? "loaded"
                               : "deleted")
            << "\n";
  return 0;
}

/// `ctl NAME display`: where the VNC or SPICE server listens and how to connect.
int show_display(const std::string& name) {
  Control c(name);
  std::string dir = runtime_dir_for(name);
  bool shown = false;
  json vnc = c.execute("query-vnc");
  if (vnc.value("enabled", false)) {
    shown = true;
    std::string sock = dir + "/vnc.sock";
    if (vnc.value("family", "") == "unix") {
      std::cout << name << ": VNC on the Unix socket " << sock << " (owner only)\n"
                << "  here:      vncviewer " << sock
                << "   (TigerVNC), or remote-viewer vnc+unix://" << sock << "\n"
                << "  elsewhere: ssh -L 5900:" << sock << " root@THIS-HOST, then vncviewer "
                << "localhost:5900\n";
    } else {
      std::cout << name << ": VNC on " << vnc.value("host", "?") << ":" << vnc.value("service", "?")
                << " (TCP, no password)\n"
                << "  connect:   vncviewer " << vnc.value("host", "?")
                << "::" << vnc.value("service", "?") << "\n";
    }
  }
  json spice;
  try {
    spice = c.execute("query-spice");
  } catch (const Error&) {
    spice = json::object();  // QEMU without SPICE
  }
  if (spice.value("enabled", false)) {
    shown = true;
    std::string sock = dir + "/spice.sock";
    if (spice.value("host", "").find('/') != std::string::npos || !spice.contains("port")) {
      std::cout << name << ": SPICE on the Unix socket " << sock << " (owner only)\n"
                << "  here:      remote-viewer spice+unix://" << sock << "\n"
                << "  elsewhere: ssh -L 5930:" << sock << " root@THIS-HOST, then remote-viewer "
                << "spice://localhost:5930\n";
    } else {
      std::cout << name << ": SPICE on " << spice.value("host", "?") << ":" << spice["port"].dump()
                << " (TCP, no password)\n"
                << "  connect:   remote-viewer spice://" << spice.value("host", "?") << ":"
                << spice["port"].dump() << "\n";
    }
  }
  if (!shown) {
    throw Error(Exit::kFailed, "VM \"" + name + "\" has no display",
                "add \"display\": {\"type\": \"vnc\"} to its profile (profiles/README.md)");
  }
  return 0;
}

struct VmEntry {
  std::string name;
  json status;  // __org.passlaunch_status, or {"status": "unreachable"}
};

std::vector<VmEntry> running_vms() {
  std::vector<VmEntry> out;
  std::set<std::string> seen;
  for (const std::string& base : runtime_bases()) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(base, ec)) {
      std::string name = e.path().filename();
      if (!running_launcher_in(e.path()) || !seen.insert(name).second) continue;
      VmEntry v{name, {{"name", name}, {"status", "starting"}}};
      try {
        Control c(name);
        v.status = c.execute("__org.passlaunch_status", nullptr, 5s);
      } catch (const Error&) {
      }
      out.push_back(v);
    }
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

}  // namespace

void add_ctl_commands(CLI::App& app, Action& action) {
  CLI::App* list = app.add_subcommand("list", "List running VMs (name, pid, state, uptime)");
  auto json_out = std::make_shared<bool>(false);
  list->add_flag("--json", *json_out, "JSON output");
  list->callback([json_out, &action] {
    action = [json_out]() -> int {
      auto vms = running_vms();
      if (*json_out) {
        json arr = json::array();
        for (auto& v : vms) arr.push_back(v.status);
        std::cout << json{{"vms", arr}}.dump(2) << "\n";
        return 0;
      }
      std::printf("%-16s %8s %8s  %-12s %s\n", "NAME", "PID", "QEMU", "STATE", "UPTIME");
      for (auto& v : vms) {
        auto num = [&](const char* k) {
          return v.status.contains(k) ? std::to_string(v.status[k].get<long>()) : std::string("-");
        };
        std::printf(
            "%-16s %8s %8s  %-12s %s\n", v.name.c_str(), num("launcher-pid").c_str(),
            num("qemu-pid").c_str(), v.status.value("status", "?").c_str(),
            v.status.contains("uptime-s") ? format_uptime(v.status["uptime-s"]).c_str() : "-");
      }
      return 0;
    };
  });

  struct Opts {
    std::string name, command, args, tag;
    int timeout = 0;
    bool json = false;
    bool disk_only = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* ctl = app.add_subcommand("ctl", "Control a running VM through its control socket");
  ctl->add_option("NAME", o->name, "VM name (the profile's name)")->required();
  ctl->require_subcommand(1);
  auto simple = [&](const char* name, const char* help, const char* qmp_cmd) {
    CLI::App* sub = ctl->add_subcommand(name, help);
    sub->callback([o, &action, qmp_cmd, name] {
      action = [o, qmp_cmd, name]() -> int {
        Control c(o->name);
        c.execute(qmp_cmd);
        std::cout << o->name << ": " << name << " done\n";
        return 0;
      };
    });
  };
  CLI::App* status = ctl->add_subcommand("status", "State, pids and uptime");
  status->add_flag("--json", o->json, "JSON output");
  status->callback([o, &action] {
    action = [o]() -> int {
      Control c(o->name);
      json st = c.execute("__org.passlaunch_status");
      if (o->json) {
        std::cout << st.dump(2) << "\n";
      } else {
        std::cout << o->name << ": " << st.value("status", "?") << ", launcher pid "
                  << st.value("launcher-pid", 0) << ", QEMU pid " << st.value("qemu-pid", 0)
                  << ", up " << format_uptime(st.value("uptime-s", 0L)) << "\n";
      }
      return 0;
    };
  });
  CLI::App* shutdown =
      ctl->add_subcommand("shutdown", "Graceful shutdown (as SIGTERM); waits until the VM is gone");
  shutdown
      ->add_option("--timeout", o->timeout, "Seconds before QEMU is quit (default: the profile's)")
      ->check(CLI::Range(1, 86400));
  shutdown->callback([o, &action] {
    action = [o]() -> int {
      Control c(o->name);
      json args = json::object();
      if (o->timeout > 0) args["timeout"] = o->timeout;
      // The guest agent first: it shuts the guest down even where the power
      // button is ignored (a locked Windows screen, a guest without ACPI).
      if (auto agent = answering_agent(o->name, 3s)) {
        agent->send("guest-shutdown", {{"mode", "powerdown"}});
        std::cout << o->name << ": asked the guest agent to shut the guest down\n";
        args["power-button"] = false;
      } else if (::access((runtime_dir_for(o->name) + "/qga.sock").c_str(), F_OK) == 0) {
        std::cout << o->name << ": the guest agent does not answer: pressing the power button\n";
      }
      c.execute("__org.passlaunch_shutdown", args);
      int wait = (o->timeout > 0 ? o->timeout : 3600) + 10;
      return wait_until_stopped(c, wait);
    };
  });
  CLI::App* poweroff = ctl->add_subcommand("poweroff", "Quit QEMU at once (no guest shutdown)");
  poweroff->callback([o, &action] {
    action = [o]() -> int {
      Control c(o->name);
      c.execute("quit");
      return wait_until_stopped(c, 30);
    };
  });
  simple("reset", "Reset the guest (system_reset)", "system_reset");
  simple("pause", "Pause the guest (stop)", "stop");
  simple("resume", "Resume the guest (cont)", "cont");

  CLI::App* display =
      ctl->add_subcommand("display", "How to connect to the VM's VNC or SPICE display");
  display->callback([o, &action] { action = [o]() -> int { return show_display(o->name); }; });

  CLI::App* raw =
      ctl->add_subcommand("qmp", "Run any QMP command; prints its return value as JSON");
  raw->add_option("COMMAND", o->command, "QMP command")->required();
  raw->add_option("ARGS", o->args, "Arguments as a JSON object");
  raw->callback([o, &action] {
    action = [o]() -> int {
      json args;
      if (!o->args.empty()) {
        try {
          args = json::parse(o->args);
        } catch (const json::parse_error& e) {
          throw Error(Exit::kUsage, "ARGS is not valid JSON: " + std::string(e.what()));
        }
        if (!args.is_object())
          throw Error(Exit::kUsage, "ARGS must be a JSON object, got " + o->args);
      }
      Control c(o->name);
      std::cout << c.execute(o->command, args).dump() << "\n";
      return 0;
    };
  });

  CLI::App* snap = ctl->add_subcommand("snapshot", "Snapshots: save|load|delete TAG, list");
  snap->require_subcommand(1);
  for (const char* op : {"save", "load", "delete"}) {
    CLI::App* sub = snap->add_subcommand(op, std::string(op) + " a snapshot");
    sub->add_option("TAG", o->tag, "Snapshot name")->required();
    if (std::string(op) == "save") {
      sub->add_flag("--disk-only", o->disk_only,
                    "External disk overlays only, as with VFIO (the guest agent, if any, freezes "
                    "the filesystems around it)");
    }
    sub->callback([o, &action, op] {
      action = [o, op]() -> int {
        Control c(o->name);
        return snapshot(c, op, o->tag, o->disk_only);
      };
    });
  }
  CLI::App* snap_list = snap->add_subcommand("list", "List snapshots");
  snap_list->callback([o, &action] {
    action = [o]() -> int {
      Control c(o->name);
      return snapshot(c, "list", "", false);
    };
  });
}

}  // namespace pl::cli
