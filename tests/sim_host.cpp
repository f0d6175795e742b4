#include "sim_host.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "core/cpulist.h"
#include "core/error.h"

namespace pl::host::sim {
namespace {

namespace fsys = std::filesystem;
using nlohmann::json;

/// The simulated kernel and systemd: stateless, everything in files under root.
class Kernel {
 public:
  explicit Kernel(std::string root) : root_(std::move(root)) {
    std::ifstream in(root_ + "/.sim/config.json");
    if (in) cfg_ = json::parse(in);
  }

  std::string real(const std::string& host) const { return root_ + host; }
  bool exists(const std::string& host) const {
    return fsys::exists(fsys::symlink_status(real(host)));
  }
  std::string read(const std::string& host) const {
    std::ifstream in(real(host));
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }
  void put(const std::string& host, const std::string& text) const {
    fsys::create_directories(fsys::path(real(host)).parent_path());
    std::ofstream(real(host)) << text;
  }
  /// A relative symlink, as sysfs makes them.
  void link(const std::string& host_link, const std::string& host_target) const {
    fsys::create_directories(fsys::path(real(host_link)).parent_path());
    auto rel = fsys::path(host_target).lexically_relative(fsys::path(host_link).parent_path());
    fsys::remove(real(host_link));
    fsys::create_symlink(rel, real(host_link));
  }
  void unlink(const std::string& host) const { fsys::remove(real(host)); }
  std::string readlink_base(const std::string& host) const {
    std::error_code ec;
    auto t = fsys::read_symlink(real(host), ec);
    return ec ? "" : t.filename().string();
  }

  json& cfg() { return cfg_; }
  void save_cfg() const { put("/.sim/config.json", cfg_.dump(1)); }

  // ---- PCI ----
  std::string dev_dir(const std::string& addr) const {
    std::error_code ec;
    auto t = fsys::read_symlink(real("/sys/bus/pci/devices/" + addr), ec);
    if (ec) return "";
    return (fsys::path("/sys/bus/pci/devices") / t).lexically_normal().string();
  }
  bool pci_exists(const std::string& addr) const { return !dev_dir(addr).empty(); }
  std::string pci_driver(const std::string& addr) const {
    return readlink_base(dev_dir(addr) + "/driver");
  }
  std::string pci_override(const std::string& addr) const {
    std::string o = read(dev_dir(addr) + "/driver_override");
    return o == "(null)" ? "" : o;
  }
  bool driver_loaded(const std::string& drv) const { return exists("/sys/bus/pci/drivers/" + drv); }

  std::vector<std::string> vfio_ids() const {
    std::vector<std::string> ids = cfg_.value("vfio_ids", std::vector<std::string>{});
    std::istringstream dyn(read("/.sim/state/vfio-pci.new_id"));
    for (std::string id; dyn >> id;) ids.push_back(id);
    return ids;
  }

  bool matches(const std::string& drv, const std::string& addr) const {
    const std::string dir = dev_dir(addr);
    std::string vendor = read(dir + "/vendor").substr(2), device = read(dir + "/device").substr(2);
    std::string klass = read(dir + "/class").substr(2);
    if (drv == "vfio-pci") {
      for (const auto& id : vfio_ids()) {
        if (id == vendor + ":" + device) return true;
      }
      return false;
    }
    for (const auto& d : cfg_["drivers"]) {
      if (d["name"] != drv) continue;
      for (const auto& m : d["match"]) {
        if (m.contains("vendor") && m["vendor"] != vendor) continue;
        if (m.contains("device") && m["device"] != device) continue;
        if (m.contains("class") && !klass.starts_with(m["class"].get<std::string>())) continue;
        return true;
      }
    }
    return false;
  }

