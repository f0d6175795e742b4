// Macvtap and bridge taps, created for real in a network namespace that each
// test makes for itself (a thread that unshares CLONE_NEWNET), with a veth
// pair pl-veth0/pl-veth1 inside. The namespace has no name and no mount: it
// vanishes with the thread and the processes it started, even when a test
// fails, and nothing is created in the host's namespace.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/macvtap.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <thread>

#include "core/error.h"
#include "net/tap.h"
#include "profile/argv.h"
#include "run/spawn.h"
#include "test_util.h"

namespace pl {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// Runs `body` on a thread in a fresh network namespace holding the veth pair
/// pl-veth0 <-> pl-veth1, both up. Exceptions and failed assertions reach the test.
void in_netns(const std::function<void()>& body) {
  std::exception_ptr error;
  std::thread t([&] {
    try {
      if (::unshare(CLONE_NEWNET) != 0) {
        ADD_FAILURE() << "unshare(CLONE_NEWNET): " << std::strerror(errno);
        return;
      }
      ASSERT_EQ(test::run_command({"ip", "link", "set", "lo", "up"}), 0);
      ASSERT_EQ(test::run_command(
                    {"ip", "link", "add", "pl-veth0", "type", "veth", "peer", "name", "pl-veth1"}),
                0);
      ASSERT_EQ(test::run_command({"ip", "link", "set", "pl-veth0", "up"}), 0);
      ASSERT_EQ(test::run_command({"ip", "link", "set", "pl-veth1", "up"}), 0);
      body();
    } catch (...) {
      error = std::current_exception();
    }
  });
  t.join();
  if (error) std::rethrow_exception(error);
}

/// The interfaces of the calling thread's namespace, by name.
std::set<std::string> link_names() {
  std::set<std::string> names;
  if (struct if_nameindex* list = ::if_nameindex()) {
    for (struct if_nameindex* i = list; i->if_index; ++i) names.insert(i->if_name);
    ::if_freenameindex(list);
  }
  return names;
}

const std::set<std::string> kPairOnly = {"lo", "pl-veth0", "pl-veth1"};

/// What the kernel says about one link, read back over rtnetlink.
struct LinkInfo {
  std::string type, mac;
  int ifindex = 0, lower = 0, master = 0;
  unsigned flags = 0;
  uint32_t macvtap_mode = 0;
  uint64_t rx_packets = 0;
};

std::optional<LinkInfo> read_link(const std::string& name) {
  nl_sock* sock = nl_socket_alloc();
  nl_connect(sock, NETLINK_ROUTE);
  rtnl_link* l = nullptr;
  int e = rtnl_link_get_kernel(sock, 0, name.c_str(), &l);
  nl_socket_free(sock);
  if (e < 0) return std::nullopt;
  LinkInfo info;
  if (const char* t = rtnl_link_get_type(l)) info.type = t;
  char buf[64];
  if (nl_addr* a = rtnl_link_get_addr(l)) info.mac = nl_addr2str(a, buf, sizeof buf);
  info.ifindex = rtnl_link_get_ifindex(l);
  info.lower = rtnl_link_get_link(l);
  info.master = rtnl_link_get_master(l);
  info.flags = rtnl_link_get_flags(l);
  if (info.type == "macvtap") info.macvtap_mode = rtnl_link_macvtap_get_mode(l);
  info.rx_packets = rtnl_link_get_stat(l, RTNL_LINK_RX_PACKETS);
  rtnl_link_put(l);
  return info;
}

NetDevice macvtap(const std::string& mode, const std::string& mac) {
  NetDevice n;
  n.type = NetDevice::Type::kMacvtap;
  n.link = "pl-veth0";
  n.mode = mode;
  n.mac = mac;
  return n;
}

const std::string kWhere = "test.json: /network/0";

/// Runs `f`, which must throw pl::Error; returns it.
template <class F>
Error error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no error";
  return Error(Exit::kOk, "");
}

dev_t rdev_of(int fd) {
  struct stat st {};
  ::fstat(fd, &st);
  return S_ISCHR(st.st_mode) ? st.st_rdev : 0;
}

