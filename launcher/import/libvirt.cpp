#include "import/libvirt.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "core/cpulist.h"
#include "core/error.h"
#include "host/pci.h"
#include "import/host_facts.h"
#include "import/init.h"
#include "profile/profile.h"

namespace pl::import {
namespace {

using ojson = nlohmann::ordered_json;
using pugi::xml_attribute;
using pugi::xml_node;

constexpr const char* kBookkeeping = "libvirt bookkeeping";
constexpr const char* kAddress =
    "address assignment: passlaunch lays out the guest's PCI slots itself";
constexpr const char* kQemuNs = "http://libvirt.org/schemas/domain/qemu/1.0";

bool is(const char* a, const char* b) { return std::strcmp(a, b) == 0; }

/// One import: the document, the marks, the profile being built, the problems.
class Importer {
 public:
  Importer(std::string_view xml, const std::string& file, const ImportOptions& o)
      : xml_(xml), file_(file), o_(o) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < xml_.size(); ++i) {
      if (xml_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  ImportResult run();

 private:
  // ---- locations and problems ----
  std::string loc_of_offset(ptrdiff_t off) const {
    if (off < 0) return file_;
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), size_t(off));
    size_t line = it - line_starts_.begin();
    size_t col = off - line_starts_[line - 1] + 1;
    return file_ + ":" + std::to_string(line) + ":" + std::to_string(col);
  }
  /// offset_debug() points at the element's name; the "<" is one before.
  std::string loc(xml_node n) const {
    ptrdiff_t off = n.offset_debug();
    return loc_of_offset(off > 0 ? off - 1 : off);
  }
  void problem(xml_node n, const std::string& msg) { problems_.push_back(loc(n) + ": " + msg); }

  /// A decimal (or 0x hex, as libvirt allows for addresses) number.
  std::optional<uint64_t> number(xml_node n, std::string_view text, const std::string& what,
                                 uint64_t max = UINT64_MAX) {
    std::string_view s = text;
    while (!s.empty() && std::isspace((unsigned char)s.front())) s.remove_prefix(1);
    while (!s.empty() && std::isspace((unsigned char)s.back())) s.remove_suffix(1);
    int base = 10;
    if (s.starts_with("0x") || s.starts_with("0X")) {
      base = 16;
      s.remove_prefix(2);
    }
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v > max) {
      problem(n, "<" + std::string(n.name()) + "> " + what + ": expected a number" +
                     (max != UINT64_MAX ? " up to " + std::to_string(max) : std::string()) +
                     ", got \"" + std::string(text) + "\"");
      return std::nullopt;
    }
    return v;
  }
  std::optional<uint64_t> attr_number(xml_node n, const char* attr, uint64_t max = UINT64_MAX) {
    xml_attribute a = n.attribute(attr);
    if (!a) return std::nullopt;
    return number(n, a.value(), std::string("attribute ") + attr, max);
  }
  std::optional<std::vector<int>> cpuset(xml_node n, const char* attr = "cpuset") {
    xml_attribute a = n.attribute(attr);
    if (!a) {
      problem(n, "<" + std::string(n.name()) + "> needs a " + attr + " attribute");
      return std::nullopt;
    }
    auto cpus = libvirt_cpuset(a.value());
    if (!cpus) {
      problem(n, "<" + std::string(n.name()) + "> attribute " + attr +
                     ": expected a CPU list such as \"0-3,8\" or \"0-3,^2\", got \"" + a.value() +
                     "\"");
      return std::nullopt;
    }
    if (cpus->empty()) {
      problem(n, "<" + std::string(n.name()) + "> attribute " + attr +
                     ": expected at least one CPU, got \"" + a.value() + "\"");
      return std::nullopt;
    }
    return cpus;
  }
  /// libvirt's CPU set syntax: the kernel's list ("0-3,8") plus "^N" exclusions
  /// ("0-3,^2" is 0,1,3), as virBitmapParse reads it; ascending, no repeats.
  static std::optional<std::vector<int>> libvirt_cpuset(std::string_view text) {
    std::set<int> in, out;
    while (true) {
      size_t comma = text.find(',');
      std::string_view part = text.substr(0, comma);
      while (!part.empty() && std::isspace((unsigned char)part.front())) part.remove_prefix(1);
      while (!part.empty() && std::isspace((unsigned char)part.back())) part.remove_suffix(1);
      if (part.starts_with('^')) {
        part.remove_prefix(1);
        int cpu = 0;
        auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), cpu);
        if (part.empty() || ec != std::errc() || p != part.data() + part.size() || cpu < 0) {
          return std::nullopt;
        }
        out.insert(cpu);
      } else {
        auto cpus = parse_cpulist(part);
        if (part.empty() || !cpus) return std::nullopt;
        in.insert(cpus->begin(), cpus->end());
      }
      if (comma == std::string_view::npos) break;
      text.remove_prefix(comma + 1);
    }
    std::vector<int> result;
    for (int c : in) {
      if (!out.count(c)) result.push_back(c);
    }
    return result;
  }
  /// Bytes -> MiB for libvirt's memory units (default KiB).
  std::optional<uint64_t> memory_bytes(xml_node n) {
    auto v = number(n, n.text().get(), "value");
    if (!v) return std::nullopt;
    std::string unit = n.attribute("unit") ? n.attribute("unit").value() : "KiB";
    static const std::map<std::string, uint64_t> kUnits = {
        {"b", 1},           {"bytes", 1},       {"KB", 1000},        {"k", 1024},
        {"KiB", 1024},      {"MB", 1000000},    {"M", 1 << 20},      {"MiB", 1 << 20},
        {"GB", 1000000000}, {"G", 1ull << 30},  {"GiB", 1ull << 30}, {"TB", 1000000000000},
        {"T", 1ull << 40},  {"TiB", 1ull << 40}};
    auto it = kUnits.find(unit);
    if (it == kUnits.end()) {
      problem(n, "<" + std::string(n.name()) +
                     "> attribute unit: expected one of b, KiB, MiB, "
                     "GiB, TiB, KB, MB, GB, TB, got \"" +
                     unit + "\"");
      return std::nullopt;
    }
    return *v * it->second;
  }

  // ---- marks ----
  void carried(xml_node n, const std::string& to = {}) { t_.carried(n, to); }
  void carried_attr(xml_node n, const char* a, const std::string& to = {}) {
    t_.carried(n.attribute(a), n, to);
  }
  void dropped_attr(xml_node n, const char* a, const std::string& why, bool visible = false) {
    t_.dropped(n.attribute(a), n, why, visible);
  }
  /// <address>, <alias> and <boot> inside a device.
  void device_bookkeeping(xml_node dev) {
    for (xml_node c : dev.children("address")) t_.dropped_all(c, kAddress);
    for (xml_node c : dev.children("alias")) t_.dropped_all(c, kBookkeeping);
    for (xml_node c : dev.children("boot")) {
      // Consumed by the device's mapping (boot_index); anything left is said.
      if (!t_.marked(c)) t_.dropped_all(c, "boot order of a device the profile does not hold");
    }
  }

  // ---- the parts of a domain ----
  void map_general(xml_node dom);
  void map_memory(xml_node dom);
  void map_cpus(xml_node dom);
  void map_cputune(xml_node dom);
  void map_sched(xml_node ct);
  void map_os(xml_node dom);
  void map_features(xml_node dom);
  void map_cpu(xml_node dom);
  void map_clock(xml_node dom);
  void map_lifecycle(xml_node dom);
  void map_devices(xml_node devices);
  void map_disk(xml_node disk);
  void map_interface(xml_node iface);
  void map_hostdev(xml_node hd);
  void map_input(xml_node in);
  void map_commandline(xml_node cmd);
  void add_host_section();

  std::string_view xml_;
  std::string file_;
  const ImportOptions& o_;
  std::vector<size_t> line_starts_;
  std::vector<std::string> problems_;
  Tracker t_;
  CommentedProfile p_;
  std::vector<Added> added_;
  pugi::xml_document doc_;

  // Facts gathered on the way.
  int vcpus_ = 1;
  xml_node vcpu_node_;                           // <vcpu> when it has a cpuset
  std::optional<std::vector<int>> vcpu_cpuset_;  // its cpuset
  bool hypervisor_off_ = false;
  std::map<uint64_t, std::string> iothread_ids_;  // libvirt iothread id -> profile id
  std::string first_gpu_;                         // first passed-through host address
  bool has_usb_hostdev_ = false;
  bool has_panic_ = false;
  std::string qemu_prefix_ = "qemu";
};

