// A profile as the importers write it: JSON in the order of profiles/README.md,
// each setting with a short comment saying where it came from.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace pl::import {

struct CommentedProfile {
  nlohmann::ordered_json json = nlohmann::ordered_json::object();
  /// JSON pointer ("/cpu/vcpus", "/devices/0") -> comment for that member.
  std::map<std::string, std::string> comments;
  std::string header;  ///< lines written above the profile as // comments

  /// Sets `pointer` to `value` (creating objects on the way) and its comment.
  void set(const std::string& pointer, nlohmann::ordered_json value,
           const std::string& comment = {});
  /// Appends to the array at `pointer`; returns the new element's pointer.
  std::string push(const std::string& pointer, nlohmann::ordered_json value,
                   const std::string& comment = {});
  bool has(const std::string& pointer) const;
  void comment(const std::string& pointer, const std::string& text);

  /// Top-level keys reordered as profiles/README.md lists them.
  void order_fields();
  /// The profile's text: comments before the member they describe.
  std::string text() const;
};

}  // namespace pl::import