dev_t parse_dev(const std::string& text) {
  unsigned maj = 0, min = 0;
  if (std::sscanf(text.c_str(), "%u:%u", &maj, &min) != 2) return 0;
  return makedev(maj, min);
}

TEST(Net, MacvtapAppearsOnTheLinkWithTheProfilesMacAndMode) {
  in_netns([] {
    auto veth = read_link("pl-veth0");
    ASSERT_TRUE(veth);
    TapDevice tap = create_macvtap(macvtap("bridge", "52:54:00:A3:D3:F5"), "pl-demo-0", kWhere);
    auto got = read_link("pl-demo-0");
    ASSERT_TRUE(got);
    EXPECT_EQ(got->type, "macvtap");
    EXPECT_EQ(got->lower, veth->ifindex);
    EXPECT_EQ(got->macvtap_mode, static_cast<uint32_t>(MACVLAN_MODE_BRIDGE));
    EXPECT_EQ(got->mac, "52:54:00:a3:d3:f5");
    EXPECT_TRUE(got->flags & IFF_UP);
    EXPECT_EQ(tap.ifname, "pl-demo-0");
    EXPECT_EQ(tap.ifindex, got->ifindex);
    EXPECT_EQ(tap.mac, "52:54:00:a3:d3:f5");
    // The fd is the macvtap's own character device (checked by number: the
    // host's /dev/tapN may belong to another namespace), close-on-exec, with
    // the virtio-net header on.
    ASSERT_GE(tap.tap_fd, 0);
    std::string dev = macvtap_dev_number("pl-demo-0", tap.ifindex);
    ASSERT_FALSE(dev.empty());
    EXPECT_EQ(rdev_of(tap.tap_fd), parse_dev(dev));
    EXPECT_TRUE(::fcntl(tap.tap_fd, F_GETFD) & FD_CLOEXEC);
    ifreq ifr{};
    ASSERT_EQ(::ioctl(tap.tap_fd, TUNGETIFF, &ifr), 0);
    EXPECT_TRUE(ifr.ifr_flags & IFF_VNET_HDR);
    EXPECT_EQ(tap.vhost_fd >= 0, std::filesystem::exists("/dev/vhost-net"));
    if (tap.vhost_fd >= 0) {
      EXPECT_TRUE(::fcntl(tap.vhost_fd, F_GETFD) & FD_CLOEXEC);
    }

    close_fds(tap);
    EXPECT_EQ(tap.tap_fd, -1);
    EXPECT_TRUE(delete_link("pl-demo-0"));
    EXPECT_FALSE(delete_link("pl-demo-0")) << "deleting twice is not an error";
    EXPECT_EQ(link_names(), kPairOnly);
  });
  EXPECT_EQ(::if_nametoindex("pl-demo-0"), 0u) << "nothing in the host's namespace";
  EXPECT_EQ(::if_nametoindex("pl-veth0"), 0u);
}

TEST(Net, EveryModeIsSetAsAsked) {
  in_netns([] {
    for (auto [mode, want] :
         {std::pair{"vepa", MACVLAN_MODE_VEPA}, std::pair{"private", MACVLAN_MODE_PRIVATE},
          std::pair{"passthru", MACVLAN_MODE_PASSTHRU}}) {
      TapDevice tap = create_macvtap(macvtap(mode, ""), "pl-m", kWhere);
      auto got = read_link("pl-m");
      ASSERT_TRUE(got);
      EXPECT_EQ(got->macvtap_mode, static_cast<uint32_t>(want)) << mode;
      EXPECT_EQ(tap.mac, got->mac) << "a random MAC is reported for QEMU's NIC";
      close_fds(tap);
      EXPECT_TRUE(delete_link("pl-m"));
    }
    EXPECT_EQ(link_names(), kPairOnly);
  });
}

