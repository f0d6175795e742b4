#include "profile/profile.h"

#include <algorithm>
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

std::string type_name(const json& j) {
  if (j.is_number_integer()) return "an integer";
  if (j.is_number()) return "a number";
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
  if (ec || !std::filesystem::exists(st)) {
    problems.add(path, "file not found: " + file + " (expected an existing file)");
  } else if (std::filesystem::is_directory(st)) {
    problems.add(path, "is a directory: " + file + " (expected a file)");
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
  if (const json* h = o.raw("hyperv")) {
    Obj hv(h, o.path("hyperv"), o.problems());
    hv.boolean("enlightenments", cpu.hyperv.enlightenments);
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
  if (o.cpus("vcpus", pin.vcpus)) {
    if (pin.vcpus.size() != static_cast<size_t>(p.cpu.vcpus)) {
      o.problems().add(o.path("vcpus"),
                       "expected one host CPU per vCPU (" + std::to_string(p.cpu.vcpus) +
                           " from /cpu/vcpus), got " + std::to_string(pin.vcpus.size()));
    }
    std::map<int, size_t> first;
    for (size_t i = 0; i < pin.vcpus.size(); ++i) {
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
    if (!dev.attach && !dev.romfile.empty()) {
      o.problems().add(d.path("romfile"), "a device with \"attach\": false has no romfile");
    }
    p.devices.push_back(dev);
  });
}

void parse_disks(Obj& o, Profile& p, const ProfileChecks& checks) {
  o.array("disks", [&](const json& e, const std::string& path) {
    Obj d(&e, path, o.problems());
    Disk disk;
    d.path_str("path", disk.path, true);
    check_file(o.problems(), d.path("path"), disk.path, checks);
    d.choice("format", disk.format, {"raw", "qcow2"});
    d.choice("interface", disk.interface, {"virtio", "nvme"});
    d.str("iothread", disk.iothread);
    d.boolean("readonly", disk.readonly);
    if (!disk.iothread.empty()) {
      bool known = std::any_of(p.pinning.iothreads.begin(), p.pinning.iothreads.end(),
                               [&](const IoThread& t) { return t.id == disk.iothread; });
      if (!known) {
        o.problems().add(d.path("iothread"),
                         "expected the id of an iothread in "
                         "/pinning/iothreads, got \"" +
                             disk.iothread + "\"");
      }
      if (disk.interface != "virtio") {
        o.problems().add(d.path("iothread"), "only virtio disks run on an iothread");
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
    p.network.push_back(net);
  });
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

/// Checks that span several sections.
void cross_check(Profile& p, Problems& problems) {
  if (p.accel == Accel::kTcg && p.cpu.model == "host") {
    problems.add("/cpu/model", "\"host\" needs accel \"kvm\"; under \"tcg\" use \"max\"");
  }
  if (p.pinning.vcpus.empty() && (!p.pinning.emulator.empty() || p.pinning.realtime_priority)) {
    problems.add("/pinning/vcpus", "required when /pinning/emulator or realtime_priority is set");
  }
  if (p.firmware.type == Firmware::Type::kOvmf && p.machine != "q35") {
    problems.add("/machine", "OVMF firmware is used with \"q35\" here");
  }
  bool any_attached =
      std::any_of(p.devices.begin(), p.devices.end(), [](const VfioDevice& d) { return d.attach; });
  if (any_attached && p.machine != "q35") {
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
  if (p.hugepages && p.memory_mib % 2 != 0) {
    problems.add("/memory/size_mib", "hugepage-backed memory must be a multiple of 2 MiB");
  }
}

}  // namespace

Profile parse_profile(std::string_view text, const std::string& file, const ProfileChecks& checks) {
  json root;
  try {
    root = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/true,
                       /*ignore_comments=*/true);
  } catch (const json::parse_error& e) {
    throw Error(Exit::kUsage, file + ": not valid JSON: " + e.what(),
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
    o.choice("machine", p.machine, {"q35", "pc"});

    if (const json* m = o.raw("memory", true)) {
      Obj mem(m, o.path("memory"), problems);
      mem.integer("size_mib", p.memory_mib, 16, 16 * 1024 * 1024, true);
      mem.boolean("hugepages", p.hugepages);
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
      check_file(problems, fw.path("code"), p.firmware.code, checks);
      check_file(problems, fw.path("vars_template"), p.firmware.vars_template, checks);
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

Profile load_profile(const std::string& path, const ProfileChecks& checks) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw system_error(Exit::kUsage, "cannot read profile", path, errno);
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_profile(buf.str(), path, checks);
}

}  // namespace pl
