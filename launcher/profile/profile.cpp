#include "profile/profile.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "core/cpulist.h"
#include "core/error.h"
#include "core/text.h"

namespace pl {

using json = nlohmann::json;

std::optional<PciAddress> PciAddress::parse(std::string_view text) {
  static const std::regex re("([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([01][0-9a-fA-F])\\.([0-7])");
  std::cmatch m;
  if (!std::regex_match(text.begin(), text.end(), m, re)) return std::nullopt;
  PciAddress a;
  a.domain = static_cast<uint16_t>(std::stoul(m[1].str(), nullptr, 16));
  a.bus = static_cast<uint8_t>(std::stoul(m[2].str(), nullptr, 16));
  a.slot = static_cast<uint8_t>(std::stoul(m[3].str(), nullptr, 16));
  a.function = static_cast<uint8_t>(std::stoul(m[4].str(), nullptr, 16));
  return a;
}

std::string PciAddress::str() const {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", domain, bus, slot, function);
  return buf;
}

std::string to_string(Accel a) {
  switch (a) {
    case Accel::kKvm:
      return "kvm";
    case Accel::kTcg:
      return "tcg";
    case Accel::kAuto:
      break;
  }
  return "auto";
}

bool is_q35(const std::string& machine) {
  return machine == "q35" || machine.rfind("pc-q35-", 0) == 0;
}

std::vector<int> Pinning::all_vcpu_cpus() const {
  std::set<int> all(vcpus.begin(), vcpus.end());
  for (const auto& set : vcpu_sets) all.insert(set.begin(), set.end());
  return {all.begin(), all.end()};
}

std::string default_disk_serial(const std::string& name, size_t index) {
  // FNV-1a over "name/index", rendered in base 36 like a drive maker's serial.
  std::string key = name + "/" + std::to_string(index);
  uint64_t h = 1469598103934665603ull;
  std::string out;
  for (int round = 0; out.size() < 20; ++round) {
    for (char c : key) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    h = (h ^ static_cast<uint64_t>(round)) * 1099511628211ull;
    uint64_t v = h;
    for (int i = 0; i < 10 && out.size() < 20; ++i, v /= 36)
      out += "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[v % 36];
  }
  return out;
}

namespace {

/// Collects problems as "<json path>: <message>", so that all are reported at once.
class Problems {
 public:
  void add(const std::string& path, const std::string& message) {
    list_.push_back((path.empty() ? std::string("/") : path) + ": " + message);
  }
  const std::vector<std::string>& list() const { return list_; }

  /// Relative paths in a profile are relative to the profile's own directory.
  std::string base_dir;

 private:
  std::vector<std::string> list_;
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

std::string type_name(const json& j) {
  if (j.is_number_integer()) return "an integer";
  if (j.is_number()) return "a number";
  if (j.is_array() || j.is_object()) return std::string("an ") + j.type_name();
  return std::string("a ") + j.type_name();
}

/// A strict view of one JSON object: every key must be read, and each value
/// must have the expected type. Unknown keys are reported when it is destroyed.
class Obj {
 public:
  Obj(const json* j, std::string path, Problems& problems)
      : j_(j), path_(std::move(path)), problems_(problems) {
    if (j_ && !j_->is_object()) {
      problems_.add(path_, "expected an object, got " + type_name(*j_));
      j_ = nullptr;
    }
  }
  Obj(const Obj&) = delete;
  ~Obj() {
    if (!j_) return;
    for (auto& [key, value] : j_->items()) {
      if (!seen_.count(key)) {
        problems_.add(path_ + "/" + key, "unknown key (see profiles/README.md for the fields)");
      }
    }
  }

  bool valid() const { return j_ != nullptr; }
  std::string path(const std::string& key) const { return path_ + "/" + key; }
  Problems& problems() { return problems_; }

  /// The raw value of `key`, or null when absent (then a problem if required).
  const json* raw(const std::string& key, bool required = false) {
    seen_.insert(key);
    if (!j_) return nullptr;
    auto it = j_->find(key);
    if (it == j_->end()) {
      if (required) problems_.add(path(key), "required key is missing");
      return nullptr;
    }
    return &*it;
  }

  void str(const std::string& key, std::string& out, bool required = false) {
    if (const json* v = raw(key, required)) {
      if (v->is_string()) {
        out = v->get<std::string>();
      } else {
        problems_.add(path(key), "expected a string, got " + type_name(*v));
      }
    }
  }
  /// A file path; a relative one is taken from the profile's directory.
  void path_str(const std::string& key, std::string& out, bool required = false) {
    str(key, out, required);
    if (!out.empty() && out[0] != '/' && !problems_.base_dir.empty()) {
      out = (std::filesystem::path(problems_.base_dir) / out).lexically_normal().string();
    }
  }
  void boolean(const std::string& key, bool& out) {
    if (const json* v = raw(key)) {
      if (v->is_boolean()) {
        out = v->get<bool>();
      } else {
        problems_.add(path(key), "expected true or false, got " + type_name(*v));
      }
    }
  }
  template <class Int>
  bool integer(const std::string& key, Int& out, int64_t lo, int64_t hi, bool required = false) {
    const json* v = raw(key, required);
    if (!v) return false;
    if (!v->is_number_integer()) {
      problems_.add(path(key), "expected an integer, got " + type_name(*v));
      return false;
    }
    if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX)) {
      problems_.add(path(key), "expected an integer from " + std::to_string(lo) + " to " +
                                   std::to_string(hi) + ", got " + v->dump());
      return false;
    }
    int64_t n = v->get<int64_t>();
    if (n < lo || n > hi) {
      problems_.add(path(key), "expected an integer from " + std::to_string(lo) + " to " +
                                   std::to_string(hi) + ", got " + std::to_string(n));
      return false;
    }
    out = static_cast<Int>(n);
    return true;
  }
  /// A string that must be one of `choices`.
  void choice(const std::string& key, std::string& out,
              std::initializer_list<const char*> choices) {
    std::string value;
    const json* v = raw(key);
    if (!v) return;
    if (!v->is_string()) {
      problems_.add(path(key), "expected a string, got " + type_name(*v));
      return;
    }
    value = v->get<std::string>();
    std::vector<std::string> names;
    for (const char* c : choices) {
      if (value == c) {
        out = value;
        return;
      }
      names.push_back(std::string("\"") + c + "\"");
    }
    problems_.add(path(key), "expected one of " + join(names, ", ") + ", got \"" + value + "\"");
  }
  /// An array of elements; calls fn(element, path) for each.
  template <class Fn>
  void array(const std::string& key, Fn fn) {
    const json* v = raw(key);
    if (!v) return;
    if (!v->is_array()) {
      problems_.add(path(key), "expected an array, got " + type_name(*v));
      return;
    }
    for (size_t i = 0; i < v->size(); ++i) fn((*v)[i], path(key) + "/" + std::to_string(i));
  }
  void strings(const std::string& key, std::vector<std::string>& out) {
    array(key, [&](const json& e, const std::string& p) {
      if (e.is_string()) {
        out.push_back(e.get<std::string>());
      } else {
        problems_.add(p, "expected a string, got " + type_name(e));
      }
    });
  }
  /// A CPU list: "0-3,8" or an array of CPU numbers. Keeps written order.
  bool cpus(const std::string& key, std::vector<int>& out) {
    const json* v = raw(key);
    if (!v) return false;
    if (v->is_string()) {
      auto parsed = parse_cpulist(v->get<std::string>());
      if (!parsed) {
        problems_.add(path(key), "expected a CPU list such as \"0-15,17\", got \"" +
                                     v->get<std::string>() + "\"");
        return false;
      }
      out = *parsed;
      return true;
    }
    if (v->is_array()) {
      std::vector<int> list;
      bool ok = true;
      for (size_t i = 0; i < v->size(); ++i) {
        const json& e = (*v)[i];
        if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > 8191) {
          problems_.add(path(key) + "/" + std::to_string(i),
                        "expected a CPU number from 0 to 8191, got " + e.dump());
          ok = false;
        } else {
          list.push_back(e.get<int>());
        }
      }
      if (ok) out = list;
      return ok;
    }
    problems_.add(path(key),
                  "expected a CPU list string such as \"0-15\" or an array of CPU numbers, got " +
                      type_name(*v));
    return false;
  }