// Without /dev/tapN (no udev), a private node is made, opened and unlinked.
TEST(Net, MissingTapNodeIsMadeAndLeavesNothingInDev) {
  in_netns([] {
    test::TempDir dev;
    TapDevice tap =
        create_macvtap(macvtap("bridge", "52:54:00:00:00:01"), "pl-t0", kWhere, dev.path());
    ASSERT_GE(tap.tap_fd, 0);
    EXPECT_EQ(rdev_of(tap.tap_fd), parse_dev(macvtap_dev_number("pl-t0", tap.ifindex)));
    EXPECT_EQ(tap.vhost_fd, -1) << "no vhost-net under " << dev.path();
    EXPECT_TRUE(std::filesystem::is_empty(dev.path()));
    close_fds(tap);
    EXPECT_TRUE(delete_link("pl-t0"));
  });
}

// ifindexes are per namespace: /dev/tapN can be another namespace's macvtap
// (here: every tapN is /dev/null's number). It must not be the one opened.
TEST(Net, TapNodeOfAnotherDeviceIsNotUsed) {
  in_netns([] {
    test::TempDir dev;
    for (int i = 1; i < 64; ++i) {
      std::string node = dev.path() + "/tap" + std::to_string(i);
      ASSERT_EQ(::mknod(node.c_str(), S_IFCHR | 0600, makedev(1, 3)), 0) << std::strerror(errno);
    }
    TapDevice tap = create_macvtap(macvtap("bridge", ""), "pl-t0", kWhere, dev.path());
    EXPECT_EQ(rdev_of(tap.tap_fd), parse_dev(macvtap_dev_number("pl-t0", tap.ifindex)));
    EXPECT_NE(rdev_of(tap.tap_fd), makedev(1, 3));
    size_t entries = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dev.path()))
      ++entries;
    EXPECT_EQ(entries, 63u) << "the private node is gone";
    close_fds(tap);
    EXPECT_TRUE(delete_link("pl-t0"));
  });
}

// Not a timing test: prints what one create + delete costs, for the record.
TEST(Net, MeasureCreateAndDelete) {
  in_netns([] {
    constexpr int kRounds = 20;
    auto start = Clock::now();
    for (int i = 0; i < kRounds; ++i) {
      TapDevice tap = create_macvtap(macvtap("bridge", ""), "pl-t0", kWhere);
      close_fds(tap);
      ASSERT_TRUE(delete_link("pl-t0"));
    }
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
    std::printf("[ measure  ] create_macvtap + delete_link: %lld us per round (%d rounds)\n",
                static_cast<long long>(us / kRounds), kRounds);
  });
}

TEST(Net, MissingLinkIsAUsageErrorNamingTheField) {
  in_netns([] {
    NetDevice n = macvtap("bridge", "52:54:00:00:00:02");
    n.link = "pl-nope";
    Error e = error_of([&] { create_macvtap(n, "pl-t0", kWhere); });
    EXPECT_EQ(e.code(), Exit::kUsage);
    EXPECT_STREQ(e.what(), "test.json: /network/0/link: no network interface \"pl-nope\"");
    EXPECT_EQ(link_names(), kPairOnly);
  });
}

TEST(Net, LinkDownIsAnEnvironmentError) {
  in_netns([] {
    ASSERT_EQ(test::run_command({"ip", "link", "set", "pl-veth0", "down"}), 0);
    Error e = error_of([] { create_macvtap(macvtap("bridge", ""), "pl-t0", kWhere); });
    EXPECT_EQ(e.code(), Exit::kEnvironment);
    EXPECT_STREQ(e.what(), "test.json: /network/0/link: network interface pl-veth0 is down");
    EXPECT_EQ(e.hint(), "bring it up: ip link set pl-veth0 up");
    EXPECT_EQ(link_names(), kPairOnly);
  });
}

TEST(Net, LinkThatIsAPassthruLowerIsRefused) {
  in_netns([] {
    TapDevice pt = create_macvtap(macvtap("passthru", ""), "pl-pt", kWhere);
    Error e = error_of([] { create_macvtap(macvtap("bridge", ""), "pl-t0", kWhere); });
    EXPECT_EQ(e.code(), Exit::kEnvironment);
    EXPECT_STREQ(e.what(),
                 "test.json: /network/0/link: pl-veth0 is already the lower device of "
                 "macvtap pl-pt in passthru mode, which takes the link for itself");
    EXPECT_EQ(link_names(), (std::set<std::string>{"lo", "pl-veth0", "pl-veth1", "pl-pt"}));
    close_fds(pt);
    EXPECT_TRUE(delete_link("pl-pt"));
  });
}

