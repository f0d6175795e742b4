// The host's files seen through one movable root, the seam between passlaunch
// and sysfs/procfs. On a real host the root is "/"; tests and `--host-root`
// point it at a directory laid out like sysfs. Paths given to HostFs are
// host-absolute ("/sys/bus/pci/devices"), never prefixed by the caller.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pl::host {

class HostFs {
 public:
  /// `root` is the directory that stands for "/" ("" or "/" for the real host).
  explicit HostFs(std::string root);
  virtual ~HostFs() = default;

  const std::string& root() const { return root_; }
  /// The path on this machine for a host-absolute path.
  std::string real(std::string_view host_path) const;

  /// Whole contents of a file; nullopt when it does not exist (ENOENT, ENOTDIR,
  /// ENODEV). Other errors throw pl::Error.
  std::optional<std::string> read(const std::string& path) const;
  /// Like read() but trimmed of surrounding whitespace.
  std::optional<std::string> read_trimmed(const std::string& path) const;
  /// Sorted entry names of a directory ("." and ".." left out); empty when missing.
  std::vector<std::string> list(const std::string& dir) const;
  /// Target of a symbolic link, nullopt when the path is not a link.
  std::optional<std::string> readlink(const std::string& path) const;
  bool exists(const std::string& path) const;

  /// Writes `data` to an existing file (a sysfs attribute) in one write(2).
  /// Returns 0 or the errno of the failure. Virtual: the simulated host applies
  /// the kernel's rules here.
  virtual int write(const std::string& path, std::string_view data);

 private:
  std::string root_;
};

/// Last path component of a link target or path: "../../bus/pci/drivers/nvidia" -> "nvidia".
std::string basename(std::string_view path);

}  // namespace pl::host
