// The import report: every element and attribute of the input, each listed
// exactly once as carried over, carried over differently, or dropped, with
// why. "Not carried over" is a result of its own, never a silent skip: a node
// the importer did not look at is reported as dropped ("not supported").
#pragma once

#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <string>
#include <unordered_map>
#include <vector>

namespace pl::import {

enum class Fate {
  kCarried,  ///< held by the profile as it was
  kChanged,  ///< held differently (what and why)
  kDropped,  ///< not held (why)
};

/// One node of the input (element or attribute) and what became of it.
struct Entry {
  std::string path;  ///< "/domain/devices/hostdev[2]/source/address/@bus"
  Fate fate = Fate::kDropped;
  std::string to;              ///< profile JSON pointer(s) it went to ("/cpu/vcpus"), if any
  std::string why;             ///< changed/dropped: what and why
  bool guest_visible = false;  ///< changed/dropped: the guest could notice (--strict)
};

/// A profile setting that has no libvirt element (e.g. "host"), filled from
/// the host and said so.
struct Added {
  std::string to;
  std::string why;
};

struct Report {
  std::vector<Entry> entries;  ///< in document order
  std::vector<Added> added;

  /// Something dropped or changed that the guest could notice.
  bool guest_visible_loss() const;
  /// {"carried": [...], "changed": [...], "dropped": [...], "added": [...]}
  nlohmann::ordered_json to_json() const;
  /// One line per entry; a subtree whose nodes share one fate and reason is
  /// one line ("... and its N attributes/children").
  std::string to_text() const;
};

/// Marks nodes of a pugixml document while the importer maps them, then lists
/// every node in document order (unmarked ones as dropped, not supported).
class Tracker {
 public:
  void carried(pugi::xml_node n, std::string to = {});
  void carried(pugi::xml_attribute a, pugi::xml_node owner, std::string to = {});
  void changed(pugi::xml_node n, std::string to, std::string why, bool guest_visible = true);
  void changed(pugi::xml_attribute a, pugi::xml_node owner, std::string to, std::string why,
               bool guest_visible = true);
  void dropped(pugi::xml_node n, std::string why, bool guest_visible = true);
  void dropped(pugi::xml_attribute a, pugi::xml_node owner, std::string why,
               bool guest_visible = true);
  /// The element, its attributes and every descendant, all the same way.
  void dropped_all(pugi::xml_node n, const std::string& why, bool guest_visible = false);
  void carried_all(pugi::xml_node n, const std::string& to);
  /// Every attribute of `n` not marked yet, marked as `n` itself is.
  void attributes_like_element(pugi::xml_node n);

  bool marked(pugi::xml_node n) const { return marks_.count(n.internal_object()) > 0; }

  /// Every element and attribute under `root` (the document), in order.
  Report report(pugi::xml_node root) const;

 private:
  struct Mark {
    Fate fate;
    std::string to, why;
    bool guest_visible;
  };
  void set(const void* key, Mark m) { marks_.insert_or_assign(key, std::move(m)); }
  std::unordered_map<const void*, Mark> marks_;
};

/// "/domain/devices/disk[2]/target" for an element (1-based index among
/// same-named siblings, always given under <devices> and when a name repeats).
std::string node_path(pugi::xml_node n);

}  // namespace pl::import
