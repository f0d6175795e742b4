// Option ROM parsing, `passlaunch rom inspect|patch` and the romfile check,
// on synthetic ROMs built here (legacy x86 + EFI images with correct
// checksums, vendor headers with decoys) and on real ROMs shipped with QEMU.
#include "rom/rom.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "core/error.h"
#include "core/text.h"
#include "sim_host.h"

namespace pl::rom {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// ---- Synthetic ROM images --------------------------------------------------

struct Spec {
  uint16_t vendor = 0x10de;
  uint16_t device = 0x1e07;
  uint8_t code_type = kCodeX86;
  size_t units = 64;  // 512-byte units: 64 = 32 KiB.
  bool last = false;
  bool good_checksum = true;  // x86 only.
  const char* signature = "PCIR";
  std::vector<uint16_t> device_list = {};            // Makes a revision 3 PCIR.
  std::optional<std::pair<size_t, bool>> npde = {};  // NVIDIA NPDE: units, last.
};

void put16(Bytes& b, size_t at, uint16_t v) {
  b[at] = v & 0xFF;
  b[at + 1] = v >> 8;
}

// One image: 55 AA, PCIR at 0x1C, an EFI header for code type 3, an optional
// device list and NPDE, pseudo-random code bytes, and (x86) a checksum byte.
Bytes make_image(const Spec& s, uint32_t seed = 1) {
  Bytes b(s.units * 512);
  std::mt19937 rng(seed);
  for (auto& x : b) x = static_cast<uint8_t>(rng() & 0x7F);  // No 0xAA: no stray 55 AA.
  std::fill(b.begin(), b.begin() + 0x80, 0);
  b[0] = 0x55;
  b[1] = 0xAA;
  b[2] = static_cast<uint8_t>(std::min<size_t>(s.units, 255));
  if (s.code_type == kCodeEfi) {
    put16(b, 4, 0x0EF1);
    put16(b, 8, 11);         // boot service driver
    put16(b, 0x0A, 0x8664);  // x64
    put16(b, 0x0C, 1);       // compressed
  }
  const size_t pcir = 0x1C;
  put16(b, 0x18, pcir);
  std::copy_n(s.signature, 4, b.begin() + pcir);
  put16(b, pcir + 4, s.vendor);
  put16(b, pcir + 6, s.device);
  put16(b, pcir + 0x0A, 0x18);
  b[pcir + 0x0F] = 0x03;  // class 030000: VGA
  put16(b, pcir + 0x10, static_cast<uint16_t>(s.units));
  b[pcir + 0x14] = s.code_type;
  b[pcir + 0x15] = s.last ? 0x80 : 0x00;
  if (!s.device_list.empty()) {
    b[pcir + 0x0C] = 3;
    put16(b, pcir + 0x0A, 0x1C);
    put16(b, pcir + 8, 0x100);  // relative to the PCIR
    for (size_t i = 0; i < s.device_list.size(); ++i)
      put16(b, pcir + 0x100 + 2 * i, s.device_list[i]);
    put16(b, pcir + 0x100 + 2 * s.device_list.size(), 0);
  }
  if (s.npde) {
    const size_t at = 0x40;  // (0x1C + 0x18 + 15) & ~15
    std::copy_n("NPDE", 4, b.begin() + at);
    put16(b, at + 8, static_cast<uint16_t>(s.npde->first));
    b[at + 0x0A] = s.npde->second ? 0x80 : 0x00;
  }
  if (s.code_type == kCodeX86) {
    uint8_t sum = 0;
    for (size_t i = 0; i + 1 < b.size(); ++i) sum += b[i];
    b.back() = static_cast<uint8_t>(-sum + (s.good_checksum ? 0 : 1));
  }
  return b;
}

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// The usual NVIDIA layout: a legacy x86 image (32 KiB) and an EFI image (48 KiB).
Bytes legacy_efi_pair(uint16_t device = 0x1e07) {
  return cat({make_image({.device = device}, 1),
              make_image({.device = device, .code_type = kCodeEfi, .units = 96, .last = true}, 2)});
}

// A 160 KiB vendor header as nvflash writes it, holding decoys: a bare 55 AA,
// a 55 AA whose pointer leads nowhere, and a plausible image (valid PCIR,
// 512 bytes, not last) that is followed by no further image.
Bytes vendor_header() {
  Bytes h(160 * 1024);
  std::mt19937 rng(7);
  for (auto& x : h) x = static_cast<uint8_t>(rng() & 0x7F);
  std::copy_n("NVGI", 4, h.begin());
  h[0x100] = 0x55, h[0x101] = 0xAA;
  h[0x2000] = 0x55, h[0x2001] = 0xAA, put16(h, 0x2018, 0x7000);
  Bytes decoy = make_image({.units = 1, .last = false}, 3);
  std::copy(decoy.begin(), decoy.end(), h.begin() + 0x8000);
  h[0x8000 + 512] = 0;  // what follows the decoy is no image
  return h;
}

// ---- Files and the CLI -----------------------------------------------------

class Rom : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "rom_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const Bytes& data) {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(data.data()),
               static_cast<std::streamsize>(data.size()));
    return path;
  }
  static Bytes slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), {});
  }
  std::vector<std::string> files() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

  struct Run {
    int code;
    std::string out, err;
  };
  // Runs the built passlaunch binary.
  Run cli(const std::vector<std::string>& args) {
    std::vector<std::string> quoted{shell_quote(PL_PASSLAUNCH)};
    for (const auto& a : args) quoted.push_back(shell_quote(a));
    std::string out = (dir_ / "..stdout").string(), err = (dir_ / "..stderr").string();
    int status = std::system(
        (join(quoted, " ") + " >" + shell_quote(out) + " 2>" + shell_quote(err)).c_str());
    Run r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, "", ""};
    Bytes o = slurp(out), e = slurp(err);
    r.out.assign(o.begin(), o.end());
    r.err.assign(e.begin(), e.end());
    fs::remove(out);
    fs::remove(err);
    return r;
  }

  fs::path dir_;
};

