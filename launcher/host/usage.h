// Who uses a device: processes holding its /dev nodes (from /proc/PID/fd),
// and for block devices mounts, swap and stacked devices. Read-only; shared
// by the handover (which waits or refuses) and `check` (which reports).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "host/host_fs.h"
#include "host/pci.h"

namespace pl::host {

struct Holder {
  int pid = 0;
  std::string comm;
  std::string file;  ///< the open file, "/dev/snd/controlC1"
};

/// Processes with an open file for which `match(target)` holds.
std::vector<Holder> processes_holding(const HostFs& fs,
                                      const std::function<bool(const std::string&)>& match);
/// "PID 1200 (Xorg) holds /dev/nvidia0, PID ..."
std::string describe_holders(const std::vector<Holder>& holders);

/// The GPUs' device files: /dev/nvidia* for NVIDIA, and the DRM nodes listed
/// under each device's drm/ directory (/dev/dri/card0, renderD128).
std::function<bool(const std::string&)> gpu_files(const HostFs& fs,
                                                  const std::vector<PciDevice>& devices);

/// The ALSA nodes of the sound cards of `address` (/sys/bus/pci/devices/A/sound/cardN/*):
/// /dev/snd/controlC1, pcmC1D3p, hwC1D0. Unbinding the sound driver waits,
/// uninterruptibly, until every one of them is closed (snd_card_disconnect_sync,
/// sound/core/init.c).
std::vector<std::string> sound_nodes(const HostFs& fs, const std::string& address);

/// Why the block devices below PCI device `address` must not be taken from
/// the host, one reason each, naming the partition and its user:
///   "nvme0n1p2 is mounted on /home", "nvme0n1p3 is in use as swap",
///   "nvme0n1p1 is held by dm-0 (vg-root)", "PID 880 (smartd) holds /dev/nvme0n1".
/// Empty: no partition is in use (unbinding it destroys nothing).
std::vector<std::string> block_device_users(const HostFs& fs, const std::string& address);

}  // namespace pl::host
