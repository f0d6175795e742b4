// The crash-safe record of host changes: before each change, its inverse is
// appended to /var/lib/passlaunch/NAME/journal (under the host root) and
// synced, so whatever kills the launcher, `passlaunch recover` can undo it.
//
// Format: JSON Lines. Line 1 is a header
//   {"passlaunch_journal":1,"vm":"win11","boot_id":"...","pid":123,"devices":["0000:01:00.0"]}
// and every further line one inverse, e.g.
//   {"seq":1,"step":"display","undo":"start_unit","unit":"display-manager.service"}
// A torn last line (the process died inside write(2)) is ignored: its change
// was never made, because the inverse is written first.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "host/host_fs.h"

namespace pl::host {

class Journal {
 public:
  /// "/var/lib/passlaunch/NAME" (host path), or "$PASSLAUNCH_STATE_DIR/NAME".
  static std::string dir_for(const std::string& vm);
  /// Names of the VMs that have a journal under this host root.
  static std::vector<std::string> list(const HostFs& fs);
  /// The current boot id (/proc/sys/kernel/random/boot_id), "" when unreadable.
  static std::string boot_id(const HostFs& fs);

  /// Opens an existing journal; nullopt when there is none. Throws on a corrupt one.
  static std::optional<Journal> open(const HostFs& fs, const std::string& vm);
  /// Creates a new journal (fails if one exists) and syncs it and its directory.
  static Journal create(const HostFs& fs, const std::string& vm,
                        const std::vector<std::string>& devices);

  const nlohmann::json& header() const { return header_; }
  const std::vector<nlohmann::json>& entries() const { return entries_; }
  const std::string& path() const { return path_; }
  /// Written during this boot.
  bool live(const HostFs& fs) const;

  /// Appends one inverse and fsyncs it before returning.
  void append(nlohmann::json entry);
  /// Deletes the journal and its directory (synced).
  void remove();

 private:
  Journal(std::string path, nlohmann::json header)
      : path_(std::move(path)), header_(std::move(header)) {}
  std::string path_;  // real path of the journal file
  nlohmann::json header_;
  std::vector<nlohmann::json> entries_;
};

}  // namespace pl::host
