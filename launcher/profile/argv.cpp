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
  const HypervConfig& hv = p.cpu.hyperv;
  if (hv.enlightenments) {
    for (const char* flag :
         {"hv-relaxed=on", "hv-vapic=on", "hv-spinlocks=0x1fff", "hv-vpindex=on", "hv-runtime=on",
          "hv-synic=on", "hv-stimer=on", "hv-reset=on", "hv-frequencies=on", "hv-time=on"}) {
      parts.push_back(flag);
    }
  }
  if (p.panic == PanicModel::kHyperv) parts.push_back("hv-crash=on");
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
      if (!fns[fn]->romfile.empty()) dev += ",romfile=" + qemu_escape(fns[fn]->romfile);
      a.add({"-device", dev});
    }
  }
}

void add_disks(const Profile& p, Argv& a) {
  for (size_t i = 0; i < p.disks.size(); ++i) {
    const Disk& d = p.disks[i];
    std::string node = "disk" + std::to_string(i);
    std::string ro = d.readonly ? "on" : "off";
    a.add({"-blockdev", "driver=file,node-name=" + node + "-file,filename=" + qemu_escape(d.path) +
                            ",read-only=" + ro + ",discard=unmap"});
    a.add({"-blockdev", "driver=" + d.format + ",node-name=" + node + ",file=" + node +
                            "-file,read-only=" + ro + ",discard=unmap"});
    if (d.interface == "nvme") {
      a.add({"-device", "nvme,drive=" + node + ",id=" + node + "-dev,serial=" + node});
    } else {
      std::string dev = "virtio-blk-pci,drive=" + node + ",id=" + node + "-dev";
      if (!d.iothread.empty()) dev += ",iothread=" + d.iothread;
      a.add({"-device", dev});
    }
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
    a.add({"-device", dev});
  }
}

void add_inputs(const Profile& p, Argv& a) {
  for (size_t i = 0; i < p.evdev.size(); ++i) {
    const EvdevInput& e = p.evdev[i];
    std::string obj = "input-linux,id=evdev" + std::to_string(i) + ",evdev=" + qemu_escape(e.path);
    if (e.grab_all) obj += ",grab_all=on";
    obj += e.repeat ? ",repeat=on" : ",repeat=off";
    if (!e.grab_toggle.empty()) obj += ",grab-toggle=" + e.grab_toggle;
    a.add({"-object", obj});
  }
  if (!p.usb.empty()) {
    a.add({"-device", "qemu-xhci,id=usb"});
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

}  // namespace

std::vector<std::string> build_qemu_argv(const Profile& p, const HostFacts& f) {
  Argv a;
  a.add({f.qemu_binary});
  a.add({"-name", qemu_escape(p.name) + ",debug-threads=on"});
  a.add({"-nodefaults", "-no-user-config", "-S"});
  a.add({"-msg", "timestamp=on"});
  a.add({"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"});

  std::string machine = p.machine;
  if (p.hugepages) machine += ",memory-backend=mem0";
  a.add({"-machine", machine});
  a.add({"-accel", f.accel == Accel::kKvm ? "kvm" : "tcg"});
  a.add({"-cpu", cpu_option(p)});
  const CpuConfig& c = p.cpu;
  a.add({"-smp", std::to_string(c.vcpus) + ",sockets=" + std::to_string(c.sockets) + ",cores=" +
                     std::to_string(c.cores) + ",threads=" + std::to_string(c.threads)});
  a.add({"-m", std::to_string(p.memory_mib) + "M"});
  if (p.hugepages) {
    a.add({"-object", "memory-backend-file,id=mem0,size=" + std::to_string(p.memory_mib) +
                          "M,mem-path=/dev/hugepages,prealloc=on"});
  }
  for (const IoThread& t : p.pinning.iothreads) a.add({"-object", "iothread,id=" + t.id});

  if (p.firmware.type == Firmware::Type::kOvmf) {
    a.add(
        {"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + qemu_escape(p.firmware.code)});
    a.add({"-drive", "if=pflash,format=raw,unit=1,file=" + qemu_escape(f.ovmf_vars)});
  }
  if (p.kernel) {
    a.add({"-kernel", p.kernel->kernel});
    if (!p.kernel->initrd.empty()) a.add({"-initrd", p.kernel->initrd});
    if (!p.kernel->append.empty()) a.add({"-append", p.kernel->append});
  }
  a.add({"-rtc", "base=" + p.rtc});
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
  return a.take();
}

}  // namespace pl
