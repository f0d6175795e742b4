#include "net/tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/macvlan.h>
#include <netlink/route/link/macvtap.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <memory>
#include <thread>
#include <utility>

#include "core/error.h"

namespace pl {
namespace {

struct LinkPut {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct CacheFree {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
struct AddrPut {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
using LinkPtr = std::unique_ptr<rtnl_link, LinkPut>;
using AddrPtr = std::unique_ptr<nl_addr, AddrPut>;

/// A NETLINK_ROUTE socket in the calling thread's network namespace.
class Rtnl {
 public:
  Rtnl() : sock_(nl_socket_alloc()) {
    if (!sock_) throw Error(Exit::kEnvironment, "cannot allocate a netlink socket");
    if (int e = nl_connect(sock_, NETLINK_ROUTE); e < 0) {
      nl_socket_free(sock_);
      throw Error(Exit::kEnvironment, std::string("cannot open rtnetlink: ") + nl_geterror(e));
    }
  }
  ~Rtnl() { nl_socket_free(sock_); }
  Rtnl(const Rtnl&) = delete;
  nl_sock* get() const { return sock_; }

  /// The link named `name`, or null when there is none.
  LinkPtr link(const std::string& name) const {
    rtnl_link* l = nullptr;
    int e = rtnl_link_get_kernel(sock_, 0, name.c_str(), &l);
    if (e == -NLE_OBJ_NOTFOUND || e == -NLE_NODEV) return nullptr;
    if (e < 0) {
      throw Error(Exit::kEnvironment,
                  "cannot look up network interface " + name + ": " + nl_geterror(e));
    }
    return LinkPtr(l);
  }