TEST(Net, PassthruOnALinkThatHasMacvtapsIsRefused) {
  in_netns([] {
    TapDevice br = create_macvtap(macvtap("bridge", ""), "pl-br", kWhere);
    Error e = error_of([] { create_macvtap(macvtap("passthru", ""), "pl-t0", kWhere); });
    EXPECT_EQ(e.code(), Exit::kEnvironment);
    EXPECT_STREQ(e.what(),
                 "test.json: /network/0/mode: passthru needs pl-veth0 for itself, but "
                 "macvtap pl-br is on it");
    EXPECT_EQ(link_names(), (std::set<std::string>{"lo", "pl-veth0", "pl-veth1", "pl-br"}));
    close_fds(br);
    EXPECT_TRUE(delete_link("pl-br"));
  });
}

TEST(Net, DuplicateMacIsAUsageError) {
  in_netns([] {
    TapDevice first = create_macvtap(macvtap("bridge", "52:54:00:00:00:03"), "pl-a", kWhere);
    Error e =
        error_of([] { create_macvtap(macvtap("vepa", "52:54:00:00:00:03"), "pl-b", kWhere); });
    EXPECT_EQ(e.code(), Exit::kUsage);
    EXPECT_STREQ(e.what(),
                 "test.json: /network/0/mac: 52:54:00:00:00:03 is already used by "
                 "macvtap pl-a on pl-veth0");
    // The link's own address is taken as well.
    std::string own = read_link("pl-veth0")->mac;
    e = error_of([&] { create_macvtap(macvtap("bridge", own), "pl-b", kWhere); });
    EXPECT_EQ(e.code(), Exit::kUsage);
    EXPECT_EQ(std::string(e.what()),
              "test.json: /network/0/mac: " + own + " is the address of pl-veth0 itself");
    EXPECT_EQ(link_names(), (std::set<std::string>{"lo", "pl-veth0", "pl-veth1", "pl-a"}));
    close_fds(first);
    EXPECT_TRUE(delete_link("pl-a"));
  });
}

size_t open_fds() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// A failure after the macvtap exists (here: its device node cannot be made)
// deletes it and closes everything: nothing is left behind.
TEST(Net, FailureAfterCreationDeletesTheMacvtap) {
  in_netns([] {
    size_t fds = open_fds();
    Error e = error_of([] {
      create_macvtap(macvtap("bridge", "52:54:00:00:00:06"), "pl-t0", kWhere, "/nonexistent");
    });
    EXPECT_EQ(e.code(), Exit::kEnvironment);
    EXPECT_NE(std::string(e.what()).find("cannot create the device node /nonexistent/"),
              std::string::npos)
        << e.what();
    EXPECT_EQ(link_names(), kPairOnly);
    EXPECT_EQ(open_fds(), fds);
  });
}

TEST(Net, ExistingNameIsAHostDirtyErrorAndIsNotDeleted) {
  in_netns([] {
    Error e = error_of([] { create_macvtap(macvtap("bridge", ""), "pl-veth1", kWhere); });
    EXPECT_EQ(e.code(), Exit::kHostDirty);
    EXPECT_STREQ(e.what(), "network interface pl-veth1 already exists");
    EXPECT_EQ(link_names(), kPairOnly);
  });
}