 private:
  const json* j_;
  std::string path_;
  Problems& problems_;
  std::set<std::string> seen_;
};

bool valid_mac(const std::string& mac) {
  static const std::regex re("[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}");
  if (!std::regex_match(mac, re)) return false;
  unsigned first = std::stoul(mac.substr(0, 2), nullptr, 16);
  return (first & 1) == 0;  // not a multicast address
}

std::optional<uint16_t> parse_hex16(const std::string& s) {
  static const std::regex re("(0x)?[0-9a-fA-F]{4}");
  if (!std::regex_match(s, re)) return std::nullopt;
  return static_cast<uint16_t>(std::stoul(s, nullptr, 16));
}

void check_file(Problems& problems, const std::string& path, const std::string& file,
                const ProfileChecks& checks) {
  if (!checks.files || file.empty()) return;
  std::error_code ec;
  auto st = std::filesystem::status(file, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    problems.add(path, "cannot access " + file + ": " + ec.message() + " (expected a file)");
  } else if (ec || !std::filesystem::exists(st)) {
    problems.add(path, "file not found: " + file + " (expected an existing file)");
  } else if (std::filesystem::is_directory(st)) {
    problems.add(path, "is a directory: " + file + " (expected a file)");
  }
}

/// cpu.hyperv.features: QEMU 7.2's hv-* properties by name.
void parse_hyperv_features(const json& f, const std::string& path, Problems& problems,
                           HypervConfig& hv) {
  static const std::set<std::string> flags = {
      "hv-apicv", "hv-avic",        "hv-crash",    "hv-emsr-bitmap",     "hv-enforce-cpuid",
      "hv-evmcs", "hv-frequencies", "hv-ipi",      "hv-reenlightenment", "hv-relaxed",
      "hv-reset", "hv-runtime",     "hv-stimer",   "hv-stimer-direct",   "hv-syndbg",
      "hv-synic", "hv-time",        "hv-tlbflush", "hv-tlbflush-direct", "hv-tlbflush-ext",
      "hv-vapic", "hv-vpindex",     "hv-xmm-input"};
  if (!f.is_object()) {
    problems.add(path, "expected an object of hv-* names, got " + type_name(f));
    return;
  }
  for (auto& [key, v] : f.items()) {
    std::string p = path + "/" + key;
    if (flags.count(key)) {
      if (!v.is_boolean()) {
        problems.add(p, "expected true or false, got " + type_name(v));
      } else {
        hv.features.push_back({key, v.get<bool>() ? "on" : "off"});
      }
    } else if (key == "hv-spinlocks") {
      if (v.is_boolean() && !v.get<bool>()) {
        hv.features.push_back({key, "off"});
      } else if (v.is_number_integer() && v.get<int64_t>() >= 0xfff &&
                 v.get<int64_t>() <= 0xffffffffll) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v.get<int64_t>()));
        hv.features.push_back({key, buf});
      } else {
        problems.add(p, "expected a retry count from 4095 to 4294967295 or false, got " + v.dump());
      }
    } else if (key == "hv-max-vps") {
      if (v.is_number_integer() && v.get<int64_t>() >= 1 && v.get<int64_t>() <= 0xffffffffll) {
        hv.features.push_back({key, std::to_string(v.get<int64_t>())});
      } else {
        problems.add(p, "expected an integer from 1 to 4294967295, got " + v.dump());
      }
    } else if (key == "hv-no-nonarch-coresharing") {
      if (v.is_string() && (v == "on" || v == "off" || v == "auto")) {
        hv.features.push_back({key, v.get<std::string>()});
      } else {
        problems.add(p, "expected one of \"on\", \"off\", \"auto\", got " + v.dump());
      }
    } else if (key == "hv-passthrough") {
      problems.add(p, "set /cpu/hyperv/mode to \"passthrough\" instead");
    } else if (key == "hv-vendor-id") {
      problems.add(p, "set /cpu/hyperv/vendor_id instead");
    } else {
      problems.add(p,
                   "unknown Hyper-V enlightenment; expected one of QEMU's hv-* names "
                   "(hv-relaxed, hv-vapic, hv-spinlocks, hv-time, ..., see profiles/README.md)");
    }
  }
}

void parse_cpu(Obj& o, CpuConfig& cpu) {
  o.str("model", cpu.model);
  o.integer("vcpus", cpu.vcpus, 1, 1024, true);
  if (const json* t = o.raw("topology")) {
    Obj top(t, o.path("topology"), o.problems());
    top.integer("sockets", cpu.sockets, 1, 64);
    top.integer("cores", cpu.cores, 1, 1024);
    top.integer("threads", cpu.threads, 1, 8);
  }
  o.boolean("hypervisor_bit", cpu.hypervisor_bit);
  o.array("features", [&](const json& e, const std::string& p) {
    static const std::regex re("[+-][a-z0-9][a-z0-9_.-]*");
    if (!e.is_string() || !std::regex_match(e.get<std::string>(), re)) {
      o.problems().add(p,
                       "expected a CPU feature toggle such as \"-arch-capabilities\" or "
                       "\"+invtsc\", got " +
                           e.dump());
    } else {
      cpu.features.push_back(e.get<std::string>());
    }
  });
  o.boolean("cache_passthrough", cpu.cache_passthrough);
  if (const json* h = o.raw("hyperv")) {
    Obj hv(h, o.path("hyperv"), o.problems());
    std::string mode = "custom";
    hv.choice("mode", mode, {"custom", "passthrough"});
    cpu.hyperv.passthrough = mode == "passthrough";
    hv.boolean("enlightenments", cpu.hyperv.enlightenments);
    if (const json* f = hv.raw("features"))
      parse_hyperv_features(*f, hv.path("features"), o.problems(), cpu.hyperv);
    hv.str("vendor_id", cpu.hyperv.vendor_id);
    hv.boolean("hide_kvm", cpu.hyperv.hide_kvm);
    if (cpu.hyperv.vendor_id.size() > 12 ||
        cpu.hyperv.vendor_id.find_first_of(",= ") != std::string::npos) {
      o.problems().add(hv.path("vendor_id"),
                       "expected at most 12 characters without ',', '=' or spaces, got \"" +
                           cpu.hyperv.vendor_id + "\"");
    }
  }
  int per_socket = cpu.sockets * cpu.threads;
  if (cpu.cores == 0)
    cpu.cores = per_socket > 0 && cpu.vcpus % per_socket == 0 ? cpu.vcpus / per_socket : 0;
  if (cpu.cores == 0 || cpu.sockets * cpu.cores * cpu.threads != cpu.vcpus) {
    o.problems().add(o.path("topology"), "sockets x cores x threads must equal vcpus (" +
                                             std::to_string(cpu.vcpus) + ")");
  }
}

