// `passlaunch check`: is this host ready for single-GPU passthrough of these
// devices? Read-only; every path under the HostFs root.
#pragma once

#include <string>
#include <vector>

#include "host/host_fs.h"

namespace pl::host {

struct CheckLine {
  enum Level { kPass, kWarn, kFail } level = kPass;
  std::string what;  ///< "IOMMU active (dmar0)"
  std::string fix;   ///< how to fix a warning or failure
};

struct CheckOptions {
  std::vector<std::string> devices;  ///< PCI addresses the VM will take (may be empty)
  std::string qemu = "qemu-system-x86_64";
  /// Firmware files the VM needs; empty: look for any OVMF code image.
  std::vector<std::string> firmware;
};

std::vector<CheckLine> check_host(const HostFs& fs, const CheckOptions& options);

/// "pass  what" / "warn  what\n      fix: ..." / "FAIL  what\n      fix: ...".
std::string format_check(const std::vector<CheckLine>& lines);

}  // namespace pl::host