// ---- Parsing ---------------------------------------------------------------

TEST_F(Rom, LegacyPlusEfiPairParsesEveryField) {
  Bytes rom = legacy_efi_pair();
  ParseResult r = find_chain(rom);
  ASSERT_TRUE(r.chain) << r.error.message;
  const Chain& c = *r.chain;
  EXPECT_EQ(c.start, 0u);
  EXPECT_EQ(c.end, rom.size());
  EXPECT_EQ(c.nvidia_end, rom.size());
  ASSERT_EQ(c.images.size(), 2u);
  const Image& x86 = c.images[0];
  EXPECT_EQ(x86.offset, 0u);
  EXPECT_EQ(x86.length, 32768u);
  EXPECT_EQ(x86.vendor, 0x10de);
  EXPECT_EQ(x86.device, 0x1e07);
  EXPECT_EQ(x86.class_code, 0x030000u);
  EXPECT_EQ(x86.code_type, kCodeX86);
  EXPECT_FALSE(x86.last);
  EXPECT_EQ(x86.checksum_ok, true);
  EXPECT_FALSE(x86.efi);
  EXPECT_FALSE(x86.npde);
  const Image& efi = c.images[1];
  EXPECT_EQ(efi.offset, 32768u);
  EXPECT_EQ(efi.length, 49152u);
  EXPECT_EQ(efi.code_type, kCodeEfi);
  EXPECT_TRUE(efi.last);
  EXPECT_EQ(efi.checksum_ok, std::nullopt);  // EFI images have no checksum
  ASSERT_TRUE(efi.efi);
  EXPECT_EQ(efi.efi->subsystem, 11);
  EXPECT_EQ(efi.efi->machine, 0x8664);
  EXPECT_EQ(efi.efi->compression, 1);
  EXPECT_EQ(&c.identity(), &c.images[0]);
}