void parse_pinning(Obj& o, Profile& p) {
  Pinning& pin = p.pinning;
  bool have_vcpus = false;
  const json* vj = o.raw("vcpus");
  if (vj && vj->is_array() &&
      std::any_of(vj->begin(), vj->end(), [](const json& e) { return e.is_string(); })) {
    // One entry per vCPU, each a CPU number or a CPU list: the set it may run on.
    bool ok = true;
    for (size_t i = 0; i < vj->size(); ++i) {
      const json& e = (*vj)[i];
      std::string ep = o.path("vcpus") + "/" + std::to_string(i);
      std::optional<std::vector<int>> set;
      if (e.is_string()) set = parse_cpulist(e.get<std::string>());
      if (e.is_number_integer() && e.get<int64_t>() >= 0 && e.get<int64_t>() <= 8191)
        set = std::vector<int>{e.get<int>()};
      if (!set || set->empty()) {
        o.problems().add(ep,
                         "expected a CPU number from 0 to 8191 or a CPU list such as "
                         "\"2,10\", got " +
                             e.dump());
        ok = false;
        continue;
      }
      std::sort(set->begin(), set->end());
      set->erase(std::unique(set->begin(), set->end()), set->end());
      pin.vcpus.push_back(set->front());
      pin.vcpu_sets.push_back(*set);
    }
    have_vcpus = ok;
    if (!ok) pin.vcpus.clear(), pin.vcpu_sets.clear();
  } else {
    have_vcpus = o.cpus("vcpus", pin.vcpus);
  }
  if (have_vcpus) {
    if (pin.vcpus.size() != static_cast<size_t>(p.cpu.vcpus)) {
      o.problems().add(o.path("vcpus"),
                       "expected one host CPU per vCPU (" + std::to_string(p.cpu.vcpus) +
                           " from /cpu/vcpus), got " + std::to_string(pin.vcpus.size()));
    }
    // A CPU that is a vCPU's only CPU may not serve another vCPU; sets may overlap.
    std::map<int, size_t> first;
    for (size_t i = 0; i < pin.vcpus.size(); ++i) {
      if (pin.vcpu_cpus(i).size() != 1) continue;
      auto [it, fresh] = first.emplace(pin.vcpus[i], i);
      if (!fresh) {
        o.problems().add(o.path("vcpus"), "host CPU " + std::to_string(pin.vcpus[i]) +
                                              " is pinned twice (vCPU " +
                                              std::to_string(it->second) + " and vCPU " +
                                              std::to_string(i) + "); expected one vCPU per CPU");
      }
    }
  }
  o.cpus("emulator", pin.emulator);
  o.array("iothreads", [&](const json& e, const std::string& path) {
    Obj io(&e, path, o.problems());
    IoThread t;
    io.str("id", t.id, true);
    io.cpus("cpus", t.cpus);
    int rt = 0;
    if (io.integer("realtime_priority", rt, 1, 99)) t.realtime_priority = rt;
    static const std::regex re("[A-Za-z][A-Za-z0-9_-]{0,31}");
    if (io.valid() && !std::regex_match(t.id, re)) {
      o.problems().add(io.path("id"),
                       "expected a letter then letters, digits, '-' or '_' (at "
                       "most 32), got \"" +
                           t.id + "\"");
    }
    for (const IoThread& other : pin.iothreads) {
      if (other.id == t.id)
        o.problems().add(io.path("id"), "iothread \"" + t.id + "\" defined twice");
    }
    pin.iothreads.push_back(std::move(t));
  });
  int prio = 0;
  if (o.integer("realtime_priority", prio, 1, 99)) pin.realtime_priority = prio;
  if (o.integer("emulator_realtime_priority", prio, 1, 99)) pin.emulator_realtime_priority = prio;
  std::string policy = "fifo";
  o.choice("realtime_policy", policy, {"fifo", "rr"});
  pin.realtime_policy = policy == "rr" ? RealtimePolicy::kRr : RealtimePolicy::kFifo;
}

void parse_devices(Obj& o, Profile& p, const ProfileChecks& checks) {
  o.array("devices", [&](const json& e, const std::string& path) {
    Obj d(&e, path, o.problems());
    std::string type, address;
    d.choice("type", type, {"vfio"});
    d.str("address", address, true);
    VfioDevice dev;
    if (d.valid() && !address.empty()) {
      auto a = PciAddress::parse(address);
      if (!a) {
        o.problems().add(d.path("address"),
                         "expected a PCI address DDDD:BB:DD.F such as \"0000:01:00.0\", got \"" +
                             address + "\"");
      } else {
        dev.address = *a;
        for (const VfioDevice& other : p.devices) {
          if (other.address == *a) {
            o.problems().add(d.path("address"), "device " + address + " is listed twice");
          }
        }
      }
    }
    d.path_str("romfile", dev.romfile);
    check_file(o.problems(), d.path("romfile"), dev.romfile, checks);
    d.boolean("attach", dev.attach);
    int boot = 0;
    if (d.integer("boot_index", boot, 0, 9999)) dev.boot_index = boot;
    d.boolean("rombar", dev.rombar);
    d.boolean("x_vga", dev.x_vga);
    if (const json* ids = d.raw("ids")) {
      Obj id(ids, d.path("ids"), o.problems());
      for (auto [key, out] :
           {std::pair{"vendor", &dev.vendor_id}, std::pair{"device", &dev.device_id},
            std::pair{"sub_vendor", &dev.sub_vendor_id},
            std::pair{"sub_device", &dev.sub_device_id}}) {
        std::string text;
        id.str(key, text);
        if (text.empty()) continue;
        if (auto v = parse_hex16(text)) {
          *out = *v;
        } else {
          o.problems().add(id.path(key),
                           "expected 4 hex digits such as \"10de\", got \"" + text + "\"");
        }
      }
    }
    if (!dev.attach && !dev.romfile.empty()) {
      o.problems().add(d.path("romfile"), "a device with \"attach\": false has no romfile");
    }
    p.devices.push_back(dev);
  });
}

void parse_disks(Obj& o, Profile& p, const ProfileChecks& checks) {
  std::string scsi_iothread, scsi_iothread_path;
  o.array("disks", [&](const json& e, const std::string& path) {
    Obj d(&e, path, o.problems());
    Disk disk;
    std::string media = "disk";
    d.choice("media", media, {"disk", "cdrom"});
    disk.cdrom = media == "cdrom";
    if (disk.cdrom) disk.interface = "sata";
    d.path_str("path", disk.path, !disk.cdrom);
    check_file(o.problems(), d.path("path"), disk.path, checks);
    d.choice("format", disk.format, {"raw", "qcow2"});
    d.choice("interface", disk.interface, {"virtio", "nvme", "sata", "scsi"});
    d.str("iothread", disk.iothread);
    d.boolean("readonly", disk.readonly);
    int boot = 0;
    if (d.integer("boot_index", boot, 0, 9999)) disk.boot_index = boot;
    d.choice("cache", disk.cache, {"none", "writeback", "writethrough", "directsync", "unsafe"});
    d.choice("aio", disk.aio, {"threads", "native", "io_uring"});
    d.choice("discard", disk.discard, {"unmap", "ignore"});
    d.str("serial", disk.serial);
    static const std::regex serial_re("[A-Za-z0-9_.-]{1,20}");
    if (d.valid() && d.raw("serial") && !std::regex_match(disk.serial, serial_re)) {
      o.problems().add(d.path("serial"), "expected 1-20 letters, digits, '-', '_' or '.', got \"" +
                                             disk.serial + "\"");
    }
    if (disk.cdrom) {
      disk.readonly = true;
      if (disk.interface != "sata" && disk.interface != "scsi") {
        o.problems().add(d.path("interface"),
                         "a CD-ROM sits on \"sata\" or \"scsi\", got \"" + disk.interface + "\"");
      }
    }
    if (disk.aio == "native" && disk.cache != "none" && disk.cache != "directsync") {
      o.problems().add(d.path("aio"),
                       "\"native\" needs /cache \"none\" or \"directsync\" "
                       "(O_DIRECT), got " +
                           (disk.cache.empty() ? std::string("QEMU's default (writeback)")
                                               : "\"" + disk.cache + "\""));
    }
    if (!disk.iothread.empty()) {
      bool known = std::any_of(p.pinning.iothreads.begin(), p.pinning.iothreads.end(),
                               [&](const IoThread& t) { return t.id == disk.iothread; });
      if (!known) {
        o.problems().add(d.path("iothread"),
                         "expected the id of an iothread in "
                         "/pinning/iothreads, got \"" +
                             disk.iothread + "\"");
      }
      if (disk.interface != "virtio" && disk.interface != "scsi") {
        o.problems().add(d.path("iothread"), "only virtio and scsi disks run on an iothread");
      }
    }
    if (disk.interface == "scsi" && !disk.iothread.empty()) {
      if (scsi_iothread_path.empty()) {
        scsi_iothread = disk.iothread;
        scsi_iothread_path = d.path("iothread");
      } else if (scsi_iothread != disk.iothread) {
        o.problems().add(d.path("iothread"),
                         "all scsi disks share one controller, which runs on \"" + scsi_iothread +
                             "\" (" + scsi_iothread_path + "), got \"" + disk.iothread + "\"");
      }
    }
    p.disks.push_back(disk);
  });
}