  /// A driver's probe of `addr` stuck (a GPU the guest left unreset): the
  /// bind blocks, inside the drivers_probe write or the module load, while
  /// /.sim/state/hang_probe names the device.
  void probe_wait(const std::string& addr) const {
    while (read("/.sim/state/hang_probe") == addr)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

  /// A driver's probe: waits while it is stuck, then binds.
  void probe_bind(const std::string& addr, const std::string& drv) const {
    probe_wait(addr);
    bind(addr, drv);
  }

  void bind(const std::string& addr, const std::string& drv) const {
    const std::string dir = dev_dir(addr);
    link(dir + "/driver", "/sys/bus/pci/drivers/" + drv);
    link("/sys/bus/pci/drivers/" + drv + "/" + addr, dir);
    if (drv == "vfio-pci" && read(dir + "/boot_vga") == "1" && kernel_at_least(6, 0))
      sysfb_disable();
  }

  /// vfio-pci's probe of the boot VGA (vfio_pci_core_register_device ->
  /// aperture_remove_conflicting_pci_devices, 6.0+) calls sysfb_disable():
  /// the boot framebuffer's platform device is unregistered for good
  /// (drivers/firmware/sysfb.c); with the last framebuffer gone fbcon
  /// unregisters, and its vtconsole (vtcon1) disappears.
  void sysfb_disable() const {
    for (const char* dev : {"efi-framebuffer.0", "simple-framebuffer.0"}) {
      const std::string d = std::string("/sys/devices/platform/") + dev;
      if (!exists(d)) continue;
      const std::string drv = readlink_base(d + "/driver");
      if (!drv.empty()) unlink("/sys/bus/platform/drivers/" + drv + "/" + dev);
      unlink(std::string("/sys/bus/platform/devices/") + dev);
      fsys::remove_all(real(d));
      put("/.sim/state/sysfb_disabled", std::string(dev) + "\n");
    }
    for (const char* con : {"vtcon1"}) {
      if (read(std::string("/sys/devices/virtual/vtconsole/") + con + "/name") !=
          "(M) frame buffer device")
        continue;
      unlink(std::string("/sys/class/vtconsole/") + con);
      fsys::remove_all(real(std::string("/sys/devices/virtual/vtconsole/") + con));
    }
  }
  void unbind(const std::string& addr) const {
    const std::string drv = pci_driver(addr);
    if (drv.empty()) return;
    unlink(dev_dir(addr) + "/driver");
    unlink("/sys/bus/pci/drivers/" + drv + "/" + addr);
  }

  /// drivers_probe: driver_override names the only driver allowed; otherwise
  /// vfio-pci (its ids are meant to win, as with a softdep) and then the
  /// others in the order of the driver table.
  void probe(const std::string& addr) const {
    if (!pci_driver(addr).empty()) return;
    const std::string ov = pci_override(addr);
    if (!ov.empty()) {
      if (driver_loaded(ov)) probe_bind(addr, ov);
      return;
    }
    if (driver_loaded("vfio-pci") && matches("vfio-pci", addr)) return probe_bind(addr, "vfio-pci");
    for (const auto& d : cfg_["drivers"]) {
      const std::string drv = d["name"];
      if (driver_loaded(drv) && matches(drv, addr)) return probe_bind(addr, drv);
    }
  }

  /// A driver that registers takes every unbound device it may have.
  void attach_driver(const std::string& drv) const {
    for (const auto& e : fsys::directory_iterator(real("/sys/bus/pci/devices"))) {
      const std::string addr = e.path().filename().string();
      if (!pci_driver(addr).empty()) continue;
      const std::string ov = pci_override(addr);
      if (ov == drv || (ov.empty() && matches(drv, addr))) probe_bind(addr, drv);
    }
  }

  void register_driver(const std::string& drv) const {
    const std::string dir = "/sys/bus/pci/drivers/" + drv;
    for (const char* f : {"bind", "unbind", "new_id", "remove_id", "uevent"})
      put(dir + "/" + f, "");
    attach_driver(drv);
  }
  void unregister_driver(const std::string& drv) const {
    const std::string dir = "/sys/bus/pci/drivers/" + drv;
    for (const auto& e : fsys::directory_iterator(real(dir))) {
      if (fsys::is_symlink(e.symlink_status())) unbind(e.path().filename().string());
    }
    fsys::remove_all(real(dir));
  }

  /// /dev nodes of a bound PCI device that a process holds open and that its
  /// driver's remove() waits for: its sound cards' nodes, its DRM nodes,
  /// /dev/vfio/GROUP while on vfio-pci.
  std::vector<std::string> open_nodes(const std::string& addr, const std::string& drv) const {
    std::set<std::string> nodes;
    const std::string dir = dev_dir(addr);
    if (dir.empty()) return {};
    for (const char* sub : {"/sound", "/drm"}) {
      // The nodes exist while the device's own driver drives it, not on vfio-pci.
      if (drv == "vfio-pci" || !fsys::is_directory(real(dir + sub))) continue;
      for (const auto& card : fsys::directory_iterator(real(dir + sub))) {
        const std::string name = card.path().filename().string();
        nodes.insert((sub == std::string("/drm") ? "/dev/dri/" : "/dev/snd/") + name);
        if (sub == std::string("/sound") && fsys::is_directory(card.path())) {
          for (const auto& n : fsys::directory_iterator(card.path()))
            nodes.insert("/dev/snd/" + n.path().filename().string());
        }
      }
    }
    if (drv == "vfio-pci") nodes.insert("/dev/vfio/" + readlink_base(dir + "/iommu_group"));
    std::vector<std::string> held;
    std::error_code ec;
    for (const auto& p : fsys::directory_iterator(real("/proc"), ec)) {
      if (!fsys::is_directory(p.path() / "fd")) continue;
      for (const auto& fd : fsys::directory_iterator(p.path() / "fd", ec)) {
        auto t = fsys::read_symlink(fd.path(), ec);
        if (!ec && nodes.count(t.string())) held.push_back(t.string());
      }
    }
    return held;
  }

  // ---- modules ----
  bool module_loaded(const std::string& m) const { return exists("/sys/module/" + m); }
  int refcnt(const std::string& m) const { return std::stoi(read("/sys/module/" + m + "/refcnt")); }
  void add_ref(const std::string& m, int n) const {
    put("/sys/module/" + m + "/refcnt", std::to_string(refcnt(m) + n) + "\n");
  }

  /// The module's hard dependencies (iommufd for vfio from 6.2 on).
  std::vector<std::string> mod_deps(const std::string& m) const {
    std::vector<std::string> d = cfg_["modules"][m]["deps"];
    if (m == "vfio" && kernel_at_least(6, 2)) d.push_back("iommufd");
    return d;
  }
  std::vector<std::string> softdeps_post(const std::string& m) const {
    return cfg_["modules"][m].value("softdep_post", std::vector<std::string>{});
  }
  bool kernel_at_least(int major, int minor) const {
    int a = 0, b = 0;
    std::sscanf(read("/proc/sys/kernel/osrelease").c_str(), "%d.%d", &a, &b);
    return a > major || (a == major && b >= minor);
  }

  /// modprobe: dependencies first, then the module, then its "post:" soft
  /// dependencies (those not installed are skipped, as libkmod does).
  int insert(const std::string& m) const {
    if (!cfg_["modules"].contains(m)) return ENOENT;
    if (module_loaded(m)) return 0;
    for (const std::string& dep : mod_deps(m)) {
      if (int err = insert(dep)) return err;
    }
    put("/sys/module/" + m + "/initstate", "live\n");
    put("/sys/module/" + m + "/refcnt", "0\n");
    fsys::create_directories(real("/sys/module/" + m + "/holders"));
    for (const std::string& dep : mod_deps(m)) {
      link("/sys/module/" + dep + "/holders/" + m, "/sys/module/" + m);
      add_ref(dep, 1);
    }
    for (const std::string drv : cfg_["modules"][m]["drivers"]) register_driver(drv);
    for (const std::string& post : softdeps_post(m)) {
      if (cfg_["modules"].contains(post)) insert(post);
    }
    return 0;
  }

  /// delete_module(name, O_NONBLOCK): EWOULDBLOCK (== EAGAIN) while another
  /// module holds it (source_list) or its refcount is not zero
  /// (try_stop_module), kernel/module/main.c.
  int remove(const std::string& m) const {
    if (!module_loaded(m)) return ENOENT;
    if (!fsys::is_empty(real("/sys/module/" + m + "/holders")) || refcnt(m) > 0) return EAGAIN;
    for (const std::string drv : cfg_["modules"][m]["drivers"]) unregister_driver(drv);
    for (const std::string& dep : mod_deps(m)) {
      unlink("/sys/module/" + dep + "/holders/" + m);
      add_ref(dep, -1);
    }
    fsys::remove_all(real("/sys/module/" + m));
    return 0;
  }

  /// What insert(m) loads, in order, m included (libkmod's probe list).
  void load_order(const std::string& m, std::vector<std::string>& out) const {
    if (!cfg_["modules"].contains(m) || std::find(out.begin(), out.end(), m) != out.end()) return;
    for (const std::string& dep : mod_deps(m)) load_order(dep, out);
    if (std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
    for (const std::string& post : softdeps_post(m)) load_order(post, out);
  }

  // ---- cgroups ----
  /// Every process the simulation does not place elsewhere (the test itself)
  /// lives in the login session's scope.
  static constexpr const char* kLoginScope = "session-1.scope";
  /// The process's cgroup path below the root: "user.slice/session-1.scope".
  std::string cgroup_of(pid_t pid) const {
    std::string p = read("/.sim/state/cgroups/" + std::to_string(pid));
    return p.empty() ? std::string("user.slice/") + kLoginScope : p;
  }
  std::vector<pid_t> scope_members(const std::string& scope) const {
    std::vector<pid_t> out;
    if (!exists("/.sim/state/cgroups")) return out;
    for (const auto& e : fsys::directory_iterator(real("/.sim/state/cgroups"))) {
      std::string p = read("/.sim/state/cgroups/" + e.path().filename().string());
      if (p.substr(p.rfind('/') + 1) == scope) out.push_back(std::stoi(e.path().filename()));
    }
    return out;
  }
  /// cpuset.cpus.effective: each level's AllowedCPUs narrows its parent's
  /// (Documentation/admin-guide/cgroup-v2.rst, "Cpuset Interface Files").
  std::vector<int> effective_cpus(pid_t pid) const {
    std::vector<int> cpus = *parse_cpulist(read("/sys/devices/system/cpu/online"));
    std::string path = cgroup_of(pid);
    for (size_t at = 0;;) {
      size_t slash = path.find('/', at);
      const std::string unit = path.substr(at, slash == std::string::npos ? slash : slash - at);
      const std::string allowed = read(unit_file(unit, "AllowedCPUs"));
      if (!allowed.empty()) {
        std::vector<int> mask = *parse_cpulist(allowed), both;
        for (int c : cpus)
          if (std::find(mask.begin(), mask.end(), c) != mask.end()) both.push_back(c);
        cpus = both;
      }
      if (slash == std::string::npos) break;
      at = slash + 1;
    }
    return cpus;
  }

  // ---- time ----
  /// Simulated milliseconds since boot: time passes only when someone waits
  /// (FakeClock::sleep_for), and then the host moves on (advance()).
  long now_ms() const {
    std::string t = read("/.sim/clock");
    return t.empty() ? 0 : std::stol(t);
  }
  void advance(long ms) const {
    const long now = now_ms() + ms;
    put("/.sim/clock", std::to_string(now) + "\n");
    for (const auto& [u, unit] : cfg_["units"].items()) {
      if (unit_state(u) == "deactivating" && std::stol(read(unit_file(u, "stop_at"))) <= now)
        finish_stop(u);
    }
    if (!exists("/.sim/state/linger")) return;
    for (const auto& e : fsys::directory_iterator(real("/.sim/state/linger"))) {
      const std::string pid = e.path().filename().string();
      if (std::stol(read("/.sim/state/linger/" + pid)) > now) continue;
      fsys::remove_all(real("/proc/" + pid));
      fsys::remove(e.path());
    }
    if (fsys::is_empty(real("/.sim/state/linger"))) fsys::remove(real("/.sim/state/linger"));
  }

  // ---- units ----
  std::string unit_file(const std::string& u, const std::string& what) const {
    return "/.sim/state/units/" + u + "." + what;
  }
  std::string unit_state(const std::string& u) const { return read(unit_file(u, "state")); }
  void start_unit(const std::string& u) const {
    if (unit_state(u) == "active") return;
    if (unit_state(u) == "deactivating") finish_stop(u);
    const json& unit = cfg_["units"][u];
    for (const auto& p : unit.value("processes", json::array())) {
      const std::string pid = std::to_string(p["pid"].get<int>());
      // A session process that outlived the last stop is replaced.
      fsys::remove_all(real("/proc/" + pid));
      fsys::remove(real("/.sim/state/linger/" + pid));
      add_process(p["pid"], p["comm"], p["files"]);
    }
    if (exists("/.sim/state/linger") && fsys::is_empty(real("/.sim/state/linger")))
      fsys::remove(real("/.sim/state/linger"));
    const json refs = unit.value("module_refs", json::object());
    for (const auto& [m, n] : refs.items()) {
      if (module_loaded(m)) add_ref(m, n.get<int>());
    }
    put(unit_file(u, "state"), "active\n");
  }
  /// systemd: a stop job takes the unit through "deactivating" (ExecStop,
  /// SIGTERM, waiting for the main process) to "inactive"; `stop_ms` long.
  void stop_unit(const std::string& u) const {
    if (unit_state(u) != "active") return;
    const long stop_ms = cfg_["units"][u].value("stop_ms", 0);
    if (stop_ms == 0) return finish_stop(u);
    put(unit_file(u, "state"), "deactivating\n");
    put(unit_file(u, "stop_at"), std::to_string(now_ms() + stop_ms) + "\n");
  }
  /// The unit's processes exit, except session processes with `linger_ms`,
  /// which outlive it by that long (a compositor still tearing down).
  void finish_stop(const std::string& u) const {
    const json& unit = cfg_["units"][u];
    for (const auto& p : unit.value("processes", json::array())) {
      const std::string pid = std::to_string(p["pid"].get<int>());
      if (long linger = p.value("linger_ms", 0); linger > 0) {
        put("/.sim/state/linger/" + pid, std::to_string(now_ms() + linger) + "\n");
      } else {
        fsys::remove_all(real("/proc/" + pid));
      }
    }
    const json refs = unit.value("module_refs", json::object());
    for (const auto& [m, n] : refs.items()) {
      if (module_loaded(m)) add_ref(m, -n.get<int>());
    }
    unlink(unit_file(u, "stop_at"));
    put(unit_file(u, "state"), "inactive\n");
  }
  void add_process(int pid, const std::string& comm, const std::vector<std::string>& files) const {
    const std::string dir = "/proc/" + std::to_string(pid);
    put(dir + "/comm", comm + "\n");
    fsys::create_directories(real(dir + "/fd"));
    int fd = 3;
    for (const auto& f : files) fsys::create_symlink(f, real(dir + "/fd/" + std::to_string(fd++)));
  }

 private:
  std::string root_;
  json cfg_;
};

std::string trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  return std::string(s);
}

bool starts(const std::string& s, const std::string& prefix, std::string* rest) {
  if (!s.starts_with(prefix)) return false;
  *rest = s.substr(prefix.size());
  return true;
}

/// HostFs whose writes follow the kernel's rules for the attributes the
/// handover touches; every other write fails as on a read-only attribute.
class SimFs : public HostFs {
 public:
  using HostFs::HostFs;