// After the launcher is killed the macvtap stays (unlike a tap, it does not
// die with its fds): delete_link, as `passlaunch recover` calls it, removes it.
TEST(Net, MacvtapLeftByAKilledLauncherIsRemovedByDeleteLink) {
  in_netns([] {
    auto [rd, wr] = make_pipe();
    pid_t pid = ::fork();
    if (pid == 0) {
      try {
        create_macvtap(macvtap("bridge", "52:54:00:00:00:04"), "pl-left", kWhere);
        (void)!::write(wr, "k", 1);
      } catch (...) {
        (void)!::write(wr, "e", 1);
      }
      ::pause();
      ::_exit(0);
    }
    ::close(wr);
    char c = 0;
    ASSERT_EQ(::read(rd, &c, 1), 1);
    ::close(rd);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ASSERT_EQ(c, 'k');
    EXPECT_TRUE(read_link("pl-left")) << "the macvtap outlives its creator";
    EXPECT_TRUE(delete_link("pl-left"));
    EXPECT_EQ(link_names(), kPairOnly);
  });
}

TEST(Net, BridgeTapIsAttachedUpAndGoesWithItsFd) {
  in_netns([] {
    ASSERT_EQ(test::run_command({"ip", "link", "add", "pl-bridge", "type", "bridge"}), 0);
    ASSERT_EQ(test::run_command({"ip", "link", "set", "pl-bridge", "up"}), 0);
    NetDevice n;
    n.type = NetDevice::Type::kBridge;
    n.bridge = "pl-bridge";
    n.mac = "52:54:00:00:00:05";
    TapDevice tap = create_bridge_tap(n, "pl-tap0", kWhere);
    auto got = read_link("pl-tap0");
    auto bridge = read_link("pl-bridge");
    ASSERT_TRUE(got && bridge);
    EXPECT_EQ(got->type, "tun");
    EXPECT_EQ(got->master, bridge->ifindex);
    EXPECT_TRUE(got->flags & IFF_UP);
    EXPECT_EQ(got->mac, "fe:54:00:00:00:05");
    EXPECT_EQ(tap.mac, "52:54:00:00:00:05");
    EXPECT_TRUE(::fcntl(tap.tap_fd, F_GETFD) & FD_CLOEXEC);
    ifreq ifr{};
    ASSERT_EQ(::ioctl(tap.tap_fd, TUNGETIFF, &ifr), 0);
    EXPECT_EQ(ifr.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR),
              IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    close_fds(tap);
    EXPECT_FALSE(read_link("pl-tap0")) << "a tap that is not persistent goes with its fd";
    EXPECT_FALSE(delete_link("pl-tap0"));

    n.bridge = "pl-veth0";
    Error e = error_of([&] { create_bridge_tap(n, "pl-tap0", kWhere); });
    EXPECT_EQ(e.code(), Exit::kUsage);
    EXPECT_STREQ(e.what(), "test.json: /network/0/bridge: pl-veth0 is not a bridge (type veth)");
    n.bridge = "pl-nobridge";
    e = error_of([&] { create_bridge_tap(n, "pl-tap0", kWhere); });
    EXPECT_EQ(e.code(), Exit::kUsage);
    EXPECT_EQ(link_names(), (std::set<std::string>{"lo", "pl-veth0", "pl-veth1", "pl-bridge"}));
  });
}

/// An AF_PACKET socket on `ifname` that counts ARP frames sent from `mac`.
class ArpCounter {
 public:
  explicit ArpCounter(const std::string& ifname) {
    fd_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP));
    sockaddr_ll addr{};
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = htons(ETH_P_ARP);
    addr.sll_ifindex = static_cast<int>(::if_nametoindex(ifname.c_str()));
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ADD_FAILURE() << "AF_PACKET on " << ifname << ": " << std::strerror(errno);
    }
  }
  ~ArpCounter() {
    if (fd_ >= 0) ::close(fd_);
  }
  /// Waits until `want` frames from `mac` arrived or `timeout` passed.
  int count(const unsigned char mac[6], int want, Clock::duration timeout) {
    auto deadline = Clock::now() + timeout;
    int n = 0;
    while (n < want && Clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (::poll(&p, 1, static_cast<int>(std::max<long>(left.count(), 0))) <= 0) continue;
      unsigned char frame[2048];
      ssize_t got = ::recv(fd_, frame, sizeof frame, 0);
      if (got >= 14 && std::memcmp(frame + 6, mac, 6) == 0) ++n;
    }
    return n;
  }

 private:
  int fd_ = -1;
};