void parse_network(Obj& o, Profile& p) {
  std::map<std::string, std::string> macs;
  o.array("network", [&](const json& e, const std::string& path) {
    Obj n(&e, path, o.problems());
    NetDevice net;
    std::string type;
    n.choice("type", type, {"macvtap", "bridge", "user"});
    if (n.valid() && type.empty()) o.problems().add(n.path("type"), "required key is missing");
    net.type = type == "macvtap"  ? NetDevice::Type::kMacvtap
               : type == "bridge" ? NetDevice::Type::kBridge
                                  : NetDevice::Type::kUser;
    if (net.type == NetDevice::Type::kMacvtap) {
      n.str("link", net.link, true);
      n.choice("mode", net.mode, {"bridge", "vepa", "private", "passthru"});
    }
    if (net.type == NetDevice::Type::kBridge) n.str("bridge", net.bridge, true);
    static const std::regex ifname("[A-Za-z0-9_.:-]{1,15}");
    for (auto [key, value] : {std::pair{"link", &net.link}, std::pair{"bridge", &net.bridge}}) {
      if (!value->empty() && !std::regex_match(*value, ifname)) {
        o.problems().add(n.path(key),
                         "expected a network interface name (1-15 characters), "
                         "got \"" +
                             *value + "\"");
      }
    }
    n.str("mac", net.mac);
    if (!net.mac.empty()) {
      if (!valid_mac(net.mac)) {
        o.problems().add(n.path("mac"),
                         "expected a unicast MAC address such as "
                         "\"52:54:00:a3:d3:f4\", got \"" +
                             net.mac + "\"");
      } else {
        std::string lower = net.mac;
        std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
        auto [it, fresh] = macs.emplace(lower, path);
        if (!fresh)
          o.problems().add(n.path("mac"), "MAC " + net.mac + " is also used by " + it->second);
      }
    }
    n.choice("model", net.model, {"virtio-net-pci", "e1000e", "rtl8139"});
    int boot = 0;
    if (n.integer("boot_index", boot, 0, 9999)) net.boot_index = boot;
    p.network.push_back(net);
  });
}

/// The desk's fields (profiles/README.md, "Hotkeys and access"): who may use
/// the control socket beyond status, and the host hotkey. After the inputs:
/// the hotkey watches the evdev devices.
void parse_desk(Obj& o, Profile& p, const ProfileChecks& checks) {
  o.str("control_group", p.control_group);
  static const std::regex group_re("[a-z_][a-z0-9_-]{0,31}");
  if (!p.control_group.empty() && !std::regex_match(p.control_group, group_re)) {
    o.problems().add(o.path("control_group"),
                     "expected a group name (lower-case letters, digits, '_', '-'), got \"" +
                         p.control_group + "\"");
  }
  const json* h = o.raw("host_hotkey");
  if (!h) return;
  Obj hk(h, o.path("host_hotkey"), o.problems());
  if (!hk.valid()) return;
  HostHotkey key;
  std::string keys_path = hk.path("keys");
  if (const json* k = hk.raw("keys", true); k && !k->is_array()) {
    o.problems().add(keys_path, "expected an array of key names, got " + type_name(*k));
  } else if (k && (k->empty() || k->size() > 6)) {
    o.problems().add(keys_path,
                     "expected 1 to 6 keys held together, got " + std::to_string(k->size()));
  }
  hk.array("keys", [&](const json& e, const std::string& path) {
    if (!e.is_string()) {
      o.problems().add(path, "expected a key name such as \"KEY_END\", got " + type_name(e));
      return;
    }
    std::string name = e.get<std::string>();
    auto code = key_code(name);
    if (!code) {
      o.problems().add(path,
                       "expected a key name of linux/input-event-codes.h such as "
                       "\"KEY_LEFTCTRL\", got \"" +
                           name + "\"");
    } else if (std::find(key.codes.begin(), key.codes.end(), *code) != key.codes.end()) {
      o.problems().add(path, "\"" + name + "\" is listed twice");
    } else {
      key.keys.push_back(name);
      key.codes.push_back(*code);
    }
  });
  hk.array("devices", [&](const json& e, const std::string& path) {
    if (!e.is_string() || e.get<std::string>().empty()) {
      o.problems().add(path, "expected an evdev device path, got " + type_name(e));
      return;
    }
    std::filesystem::path dev = e.get<std::string>();
    if (dev.is_relative() && !o.problems().base_dir.empty()) dev = o.problems().base_dir / dev;
    key.devices.push_back(dev.string());
    check_file(o.problems(), path, dev.string(), checks);
  });
  if (key.devices.empty()) {
    for (const EvdevInput& e : p.evdev) key.devices.push_back(e.path);
  }
  std::string action = "shutdown";
  hk.choice("action", action, {"shutdown", "poweroff"});
  key.action = action == "poweroff" ? HostHotkey::Action::kPoweroff : HostHotkey::Action::kShutdown;
  if (key.devices.empty()) {
    o.problems().add(o.path("host_hotkey"),
                     "needs keyboards to read: input/evdev entries or host_hotkey/devices");
  }
  p.host_hotkey = key;
}

void parse_inputs(Obj& o, Profile& p, const ProfileChecks& checks) {
  if (const json* in = o.raw("input")) {
    Obj input(in, o.path("input"), o.problems());
    input.array("evdev", [&](const json& e, const std::string& path) {
      Obj ev(&e, path, o.problems());
      EvdevInput dev;
      ev.path_str("path", dev.path, true);
      check_file(o.problems(), ev.path("path"), dev.path, checks);
      ev.boolean("grab_all", dev.grab_all);
      ev.boolean("repeat", dev.repeat);
      ev.choice(
          "grab_toggle", dev.grab_toggle,
          {"ctrl-ctrl", "alt-alt", "shift-shift", "meta-meta", "scrolllock", "ctrl-scrolllock"});
      p.evdev.push_back(dev);
    });
    input.array("usb", [&](const json& e, const std::string& path) {
      Obj u(&e, path, o.problems());
      std::string vendor, product;
      u.str("vendor", vendor, true);
      u.str("product", product, true);
      auto v = parse_hex16(vendor), d = parse_hex16(product);
      if (u.valid() && !vendor.empty() && !v) {
        o.problems().add(u.path("vendor"),
                         "expected 4 hex digits such as \"046d\", got \"" + vendor + "\"");
      }
      if (u.valid() && !product.empty() && !d) {
        o.problems().add(u.path("product"),
                         "expected 4 hex digits such as \"c52b\", got \"" + product + "\"");
      }
      if (v && d) p.usb.push_back({*v, *d});
    });
  }
}