TEST_F(Rom, ChainBehindHeaderWithDecoysStartsAfterTheHeader) {
  Bytes header = vendor_header();
  Bytes dump = cat({header, legacy_efi_pair()});
  EXPECT_FALSE(parse_chain(dump, 0).chain);
  // The decoy has a valid PCIR, but its chain does not reach a last image.
  ParseResult decoy = parse_chain(dump, 0x8000);
  ASSERT_FALSE(decoy.chain);
  EXPECT_NE(decoy.error.message.find("no 55 AA"), std::string::npos) << decoy.error.message;
  ParseResult r = find_chain(dump);
  ASSERT_TRUE(r.chain) << r.error.message;
  EXPECT_EQ(r.chain->start, 160u * 1024);
  EXPECT_EQ(r.chain->images.size(), 2u);
  EXPECT_EQ(r.chain->images[1].offset, 160u * 1024 + 32768);
}

TEST_F(Rom, TruncatedChainIsReportedAsTruncated) {
  Bytes rom = legacy_efi_pair();
  rom.resize(rom.size() - 1000);
  ParseResult r = find_chain(rom);
  ASSERT_FALSE(r.chain);
  EXPECT_NE(r.error.message.find("image 1 at 0x8000"), std::string::npos) << r.error.message;
  EXPECT_NE(r.error.message.find("truncated"), std::string::npos) << r.error.message;

  // Behind a header, the real (truncated) chain is the one explained, not a decoy.
  Bytes dump = cat({vendor_header(), rom});
  r = find_chain(dump);
  ASSERT_FALSE(r.chain);
  EXPECT_NE(r.error.message.find("candidate, at 0x28000"), std::string::npos) << r.error.message;
  EXPECT_NE(r.error.message.find("truncated"), std::string::npos) << r.error.message;

  // A chain whose last flag is missing runs off the end of the file.
  Bytes open_ended = make_image({.last = false});
  r = find_chain(open_ended);
  ASSERT_FALSE(r.chain);
  EXPECT_NE(r.error.message.find("not flagged last"), std::string::npos) << r.error.message;
}

TEST_F(Rom, BrokenChecksumIsReportedNotFatal) {
  Bytes rom = cat(
      {make_image({.good_checksum = false}), make_image({.code_type = kCodeEfi, .last = true}, 2)});
  ParseResult r = find_chain(rom);
  ASSERT_TRUE(r.chain) << r.error.message;
  EXPECT_EQ(r.chain->images[0].checksum_ok, false);
}

TEST_F(Rom, WrongPcirSignatureIsNotAnImage) {
  Bytes rom = make_image({.last = true, .signature = "PCIX"});
  ParseResult r = find_chain(rom);
  ASSERT_FALSE(r.chain);
  EXPECT_NE(r.error.message.find("not the signature \"PCIR\""), std::string::npos)
      << r.error.message;
  EXPECT_NE(r.error.message.find("50 43 49 58"), std::string::npos) << r.error.message;
}

TEST_F(Rom, VendorSpecificCodeTypesAreKeptAsNumbers) {
  Bytes rom = cat({make_image({.code_type = 0x70}, 4), make_image({}, 5),
                   make_image({.code_type = 0xE0, .units = 8, .last = true}, 6)});
  ParseResult r = find_chain(rom);
  ASSERT_TRUE(r.chain) << r.error.message;
  ASSERT_EQ(r.chain->images.size(), 3u);
  EXPECT_EQ(code_type_name(r.chain->images[0].code_type), "112");
  EXPECT_EQ(code_type_name(r.chain->images[2].code_type), "224");
  EXPECT_EQ(r.chain->images[0].checksum_ok, std::nullopt);
  EXPECT_EQ(&r.chain->identity(), &r.chain->images[1]);  // the x86 image identifies the device
}

TEST_F(Rom, RandomBytesHoldNoChain) {
  Bytes noise(1 << 20);
  std::mt19937 rng(42);
  for (auto& x : noise) x = static_cast<uint8_t>(rng());
  for (size_t at : {0x10u, 0x5000u, 0x80000u}) noise[at] = 0x55, noise[at + 1] = 0xAA;
  ParseResult r = find_chain(noise);
  EXPECT_FALSE(r.chain);
  EXPECT_FALSE(r.error.message.empty());
}