  int write(const std::string& path, std::string_view data) override {
    Kernel k(root());
    const std::string v = trim(data);
    std::string rest;
    if (starts(path, "/sys/bus/pci/devices/", &rest) && rest.ends_with("/driver_override")) {
      std::string addr = rest.substr(0, rest.find('/'));
      if (!k.pci_exists(addr)) return ENOENT;
      k.put(k.dev_dir(addr) + "/driver_override", (v.empty() ? "(null)" : v) + "\n");
      return 0;
    }
    if (path == "/sys/bus/pci/drivers_probe") {
      if (!k.pci_exists(v)) return ENODEV;
      k.probe(v);
      return 0;
    }
    if (starts(path, "/sys/bus/pci/drivers/", &rest)) {
      std::string drv = rest.substr(0, rest.find('/')), file = rest.substr(rest.find('/') + 1);
      if (!k.driver_loaded(drv)) return ENOENT;
      if (file == "unbind") {
        if (!k.pci_exists(v) || k.pci_driver(v) != drv) return ENODEV;
        // A driver stuck in remove(): the write blocks until the test lets go.
        // And a driver's remove() waits for its users: snd_card_disconnect_sync
        // until every /dev/snd handle of the card is closed (sound/core/init.c),
        // vfio_unregister_group_dev until the group's fd is released
        // (drivers/vfio/vfio_main.c), a DRM driver's remove for its open nodes.
        while (k.exists("/.sim/state/hang_unbind") || !k.open_nodes(v, drv).empty())
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        k.unbind(v);
        return 0;
      }
      if (file == "bind") {
        if (!k.pci_exists(v)) return ENODEV;
        if (!k.pci_driver(v).empty()) return EBUSY;
        const std::string ov = k.pci_override(v);
        if (!(ov == drv || (ov.empty() && k.matches(drv, v)))) return ENODEV;
        k.bind(v, drv);
        return 0;
      }
      if (file == "new_id" && drv == "vfio-pci") {
        std::istringstream in(v);
        std::string vendor, device;
        if (!(in >> vendor >> device)) return EINVAL;
        k.put("/.sim/state/vfio-pci.new_id",
              k.read("/.sim/state/vfio-pci.new_id") + vendor + ":" + device + "\n");
        k.attach_driver("vfio-pci");
        return 0;
      }
      return EACCES;
    }
    if (starts(path, "/sys/class/vtconsole/", &rest) && rest.ends_with("/bind")) {
      if (!k.exists(path)) return ENOENT;
      if (v != "0" && v != "1") return EINVAL;
      k.put(path, v + "\n");
      return 0;
    }
    if (starts(path, "/sys/bus/platform/drivers/", &rest)) {
      std::string drv = rest.substr(0, rest.find('/')), file = rest.substr(rest.find('/') + 1);
      const std::string dev_link = "/sys/bus/platform/devices/" + v;
      if (!k.exists(dev_link)) return ENODEV;
      const std::string dev = "/sys/devices/platform/" + v;
      std::string cur = k.readlink_base(dev + "/driver");
      if (file == "unbind") {
        if (cur != drv) return ENODEV;
        k.unlink(dev + "/driver");
        k.unlink("/sys/bus/platform/drivers/" + drv + "/" + v);
        return 0;
      }
      if (file == "bind") {
        if (!cur.empty()) return EBUSY;
        k.link(dev + "/driver", "/sys/bus/platform/drivers/" + drv);
        k.link("/sys/bus/platform/drivers/" + drv + "/" + v, dev);
        return 0;
      }
      return EACCES;
    }
    if (starts(path, "/sys/devices/system/cpu/", &rest) &&
        rest.ends_with("/cpufreq/scaling_governor")) {
      const std::string dir = path.substr(0, path.rfind('/'));
      if (!k.exists(path)) return ENOENT;
      std::istringstream avail(k.read(dir + "/scaling_available_governors"));
      for (std::string g; avail >> g;) {
        if (g == v) {
          k.put(path, v + "\n");
          return 0;
        }
      }
      return EINVAL;
    }
    return exists(path) ? EACCES : ENOENT;
  }
};

class SimModules : public ModuleLoader {
 public:
  explicit SimModules(std::string root) : root_(std::move(root)) {}
  static std::string norm(std::string n) {
    std::replace(n.begin(), n.end(), '-', '_');
    return n;
  }
  int insert(const std::string& name) override { return Kernel(root_).insert(norm(name)); }
  int remove(const std::string& name) override { return Kernel(root_).remove(norm(name)); }
  std::vector<std::string> load_order(const std::string& name) override {
    std::vector<std::string> out;
    Kernel(root_).load_order(norm(name), out);
    return out;
  }