void Importer::map_general(xml_node dom) {
  xml_attribute type = dom.attribute("type");
  if (is(type.value(), "kvm")) {
    p_.set("/accel", "kvm", "<domain type='kvm'>");
    carried_attr(dom, "type", "/accel");
  } else if (is(type.value(), "qemu")) {
    p_.set("/accel", "tcg", "<domain type='qemu'>: QEMU's emulation (TCG)");
    carried_attr(dom, "type", "/accel");
  } else {
    problem(dom, std::string("<domain type='") + type.value() +
                     "'>: passlaunch runs QEMU domains only (type 'kvm' or 'qemu')");
  }
  carried(dom);
  dropped_attr(dom, "id", "libvirt bookkeeping (the id of a running domain)");
  for (xml_attribute a : dom.attributes()) {
    std::string n = a.name();
    if (n.starts_with("xmlns")) {
      t_.dropped(a, dom,
                 "XML namespace declaration (the namespace's elements are reported "
                 "themselves)",
                 false);
    }
  }

  if (xml_node name = dom.child("name")) {
    std::string raw = name.text().get();
    std::string clean;
    for (char c : raw) {
      clean += (std::isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-') ? c : '-';
    }
    if (clean.size() > 64) clean.resize(64);
    if (!o_.name.empty()) {
      p_.set("/name", o_.name, "--name (the domain's <name> is " + raw + ")");
      t_.changed(name, "/name", "named " + o_.name + " by --name", false);
    } else if (clean != raw || clean.empty()) {
      if (clean.empty()) clean = "vm";
      p_.set("/name", clean, "<name>" + raw + "</name>, made a valid profile name");
      t_.changed(name, "/name",
                 "a profile name is letters, digits, '.', '_', '-' (at most 64): " + clean, false);
    } else {
      p_.set("/name", raw, "<name>");
      carried(name, "/name");
    }
  } else {
    p_.set("/name", o_.name.empty() ? "vm" : o_.name, "the domain has no <name>");
  }
  for (const char* tag : {"uuid", "title", "description", "metadata"}) {
    for (xml_node n : dom.children(tag)) t_.dropped_all(n, kBookkeeping);
  }
  for (const char* tag : {"resource", "seclabel", "keywrap", "idmap"}) {
    for (xml_node n : dom.children(tag)) {
      t_.dropped_all(n, std::string(kBookkeeping) + " (libvirt's cgroup placement, security " +
                            "labels; passlaunch runs QEMU as it is started)");
    }
  }
  for (xml_node n : dom.children("genid")) {
    t_.dropped_all(n, "VM generation id: not held by a profile", true);
  }
}

void Importer::map_memory(xml_node dom) {
  xml_node mem = dom.child("memory");
  if (!mem) {
    problem(dom, "<domain> has no <memory>");
    return;
  }
  auto bytes = memory_bytes(mem);
  carried_attr(mem, "unit", "/memory/size_mib");
  if (!bytes) return;
  // Rounded up to whole MiB, as libvirt does for -m.
  uint64_t mib = (*bytes + (1 << 20) - 1) >> 20;
  if (mib == 0) {
    problem(mem, "<memory>: less than 1 MiB");
    return;
  }
  if (*bytes % (1 << 20) != 0) {
    t_.changed(mem, "/memory/size_mib", "rounded down to whole MiB (" + std::to_string(mib) + ")",
               true);
  } else {
    carried(mem, "/memory/size_mib");
  }
  p_.set("/memory/size_mib", mib, "<memory>");
  dropped_attr(mem, "dumpCore", "core dump filtering: not held by a profile");

  for (xml_node cur : dom.children("currentMemory")) {
    auto cb = memory_bytes(cur);
    carried_attr(cur, "unit");
    if (cb && (*cb + (1 << 20) - 1) >> 20 == mib) {
      carried(cur, "/memory/size_mib");
    } else if (cb) {
      t_.changed(cur, "/memory/size_mib",
                 "a balloon target below <memory>; without a balloon the guest has all of "
                 "<memory>",
                 true);
    }
    t_.attributes_like_element(cur);
  }
  for (xml_node n : dom.children("maxMemory")) {
    t_.dropped_all(n, "memory hotplug: not held by a profile", true);
  }
  if (xml_node mb = dom.child("memoryBacking")) {
    carried(mb);
    for (xml_node c : mb.children()) {
      if (c.type() != pugi::node_element) continue;
      if (is(c.name(), "hugepages")) {
        p_.set("/memory/hugepages", true, "<memoryBacking><hugepages/>");
        carried(c, "/memory/hugepages");
        for (xml_node page : c.children("page")) {
          auto size = attr_number(page, "size");
          std::string unit = page.attribute("unit") ? page.attribute("unit").value() : "KiB";
          bool two_mib = size && ((unit == "KiB" || unit == "k")   ? *size == 2048
                                  : (unit == "M" || unit == "MiB") ? *size == 2
                                                                   : false);
          bool one_gib = size && ((unit == "KiB" || unit == "k")   ? *size == 1048576
                                  : (unit == "M" || unit == "MiB") ? *size == 1024
                                  : (unit == "G" || unit == "GiB") ? *size == 1
                                                                   : false);
          if (two_mib) {
            t_.carried_all(page, "/memory/hugepages");
          } else if (one_gib) {
            p_.set("/memory/hugepage_size", "1G", "<hugepages><page size='1GiB'>");
            t_.carried_all(page, "/memory/hugepage_size");
          } else {
            t_.changed(page, "/memory/hugepages",
                       "passlaunch backs memory with 2 MiB pages (/dev/hugepages)", false);
            t_.attributes_like_element(page);
          }
        }
        if (mib % 2 != 0) {
          problem(mem, "<memory> is " + std::to_string(mib) +
                           " MiB: hugepages need a multiple of 2 MiB");
        }
      } else if (is(c.name(), "locked")) {
        p_.set("/memory/locked", true, "<memoryBacking><locked/>");
        t_.carried_all(c, "/memory/locked");
      } else if (is(c.name(), "nosharepages")) {
        t_.dropped_all(c, "KSM opt-out: not held by a profile");
      } else if (is(c.name(), "source") || is(c.name(), "access") || is(c.name(), "allocation")) {
        t_.dropped_all(c,
                       "memory backend options: passlaunch uses anonymous memory or "
                       "/dev/hugepages");
      }
    }
  }
}

void Importer::map_cpus(xml_node dom) {
  xml_node vcpu = dom.child("vcpu");
  if (!vcpu) {
    p_.set("/cpu/vcpus", 1, "the domain has no <vcpu>: one, as libvirt");
    vcpus_ = 1;
  } else {
    auto n = number(vcpu, vcpu.text().get(), "value", 1024);
    if (n && *n == 0) problem(vcpu, "<vcpu>: at least 1");
    if (n) vcpus_ = int(*n);
    if (!n) vcpus_ = 1024;  // unknown: no range errors that follow from it
    p_.set("/cpu/vcpus", vcpus_, "<vcpu>");
    carried(vcpu, "/cpu/vcpus");
    if (xml_attribute pl = vcpu.attribute("placement")) {
      if (is(pl.value(), "static")) {
        t_.carried(pl, vcpu);
      } else {
        t_.dropped(pl, vcpu, "numad placement: not held by a profile", false);
      }
    }
    if (auto cur = attr_number(vcpu, "current", 1024)) {
      if (int(*cur) == vcpus_) {
        carried_attr(vcpu, "current", "/cpu/vcpus");
      } else {
        t_.changed(vcpu.attribute("current"), vcpu, "/cpu/vcpus",
                   "every vCPU is online at boot (" + std::to_string(vcpus_) + ", not " +
                       std::to_string(*cur) + ")");
      }
    }
    // The set of every vCPU without a <vcpupin>, of the emulator without an
    // <emulatorpin> and of iothreads without an <iothreadpin>: map_cputune()
    // hands it out and marks the attribute.
    if (vcpu.attribute("cpuset")) {
      vcpu_node_ = vcpu;
      if (auto set = cpuset(vcpu)) vcpu_cpuset_ = *set;
    }
  }
  for (xml_node v : dom.children("vcpus")) {
    t_.dropped_all(v, "per-vCPU hotplug state: every vCPU is online at boot", false);
  }
  if (xml_node io = dom.child("iothreads")) {
    auto n = number(io, io.text().get(), "value", 64);
    carried(io, "/pinning/iothreads");
    if (n) {
      std::vector<uint64_t> ids;
      if (xml_node idn = dom.child("iothreadids")) {
        carried(idn, "/pinning/iothreads");
        for (xml_node t : idn.children("iothread")) {
          if (auto id = attr_number(t, "id", 1 << 20)) {
            ids.push_back(*id);
            carried(t, "/pinning/iothreads");
            carried_attr(t, "id", "/pinning/iothreads");
          }
        }
      }
      for (uint64_t id = 1; ids.size() < *n; ++id) {
        if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
      }
      for (uint64_t id : ids) {
        std::string pid = "io" + std::to_string(id);
        iothread_ids_[id] = pid;
        p_.push("/pinning/iothreads", ojson{{"id", pid}},
                "<iothreads>: libvirt's iothread " + std::to_string(id));
      }
    }
  }
}

void Importer::map_cputune(xml_node dom) {
  // Without a <cputune> the children loops below see nothing; <vcpu cpuset>
  // still pins.
  xml_node ct = dom.child("cputune");
  if (ct) carried(ct);
  std::map<uint64_t, std::pair<std::vector<int>, xml_node>> pins;
  for (xml_node pin : ct.children("vcpupin")) {
    auto v = attr_number(pin, "vcpu", 1023);
    auto set = cpuset(pin);
    if (!pin.attribute("vcpu")) problem(pin, "<vcpupin> needs a vcpu attribute");
    if (!v || !set) continue;
    if (int(*v) >= vcpus_) {
      problem(pin, "<vcpupin vcpu='" + std::to_string(*v) + "'>: the domain has " +
                       std::to_string(vcpus_) + " vCPUs (0-" + std::to_string(vcpus_ - 1) + ")");
      continue;
    }
    if (auto it = pins.find(*v); it != pins.end()) {
      problem(pin, "<vcpupin vcpu='" + std::to_string(*v) + "'> is given twice (first at " +
                       loc(it->second.second).substr(file_.size() + 1) + ")");
      continue;
    }
    pins[*v] = {*set, pin};
  }
  // The CPUs of each vCPU: its <vcpupin>, else <vcpu cpuset>, else (libvirt
  // leaves it unpinned) every online CPU of this host, said in the report.
  std::vector<int> host_cpus;
  if (o_.host) {
    if (auto t = o_.host->read_trimmed("/sys/devices/system/cpu/online")) {
      host_cpus = parse_cpulist(*t).value_or(std::vector<int>{});
    }
  }
  bool vcpu_set_used = false;
  std::vector<int> unpinned;
  std::vector<std::vector<int>> sets;
  std::string why;
  if (!pins.empty() || vcpu_cpuset_) {
    for (int i = 0; i < vcpus_ && i < 1024; ++i) {
      if (auto it = pins.find(i); it != pins.end()) {
        sets.push_back(it->second.first);
      } else if (vcpu_cpuset_) {
        sets.push_back(*vcpu_cpuset_);
        vcpu_set_used = true;
      } else {
        sets.push_back(host_cpus);
        unpinned.push_back(i);
      }
    }
    if (!unpinned.empty() && host_cpus.empty()) {
      why = "only " + std::to_string(pins.size()) + " of " + std::to_string(vcpus_) +
            " vCPUs are pinned and the host's online CPUs are unknown; a profile pins every "
            "vCPU or none";
    }
    // A profile gives a vCPU pinned to one CPU that CPU alone (sets may overlap).
    std::map<int, int> alone;
    for (int i = 0; i < int(sets.size()) && why.empty(); ++i) {
      if (sets[i].size() != 1) continue;
      auto [it, fresh] = alone.emplace(sets[i].front(), i);
      if (!fresh) {
        why = "vCPUs " + std::to_string(it->second) + " and " + std::to_string(i) +
              " share host CPU " + std::to_string(sets[i].front()) +
              " as their only CPU; a profile gives such a vCPU its own";
      }
    }
  }
  for (const auto& [v, s] : pins) {
    if (why.empty()) {
      t_.carried_all(s.second, "/pinning/vcpus");
    } else {
      t_.dropped_all(s.second, "vCPUs left unpinned: " + why);
    }
  }
  if (!sets.empty() && why.empty()) {
    bool single = std::all_of(sets.begin(), sets.end(), [](auto& s) { return s.size() == 1; });
    std::vector<int> cpus;
    for (const auto& s : sets) cpus.push_back(s.front());
    std::vector<int> sorted = cpus;
    std::sort(sorted.begin(), sorted.end());
    if (single && sorted == cpus &&
        (cpus.size() == 1 || cpus.back() - cpus.front() + 1 == int(cpus.size()))) {
      p_.set("/pinning/vcpus", format_cpulist(cpus),
             "<cputune><vcpupin>: vCPU n on host CPU " + std::to_string(cpus.front()) + "+n");
    } else if (single) {
      p_.set("/pinning/vcpus", cpus, "<cputune><vcpupin>, in vCPU order");
    } else {
      ojson list = ojson::array();
      for (const auto& s : sets) {
        if (s.size() == 1) {
          list.push_back(s.front());
        } else {
          list.push_back(format_cpulist(s));
        }
      }
      p_.set("/pinning/vcpus", list,
             pins.empty() ? "<vcpu cpuset>: every vCPU on this set"
                          : "<cputune><vcpupin> (a string: the set that vCPU may run on)" +
                                std::string(vcpu_set_used ? ", <vcpu cpuset> for the others" : ""));
    }
    for (int i : unpinned) {
      added_.push_back({"/pinning/vcpus/" + std::to_string(i),
                        "vCPU " + std::to_string(i) +
                            " has no <vcpupin>: libvirt lets it run on every host CPU, here " +
                            format_cpulist(host_cpus) + " (/sys/devices/system/cpu/online)"});
    }
  }
  bool emulator_pinned = false;
  for (xml_node e : ct.children("emulatorpin")) {
    if (auto set = cpuset(e)) {
      p_.set("/pinning/emulator", format_cpulist(*set), "<cputune><emulatorpin>");
      t_.carried_all(e, "/pinning/emulator");
      emulator_pinned = true;
    }
  }
  std::set<uint64_t> iothread_pinned;
  for (xml_node e : ct.children("iothreadpin")) {
    auto id = attr_number(e, "iothread", 1 << 20);
    auto set = cpuset(e);
    if (!id || !set) continue;
    auto it = iothread_ids_.find(*id);
    if (it == iothread_ids_.end()) {
      problem(e, "<iothreadpin iothread='" + std::to_string(*id) + "'>: no such iothread");
      continue;
    }
    ojson& list = p_.json["pinning"]["iothreads"];
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i]["id"] == it->second) {
        list[i]["cpus"] = format_cpulist(*set);
        t_.carried_all(e, "/pinning/iothreads/" + std::to_string(i) + "/cpus");
        p_.comment("/pinning/iothreads/" + std::to_string(i),
                   "<iothreads> and <iothreadpin iothread='" + std::to_string(*id) + "'>");
        iothread_pinned.insert(*id);
      }
    }
  }
  // <vcpu cpuset> is also the set of the emulator and of unpinned iothreads.
  if (vcpu_cpuset_) {
    std::string to;
    auto add_to = [&](const std::string& ptr) { to += (to.empty() ? "" : " ") + ptr; };
    if (vcpu_set_used) add_to("/pinning/vcpus");
    if (!emulator_pinned && why.empty()) {
      p_.set("/pinning/emulator", format_cpulist(*vcpu_cpuset_),
             "<vcpu cpuset>: libvirt's set for the emulator without <emulatorpin>");
      add_to("/pinning/emulator");
    }
    if (p_.has("/pinning/iothreads")) {
      ojson& list = p_.json["pinning"]["iothreads"];
      for (const auto& [lid, pid] : iothread_ids_) {
        if (iothread_pinned.count(lid) || !emulator_pinned) continue;  // else: the emulator's
        for (size_t i = 0; i < list.size(); ++i) {
          if (list[i]["id"] != pid) continue;
          list[i]["cpus"] = format_cpulist(*vcpu_cpuset_);
          p_.comment("/pinning/iothreads/" + std::to_string(i),
                     "<iothreads>; <vcpu cpuset>: libvirt's set for an iothread without "
                     "<iothreadpin>");
          add_to("/pinning/iothreads/" + std::to_string(i) + "/cpus");
        }
      }
    }
    if (!why.empty()) {
      dropped_attr(vcpu_node_, "cpuset", "vCPUs left unpinned: " + why, false);
    } else if (to.empty()) {
      dropped_attr(vcpu_node_, "cpuset",
                   "every vCPU has a <vcpupin>, the emulator an <emulatorpin> and every "
                   "iothread an <iothreadpin>: libvirt uses this set for none of them",
                   false);
    } else {
      carried_attr(vcpu_node_, "cpuset", to);
    }
  } else if (vcpu_node_) {
    dropped_attr(vcpu_node_, "cpuset", "not a CPU set (said above)", false);
  }
  map_sched(ct);
  for (const char* tag :
       {"shares", "period", "quota", "global_period", "global_quota", "emulator_period",
        "emulator_quota", "iothread_period", "iothread_quota"}) {
    for (xml_node s : ct.children(tag)) {
      t_.dropped_all(s, "cgroup CPU shares and bandwidth: not held by a profile");
    }
  }
  for (const char* tag : {"cachetune", "memorytune"}) {
    for (xml_node s : ct.children(tag)) {
      t_.dropped_all(s, "resctrl cache/memory bandwidth allocation: not held by a profile");
    }
  }
}