TEST_F(Rom, ImagesWithoutPcirOrWithBadLengthsAreRejected) {
  Bytes rom = make_image({.last = true});
  Bytes b = rom;
  put16(b, 0x18, 0x10);  // pointer into the header
  EXPECT_NE(find_chain(b).error.message.find("inside the ROM header"), std::string::npos);
  b = rom;
  put16(b, 0x1C + 0x10, 0);  // length 0
  EXPECT_NE(find_chain(b).error.message.find("image length is 0"), std::string::npos);
  b = rom;
  put16(b, 0x18, 0xFFF0);  // past the end
  EXPECT_NE(find_chain(b).error.message.find("past the end"), std::string::npos);
  EXPECT_NE(find_chain(Bytes{0x55, 0xAA, 0}).error.message.find("inside the ROM header"),
            std::string::npos);
  EXPECT_NE(find_chain(Bytes{}).error.message.find("no 55 AA"), std::string::npos);
  // A PCIR that lies outside the image it describes (1 unit = 512 bytes).
  b = make_image({.units = 2, .last = true});
  std::copy_n(b.begin() + 0x1C, 0x18, b.begin() + 0x1F0);
  put16(b, 0x18, 0x1F0);
  put16(b, 0x1F0 + 0x10, 1);
  EXPECT_NE(find_chain(b).error.message.find("lies outside the image length 0x200"),
            std::string::npos)
      << find_chain(b).error.message;
  b = rom;
  put16(b, 0x1C + 0x0A, 0x10);  // structure length too short
  EXPECT_NE(find_chain(b).error.message.find("less than 0x18"), std::string::npos);
}

TEST_F(Rom, DeviceSelectsTheMatchingChainAndDeviceListCounts) {
  // A complete chain of another GPU inside the header comes first.
  Bytes other = legacy_efi_pair(0x2204);
  Bytes dump = cat({other, Bytes(4096, 0), legacy_efi_pair(0x1e07)});
  EXPECT_EQ(find_chain(dump).chain->start, 0u);
  ParseResult r = find_chain(dump, 0x10de, 0x1e07);
  ASSERT_TRUE(r.chain) << r.error.message;
  EXPECT_EQ(r.chain->start, other.size() + 4096);
  r = find_chain(dump, 0x1002, 0x1e07);
  ASSERT_FALSE(r.chain);
  EXPECT_NE(r.error.message.find("is for 10de:2204, not 1002:1e07"), std::string::npos)
      << r.error.message;

  Bytes listed = make_image({.last = true, .device_list = {0x1e04, 0x1e02}});
  r = find_chain(listed);
  ASSERT_TRUE(r.chain);
  EXPECT_EQ(r.chain->images[0].device_list, (std::vector<uint16_t>{0x1e04, 0x1e02}));
  EXPECT_TRUE(find_chain(listed, 0x10de, 0x1e02).chain);
  EXPECT_FALSE(find_chain(listed, 0x10de, 0x1e03).chain);
}

TEST_F(Rom, NvidiaNpdeImagesAfterTheFirmwareChainAreKept) {
  // PCIR says the EFI image is last; NPDE links one more NVIDIA image.
  Bytes rom = cat(
      {make_image({.npde = std::pair{size_t{64}, false}}, 1),
       make_image({.code_type = kCodeEfi, .last = true, .npde = std::pair{size_t{64}, false}}, 2),
       make_image(
           {.code_type = 0xE0, .units = 16, .last = true, .npde = std::pair{size_t{16}, true}},
           3)});
  ParseResult r = find_chain(rom);
  ASSERT_TRUE(r.chain) << r.error.message;
  EXPECT_EQ(r.chain->images.size(), 2u);
  EXPECT_EQ(r.chain->end, 128u * 512);
  EXPECT_EQ(r.chain->nvidia_end, rom.size());
  ASSERT_TRUE(r.chain->images[1].npde);
  EXPECT_EQ(r.chain->images[1].npde->length, 32768u);
  EXPECT_FALSE(r.chain->images[1].npde->last);

  // When the NPDE link leads nowhere, only the firmware chain counts.
  rom.resize(128 * 512);
  r = find_chain(rom);
  ASSERT_TRUE(r.chain);
  EXPECT_EQ(r.chain->nvidia_end, r.chain->end);
}

