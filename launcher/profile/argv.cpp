#include "profile/argv.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "core/error.h"
#include "core/text.h"

namespace pl {
namespace {

std::string hex4(uint16_t v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%04x", v);
  return buf;
}

/// "-name" -> "name=off", "+name" -> "name=on".
std::string feature_property(const std::string& toggle) {
  return toggle.substr(1) + (toggle[0] == '+' ? "=on" : "=off");
}

std::string cpu_option(const Profile& p) {
  std::vector<std::string> parts{p.cpu.model};
  if (!p.cpu.hypervisor_bit) parts.push_back("hypervisor=off");
  if (p.cpu.cache_passthrough) parts.push_back("host-cache-info=on");
  const HypervConfig& hv = p.cpu.hyperv;
  if (hv.passthrough) parts.push_back("hv-passthrough=on");
  // The usual set, then the profile's hv-* properties override or extend it.
  std::vector<std::pair<std::string, std::string>> flags;
  if (hv.enlightenments) {
    flags = {{"hv-relaxed", "on"}, {"hv-vapic", "on"},   {"hv-spinlocks", "0x1fff"},
             {"hv-vpindex", "on"}, {"hv-runtime", "on"}, {"hv-synic", "on"},
             {"hv-stimer", "on"},  {"hv-reset", "on"},   {"hv-frequencies", "on"},
             {"hv-time", "on"}};
  }
  if (p.panic == PanicModel::kHyperv) flags.push_back({"hv-crash", "on"});
  for (const auto& [name, value] : hv.features) {
    auto it =
        std::find_if(flags.begin(), flags.end(), [&](const auto& f) { return f.first == name; });
    if (it != flags.end()) {
      it->second = value;
    } else {
      flags.push_back({name, value});
    }
  }
  for (const auto& [name, value] : flags) parts.push_back(name + "=" + value);
  if (!hv.vendor_id.empty()) parts.push_back("hv-vendor-id=" + qemu_escape(hv.vendor_id));
  if (hv.hide_kvm) parts.push_back("kvm=off");
  for (const std::string& f : p.cpu.features) parts.push_back(feature_property(f));
  return join(parts, ",");
}

class Argv {
 public:
  void add(std::initializer_list<std::string> args) {
    for (const auto& a : args) v_.push_back(a);
  }
  std::vector<std::string> take() { return std::move(v_); }

