// Tap devices for the guest's network without libvirt: a macvtap on a host
// link (the seed's <interface type='direct'>) or a tap on an existing bridge,
// created over rtnetlink with libnl-route-3, opened, and handed to QEMU as
// inherited fds (`-netdev tap,fd=N[,vhost=on,vhostfd=M]`). See docs/net.md.
//
// Everything works in the network namespace of the calling thread: tests run
// these functions in a namespace of their own.
#pragma once

#include <string>

#include "profile/profile.h"

namespace pl {

/// A tap device that was created and opened. The fds are close-on-exec: the
/// spawner maps them into QEMU. The interface lives until delete_link() (a
/// macvtap) or until its last fd is closed (a bridge tap, not persistent).
struct TapDevice {
  std::string ifname;
  int ifindex = -1;
  int tap_fd = -1;    ///< /dev/tapN (macvtap) or /dev/net/tun bound to ifname (bridge)
  int vhost_fd = -1;  ///< /dev/vhost-net; -1 when the host has none
  /// The MAC the guest's NIC must use (lower case). For a macvtap it is the
  /// macvtap's own address: the kernel delivers to it only frames sent to
  /// that MAC, so when the profile gives none, pass this one to QEMU.
  std::string mac;
};

/// Creates a macvtap named `ifname` (at most 15 characters) on `spec.link` with
/// `spec.mode` and `spec.mac` (random when empty), brings it up, opens its
/// character device /dev/tapN (N = ifindex; a private node is made under
/// `dev_root` when /dev/tapN is missing or belongs to another namespace's
/// device), makes sure it carries virtio-net headers (IFF_VNET_HDR, as
/// libvirt's virNetDevMacVLanTapSetup) and opens `dev_root`/vhost-net if it
/// exists. `where` names the profile entry in messages, e.g.
/// "profiles/demo.json: /network/0".
///
/// Before creating anything it checks that the link exists, is up, is not the
/// lower device of a passthru macvlan/macvtap (and, for passthru, has none at
/// all), and that no interface on the link already uses the MAC. Throws
/// pl::Error — kUsage (the profile names a missing link or a MAC in use),
/// kEnvironment (link down or busy, kernel refused), kHostDirty (`ifname`
/// exists already: left over from a run that was killed) — after deleting
/// whatever it created: nothing is left behind.
TapDevice create_macvtap(const NetDevice& spec, const std::string& ifname, const std::string& where,
                         const std::string& dev_root = "/dev");

/// Creates a tap named `ifname` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, not
/// persistent: it vanishes with its last fd), gives it the guest's MAC with
/// the first byte set to 0xfe (as libvirt does, so that the bridge never
/// takes the guest's address as its own), attaches it to the existing bridge
/// `spec.bridge` and brings it up. Errors as create_macvtap().
TapDevice create_bridge_tap(const NetDevice& spec, const std::string& ifname,
                            const std::string& where, const std::string& dev_root = "/dev");

/// Deletes the interface `ifname` over rtnetlink. Idempotent: returns false
/// when there was none, true when it was deleted. For releasing a VM's
/// network and for `passlaunch recover` (the inverse of a journal entry).
/// Throws pl::Error(kFailed) when the kernel refuses.
bool delete_link(const std::string& ifname);

/// Closes the fds of `tap` that are still open (sets them to -1).
void close_fds(TapDevice& tap);

/// The major:minor of a macvtap's character device, read from the sysfs of
/// the calling thread's network namespace (a sysfs mounted privately for the
/// read: the host's /sys shows the namespace it was mounted in). Empty when
/// `ifname` is not a macvtap there.
std::string macvtap_dev_number(const std::string& ifname, int ifindex);

}  // namespace pl