// <vcpusched>, <emulatorsched>, <iothreadsched>: real-time priorities. A profile
// has one policy (realtime_policy) for all of them: the first element's.
void Importer::map_sched(xml_node ct) {
  std::string policy;
  for (xml_node s : ct.children()) {
    std::string tag = s.name();
    if (tag != "vcpusched" && tag != "emulatorsched" && tag != "iothreadsched") continue;
    std::string sched = s.attribute("scheduler").value();
    auto prio = attr_number(s, "priority", 99);
    if (sched != "fifo" && sched != "rr") {
      t_.dropped_all(
          s, "scheduler '" + sched + "': a profile holds real-time priorities (fifo, rr) only");
      continue;
    }
    if (!prio || *prio < 1) {
      t_.dropped_all(s, "no priority from 1 to 99: a real-time scheduler needs one");
      continue;
    }
    std::string p = std::to_string(*prio);
    std::string to;
    if (tag == "vcpusched") {
      if (!p_.has("/pinning/vcpus")) {
        t_.dropped_all(s, "real-time vCPUs need pinned vCPUs in a profile, and these are not");
        continue;
      }
      std::optional<std::vector<int>> which;
      if (s.attribute("vcpus")) which = cpuset(s, "vcpus");
      bool all = !which || int(which->size()) == vcpus_;
      bool again = p_.has("/pinning/realtime_priority");
      if (again && p_.json["pinning"]["realtime_priority"] != *prio) {
        t_.changed(s, "/pinning/realtime_priority",
                   "every vCPU runs at one priority in a profile: " +
                       p_.json["pinning"]["realtime_priority"].dump() +
                       " (an earlier "
                       "<vcpusched>), not " +
                       p,
                   false);
        t_.attributes_like_element(s);
        continue;
      }
      if (!again) p_.set("/pinning/realtime_priority", *prio, "<cputune><vcpusched>");
      to = "/pinning/realtime_priority";
      if (!all && !again) {
        t_.changed(s, to, "every vCPU runs real-time at priority " + p + ", not only these", false);
        t_.attributes_like_element(s);
        to.clear();
      } else {
        carried(s, to);
        if (s.attribute("vcpus")) carried_attr(s, "vcpus", to);
        carried_attr(s, "priority", to);
      }
    } else if (tag == "emulatorsched") {
      if (!p_.has("/pinning/emulator") || !p_.has("/pinning/vcpus")) {
        t_.dropped_all(s,
                       "a real-time emulator needs pinned vCPUs and <emulatorpin> (or "
                       "<vcpu cpuset>) in a profile, to keep it off the vCPUs");
        continue;
      }
      to = "/pinning/emulator_realtime_priority";
      p_.set(to, *prio, "<cputune><emulatorsched>");
      carried(s, to);
      carried_attr(s, "priority", to);
    } else {
      auto ids = cpuset(s, "iothreads");
      if (!ids) continue;
      ojson& list = p_.json["pinning"]["iothreads"];
      std::vector<std::string> ptrs;
      for (int id : *ids) {
        auto it = iothread_ids_.find(uint64_t(id));
        if (it == iothread_ids_.end()) {
          problem(s, "<iothreadsched iothreads='" + std::string(s.attribute("iothreads").value()) +
                         "'>: no iothread " + std::to_string(id));
          continue;
        }
        for (size_t i = 0; i < list.size(); ++i) {
          if (list[i]["id"] == it->second) {
            list[i]["realtime_priority"] = *prio;
            ptrs.push_back("/pinning/iothreads/" + std::to_string(i) + "/realtime_priority");
          }
        }
      }
      for (const auto& ptr : ptrs) to += (to.empty() ? "" : " ") + ptr;
      carried(s, to);
      carried_attr(s, "iothreads", to);
      carried_attr(s, "priority", to);
    }
    // The scheduler attribute: the profile's one policy.
    if (policy.empty()) {
      policy = sched;
      if (sched == "rr") p_.set("/pinning/realtime_policy", "rr", "<cputune> scheduler='rr'");
      carried_attr(s, "scheduler", "/pinning/realtime_policy");
    } else if (sched == policy) {
      carried_attr(s, "scheduler", "/pinning/realtime_policy");
    } else {
      t_.changed(s.attribute("scheduler"), s, "/pinning/realtime_policy",
                 "runs SCHED_" + std::string(policy == "rr" ? "RR" : "FIFO") + ", not " +
                     (sched == "rr" ? "RR" : "FIFO") +
                     ": a profile has one real-time policy, the first <cputune> scheduler's",
                 false);
    }
    t_.attributes_like_element(s);
  }
}