void parse_host(Obj& o, HostConfig& h) {
  o.str("display_manager", h.display_manager);
  o.strings("stop_units", h.stop_units);
  o.strings("gpu_modules", h.gpu_modules);
  o.boolean("unbind_vtconsoles", h.unbind_vtconsoles);
  o.boolean("unbind_framebuffer", h.unbind_framebuffer);
  o.boolean("rebind_vtconsoles", h.rebind_vtconsoles);
  o.boolean("isolate_cpus", h.isolate_cpus);
  o.choice("governor", h.governor, {"performance", "schedutil", "ondemand", "powersave"});
  if (const json* hooks = o.raw("hooks")) {
    Obj hk(hooks, o.path("hooks"), o.problems());
    hk.path_str("prepare", h.prepare_hook);
    hk.path_str("release", h.release_hook);
  }
}

/// The escape hatch: each entry is an option or the value of the option before
/// it; what passlaunch owns is refused, naming the index and the option.
void parse_qemu_args(Obj& o, Profile& p) {
  o.strings("qemu_args", p.qemu_args);
  // Indexes below must be the profile's: check only an array of strings.
  if (const json* raw = o.raw("qemu_args");
      !raw || !raw->is_array() || raw->size() != p.qemu_args.size())
    return;
  // Options that take no value (QEMU 7.2, x86); every other option takes one.
  static const std::set<std::string> flags = {"-h",
                                              "-help",
                                              "-version",
                                              "-mem-prealloc",
                                              "-snapshot",
                                              "-usb",
                                              "-nographic",
                                              "-full-screen",
                                              "-portrait",
                                              "-win2k-hack",
                                              "-no-fd-bootchk",
                                              "-no-acpi",
                                              "-no-hpet",
                                              "-singlestep",
                                              "-S",
                                              "-s",
                                              "-enable-kvm",
                                              "-xen-attach",
                                              "-xen-domid-restrict",
                                              "-no-reboot",
                                              "-no-shutdown",
                                              "-daemonize",
                                              "-only-migratable",
                                              "-nodefaults",
                                              "-no-user-config",
                                              "-async-teardown",
                                              "-enable-sync-profile",
                                              "-audio-help",
                                              "-alt-grab",
                                              "-ctrl-grab",
                                              "-preconfig",
                                              "-enable-fips",
                                              "-semihosting"};
  static const std::map<std::string, std::string> owned = {
      {"-S", "passlaunch starts every VM paused and continues it after pinning"},
      {"-daemonize", "passlaunch supervises QEMU as its child"},
      {"-runas", "passlaunch decides QEMU's user"},
      {"-chroot", "passlaunch decides QEMU's root"},
      {"-pidfile", "passlaunch knows QEMU's pid (`passlaunch list`)"},
      {"-name", "passlaunch names QEMU after /name (thread names included)"},
      {"-nodefaults", "passlaunch already passes it"},
      {"-sandbox", "passlaunch sets QEMU's seccomp sandbox"},
      {"-qmp", "passlaunch owns the monitors; use `passlaunch ctl NAME qmp`"},
      {"-qmp-pretty", "passlaunch owns the monitors; use `passlaunch ctl NAME qmp`"},
      {"-monitor", "passlaunch owns the monitors; use `passlaunch ctl NAME qmp`"},
      {"-mon", "passlaunch owns the monitors; use `passlaunch ctl NAME qmp`"},
  };
  static const std::set<std::string> our_chardevs = {"qmp", "serial0", "tpm0-sock", "qga0"};
  const auto& args = p.qemu_args;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string at = o.path("qemu_args") + "/" + std::to_string(i);
    std::string opt = args[i];
    if (opt.size() < 2 || opt[0] != '-') {
      o.problems().add(at, "expected an option such as \"-global\", got \"" + opt +
                               "\" (QEMU would take a bare value for a disk image)");
      continue;
    }
    if (opt.rfind("--", 0) == 0) opt = opt.substr(1);  // QEMU accepts --name as -name
    if (auto it = owned.find(opt); it != owned.end()) {
      o.problems().add(at, "\"" + args[i] + "\" is refused: " + it->second);
    }
    if (flags.count(opt)) continue;
    if (i + 1 >= args.size()) {
      o.problems().add(at, "\"" + args[i] + "\" needs a value in the next entry");
      break;
    }
    const std::string& value = args[++i];
    std::string vat = o.path("qemu_args") + "/" + std::to_string(i);
    if (opt == "-chardev") {
      for (const std::string& part : split(value, ',')) {
        if (part.rfind("id=", 0) == 0 && our_chardevs.count(part.substr(3))) {
          o.problems().add(vat, "-chardev id \"" + part.substr(3) +
                                    "\" is refused: passlaunch's own chardev (ids qmp, serial0, "
                                    "tpm0-sock, qga0)");
        }
      }
    }
    if (opt == "-set" && value.rfind("chardev.", 0) == 0) {
      std::string id = value.substr(8, value.find('.', 8) - 8);
      if (our_chardevs.count(id)) {
        o.problems().add(
            vat, "-set " + value + " is refused: chardev \"" + id + "\" is passlaunch's own");
      }
    }
  }
}

void parse_smbios(Obj& o, Profile& p) {
  std::string mode;
  o.raw("mode", /*required=*/true);
  o.choice("mode", mode, {"host", "explicit"});
  p.smbios.mode = mode == "host"       ? Smbios::Mode::kHost
                  : mode == "explicit" ? Smbios::Mode::kExplicit
                                       : Smbios::Mode::kNone;
  struct Section {
    const char* key;
    int type;
    std::initializer_list<const char*> fields;
  };
  static const Section sections[] = {
      {"bios", 0, {"vendor", "version", "date", "release"}},
      {"system", 1, {"manufacturer", "product", "version", "serial", "uuid", "sku", "family"}},
      {"baseboard", 2, {"manufacturer", "product", "version", "serial", "asset", "location"}},
      {"chassis", 3, {"manufacturer", "version", "serial", "asset", "sku"}},
  };
  for (const Section& sec : sections) {
    const json* j = o.raw(sec.key);
    if (!j) continue;
    if (p.smbios.mode != Smbios::Mode::kExplicit && o.valid() && !mode.empty()) {
      o.problems().add(o.path(sec.key), "needs /smbios/mode \"explicit\", got \"" + mode + "\"");
    }
    Obj f(j, o.path(sec.key), o.problems());
    for (const char* field : sec.fields) {
      std::string value;
      f.str(field, value);
      if (!f.raw(field)) continue;
      static const std::regex uuid_re(
          "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}");
      static const std::regex release_re("[0-9]{1,3}\\.[0-9]{1,3}");
      if (std::string(field) == "uuid" && !std::regex_match(value, uuid_re)) {
        o.problems().add(f.path(field),
                         "expected a UUID such as "
                         "\"4c4c4544-0042-3510-8048-b4c04f4e3132\", got \"" +
                             value + "\"");
      } else if (std::string(field) == "release" && !std::regex_match(value, release_re)) {
        o.problems().add(f.path(field),
                         "expected \"major.minor\" such as \"5.17\", got \"" + value + "\"");
      } else if (value.empty() || value.find('\n') != std::string::npos) {
        o.problems().add(f.path(field), "expected a non-empty string on one line");
      } else {
        p.smbios.fields[sec.type].push_back({field, value});
      }
    }
  }
}