TEST_F(Rom, RealQemuRomsParse) {
  // Shipped by ipxe-qemu and seabios, which qemu-system-x86 depends on.
  Bytes ipxe = read_file("/usr/lib/ipxe/qemu/efi-e1000.rom");
  ParseResult r = find_chain(ipxe);
  ASSERT_TRUE(r.chain) << r.error.message;
  ASSERT_EQ(r.chain->images.size(), 2u);
  EXPECT_EQ(r.chain->images[0].vendor, 0x8086);
  EXPECT_EQ(r.chain->images[0].device, 0x100e);
  EXPECT_EQ(r.chain->images[0].checksum_ok, true);
  EXPECT_EQ(r.chain->images[1].code_type, kCodeEfi);
  ASSERT_TRUE(r.chain->images[1].efi);
  EXPECT_EQ(r.chain->images[1].efi->machine, 0x8664);
  EXPECT_TRUE(r.chain->images[1].last);
  EXPECT_EQ(r.chain->end, ipxe.size());

  Bytes vga = read_file("/usr/share/seabios/vgabios-stdvga.bin");
  r = find_chain(vga);
  ASSERT_TRUE(r.chain) << r.error.message;
  EXPECT_EQ(r.chain->images[0].class_code, 0x030000u);
  EXPECT_EQ(r.chain->images[0].checksum_ok, true);
}

TEST(RomVendorDevice, ParsesHexPairs) {
  EXPECT_EQ(parse_vendor_device("10de:1E07"), (std::pair<uint16_t, uint16_t>{0x10de, 0x1e07}));
  for (const char* bad : {"", "10de", "10de:1e0", "10de-1e07", "10de:1e07 ", "g0de:1e07"}) {
    EXPECT_FALSE(parse_vendor_device(bad)) << bad;
  }
}

// ---- romfile check ---------------------------------------------------------

TEST_F(Rom, RomfileCheckAcceptsCleanRomOfTheGpu) {
  std::string path = write("gpu.rom", legacy_efi_pair());
  RomfileReport rep = check_romfile(path, 0x10de, 0x1e07);
  EXPECT_TRUE(rep.ok()) << rep.problem;
  EXPECT_TRUE(rep.warnings.empty());
  EXPECT_NO_THROW(validate_romfile(path, 0x10de, 0x1e07));
  EXPECT_NO_THROW(validate_romfile(path, std::nullopt, std::nullopt));
}

TEST_F(Rom, RomfileCheckRefusesRawDumpWithPatchHint) {
  std::string path = write("dump.rom", cat({vendor_header(), legacy_efi_pair()}));
  RomfileReport rep = check_romfile(path, 0x10de, 0x1e07);
  EXPECT_FALSE(rep.ok());
  EXPECT_NE(rep.problem.find(path), std::string::npos) << rep.problem;
  EXPECT_NE(rep.problem.find("raw vBIOS dump"), std::string::npos) << rep.problem;
  EXPECT_NE(rep.problem.find("0x28000"), std::string::npos) << rep.problem;
  EXPECT_NE(rep.hint.find("passlaunch rom patch " + path), std::string::npos) << rep.hint;
  try {
    validate_romfile(path, 0x10de, 0x1e07);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kUsage);
    EXPECT_EQ(e.what(), rep.problem);
    EXPECT_EQ(e.hint(), rep.hint);
  }
}

TEST_F(Rom, RomfileCheckRefusesOtherGpuBrokenAndUnreadableFiles) {
  std::string path = write("gpu.rom", legacy_efi_pair());
  RomfileReport rep = check_romfile(path, 0x10de, 0x2204);
  EXPECT_NE(rep.problem.find("vBIOS of 10de:1e07, but the GPU passed through is 10de:2204"),
            std::string::npos)
      << rep.problem;
  EXPECT_FALSE(check_romfile(path, 0x1002, std::nullopt).ok());
  EXPECT_THROW(validate_romfile(path, 0x10de, 0x2204), Error);

  Bytes bad = legacy_efi_pair();
  bad.resize(40000);
  rep = check_romfile(write("short.rom", bad), std::nullopt, std::nullopt);
  EXPECT_NE(rep.problem.find("not a valid PCI option ROM"), std::string::npos) << rep.problem;
  EXPECT_NE(rep.problem.find("truncated"), std::string::npos) << rep.problem;
  EXPECT_NE(rep.hint.find("rom inspect"), std::string::npos) << rep.hint;

  rep = check_romfile((dir_ / "missing.rom").string(), std::nullopt, std::nullopt);
  EXPECT_NE(rep.problem.find("missing.rom: No such file"), std::string::npos) << rep.problem;
  rep = check_romfile(dir_.string(), std::nullopt, std::nullopt);
  EXPECT_NE(rep.problem.find("not a regular file"), std::string::npos) << rep.problem;
  EXPECT_FALSE(check_romfile(write("empty.rom", {}), std::nullopt, std::nullopt).ok());
}

