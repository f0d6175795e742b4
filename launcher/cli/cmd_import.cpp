// `passlaunch import libvirt FILE|-` and `passlaunch init --gpu BDF`: a
// profile from a libvirt domain, or from this host.
#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "cli/cli.h"
#include "core/error.h"
#include "import/init.h"
#include "import/libvirt.h"

namespace pl::cli {
namespace {

std::string read_input(const std::string& file) {
  std::stringstream ss;
  if (file == "-") {
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw system_error(Exit::kUsage, "cannot read", file, errno);
  ss << in.rdbuf();
  return ss.str();
}

/// Writes `text` to `path` whole or not at all (a temp file renamed over it);
/// an existing file is kept unless `force`.
void write_profile(const std::string& path, const std::string& text, bool force) {
  if (!force && ::access(path.c_str(), F_OK) == 0) {
    throw Error(Exit::kUsage, path + ": exists already; not overwritten",
                "pass --force to replace it");
  }
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw system_error(Exit::kUsage, "cannot create", tmp, errno);
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw system_error(Exit::kUsage, "cannot write", tmp, err);
    }
    off += size_t(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw system_error(Exit::kUsage, "cannot write", path, err);
  }
}

}  // namespace

void add_import_commands(CLI::App& app, Action& action) {
  struct ImportOpts {
    std::string file, output, name, host_root = "/";
    bool strict = false, json = false, force = false;
  };
  auto io = std::make_shared<ImportOpts>();
  CLI::App* imp = app.add_subcommand("import", "Make a profile from another tool's VM");
  imp->require_subcommand(1);
  CLI::App* lv = imp->add_subcommand(
      "libvirt",
      "A libvirt domain (virsh dumpxml) as a commented profile, with a report of "
      "every element: carried over, changed or dropped");
  lv->add_option("FILE", io->file, "Domain XML, or - for stdin")->required();
  lv->add_option("-o,--output", io->output, "Write the profile here (else to stdout)");
  lv->add_option("--name", io->name, "The profile's name (default: the domain's <name>)");
  lv->add_flag("--strict", io->strict,
               "Exit 2 (writing nothing) if anything the guest could notice was dropped or "
               "changed");
  lv->add_flag("--json", io->json, "The report as JSON on stdout, the profile inside it");
  lv->add_flag("--force", io->force, "Overwrite an existing -o file");
  lv->add_option("--host-root", io->host_root,
                 "Root of the host's sysfs/procfs and /usr/share/qemu (for tests; default /)");
  lv->callback([io, &action] {
    action = [io]() -> int {
      host::HostFs fs(io->host_root);
      import::ImportOptions o;
      o.name = io->name;
      o.host = &fs;
      import::ImportResult r =
          import::import_libvirt(read_input(io->file), io->file == "-" ? "<stdin>" : io->file, o);
      const bool fail = io->strict && r.report.guest_visible_loss();
      if (!fail && !io->output.empty()) write_profile(io->output, r.profile.text(), io->force);
      if (io->json) {
        nlohmann::ordered_json out = {{"profile", r.profile.json}};
        nlohmann::ordered_json report = r.report.to_json();
        for (auto& [k, v] : report.items()) out[k] = v;
        std::cout << out.dump(2) << "\n";
      } else {
        if (io->output.empty() && !fail) std::cout << r.profile.text();
        (io->output.empty() ? std::cerr : std::cout) << r.report.to_text();
      }
      if (fail) {
        std::cerr << "passlaunch: error: " << io->file
                  << ": --strict: the guest would notice what was dropped or changed (marked "
                     "[guest-visible]); nothing written\n";
        return exit_code(Exit::kUsage);
      }
      return 0;
    };
  });

  struct InitOpts {
    import::InitOptions init;
    std::string output, host_root = "/";
    bool force = false;
  };
  auto in = std::make_shared<InitOpts>();
  CLI::App* init = app.add_subcommand(
      "init",
      "Write a profile for this host: the GPU's IOMMU group, its driver modules, the "
      "display manager, vCPUs on whole cores, OVMF");
  init->add_option("--gpu", in->init.gpu, "The GPU to pass through (PCI address)")->required();
  init->add_option("--device", in->init.devices, "A further device to pass through (repeatable)");
  init->add_option("--name", in->init.name, "The VM's name (default win11)");
  init->add_option("--os", in->init.os, "win11 (TPM, Secure Boot; default), win10 or linux")
      ->check(CLI::IsMember({"win11", "win10", "linux"}));
  init->add_option("-o,--output", in->output, "Write the profile here (else to stdout)");
  init->add_flag("--force", in->force, "Overwrite an existing -o file");
  init->add_option("--host-root", in->host_root, "Root of the host's sysfs/procfs (default /)");
  init->callback([in, &action] {
    action = [in]() -> int {
      host::HostFs fs(in->host_root);
      import::InitResult r = import::init_profile(fs, in->init);
      if (in->output.empty()) {
        std::cout << r.profile.text();
      } else {
        write_profile(in->output, r.profile.text(), in->force);
      }
      for (const std::string& n : r.notes) std::cerr << "init: " << n << "\n";
      return 0;
    };
  });
}

}  // namespace pl::cli
