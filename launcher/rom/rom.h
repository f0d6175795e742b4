// PCI option ROMs (a GPU's vBIOS): parse the chain of images, find where a
// valid chain starts inside a raw dump, cut it out, and check a profile's
// romfile before launch.
//
// An option ROM is a chain of images. Each image starts with 55 AA; the 16-bit
// little-endian pointer at image+0x18 leads to the "PCIR" data structure:
//   +0x04 vendor, +0x06 device, +0x08 device list pointer (revision 3),
//   +0x0A structure length, +0x0C revision, +0x0D class code (3 bytes),
//   +0x10 image length in 512-byte units, +0x14 code type (0 x86, 3 EFI, others
//   vendor-specific), +0x15 indicator (bit 7: last image).
// The next image starts right after the current one. Firmware (SeaBIOS, OVMF)
// walks exactly this chain, so "valid" here means: every image has 55 AA, a
// PCIR inside the image, a non-zero length, and the chain reaches an image
// flagged last before the end of the file.
//
// A legacy x86 image must sum to 0 mod 256 over its length (SeaBIOS refuses it
// otherwise); EFI images (0x0EF1 at image+4) carry subsystem, machine type and
// compression type and have no checksum. NVIDIA images may carry an "NPDE"
// structure after the PCIR whose own length and last flag link further NVIDIA
// images after the firmware chain; `patch` keeps those (the driver reads them).
//
// nvflash dumps start with a vendor header (about 160 KiB) that can hold stray
// 55 AA bytes, so the chain start is the first offset where a *complete* valid
// chain begins, not the first 55 AA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace pl::rom {

inline constexpr uint8_t kCodeX86 = 0x00;
inline constexpr uint8_t kCodeEfi = 0x03;

/// Fields of an EFI image header (code type 3, 0x0EF1 at image+4).
struct EfiInfo {
  uint16_t subsystem = 0;    ///< 10 boot service driver, 11 runtime driver.
  uint16_t machine = 0;      ///< PE machine type: 0x8664 x64, 0x014C IA32, 0xAA64 AArch64.
  uint16_t compression = 0;  ///< 0 none, 1 EFI compressed.
};

/// NVIDIA's "NPDE" extension found after the PCIR structure.
struct NpdeInfo {
  size_t length = 0;  ///< Image length it states, in bytes.
  bool last = false;  ///< Its own last-image flag.
};

/// One image of a chain; offsets are positions in the parsed byte span.
struct Image {
  size_t offset = 0;       ///< Where the image's 55 AA is.
  size_t length = 0;       ///< PCIR image length in bytes (units * 512).
  size_t pcir_offset = 0;  ///< PCIR pointer, relative to the image.
  uint16_t vendor = 0;
  uint16_t device = 0;
  std::vector<uint16_t> device_list;  ///< Further device IDs (PCIR revision 3 device list).
  uint32_t class_code = 0;            ///< 24 bits: base, sub, programming interface.
  uint8_t revision = 0;               ///< PCIR structure revision.
  uint8_t code_type = 0;
  bool last = false;
  /// x86 images: the bytes sum to 0 mod 256. Other code types have no checksum.
  std::optional<bool> checksum_ok;
  std::optional<EfiInfo> efi;    ///< Set for code type 3 images with a valid EFI header.
  std::optional<NpdeInfo> npde;  ///< Set when the image carries NVIDIA's NPDE.

  /// True when `device` or one of `device_list` equals dev.
  bool matches(uint16_t ven, uint16_t dev) const;
};

/// A valid chain of images.
struct Chain {
  size_t start = 0;  ///< Offset of the first image.
  size_t end = 0;    ///< One past the last image of the firmware (PCIR) chain.
  /// One past the last NVIDIA image linked through NPDE, when that walk goes
  /// further than `end` and stays complete inside the data; else equal to end.
  size_t nvidia_end = 0;
  std::vector<Image> images;

  /// The image firmware identifies the device by: the first x86 or EFI image,
  /// else the first image.
  const Image& identity() const;
};

/// Why no chain starts at an offset: "at 0x0: no 55 AA signature".
struct ChainError {
  size_t offset = 0;
  std::string message;
  bool wrong_device = false;  ///< find_chain: valid chains exist, none for the vendor/device.
};

/// Parses the chain starting exactly at `start`; a ChainError names the first
/// problem (image offset and what is wrong).
struct ParseResult {
  std::optional<Chain> chain;
  ChainError error;
};
ParseResult parse_chain(std::span<const uint8_t> data, size_t start);

/// The first offset where a complete valid chain starts (scanning every 55 AA)
/// and, when vendor/device are given, whose identity image matches them.
/// Without a chain, `error` explains the most telling failure: the chain at 0
/// when the data starts with 55 AA, else the first candidate with a PCIR.
ParseResult find_chain(std::span<const uint8_t> data, std::optional<uint16_t> vendor = {},
                       std::optional<uint16_t> device = {});

/// "x86", "efi" or the decimal number, as in `inspect --json`.
std::string code_type_name(uint8_t code_type);

/// Parses "VVVV:DDDD" (hex); nullopt when malformed.
std::optional<std::pair<uint16_t, uint16_t>> parse_vendor_device(const std::string& text);

/// Reads a whole file; throws pl::Error(kUsage) naming the file when it cannot.
std::vector<uint8_t> read_file(const std::string& path);

/// Writes `data` to `path` atomically: a temp file in the same directory,
/// fsync, rename, fsync of the directory. On any error neither `path` nor the
/// temp file is left behind, and pl::Error(kFailed) is thrown.
void write_file_atomic(const std::string& path, std::span<const uint8_t> data);

/// What `check_romfile` found.
struct RomfileReport {
  std::optional<Chain> chain;         ///< The chain starting at offset 0, when valid.
  std::string problem;                ///< Empty when the file can be used as romfile.
  std::string hint;                   ///< How to fix `problem`.
  std::vector<std::string> warnings;  ///< Not fatal: e.g. a bad x86 checksum.
  bool ok() const { return problem.empty(); }
};

/// Checks that `path` can serve as QEMU's romfile for a GPU: readable, a valid
/// chain starting at offset 0 (a raw dump with a vendor header is refused with
/// a hint to run `passlaunch rom patch`), and, when given, the identity image's
/// vendor/device (or its device list) matching the passed-through GPU.
/// Never throws for a bad file; `problem` says what is wrong and names the file.
RomfileReport check_romfile(const std::string& path, std::optional<uint16_t> vendor,
                            std::optional<uint16_t> device);

/// Same check for `run`/profile validation: throws
/// pl::Error(pl::Exit::kUsage, problem, hint) when the romfile is unusable.
void validate_romfile(const std::string& path, std::optional<uint16_t> vendor,
                      std::optional<uint16_t> device);

}  // namespace pl::rom
