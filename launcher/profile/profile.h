// The profile: one JSON file (comments allowed) that describes one VM and how
// the host hands its devices over. Parsing is strict and collects every
// problem before failing; see profiles/README.md for the fields.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pl {

/// A PCI address in the kernel's full form, DDDD:BB:DD.F.
struct PciAddress {
  uint16_t domain = 0;
  uint8_t bus = 0;
  uint8_t slot = 0;
  uint8_t function = 0;

  static std::optional<PciAddress> parse(std::string_view text);
  std::string str() const;  ///< "0000:01:00.0"
  /// The physical device (domain, bus, slot) that this function belongs to.
  bool same_device(const PciAddress& o) const {
    return domain == o.domain && bus == o.bus && slot == o.slot;
  }
  auto operator<=>(const PciAddress&) const = default;
};

enum class Accel { kKvm, kTcg, kAuto };

struct HypervConfig {
  bool enlightenments = false;  ///< hv-relaxed, hv-vapic, hv-spinlocks, hv-time, ...
  std::string vendor_id;        ///< hv-vendor-id (1-12 characters), empty for none
  bool hide_kvm = false;        ///< kvm=off: hide the KVM signature (old NVIDIA drivers)
};

struct CpuConfig {
  std::string model = "host";  ///< "host" (host-passthrough) or a QEMU model such as "max"
  int vcpus = 1;
  int sockets = 1;
  int cores = 0;  ///< 0: vcpus / (sockets * threads)
  int threads = 1;
  bool hypervisor_bit = true;         ///< false: hide the CPUID hypervisor bit
  std::vector<std::string> features;  ///< "+name" / "-name" toggles, in order
  HypervConfig hyperv;
};

struct IoThread {
  std::string id;
  std::vector<int> cpus;  ///< host CPUs the iothread is pinned to (empty: emulator set)
};

struct Pinning {
  std::vector<int> vcpus;     ///< host CPU of vCPU i, one per vCPU (empty: no pinning)
  std::vector<int> emulator;  ///< host CPUs for every other QEMU thread
  std::vector<IoThread> iothreads;
  std::optional<int> realtime_priority;  ///< SCHED_FIFO priority for vCPU threads
};

struct Firmware {
  enum class Type { kBios, kOvmf } type = Type::kBios;
  std::string code;           ///< OVMF code image (read-only)
  std::string vars_template;  ///< copied once per VM into its state directory
};

struct KernelBoot {
  std::string kernel;
  std::string initrd;
  std::string append;
};

struct VfioDevice {
  PciAddress address;
  std::string romfile;  ///< empty: none
  bool attach = true;   ///< false: bound to vfio-pci with its group, not given to the guest
};

struct Disk {
  std::string path;
  std::string format = "raw";        ///< raw | qcow2
  std::string interface = "virtio";  ///< virtio | nvme
  std::string iothread;              ///< id of an iothread, empty for none
  bool readonly = false;
};

struct NetDevice {
  enum class Type { kMacvtap, kBridge, kUser } type = Type::kUser;
  std::string link;             ///< macvtap: lower device
  std::string mode = "bridge";  ///< macvtap mode: bridge | vepa | private | passthru
  std::string bridge;           ///< bridge: the existing bridge
  std::string mac;              ///< "52:54:00:..." (empty: QEMU's default)
  std::string model = "virtio-net-pci";
};

struct EvdevInput {
  std::string path;
  bool grab_all = false;
  bool repeat = true;
  std::string grab_toggle;  ///< e.g. "ctrl-ctrl"; empty: QEMU's default
};

struct UsbHostDevice {
  uint16_t vendor = 0;
  uint16_t product = 0;
};

/// How the host hands its GPU over (used by `run`; see docs/host.md).
struct HostConfig {
  std::string display_manager = "display-manager.service";  ///< empty: leave it alone
  std::vector<std::string> stop_units;
  std::vector<std::string> gpu_modules;  ///< unloaded in this order, reloaded in reverse
  bool unbind_vtconsoles = true;
  bool unbind_framebuffer = true;
  bool rebind_vtconsoles = true;
  bool isolate_cpus = false;  ///< restrict system/user slices to the non-VM CPUs
  std::string governor;       ///< e.g. "performance" for the VM's CPUs; empty: leave
  std::string prepare_hook;
  std::string release_hook;
};

/// A key combination passlaunch watches on the profile's evdev keyboards
/// while the guest runs (profiles/README.md, "host_hotkey").
struct HostHotkey {
  std::vector<std::string> keys;     ///< "KEY_LEFTCTRL", ... (linux/input-event-codes.h)
  std::vector<int> codes;            ///< their key codes, in the same order
  std::vector<std::string> devices;  ///< evdev devices read (default: input/evdev's paths)
  enum class Action { kShutdown, kPoweroff } action = Action::kShutdown;
};

/// How the guest tells the host it panicked (QEMU's GUEST_PANICKED event).
enum class PanicModel {
  kNone,    ///< no panic notifier (the default)
  kIsa,     ///< -device pvpanic: ISA port 0x505 (Linux driver; Windows: virtio-win pvpanic)
  kPci,     ///< -device pvpanic-pci (same drivers)
  kHyperv,  ///< hv-crash in -cpu: the Hyper-V crash MSRs Windows writes on a bugcheck
};

struct Profile {
  std::string file;  ///< where it was read from, for messages
  std::string name;
  Accel accel = Accel::kAuto;
  std::string machine = "q35";
  uint64_t memory_mib = 1024;
  bool hugepages = false;
  CpuConfig cpu;
  Pinning pinning;
  Firmware firmware;
  std::optional<KernelBoot> kernel;
  std::vector<VfioDevice> devices;
  std::vector<Disk> disks;
  std::vector<NetDevice> network;
  std::vector<EvdevInput> evdev;
  std::vector<UsbHostDevice> usb;
  std::string tpm_state_dir;  ///< swtpm state directory; empty: no TPM
  std::string rtc = "utc";    ///< utc | localtime (Windows)
  bool serial_log = false;    ///< the guest's serial console is logged by passlaunch
  PanicModel panic = PanicModel::kNone;
  int shutdown_timeout_s = 120;
  HostConfig host;
  /// Members of this group get every control socket command, not only status.
  std::string control_group;
  std::optional<HostHotkey> host_hotkey;  ///< none: no host hotkey
};

/// The code of key `name` ("KEY_A", "KEY_LEFTCTRL", "BTN_LEFT"), if it is one
/// of linux/input-event-codes.h.
std::optional<int> key_code(std::string_view name);

/// What to check beyond the JSON itself.
struct ProfileChecks {
  bool files = true;  ///< referenced files (firmware, kernel, disks, romfiles) must exist
};

/// Parses a profile from text. `file` names the source in messages. Throws
/// pl::Error (Exit::kUsage) listing every problem: "<file>: <json path>: ...".
Profile parse_profile(std::string_view text, const std::string& file,
                      const ProfileChecks& checks = {});

/// Reads and parses a profile file.
Profile load_profile(const std::string& path, const ProfileChecks& checks = {});

/// "kvm", "tcg" or "auto".
std::string to_string(Accel a);

}  // namespace pl
