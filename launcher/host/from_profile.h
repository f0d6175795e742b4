// The bridge from a profile's "host" section and devices to the handover's
// plain settings. The rest of the host library knows nothing of profiles.
#pragma once

#include "host/handover.h"
#include "host/host_fs.h"
#include "profile/profile.h"

namespace pl::host {

/// Handover settings for `profile` on this host: every device of the profile
/// (attached or not), the host section, and for `isolate_cpus` the online
/// CPUs (/sys/devices/system/cpu/online) that no vCPU is pinned to. Throws
/// pl::Error (exit 2) naming the profile field when the settings cannot work.
HandoverConfig handover_config(const Profile& profile, const HostFs& fs);

}  // namespace pl::host
