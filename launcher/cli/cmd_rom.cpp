// passlaunch rom inspect FILE [--json]
// passlaunch rom patch IN OUT [--device VVVV:DDDD]
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/error.h"
#include "rom/rom.h"

namespace pl::cli {
namespace {

std::string hex(size_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%zX", v);
  return buf;
}

std::string hexn(unsigned v, int width) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%0*x", width, v);
  return buf;
}

std::string describe_efi(const rom::EfiInfo& efi) {
  std::string machine = efi.machine == 0x8664   ? "x64"
                        : efi.machine == 0x014C ? "ia32"
                        : efi.machine == 0xAA64 ? "aarch64"
                                                : "machine " + hex(efi.machine);
  std::string subsystem = efi.subsystem == 11   ? "boot service driver"
                          : efi.subsystem == 12 ? "runtime driver"
                          : efi.subsystem == 10 ? "application"
                                                : "subsystem " + std::to_string(efi.subsystem);
  return machine + ", " + subsystem + (efi.compression == 1 ? ", compressed" : "");
}

rom::Chain find_or_throw(const std::string& file, const std::vector<uint8_t>& data,
                         std::optional<std::pair<uint16_t, uint16_t>> id = {}) {
  rom::ParseResult r = id ? rom::find_chain(data, id->first, id->second) : rom::find_chain(data);
  if (!r.chain && r.error.wrong_device) {
    throw Error(Exit::kUsage, file + ": " + r.error.message + " (--device)",
                "check the GPU's IDs with `lspci -nn`");
  }
  if (!r.chain) {
    throw Error(Exit::kUsage, file + ": no complete, valid option ROM chain: " + r.error.message,
                "is it a GPU vBIOS? dump it again (`nvflash --save`, or "
                "/sys/bus/pci/devices/ADDR/rom after `echo 1 > rom`)");
  }
  return std::move(*r.chain);
}

int inspect(const std::string& file, bool json) {
  std::vector<uint8_t> data = rom::read_file(file);
  rom::Chain chain = find_or_throw(file, data);
  if (json) {
    nlohmann::ordered_json images = nlohmann::ordered_json::array();
    for (const rom::Image& img : chain.images) {
      nlohmann::ordered_json j;
      j["offset"] = img.offset;
      j["length"] = img.length;
      j["vendor"] = hexn(img.vendor, 4);
      j["device"] = hexn(img.device, 4);
      if (img.code_type == rom::kCodeX86 || img.code_type == rom::kCodeEfi) {
        j["code_type"] = rom::code_type_name(img.code_type);
      } else {
        j["code_type"] = img.code_type;
      }
      j["last"] = img.last;
      // null: the code type has no checksum (only legacy x86 images do).
      j["checksum_ok"] = img.checksum_ok ? nlohmann::ordered_json(*img.checksum_ok) : nullptr;
      images.push_back(std::move(j));
    }
    std::cout << nlohmann::ordered_json{{"images", images}}.dump() << "\n";
    return 0;
  }

  std::cout << file << ": " << data.size() << " bytes\n";
  if (chain.start == 0) {
    std::cout << "option ROM chain at offset 0: usable as romfile\n";
  } else {
    std::cout << "raw dump with a vendor header: the option ROM chain starts at offset "
              << hex(chain.start) << " (" << chain.start << " bytes of header);\n"
              << "  `passlaunch rom patch " << file << " OUT.rom` writes the chain alone\n";
  }
  for (size_t i = 0; i < chain.images.size(); ++i) {
    const rom::Image& img = chain.images[i];
    std::cout << "image " << i << ": offset " << hex(img.offset) << ", length " << hex(img.length)
              << " (" << img.length << "), " << hexn(img.vendor, 4) << ":" << hexn(img.device, 4)
              << ", class " << hexn(img.class_code, 6) << ", "
              << rom::code_type_name(img.code_type);
    if (img.code_type != rom::kCodeX86 && img.code_type != rom::kCodeEfi) {
      std::cout << " (vendor-specific)";
    }
    if (img.efi) std::cout << " (" << describe_efi(*img.efi) << ")";
    if (img.code_type == rom::kCodeEfi && !img.efi) std::cout << " (no 0x0EF1 EFI header)";
    std::cout << (img.last ? ", last" : "");
    if (img.checksum_ok) std::cout << (*img.checksum_ok ? ", checksum ok" : ", CHECKSUM BAD");
    std::cout << "\n";
    if (!img.device_list.empty()) {
      std::cout << "  device list:";
      for (uint16_t d : img.device_list) std::cout << " " << hexn(d, 4);
      std::cout << "\n";
    }
    if (img.npde) {
      std::cout << "  NVIDIA NPDE: length " << hex(img.npde->length)
                << (img.npde->last ? ", last" : "") << "\n";
    }
  }
  if (chain.nvidia_end > chain.end) {
    std::cout << "NVIDIA images linked by NPDE continue to " << hex(chain.nvidia_end)
              << " (patch keeps them)\n";
  }
  if (data.size() > chain.nvidia_end) {
    std::cout << data.size() - chain.nvidia_end << " bytes after the chain (not part of the ROM)\n";
  }
  return 0;
}

int patch(const std::string& in, const std::string& out, const std::string& device) {
  std::optional<std::pair<uint16_t, uint16_t>> id;
  if (!device.empty()) {
    id = rom::parse_vendor_device(device);
    if (!id) {
      throw Error(Exit::kUsage, "--device " + device + ": expected VVVV:DDDD in hex",
                  "for example --device 10de:1e07 (see lspci -nn)");
    }
  }
  namespace fs = std::filesystem;
  std::error_code ec, ec_in, ec_out;
  fs::path in_abs = fs::weakly_canonical(in, ec_in), out_abs = fs::weakly_canonical(out, ec_out);
  if (fs::equivalent(in, out, ec) || (!ec_in && !ec_out && in_abs == out_abs)) {
    throw Error(Exit::kUsage, "rom patch: OUT " + out + " is the input file",
                "patch never modifies IN; name a new file as OUT");
  }
  if (fs::is_directory(out, ec)) {
    throw Error(Exit::kUsage, "rom patch: OUT " + out + " is a directory", "name a file as OUT");
  }
  std::vector<uint8_t> data = rom::read_file(in);
  rom::Chain chain = find_or_throw(in, data, id);
  for (const rom::Image& img : chain.images) {
    if (img.checksum_ok == false) {
      std::cerr << "passlaunch: warning: " << in << ": the x86 image at " << hex(img.offset)
                << " has a bad checksum; SeaBIOS will skip it (copied unchanged)\n";
    }
  }
  std::span<const uint8_t> rom(data.data() + chain.start, chain.nvidia_end - chain.start);
  rom::write_file_atomic(out, rom);
  const rom::Image& ident = chain.identity();
  std::cout << "wrote " << out << ": " << rom.size() << " bytes, " << chain.images.size()
            << " image(s) of " << hexn(ident.vendor, 4) << ":" << hexn(ident.device, 4)
            << ", from offset " << hex(chain.start) << " of " << in;
  if (chain.start > 0) std::cout << " (stripped a " << chain.start << "-byte header)";
  std::cout << "\n";
  return 0;
}

}  // namespace

void add_rom_commands(CLI::App& app, Action& action) {
  CLI::App* rom = app.add_subcommand("rom", "Inspect a vBIOS or cut the option ROM out of a dump");
  rom->require_subcommand(1);

  auto file = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* ins = rom->add_subcommand("inspect", "List the images of a vBIOS file");
  ins->add_option("FILE", *file, "vBIOS file")->required();
  ins->add_flag("--json", *json, "Print {\"images\":[...]} as JSON");
  ins->callback([&action, file, json] { action = [file, json] { return inspect(*file, *json); }; });

  auto in = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto device = std::make_shared<std::string>();
  CLI::App* pat = rom->add_subcommand(
      "patch", "Write the option ROM chain of a raw dump (vendor header stripped) to OUT");
  pat->add_option("IN", *in, "vBIOS dump (never modified)")->required();
  pat->add_option("OUT", *out, "file to write (atomically)")->required();
  pat->add_option("--device", *device, "check the ROM is for VVVV:DDDD (hex, as lspci -nn)");
  pat->callback([&action, in, out, device] {
    action = [in, out, device] { return patch(*in, *out, *device); };
  });
}

}  // namespace pl::cli
