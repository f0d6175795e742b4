// Hotkeys for the person at the desk: `passlaunch start|stop NAME` refuse
// anything but a VM name and a root-owned profile; a real unprivileged user
// in the group passlaunch starts and stops the demo VM through the shipped
// sudoers drop-in, reads its status and nothing more; a user outside the
// group is refused; the polkit rule is evaluated with node.
#include "run/hotkey.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <linux/input.h>
#include <linux/uinput.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "cli/trusted_profile.h"
#include "core/error.h"
#include "profile/profile.h"
#include "test_util.h"

namespace pl {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

/// The message of the pl::Error that `fn` throws ("" if none).
template <class Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Hotkey, StartTakesNamesNeverPaths) {
  for (std::string bad : {"../x", "a/b", "/etc/passlaunch/x", ".hidden", "", "-x", "x y"}) {
    EXPECT_FALSE(cli::valid_vm_name(bad)) << bad;
  }
  EXPECT_TRUE(cli::valid_vm_name("win11"));
  EXPECT_TRUE(cli::valid_vm_name("demo-2.test_vm"));
  test::TempDir dir;
  for (std::string bad : {"../x", "a/b"}) {
    for (const char* cmd : {"start", "stop"}) {
      auto [code, out] = test::passlaunch_cmd({cmd, bad}, dir.path());
      EXPECT_EQ(code, 2) << cmd << " " << bad << ": " << out;
      EXPECT_NE(out.find("\"" + bad + "\" is not a VM name"), std::string::npos) << out;
    }
  }
}

TEST(Hotkey, StartRefusesProfilesThatAreNotRootsAlone) {
  test::TempDir dir;
  std::string conf = dir.path("conf");
  ASSERT_EQ(::mkdir(conf.c_str(), 0755), 0);
  std::ofstream(conf + "/vm.json") << test::guest_profile("vm", "normal");
  EXPECT_EQ(cli::load_trusted_profile(conf, "vm").name, "vm");

  // Group- or world-writable profile.
  ::chmod((conf + "/vm.json").c_str(), 0664);
  EXPECT_NE(error_of([&] { cli::load_trusted_profile(conf, "vm"); }).find("is group-writable"),
            std::string::npos);
  ::chmod((conf + "/vm.json").c_str(), 0646);
  EXPECT_NE(error_of([&] { cli::load_trusted_profile(conf, "vm"); }).find("is world-writable"),
            std::string::npos);
  ::chmod((conf + "/vm.json").c_str(), 0644);
  // Not root's.
  ASSERT_EQ(::chown((conf + "/vm.json").c_str(), 65534, 65534), 0);
  EXPECT_NE(error_of([&] {
              cli::load_trusted_profile(conf, "vm");
            }).find("is owned by uid 65534, not root"),
            std::string::npos);
  ASSERT_EQ(::chown((conf + "/vm.json").c_str(), 0, 0), 0);
  // A symlink, even to a good profile.
  std::ofstream(dir.path("elsewhere.json")) << test::guest_profile("link", "normal");
  fs::create_symlink(dir.path("elsewhere.json"), conf + "/link.json");
  EXPECT_NE(error_of([&] { cli::load_trusted_profile(conf, "link"); }).find("it is a symlink"),
            std::string::npos);
  // The profile's name must be the file's.
  std::ofstream(conf + "/other.json") << test::guest_profile("vm", "normal");
  EXPECT_NE(error_of([&] {
              cli::load_trusted_profile(conf, "other");
            }).find("/name: expected \"other\" (the file's name), got \"vm\""),
            std::string::npos);
  // A hook that is not root's alone.
  std::string hook = dir.path("hook.sh");
  std::ofstream(hook) << "#!/bin/sh\n";
  ::chmod(hook.c_str(), 0775);
  std::ofstream(conf + "/hooked.json") << test::guest_profile(
      "hooked", "normal", R"(, "host": {"hooks": {"prepare": ")" + hook + R"("}})");
  EXPECT_NE(error_of([&] {
              cli::load_trusted_profile(conf, "hooked");
            }).find("its hooks/prepare " + hook + " is group-writable"),
            std::string::npos);
  // The directory: group-writable, or a symlink.
  ::chmod(conf.c_str(), 0775);
  EXPECT_NE(error_of([&] {
              cli::load_trusted_profile(conf, "vm");
            }).find("refusing the profile directory " + conf + ": it is group-writable"),
            std::string::npos);
  ::chmod(conf.c_str(), 0755);
  fs::create_symlink(conf, dir.path("conflink"));
  EXPECT_NE(error_of([&] {
              cli::load_trusted_profile(dir.path("conflink"), "vm");
            }).find("it is a symlink"),
            std::string::npos);
  // And through the command: exit 2 with the reason, nothing started.
  ::chmod((conf + "/vm.json").c_str(), 0664);
  auto [code, out] = test::passlaunch_cmd({"start", "--config-dir", conf, "vm"}, dir.path());
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("is group-writable"), std::string::npos) << out;
}