void Importer::map_os(xml_node dom) {
  xml_node os = dom.child("os");
  if (!os) return;
  carried(os);
  xml_node type = os.child("type");
  if (type) {
    std::string arch = type.attribute("arch").value();
    if (!arch.empty() && arch != "x86_64") {
      problem(type, "<os><type arch='" + arch + "'>: passlaunch runs x86_64 guests only");
    }
    if (std::string(type.text().get()) != "hvm") {
      problem(type, std::string("<os><type>") + type.text().get() +
                        "</type>: passlaunch runs full virtualisation (hvm) only");
    }
    carried(type);
    carried_attr(type, "arch");
    std::string machine = type.attribute("machine").value();
    std::string m = machine.find("q35") != std::string::npos                           ? "q35"
                    : (machine.find("i440fx") != std::string::npos || machine == "pc") ? "pc"
                                                                                       : "";
    if (machine.empty()) {
      p_.set("/machine", "q35", "the domain names no machine: q35");
    } else if (m.empty()) {
      problem(type, "<os><type machine='" + machine + "'>: expected a q35 or i440fx machine");
    } else {
      // The versioned name keeps the guest's hardware as it was.
      p_.set("/machine", machine, "<os><type machine='" + machine + "'>");
      carried_attr(type, "machine", "/machine");
    }
  }
  bool efi = is(os.attribute("firmware").value(), "efi");
  std::string code, vars;
  if (xml_node loader = os.child("loader")) {
    code = loader.text().get();
    carried(loader, "/firmware/code");
    carried_attr(loader, "readonly", "/firmware/code");
    if (xml_attribute t = loader.attribute("type")) {
      if (is(t.value(), "pflash")) {
        t_.carried(t, loader, "/firmware/type");
      } else {
        t_.changed(t, loader, "/firmware/type", "OVMF is mapped as pflash", true);
      }
    }
    if (xml_attribute f = loader.attribute("format")) {
      if (is(f.value(), "raw")) {
        t_.carried(f, loader);
      } else {
        problem(loader, std::string("<loader format='") + f.value() +
                            "'>: passlaunch maps raw firmware images only");
      }
    }
    if (xml_attribute s = loader.attribute("secure")) {
      if (is(s.value(), "yes")) p_.set("/firmware/secure_boot", true, "<loader secure='yes'>");
      t_.carried(s, loader, "/firmware/secure_boot");
    }
    dropped_attr(loader, "stateless", "stateless firmware: not held by a profile", true);
  }
  if (xml_node nvram = os.child("nvram")) {
    std::string tmpl = nvram.attribute("template").value();
    std::string file = nvram.text().get();
    carried(nvram, "/firmware/vars_template");
    if (!file.empty()) {
      vars = file;
      t_.changed(nvram, "/firmware/vars_template",
                 "the VM's own variables file " + file +
                     " becomes the template, copied once "
                     "into /var/lib/passlaunch/NAME/OVMF_VARS.fd, so the boot entries and keys "
                     "come along",
                 false);
      if (!tmpl.empty()) {
        dropped_attr(nvram, "template",
                     "the VM's own variables file is copied instead of a fresh template");
      }
    } else {
      vars = tmpl;
      carried_attr(nvram, "template", "/firmware/vars_template");
    }
    dropped_attr(nvram, "format", "raw variables, as the code image");
    dropped_attr(nvram, "templateFormat", "raw variables, as the code image");
  }
  if (efi || !code.empty()) {
    if (code.empty() || (efi && vars.empty())) {
      // Firmware autoselection, as libvirt does, from QEMU's firmware descriptors.
      std::optional<bool> secure, keys;
      if (xml_node fw = os.child("firmware")) {
        carried(fw);
        for (xml_node f : fw.children("feature")) {
          bool on = is(f.attribute("enabled").value(), "yes");
          if (is(f.attribute("name").value(), "secure-boot")) secure = on;
          if (is(f.attribute("name").value(), "enrolled-keys")) keys = on;
          t_.carried_all(f, "/firmware");
        }
      }
      std::optional<OvmfChoice> c;
      if (o_.host) c = find_ovmf(*o_.host, secure, keys);
      if (!c) {
        problem(os, "<os firmware='efi'>: no OVMF firmware descriptor in " +
                        (o_.host ? o_.host->real("/usr/share/qemu/firmware") : std::string("?")) +
                        " has these features (apt install ovmf)");
      } else {
        if (code.empty()) code = c->code;
        if (c->requires_smm) p_.set("/firmware/secure_boot", true, "its descriptor requires SMM");
        if (vars.empty()) vars = c->vars_template;
        added_.push_back({"/firmware", "<os firmware='efi'> resolved against " + c->descriptor});
        p_.comment("/firmware/code", "<os firmware='efi'>: from " + c->descriptor);
      }
      t_.carried(os.attribute("firmware"), os, "/firmware");
    } else {
      t_.carried(os.attribute("firmware"), os, "/firmware");
      if (xml_node fw = os.child("firmware")) t_.carried_all(fw, "/firmware");
    }
    p_.set("/firmware/type", "ovmf", "<os><loader> / firmware='efi'");
    p_.set("/firmware/code", code);
    if (!vars.empty()) p_.set("/firmware/vars_template", vars, "<os><nvram>");
  }
  for (xml_node k : os.children("kernel")) {
    p_.set("/kernel/path", k.text().get(), "<os><kernel>");
    carried(k, "/kernel/path");
  }
  for (xml_node k : os.children("initrd")) {
    p_.set("/kernel/initrd", k.text().get(), "<os><initrd>");
    carried(k, "/kernel/initrd");
  }
  for (xml_node k : os.children("cmdline")) {
    p_.set("/kernel/append", k.text().get(), "<os><cmdline>");
    carried(k, "/kernel/append");
  }
  for (xml_node b : os.children("boot")) {
    t_.dropped_all(b, "boot order: not held by a profile; OVMF boots the first bootable disk");
  }
  for (xml_node b : os.children("bootmenu")) {
    t_.dropped_all(b, "boot menu: OVMF shows its own on Esc", false);
  }
  for (xml_node b : os.children("smbios")) {
    std::string mode = b.attribute("mode").value();
    if (mode == "host") {
      p_.set("/smbios/mode", "host", "<os><smbios mode='host'/>");
      t_.carried_all(b, "/smbios");
    } else if (mode == "sysinfo") {
      t_.carried_all(b, "/smbios");  // <sysinfo> below gives the fields
    } else {
      t_.dropped_all(b, "SMBIOS mode " + mode + ": QEMU's own tables", false);
    }
  }
}

void Importer::map_features(xml_node dom) {
  xml_node f = dom.child("features");
  if (!f) return;
  carried(f);
  // The enlightenments `hyperv.enlightenments: true` turns on (profile/argv.cpp).
  // QEMU's hv-* properties a profile names (profiles/README.md, cpu.hyperv.features).
  static const std::set<std::string> kHvNames = {
      "hv-apicv", "hv-avic",        "hv-crash",    "hv-emsr-bitmap",     "hv-enforce-cpuid",
      "hv-evmcs", "hv-frequencies", "hv-ipi",      "hv-reenlightenment", "hv-relaxed",
      "hv-reset", "hv-runtime",     "hv-stimer",   "hv-stimer-direct",   "hv-syndbg",
      "hv-synic", "hv-time",        "hv-tlbflush", "hv-tlbflush-direct", "hv-tlbflush-ext",
      "hv-vapic", "hv-vpindex",     "hv-xmm-input"};
  for (xml_node c : f.children()) {
    if (c.type() != pugi::node_element) continue;
    std::string name = c.name();
    if (name == "acpi" || name == "apic" || name == "pae") {
      t_.carried_all(c, "/machine");
    } else if (name == "hyperv") {
      carried(c, "/cpu/hyperv");
      if (xml_attribute m = c.attribute("mode")) {
        if (is(m.value(), "custom")) {
          t_.carried(m, c, "/cpu/hyperv");
        } else {
          t_.changed(m, c, "/cpu/hyperv", "passthrough mode becomes the profile's set", true);
        }
      }
      if (is(c.attribute("mode").value(), "passthrough")) {
        p_.set("/cpu/hyperv/mode", "passthrough", "<hyperv mode='passthrough'>");
        t_.carried(c.attribute("mode"), c, "/cpu/hyperv/mode");
      }
      for (xml_node e : c.children()) {
        if (e.type() != pugi::node_element) continue;
        std::string en = e.name();
        bool on = !is(e.attribute("state").value(), "off");
        if (en == "vendor_id") {
          if (on) {
            p_.set("/cpu/hyperv/vendor_id", e.attribute("value").value(), "<hyperv><vendor_id>");
          }
          t_.carried_all(e, "/cpu/hyperv/vendor_id");
          continue;
        }
        // libvirt's names are QEMU's without "hv-", with '_' for '-'.
        std::string q = "hv-" + en;
        std::replace(q.begin(), q.end(), '_', '-');
        const std::string ptr = "/cpu/hyperv/features/" + q;
        if (en == "spinlocks") {
          auto retries = attr_number(e, "retries", 0xffffffff);
          if (on) {
            p_.set(ptr, retries.value_or(0x1fff), "<hyperv><spinlocks>");
          } else {
            p_.set(ptr, false, "<hyperv><spinlocks>");
          }
          t_.carried_all(e, ptr);
          continue;
        }
        if (kHvNames.count(q) == 0) {
          t_.dropped_all(e, q + ": not among QEMU's enlightenments a profile names", true);
          continue;
        }
        p_.set(ptr, on, "<hyperv><" + en + ">");
        t_.carried(e, ptr);
        t_.attributes_like_element(e);
        for (xml_node sub : e.children()) {
          if (sub.type() != pugi::node_element) continue;
          std::string sq = q + "-" + sub.name();  // stimer/direct, tlbflush/direct|extended
          if (sq == "hv-tlbflush-extended") sq = "hv-tlbflush-ext";
          if (kHvNames.count(sq)) {
            p_.set("/cpu/hyperv/features/" + sq, !is(sub.attribute("state").value(), "off"),
                   "<" + en + "><" + sub.name() + ">");
            t_.carried_all(sub, "/cpu/hyperv/features/" + sq);
          } else {
            t_.dropped_all(sub, sq + ": not among QEMU's enlightenments a profile names", true);
          }
        }
      }
    } else if (name == "kvm") {
      carried(c);
      for (xml_node e : c.children()) {
        if (e.type() != pugi::node_element) continue;
        if (is(e.name(), "hidden")) {
          bool on = is(e.attribute("state").value(), "on");
          if (on) p_.set("/cpu/hyperv/hide_kvm", true, "<features><kvm><hidden state='on'/>");
          t_.carried_all(e, "/cpu/hyperv/hide_kvm");
        } else {
          t_.dropped_all(e, std::string("KVM ") + e.name() + ": not held by a profile", true);
        }
      }
    } else if (name == "smm") {
      if (is(c.attribute("state").value(), "off")) {
        t_.dropped_all(c, "SMM stays on (QEMU's default for q35)", true);
      } else {
        t_.carried_all(c, "/machine");  // QEMU's default: smm=auto, on for KVM and TCG
      }
    } else if (name == "ioapic") {
      if (is(c.attribute("driver").value(), "qemu")) {
        p_.set("/platform/kernel_irqchip", "split", "<features><ioapic driver='qemu'/>");
        t_.carried_all(c, "/platform/kernel_irqchip");
      } else {
        t_.carried_all(c, "/machine");  // the in-kernel IOAPIC is QEMU's default
      }
    } else if (name == "pmu") {
      if (is(c.attribute("state").value(), "off")) {
        p_.push("/cpu/features", "-pmu", "<features><pmu state='off'/>");
        t_.carried_all(c, "/cpu/features");
      } else {
        t_.carried_all(c, "/cpu");
      }
    } else if (name == "vmport") {
      p_.set("/platform/vmport", !is(c.attribute("state").value(), "off"), "<features><vmport>");
      t_.carried_all(c, "/platform/vmport");
    } else if (name == "vmcoreinfo") {
      t_.dropped_all(c, "vmcoreinfo device: not held by a profile", false);
    }
  }
}