 private:
  nl_sock* sock_;
};

std::string lower_case(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string mac_of(rtnl_link* l) {
  nl_addr* a = rtnl_link_get_addr(l);
  if (!a) return {};
  char buf[64];
  return lower_case(nl_addr2str(a, buf, sizeof buf));
}

std::string type_of(rtnl_link* l) {
  const char* t = rtnl_link_get_type(l);
  return t ? t : "";
}

AddrPtr parse_mac(const std::string& mac, const std::string& where) {
  nl_addr* a = nullptr;
  if (nl_addr_parse(mac.c_str(), AF_LLC, &a) < 0 || nl_addr_get_len(a) != 6) {
    if (a) nl_addr_put(a);
    throw Error(Exit::kUsage, where + "/mac: expected a MAC address, got \"" + mac + "\"");
  }
  return AddrPtr(a);
}

/// Deletes a link we created unless released: every failure after creation
/// leaves nothing behind.
class CreatedLink {
 public:
  explicit CreatedLink(std::string name) : name_(std::move(name)) {}
  ~CreatedLink() {
    if (name_.empty()) return;
    try {
      delete_link(name_);
    } catch (const Error&) {
      // Already failing: the first error is the one to report.
    }
  }
  void release() { name_.clear(); }

 private:
  std::string name_;
};

/// Closes an fd unless released.
class FdGuard {
 public:
  explicit FdGuard(int fd = -1) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdGuard(const FdGuard&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

void check_new_name(const Rtnl& rtnl, const std::string& ifname) {
  if (ifname.empty() || ifname.size() >= IFNAMSIZ) {
    throw Error(Exit::kUsage,
                "invalid network interface name \"" + ifname + "\" (1-15 characters)");
  }
  if (rtnl.link(ifname)) {
    throw Error(Exit::kHostDirty, "network interface " + ifname + " already exists",
                "left over from an earlier run? `passlaunch recover` removes it");
  }
}

/// /dev/vhost-net, or -1 when the host has none.
int open_vhost(const std::string& dev_root) {
  std::string path = dev_root + "/vhost-net";
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0 && errno != ENOENT && errno != ENODEV && errno != ENXIO) {
    throw system_error(Exit::kEnvironment, "cannot open", path, errno,
                       "is the vhost_net module loaded? remove /dev/vhost-net to run without it");
  }
  return fd;
}

/// Opens the macvtap's character device `dev` (major:minor). /dev/tapN is
/// used when it is that device. It can be missing (no udev, a /dev without
/// devtmpfs) or be another device: ifindexes are per network namespace, so
/// /dev/tapN may be a macvtap of another namespace. Then a private node is
/// made beside it, opened and unlinked at once, so nothing stays in /dev.
int open_tap_node(const std::string& dev_root, int ifindex, const std::string& dev) {
  unsigned maj = 0, min = 0;
  if (std::sscanf(dev.c_str(), "%u:%u", &maj, &min) != 2) {
    throw Error(Exit::kEnvironment, "unexpected device number \"" + dev + "\" of macvtap tap" +
                                        std::to_string(ifindex));
  }
  dev_t want = makedev(maj, min);
  auto is_ours = [&](int fd) {
    struct stat st;
    return ::fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == want;
  };
  std::string path = dev_root + "/tap" + std::to_string(ifindex);
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd >= 0 && is_ours(fd)) return fd;
  if (fd >= 0) ::close(fd);
  if (fd < 0 && errno != ENOENT && errno != ENXIO && errno != ENODEV) {
    throw system_error(Exit::kEnvironment, "cannot open", path, errno);
  }
  std::string priv =
      dev_root + "/.passlaunch-tap" + std::to_string(ifindex) + "-" + std::to_string(::getpid());
  ::unlink(priv.c_str());
  if (::mknod(priv.c_str(), S_IFCHR | 0600, want) != 0) {
    throw system_error(Exit::kEnvironment, "cannot create the device node", priv, errno,
                       path + " is missing or is another device");
  }
  fd = ::open(priv.c_str(), O_RDWR | O_CLOEXEC);
  int err = errno;
  ::unlink(priv.c_str());
  if (fd < 0) throw system_error(Exit::kEnvironment, "cannot open", priv, err);
  if (!is_ours(fd)) {
    ::close(fd);
    throw Error(Exit::kEnvironment, priv + " is not device " + dev);
  }
  return fd;
}

/// What libvirt's virNetDevMacVLanTapSetup does: make sure the tap carries a
/// virtio-net header when the kernel offers it. The header length and the
/// offloads are QEMU's to set (net/tap-linux.c resets both when it takes the
/// fd and again when the guest negotiates its features), as under libvirt.
void enable_vnet_header(int fd, const std::string& ifname) {
  ifreq ifr{};
  if (::ioctl(fd, TUNGETIFF, &ifr) != 0) {
    throw system_error(Exit::kEnvironment, "cannot read the tap flags of", ifname, errno);
  }
  if (ifr.ifr_flags & IFF_VNET_HDR) return;
  unsigned features = 0;
  if (::ioctl(fd, TUNGETFEATURES, &features) != 0) {
    throw system_error(Exit::kEnvironment, "cannot read the tap features of", ifname, errno);
  }
  if (!(features & IFF_VNET_HDR)) return;
  ifr.ifr_flags |= IFF_VNET_HDR;
  if (::ioctl(fd, TUNSETIFF, &ifr) != 0) {
    throw system_error(Exit::kEnvironment, "cannot enable the vnet header of", ifname, errno);
  }
}

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

std::string macvtap_dev_number(const std::string& ifname, int ifindex) {
  std::string rel = "/class/net/" + ifname + "/macvtap/tap" + std::to_string(ifindex) + "/dev";
  // A sysfs shows the network namespace of whoever mounted it, so mount one
  // for this read, in a mount namespace private to a short-lived thread (a
  // new thread shares the caller's network namespace). It vanishes with it.
  std::string out;
  bool mounted = false;
  std::thread reader([&] {
    if (::unshare(CLONE_NEWNS) != 0) return;
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return;
    if (::mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) !=
        0) {
      return;
    }
    mounted = true;
    out = read_line("/sys" + rel);
  });
  reader.join();
  // Without the right to mount, the host's /sys is the best there is (and is
  // right in the namespace it was mounted in).
  if (!mounted) out = read_line("/sys" + rel);
  return out;
}

TapDevice create_macvtap(const NetDevice& spec, const std::string& ifname, const std::string& where,
                         const std::string& dev_root) {
  Rtnl rtnl;
  // 1. The lower link: present and up.
  LinkPtr lower = rtnl.link(spec.link);
  if (!lower) {
    throw Error(Exit::kUsage, where + "/link: no network interface \"" + spec.link + "\"",
                "`ip link` lists the interfaces");
  }
  if (!(rtnl_link_get_flags(lower.get()) & IFF_UP)) {
    throw Error(Exit::kEnvironment, where + "/link: network interface " + spec.link + " is down",
                "bring it up: ip link set " + spec.link + " up");
  }
  int mode = rtnl_link_macvtap_str2mode(spec.mode.c_str());
  if (mode < 0) {
    throw Error(Exit::kUsage, where + "/mode: expected bridge, vepa, private or passthru, got \"" +
                                  spec.mode + "\"");
  }
  AddrPtr mac;
  if (!spec.mac.empty()) mac = parse_mac(spec.mac, where);
  std::string want_mac = lower_case(spec.mac);

  // 2. What already sits on the link: a passthru macvlan/macvtap takes the
  // link for itself; a MAC may be used once (the kernel's macvlan_addr_busy).
  nl_cache* raw = nullptr;
  if (int e = rtnl_link_alloc_cache(rtnl.get(), AF_UNSPEC, &raw); e < 0) {
    throw Error(Exit::kEnvironment,
                std::string("cannot list network interfaces: ") + nl_geterror(e));
  }
  std::unique_ptr<nl_cache, CacheFree> cache(raw);
  int lower_index = rtnl_link_get_ifindex(lower.get());
  bool passthru = mode == MACVLAN_MODE_PASSTHRU;
  if (!want_mac.empty() && !passthru && mac_of(lower.get()) == want_mac) {
    throw Error(Exit::kUsage,
                where + "/mac: " + spec.mac + " is the address of " + spec.link + " itself");
  }
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    auto* l = reinterpret_cast<rtnl_link*>(o);
    if (rtnl_link_get_link(l) != lower_index || rtnl_link_get_ifindex(l) == lower_index) continue;
    std::string type = type_of(l);
    if (type != "macvtap" && type != "macvlan") continue;
    std::string name = rtnl_link_get_name(l);
    uint32_t m = type == "macvtap" ? rtnl_link_macvtap_get_mode(l) : rtnl_link_macvlan_get_mode(l);
    if (m == MACVLAN_MODE_PASSTHRU) {
      throw Error(Exit::kEnvironment,
                  where + "/link: " + spec.link + " is already the lower device of " + type + " " +
                      name + " in passthru mode, which takes the link for itself",
                  "stop what uses " + name + " or choose another link");
    }
    if (passthru) {
      throw Error(Exit::kEnvironment,
                  where + "/mode: passthru needs " + spec.link + " for itself, but " + type + " " +
                      name + " is on it",
                  "use mode \"bridge\", or remove " + name);
    }
    if (!want_mac.empty() && mac_of(l) == want_mac) {
      throw Error(Exit::kUsage, where + "/mac: " + spec.mac + " is already used by " + type + " " +
                                    name + " on " + spec.link);
    }
  }
  check_new_name(rtnl, ifname);