TEST(Polkit, RuleLetsTheGroupStartAndStopPasslaunchUnitsOnly) {
  test::TempDir dir;
  struct Case {
    std::string id, unit, verb, groups, want;
  };
  const std::string manage = "org.freedesktop.systemd1.manage-units";
  std::vector<Case> cases = {
      {manage, "passlaunch@win11.service", "start", "passlaunch", "yes"},
      {manage, "passlaunch@win11.service", "stop", "passlaunch", "yes"},
      {manage, "passlaunch@demo-2.test_vm.service", "start", "users\",\"passlaunch", "yes"},
      {manage, "passlaunch@win11.service", "restart", "passlaunch", "not_handled"},
      {manage, "passlaunch@win11.service", "reload", "passlaunch", "not_handled"},
      {manage, "passlaunch@win11.service", "start", "users", "not_handled"},
      {manage, "passlaunch@win11.service", "start", "", "not_handled"},
      {manage, "ssh.service", "start", "passlaunch", "not_handled"},
      {manage, "passlaunch@.service", "start", "passlaunch", "not_handled"},
      {manage, "passlaunch@..\\\\x2fx.service", "start", "passlaunch", "not_handled"},
      {manage, "passlaunch@-x.service", "start", "passlaunch", "not_handled"},
      {manage, "passlaunch@win11.service.d", "start", "passlaunch", "not_handled"},
      {manage, "xpasslaunch@win11.service", "start", "passlaunch", "not_handled"},
      {manage, "passlaunch@win11.socket", "start", "passlaunch", "not_handled"},
      {"org.freedesktop.systemd1.manage-unit-files", "passlaunch@win11.service", "start",
       "passlaunch", "not_handled"},
      {"org.freedesktop.login1.power-off", "passlaunch@win11.service", "start", "passlaunch",
       "not_handled"},
  };
  std::string json = "[";
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    json += (i ? "," : "") + std::string("{\"id\":\"") + c.id + "\",\"unit\":\"" + c.unit +
            "\",\"verb\":\"" + c.verb + "\",\"groups\":[" +
            (c.groups.empty() ? "" : "\"" + c.groups + "\"") + "]}";
  }
  json += "]";
  std::ofstream(dir.path("cases.json")) << json;
  auto [code, out] = test::capture(
      {"node", std::string(PL_SOURCE_DIR) + "/tests/polkit_harness.js",
       std::string(PL_SOURCE_DIR) + "/scripts/polkit/50-passlaunch.rules", dir.path("cases.json")});
  ASSERT_EQ(code, 0) << "node evaluates the rule (Debian package nodejs): " << out;
  std::istringstream lines(out);
  for (const Case& c : cases) {
    std::string got;
    std::getline(lines, got);
    EXPECT_EQ(got, c.want) << c.id << " " << c.unit << " " << c.verb << " groups " << c.groups;
  }
}

TEST(Sudoers, DropInPassesVisudo) {
  auto [code, out] = test::capture(
      {"visudo", "-c", "-f", std::string(PL_SOURCE_DIR) + "/scripts/sudoers/passlaunch"});
  EXPECT_EQ(code, 0) << out;
}