 private:
  std::string root_;
};

class SimServices : public ServiceManager {
 public:
  explicit SimServices(std::string root) : root_(std::move(root)) {}
  bool exists(const std::string& unit) override {
    return Kernel(root_).cfg()["units"].contains(unit);
  }
  std::string active_state(const std::string& unit) override {
    require(unit);
    return Kernel(root_).unit_state(unit);
  }
  void stop(const std::string& unit) override {
    require(unit);
    Kernel(root_).stop_unit(unit);
  }
  void start(const std::string& unit) override {
    require(unit);
    Kernel(root_).start_unit(unit);
  }
  std::string allowed_cpus(const std::string& unit) override {
    require(unit);
    return Kernel(root_).read("/.sim/state/units/" + unit + ".AllowedCPUs");
  }
  void set_allowed_cpus(const std::string& unit, const std::string& cpus) override {
    require(unit);
    Kernel(root_).put("/.sim/state/units/" + unit + ".AllowedCPUs", cpus + "\n");
  }
  std::string unit_of(pid_t pid) override {
    std::string path = Kernel(root_).cgroup_of(pid);
    return path.substr(path.rfind('/') + 1);
  }
  void move_to_scope(const std::string& scope, const std::string& slice, pid_t pid) override {
    require(slice);
    Kernel k(root_);
    if (k.unit_state(scope) == "active")
      throw Error(Exit::kFailed, "Unit " + scope + " was already loaded or has a fragment file.");
    k.put(k.unit_file(scope, "state"), "active\n");
    k.put(k.unit_file(scope, "slice"), slice + "\n");
    k.put("/.sim/state/cgroups/" + std::to_string(pid), slice + "/" + scope + "\n");
  }
  void leave_scope(const std::string& scope, pid_t pid, const std::string& unit) override {
    Kernel k(root_);
    const std::string here = k.cgroup_of(pid);
    if (here.substr(here.rfind('/') + 1) == scope) {
      const std::string file = "/.sim/state/cgroups/" + std::to_string(pid);
      if (unit == Kernel::kLoginScope) {
        k.unlink(file);
      } else {
        const std::string slice = k.read(k.unit_file(unit, "slice"));
        k.put(file, (slice.empty() ? unit : slice + "/" + unit) + "\n");
      }
      if (fsys::is_empty(k.real("/.sim/state/cgroups"))) k.unlink("/.sim/state/cgroups");
    }
    // An empty scope is collected.
    if (k.unit_state(scope) == "active" && k.scope_members(scope).empty()) {
      k.unlink(k.unit_file(scope, "state"));
      k.unlink(k.unit_file(scope, "slice"));
    }
  }