void parse_display(Obj& o, Profile& p) {
  Display& d = p.display;
  o.raw("type", /*required=*/true);
  o.choice("type", d.type, {"vnc", "spice"});
  o.str("listen", d.listen);
  o.choice("vga", d.vga, {"std", "virtio", "qxl"});
  if (d.listen != "unix") {
    static const std::regex re("([A-Za-z0-9.:-]+|\\[[0-9a-fA-F:]+\\]):([0-9]{1,5})");
    std::smatch m;
    bool ok = std::regex_match(d.listen, m, re);
    long port = ok ? std::stol(m[2].str()) : 0;
    if (!ok || port < 1 || port > 65535 || (d.type == "vnc" && port < 5900)) {
      o.problems().add(o.path("listen"),
                       "expected \"unix\" or \"ADDRESS:PORT\" such as \"127.0.0.1:5900\"" +
                           std::string(d.type == "vnc" ? " (VNC ports start at 5900)" : "") +
                           ", got \"" + d.listen + "\"");
    }
  }
}

void parse_sound(Obj& o, Profile& p) {
  Sound& s = p.sound;
  o.choice("model", s.model, {"ich9", "hda"});
  o.choice("codec", s.codec, {"duplex", "output", "micro"});
  o.raw("backend", /*required=*/true);
  o.choice("backend", s.backend, {"pa", "alsa", "none"});
  o.str("server", s.server);
  if (!s.server.empty() && s.backend != "pa") {
    o.problems().add(o.path("server"), "only the \"pa\" backend has a server");
  }
  if (s.server.find(',') != std::string::npos) {
    o.problems().add(o.path("server"), "expected no ',' in the server, got \"" + s.server + "\"");
  }
}

void parse_shmem(const json& j, const std::string& path, Problems& problems, Profile& p) {
  Obj o(&j, path, problems);
  Shmem m;
  o.str("name", m.name, true);
  o.integer("size_mib", m.size_mib, 1, 4096, true);
  o.str("user", m.user);
  static const std::regex name_re("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
  if (o.valid() && !m.name.empty() && !std::regex_match(m.name, name_re)) {
    problems.add(o.path("name"),
                 "expected a file name in /dev/shm (letters, digits, '.', '_', "
                 "'-'), got \"" +
                     m.name + "\"");
  }
  if (m.size_mib && (m.size_mib & (m.size_mib - 1)) != 0) {
    problems.add(o.path("size_mib"),
                 "expected a power of two (ivshmem), got " + std::to_string(m.size_mib));
  }
  static const std::regex user_re("[a-z_][a-z0-9_-]{0,31}\\$?");
  if (!m.user.empty() && !std::regex_match(m.user, user_re)) {
    problems.add(o.path("user"), "expected a user name, got \"" + m.user + "\"");
  }
  for (const Shmem& other : p.shmem) {
    if (other.name == m.name) problems.add(o.path("name"), "\"" + m.name + "\" is used twice");
  }
  p.shmem.push_back(m);
}

/// Whether `code` is an OVMF image with SMM: its descriptor in `dir` says
/// "requires-smm"; without a descriptor, its name says secboot/ms/snakeoil.
/// Also returns the descriptor's SMM image with enrolled keys, to suggest.
bool code_has_smm(const std::string& code, const std::string& dir, std::string& suggestion) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path want = fs::weakly_canonical(code, ec);
  std::optional<bool> described;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) {
    std::ifstream in(f);
    json d = json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!d.is_object()) continue;
    std::string exe;
    if (d.contains("mapping") && d["mapping"].contains("executable"))
      exe = d["mapping"]["executable"].value("filename", "");
    std::set<std::string> features;
    for (const json& x : d.value("features", json::array()))
      if (x.is_string()) features.insert(x.get<std::string>());
    bool smm = features.count("requires-smm") > 0;
    if (smm && features.count("enrolled-keys") && suggestion.empty()) {
      suggestion = exe;
      if (d["mapping"].contains("nvram-template"))
        suggestion +=
            " (with " + d["mapping"]["nvram-template"].value("filename", "") + " as vars_template)";
    }
    if (!exe.empty() && !described && fs::weakly_canonical(exe, ec) == want) described = smm;
  }
  if (suggestion.empty())
    suggestion =
        "/usr/share/OVMF/OVMF_CODE_4M.ms.fd (with /usr/share/OVMF/OVMF_VARS_4M.ms.fd "
        "as vars_template)";
  if (described) return *described;
  std::string name = fs::path(code).filename().string();
  for (const char* mark : {"secboot", ".ms.", "snakeoil", "smm"}) {
    if (name.find(mark) != std::string::npos) return true;
  }
  return false;
}

/// Checks that span several sections.
void cross_check(Profile& p, Problems& problems) {
  if (p.accel == Accel::kTcg && p.cpu.model == "host") {
    problems.add("/cpu/model", "\"host\" needs accel \"kvm\"; under \"tcg\" use \"max\"");
  }
  if (p.pinning.vcpus.empty() && (!p.pinning.emulator.empty() || p.pinning.realtime_priority)) {
    problems.add("/pinning/vcpus", "required when /pinning/emulator or realtime_priority is set");
  }
  if (p.firmware.type == Firmware::Type::kOvmf && !is_q35(p.machine)) {
    problems.add("/machine",
                 "OVMF firmware is used with a q35 machine here, got \"" + p.machine + "\"");
  }
  bool any_attached =
      std::any_of(p.devices.begin(), p.devices.end(), [](const VfioDevice& d) { return d.attach; });
  if (any_attached && !is_q35(p.machine)) {
    problems.add("/machine", "passthrough devices sit behind PCIe root ports: use \"q35\"");
  }
  if (any_attached && p.accel == Accel::kTcg) {
    problems.add("/accel", "VFIO passthrough needs \"kvm\" (or \"auto\"), got \"tcg\"");
  }
  if (p.panic == PanicModel::kHyperv && !p.cpu.hypervisor_bit) {
    // An error, not a note: the panic report is the option's only purpose, and
    // it would silently never come.
    problems.add("/panic/model",
                 "\"hyperv\" reports through the Hyper-V crash MSRs, which a guest only uses "
                 "when it sees a hypervisor, but /cpu/hypervisor_bit is false; expected "
                 "\"isa\" or \"pci\" (with the guest's pvpanic driver) or hypervisor_bit true");
  }
  if (p.panic == PanicModel::kHyperv && p.accel == Accel::kTcg) {
    problems.add("/panic/model", "\"hyperv\" needs accel \"kvm\" (or \"auto\"), got \"tcg\"");
  }
  if (p.hugepages && p.memory_mib % p.hugepage_size_mib != 0) {
    problems.add("/memory/size_mib",
                 "hugepage-backed memory must be a multiple of the page size (" +
                     std::to_string(p.hugepage_size_mib) + " MiB)");
  }
  if (p.pinning.vcpus.empty() && p.pinning.emulator_realtime_priority) {
    problems.add("/pinning/vcpus", "required when /pinning/emulator_realtime_priority is set");
  }
  if (p.pinning.emulator_realtime_priority && p.pinning.emulator.empty()) {
    problems.add("/pinning/emulator_realtime_priority",
                 "needs /pinning/emulator: real-time emulator threads must be kept off the vCPUs");
  }
  if (p.cpu.cache_passthrough && p.cpu.model != "host") {
    problems.add("/cpu/cache_passthrough",
                 "needs /cpu/model \"host\", got \"" + p.cpu.model + "\"");
  }
  if (p.cpu.hyperv.passthrough && p.accel == Accel::kTcg) {
    problems.add("/cpu/hyperv/mode",
                 "\"passthrough\" asks the host's KVM, so it needs accel "
                 "\"kvm\" (or \"auto\"), got \"tcg\"");
  }
  for (const auto& [name, value] : p.cpu.hyperv.features) {
    if (name == "hv-crash" && value == "off" && p.panic == PanicModel::kHyperv) {
      problems.add("/cpu/hyperv/features/hv-crash",
                   "false contradicts /panic/model \"hyperv\", which needs hv-crash");
    }
  }
  if (!p.platform.kernel_irqchip.empty() && p.accel == Accel::kTcg) {
    problems.add("/platform/kernel_irqchip", "needs accel \"kvm\" (or \"auto\"), got \"tcg\"");
  }
  if (p.firmware.secure_boot) {
    if (p.firmware.type != Firmware::Type::kOvmf) {
      problems.add("/firmware/secure_boot", "needs /firmware/type \"ovmf\"");
    }
    if (!is_q35(p.machine)) {
      problems.add("/firmware/secure_boot", "needs a q35 machine (SMM), got \"" + p.machine + "\"");
    }
  }
  // Boot indexes are unique over every device that has one.
  std::map<int, std::string> boot;
  auto claim = [&](const std::optional<int>& index, const std::string& path) {
    if (!index) return;
    auto [it, fresh] = boot.emplace(*index, path);
    if (!fresh) {
      problems.add(path, "boot_index " + std::to_string(*index) + " is also used by " + it->second +
                             "; expected each boot_index once");
    }
  };
  for (size_t i = 0; i < p.devices.size(); ++i)
    claim(p.devices[i].boot_index, "/devices/" + std::to_string(i) + "/boot_index");
  for (size_t i = 0; i < p.disks.size(); ++i)
    claim(p.disks[i].boot_index, "/disks/" + std::to_string(i) + "/boot_index");
  for (size_t i = 0; i < p.network.size(); ++i)
    claim(p.network[i].boot_index, "/network/" + std::to_string(i) + "/boot_index");
  for (size_t i = 0; i < p.devices.size(); ++i) {
    const VfioDevice& d = p.devices[i];
    if (!d.attach && (d.boot_index || !d.rombar || d.x_vga || d.vendor_id || d.device_id ||
                      d.sub_vendor_id || d.sub_device_id)) {
      problems.add("/devices/" + std::to_string(i) + "/attach",
                   "a device with \"attach\": false is not in the guest: it takes no boot_index, "
                   "rombar, x_vga or ids");
    }
  }
  size_t sata = std::count_if(p.disks.begin(), p.disks.end(),
                              [](const Disk& d) { return d.interface == "sata"; });
  if (sata > 6) {
    problems.add("/disks", "at most 6 sata disks and CD-ROMs (one AHCI controller), got " +
                               std::to_string(sata));
  }
}