// The whole path with real QEMU (TCG) in the namespace, from the bundled
// profile profiles/demo-macvtap.json: build_qemu_argv gets the macvtap's fd as
// fd 4; QEMU holds /dev/tapN; the guest's NIC carries the profile's MAC; its
// frames leave through pl-veth0 and arrive on pl-veth1; after the guest's
// graceful power-off the macvtap remains until delete_link.
TEST(NetQemu, DemoMacvtapGuestFramesLeaveThroughTheMacvtap) {
  Profile p = load_profile(std::string(PL_SOURCE_DIR) + "/profiles/demo-macvtap.json",
                           ProfileChecks{.files = false});
  p.kernel->kernel = test::guest_kernel();
  p.kernel->initrd = test::guest_initrd("normal");
  ASSERT_EQ(p.network.size(), 1u);
  const NetDevice& net = p.network[0];
  in_netns([&] {
    const unsigned char mac_bytes[6] = {0x52, 0x54, 0x00, 0xa3, 0xd3, 0xf5};
    ASSERT_EQ(net.mac, "52:54:00:a3:d3:f5");
    TapDevice tap = create_macvtap(net, "pl-demo-0", p.file + ": /network/0");
    dev_t tap_dev = parse_dev(macvtap_dev_number("pl-demo-0", tap.ifindex));
    ArpCounter counter("pl-veth1");

    test::TempDir dir;
    HostFacts facts;
    facts.runtime_dir = dir.path();
    facts.accel = Accel::kTcg;
    facts.qmp_fd = 3;  // QMP: a listening socket QEMU inherits (the launcher's way)
    facts.net_fds = {{4, tap.vhost_fd >= 0 ? 5 : -1}};
    test::Qemu::Options options{.fds = {{tap.tap_fd, 4}}, .serial = true};
    if (tap.vhost_fd >= 0) options.fds.push_back({tap.vhost_fd, 5});
    {
      test::Qemu qemu(build_qemu_argv(p, facts), options);
      close_fds(tap);  // QEMU holds them now

      struct stat st {};
      std::string fd4 = "/proc/" + std::to_string(qemu.pid()) + "/fd/4";
      EXPECT_EQ(::stat(fd4.c_str(), &st), 0);
      EXPECT_EQ(st.st_rdev, tap_dev) << fd4 << " is the macvtap's character device";

      // The guest starts paused (-S): continue it over QMP.
      EXPECT_EQ(qemu.qmp(R"({"execute": "cont"})"), R"({"return":{}})");

      bool nic = qemu.wait_for_line("passlaunch-guest: net eth0 " + net.mac, 120s).has_value();
      EXPECT_TRUE(nic) << qemu.transcript();
      bool ready = nic && qemu.wait_for_line("passlaunch-guest: ready", 120s).has_value();
      EXPECT_TRUE(ready) << qemu.transcript();
      uint64_t rx_before = read_link("pl-veth1").value().rx_packets;
      // About one ARP probe a second; 3 within 60 s leaves room for a slow TCG guest.
      if (ready) {
        EXPECT_EQ(counter.count(mac_bytes, 3, 60s), 3);
      }
      EXPECT_GE(read_link("pl-veth1").value().rx_packets, rx_before + (ready ? 3 : 0));

      // Graceful end: the power button; the guest powers off and QEMU exits 0.
      EXPECT_EQ(qemu.qmp(R"({"execute": "system_powerdown"})"), R"({"return":{}})");
      auto status = qemu.wait_exit(120s);
      if (!status) {
        ADD_FAILURE() << "QEMU still runs 120 s after system_powerdown";
      } else {
        EXPECT_EQ(describe_wait_status(*status), "exited with status 0") << qemu.transcript();
      }
    }  // killed if still running, and reaped
    EXPECT_TRUE(read_link("pl-demo-0")) << "a macvtap outlives QEMU";
    EXPECT_TRUE(delete_link("pl-demo-0"));
    EXPECT_EQ(link_names(), kPairOnly);
  });
}

}  // namespace
}  // namespace pl