/// A real unprivileged user in the group passlaunch (and one outside it),
/// the shipped sudoers drop-in pointing at this build's passlaunch, and a
/// profile in /etc/passlaunch; all removed afterwards.
class HotkeyQemu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
      GTEST_SKIP() << "the pin plan needs 2 CPUs";
    }
    if (::geteuid() != 0) {
      GTEST_SKIP() << "needs root to create users";
    }
    std::string id = std::to_string(::getpid());
    name_ = "hk" + id;
    member_ = "plhk" + id;
    outsider_ = "plhko" + id;
    made_group_ = ::getgrnam("passlaunch") == nullptr;
    if (made_group_) {
      ASSERT_EQ(run({"groupadd", "-r", "passlaunch"}), 0);
    }
    ASSERT_EQ(run({"useradd", "-M", "-N", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-G",
                   "passlaunch", member_}),
              0);
    ASSERT_EQ(
        run({"useradd", "-M", "-N", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", outsider_}),
        0);
    made_conf_ = !fs::exists(cli::kConfigDir);
    if (made_conf_) {
      ASSERT_EQ(::mkdir(cli::kConfigDir, 0755), 0);
    }
    profile_ = std::string(cli::kConfigDir) + "/" + name_ + ".json";
    std::ofstream(profile_) << test::guest_profile(name_, "normal");
    std::string drop_in = read_all(std::string(PL_SOURCE_DIR) + "/scripts/sudoers/passlaunch");
    for (size_t p; (p = drop_in.find("/usr/local/bin/passlaunch")) != std::string::npos;) {
      drop_in.replace(p, 25, PL_PASSLAUNCH);
    }
    sudoers_ = "/etc/sudoers.d/plhk" + id;  // no '.' in the name, or sudo skips it
    std::ofstream(sudoers_ + ".tmp") << drop_in;
    ::chmod((sudoers_ + ".tmp").c_str(), 0440);
    ASSERT_EQ(run({"visudo", "-c", "-q", "-f", sudoers_ + ".tmp"}), 0);
    ASSERT_EQ(::rename((sudoers_ + ".tmp").c_str(), sudoers_.c_str()), 0);
  }
  void TearDown() override {
    if (member_.empty()) return;
    if (!sudoers_.empty()) ::unlink(sudoers_.c_str());
    test::capture({PL_PASSLAUNCH, "ctl", name_, "poweroff"});  // if a check failed midway
    ::unlink(profile_.c_str());
    if (made_conf_) ::rmdir(cli::kConfigDir);
    run({"userdel", member_});
    run({"userdel", outsider_});
    if (made_group_) run({"groupdel", "passlaunch"});
    ::unlink(log_file().c_str());
  }
  static int run(const std::vector<std::string>& argv) { return test::run_command(argv); }
  /// `ARGS...` as `user`, with a clean environment (as from a desktop session).
  std::pair<int, std::string> as(const std::string& user, std::vector<std::string> args) {
    args.insert(args.begin(), {"runuser", "-u", user, "--", "env", "-i", "PATH=/usr/bin:/bin"});
    return test::capture(args);
  }
  std::string log_file() const { return "/run/passlaunch/passlaunch-" + name_ + ".log"; }
  bool log_has(const std::string& needle, std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (read_all(log_file()).find(needle) == std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(100ms);
    }
    return true;
  }

  std::string name_, member_, outsider_, profile_, sudoers_;
  bool made_group_ = false, made_conf_ = false;
};