 private:
  std::vector<std::string> v_;
};

void add_passthrough(const Profile& p, Argv& a) {
  // Group functions by physical device, keeping the profile's device order
  // and the host's function order inside a device.
  std::vector<std::vector<const VfioDevice*>> slots;
  for (const VfioDevice& d : p.devices) {
    if (!d.attach) continue;
    auto it = std::find_if(slots.begin(), slots.end(), [&](const auto& s) {
      return s.front()->address.same_device(d.address);
    });
    if (it == slots.end()) {
      slots.push_back({&d});
    } else {
      it->push_back(&d);
    }
  }
  int hostdev = 0;
  for (size_t port = 0; port < slots.size(); ++port) {
    auto& fns = slots[port];
    std::sort(fns.begin(), fns.end(), [](const VfioDevice* x, const VfioDevice* y) {
      return x->address.function < y->address.function;
    });
    std::string rp = "rp" + std::to_string(port);
    char chassis_port[32];
    std::snprintf(chassis_port, sizeof chassis_port, "0x%zx", 0x10 + port);
    a.add({"-device", "pcie-root-port,id=" + rp + ",bus=pcie.0,chassis=" +
                          std::to_string(port + 1) + ",port=" + chassis_port});
    for (size_t fn = 0; fn < fns.size(); ++fn) {
      std::string dev = "vfio-pci,host=" + fns[fn]->address.str() + ",id=hostdev" +
                        std::to_string(hostdev++) + ",bus=" + rp + ",addr=0x0." +
                        std::to_string(fn);
      if (fn == 0 && fns.size() > 1) dev += ",multifunction=on";
      const VfioDevice& d = *fns[fn];
      if (!d.romfile.empty()) dev += ",romfile=" + qemu_escape(d.romfile);
      if (!d.rombar) dev += ",rombar=0";
      if (d.x_vga) dev += ",x-vga=on";
      if (d.vendor_id) dev += ",x-pci-vendor-id=" + hex4(*d.vendor_id);
      if (d.device_id) dev += ",x-pci-device-id=" + hex4(*d.device_id);
      if (d.sub_vendor_id) dev += ",x-pci-sub-vendor-id=" + hex4(*d.sub_vendor_id);
      if (d.sub_device_id) dev += ",x-pci-sub-device-id=" + hex4(*d.sub_device_id);
      if (d.boot_index) dev += ",bootindex=" + std::to_string(*d.boot_index);
      a.add({"-device", dev});
    }
  }
}

/// QEMU's cache modes as -blockdev options (node) and the device's write-cache.
struct CacheMode {
  const char* node;         ///< cache.direct / cache.no-flush, on both nodes
  const char* write_cache;  ///< the device's write-cache
};
CacheMode cache_mode(const std::string& cache) {
  if (cache == "none") return {",cache.direct=on,cache.no-flush=off", "on"};
  if (cache == "writeback") return {",cache.direct=off,cache.no-flush=off", "on"};
  if (cache == "writethrough") return {",cache.direct=off,cache.no-flush=off", "off"};
  if (cache == "directsync") return {",cache.direct=on,cache.no-flush=off", "off"};
  if (cache == "unsafe") return {",cache.direct=off,cache.no-flush=on", "on"};
  return {"", nullptr};
}

void add_disks(const Profile& p, Argv& a) {
  // SATA: q35's own AHCI controller (buses ide.0-ide.5); "pc" has none, so add one.
  bool any_sata = std::any_of(p.disks.begin(), p.disks.end(),
                              [](const Disk& d) { return d.interface == "sata"; });
  std::string sata_bus = is_q35(p.machine) ? "ide" : "sata0";
  if (any_sata && !is_q35(p.machine)) a.add({"-device", "ich9-ahci,id=sata0"});
  // SCSI: one virtio-scsi controller, on the scsi disks' iothread.
  const Disk* first_scsi = nullptr;
  for (const Disk& d : p.disks) {
    if (d.interface == "scsi" && (!first_scsi || first_scsi->iothread.empty())) first_scsi = &d;
  }
  if (first_scsi) {
    std::string ctl = "virtio-scsi-pci,id=scsi0";
    if (!first_scsi->iothread.empty()) ctl += ",iothread=" + first_scsi->iothread;
    a.add({"-device", ctl});
  }
  int sata_port = 0;
  for (size_t i = 0; i < p.disks.size(); ++i) {
    const Disk& d = p.disks[i];
    std::string node = "disk" + std::to_string(i);
    std::string ro = d.readonly ? "on" : "off";
    CacheMode cache = cache_mode(d.cache);
    bool has_media = !d.path.empty();
    if (has_media) {
      std::string file = "driver=file,node-name=" + node + "-file,filename=" + qemu_escape(d.path) +
                         ",read-only=" + ro;
      std::string fmt =
          "driver=" + d.format + ",node-name=" + node + ",file=" + node + "-file,read-only=" + ro;
      if (!d.cdrom) {
        file += ",discard=" + d.discard;
        fmt += ",discard=" + d.discard;
      }
      file += cache.node;
      fmt += cache.node;
      if (!d.aio.empty()) file += ",aio=" + d.aio;
      a.add({"-blockdev", file});
      a.add({"-blockdev", fmt});
    }
    std::string dev;
    if (d.interface == "nvme") {
      dev = "nvme,drive=" + node;
    } else if (d.interface == "sata") {
      dev = std::string(d.cdrom ? "ide-cd" : "ide-hd") + ",bus=" + sata_bus + "." +
            std::to_string(sata_port++);
      if (has_media) dev += ",drive=" + node;
    } else if (d.interface == "scsi") {
      dev = std::string(d.cdrom ? "scsi-cd" : "scsi-hd") + ",bus=scsi0.0";
      if (has_media) dev += ",drive=" + node;
    } else {
      dev = "virtio-blk-pci,drive=" + node;
      if (!d.iothread.empty()) dev += ",iothread=" + d.iothread;
    }
    dev += ",id=" + node + "-dev";
    std::string serial = d.serial.empty() && !d.cdrom ? default_disk_serial(p.name, i) : d.serial;
    if (!serial.empty()) dev += ",serial=" + serial;
    if (cache.write_cache && !d.cdrom) dev += std::string(",write-cache=") + cache.write_cache;
    if (d.boot_index) dev += ",bootindex=" + std::to_string(*d.boot_index);
    a.add({"-device", dev});
  }
}

void add_network(const Profile& p, const HostFacts& f, Argv& a) {
  size_t tap_index = 0;
  for (size_t i = 0; i < p.network.size(); ++i) {
    const NetDevice& n = p.network[i];
    std::string id = "net" + std::to_string(i);
    if (n.type == NetDevice::Type::kUser) {
      a.add({"-netdev", "user,id=" + id});
    } else {
      if (tap_index >= f.net_fds.size() || f.net_fds[tap_index].tap < 0) {
        throw Error(Exit::kUsage, p.file + ": /network/" + std::to_string(i) +
                                      ": no tap fd was prepared for this interface");
      }
      const NetFds& fds = f.net_fds[tap_index++];
      std::string netdev = "tap,id=" + id + ",fd=" + std::to_string(fds.tap);
      if (fds.vhost >= 0) netdev += ",vhost=on,vhostfd=" + std::to_string(fds.vhost);
      a.add({"-netdev", netdev});
    }
    std::string dev = n.model + ",netdev=" + id + ",id=" + id + "-dev";
    if (!n.mac.empty()) dev += ",mac=" + n.mac;
    if (n.boot_index) dev += ",bootindex=" + std::to_string(*n.boot_index);
    a.add({"-device", dev});
  }
}

void add_inputs(const Profile& p, Argv& a) {
  // A display's pointer: a USB tablet (absolute coordinates) keeps the VNC or
  // SPICE cursor where the viewer's is; a PS/2 mouse drifts.
  bool tablet = !p.display.type.empty();
  for (size_t i = 0; i < p.evdev.size(); ++i) {
    const EvdevInput& e = p.evdev[i];
    std::string obj = "input-linux,id=evdev" + std::to_string(i) + ",evdev=" + qemu_escape(e.path);
    if (e.grab_all) obj += ",grab_all=on";
    obj += e.repeat ? ",repeat=on" : ",repeat=off";
    if (!e.grab_toggle.empty()) obj += ",grab-toggle=" + e.grab_toggle;
    a.add({"-object", obj});
  }
  if (!p.usb.empty() || tablet) a.add({"-device", "qemu-xhci,id=usb"});
  if (tablet) a.add({"-device", "usb-tablet,bus=usb.0,id=tablet0"});
  if (!p.usb.empty()) {
    for (const UsbHostDevice& u : p.usb) {
      a.add({"-device",
             "usb-host,bus=usb.0,vendorid=" + hex4(u.vendor) + ",productid=" + hex4(u.product)});
    }
  }
}

/// The panic notifier. QEMU's default panic action shuts the VM down, and QEMU
/// may then exit before the launcher has read GUEST_PANICKED; `pause` keeps it
/// until the launcher, on that event, quits it (launcher.cpp), so the run
/// always ends as a panic (exit 6).
void add_panic(const Profile& p, Argv& a) {
  if (p.panic == PanicModel::kNone) return;
  // events=1 offers the guest only "panicked", never "crash loaded": virtio-win's
  // Windows driver otherwise reports "crash loaded" whenever crash dumps are
  // enabled (Windows' default), QEMU lets such a guest run on (write its dump,
  // reboot), and the run would not end. Linux reports "panicked" unless a kdump
  // kernel is loaded, and then handles the crash itself.
  if (p.panic == PanicModel::kIsa) a.add({"-device", "pvpanic,events=1"});
  if (p.panic == PanicModel::kPci) a.add({"-device", "pvpanic-pci,events=1"});
  a.add({"-action", "panic=pause"});
}

void add_smbios(const Profile& p, const HostFacts& f, Argv& a) {
  if (p.smbios.mode == Smbios::Mode::kHost) {
    for (const std::string& file : f.smbios_files) a.add({"-smbios", "file=" + qemu_escape(file)});
  }
  if (p.smbios.mode == Smbios::Mode::kExplicit) {
    for (int type = 0; type < 4; ++type) {
      if (p.smbios.fields[type].empty()) continue;
      std::string opt = "type=" + std::to_string(type);
      for (const auto& [key, value] : p.smbios.fields[type])
        opt += "," + key + "=" + qemu_escape(value);
      a.add({"-smbios", opt});
    }
  }
}

/// An emulated VGA and its VNC or SPICE server, on a Unix socket unless the
/// profile names a TCP address.
void add_display(const Profile& p, const HostFacts& f, Argv& a) {
  const Display& d = p.display;
  if (d.type.empty()) return;
  const char* card = d.vga == "virtio" ? "virtio-vga" : d.vga == "qxl" ? "qxl-vga" : "VGA";
  a.add({"-device", std::string(card) + ",id=video0"});
  bool unix_socket = d.listen == "unix";
  std::string host = d.listen.substr(0, d.listen.rfind(':'));
  int port = unix_socket ? 0 : std::stoi(d.listen.substr(d.listen.rfind(':') + 1));
  if (d.type == "vnc") {
    a.add({"-vnc", unix_socket ? "unix:" + qemu_escape(f.runtime_dir + "/vnc.sock")
                               : host + ":" + std::to_string(port - 5900)});
  } else {
    a.add({"-spice", unix_socket ? "unix=on,addr=" + qemu_escape(f.runtime_dir + "/spice.sock") +
                                       ",disable-ticketing=on"
                                 : "addr=" + host + ",port=" + std::to_string(port) +
                                       ",disable-ticketing=on"});
  }
}

void add_sound(const Profile& p, Argv& a) {
  const Sound& s = p.sound;
  if (s.backend.empty()) return;
  std::string dev = s.backend + ",id=snd0";
  if (!s.server.empty()) dev += ",server=" + s.server;
  a.add({"-audiodev", dev});
  a.add({"-device", std::string(s.model == "hda" ? "intel-hda" : "ich9-intel-hda") + ",id=sound0"});
  a.add({"-device", "hda-" + s.codec + ",id=sound0-codec,bus=sound0.0,audiodev=snd0"});
}

void add_guest_agent(const Profile& p, const HostFacts& f, Argv& a) {
  if (!p.guest_agent) return;
  a.add({"-chardev", "socket,id=qga0,path=" + qemu_escape(f.runtime_dir + "/qga.sock") +
                         ",server=on,wait=off"});
  a.add({"-device", "virtio-serial-pci,id=virtio-serial0"});
  a.add(
      {"-device", "virtserialport,bus=virtio-serial0.0,chardev=qga0,name=org.qemu.guest_agent.0"});
}

void add_shmem(const Profile& p, const HostFacts& f, Argv& a) {
  for (size_t i = 0; i < p.shmem.size(); ++i) {
    const Shmem& m = p.shmem[i];
    std::string id = "shmem" + std::to_string(i);
    a.add({"-object", "memory-backend-file,id=" + id +
                          ",mem-path=" + qemu_escape(f.shm_dir + "/" + m.name) +
                          ",size=" + std::to_string(m.size_mib) + "M,share=on"});
    a.add({"-device", "ivshmem-plain,memdev=" + id + ",id=" + id + "-dev"});
  }
}

}  // namespace

std::vector<std::string> build_qemu_argv(const Profile& p, const HostFacts& f) {
  Argv a;
  a.add({f.qemu_binary});
  a.add({"-name", qemu_escape(p.name) + ",debug-threads=on"});
  a.add({"-nodefaults", "-no-user-config", "-S"});
  a.add({"-msg", "timestamp=on"});
  a.add({"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"});

  std::string machine = p.machine;
  if (p.hugepages || p.memory_shared) machine += ",memory-backend=mem0";
  if (p.firmware.secure_boot) machine += ",smm=on";
  if (p.clock.hpet) machine += *p.clock.hpet ? ",hpet=on" : ",hpet=off";
  if (p.platform.vmport) machine += *p.platform.vmport ? ",vmport=on" : ",vmport=off";
  if (!p.platform.kernel_irqchip.empty()) machine += ",kernel_irqchip=" + p.platform.kernel_irqchip;
  a.add({"-machine", machine});
  a.add({"-accel", f.accel == Accel::kKvm ? "kvm" : "tcg"});
  a.add({"-cpu", cpu_option(p)});
  const CpuConfig& c = p.cpu;
  a.add({"-smp", std::to_string(c.vcpus) + ",sockets=" + std::to_string(c.sockets) + ",cores=" +
                     std::to_string(c.cores) + ",threads=" + std::to_string(c.threads)});
  a.add({"-m", std::to_string(p.memory_mib) + "M"});
  if (p.hugepages) {
    a.add({"-object", "memory-backend-file,id=mem0,size=" + std::to_string(p.memory_mib) +
                          "M,mem-path=" + qemu_escape(f.hugepage_path) + ",prealloc=on" +
                          (p.memory_shared ? ",share=on" : "")});
  } else if (p.memory_shared) {
    a.add({"-object",
           "memory-backend-memfd,id=mem0,size=" + std::to_string(p.memory_mib) + "M,share=on"});
  }
  if (p.memory_locked) a.add({"-overcommit", "mem-lock=on"});
  for (const IoThread& t : p.pinning.iothreads) a.add({"-object", "iothread,id=" + t.id});

  if (p.firmware.type == Firmware::Type::kOvmf) {
    // Secure Boot: only SMM code may write the variable store.
    if (p.firmware.secure_boot) a.add({"-global", "driver=cfi.pflash01,property=secure,value=on"});
    a.add(
        {"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + qemu_escape(p.firmware.code)});
    a.add({"-drive", "if=pflash,format=raw,unit=1,file=" + qemu_escape(f.ovmf_vars)});
  }
  if (p.kernel) {
    a.add({"-kernel", p.kernel->kernel});
    if (!p.kernel->initrd.empty()) a.add({"-initrd", p.kernel->initrd});
    if (!p.kernel->append.empty()) a.add({"-append", p.kernel->append});
  }
  std::string rtc = "base=" + p.rtc;
  if (!p.clock.rtc_driftfix.empty()) rtc += ",driftfix=" + p.clock.rtc_driftfix;
  a.add({"-rtc", rtc});
  if (!p.clock.pit_lost_tick_policy.empty())
    a.add({"-global", "kvm-pit.lost_tick_policy=" + p.clock.pit_lost_tick_policy});
  add_smbios(p, f, a);
  a.add({"-display", "none"});

  // QMP: QEMU inherits a socket that is already listening, so the launcher can
  // connect at once instead of polling for the socket file to appear.
  if (f.qmp_fd >= 0) {
    a.add({"-chardev", "socket,id=qmp,fd=" + std::to_string(f.qmp_fd) + ",server=on,wait=off"});
  } else {
    a.add({"-chardev", "socket,id=qmp,path=" + qemu_escape(f.runtime_dir + "/qmp.sock") +
                           ",server=on,wait=off"});
  }
  a.add({"-mon", "chardev=qmp,mode=control"});
  if (p.serial_log) {
    a.add({"-chardev", "stdio,id=serial0,signal=off", "-serial", "chardev:serial0"});
  }

  add_passthrough(p, a);
  add_disks(p, a);
  add_network(p, f, a);
  add_inputs(p, a);
  add_panic(p, a);
  if (!p.tpm_state_dir.empty()) {
    a.add({"-chardev", "socket,id=tpm0-sock,path=" + qemu_escape(f.runtime_dir + "/swtpm.sock")});
    a.add({"-tpmdev", "emulator,id=tpm0,chardev=tpm0-sock"});
    a.add({"-device", "tpm-crb,tpmdev=tpm0"});
  }
  add_display(p, f, a);
  add_sound(p, a);
  add_guest_agent(p, f, a);
  add_shmem(p, f, a);
  // The escape hatch goes last, verbatim (checked when the profile was read).
  for (const std::string& arg : p.qemu_args) a.add({arg});
  return a.take();
}

}  // namespace pl