void Importer::map_cpu(xml_node dom) {
  xml_node cpu = dom.child("cpu");
  if (!cpu) {
    p_.set("/cpu/model", "qemu64", "the domain has no <cpu>: libvirt's default, qemu64");
    added_.push_back({"/cpu/model", "no <cpu>: libvirt's default model, qemu64"});
    return;
  }
  carried(cpu);
  std::string mode = cpu.attribute("mode").value();
  if (mode == "host-passthrough" || mode.empty() || mode == "custom" || mode == "maximum") {
    if (mode == "host-passthrough") {
      p_.set("/cpu/model", "host", "<cpu mode='host-passthrough'>");
      carried_attr(cpu, "mode", "/cpu/model");
    } else if (mode == "maximum") {
      p_.set("/cpu/model", "max", "<cpu mode='maximum'>");
      carried_attr(cpu, "mode", "/cpu/model");
    }
  } else if (mode == "host-model") {
    p_.set("/cpu/model", "host", "<cpu mode='host-model'>: host-passthrough");
    t_.changed(cpu.attribute("mode"), cpu, "/cpu/model",
               "host-passthrough: the guest sees every host CPU feature, not libvirt's named "
               "model closest to the host",
               true);
  }
  if (xml_node model = cpu.child("model")) {
    std::string name = model.text().get();
    if (mode == "custom" || mode.empty()) {
      p_.set("/cpu/model", name, "<cpu><model>");
      carried(model, "/cpu/model");
      if (mode == "custom") carried_attr(cpu, "mode", "/cpu/model");
      dropped_attr(model, "fallback", "QEMU takes the model as named");
      dropped_attr(model, "vendor_id", "CPUID vendor override: not held by a profile", true);
    } else {
      t_.dropped_all(model, "a model name beside mode='" + mode + "' is libvirt's record only");
    }
  }
  dropped_attr(cpu, "check", kBookkeeping);
  dropped_attr(cpu, "match", kBookkeeping);
  if (xml_attribute m = cpu.attribute("migratable")) {
    if (is(m.value(), "on")) {
      t_.carried(m, cpu, "/cpu/model");  // QEMU's default for -cpu host
    } else {
      t_.dropped(m, cpu, "migratable=off (every host feature, invtsc too): use cpu.features", true);
    }
  }
  for (xml_node v : cpu.children("vendor")) t_.dropped_all(v, kBookkeeping);
  if (xml_node top = cpu.child("topology")) {
    auto s = attr_number(top, "sockets", 64).value_or(1);
    auto d = attr_number(top, "dies", 64).value_or(1);
    auto cl = attr_number(top, "clusters", 64).value_or(1);
    auto c = attr_number(top, "cores", 1024).value_or(1);
    auto th = attr_number(top, "threads", 8).value_or(1);
    if (s * d * cl * c * th != uint64_t(vcpus_)) {
      problem(top, "<topology>: sockets x dies x clusters x cores x threads is " +
                       std::to_string(s * d * cl * c * th) + ", <vcpu> is " +
                       std::to_string(vcpus_));
    }
    p_.set("/cpu/topology", ojson{{"sockets", s}, {"cores", c * d * cl}, {"threads", th}},
           "<cpu><topology>");
    t_.carried_all(top, "/cpu/topology");
    if (d != 1) {
      t_.changed(top.attribute("dies"), top, "/cpu/topology",
                 "dies are folded into cores per socket", true);
    }
    if (cl != 1) {
      t_.changed(top.attribute("clusters"), top, "/cpu/topology",
                 "clusters are folded into cores per socket", true);
    }
  }
  for (xml_node cache : cpu.children("cache")) {
    std::string cm = cache.attribute("mode").value();
    if (cm == "passthrough") {
      p_.set("/cpu/cache_passthrough", true, "<cpu><cache mode='passthrough'/>");
      t_.carried_all(cache, "/cpu/cache_passthrough");
    } else if (cm == "emulate" && is(cache.attribute("level").value(), "3")) {
      p_.push("/cpu/features", "+l3-cache", "<cpu><cache level='3' mode='emulate'/>");
      t_.carried_all(cache, "/cpu/features");
    } else {
      t_.dropped_all(cache, "cache mode " + cm + ": QEMU's default cache description", true);
    }
  }
  for (xml_node feat : cpu.children("feature")) {
    std::string policy = feat.attribute("policy").value();
    std::string name = feat.attribute("name").value();
    if (name.empty()) {
      problem(feat, "<feature> needs a name");
      continue;
    }
    bool off = policy == "disable" || policy == "forbid";
    if (name == "hypervisor" && off) {
      hypervisor_off_ = true;
      p_.set("/cpu/hypervisor_bit", false, "<feature policy='" + policy + "' name='hypervisor'/>");
      t_.carried_all(feat, "/cpu/hypervisor_bit");
      continue;
    }
    if (policy.empty() || policy == "require" || policy == "force" || off) {
      p_.push("/cpu/features", std::string(off ? "-" : "+") + name,
              "<feature policy='" + (policy.empty() ? std::string("require") : policy) +
                  "' name='" + name + "'/>");
      t_.carried_all(feat, "/cpu/features");
    } else if (policy == "optional") {
      t_.dropped_all(
          feat,
          "policy optional: " + std::string(mode == "host-passthrough"
                                                ? "host-passthrough has it when the host has"
                                                : "QEMU's model decides"),
          false);
    } else {
      problem(feat, "<feature policy='" + policy +
                        "'>: expected force, require, optional, disable or forbid");
    }
  }
  for (xml_node n : cpu.children("numa")) {
    t_.dropped_all(n, "guest NUMA nodes: not held by a profile; the guest sees one node", true);
  }
}

void Importer::map_clock(xml_node dom) {
  xml_node clock = dom.child("clock");
  if (!clock) return;
  std::string offset = clock.attribute("offset").value();
  if (offset == "localtime" || offset == "utc") {
    p_.set("/rtc", offset, "<clock offset='" + offset + "'>");
    carried(clock, "/rtc");
    carried_attr(clock, "offset", "/rtc");
  } else {
    p_.set("/rtc", "utc", "<clock offset='" + offset + "'>");
    t_.changed(clock, "/rtc", "offset " + offset + " is not held by a profile: UTC", true);
    t_.attributes_like_element(clock);
  }
  for (xml_node tm : clock.children("timer")) {
    std::string name = tm.attribute("name").value();
    bool present = !is(tm.attribute("present").value(), "no");
    if (name == "hypervclock") {
      p_.set("/cpu/hyperv/features/hv-time", present, "<timer name='hypervclock'>");
      t_.carried_all(tm, "/cpu/hyperv/features/hv-time");
    } else if (name == "kvmclock" && !present) {
      p_.push("/cpu/features", "-kvmclock", "<timer name='kvmclock' present='no'/>");
      t_.carried_all(tm, "/cpu/features");
    } else if (name == "hpet") {
      p_.set("/clock/hpet", present, "<timer name='hpet'>");
      t_.carried_all(tm, "/clock/hpet");
    } else if (name == "rtc" && is(tm.attribute("tickpolicy").value(), "catchup")) {
      p_.set("/clock/rtc_driftfix", "slew", "<timer name='rtc' tickpolicy='catchup'/>");
      t_.carried_all(tm, "/clock/rtc_driftfix");
    } else if (name == "pit" && tm.attribute("tickpolicy")) {
      std::string tp = tm.attribute("tickpolicy").value();
      std::string v = tp == "delay"     ? "delay"
                      : tp == "catchup" ? "slew"
                      : tp == "discard" ? "discard"
                                        : "";
      if (v.empty()) {
        t_.dropped_all(tm, "PIT tick policy " + tp + ": not held by a profile", false);
      } else {
        p_.set("/clock/pit_lost_tick_policy", v, "<timer name='pit' tickpolicy='" + tp + "'/>");
        t_.carried_all(tm, "/clock/pit_lost_tick_policy");
      }
    } else if (name == "rtc" || name == "pit") {
      t_.dropped_all(tm, "timer " + name + ": QEMU's default", false);
    } else {
      t_.dropped_all(tm, "timer " + name + ": not held by a profile", true);
    }
  }
}

void Importer::map_lifecycle(xml_node dom) {
  for (xml_node n : dom.children("on_poweroff")) {
    if (std::string(n.text().get()) == "destroy") {
      t_.carried(n, "");  // run ends when the guest powers off
    } else {
      t_.dropped(n, "`run` ends when the guest powers off", true);
    }
  }
  for (xml_node n : dom.children("on_reboot")) {
    if (std::string(n.text().get()) == "restart") {
      t_.carried(n, "");  // a guest reboot keeps running
    } else {
      t_.dropped(n, "a guest reboot keeps running under `run`", true);
    }
  }
  for (xml_node n : dom.children("on_crash")) {
    std::string v = n.text().get();
    if (v == "destroy" || !has_panic_) {
      t_.carried(n, "/panic");  // `run` quits QEMU on a reported panic (exit 6)
    } else {
      t_.changed(n, "/panic", "a reported panic quits QEMU (exit 6), not " + v, false);
    }
  }
  for (xml_node pm : dom.children("pm")) {
    carried(pm, "/qemu_args");
    const bool q35 = is_q35(p_.json.value("machine", "q35"));
    for (xml_node c : pm.children()) {
      if (c.type() != pugi::node_element) continue;
      bool off = is(c.attribute("enabled").value(), "no");
      const char* prop = is(c.name(), "suspend-to-mem") ? "disable_s3" : "disable_s4";
      if (off) {
        // What libvirt passes: -global ICH9-LPC.disable_s3=1 (PIIX4_PM on i440fx).
        p_.push("/qemu_args", "-global", "<pm><" + std::string(c.name()) + " enabled='no'/>");
        p_.push("/qemu_args", std::string(q35 ? "ICH9-LPC." : "PIIX4_PM.") + prop + "=1");
        t_.carried_all(c, "/qemu_args");
      } else {
        t_.carried_all(c, "");  // QEMU's default
      }
    }
  }
  for (xml_node n : dom.children("blkiotune")) t_.dropped_all(n, "cgroup I/O weights", false);
  for (xml_node n : dom.children("memtune")) t_.dropped_all(n, "cgroup memory limits", false);
  for (xml_node n : dom.children("numatune")) {
    t_.dropped_all(n, "host NUMA memory policy: not held by a profile", false);
  }
}