TEST_F(HotkeyQemu, GroupMemberStartsAndStopsTheVmThroughSudoAndNoOneElse) {
  // Outside the group: sudo refuses without asking for a password.
  auto [c0, o0] = as(outsider_, {"sudo", "-n", PL_PASSLAUNCH, "start", name_});
  EXPECT_NE(c0, 0) << o0;
  EXPECT_NE(o0.find("password is required"), std::string::npos) << o0;
  // In the group: names only, and never a directory of the user's choosing.
  for (std::string bad : {"../x", "a/b"}) {
    auto [c, o] = as(member_, {"sudo", "-n", PL_PASSLAUNCH, "start", bad});
    EXPECT_EQ(c, 2) << o;
    EXPECT_NE(o.find("is not a VM name"), std::string::npos) << o;
  }
  auto [cd, od] =
      as(member_, {"sudo", "-n", PL_PASSLAUNCH, "start", "--config-dir", "/tmp", name_});
  EXPECT_EQ(cd, 2) << od;
  EXPECT_NE(od.find("--config-dir is refused under sudo"), std::string::npos) << od;
  ::chmod(profile_.c_str(), 0664);
  auto [cw, ow] = as(member_, {"sudo", "-n", PL_PASSLAUNCH, "start", name_});
  EXPECT_EQ(cw, 2) << ow;
  EXPECT_NE(ow.find("is group-writable"), std::string::npos) << ow;
  ::chmod(profile_.c_str(), 0644);

  // The VM starts as root, detached: start returns at once.
  auto t0 = std::chrono::steady_clock::now();
  auto [c1, o1] = as(member_, {"sudo", "-n", PL_PASSLAUNCH, "start", name_});
  ASSERT_EQ(c1, 0) << o1;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "start returns at once";
  EXPECT_NE(o1.find("starting " + name_), std::string::npos) << o1;
  ASSERT_TRUE(log_has("passlaunch-guest: ready", 180s)) << read_all(log_file());
  auto launcher = test::capture({PL_PASSLAUNCH, "ctl", name_, "status", "--json"});
  ASSERT_EQ(launcher.first, 0) << launcher.second;

  auto [ca, oa] = as(member_, {"sudo", "-n", PL_PASSLAUNCH, "start", name_});
  EXPECT_EQ(ca, 1) << oa;
  EXPECT_NE(oa.find("is already running"), std::string::npos) << oa;

  // The group reads the status and the list, and nothing that reaches QMP.
  auto [c2, o2] = as(member_, {PL_PASSLAUNCH, "ctl", name_, "status"});
  EXPECT_EQ(c2, 0) << o2;
  EXPECT_NE(o2.find(name_ + ": running"), std::string::npos) << o2;
  auto [c3, o3] = as(member_, {PL_PASSLAUNCH, "list"});
  EXPECT_EQ(c3, 0) << o3;
  EXPECT_NE(o3.find(name_), std::string::npos) << o3;
  auto [c4, o4] = as(member_, {PL_PASSLAUNCH, "ctl", name_, "qmp", "query-status"});
  EXPECT_EQ(c4, 1) << o4;
  EXPECT_NE(o4.find("permission denied"), std::string::npos) << o4;
  auto [c5, o5] = as(member_, {PL_PASSLAUNCH, "ctl", name_, "pause"});
  EXPECT_EQ(c5, 1) << o5;
  // Outside the group: not even the status.
  auto [c6, o6] = as(outsider_, {PL_PASSLAUNCH, "ctl", name_, "status"});
  EXPECT_NE(c6, 0) << o6;
  auto [c7, o7] = as(outsider_, {"sudo", "-n", PL_PASSLAUNCH, "stop", name_});
  EXPECT_NE(c7, 0) << o7;
  EXPECT_EQ(test::capture({PL_PASSLAUNCH, "ctl", name_, "status"}).first, 0);

  // Stop: a graceful shutdown, and the launcher is gone.
  auto [c8, o8] = as(member_, {"sudo", "-n", PL_PASSLAUNCH, "stop", name_});
  EXPECT_EQ(c8, 0) << o8;
  EXPECT_NE(o8.find("stopping " + name_), std::string::npos) << o8;
  EXPECT_TRUE(log_has(name_ + " ended, exit 0", 120s)) << read_all(log_file());
  EXPECT_NE(read_all(log_file()).find("the guest shut down"), std::string::npos);
}

