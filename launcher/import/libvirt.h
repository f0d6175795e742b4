// `passlaunch import libvirt`: a libvirt domain (as `virsh dumpxml` prints
// it, or as kept in dotfiles) becomes a commented profile and a report that
// lists every element and attribute of the input exactly once: carried over,
// carried over differently (what and why) or dropped (why).
#pragma once

#include <string>
#include <string_view>

#include "host/host_fs.h"
#include "import/profile_writer.h"
#include "import/report.h"

namespace pl::import {

struct ImportOptions {
  std::string name;                    ///< overrides <name> when not empty
  const host::HostFs* host = nullptr;  ///< firmware descriptors, networks, host settings
};

struct ImportResult {
  CommentedProfile profile;
  Report report;
};

/// Maps a domain. Throws pl::Error (Exit::kUsage) with "FILE:LINE:COL: ..."
/// for malformed XML, a root that is not <domain>, a non-x86 or non-QEMU
/// domain, bad numbers, duplicate or out-of-range <vcpupin>s (every such
/// problem at once).
ImportResult import_libvirt(std::string_view xml, const std::string& file,
                            const ImportOptions& options);

}  // namespace pl::import