TEST_F(Rom, RomfileCheckWarnsOnBadX86Checksum) {
  std::string path = write("gpu.rom", cat({make_image({.good_checksum = false}),
                                           make_image({.code_type = kCodeEfi, .last = true})}));
  RomfileReport rep = check_romfile(path, 0x10de, 0x1e07);
  EXPECT_TRUE(rep.ok()) << rep.problem;
  ASSERT_EQ(rep.warnings.size(), 1u);
  EXPECT_NE(rep.warnings[0].find("bad checksum"), std::string::npos);
}

// ---- The CLI ---------------------------------------------------------------

TEST_F(Rom, InspectJsonHasTheDocumentedShape) {
  std::string path = write("gpu.rom", legacy_efi_pair());
  Run r = cli({"rom", "inspect", path, "--json"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "{\"images\":["
            "{\"offset\":0,\"length\":32768,\"vendor\":\"10de\",\"device\":\"1e07\","
            "\"code_type\":\"x86\",\"last\":false,\"checksum_ok\":true},"
            "{\"offset\":32768,\"length\":49152,\"vendor\":\"10de\",\"device\":\"1e07\","
            "\"code_type\":\"efi\",\"last\":true,\"checksum_ok\":null}]}\n");

  path = write("odd.rom", cat({make_image({.good_checksum = false}, 1),
                               make_image({.code_type = 0xE0, .units = 2, .last = true}, 2)}));
  r = cli({"rom", "inspect", "--json", path});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "{\"images\":["
            "{\"offset\":0,\"length\":32768,\"vendor\":\"10de\",\"device\":\"1e07\","
            "\"code_type\":\"x86\",\"last\":false,\"checksum_ok\":false},"
            "{\"offset\":32768,\"length\":1024,\"vendor\":\"10de\",\"device\":\"1e07\","
            "\"code_type\":224,\"last\":true,\"checksum_ok\":null}]}\n");
}

TEST_F(Rom, InspectSaysWhetherTheFileIsARawDump) {
  Run r = cli({"rom", "inspect", write("gpu.rom", legacy_efi_pair())});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("chain at offset 0: usable as romfile"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("image 1: offset 0x8000, length 0xC000 (49152), 10de:1e07, class 030000, "
                       "efi (x64, boot service driver, compressed), last"),
            std::string::npos)
      << r.out;

  std::string dump = write("dump.rom", cat({vendor_header(), legacy_efi_pair()}));
  r = cli({"rom", "inspect", dump});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("raw dump with a vendor header: the option ROM chain starts at offset "
                       "0x28000 (163840 bytes of header)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("image 0: offset 0x28000"), std::string::npos) << r.out;

  r = cli({"rom", "inspect", write("bad.rom", make_image({.last = true, .good_checksum = false}))});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("CHECKSUM BAD"), std::string::npos) << r.out;
}