TEST(HostHotkey, MatcherFiresOncePerHoldOfTheWholeCombination) {
  HotkeyMatcher m({KEY_LEFTCTRL, KEY_RIGHTCTRL, KEY_END});
  auto key = [&](int code, int value) { return m.feed(EV_KEY, code, value); };
  EXPECT_FALSE(key(KEY_LEFTCTRL, 1));
  EXPECT_FALSE(key(KEY_END, 1));
  EXPECT_FALSE(key(KEY_A, 1));  // other keys change nothing
  EXPECT_TRUE(key(KEY_RIGHTCTRL, 1));
  EXPECT_FALSE(key(KEY_END, 2)) << "autorepeat is the same hold";
  EXPECT_FALSE(key(KEY_RIGHTCTRL, 1));
  EXPECT_FALSE(key(KEY_END, 0));
  EXPECT_TRUE(key(KEY_END, 1)) << "held again";
  // Released one by one and pressed in another order: never all at once.
  EXPECT_FALSE(key(KEY_LEFTCTRL, 0));
  EXPECT_FALSE(key(KEY_RIGHTCTRL, 0));
  EXPECT_FALSE(key(KEY_END, 0));
  EXPECT_FALSE(key(KEY_LEFTCTRL, 1));
  EXPECT_FALSE(key(KEY_LEFTCTRL, 0));
  EXPECT_FALSE(key(KEY_RIGHTCTRL, 1));
  EXPECT_FALSE(key(KEY_END, 1));
  // Dropped events: what is held is unknown, so nothing counts as held.
  EXPECT_FALSE(m.feed(EV_SYN, SYN_DROPPED, 0));
  EXPECT_FALSE(key(KEY_END, 1));
  EXPECT_FALSE(m.feed(EV_MSC, MSC_SCAN, KEY_LEFTCTRL));
  EXPECT_TRUE(key(KEY_LEFTCTRL, 1) || key(KEY_RIGHTCTRL, 1));
}

TEST(HostHotkey, ProfileNamesKeysAndNeedsAKeyboard) {
  test::TempDir dir;
  std::ofstream(dir.path("kbd")) << "";
  auto profile = [&](const std::string& hotkey, const std::string& input = "") {
    return test::guest_profile("vm", "normal", input + R"(, "host_hotkey": )" + hotkey);
  };
  Profile p = parse_profile(
      profile(R"({"keys": ["KEY_LEFTCTRL", "KEY_END"], "action": "poweroff", "devices": [")" +
              dir.path("kbd") + R"("]})"),
      dir.path("vm.json"));
  ASSERT_TRUE(p.host_hotkey);
  EXPECT_EQ(p.host_hotkey->codes, (std::vector<int>{KEY_LEFTCTRL, KEY_END}));
  EXPECT_EQ(p.host_hotkey->action, HostHotkey::Action::kPoweroff);
  EXPECT_EQ(p.host_hotkey->devices, std::vector<std::string>{dir.path("kbd")});
  // The evdev keyboards are the default devices.
  p = parse_profile(
      profile(R"({"keys": ["KEY_F12"]})", R"(, "input": {"evdev": [{"path": ")" + dir.path("kbd") +
                                              R"(", "grab_toggle": "scrolllock"}]})"),
      dir.path("vm.json"));
  EXPECT_EQ(p.host_hotkey->devices, std::vector<std::string>{dir.path("kbd")});
  EXPECT_EQ(p.host_hotkey->action, HostHotkey::Action::kShutdown);
  std::string err = error_of([&] {
    parse_profile(profile(R"({"keys": ["KEY_LEFTCTRL", "CTRL", "KEY_LEFTCTRL", 7],
                              "action": "reboot"})"),
                  "vm.json");
  });
  EXPECT_NE(err.find("/host_hotkey/keys/1: expected a key name of linux/input-event-codes.h"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("/host_hotkey/keys/2: \"KEY_LEFTCTRL\" is listed twice"), std::string::npos)
      << err;
  EXPECT_NE(
      err.find("/host_hotkey/keys/3: expected a key name such as \"KEY_END\", got an integer"),
      std::string::npos)
      << err;
  EXPECT_NE(err.find("/host_hotkey/action: expected one of \"shutdown\", \"poweroff\""),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("/host_hotkey: needs keyboards to read"), std::string::npos) << err;
  err = error_of([&] { parse_profile(profile(R"({"keys": []})"), "vm.json"); });
  EXPECT_NE(err.find("/host_hotkey/keys: expected 1 to 6 keys"), std::string::npos) << err;
  err = error_of([&] {
    parse_profile(test::guest_profile("vm", "normal", R"(, "control_group": "Bad Group")"),
                  "vm.json");
  });
  EXPECT_NE(err.find("/control_group: expected a group name"), std::string::npos) << err;
}

