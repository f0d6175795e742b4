// Host commands: iommu, vfio-conf, check, recover. Every sysfs/procfs path
// hangs off --host-root (default "/").
#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/error.h"
#include "host/check.h"
#include "host/handover.h"
#include "host/host_env.h"
#include "host/host_fs.h"
#include "host/pci.h"
#include "host/vfio_conf.h"
#include "profile/profile.h"
#include "rom/rom.h"

namespace pl::cli {
namespace {

int run_iommu(const std::string& root, bool json) {
  host::HostFs fs(root);
  auto groups = host::read_iommu_groups(fs);
  if (groups.empty()) {
    throw Error(
        Exit::kEnvironment, "no IOMMU groups in " + fs.real("/sys/kernel/iommu_groups"),
        "enable VT-d/AMD-Vi in the firmware and add " +
            (host::iommu_cmdline_option(fs).empty() ? std::string("intel_iommu=on or amd_iommu=on")
                                                    : host::iommu_cmdline_option(fs)) +
            " iommu=pt to the kernel command line");
  }
  host::PciNames names;
  if (json) {
    nlohmann::json out = {{"groups", nlohmann::json::array()}};
    for (const auto& g : groups) {
      nlohmann::json devices = nlohmann::json::array();
      for (const auto& d : g.devices) {
        char cls[8];
        std::snprintf(cls, sizeof cls, "%04x", d.class_code >> 8);
        nlohmann::json j = {
            {"address", d.address},
            {"vendor", d.id().substr(0, 4)},
            {"device", d.id().substr(5)},
            {"class", cls},
            {"driver", d.driver.empty() ? nlohmann::json() : nlohmann::json(d.driver)},
            {"boot_vga", d.boot_vga},
            {"bridge", d.is_bridge()},
            {"description", host::describe_pci_device(d, names)}};
        if (d.revision) {
          char rev[4];
          std::snprintf(rev, sizeof rev, "%02x", *d.revision);
          j["revision"] = rev;
        }
        if (auto v = names.vendor(d.vendor)) j["vendor_name"] = *v;
        if (auto n = names.device(d.vendor, d.device)) j["device_name"] = *n;
        if (auto c = names.klass(d.class_code)) j["class_name"] = *c;
        devices.push_back(std::move(j));
      }
      out["groups"].push_back({{"group", g.number}, {"devices", std::move(devices)}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  for (const auto& g : groups) {
    std::cout << "IOMMU Group " << g.number << ":\n";
    for (const auto& d : g.devices) {
      std::cout << "\t" << host::describe_pci_device(d, names)
                << "  driver: " << (d.driver.empty() ? "none" : d.driver)
                << (d.boot_vga ? "  boot_vga" : "") << "\n";
    }
  }
  return 0;
}

/// The romfiles of a profile, by the rules `run` applies (rom::check_romfile,
/// which run's validate_romfile throws from): a valid ROM chain from offset 0
/// of the device's own vendor and device id when sysfs knows the device.
std::vector<host::CheckLine> check_romfiles(const host::HostFs& fs, const Profile& p) {
  std::vector<host::CheckLine> lines;
  for (size_t i = 0; i < p.devices.size(); ++i) {
    const VfioDevice& d = p.devices[i];
    if (d.romfile.empty()) continue;
    std::optional<uint16_t> vendor, device;
    if (auto pci = host::read_pci_device(fs, d.address.str())) {
      vendor = pci->vendor;
      device = pci->device;
    }
    const std::string where = p.file + ": /devices/" + std::to_string(i) + "/romfile: ";
    rom::RomfileReport r = rom::check_romfile(d.romfile, vendor, device);
    if (!r.ok()) {
      lines.push_back({host::CheckLine::kFail, where + r.problem, r.hint});
      continue;
    }
    for (const std::string& w : r.warnings) {
      lines.push_back({host::CheckLine::kWarn, where + w, ""});
    }
    lines.push_back({host::CheckLine::kPass,
                     "romfile " + d.romfile + " for " + d.address.str() + ": a valid ROM (" +
                         std::to_string(r.chain->images.size()) + " image" +
                         (r.chain->images.size() == 1 ? "" : "s") + ")",
                     ""});
  }
  return lines;
}

int run_check(const std::string& root, const host::CheckOptions& options,
              const std::optional<Profile>& profile) {
  host::HostFs fs(root);
  auto lines = host::check_host(fs, options);
  if (profile) {
    for (auto& l : check_romfiles(fs, *profile)) lines.push_back(std::move(l));
  }
  std::cout << host::format_check(lines);
  bool failed = std::any_of(lines.begin(), lines.end(), [](const host::CheckLine& l) {
    return l.level == host::CheckLine::kFail;
  });
  return failed ? exit_code(Exit::kEnvironment) : 0;
}

int run_recover(const std::string& name) {
  host::RealHost real("/");
  host::HostEnv env = real.env(&std::cerr);
  auto done = host::recover(name, env);
  if (done.empty()) {
    std::cout << "nothing to recover\n";
  } else {
    for (const auto& vm : done) std::cout << "recovered " << vm << "\n";
  }
  return 0;
}

}  // namespace

void add_host_commands(CLI::App& app, Action& action) {
  {
    auto* cmd =
        app.add_subcommand("iommu", "List IOMMU groups, their PCI devices and bound drivers");
    auto root = std::make_shared<std::string>("/");
    auto json = std::make_shared<bool>(false);
    cmd->add_option("--host-root", *root, "Directory standing for / (sysfs, procfs)");
    cmd->add_flag("--json", *json, "Print JSON");
    cmd->callback(
        [&action, root, json] { action = [root, json] { return run_iommu(*root, *json); }; });
  }
  {
    auto* cmd = app.add_subcommand(
        "vfio-conf",
        "Print /etc/modprobe.d/vfio.conf lines and kernel options for the given devices");
    auto root = std::make_shared<std::string>("/");
    auto devices = std::make_shared<std::vector<std::string>>();
    auto profile = std::make_shared<std::string>();
    cmd->add_option("--host-root", *root, "Directory standing for / (sysfs, procfs)");
    auto* dev = cmd->add_option("devices", *devices, "PCI addresses (BB:DD.F or DDDD:BB:DD.F)");
    auto* prof = cmd->add_option("--profile", *profile, "Take the devices from this profile");
    dev->excludes(prof);
    cmd->callback([&action, root, devices, profile] {
      action = [root, devices, profile] {
        host::HostFs fs(*root);
        std::vector<std::string> addresses = *devices;
        if (!profile->empty()) {
          for (const auto& d : load_profile(*profile, {.files = false}).devices) {
            addresses.push_back(d.address.str());
          }
        }
        if (addresses.empty()) {
          throw Error(Exit::kUsage, "vfio-conf: no devices given",
                      "give PCI addresses or --profile PROFILE");
        }
        std::cout << host::format_vfio_conf(host::make_vfio_conf(fs, addresses));
        return 0;
      };
    });
  }
  {
    auto* cmd = app.add_subcommand(
        "check", "Check that this host is ready for GPU passthrough (exit 3 on failure)");
    auto root = std::make_shared<std::string>("/");
    auto profile = std::make_shared<std::string>();
    auto options = std::make_shared<host::CheckOptions>();
    cmd->add_option("--host-root", *root, "Directory standing for / (sysfs, procfs)");
    cmd->add_option("PROFILE", *profile,
                    "Check the devices, firmware and romfiles of this profile");
    cmd->add_option("--device", options->devices, "PCI address the VM will take (repeatable)");
    cmd->add_option("--qemu", options->qemu, "QEMU binary");
    cmd->callback([&action, root, profile, options] {
      action = [root, profile, options] {
        std::optional<Profile> p;
        if (!profile->empty()) {
          p = load_profile(*profile, {.files = false});
          for (const auto& d : p->devices) options->devices.push_back(d.address.str());
          for (const auto* f : {&p->firmware.code, &p->firmware.vars_template}) {
            if (!f->empty()) options->firmware.push_back(*f);
          }
        }
        return run_check(*root, *options, p);
      };
    });
  }
  {
    auto* cmd = app.add_subcommand(
        "recover",
        "Undo the host changes of a run that did not restore them (all VMs when NAME is omitted)");
    auto name = std::make_shared<std::string>();
    cmd->add_option("name", *name, "VM name");
    cmd->callback([&action, name] { action = [name] { return run_recover(*name); }; });
  }
}

}  // namespace pl::cli