void Importer::map_disk(xml_node disk) {
  carried(disk, "/disks");
  std::string type = disk.attribute("type").value();
  std::string device = disk.attribute("device").value();
  carried_attr(disk, "type", "/disks");
  if (device.empty() || device == "disk" || device == "cdrom") carried_attr(disk, "device");
  xml_node src = disk.child("source");
  std::string path = type == "block" ? src.attribute("dev").value() : src.attribute("file").value();
  if (type != "file" && type != "block") {
    t_.dropped_all(disk, "disk type " + type + ": a profile holds files and block devices", true);
    return;
  }
  if (device == "floppy" || device == "lun") {
    device_bookkeeping(disk);
    t_.dropped_all(disk, device + ": not held by a profile", true);
    return;
  }
  const bool cdrom = device == "cdrom";
  if (path.empty() && !cdrom) {
    device_bookkeeping(disk);
    t_.dropped_all(disk, "a disk without a source", true);
    return;
  }
  ojson d = ojson::object();
  if (!path.empty()) d["path"] = path;
  if (cdrom) d["media"] = "cdrom";
  std::string ptr = "/disks/" + std::to_string(p_.json.value("disks", ojson::array()).size());
  if (src) t_.carried_all(src, ptr + "/path");
  for (xml_node b : disk.children("boot")) {
    if (auto order = attr_number(b, "order", 9999)) {
      d["boot_index"] = *order;
      t_.carried_all(b, ptr + "/boot_index");
    }
  }
  device_bookkeeping(disk);
  for (xml_node c : disk.children()) {
    if (c.type() != pugi::node_element) continue;
    std::string n = c.name();
    if (n == "driver") {
      carried(c, ptr);
      carried_attr(c, "name");
      std::string fmt = c.attribute("type").value();
      if (fmt == "raw" || fmt == "qcow2") {
        d["format"] = fmt;
        carried_attr(c, "type", ptr + "/format");
      } else if (!fmt.empty()) {
        problem(c, "<driver type='" + fmt + "'>: expected raw or qcow2");
      }
      if (auto io = attr_number(c, "iothread", 1 << 20)) {
        auto it = iothread_ids_.find(*io);
        if (it == iothread_ids_.end()) {
          problem(c, "<driver iothread='" + std::to_string(*io) + "'>: no such iothread");
        } else {
          d["iothread"] = it->second;
          carried_attr(c, "iothread", ptr + "/iothread");
        }
      }
      if (xml_attribute a = c.attribute("discard")) {
        if (is(a.value(), "unmap") || is(a.value(), "ignore")) {
          d["discard"] = a.value();
          t_.carried(a, c, ptr + "/discard");
        } else {
          problem(c, std::string("<driver discard='") + a.value() + "'>: expected unmap or ignore");
        }
      }
      std::string cache = c.attribute("cache").value();
      if (cache == "none" || cache == "writeback" || cache == "writethrough" ||
          cache == "directsync" || cache == "unsafe") {
        d["cache"] = cache;
        carried_attr(c, "cache", ptr + "/cache");
      } else if (!cache.empty() && cache != "default") {
        problem(c, "<driver cache='" + cache +
                       "'>: expected none, writeback, writethrough, "
                       "directsync or unsafe");
      } else {
        carried_attr(c, "cache", ptr);
      }
      std::string io = c.attribute("io").value();
      if (io == "threads" || io == "native" || io == "io_uring") {
        d["aio"] = io;
        carried_attr(c, "io", ptr + "/aio");
      } else if (!io.empty() && io != "default") {
        problem(c, "<driver io='" + io + "'>: expected threads, native or io_uring");
      }
      for (const char* a : {"detect_zeroes", "queues", "error_policy"}) {
        dropped_attr(c, a, std::string(a) + ": QEMU's default (not held by a profile)");
      }
    } else if (n == "target") {
      std::string bus = c.attribute("bus").value();
      carried(c, ptr);
      dropped_attr(c, "dev", "the guest's device name is libvirt's bookkeeping");
      if (bus == "virtio" && !cdrom) {
        carried_attr(c, "bus", ptr + "/interface");
      } else if (bus == "nvme" || bus == "sata" || bus == "scsi" || (bus == "virtio" && cdrom)) {
        d["interface"] = bus == "virtio" ? "sata" : bus;
        if (bus == "virtio") {
          t_.changed(c.attribute("bus"), c, ptr + "/interface", "a CD-ROM sits on SATA", true);
        } else {
          carried_attr(c, "bus", ptr + "/interface");
        }
      } else if (bus == "ide") {
        d["interface"] = "sata";
        t_.changed(c.attribute("bus"), c, ptr + "/interface",
                   "q35 has no IDE: the disk sits on its AHCI (SATA) controller, the same "
                   "ide-hd/ide-cd devices",
                   true);
      } else {
        t_.changed(c.attribute("bus"), c, ptr + "/interface",
                   "bus " + bus + " becomes virtio: the guest needs virtio drivers (virtio-win)",
                   true);
      }
    } else if (n == "readonly") {
      if (!cdrom) d["readonly"] = true;  // a CD-ROM always is
      carried(c, ptr + "/readonly");
    } else if (n == "shareable") {
      t_.dropped_all(c, "shared disks: not held by a profile", false);
    } else if (n == "serial") {
      d["serial"] = c.text().get();
      t_.carried_all(c, ptr + "/serial");
    } else if (n == "wwn" || n == "vendor" || n == "product" || n == "blockio" || n == "geometry") {
      t_.dropped_all(c, n + ": not held by a profile", true);
    }
  }
  if (d.value("interface", "virtio") != "virtio" && d.value("interface", "") != "scsi" &&
      d.contains("iothread")) {
    d.erase("iothread");
  }
  p_.push("/disks", std::move(d),
          "<disk type='" + type + "' device='" + (cdrom ? "cdrom" : "disk") + "'>");
}

void Importer::map_interface(xml_node iface) {
  carried(iface, "/network");
  std::string type = iface.attribute("type").value();
  std::string ptr = "/network/" + std::to_string(p_.json.value("network", ojson::array()).size());
  ojson n;
  std::string comment;
  xml_node src = iface.child("source");
  if (type == "direct") {
    n = {{"type", "macvtap"}, {"link", src.attribute("dev").value()}};
    std::string mode = src.attribute("mode") ? src.attribute("mode").value() : "vepa";
    if (mode == "bridge" || mode == "vepa" || mode == "private" || mode == "passthrough") {
      n["mode"] = mode == "passthrough" ? "passthru" : mode;
      carried_attr(src, "mode", ptr + "/mode");
    } else {
      problem(src, "<source mode='" + mode + "'>: expected bridge, vepa, private or passthrough");
    }
    carried(src, ptr + "/link");
    carried_attr(src, "dev", ptr + "/link");
    comment = "<interface type='direct'>: macvtap on " + std::string(src.attribute("dev").value());
  } else if (type == "bridge") {
    n = {{"type", "bridge"}, {"bridge", src.attribute("bridge").value()}};
    t_.carried_all(src, ptr + "/bridge");
    comment = "<interface type='bridge'>";
  } else if (type == "network") {
    std::string net = src.attribute("network").value();
    std::string br = o_.host ? libvirt_network_bridge(*o_.host, net) : "";
    if (!br.empty()) {
      n = {{"type", "bridge"}, {"bridge", br}};
      t_.changed(src, ptr + "/bridge",
                 "libvirt network " + net + " is bridge " + br + " on this host", false);
      comment = "<interface type='network'>: network " + net + "'s bridge " + br;
    } else {
      n = {{"type", "user"}};
      t_.changed(src, ptr,
                 "libvirt network " + net +
                     " has no bridge on this host: user networking (the "
                     "guest gets 10.0.2.x behind NAT, not reachable from the LAN)",
                 true);
      comment = "<interface type='network'>: no bridge for network " + net + " here";
    }
    t_.attributes_like_element(src);
  } else if (type == "user") {
    n = {{"type", "user"}};
    comment = "<interface type='user'>";
  } else {
    device_bookkeeping(iface);
    t_.dropped_all(iface, "interface type " + type + ": not held by a profile", true);
    return;
  }
  carried_attr(iface, "type", ptr + "/type");
  for (xml_node b : iface.children("boot")) {
    if (auto order = attr_number(b, "order", 9999)) {
      n["boot_index"] = *order;
      t_.carried_all(b, ptr + "/boot_index");
    }
  }
  device_bookkeeping(iface);
  for (xml_node c : iface.children()) {
    if (c.type() != pugi::node_element) continue;
    std::string cn = c.name();
    if (cn == "mac") {
      n["mac"] = c.attribute("address").value();
      t_.carried_all(c, ptr + "/mac");
    } else if (cn == "model") {
      std::string m = c.attribute("type").value();
      if (m == "virtio" || m == "e1000e" || m == "rtl8139") {
        n["model"] = m == "virtio" ? "virtio-net-pci" : m;
        t_.carried_all(c, ptr + "/model");
      } else {
        n["model"] = "e1000e";
        t_.changed(c, ptr + "/model", "model " + m + " becomes e1000e", true);
        t_.attributes_like_element(c);
      }
    } else if (cn == "link") {
      if (is(c.attribute("state").value(), "down")) {
        t_.dropped_all(c, "a link that starts down: not held by a profile", true);
      } else {
        t_.carried_all(c, ptr);
      }
    } else if (cn == "target") {
      t_.dropped_all(c, "the tap's name on the host: passlaunch names its own");
    } else if (cn == "driver") {
      if (is(c.attribute("name").value(), "vhost") || !c.attribute("name")) {
        t_.carried(c, ptr);  // vhost-net whenever /dev/vhost-net exists
        carried_attr(c, "name", ptr);
        t_.attributes_like_element(c);
        dropped_attr(c, "queues", "multiqueue: not held by a profile", false);
        for (xml_node g : c.children()) t_.dropped_all(g, "offload settings: QEMU's defaults");
      } else {
        t_.dropped_all(c, "the userspace virtio-net backend: vhost-net is used when present");
      }
    } else if (cn == "rom") {
      t_.dropped_all(c, "the NIC's boot ROM: QEMU's default (iPXE)", true);
    }
  }
  if (n["type"] == "user") {
    for (xml_node c : iface.children("source")) t_.attributes_like_element(c);
  }
  p_.push("/network", std::move(n), comment);
}

void Importer::map_hostdev(xml_node hd) {
  std::string type = hd.attribute("type").value();
  carried(hd, "/devices");
  carried_attr(hd, "mode");
  if (type == "pci") {
    xml_node a = hd.child("source").child("address");
    auto dom = attr_number(a, "domain", 0xffff);
    auto bus = attr_number(a, "bus", 0xff);
    auto slot = attr_number(a, "slot", 0x1f);
    auto fn = attr_number(a, "function", 7);
    if (!a) problem(hd, "<hostdev type='pci'> needs <source><address>");
    if (!a || !bus || !slot || !fn) return;
    PciAddress addr{uint16_t(dom.value_or(0)), uint8_t(*bus), uint8_t(*slot), uint8_t(*fn)};
    std::string ptr = "/devices/" + std::to_string(p_.json.value("devices", ojson::array()).size());
    ojson d = {{"type", "vfio"}, {"address", addr.str()}};
    carried_attr(hd, "type", ptr + "/type");
    t_.carried(hd.child("source"), ptr + "/address");
    t_.carried_all(a, ptr + "/address");
    if (xml_attribute m = hd.attribute("managed")) {
      if (is(m.value(), "yes")) {
        t_.carried(m, hd, ptr);  // passlaunch binds the group to vfio-pci itself
      } else {
        t_.changed(m, hd, ptr, "passlaunch binds the device to vfio-pci itself (managed)", false);
      }
    }
    for (xml_node dr : hd.children("driver")) {
      if (is(dr.attribute("name").value(), "vfio") || !dr.attribute("name")) {
        t_.carried_all(dr, ptr);
        dropped_attr(dr, "model", "a vfio-pci variant driver: passlaunch binds vfio-pci", false);
      } else {
        t_.dropped_all(dr, "legacy KVM device assignment: passlaunch uses vfio", false);
      }
    }
    for (xml_node b : hd.children("boot")) {
      if (auto order = attr_number(b, "order", 9999)) {
        d["boot_index"] = *order;
        t_.carried_all(b, ptr + "/boot_index");
      }
    }
    for (xml_node rom : hd.children("rom")) {
      carried(rom, ptr);
      if (xml_attribute f = rom.attribute("file")) {
        d["romfile"] = f.value();
        t_.carried(f, rom, ptr + "/romfile");
      }
      if (xml_attribute bar = rom.attribute("bar")) {
        if (is(bar.value(), "off")) d["rombar"] = false;
        t_.carried(bar, rom, ptr + "/rombar");
      }
      dropped_attr(rom, "enabled", "the ROM is exposed (not held by a profile)", true);
    }
    device_bookkeeping(hd);
    if (first_gpu_.empty()) first_gpu_ = addr.str();
    p_.push("/devices", std::move(d), "<hostdev type='pci'> " + addr.str());
  } else if (type == "usb") {
    device_bookkeeping(hd);
    xml_node src = hd.child("source");
    auto vendor = attr_number(src.child("vendor"), "id", 0xffff);
    auto product = attr_number(src.child("product"), "id", 0xffff);
    carried_attr(hd, "type", "/input/usb");
    dropped_attr(hd, "managed", "USB host devices need no driver change");
    if (vendor && product) {
      char v[8], p[8];
      std::snprintf(v, sizeof v, "%04x", unsigned(*vendor));
      std::snprintf(p, sizeof p, "%04x", unsigned(*product));
      std::string ptr =
          p_.push("/input/usb", ojson{{"vendor", v}, {"product", p}}, "<hostdev type='usb'>");
      carried(src, ptr);
      dropped_attr(src, "startupPolicy", "a missing USB device is an error at start");
      t_.carried_all(src.child("vendor"), ptr + "/vendor");
      t_.carried_all(src.child("product"), ptr + "/product");
      for (xml_node a : src.children("address")) {
        t_.dropped_all(a, "the USB bus address: a profile names USB devices by vendor:product",
                       false);
      }
      has_usb_hostdev_ = true;
    } else {
      t_.dropped_all(hd,
                     "a USB device by bus address only: a profile names USB devices by "
                     "vendor:product",
                     true);
    }
  } else {
    device_bookkeeping(hd);
    t_.dropped_all(hd, "hostdev type " + type + ": not held by a profile", true);
  }
}