/// Builds the document like json::parse, but knows the JSON path being read, so a
/// number too large for a double names its field, and bounds the nesting depth (the
/// document is later walked, dumped and destroyed recursively: 100000 nested arrays
/// would overflow the stack). No exception leaves it: errors are kept for the caller.
class ProfileSax {
 public:
  static constexpr size_t kMaxDepth = 64;

  explicit ProfileSax(json& root) : dom_(root, /*allow_exceptions=*/false) {}

  bool null() { return value(), dom_.null(); }
  bool boolean(bool v) { return value(), dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) { return value(), dom_.number_integer(v); }
  bool number_unsigned(json::number_unsigned_t v) { return value(), dom_.number_unsigned(v); }
  bool number_float(json::number_float_t v, const std::string& s) {
    return value(), dom_.number_float(v, s);
  }
  bool string(std::string& v) { return value(), dom_.string(v); }
  bool binary(json::binary_t& v) { return value(), dom_.binary(v); }
  bool start_object(size_t n) { return open(true) && dom_.start_object(n); }
  bool start_array(size_t n) { return open(false) && dom_.start_array(n); }
  bool end_object() { return stack_.pop_back(), dom_.end_object(); }
  bool end_array() { return stack_.pop_back(), dom_.end_array(); }
  bool key(std::string& k) {
    stack_.back().key = k;
    return dom_.key(k);
  }
  bool parse_error(size_t, const std::string& token, const nlohmann::detail::exception& e) {
    if (e.id == 406) {  // out_of_range.406: number overflow
      error_ = pointer(/*pending=*/true) + ": expected a number that fits a double, got " + token;
    } else {
      error_ = std::string("not valid JSON: ") + e.what();
    }
    return false;
  }

  /// Empty when the text parsed.
  const std::string& error() const { return error_; }

 private:
  struct Frame {
    bool object;
    std::string key;
    size_t index = 0;  ///< arrays: elements started so far
  };

  void value() {
    if (!stack_.empty() && !stack_.back().object) ++stack_.back().index;
  }
  bool open(bool object) {
    value();
    stack_.push_back({object, {}});
    if (stack_.size() > kMaxDepth) {
      error_ = pointer(false) + ": nested deeper than " + std::to_string(kMaxDepth) +
               " levels; a profile needs a handful";
      return false;
    }
    return true;
  }
  /// The JSON pointer of the value being read; `pending`: the innermost value has not
  /// been reported yet (an error in its token).
  std::string pointer(bool pending) const {
    std::string out;
    for (size_t i = 0; i < stack_.size(); ++i) {
      const Frame& f = stack_[i];
      bool last = i + 1 == stack_.size();
      if (last && !pending) break;  // the container just opened: its parents name it
      if (f.object) {
        out += "/" + f.key;
      } else {
        out += "/" + std::to_string(last ? f.index : f.index - 1);
      }
      if (out.size() > 200) return out + "/...";
    }
    return out.empty() ? "/" : out;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::vector<Frame> stack_;
  std::string error_;
};

}  // namespace