 private:
  void require(const std::string& unit) {
    if (!exists(unit)) throw Error(Exit::kFailed, "Unit " + unit + " not found.");
  }
  std::string root_;
};

/// Time passes only when someone waits, so bounded waits end at once; the
/// host moves on while it passes (units finish stopping, processes exit).
/// Kept in a file, so a forked child and its parent share it.
class FakeClock : public Clock {
 public:
  explicit FakeClock(std::string root) : root_(std::move(root)) {}
  std::chrono::steady_clock::time_point now() override {
    return std::chrono::steady_clock::time_point{} +
           std::chrono::milliseconds(Kernel(root_).now_ms());
  }
  void sleep_for(std::chrono::milliseconds d) override { Kernel(root_).advance(d.count()); }

 private:
  std::string root_;
};

struct Dev {
  const char* parent;
  const char* addr;
  const char* vendor;
  const char* device;
  const char* klass;
  const char* rev;
  const char* driver;  // module's driver, "" for none
  int group;
  bool boot_vga;
};

// The seed's machine: groups 13, 14, 16 as listed there, with the root port
// of the NVMe in group 16, and a few more devices in their own groups.
constexpr Dev kDevices[] = {
    {"pci0000:00/", "0000:00:00.0", "8086", "4660", "060000", "02", "", 0, false},
    {"pci0000:00/", "0000:00:01.0", "8086", "460d", "060400", "02", "pcieport", 1, false},
    {"pci0000:00/", "0000:00:1d.0", "8086", "7ab0", "060400", "11", "pcieport", 16, false},
    {"pci0000:00/", "0000:00:1f.0", "8086", "7a84", "060100", "11", "lpc_ich", 13, false},
    {"pci0000:00/", "0000:00:1f.3", "8086", "7ad0", "040380", "11", "snd_hda_intel", 13, false},
    {"pci0000:00/", "0000:00:1f.4", "8086", "7aa3", "0c0500", "11", "i801_smbus", 13, false},
    {"pci0000:00/", "0000:00:1f.5", "8086", "7aa4", "0c8000", "11", "intel-spi", 13, false},
    {"pci0000:00/0000:00:01.0/", "0000:01:00.0", "10de", "1e07", "030000", "a1", "nvidia", 14,
     true},
    {"pci0000:00/0000:00:01.0/", "0000:01:00.1", "10de", "10f7", "040300", "a1", "snd_hda_intel",
     14, false},
    {"pci0000:00/0000:00:01.0/", "0000:01:00.2", "10de", "1ad6", "0c0330", "a1", "xhci_hcd", 14,
     false},
    {"pci0000:00/0000:00:01.0/", "0000:01:00.3", "10de", "1ad7", "0c8000", "a1", "nvidia-gpu", 14,
     false},
    {"pci0000:00/0000:00:1d.0/", "0000:03:00.0", "144d", "a808", "010802", "00", "nvme", 16, false},
    {"pci0000:00/", "0000:06:00.0", "8086", "1572", "020000", "02", "i40e", 17, false},
};

json sim_config(const std::string& vfio_ids) {
  json modules = {
      {"nvidia", {{"deps", json::array()}, {"drivers", {"nvidia"}}}},
      {"nvidia_modeset", {{"deps", {"nvidia"}}, {"drivers", json::array()}}},
      {"nvidia_uvm", {{"deps", {"nvidia"}}, {"drivers", json::array()}}},
      {"drm", {{"deps", json::array()}, {"drivers", json::array()}}},
      {"nvidia_drm", {{"deps", {"nvidia_modeset", "drm"}}, {"drivers", json::array()}}},
      {"snd_hda_intel", {{"deps", json::array()}, {"drivers", {"snd_hda_intel"}}}},
      {"xhci_pci", {{"deps", json::array()}, {"drivers", {"xhci_hcd"}}}},
      {"i2c_nvidia_gpu", {{"deps", json::array()}, {"drivers", {"nvidia-gpu"}}}},
      {"nvme", {{"deps", json::array()}, {"drivers", {"nvme"}}}},
      {"lpc_ich", {{"deps", json::array()}, {"drivers", {"lpc_ich"}}}},
      {"i2c_i801", {{"deps", json::array()}, {"drivers", {"i801_smbus"}}}},
      {"spi_intel_pci", {{"deps", json::array()}, {"drivers", {"intel-spi"}}}},
      {"i40e", {{"deps", json::array()}, {"drivers", {"i40e"}}}},
      // drivers/vfio/vfio_main.c: MODULE_SOFTDEP("post: vfio_iommu_type1
      // vfio_iommu_spapr_tce"); type1 uses vfio's symbols, so it holds vfio.
      {"vfio",
       {{"deps", json::array()},
        {"drivers", json::array()},
        {"softdep_post", {"vfio_iommu_type1", "vfio_iommu_spapr_tce"}}}},
      {"vfio_iommu_type1", {{"deps", {"vfio"}}, {"drivers", json::array()}}},
      {"iommufd", {{"deps", json::array()}, {"drivers", json::array()}}},
      {"irqbypass", {{"deps", json::array()}, {"drivers", json::array()}}},
      {"kvm", {{"deps", {"irqbypass"}}, {"drivers", json::array()}}},
      {"kvm_intel", {{"deps", {"kvm"}}, {"drivers", json::array()}}},
      {"vfio_pci_core", {{"deps", {"vfio", "irqbypass"}}, {"drivers", json::array()}}},
      {"vfio_pci", {{"deps", {"vfio_pci_core"}}, {"drivers", {"vfio-pci"}}}},
  };
  json drivers = json::array({
      {{"name", "nvidia"}, {"match", {{{"vendor", "10de"}, {"class", "03"}}}}},
      {{"name", "snd_hda_intel"}, {"match", {{{"class", "0403"}}}}},
      {{"name", "xhci_hcd"}, {"match", {{{"class", "0c0330"}}}}},
      {{"name", "nvidia-gpu"}, {"match", {{{"vendor", "10de"}, {"device", "1ad7"}}}}},
      {{"name", "nvme"}, {"match", {{{"class", "0108"}}}}},
      {{"name", "lpc_ich"}, {"match", {{{"vendor", "8086"}, {"device", "7a84"}}}}},
      {{"name", "i801_smbus"}, {"match", {{{"class", "0c05"}}}}},
      {{"name", "intel-spi"}, {"match", {{{"vendor", "8086"}, {"device", "7aa4"}}}}},
      {{"name", "i40e"}, {"match", {{{"vendor", "8086"}, {"device", "1572"}}}}},
  });
  json units = {
      {"display-manager.service",
       {{"processes",
         {{{"pid", 1200},
           {"comm", "Xorg"},
           {"files", {"/dev/nvidia0", "/dev/nvidiactl", "/dev/dri/card0"}}},
          {{"pid", 1300},
           {"comm", "gnome-shell"},
           {"files", {"/dev/dri/renderD128", "/dev/null"}},
           {"linger_ms", 500}}}},
        {"module_refs", {{"nvidia_drm", 2}, {"nvidia", 2}}},
        {"stop_ms", 300}}},
      {"nvidia-persistenced.service",
       {{"processes", {{{"pid", 900}, {"comm", "nvidia-persiste"}, {"files", {"/dev/nvidiactl"}}}}},
        {"module_refs", {{"nvidia", 1}}}}},
      {"sshd.service",
       {{"processes", {{{"pid", 700}, {"comm", "sshd"}, {"files", {"/dev/null"}}}}}}},
      {"system.slice", json::object()},
      {"user.slice", json::object()},
      {"init.scope", json::object()},
      {"machine.slice", json::object()},
  };
  json ids = json::array();
  std::istringstream in(vfio_ids);
  for (std::string id; std::getline(in, id, ',');) {
    if (!id.empty()) ids.push_back(id);
  }
  return {{"modules", modules}, {"drivers", drivers}, {"units", units}, {"vfio_ids", ids}};
}

}  // namespace

SimHost::SimHost(const std::string& vfio_ids, const std::string& kernel) {
  // tmpfs when there is one: the simulated host makes many small files.
  char tmpl[] = "/dev/shm/pl-simhost-XXXXXX";
  if (!fsys::is_directory("/dev/shm")) std::strcpy(tmpl, "/tmp/pl-simhost-XXXXXX");
  root_ = ::mkdtemp(tmpl);
  Kernel k(root_);
  k.cfg() = sim_config(vfio_ids);
  k.save_cfg();
  k = Kernel(root_);

  k.put("/proc/sys/kernel/random/boot_id", "6f1e4c39-1f0b-4b7e-9d8e-0c9a3e2f4b11\n");
  k.put("/proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme vmx\n");
  k.put("/proc/cmdline",
        "BOOT_IMAGE=/vmlinuz-linux root=/dev/sda2 loglevel=3 intel_iommu=on iommu=pt\n");
  k.put("/dev/kvm", "");
  fsys::create_directories(k.real("/var/lib"));
  k.put("/proc/sys/kernel/osrelease", kernel + "\n");
  k.put("/lib/modules/" + kernel + "/modules.dep",
        "kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko "
        "kernel/drivers/vfio/vfio.ko\n");
  k.put("/proc/meminfo",
        "MemTotal:       65536000 kB\nHugePages_Total:    8192\nHugePages_Free:     8192\n"
        "Hugepagesize:       2048 kB\n");
  k.put("/usr/share/OVMF/OVMF_CODE_4M.fd", "");
  fsys::create_directories(k.real("/sys/class/iommu/dmar0"));
  fsys::create_directories(k.real("/sys/bus/pci/drivers/pcieport"));  // built in

  for (const Dev& d : kDevices) {
    const std::string dir = std::string("/sys/devices/") + d.parent + d.addr;
    k.put(dir + "/vendor", std::string("0x") + d.vendor + "\n");
    k.put(dir + "/device", std::string("0x") + d.device + "\n");
    k.put(dir + "/class", std::string("0x") + d.klass + "\n");
    k.put(dir + "/revision", std::string("0x") + d.rev + "\n");
    k.put(dir + "/driver_override", "(null)\n");
    // The first 64 bytes of config space: ids, class, header type at 0x0e
    // (bridges type 1; the GPU's functions set the multi-function bit).
    std::string config(64, '\0');
    auto le16 = [&](size_t at, const char* hex) {
      unsigned v = std::stoul(hex, nullptr, 16);
      config[at] = static_cast<char>(v & 0xff);
      config[at + 1] = static_cast<char>(v >> 8);
    };
    le16(0, d.vendor);
    le16(2, d.device);
    const bool bridge = std::string(d.klass).starts_with("0604");
    const bool multi = std::string(d.addr).starts_with("0000:01:00.");
    config[0x0e] = static_cast<char>((bridge ? 1 : 0) | (multi ? 0x80 : 0));
    k.put(dir + "/config", config);
    if (std::string(d.klass).starts_with("03"))
      k.put(dir + "/boot_vga", d.boot_vga ? "1\n" : "0\n");
    k.link(std::string("/sys/bus/pci/devices/") + d.addr, dir);
    const std::string group = "/sys/kernel/iommu_groups/" + std::to_string(d.group);
    k.link(dir + "/iommu_group", group);
    k.link(group + "/devices/" + d.addr, dir);
    if (std::string(d.driver) == "pcieport") k.bind(d.addr, "pcieport");
  }
  // The GPU's DRM nodes.
  const std::string gpu = k.dev_dir("0000:01:00.0");
  fsys::create_directories(k.real(gpu + "/drm/card0"));
  fsys::create_directories(k.real(gpu + "/drm/renderD128"));
  // Sound cards: the onboard codec is card0, the GPU's HDMI audio card1.
  for (auto [addr, card] : {std::pair{"0000:00:1f.3", "0"}, std::pair{"0000:01:00.1", "1"}}) {
    const std::string dir = k.dev_dir(addr) + "/sound/card" + card;
    for (std::string n : {"controlC", "pcmC", "hwC"}) {
      std::string node = n + card + (n == "controlC" ? "" : n == "pcmC" ? "D3p" : "D0");
      fsys::create_directories(k.real(dir + "/" + node));
    }
  }
  // The NVMe's namespace with two partitions (the guest's Windows disk), in
  // /sys/block as the kernel lays it out; nothing mounts it.
  const std::string ns = k.dev_dir("0000:03:00.0") + "/nvme/nvme0/nvme0n1";
  k.put(ns + "/dev", "259:0\n");
  fsys::create_directories(k.real(ns + "/holders"));
  for (int part : {1, 2}) {
    const std::string pdir = ns + "/nvme0n1p" + std::to_string(part);
    k.put(pdir + "/dev", "259:" + std::to_string(part) + "\n");
    k.put(pdir + "/partition", std::to_string(part) + "\n");
    fsys::create_directories(k.real(pdir + "/holders"));
  }
  k.link("/sys/block/nvme0n1", ns);
  // The host's own disk, mounted as / and swapping on sda3.
  const std::string sda =
      "/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda";
  k.put(sda + "/dev", "8:0\n");
  k.put(sda + "/sda2/dev", "8:2\n");
  k.put(sda + "/sda2/partition", "2\n");
  k.link("/sys/block/sda", sda);
  k.put("/proc/self/mountinfo",
        "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw\n"
        "23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw\n");
  k.put("/proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");

  // Modules in boot order; their drivers take the devices as they register.
  for (const char* m :
       {"kvm_intel", "nvidia", "nvidia_modeset", "drm", "nvidia_drm", "nvidia_uvm", "snd_hda_intel",
        "xhci_pci", "i2c_nvidia_gpu", "nvme", "lpc_ich", "i2c_i801", "spi_intel_pci", "i40e"}) {
    k.insert(m);
  }
  if (!k.cfg()["vfio_ids"].empty()) k.insert("vfio_pci");  // vfio.conf loads it early

  // Consoles and the boot framebuffer.
  for (auto [name, desc, bound] : {std::tuple{"vtcon0", "(S) dummy device", "0"},
                                   std::tuple{"vtcon1", "(M) frame buffer device", "1"}}) {
    const std::string dir = std::string("/sys/devices/virtual/vtconsole/") + name;
    k.put(dir + "/name", std::string(desc) + "\n");
    k.put(dir + "/bind", std::string(bound) + "\n");
    k.link(std::string("/sys/class/vtconsole/") + name, dir);
  }
  k.put("/sys/devices/platform/efi-framebuffer.0/uevent", "DRIVER=efi-framebuffer\n");
  k.link("/sys/bus/platform/devices/efi-framebuffer.0", "/sys/devices/platform/efi-framebuffer.0");
  for (const char* f : {"bind", "unbind", "uevent"})
    k.put(std::string("/sys/bus/platform/drivers/efi-framebuffer/") + f, "");
  k.link("/sys/devices/platform/efi-framebuffer.0/driver",
         "/sys/bus/platform/drivers/efi-framebuffer");
  k.link("/sys/bus/platform/drivers/efi-framebuffer/efi-framebuffer.0",
         "/sys/devices/platform/efi-framebuffer.0");

  k.put("/sys/devices/system/cpu/online", "0-7\n");
  for (int cpu = 0; cpu < 8; ++cpu) {
    const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/cpufreq";
    k.put(dir + "/scaling_governor", "powersave\n");
    k.put(dir + "/scaling_available_governors", "performance powersave\n");
  }

  for (const char* u : {"sshd.service", "nvidia-persistenced.service", "display-manager.service"})
    k.start_unit(u);
  for (const char* u : {"system.slice", "user.slice", "init.scope", "machine.slice", "sshd.service",
                        "nvidia-persistenced.service", "display-manager.service"}) {
    if (k.unit_state(u).empty())
      k.put("/.sim/state/units/" + std::string(u) + ".state", "inactive\n");
    k.put("/.sim/state/units/" + std::string(u) + ".AllowedCPUs", "\n");
  }
  k.put("/.sim/state/units/system.slice.state", "active\n");
  k.put("/.sim/state/units/user.slice.state", "active\n");
  k.put("/.sim/state/units/init.scope.state", "active\n");

  fs_ = std::make_unique<SimFs>(root_);
  services_ = std::make_unique<SimServices>(root_);
  modules_ = std::make_unique<SimModules>(root_);
  clock_ = std::make_unique<FakeClock>(root_);
}

Snapshot SimHost::after_restore(const Snapshot& before) const {
  Kernel k(root_);
  if (!k.exists("/.sim/state/sysfb_disabled")) return before;
  Snapshot out;
  for (const auto& [path, v] : before) {
    bool gone = false;
    for (const char* p :
         {"/sys/devices/platform/efi-framebuffer.0", "/sys/bus/platform/devices/efi-framebuffer.0",
          "/sys/bus/platform/drivers/efi-framebuffer/efi-framebuffer.0",
          "/sys/class/vtconsole/vtcon1", "/sys/devices/virtual/vtconsole/vtcon1"}) {
      gone = gone || path == p || path.starts_with(std::string(p) + "/");
    }
    if (!gone) out[path] = v;
  }
  out["/.sim/state/sysfb_disabled"] = "F:efi-framebuffer.0\n";
  return out;
}

std::vector<int> SimHost::effective_cpus(pid_t pid) const {
  return Kernel(root_).effective_cpus(pid);
}

SimHost::~SimHost() {
  std::error_code ec;
  fsys::remove_all(root_, ec);
}

HostEnv SimHost::env(std::ostream* log) {
  return HostEnv{*fs_, *services_, *modules_, *clock_, log, {}};
}

Snapshot SimHost::snapshot() const {
  Snapshot snap;
  const fsys::path base(root_);
  for (auto it = fsys::recursive_directory_iterator(base);
       it != fsys::recursive_directory_iterator(); ++it) {
    const std::string rel = "/" + it->path().lexically_relative(base).string();
    if (rel.starts_with("/var/lib/passlaunch") || rel == "/.sim/clock") continue;
    auto st = it->symlink_status();
    if (fsys::is_symlink(st)) {
      snap[rel] = "L:" + fsys::read_symlink(it->path()).string();
    } else if (fsys::is_directory(st)) {
      snap[rel] = "D";
    } else {
      std::ifstream in(it->path());
      std::stringstream ss;
      ss << in.rdbuf();
      snap[rel] = "F:" + ss.str();
    }
  }
  return snap;
}

void SimHost::add_process(int pid, const std::string& comm, const std::string& file) {
  Kernel(root_).add_process(pid, comm, {file});
}

void SimHost::pin_module(const std::string& module) { Kernel(root_).add_ref(module, 1); }

void SimHost::put_file(const std::string& host_path, const std::string& text) {
  Kernel(root_).put(host_path, text);
}

void SimHost::put_link(const std::string& host_link, const std::string& host_target) {
  Kernel(root_).link(host_link, host_target);
}

void SimHost::set_driver(const std::string& address, const std::string& driver) {
  Kernel k(root_);
  k.unbind(address);
  if (driver.empty()) return;
  if (!k.driver_loaded(driver)) {
    for (const char* f : {"bind", "unbind", "new_id", "remove_id", "uevent"})
      k.put("/sys/bus/pci/drivers/" + driver + "/" + f, "");
  }
  k.bind(address, driver);
}

void SimHost::remove_process(int pid) {
  fsys::remove_all(Kernel(root_).real("/proc/" + std::to_string(pid)));
}

void SimHost::add_groupless_device(const std::string& address) {
  Kernel k(root_);
  const std::string dir = "/sys/devices/pci0000:00/" + address;
  k.put(dir + "/vendor", "0x1b21\n");
  k.put(dir + "/device", "0x2142\n");
  k.put(dir + "/class", "0x0c0330\n");
  k.put(dir + "/revision", "0x00\n");
  k.put(dir + "/driver_override", "(null)\n");
  k.link("/sys/bus/pci/devices/" + address, dir);
}

void SimHost::set_boot_id(const std::string& id) {
  Kernel(root_).put("/proc/sys/kernel/random/boot_id", id + "\n");
}

std::string diff(const Snapshot& a, const Snapshot& b) {
  std::string out;
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    if (it == b.end())
      out += "- " + k + " " + v + "\n";
    else if (it->second != v)
      out += "~ " + k + " " + v + " -> " + it->second + "\n";
  }
  for (const auto& [k, v] : b) {
    if (!a.count(k)) out += "+ " + k + " " + v + "\n";
  }
  return out;
}

}  // namespace pl::host::sim
