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
  bool passthrough = false;     ///< hv-passthrough=on (mode "passthrough")
  /// hv-* properties by QEMU name and their QEMU value ("on", "off", "0x1fff",
  /// "auto"), overriding the `enlightenments` set, in name order.
  std::vector<std::pair<std::string, std::string>> features;
  std::string vendor_id;  ///< hv-vendor-id (1-12 characters), empty for none
  bool hide_kvm = false;  ///< kvm=off: hide the KVM signature (old NVIDIA drivers)
};

struct CpuConfig {
  std::string model = "host";  ///< "host" (host-passthrough) or a QEMU model such as "max"
  int vcpus = 1;
  int sockets = 1;
  int cores = 0;  ///< 0: vcpus / (sockets * threads)
  int threads = 1;
  bool hypervisor_bit = true;         ///< false: hide the CPUID hypervisor bit
  bool cache_passthrough = false;     ///< host-cache-info=on
  std::vector<std::string> features;  ///< "+name" / "-name" toggles, in order
  HypervConfig hyperv;
};

struct IoThread {
  std::string id;
  std::vector<int> cpus;  ///< host CPUs the iothread is pinned to (empty: emulator set)
  std::optional<int> realtime_priority = std::nullopt;  ///< real-time priority of this iothread
};

enum class RealtimePolicy { kFifo, kRr };

struct Pinning {
  /// Host CPU of vCPU i, one per vCPU (empty: no pinning). When vCPU i may run
  /// on a set (vcpu_sets non-empty), this is the set's first CPU.
  std::vector<int> vcpus;
  std::vector<int> emulator;  ///< host CPUs for every other QEMU thread
  std::vector<IoThread> iothreads;
  std::optional<int> realtime_priority;  ///< real-time priority for vCPU threads
  /// Empty, or the CPU set of each vCPU (one per vCPU) when any vCPU has a set.
  std::vector<std::vector<int>> vcpu_sets = {};
  std::optional<int> emulator_realtime_priority = std::nullopt;  ///< ... for the emulator threads
  RealtimePolicy realtime_policy = RealtimePolicy::kFifo;

  /// The CPUs vCPU i is pinned to (empty: not pinned).
  std::vector<int> vcpu_cpus(size_t i) const {
    if (i < vcpu_sets.size()) return vcpu_sets[i];
    if (i < vcpus.size()) return {vcpus[i]};
    return {};
  }
  /// Every CPU some vCPU is pinned to, ascending.
  std::vector<int> all_vcpu_cpus() const;
};

struct Firmware {
  enum class Type { kBios, kOvmf } type = Type::kBios;
  std::string code;           ///< OVMF code image (read-only)
  std::string vars_template;  ///< copied once per VM into its state directory
  bool secure_boot = false;   ///< SMM, protected varstore (needs an SMM code image)
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
  std::optional<int> boot_index;
  bool rombar = true;  ///< false: rombar=0
  bool x_vga = false;  ///< x-vga=on
  /// Ids the guest sees: x-pci-vendor-id, x-pci-device-id, x-pci-sub-vendor-id,
  /// x-pci-sub-device-id.
  std::optional<uint16_t> vendor_id, device_id, sub_vendor_id, sub_device_id;
};

struct Disk {
  std::string path;                  ///< empty: a CD-ROM with an empty tray
  std::string format = "raw";        ///< raw | qcow2
  std::string interface = "virtio";  ///< virtio | nvme | sata | scsi
  bool cdrom = false;                ///< media "cdrom": read-only ide-cd / scsi-cd
  std::string iothread;              ///< id of an iothread, empty for none
  bool readonly = false;
  std::optional<int> boot_index;
  std::string cache;  ///< none | writeback | writethrough | directsync | unsafe; empty: QEMU's
  std::string aio;    ///< threads | native | io_uring; empty: QEMU's
  std::string discard = "unmap";  ///< unmap | ignore
  std::string serial;             ///< empty: derived from the VM name and the disk's index
};

struct NetDevice {
  enum class Type { kMacvtap, kBridge, kUser } type = Type::kUser;
  std::string link;             ///< macvtap: lower device
  std::string mode = "bridge";  ///< macvtap mode: bridge | vepa | private | passthru
  std::string bridge;           ///< bridge: the existing bridge
  std::string mac;              ///< "52:54:00:..." (empty: QEMU's default)
  std::string model = "virtio-net-pci";
  std::optional<int> boot_index;
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

/// Machine toggles beyond the machine type; unset: QEMU's default.
struct Platform {
  std::optional<bool> vmport;
  std::string kernel_irqchip;  ///< on | off | split; empty: QEMU's
};

struct Clock {
  std::optional<bool> hpet;
  std::string rtc_driftfix;          ///< none | slew; empty: QEMU's (none)
  std::string pit_lost_tick_policy;  ///< discard | delay | slew; empty: QEMU's
};

/// The guest's SMBIOS tables.
struct Smbios {
  enum class Mode { kNone, kHost, kExplicit } mode = Mode::kNone;
  /// Explicit fields per type (0 BIOS, 1 system, 2 baseboard, 3 chassis):
  /// QEMU's -smbios key and value, in the profile's order.
  std::vector<std::pair<std::string, std::string>> fields[4];
};

struct Display {
  std::string type;             ///< vnc | spice; empty: no display
  std::string listen = "unix";  ///< "unix" or "ADDRESS:PORT"
  std::string vga = "std";      ///< std | virtio | qxl
};

struct Sound {
  std::string model = "ich9";    ///< ich9 | hda; empty model: no sound
  std::string codec = "duplex";  ///< duplex | output | micro
  std::string backend;           ///< pa | alsa | none; empty: no sound
  std::string server;            ///< pa: the server socket
};

/// ivshmem-plain over /dev/shm/NAME (Looking Glass).
struct Shmem {
  std::string name;
  uint64_t size_mib = 0;
  std::string user;  ///< owner of the file; empty: the launcher's
};

/// True for "q35" and the versioned "pc-q35-X.Y".
bool is_q35(const std::string& machine);

struct Profile {
  std::string file;  ///< where it was read from, for messages
  std::string name;
  Accel accel = Accel::kAuto;
  std::string machine = "q35";
  uint64_t memory_mib = 1024;
  bool hugepages = false;
  int hugepage_size_mib = 2;   ///< 2 or 1024
  bool memory_locked = false;  ///< -overcommit mem-lock=on
  bool memory_shared = false;  ///< share=on (memfd without hugepages)
  Platform platform;
  Clock clock;
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
  Smbios smbios;
  Display display;
  Sound sound;
  bool guest_agent = false;
  std::vector<Shmem> shmem;
  std::vector<std::string> qemu_args;  ///< appended to QEMU's argv last, verbatim
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
  /// QEMU's firmware descriptors, read to tell whether a Secure Boot code image has SMM.
  std::string firmware_descriptors = "/usr/share/qemu/firmware";
};

/// The default serial of disk `index` of VM `name`: 20 characters derived
/// from both, like a real drive's, naming no VM.
std::string default_disk_serial(const std::string& name, size_t index);

/// Parses a profile from text. `file` names the source in messages. Throws
/// pl::Error (Exit::kUsage) listing every problem: "<file>: <json path>: ...".
Profile parse_profile(std::string_view text, const std::string& file,
                      const ProfileChecks& checks = {});

/// Reads and parses a profile file.
Profile load_profile(const std::string& path, const ProfileChecks& checks = {});

/// "kvm", "tcg" or "auto".
std::string to_string(Accel a);

}  // namespace pl