/// Writes key events, each followed by SYN_REPORT, as a keyboard would.
void type_keys(int fd, const std::vector<std::pair<int, int>>& keys) {
  for (auto [code, value] : keys) {
    input_event ev[2] = {};
    ev[0].type = EV_KEY;
    ev[0].code = static_cast<uint16_t>(code);
    ev[0].value = value;
    ev[1].type = EV_SYN;
    ev[1].code = SYN_REPORT;
    ASSERT_EQ(::write(fd, ev, sizeof ev), static_cast<ssize_t>(sizeof ev));
  }
}

// The hotkey held on a keyboard ends the running guest gracefully; other
// combinations do nothing. The keyboard is a FIFO fed input_events (this
// machine's kernel has no uinput): the watcher reads it as it reads evdev.
TEST(HostHotkeyQemu, HeldCombinationShutsTheGuestDownGracefully) {
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) GTEST_SKIP() << "the pin plan needs 2 CPUs";
  test::TempDir dir;
  std::string kbd = dir.path("kbd");
  ASSERT_EQ(::mkfifo(kbd.c_str(), 0600), 0);
  int fd = ::open(kbd.c_str(), O_RDWR | O_CLOEXEC);  // a writer for the VM's whole life
  ASSERT_GE(fd, 0);
  std::string name = "hh" + std::to_string(::getpid());
  std::string path = dir.path(name + ".json");
  std::ofstream(path) << test::guest_profile(
      name, "normal",
      R"(, "host_hotkey": {"keys": ["KEY_LEFTCTRL", "KEY_RIGHTCTRL", "KEY_END"], "devices": [")" +
          kbd + R"("]})");
  test::Passlaunch run({"run", path}, dir.path());
  ASSERT_TRUE(run.out().wait_for("passlaunch-guest: ready")) << run.out().text();
  EXPECT_NE(
      run.out().text().find("host hotkey KEY_LEFTCTRL+KEY_RIGHTCTRL+KEY_END watched on " + kbd),
      std::string::npos)
      << run.out().text();
  // Not the combination: two of its keys; all three but never held together.
  type_keys(fd, {{KEY_LEFTCTRL, 1},
                 {KEY_END, 1},
                 {KEY_A, 1},
                 {KEY_A, 0},
                 {KEY_END, 0},
                 {KEY_RIGHTCTRL, 1},
                 {KEY_LEFTCTRL, 0},
                 {KEY_END, 1},
                 {KEY_END, 0},
                 {KEY_RIGHTCTRL, 0}});
  // The combination, held.
  type_keys(fd, {{KEY_LEFTCTRL, 1}, {KEY_RIGHTCTRL, 1}, {KEY_END, 1}, {KEY_END, 2}});
  EXPECT_EQ(run.wait(), 0) << run.out().text();
  const std::string& out = run.out().text();
  size_t first = out.find("host hotkey on " + kbd + ": shutting the guest down");
  EXPECT_NE(first, std::string::npos) << out;
  EXPECT_EQ(out.find("host hotkey on", first + 1), std::string::npos)
      << "only the held combination fires: " << out;
  EXPECT_NE(out.find("the guest shut down"), std::string::npos) << out;
  ::close(fd);
}