void Importer::map_input(xml_node in) {
  std::string type = in.attribute("type").value();
  std::string bus = in.attribute("bus").value();
  device_bookkeeping(in);
  if (type == "evdev") {
    xml_node src = in.child("source");
    ojson e = {{"path", src.attribute("dev").value()}};
    std::string ptr =
        "/input/evdev/" +
        std::to_string(
            p_.json.value("input", ojson::object()).value("evdev", ojson::array()).size());
    carried(in, ptr);
    carried_attr(in, "type", ptr);
    carried(src, ptr);
    carried_attr(src, "dev", ptr + "/path");
    if (is(src.attribute("grab").value(), "all")) {
      e["grab_all"] = true;
      carried_attr(src, "grab", ptr + "/grab_all");
    }
    if (xml_attribute r = src.attribute("repeat")) {
      e["repeat"] = is(r.value(), "on");
      t_.carried(r, src, ptr + "/repeat");
    }
    if (xml_attribute g = src.attribute("grabToggle")) {
      e["grab_toggle"] = g.value();
      t_.carried(g, src, ptr + "/grab_toggle");
    }
    p_.push("/input/evdev", std::move(e), "<input type='evdev'>");
  } else if ((type == "mouse" || type == "keyboard") && (bus == "ps2" || bus.empty())) {
    t_.carried_all(in, "/machine");  // q35 and pc always have the i8042 PS/2 controller
  } else {
    t_.dropped_all(in, "input " + type + " on " + bus + ": not held by a profile", true);
  }
}

void Importer::map_devices(xml_node devices) {
  carried(devices);
  for (xml_node dev : devices.children()) {
    if (dev.type() != pugi::node_element) continue;
    std::string n = dev.name();
    if (n == "emulator") {
      t_.dropped_all(dev, "passlaunch runs qemu-system-x86_64 from PATH");
    } else if (n == "disk") {
      map_disk(dev);
    } else if (n == "interface") {
      map_interface(dev);
    } else if (n == "hostdev") {
      map_hostdev(dev);
    } else if (n == "input") {
      map_input(dev);
    } else if (n == "controller") {
      std::string type = dev.attribute("type").value();
      if (type == "virtio-serial" && devices.find_child([](xml_node c) {
            return is(c.name(), "channel") &&
                   is(c.child("target").attribute("name").value(), "org.qemu.guest_agent.0");
          })) {
        t_.carried_all(dev, "/guest_agent");  // the agent's virtio-serial controller
        device_bookkeeping(dev);
      } else if (type == "usb" && has_usb_hostdev_) {
        t_.carried_all(dev, "/input/usb");  // qemu-xhci for the USB host devices
        device_bookkeeping(dev);
      } else {
        t_.dropped_all(dev,
                       "controller " + type +
                           ": passlaunch adds the controllers its "
                           "devices need (q35 has its SATA, PCIe root ports per passed device)");
      }
    } else if (n == "memballoon") {
      if (is(dev.attribute("model").value(), "none")) {
        t_.carried_all(dev, "");  // a profile never has a balloon
      } else {
        t_.dropped_all(dev,
                       "a memory balloon: a profile never has one (it fights VFIO's pinned "
                       "memory)",
                       true);
      }
    } else if (n == "tpm") {
      std::string model = dev.attribute("model").value();
      xml_node be = dev.child("backend");
      std::string state =
          "/var/lib/passlaunch/" + p_.json.value("name", std::string("vm")) + "/tpm";
      if (is(be.attribute("type").value(), "emulator")) {
        p_.set("/tpm/state_dir", state,
               "<tpm> emulator: swtpm's state; copy libvirt's /var/lib/libvirt/swtpm/UUID/tpm2 "
               "here to keep BitLocker and Windows Hello keys");
        t_.changed(be, "/tpm/state_dir",
                   "a new swtpm state in " + state + " unless libvirt's is copied there", true);
        carried_attr(be, "type", "/tpm");
        if (is(be.attribute("version").value(), "2.0") || !be.attribute("version")) {
          carried_attr(be, "version", "/tpm");
        } else {
          t_.changed(be.attribute("version"), be, "/tpm", "a TPM 2.0", true);
        }
        for (xml_node c : be.children()) {
          t_.dropped_all(c, std::string(c.name()) + ": swtpm's defaults");
        }
        dropped_attr(be, "persistent_state", "state is kept in state_dir");
        carried(dev, "/tpm");
        if (model == "tpm-crb" || model.empty()) {
          carried_attr(dev, "model", "/tpm");
        } else {
          t_.changed(dev.attribute("model"), dev, "/tpm", "a tpm-crb device", true);
        }
        device_bookkeeping(dev);
      } else {
        t_.dropped_all(dev, "a host TPM passed through: not held by a profile", true);
      }
    } else if (n == "panic") {
      std::string m = dev.attribute("model").value();
      std::string pm = m == "isa" ? "isa" : m == "pvpanic" ? "pci" : m == "hyperv" ? "hyperv" : "";
      if (pm.empty()) {
        t_.dropped_all(dev, "panic model " + m + ": not held by a profile", false);
      } else if (pm == "hyperv" && hypervisor_off_) {
        t_.dropped_all(dev,
                       "the Hyper-V crash MSRs are never read with the hypervisor bit "
                       "off (a profile refuses this)",
                       false);
      } else {
        p_.set("/panic/model", pm, "<panic model='" + m + "'>");
        t_.carried_all(dev, "/panic/model");
        has_panic_ = true;
        device_bookkeeping(dev);
      }
    } else if (n == "serial") {
      p_.set("/serial", "log", "<serial>: passlaunch logs the guest's console");
      t_.changed(dev, "/serial",
                 "the serial port's output is logged by passlaunch rather than "
                 "offered as a " +
                     std::string(dev.attribute("type").value()),
                 false);
      t_.attributes_like_element(dev);
      for (xml_node c : dev.children()) t_.dropped_all(c, "the serial port's backend");
    } else if (n == "console") {
      t_.dropped_all(dev, "the same serial port as <serial>", false);
    } else if (n == "redirdev" ||
               (n == "channel" && is(dev.attribute("type").value(), "spicevmc"))) {
      t_.dropped_all(dev, "a SPICE channel: there is no SPICE display", false);
    } else if (n == "video" && is(dev.child("model").attribute("type").value(), "none")) {
      t_.carried_all(dev, "");  // no emulated display adapter, as passlaunch's -display none
    } else if (n == "graphics" && (is(dev.attribute("type").value(), "vnc") ||
                                   is(dev.attribute("type").value(), "spice"))) {
      std::string type = dev.attribute("type").value();
      p_.set("/display/type", type, "<graphics type='" + type + "'>");
      carried(dev, "/display");
      carried_attr(dev, "type", "/display/type");
      std::string port = dev.attribute("port").value();
      std::string listen = dev.attribute("listen").value();
      if (!port.empty() && port != "-1" && !listen.empty()) {
        p_.set("/display/listen", listen + ":" + port, "<graphics listen port>");
        carried_attr(dev, "port", "/display/listen");
        carried_attr(dev, "listen", "/display/listen");
      } else {
        for (const char* a : {"port", "autoport", "listen", "tlsPort"}) {
          t_.changed(dev.attribute(a), dev, "/display/listen",
                     "the display listens on a Unix socket in the runtime dir "
                     "(`ctl NAME display` says how to connect)",
                     false);
        }
      }
      for (xml_node c : dev.children()) {
        t_.dropped_all(c, std::string(c.name()) + ": the display server's defaults");
      }
    } else if (n == "video" && p_.has("/display/type")) {
      std::string m = dev.child("model").attribute("type").value();
      std::string vga = m == "virtio" ? "virtio" : m == "qxl" ? "qxl" : "std";
      p_.set("/display/vga", vga, "<video><model type='" + m + "'>");
      carried(dev, "/display/vga");
      if (m == "vga" || m == "virtio" || m == "qxl") {
        t_.carried(dev.child("model"), "/display/vga");
        carried_attr(dev.child("model"), "type", "/display/vga");
      } else {
        t_.changed(dev.child("model"), "/display/vga", "model " + m + " becomes the standard VGA",
                   true);
      }
      t_.attributes_like_element(dev.child("model"));
      for (xml_node c : dev.child("model").children()) t_.dropped_all(c, "video acceleration");
      device_bookkeeping(dev);
    } else if (n == "sound" && (is(dev.attribute("model").value(), "ich9") ||
                                is(dev.attribute("model").value(), "ich6"))) {
      std::string m = dev.attribute("model").value();
      p_.set("/sound/model", m == "ich9" ? "ich9" : "hda", "<sound model='" + m + "'>");
      carried(dev, "/sound");
      carried_attr(dev, "model", "/sound/model");
      std::string codec = dev.child("codec").attribute("type").value();
      if (!codec.empty()) {
        p_.set("/sound/codec", codec, "<codec>");
        t_.carried_all(dev.child("codec"), "/sound/codec");
      }
      // The backend: the <audio> it names, else the first one.
      std::string backend = "none";
      for (xml_node a : devices.children("audio")) {
        std::string t = a.attribute("type").value();
        backend = t == "pulseaudio" ? "pa" : t == "alsa" ? "alsa" : "none";
        if (t == "pulseaudio" && a.attribute("serverName")) {
          p_.set("/sound/server", a.attribute("serverName").value(), "<audio serverName>");
        }
        if (t != "pulseaudio" && t != "alsa" && t != "none") {
          t_.changed(a, "/sound/backend", "audio backend " + t + " becomes none", true);
        } else {
          t_.carried(a, "/sound/backend");
        }
        t_.attributes_like_element(a);
        for (xml_node c : a.children()) t_.dropped_all(c, "audio backend options");
        break;
      }
      p_.set("/sound/backend", backend, "<audio type>");
      for (xml_node c : dev.children("audio")) t_.carried_all(c, "/sound/backend");
      device_bookkeeping(dev);
    } else if (n == "audio" && t_.marked(dev)) {
      // taken by <sound> above
    } else if (n == "audio" && !devices.child("sound")) {
      t_.dropped_all(dev, "an audio backend without a sound device: nothing to play", false);
    } else if (n == "graphics" || n == "video" || n == "audio" || n == "sound") {
      t_.dropped_all(dev,
                     n + ": a profile has no emulated display or sound (the passed-through "
                         "GPU drives the monitor)",
                     true);
    } else if (n == "watchdog") {
      t_.dropped_all(dev, "watchdog: not held by a profile (q35's iTCO stays, QEMU's default)",
                     false);
    } else if (n == "rng") {
      t_.dropped_all(dev, "virtio RNG: not held by a profile", true);
    } else if (n == "channel" &&
               is(dev.child("target").attribute("name").value(), "org.qemu.guest_agent.0")) {
      p_.set("/guest_agent", true, "<channel> org.qemu.guest_agent.0");
      t_.carried_all(dev, "/guest_agent");
      device_bookkeeping(dev);
      dropped_attr(dev.child("source"), "path",
                   "the agent's socket is qga.sock in the runtime dir");
    } else if (n == "channel") {
      t_.dropped_all(dev, "a virtio-serial channel: not held by a profile", true);
    } else if (n == "shmem" && (is(dev.child("model").attribute("type").value(), "ivshmem-plain") ||
                                !dev.child("model"))) {
      xml_node size = dev.child("size");
      auto bytes = size ? memory_bytes(size) : std::optional<uint64_t>(4ull << 20);
      if (bytes) {
        p_.push("/shmem",
                ojson{{"name", dev.attribute("name").value()},
                      {"size_mib", (*bytes + (1 << 20) - 1) >> 20}},
                "<shmem name='" + std::string(dev.attribute("name").value()) + "'>");
        t_.carried_all(dev, "/shmem");
        device_bookkeeping(dev);
      }
    } else if (n == "shmem") {
      t_.dropped_all(dev, "ivshmem-doorbell: not held by a profile", true);
    } else if (n == "hub") {
      t_.dropped_all(dev, "a USB hub: not held by a profile", false);
    }
  }
}

