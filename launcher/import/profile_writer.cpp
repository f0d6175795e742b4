#include "import/profile_writer.h"

#include <sstream>
#include <vector>

namespace pl::import {
namespace {

using ojson = nlohmann::ordered_json;

// profiles/README.md's order of the top-level fields; unknown keys follow.
constexpr const char* kOrder[] = {
    "name",      "accel",   "machine",  "platform", "clock",       "memory",
    "cpu",       "pinning", "firmware", "kernel",   "devices",     "disks",
    "network",   "input",   "tpm",      "rtc",      "serial",      "shutdown_timeout_s",
    "panic",     "smbios",  "display",  "sound",    "guest_agent", "shmem",
    "qemu_args", "host"};

// The order of each section's keys in profiles/README.md ("*": array elements).
const std::map<std::string, std::vector<std::string>> kSectionOrder = {
    {"/memory", {"size_mib", "hugepages", "hugepage_size", "locked", "shared"}},
    {"/cpu",
     {"model", "vcpus", "topology", "hypervisor_bit", "features", "cache_passthrough", "hyperv"}},
    {"/cpu/topology", {"sockets", "cores", "threads"}},
    {"/cpu/hyperv", {"mode", "enlightenments", "features", "vendor_id", "hide_kvm"}},
    {"/pinning",
     {"vcpus", "emulator", "iothreads", "realtime_priority", "emulator_realtime_priority",
      "realtime_policy"}},
    {"/pinning/iothreads/*", {"id", "cpus", "realtime_priority"}},
    {"/firmware", {"type", "code", "vars_template", "secure_boot"}},
    {"/devices/*", {"type", "address", "romfile", "attach", "boot_index", "rombar", "x_vga"}},
    {"/disks/*",
     {"path", "media", "format", "interface", "iothread", "readonly", "boot_index", "cache", "aio",
      "discard", "serial"}},
    {"/network/*", {"type", "link", "mode", "bridge", "mac", "model", "boot_index"}},
    {"/host",
     {"display_manager", "stop_units", "gpu_modules", "unbind_vtconsoles", "unbind_framebuffer",
      "rebind_vtconsoles", "isolate_cpus", "governor", "hooks"}},
};

ojson reorder(const ojson& v, const std::string& pattern) {
  if (v.is_array()) {
    ojson out = ojson::array();
    for (const auto& e : v) out.push_back(reorder(e, pattern + "/*"));
    return out;
  }
  if (!v.is_object()) return v;
  ojson out = ojson::object();
  if (pattern.empty()) {
    for (const char* k : kOrder) {
      if (v.contains(k)) out[k] = reorder(v[k], std::string("/") + k);
    }
  } else if (auto it = kSectionOrder.find(pattern); it != kSectionOrder.end()) {
    for (const std::string& k : it->second) {
      if (v.contains(k)) out[k] = reorder(v[k], pattern + "/" + k);
    }
  }
  for (const auto& [k, e] : v.items()) {
    if (!out.contains(k)) out[k] = reorder(e, pattern + "/" + k);
  }
  return out;
}

void write_comment(std::ostringstream& out, const std::string& text, const std::string& indent) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) out << indent << "// " << line << "\n";
}

bool has_comment_below(const std::map<std::string, std::string>& comments, const std::string& ptr) {
  auto it = comments.lower_bound(ptr + "/");
  return it != comments.end() && it->first.starts_with(ptr + "/");
}

bool scalar_array(const ojson& v) {
  if (!v.is_array()) return false;
  for (const auto& e : v) {
    if (e.is_structured()) return false;
  }
  return true;
}

std::string escape_token(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

void write_value(std::ostringstream& out, const ojson& v, const std::string& ptr,
                 const std::map<std::string, std::string>& comments, const std::string& indent) {
  const bool inline_value = !v.is_structured() || v.empty() || scalar_array(v) ||
                            (v.is_object() && !has_comment_below(comments, ptr) &&
                             v.dump().size() < 90 && !v.dump().empty() && [&] {
                               for (const auto& [k, e] : v.items()) {
                                 if (e.is_structured() && !scalar_array(e)) return false;
                               }
                               return true;
                             }());
  if (inline_value) {
    if (v.is_object() && !v.empty()) {
      out << "{ ";
      bool first = true;
      for (const auto& [k, e] : v.items()) {
        out << (first ? "" : ", ") << ojson(k).dump() << ": " << e.dump();
        first = false;
      }
      out << " }";
    } else {
      std::string s = v.dump();
      // ", " between array elements reads better than ",".
      if (v.is_array()) {
        s = "[";
        for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : " ") + v[i].dump();
        s += v.empty() ? "]" : " ]";
      }
      out << s;
    }
    return;
  }
  const std::string inner = indent + "  ";
  out << (v.is_object() ? "{\n" : "[\n");
  size_t i = 0;
  for (const auto& [k, e] : v.items()) {
    const std::string child = ptr + "/" + (v.is_object() ? escape_token(k) : std::to_string(i));
    if (auto c = comments.find(child); c != comments.end()) write_comment(out, c->second, inner);
    out << inner;
    if (v.is_object()) out << ojson(k).dump() << ": ";
    write_value(out, e, child, comments, inner);
    out << (++i < v.size() ? ",\n" : "\n");
  }
  out << indent << (v.is_object() ? "}" : "]");
}

}  // namespace

void CommentedProfile::set(const std::string& pointer, ojson value, const std::string& c) {
  json[ojson::json_pointer(pointer)] = std::move(value);
  if (!c.empty()) comments[pointer] = c;
}

std::string CommentedProfile::push(const std::string& pointer, ojson value, const std::string& c) {
  ojson& arr = json[ojson::json_pointer(pointer)];
  if (!arr.is_array()) arr = ojson::array();
  arr.push_back(std::move(value));
  std::string p = pointer + "/" + std::to_string(arr.size() - 1);
  if (!c.empty()) comments[p] = c;
  return p;
}

bool CommentedProfile::has(const std::string& pointer) const {
  return json.contains(ojson::json_pointer(pointer));
}

void CommentedProfile::comment(const std::string& pointer, const std::string& text) {
  comments[pointer] = text;
}

void CommentedProfile::order_fields() { json = reorder(json, ""); }

std::string CommentedProfile::text() const {
  std::ostringstream out;
  write_comment(out, header, "");
  write_value(out, json, "", comments, "");
  out << "\n";
  return out.str();
}

}  // namespace pl::import