/// A uinput keyboard with every key of the main block; its fd and node.
std::pair<int, std::string> make_keyboard() {
  int fd = ::open("/dev/uinput", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return {-1, ""};
  ::ioctl(fd, UI_SET_EVBIT, EV_KEY);
  for (int k = 1; k < 256; ++k) ::ioctl(fd, UI_SET_KEYBIT, k);
  uinput_setup setup{};
  setup.id.bustype = BUS_VIRTUAL;
  std::snprintf(setup.name, sizeof setup.name, "passlaunch test keyboard");
  ::ioctl(fd, UI_DEV_SETUP, &setup);
  ::ioctl(fd, UI_DEV_CREATE);
  char sys[64] = {};
  ::ioctl(fd, UI_GET_SYSNAME(sizeof sys), sys);
  std::string node;
  std::string dir = std::string("/sys/devices/virtual/input/") + sys;
  for (int i = 0; i < 300 && (node.empty() || ::access(node.c_str(), R_OK) != 0); ++i) {
    if (DIR* d = ::opendir(dir.c_str())) {
      while (dirent* e = ::readdir(d)) {
        if (std::strncmp(e->d_name, "event", 5) == 0) node = std::string("/dev/input/") + e->d_name;
      }
      ::closedir(d);
    }
    std::this_thread::sleep_for(10ms);
  }
  return {fd, node};
}

/// True once nobody holds `node`'s grab (we can take it; released at once).
bool grab_free(const std::string& node) {
  int fd = ::open(node.c_str(), O_RDONLY | O_CLOEXEC);
  bool free = fd >= 0 && ::ioctl(fd, EVIOCGRAB, 1) == 0;
  if (fd >= 0) ::close(fd);
  return free;
}

// The real thing, where the kernel has uinput: QEMU reads the keyboard
// directly (input-linux, grabbed). While QEMU holds the grab passlaunch sees
// no key, so the hotkey typed then does nothing; after the grab toggle it
// shuts the guest down gracefully.
TEST(HostHotkeyQemu, UinputKeyboardUnderQemuGrabAfterTheToggle) {
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) GTEST_SKIP() << "the pin plan needs 2 CPUs";
  if (::access("/dev/uinput", W_OK) != 0) {
    GTEST_SKIP() << "no /dev/uinput (kernel without CONFIG_INPUT_UINPUT); the FIFO test above "
                    "covers the watcher";
  }
  auto [kbd, node] = make_keyboard();
  ASSERT_GE(kbd, 0);
  ASSERT_FALSE(node.empty());
  test::TempDir dir;
  std::string name = "hu" + std::to_string(::getpid());
  std::string path = dir.path(name + ".json");
  std::ofstream(path) << test::guest_profile(
      name, "normal",
      R"(, "input": {"evdev": [{"path": ")" + node +
          R"(", "grab_toggle": "scrolllock"}]}, "host_hotkey": {"keys": ["KEY_LEFTCTRL", "KEY_LEFTALT", "KEY_END"]})");
  test::Passlaunch run({"run", path}, dir.path());
  ASSERT_TRUE(run.out().wait_for("passlaunch-guest: ready")) << run.out().text();
  ASSERT_FALSE(grab_free(node)) << "QEMU holds the keyboard";
  // Typed while the guest has the keyboard: the guest's, not ours.
  type_keys(kbd, {{KEY_A, 1},
                  {KEY_A, 0},
                  {KEY_LEFTCTRL, 1},
                  {KEY_LEFTALT, 1},
                  {KEY_END, 1},
                  {KEY_END, 0},
                  {KEY_LEFTALT, 0},
                  {KEY_LEFTCTRL, 0}});
  // The toggle gives the keyboard back to the host; then the hotkey counts.
  type_keys(kbd, {{KEY_SCROLLLOCK, 1}, {KEY_SCROLLLOCK, 0}});
  bool released = false;
  for (int i = 0; i < 500 && !released; ++i) {
    released = grab_free(node);
    if (!released) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(released) << "QEMU let go of the keyboard after the grab toggle";
  type_keys(kbd, {{KEY_LEFTCTRL, 1}, {KEY_LEFTALT, 1}, {KEY_END, 1}});
  EXPECT_EQ(run.wait(), 0) << run.out().text();
  const std::string& out = run.out().text();
  size_t first = out.find("host hotkey on " + node + ": shutting the guest down");
  EXPECT_NE(first, std::string::npos) << out;
  EXPECT_EQ(out.find("host hotkey on", first + 1), std::string::npos)
      << "the combination typed under QEMU's grab was not seen: " << out;
  ::close(kbd);
}

}  // namespace
}  // namespace pl