TEST_F(Rom, InspectFailsWithUsageExitOnNonRoms) {
  Bytes noise(300000);
  std::mt19937 rng(9);
  for (auto& x : noise) x = static_cast<uint8_t>(rng());
  Bytes short_rom = legacy_efi_pair();
  short_rom.resize(50000);
  for (const auto& [name, data] : std::vector<std::pair<std::string, Bytes>>{
           {"noise.bin", noise},
           {"pcix.rom", make_image({.last = true, .signature = "PCIX"})},
           {"short.rom", short_rom}}) {
    std::string path = write(name, data);
    for (bool json : {false, true}) {
      Run r = json ? cli({"rom", "inspect", "--json", path}) : cli({"rom", "inspect", path});
      EXPECT_EQ(r.code, 2) << name;
      EXPECT_EQ(r.out, "") << name;
      EXPECT_NE(r.err.find("passlaunch: error: " + path + ": no complete, valid option ROM chain"),
                std::string::npos)
          << r.err;
    }
  }
  Run r = cli({"rom", "inspect", (dir_ / "missing").string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("cannot open"), std::string::npos) << r.err;
  EXPECT_EQ(cli({"rom", "inspect"}).code, 2);
  EXPECT_EQ(cli({"rom"}).code, 2);
}

TEST_F(Rom, PatchStripsTheHeaderAtomicallyAndLeavesInUnchanged) {
  Bytes pair = legacy_efi_pair();
  Bytes dump = cat({vendor_header(), pair, Bytes(3000, 0xFF)});  // and trailing padding
  std::string in = write("dump.rom", dump);
  std::string out = (dir_ / "gpu.rom").string();
  Run r = cli({"rom", "patch", in, out, "--device", "10DE:1e07"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("stripped a 163840-byte header"), std::string::npos) << r.out;
  EXPECT_EQ(slurp(out), pair);
  EXPECT_EQ(slurp(in), dump);
  EXPECT_EQ(files(), (std::vector<std::string>{"dump.rom", "gpu.rom"}));  // no temp file left
  EXPECT_EQ(fs::status(out).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                fs::perms::others_read);
  EXPECT_TRUE(check_romfile(out, 0x10de, 0x1e07).ok());

  // Patching a clean ROM copies it; an existing OUT is replaced.
  r = cli({"rom", "patch", out, (dir_ / "again.rom").string()});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(slurp((dir_ / "again.rom").string()), pair);
  r = cli({"rom", "patch", in, (dir_ / "again.rom").string()});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(slurp((dir_ / "again.rom").string()), pair);
}

TEST_F(Rom, PatchKeepsBadChecksumWithWarningAndNvidiaImages) {
  Bytes rom = cat(
      {make_image({.good_checksum = false, .npde = std::pair{size_t{64}, false}}, 1),
       make_image({.code_type = kCodeEfi, .last = true, .npde = std::pair{size_t{64}, false}}, 2),
       make_image({.code_type = 0xE0, .units = 4, .last = true, .npde = std::pair{size_t{4}, true}},
                  3)});
  std::string in = write("dump.rom", cat({vendor_header(), rom}));
  std::string out = (dir_ / "gpu.rom").string();
  Run r = cli({"rom", "patch", in, out});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("warning:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("bad checksum"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(out), rom);

  r = cli({"rom", "inspect", in});
  EXPECT_NE(r.out.find("NVIDIA NPDE: length 0x8000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("NVIDIA images linked by NPDE continue to"), std::string::npos) << r.out;
}

TEST_F(Rom, PatchFailuresExitTwoAndLeaveNoOut) {
  Bytes pair = legacy_efi_pair();
  Bytes truncated(pair.begin(), pair.end() - 512);
  Bytes noise(200000);
  std::mt19937 rng(11);
  for (auto& x : noise) x = static_cast<uint8_t>(rng());
  const std::vector<std::pair<std::string, Bytes>> inputs{
      {"truncated.rom", cat({vendor_header(), truncated})},
      {"pcix.rom", make_image({.last = true, .signature = "PCIX"})},
      {"noise.rom", noise},
      {"header-only.rom", vendor_header()},
  };
  for (const auto& [name, data] : inputs) {
    std::string in = write(name, data);
    std::string out = (dir_ / "out.rom").string();
    Run r = cli({"rom", "patch", in, out});
    EXPECT_EQ(r.code, 2) << name << ": " << r.err;
    EXPECT_NE(r.err.find(in + ": no complete, valid option ROM chain"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out)) << name;
    EXPECT_EQ(slurp(in), data) << name;
  }
  EXPECT_NE(cli({"rom", "patch", (dir_ / "truncated.rom").string(), (dir_ / "o").string()})
                .err.find("truncated"),
            std::string::npos);

  std::string good = write("good.rom", pair);
  auto expect_refused = [&](const std::vector<std::string>& args, const std::string& message) {
    std::vector<std::string> before = files();
    Run r = cli(args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(files(), before);  // no OUT, no temp file
    EXPECT_EQ(slurp(good), pair);
  };
  std::string out = (dir_ / "out.rom").string();
  expect_refused({"rom", "patch", good, out, "--device", "10de:2204"},
                 "the chain at 0x0 is for 10de:1e07, not 10de:2204");
  expect_refused({"rom", "patch", good, out, "--device", "nvidia"}, "--device nvidia: expected");
  expect_refused({"rom", "patch", good, good}, "is the input file");
  expect_refused({"rom", "patch", good, (dir_ / "." / "good.rom").string()}, "is the input file");
  expect_refused({"rom", "patch", good, dir_.string()}, "is a directory");
  expect_refused({"rom", "patch", good, (dir_ / "no-such-dir" / "out.rom").string()},
                 "cannot create a file in");
  expect_refused({"rom", "patch", (dir_ / "missing.rom").string(), out}, "cannot open");
  expect_refused({"rom", "patch", good}, "OUT is required");
}

TEST_F(Rom, AtomicWriteFailureLeavesNoTempFile) {
  Bytes data(100000, 1);
  EXPECT_THROW(write_file_atomic((dir_ / "missing" / "x.rom").string(), data), Error);
  EXPECT_TRUE(files().empty());

  // A write that fails after the temp file exists: a child with a 4 KiB file
  // size limit (SIGXFSZ ignored, so write() fails with EFBIG).
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim {
      4096, 4096
    };
    ::setrlimit(RLIMIT_FSIZE, &lim);
    try {
      write_file_atomic((dir_ / "x.rom").string(), data);
    } catch (const Error& e) {
      _exit(e.code() == Exit::kFailed ? 0 : 2);
    }
    _exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_TRUE(files().empty());

  write_file_atomic((dir_ / "x.rom").string(), data);
  EXPECT_EQ(slurp((dir_ / "x.rom").string()), data);
  EXPECT_EQ(files(), (std::vector<std::string>{"x.rom"}));
}

// `check PROFILE` validates each romfile by run's rules: a raw dump is a
// failure naming the file and JSON path, a ROM of another GPU too, and a
// valid ROM of the device's own ids passes. (The GPU's ids come from sysfs,
// here the simulated host's RTX 2080 Ti, 10de:1e07.)
TEST_F(Rom, CheckProfileValidatesRomfilesLikeRun) {
  host::sim::SimHost h;
  auto check_with = [&](const std::string& rom) {
    std::string profile = (dir_ / "gpu.json").string();
    std::ofstream(profile)
        << R"({"name": "romcheck", "memory": {"size_mib": 1024}, "cpu": {"vcpus": 1},
      "devices": [{"type": "vfio", "address": "0000:01:00.0", "romfile": ")" +
               rom + R"("}, {"type": "vfio", "address": "0000:01:00.1"},
                  {"type": "vfio", "address": "0000:01:00.2"}, {"type": "vfio", "address": "0000:01:00.3"}]})";
    return cli({"check", "--host-root", h.root(), profile});
  };
  Run good = check_with(write("good.rom", legacy_efi_pair()));
  EXPECT_NE(good.out.find("pass  romfile " + (dir_ / "good.rom").string() +
                          " for 0000:01:00.0: a valid ROM (2 images)"),
            std::string::npos)
      << good.out << good.err;

  Run dump = check_with(write("dump.rom", cat({vendor_header(), legacy_efi_pair()})));
  EXPECT_EQ(dump.code, 3) << dump.out << dump.err;
  EXPECT_NE(dump.out.find("FAIL  " + (dir_ / "gpu.json").string() + ": /devices/0/romfile: "),
            std::string::npos)
      << dump.out;
  EXPECT_NE(dump.out.find("rom patch"), std::string::npos) << "the fix is shown\n" << dump.out;

  Run other = check_with(write("other.rom", legacy_efi_pair(0x2204)));
  EXPECT_EQ(other.code, 3) << other.out << other.err;
  EXPECT_NE(other.out.find("/devices/0/romfile: "), std::string::npos) << other.out;
  EXPECT_NE(other.out.find("2204"), std::string::npos) << other.out;
}

}  // namespace
}  // namespace pl::rom
