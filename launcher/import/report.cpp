#include "import/report.h"

#include <algorithm>
#include <cstring>

namespace pl::import {
namespace {

const char* fate_name(Fate f) {
  switch (f) {
    case Fate::kCarried:
      return "carried";
    case Fate::kChanged:
      return "changed";
    case Fate::kDropped:
      return "dropped";
  }
  return "dropped";
}

}  // namespace

std::string node_path(pugi::xml_node n) {
  std::vector<std::string> parts;
  for (; n && n.type() == pugi::node_element; n = n.parent()) {
    std::string part = n.name();
    pugi::xml_node parent = n.parent();
    int index = 0, count = 0;
    for (pugi::xml_node s = parent.child(n.name()); s; s = s.next_sibling(n.name())) {
      ++count;
      if (s == n) index = count;
    }
    if (count > 1 || std::strcmp(parent.name(), "devices") == 0) {
      part += "[" + std::to_string(index) + "]";
    }
    parts.push_back(std::move(part));
  }
  std::string out;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) out += "/" + *it;
  return out;
}

void Tracker::carried(pugi::xml_node n, std::string to) {
  set(n.internal_object(), {Fate::kCarried, std::move(to), {}, false});
}
void Tracker::carried(pugi::xml_attribute a, pugi::xml_node, std::string to) {
  if (a) set(a.internal_object(), {Fate::kCarried, std::move(to), {}, false});
}
void Tracker::changed(pugi::xml_node n, std::string to, std::string why, bool guest_visible) {
  set(n.internal_object(), {Fate::kChanged, std::move(to), std::move(why), guest_visible});
}
void Tracker::changed(pugi::xml_attribute a, pugi::xml_node, std::string to, std::string why,
                      bool guest_visible) {
  if (a) set(a.internal_object(), {Fate::kChanged, std::move(to), std::move(why), guest_visible});
}
void Tracker::dropped(pugi::xml_node n, std::string why, bool guest_visible) {
  set(n.internal_object(), {Fate::kDropped, {}, std::move(why), guest_visible});
}
void Tracker::dropped(pugi::xml_attribute a, pugi::xml_node, std::string why, bool guest_visible) {
  if (a) set(a.internal_object(), {Fate::kDropped, {}, std::move(why), guest_visible});
}

void Tracker::dropped_all(pugi::xml_node n, const std::string& why, bool guest_visible) {
  if (n.type() != pugi::node_element) return;
  dropped(n, why, guest_visible);
  for (pugi::xml_attribute a : n.attributes()) dropped(a, n, why, guest_visible);
  for (pugi::xml_node c : n.children()) dropped_all(c, why, guest_visible);
}

void Tracker::carried_all(pugi::xml_node n, const std::string& to) {
  if (n.type() != pugi::node_element) return;
  carried(n, to);
  for (pugi::xml_attribute a : n.attributes()) carried(a, n, to);
  for (pugi::xml_node c : n.children()) carried_all(c, to);
}

void Tracker::attributes_like_element(pugi::xml_node n) {
  auto it = marks_.find(n.internal_object());
  if (it == marks_.end()) return;
  Mark m = it->second;
  for (pugi::xml_attribute a : n.attributes()) {
    if (!marks_.count(a.internal_object())) set(a.internal_object(), m);
  }
}

Report Tracker::report(pugi::xml_node root) const {
  Report r;
  auto visit = [&](auto&& self, pugi::xml_node n) -> void {
    if (n.type() != pugi::node_element) return;
    const std::string path = node_path(n);
    auto add = [&](const void* key, std::string p) {
      Entry e;
      e.path = std::move(p);
      auto it = marks_.find(key);
      if (it == marks_.end()) {
        e.fate = Fate::kDropped;
        e.why = "not supported by passlaunch";
        e.guest_visible = true;
      } else {
        e.fate = it->second.fate;
        e.to = it->second.to;
        e.why = it->second.why;
        e.guest_visible = it->second.guest_visible;
      }
      r.entries.push_back(std::move(e));
    };
    add(n.internal_object(), path);
    for (pugi::xml_attribute a : n.attributes()) {
      add(a.internal_object(), path + "/@" + a.name());
    }
    for (pugi::xml_node c : n.children()) self(self, c);
  };
  for (pugi::xml_node c : root.children()) visit(visit, c);
  return r;
}

bool Report::guest_visible_loss() const {
  return std::any_of(entries.begin(), entries.end(),
                     [](const Entry& e) { return e.fate != Fate::kCarried && e.guest_visible; });
}

nlohmann::ordered_json Report::to_json() const {
  nlohmann::ordered_json out = {{"carried", nlohmann::ordered_json::array()},
                                {"changed", nlohmann::ordered_json::array()},
                                {"dropped", nlohmann::ordered_json::array()},
                                {"added", nlohmann::ordered_json::array()}};
  for (const Entry& e : entries) {
    nlohmann::ordered_json j = {{"path", e.path}};
    if (!e.to.empty()) j["to"] = e.to;
    if (e.fate != Fate::kCarried) {
      j["why"] = e.why;
      j["guest_visible"] = e.guest_visible;
    }
    out[fate_name(e.fate)].push_back(std::move(j));
  }
  for (const Added& a : added) out["added"].push_back({{"to", a.to}, {"why", a.why}});
  return out;
}

std::string Report::to_text() const {
  std::string out;
  size_t counts[3] = {0, 0, 0};
  for (const Entry& e : entries) ++counts[static_cast<int>(e.fate)];
  for (size_t i = 0; i < entries.size();) {
    const Entry& e = entries[i];
    // Fold the nodes below e that share its fate and reason into its line.
    size_t j = i + 1;
    while (j < entries.size() && entries[j].path.starts_with(e.path) &&
           (entries[j].path.size() > e.path.size() && entries[j].path[e.path.size()] == '/') &&
           entries[j].fate == e.fate && entries[j].why == e.why && entries[j].to == e.to) {
      ++j;
    }
    out += std::string(fate_name(e.fate)) + "  " + e.path;
    if (j > i + 1) out += " (+" + std::to_string(j - i - 1) + " below)";
    if (!e.to.empty()) out += " -> " + e.to;
    if (!e.why.empty()) out += ": " + e.why;
    if (e.fate != Fate::kCarried && e.guest_visible) out += " [guest-visible]";
    out += "\n";
    i = j;
  }
  for (const Added& a : added) out += "added    " + a.to + ": " + a.why + "\n";
  out += std::to_string(counts[0]) + " carried, " + std::to_string(counts[1]) + " changed, " +
         std::to_string(counts[2]) + " dropped (" + std::to_string(entries.size()) +
         " elements and attributes)\n";
  return out;
}

}  // namespace pl::import