  // 3. Create it, up, with the mode and MAC, in one request.
  LinkPtr link(rtnl_link_macvtap_alloc());
  if (!link) throw Error(Exit::kEnvironment, "cannot allocate a macvtap link");
  rtnl_link_set_name(link.get(), ifname.c_str());
  rtnl_link_set_link(link.get(), lower_index);
  rtnl_link_macvtap_set_mode(link.get(), static_cast<uint32_t>(mode));
  if (mac) rtnl_link_set_addr(link.get(), mac.get());
  rtnl_link_set_flags(link.get(), IFF_UP);
  if (int e = rtnl_link_add(rtnl.get(), link.get(), NLM_F_CREATE | NLM_F_EXCL); e < 0) {
    if (e == -NLE_EXIST) check_new_name(rtnl, ifname);
    throw Error(Exit::kEnvironment, where + ": cannot create macvtap " + ifname + " on " +
                                        spec.link + ": " + nl_geterror(e));
  }
  CreatedLink created(ifname);

  // 4. Read it back and open its character device.
  LinkPtr made = rtnl.link(ifname);
  if (!made) throw Error(Exit::kEnvironment, "macvtap " + ifname + " vanished after its creation");
  TapDevice tap;
  tap.ifname = ifname;
  tap.ifindex = rtnl_link_get_ifindex(made.get());
  tap.mac = mac_of(made.get());
  std::string dev = macvtap_dev_number(ifname, tap.ifindex);
  if (dev.empty()) {
    throw Error(Exit::kEnvironment, "macvtap " + ifname + " has no character device in sysfs");
  }
  FdGuard fd(open_tap_node(dev_root, tap.ifindex, dev));
  enable_vnet_header(fd.get(), ifname);
  tap.vhost_fd = open_vhost(dev_root);
  tap.tap_fd = fd.release();
  created.release();
  return tap;
}

TapDevice create_bridge_tap(const NetDevice& spec, const std::string& ifname,
                            const std::string& where, const std::string& dev_root) {
  Rtnl rtnl;
  LinkPtr bridge = rtnl.link(spec.bridge);
  if (!bridge) {
    throw Error(Exit::kUsage, where + "/bridge: no network interface \"" + spec.bridge + "\"",
                "create the bridge first (ip link add NAME type bridge)");
  }
  if (type_of(bridge.get()) != "bridge") {
    std::string t = type_of(bridge.get());
    throw Error(Exit::kUsage, where + "/bridge: " + spec.bridge + " is not a bridge (" +
                                  (t.empty() ? "a device" : "type " + t) + ")");
  }
  if (!(rtnl_link_get_flags(bridge.get()) & IFF_UP)) {
    throw Error(Exit::kEnvironment, where + "/bridge: bridge " + spec.bridge + " is down",
                "bring it up: ip link set " + spec.bridge + " up");
  }
  AddrPtr host_mac;
  if (!spec.mac.empty()) {
    // The host side of the tap: the guest's MAC with 0xfe first (libvirt's
    // rule): a bridge takes the lowest MAC of its ports as its own.
    host_mac = parse_mac(spec.mac, where);
    static_cast<unsigned char*>(nl_addr_get_binary_addr(host_mac.get()))[0] = 0xfe;
  }
  check_new_name(rtnl, ifname);

  std::string tun = dev_root + "/net/tun";
  FdGuard fd(::open(tun.c_str(), O_RDWR | O_CLOEXEC));
  if (fd.get() < 0) {
    throw system_error(Exit::kEnvironment, "cannot open", tun, errno, "is the tun module loaded?");
  }
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  ifname.copy(ifr.ifr_name, IFNAMSIZ - 1);
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
    throw system_error(Exit::kEnvironment, where + ": cannot create tap", ifname, errno);
  }
  // Not persistent: closing `fd` removes the tap, so FdGuard is the cleanup.
  LinkPtr made = rtnl.link(ifname);
  if (!made) throw Error(Exit::kEnvironment, "tap " + ifname + " vanished after its creation");
  LinkPtr change(rtnl_link_alloc());
  rtnl_link_set_master(change.get(), rtnl_link_get_ifindex(bridge.get()));
  rtnl_link_set_flags(change.get(), IFF_UP);
  if (host_mac) rtnl_link_set_addr(change.get(), host_mac.get());
  if (int e = rtnl_link_change(rtnl.get(), made.get(), change.get(), 0); e < 0) {
    throw Error(Exit::kEnvironment, where + ": cannot attach tap " + ifname + " to bridge " +
                                        spec.bridge + ": " + nl_geterror(e));
  }
  TapDevice tap;
  tap.ifname = ifname;
  tap.ifindex = rtnl_link_get_ifindex(made.get());
  tap.mac = lower_case(spec.mac);
  tap.vhost_fd = open_vhost(dev_root);
  tap.tap_fd = fd.release();
  return tap;
}

bool delete_link(const std::string& ifname) {
  Rtnl rtnl;
  LinkPtr link(rtnl_link_alloc());
  rtnl_link_set_name(link.get(), ifname.c_str());
  int e = rtnl_link_delete(rtnl.get(), link.get());
  if (e == -NLE_OBJ_NOTFOUND || e == -NLE_NODEV) return false;
  if (e < 0) {
    throw Error(Exit::kFailed, "cannot delete network interface " + ifname + ": " + nl_geterror(e));
  }
  return true;
}

void close_fds(TapDevice& tap) {
  for (int* fd : {&tap.tap_fd, &tap.vhost_fd}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
}

}  // namespace pl