void Importer::map_commandline(xml_node cmd) {
  carried(cmd, "/qemu_args");
  std::vector<std::pair<std::string, xml_node>> args;
  for (xml_node a : cmd.children()) {
    if (a.type() != pugi::node_element) continue;
    std::string name = a.name();
    if (name.ends_with(":arg")) {
      args.push_back({a.attribute("value").value(), a});
    } else if (name.ends_with(":env")) {
      t_.dropped_all(a, "environment for QEMU: passlaunch starts QEMU with its own", true);
    } else {
      t_.dropped_all(a, name + ": not held by a profile", true);
    }
  }
  // The profile's own rules decide what is refused (-S, -monitor, our ids ...):
  // try the list, drop the argument an error names (with its value), again.
  for (;;) {
    ojson list = ojson::array();
    for (const auto& [v, n] : args) list.push_back(v);
    try {
      parse_profile(ojson{{"name", "t"},
                          {"memory", {{"size_mib", 64}}},
                          {"cpu", {{"vcpus", 1}}},
                          {"qemu_args", list}}
                        .dump(),
                    "qemu_args", ProfileChecks{.files = false});
      break;
    } catch (const Error& e) {
      std::string msg = e.what();
      auto at = msg.find("/qemu_args/");
      if (at == std::string::npos) break;
      size_t i = std::stoul(msg.substr(at + 11));
      if (i >= args.size()) break;
      std::string why = msg.substr(msg.find(": ", at) + 2);
      why = why.substr(0, why.find('\n'));
      // An option's value goes with it.
      size_t end = i + 1;
      if (end < args.size() && !args[end].first.starts_with("-")) ++end;
      for (size_t k = i; k < end; ++k) {
        t_.dropped_all(args[k].second, "refused as qemu_args: " + why, true);
      }
      args.erase(args.begin() + i, args.begin() + end);
    }
  }
  for (const auto& [v, n] : args) {
    p_.push("/qemu_args", v, "<qemu:arg>");
    t_.carried_all(n, "/qemu_args");
  }
}

void Importer::add_host_section() {
  if (!p_.has("/devices") || !o_.host) return;
  // Each passed device's IOMMU group must be viable: its other endpoints are
  // bound to vfio-pci with it (libvirt left that to the user's vfio.conf).
  std::vector<std::string> listed;
  for (const auto& d : p_.json["devices"]) listed.push_back(d["address"].get<std::string>());
  for (const std::string& addr : std::vector<std::string>(listed)) {
    auto dev = host::read_pci_device(*o_.host, addr);
    if (!dev || !dev->iommu_group) continue;
    for (const host::PciDevice& m : host::read_group_members(*o_.host, *dev->iommu_group)) {
      if (m.is_bridge() || (m.class_code >> 16) == 0x06) continue;
      if (std::find(listed.begin(), listed.end(), m.address) != listed.end()) continue;
      listed.push_back(m.address);
      std::string ptr =
          p_.push("/devices", ojson{{"type", "vfio"}, {"address", m.address}, {"attach", false}},
                  "from the host: in IOMMU group " + std::to_string(*dev->iommu_group) + " with " +
                      addr + ", bound to vfio-pci with it but not given to the guest");
      added_.push_back({ptr, "no <hostdev>: " + m.address + " shares IOMMU group " +
                                 std::to_string(*dev->iommu_group) + " with " + addr +
                                 " on this host, so it is bound to vfio-pci too (attach: false)"});
    }
  }
  // The GPU: the first passed function that is a display controller on this host.
  std::string gpu;
  for (const auto& d : p_.json["devices"]) {
    auto dev = host::read_pci_device(*o_.host, d["address"].get<std::string>());
    if (dev && (dev->class_code >> 16) == 0x03) {
      gpu = dev->address;
      break;
    }
  }
  if (gpu.empty()) {
    added_.push_back({"/host",
                      "no passed-through device is a display controller on this host: "
                      "host settings are the defaults"});
    return;
  }
  std::vector<std::pair<std::string, std::string>> why;
  add_host_settings(p_, *o_.host, gpu, &why);
  for (auto& [to, w] : why) {
    added_.push_back(
        {to, "no libvirt element: from this host, as `passlaunch init` does (" + w + ")"});
  }
}

ImportResult Importer::run() {
  pugi::xml_parse_result res =
      doc_.load_buffer(xml_.data(), xml_.size(), pugi::parse_default | pugi::parse_declaration);
  if (!res) {
    throw Error(Exit::kUsage,
                loc_of_offset(res.offset) + ": not well-formed XML: " + res.description());
  }
  xml_node dom = doc_.document_element();
  if (!dom || !is(dom.name(), "domain")) {
    throw Error(Exit::kUsage,
                (dom ? loc(dom) : file_) + ": expected a libvirt <domain>, got <" +
                    (dom ? dom.name() : "") + ">",
                "`virsh dumpxml NAME` prints a domain");
  }
  for (xml_attribute a : dom.attributes()) {
    std::string n = a.name();
    if (n.starts_with("xmlns:") && is(a.value(), kQemuNs)) qemu_prefix_ = n.substr(6);
  }

  // Order matters where one part reads another's facts: vCPUs before pinning,
  // features before the clock, devices before the lifecycle (panic).
  map_general(dom);
  map_memory(dom);
  map_cpus(dom);
  map_cputune(dom);
  map_os(dom);
  map_features(dom);
  map_cpu(dom);
  map_clock(dom);
  if (xml_node devices = dom.child("devices")) map_devices(devices);
  map_lifecycle(dom);
  for (xml_node c : dom.children((qemu_prefix_ + ":commandline").c_str())) map_commandline(c);
  for (xml_node s : dom.children("sysinfo")) {
    if (!is(dom.child("os").child("smbios").attribute("mode").value(), "sysinfo") ||
        !is(s.attribute("type").value(), "smbios")) {
      t_.dropped_all(s, "<sysinfo> without <smbios mode='sysinfo'/>: not shown to the guest",
                     false);
      continue;
    }
    carried(s, "/smbios");
    carried_attr(s, "type", "/smbios");
    p_.set("/smbios/mode", "explicit", "<os><smbios mode='sysinfo'/> with <sysinfo>");
    static const std::map<std::string, std::set<std::string>> kFields = {
        {"bios", {"vendor", "version", "date", "release"}},
        {"system", {"manufacturer", "product", "version", "serial", "uuid", "sku", "family"}},
        {"baseboard", {"manufacturer", "product", "version", "serial", "asset", "location"}},
        {"chassis", {"manufacturer", "version", "serial", "asset", "sku"}}};
    for (xml_node sec : s.children()) {
      if (sec.type() != pugi::node_element) continue;
      auto it = kFields.find(sec.name());
      if (it == kFields.end()) {
        t_.dropped_all(sec, std::string("SMBIOS ") + sec.name() + ": not held by a profile", true);
        continue;
      }
      carried(sec, "/smbios/" + it->first);
      for (xml_node e : sec.children("entry")) {
        std::string f = e.attribute("name").value();
        if (it->second.count(f)) {
          p_.set("/smbios/" + it->first + "/" + f, e.text().get());
          t_.carried_all(e, "/smbios/" + it->first + "/" + f);
        } else {
          t_.dropped_all(e, "SMBIOS field " + f + ": not held by a profile", true);
        }
      }
    }
  }
  if (p_.has("/devices")) {
    // Passthrough needs KVM and q35 here; libvirt also allowed i440fx.
    if (!is_q35(p_.json.value("machine", "q35"))) {
      p_.set("/machine", "q35", "passthrough needs q35 (the domain has i440fx)");
      xml_node type = dom.child("os").child("type");
      t_.changed(type.attribute("machine"), type, "/machine",
                 "q35: passlaunch puts each passed-through device behind a PCIe root port", true);
    }
    if (p_.json.value("accel", "kvm") == "tcg") {
      p_.set("/accel", "kvm", "passthrough needs KVM (the domain has type='qemu')");
      t_.changed(dom.attribute("type"), dom, "/accel", "KVM: VFIO passthrough needs it", false);
    }
  }
  if (p_.json.value("accel", "kvm") == "tcg" && p_.json["cpu"].value("model", "") == "host") {
    p_.set("/cpu/model", "max", "host-passthrough under TCG is QEMU's max model");
    xml_node cpu = dom.child("cpu");
    t_.changed(cpu.attribute("mode"), cpu, "/cpu/model",
               "QEMU's max model: host-passthrough needs KVM and the domain has type='qemu'", true);
  }
  if (!problems_.empty()) {
    std::string msg = file_ + ": " + std::to_string(problems_.size()) +
                      (problems_.size() == 1 ? " problem" : " problems") + " in the domain:";
    for (const std::string& p : problems_) msg += "\n  " + p;
    throw Error(Exit::kUsage, msg);
  }
  add_host_section();
  if (!p_.has("/cpu/model")) {
    p_.set("/cpu/model", "qemu64", "<cpu> names no model: libvirt's default, qemu64");
  }
  if (!p_.has("/machine")) p_.set("/machine", "q35");
  p_.header = "Imported from " + file_ +
              " by `passlaunch import libvirt`.\n"
              "Each setting names the libvirt element it came from; review them.";
  p_.order_fields();

  ImportResult r;
  r.report = t_.report(doc_);
  r.report.added = std::move(added_);
  r.profile = std::move(p_);
  return r;
}

}  // namespace

ImportResult import_libvirt(std::string_view xml, const std::string& file,
                            const ImportOptions& options) {
  Importer imp(xml, file, options);
  ImportResult r = imp.run();
  // The profile must be one that passlaunch reads back (files may be absent here).
  parse_profile(r.profile.text(), file + " (imported profile)", ProfileChecks{.files = false});
  return r;
}

}  // namespace pl::import