Profile parse_profile(std::string_view text, const std::string& file, const ProfileChecks& checks) {
  json root;
  ProfileSax sax(root);
  bool ok = json::sax_parse(text.begin(), text.end(), &sax, json::input_format_t::json,
                            /*strict=*/true, /*ignore_comments=*/true);
  if (!ok || !sax.error().empty()) {
    throw Error(Exit::kUsage, file + ": " + (sax.error().empty() ? "not valid JSON" : sax.error()),
                "profiles are JSON with // and /* */ comments; see profiles/README.md");
  }

  Profile p;
  p.file = file;
  Problems problems;
  problems.base_dir = std::filesystem::path(file).parent_path().string();
  {
    Obj o(&root, "", problems);
    o.str("name", p.name, true);
    static const std::regex name_re("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
    if (o.valid() && !p.name.empty() && !std::regex_match(p.name, name_re)) {
      problems.add("/name",
                   "expected letters, digits, '.', '_' or '-' (at most 64, not "
                   "starting with a symbol), got \"" +
                       p.name + "\"");
    }
    std::string accel = "auto";
    o.choice("accel", accel, {"kvm", "tcg", "auto"});
    p.accel = accel == "kvm" ? Accel::kKvm : accel == "tcg" ? Accel::kTcg : Accel::kAuto;
    if (const json* m = o.raw("machine")) {
      static const std::regex machine_re("q35|pc|pc-q35-[0-9]+\\.[0-9]+|pc-i440fx-[0-9]+\\.[0-9]+");
      if (!m->is_string() || !std::regex_match(m->get<std::string>(), machine_re)) {
        problems.add("/machine",
                     "expected \"q35\", \"pc\" or a versioned name such as "
                     "\"pc-q35-7.2\" or \"pc-i440fx-7.2\", got " +
                         m->dump());
      } else {
        p.machine = m->get<std::string>();
      }
    }
    if (const json* pl = o.raw("platform")) {
      Obj plat(pl, o.path("platform"), problems);
      bool vmport = true;
      if (plat.raw("vmport")) {
        plat.boolean("vmport", vmport);
        p.platform.vmport = vmport;
      }
      plat.choice("kernel_irqchip", p.platform.kernel_irqchip, {"on", "off", "split"});
    }
    if (const json* cl = o.raw("clock")) {
      Obj clock(cl, o.path("clock"), problems);
      bool hpet = true;
      if (clock.raw("hpet")) {
        clock.boolean("hpet", hpet);
        p.clock.hpet = hpet;
      }
      clock.choice("rtc_driftfix", p.clock.rtc_driftfix, {"none", "slew"});
      clock.choice("pit_lost_tick_policy", p.clock.pit_lost_tick_policy,
                   {"discard", "delay", "slew"});
    }

    if (const json* m = o.raw("memory", true)) {
      Obj mem(m, o.path("memory"), problems);
      mem.integer("size_mib", p.memory_mib, 16, 16 * 1024 * 1024, true);
      mem.boolean("hugepages", p.hugepages);
      std::string size;
      mem.choice("hugepage_size", size, {"2M", "1G"});
      if (!size.empty()) {
        p.hugepages = true;
        p.hugepage_size_mib = size == "1G" ? 1024 : 2;
      }
      mem.boolean("locked", p.memory_locked);
      mem.boolean("shared", p.memory_shared);
    }
    if (const json* c = o.raw("cpu", true)) {
      Obj cpu(c, o.path("cpu"), problems);
      parse_cpu(cpu, p.cpu);
    }
    if (const json* pin = o.raw("pinning")) {
      Obj pinning(pin, o.path("pinning"), problems);
      parse_pinning(pinning, p);
    }
    if (const json* f = o.raw("firmware")) {
      Obj fw(f, o.path("firmware"), problems);
      std::string type = "bios";
      fw.choice("type", type, {"bios", "ovmf"});
      p.firmware.type = type == "ovmf" ? Firmware::Type::kOvmf : Firmware::Type::kBios;
      bool ovmf = p.firmware.type == Firmware::Type::kOvmf;
      fw.path_str("code", p.firmware.code, ovmf);
      fw.path_str("vars_template", p.firmware.vars_template, ovmf);
      if (!ovmf && (!p.firmware.code.empty() || !p.firmware.vars_template.empty())) {
        problems.add(fw.path("type"), "code and vars_template need type \"ovmf\"");
      }
      fw.boolean("secure_boot", p.firmware.secure_boot);
      check_file(problems, fw.path("code"), p.firmware.code, checks);
      check_file(problems, fw.path("vars_template"), p.firmware.vars_template, checks);
      std::string use;
      if (p.firmware.secure_boot && ovmf && checks.files && !p.firmware.code.empty() &&
          !code_has_smm(p.firmware.code, checks.firmware_descriptors, use)) {
        problems.add(fw.path("code"), p.firmware.code +
                                          " is built without SMM, which Secure Boot needs; "
                                          "expected an SMM image such as " +
                                          use);
      }
    }
    if (const json* k = o.raw("kernel")) {
      Obj kb(k, o.path("kernel"), problems);
      KernelBoot boot;
      kb.path_str("path", boot.kernel, true);
      kb.path_str("initrd", boot.initrd);
      kb.str("append", boot.append);
      check_file(problems, kb.path("path"), boot.kernel, checks);
      check_file(problems, kb.path("initrd"), boot.initrd, checks);
      p.kernel = boot;
    }
    parse_devices(o, p, checks);
    parse_disks(o, p, checks);
    parse_network(o, p);
    parse_inputs(o, p, checks);
    parse_desk(o, p, checks);
    if (const json* t = o.raw("tpm")) {
      Obj tpm(t, o.path("tpm"), problems);
      tpm.path_str("state_dir", p.tpm_state_dir, true);
    }
    o.choice("rtc", p.rtc, {"utc", "localtime"});
    std::string serial = "none";
    o.choice("serial", serial, {"none", "log"});
    p.serial_log = serial == "log";
    if (const json* pn = o.raw("panic")) {
      Obj panic(pn, o.path("panic"), problems);
      std::string model;
      panic.raw("model", /*required=*/true);
      panic.choice("model", model, {"isa", "pci", "hyperv"});
      p.panic = model == "isa"      ? PanicModel::kIsa
                : model == "pci"    ? PanicModel::kPci
                : model == "hyperv" ? PanicModel::kHyperv
                                    : PanicModel::kNone;
    }
    if (const json* sm = o.raw("smbios")) {
      Obj smbios(sm, o.path("smbios"), problems);
      parse_smbios(smbios, p);
    }
    if (const json* d = o.raw("display")) {
      Obj display(d, o.path("display"), problems);
      parse_display(display, p);
    }
    if (const json* sn = o.raw("sound")) {
      Obj sound(sn, o.path("sound"), problems);
      parse_sound(sound, p);
    }
    o.boolean("guest_agent", p.guest_agent);
    if (const json* sh = o.raw("shmem")) {
      if (sh->is_array()) {
        for (size_t i = 0; i < sh->size(); ++i)
          parse_shmem((*sh)[i], o.path("shmem") + "/" + std::to_string(i), problems, p);
      } else {
        parse_shmem(*sh, o.path("shmem"), problems, p);
      }
    }
    parse_qemu_args(o, p);
    o.integer("shutdown_timeout_s", p.shutdown_timeout_s, 1, 3600);
    if (const json* h = o.raw("host")) {
      Obj host(h, o.path("host"), problems);
      parse_host(host, p.host);
    }
  }  // unknown keys are reported as the readers close
  cross_check(p, problems);

  if (!problems.list().empty()) {
    std::string msg = file + ": " + std::to_string(problems.list().size()) + " problem" +
                      (problems.list().size() == 1 ? "" : "s") + " in the profile:";
    for (const std::string& line : problems.list()) msg += "\n  " + file + ": " + line;
    throw Error(Exit::kUsage, msg,
                "nothing was started; fields are described in profiles/README.md");
  }
  return p;
}

std::optional<int> key_code(std::string_view name) {
  static const std::map<std::string_view, int> codes = {
#include "profile/key_names.inc"
  };
  auto it = codes.find(name);
  if (it == codes.end()) return std::nullopt;
  return it->second;
}

Profile load_profile(const std::string& path, const ProfileChecks& checks) {
  // A directory opens as a stream and reads as empty text: say what it is instead.
  std::error_code ec;
  auto st = std::filesystem::status(path, ec);
  if (!ec && std::filesystem::is_directory(st)) {
    throw Error(Exit::kUsage, path + " is a directory, expected a profile file",
                "give the profile's .json file, e.g. profiles/demo.json");
  }
  if (!ec && (std::filesystem::is_character_file(st) || std::filesystem::is_block_file(st) ||
              std::filesystem::is_socket(st))) {
    throw Error(Exit::kUsage, path + " is a device or socket, expected a profile file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw system_error(Exit::kUsage, "cannot read profile", path, errno);
  }
  // A profile is a few KiB; stop at a bound rather than reading without end (a FIFO).
  constexpr size_t kMaxBytes = 16u << 20;
  std::string text;
  char chunk[65536];
  while (text.size() <= kMaxBytes && in.read(chunk, sizeof chunk).gcount() > 0) {
    text.append(chunk, static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw system_error(Exit::kUsage, "cannot read profile", path, errno);
  if (text.size() > kMaxBytes) {
    throw Error(Exit::kUsage,
                path + ": larger than 16 MiB, expected a profile (a small JSON file)");
  }
  return parse_profile(text, path, checks);
}

}  // namespace pl
