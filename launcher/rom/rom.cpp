#include "rom/rom.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <tuple>

#include "core/error.h"

namespace pl::rom {
namespace {

constexpr size_t kHeaderSize = 0x1A;  // 55 AA ... PCIR pointer at 0x18.
constexpr size_t kPcirMinSize = 0x18;
constexpr size_t kMaxImages = 64;
constexpr size_t kMaxFileSize = size_t{64} << 20;  // vBIOSes are at most a few MiB.

uint16_t le16(std::span<const uint8_t> d, size_t at) { return d[at] | (d[at + 1] << 8); }

bool has(std::span<const uint8_t> d, size_t at, std::string_view sig) {
  if (at > d.size() || d.size() - at < sig.size()) return false;
  for (size_t i = 0; i < sig.size(); ++i) {
    if (d[at + i] != static_cast<uint8_t>(sig[i])) return false;
  }
  return true;
}

std::string hex(size_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%zX", v);
  return buf;
}

std::string hex4(uint16_t v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04x", v);
  return buf;
}

std::string bytes_at(std::span<const uint8_t> d, size_t at, size_t n) {
  std::string s;
  for (size_t i = 0; i < n && at + i < d.size(); ++i) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%s%02X", i ? " " : "", d[at + i]);
    s += buf;
  }
  return s;
}

// Where NVIDIA's NPDE sits: after the PCIR structure, aligned to 16 bytes.
std::optional<NpdeInfo> read_npde(std::span<const uint8_t> img, size_t pcir) {
  size_t at = (pcir + le16(img, pcir + 0x0A) + 0x0F) & ~size_t{0x0F};
  if (!has(img, at, "NPDE") || img.size() - at < 0x0B) return std::nullopt;
  return NpdeInfo{static_cast<size_t>(le16(img, at + 0x08)) * 512, (img[at + 0x0A] & 0x80) != 0};
}

// Follows NVIDIA's own linking (as nouveau does): image length and last flag
// from NPDE when present, code type 0x70 ends the chain. Returns the end when
// the walk is complete inside the data.
std::optional<size_t> nvidia_walk(std::span<const uint8_t> d, size_t start) {
  size_t p = start;
  for (size_t n = 0; n < kMaxImages; ++n) {
    if (d.size() - p < kHeaderSize) return std::nullopt;
    uint16_t sig = le16(d, p);
    if (sig != 0xAA55 && sig != 0xBB77 && sig != 0x4E56) return std::nullopt;
    size_t pcir = le16(d, p + 0x18);
    if (pcir < kHeaderSize || d.size() - p < pcir + kPcirMinSize) return std::nullopt;
    if (!has(d, p + pcir, "PCIR") && !has(d, p + pcir, "NPDS")) return std::nullopt;
    size_t length = static_cast<size_t>(le16(d, p + pcir + 0x10)) * 512;
    bool last = (d[p + pcir + 0x15] & 0x80) != 0;
    uint8_t type = d[p + pcir + 0x14];
    if (type == 0x70) {
      last = true;
    } else if (auto npde = read_npde(d.subspan(p), pcir)) {
      length = npde->length;
      last = npde->last;
    }
    if (length == 0 || d.size() - p < length) return std::nullopt;
    p += length;
    if (last) return p;
  }
  return std::nullopt;
}

}  // namespace

bool Image::matches(uint16_t ven, uint16_t dev) const {
  if (ven != vendor) return false;
  if (dev == device) return true;
  for (uint16_t d : device_list) {
    if (d == dev) return true;
  }
  return false;
}

const Image& Chain::identity() const {
  for (const Image& img : images) {
    if (img.code_type == kCodeX86 || img.code_type == kCodeEfi) return img;
  }
  return images.front();
}

ParseResult parse_chain(std::span<const uint8_t> d, size_t start) {
  Chain chain;
  chain.start = start;
  size_t p = start;
  for (size_t n = 0;; ++n) {
    std::string where = "image " + std::to_string(n) + " at " + hex(p) + ": ";
    auto fail = [&](const std::string& what) {
      return ParseResult{std::nullopt, {p, where + what}};
    };
    if (n == kMaxImages) return fail("more than " + std::to_string(kMaxImages) + " images");
    if (p >= d.size()) {
      return fail("the file ends there, but the previous image is not flagged last (truncated)");
    }
    if (d.size() - p < 2 || d[p] != 0x55 || d[p + 1] != 0xAA) {
      return fail("no 55 AA signature (found " + bytes_at(d, p, 2) + ")");
    }
    if (d.size() - p < kHeaderSize) return fail("the file ends inside the ROM header (truncated)");
    size_t pcir = le16(d, p + 0x18);
    if (pcir < kHeaderSize) {
      return fail("the PCIR pointer at +0x18 is " + hex(pcir) + ", inside the ROM header");
    }
    if (d.size() - p < pcir + kPcirMinSize) {
      return fail("the PCIR pointer " + hex(pcir) + " leads past the end of the file");
    }
    const size_t at = p + pcir;
    if (!has(d, at, "PCIR")) {
      return fail("the PCIR pointer " + hex(pcir) + " leads to " + bytes_at(d, at, 4) +
                  ", not the signature \"PCIR\"");
    }
    Image img;
    img.offset = p;
    img.pcir_offset = pcir;
    img.vendor = le16(d, at + 0x04);
    img.device = le16(d, at + 0x06);
    size_t pcir_len = le16(d, at + 0x0A);
    img.revision = d[at + 0x0C];
    img.class_code = (d[at + 0x0F] << 16) | (d[at + 0x0E] << 8) | d[at + 0x0D];
    img.length = static_cast<size_t>(le16(d, at + 0x10)) * 512;
    img.code_type = d[at + 0x14];
    img.last = (d[at + 0x15] & 0x80) != 0;
    if (pcir_len < kPcirMinSize) {
      return fail("the PCIR structure length is " + hex(pcir_len) + ", less than 0x18");
    }
    if (img.length == 0) return fail("the PCIR image length is 0");
    if (pcir + pcir_len > img.length) {
      return fail("the PCIR structure at " + hex(pcir) + " lies outside the image length " +
                  hex(img.length));
    }
    if (d.size() - p < img.length) {
      return fail("the image length " + hex(img.length) + " runs past the end of the file at " +
                  hex(d.size()) + " (truncated)");
    }
    auto bytes = d.subspan(p, img.length);
    if (img.code_type == kCodeEfi && le16(bytes, 4) == 0x0EF1) {
      img.efi = EfiInfo{le16(bytes, 8), le16(bytes, 0x0A), le16(bytes, 0x0C)};
    }
    // PCI Firmware 3.0: a 0-terminated list of further device IDs.
    if (size_t list = le16(d, at + 0x08); img.revision >= 3 && list != 0) {
      for (size_t i = pcir + list; i + 2 <= img.length && img.device_list.size() < 64; i += 2) {
        uint16_t id = le16(bytes, i);
        if (id == 0) break;
        img.device_list.push_back(id);
      }
    }
    img.npde = read_npde(bytes, pcir);
    chain.images.push_back(std::move(img));
    p += chain.images.back().length;
    if (chain.images.back().last) break;
  }
  chain.end = p;
  // Checksums only once the chain is complete: scanning a dump tries every 55 AA.
  for (Image& img : chain.images) {
    if (img.code_type != kCodeX86) continue;
    uint8_t sum = 0;
    for (uint8_t b : d.subspan(img.offset, img.length)) sum += b;
    img.checksum_ok = sum == 0;
  }
  chain.nvidia_end = std::max(chain.end, nvidia_walk(d, start).value_or(0));
  return ParseResult{std::move(chain), {}};
}

ParseResult find_chain(std::span<const uint8_t> d, std::optional<uint16_t> vendor,
                       std::optional<uint16_t> device) {
  // Without a chain, report the most complete candidate: the one with the most
  // valid image bytes before its failure, then the one at offset 0, then one
  // whose first image has a PCIR signature; the earliest on ties.
  struct Candidate {
    size_t start;
    ChainError error;
    std::tuple<size_t, bool, bool> score;
  };
  std::optional<Candidate> best;
  std::optional<ChainError> mismatch;
  size_t candidates = 0;
  for (size_t i = 0; i + 1 < d.size(); ++i) {
    if (d[i] != 0x55 || d[i + 1] != 0xAA) continue;
    ++candidates;
    // Most 55 AA in a header lead to no PCIR: skip them without building an
    // error message (only the one at offset 0 is ever reported).
    size_t pcir = d.size() - i >= kHeaderSize ? le16(d, i + 0x18) : 0;
    bool has_pcir = pcir >= kHeaderSize && has(d, i + pcir, "PCIR");
    if (!has_pcir && i != 0) continue;
    ParseResult r = parse_chain(d, i);
    if (!r.chain) {
      Candidate c{i, r.error, {r.error.offset - i, i == 0, has_pcir}};
      if (!best || c.score > best->score) best = std::move(c);
      continue;
    }
    const Image& id = r.chain->identity();
    if ((vendor && id.vendor != *vendor) || (device && !id.matches(id.vendor, *device))) {
      if (!mismatch) {
        mismatch = ChainError{i,
                              "the chain at " + hex(i) + " is for " + hex4(id.vendor) + ":" +
                                  hex4(id.device) + ", not " +
                                  (vendor ? hex4(*vendor) : std::string("any")) + ":" +
                                  (device ? hex4(*device) : std::string("any")),
                              true};
      }
      continue;
    }
    return r;
  }
  if (mismatch) return ParseResult{std::nullopt, *mismatch};
  if (best && best->start == 0) return ParseResult{std::nullopt, best->error};
  if (best && (std::get<0>(best->score) > 0 || std::get<2>(best->score))) {
    return ParseResult{
        std::nullopt,
        {best->error.offset, "no chain at offset 0; the most complete candidate, at " +
                                 hex(best->start) + ", fails: " + best->error.message}};
  }
  if (candidates == 0) {
    return ParseResult{
        std::nullopt, {0, "no 55 AA signature anywhere in " + std::to_string(d.size()) + " bytes"}};
  }
  return ParseResult{
      std::nullopt,
      {0, std::to_string(candidates) + " 55 AA signatures, but none leads to a PCIR structure"}};
}

std::string code_type_name(uint8_t code_type) {
  if (code_type == kCodeX86) return "x86";
  if (code_type == kCodeEfi) return "efi";
  return std::to_string(code_type);
}

std::optional<std::pair<uint16_t, uint16_t>> parse_vendor_device(const std::string& text) {
  if (text.size() != 9 || text[4] != ':') return std::nullopt;
  auto part = [&](size_t from) -> std::optional<uint16_t> {
    unsigned v = 0;
    for (size_t i = from; i < from + 4; ++i) {
      char c = text[i];
      int digit = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                         : -1;
      if (digit < 0) return std::nullopt;
      v = v * 16 + digit;
    }
    return static_cast<uint16_t>(v);
  };
  auto v = part(0), dv = part(5);
  if (!v || !dv) return std::nullopt;
  return std::pair{*v, *dv};
}

std::vector<uint8_t> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw system_error(Exit::kUsage, "cannot open", path, errno);
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw system_error(Exit::kUsage, "cannot stat", path, errno);
  if (!S_ISREG(st.st_mode)) throw Error(Exit::kUsage, path + ": not a regular file");
  if (static_cast<uint64_t>(st.st_size) > kMaxFileSize) {
    throw Error(Exit::kUsage, path + ": " + std::to_string(st.st_size) +
                                  " bytes is too large for a vBIOS (at most 64 MiB)");
  }
  std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < data.size()) {
    ssize_t n = ::read(fd, data.data() + got, data.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw system_error(Exit::kUsage, "cannot read", path, errno);
    if (n == 0) break;  // The file shrank while reading.
    got += static_cast<size_t>(n);
  }
  data.resize(got);
  return data;
}

void write_file_atomic(const std::string& path, std::span<const uint8_t> data) {
  namespace fs = std::filesystem;
  fs::path target(path);
  fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  // Appended, not `"." + std::string&&`: GCC 12 at -O3 takes that for an
  // overlapping copy (-Wrestrict, a false positive).
  std::string name = ".";
  name += target.filename().string();
  name += ".XXXXXX";
  std::string tmpl = (dir / name).string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) throw system_error(Exit::kUsage, "cannot create a file in", dir.string(), errno);
  auto fail = [&](const char* op) {
    int err = errno;
    ::close(fd);
    ::unlink(tmpl.c_str());
    return system_error(Exit::kFailed, op, tmpl, err);
  };
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail("cannot write");
    done += static_cast<size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0) throw fail("cannot chmod");
  if (::fsync(fd) != 0) throw fail("cannot fsync");
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmpl.c_str());
    throw system_error(Exit::kFailed, "cannot close", tmpl, err);
  }
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmpl.c_str());
    throw system_error(Exit::kFailed, "cannot rename " + tmpl + " to", path, err);
  }
  // Make the rename itself durable; a failure here leaves a complete OUT.
  if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

RomfileReport check_romfile(const std::string& path, std::optional<uint16_t> vendor,
                            std::optional<uint16_t> device) {
  RomfileReport report;
  std::vector<uint8_t> data;
  try {
    data = read_file(path);
  } catch (const Error& e) {
    report.problem = std::string("romfile: ") + e.what();
    report.hint = "romfile must name a readable vBIOS file";
    return report;
  }
  ParseResult at_zero = parse_chain(data, 0);
  if (!at_zero.chain) {
    ParseResult found = find_chain(data);
    if (found.chain) {
      report.problem = "romfile " + path + " is a raw vBIOS dump: its option ROM chain starts at " +
                       hex(found.chain->start) + " after a vendor header, not at offset 0";
      report.hint = "run `passlaunch rom patch " + path +
                    " OUT.rom` to strip the vendor header, and use OUT.rom as romfile";
    } else {
      report.problem =
          "romfile " + path + " is not a valid PCI option ROM: " + at_zero.error.message;
      report.hint = "`passlaunch rom inspect " + path + "` shows what the file holds";
    }
    return report;
  }
  report.chain = std::move(at_zero.chain);
  const Image& id = report.chain->identity();
  if ((vendor && id.vendor != *vendor) || (device && !id.matches(id.vendor, *device))) {
    report.problem = "romfile " + path + " is the vBIOS of " + hex4(id.vendor) + ":" +
                     hex4(id.device) + ", but the GPU passed through is " +
                     (vendor ? hex4(*vendor) : hex4(id.vendor)) + ":" +
                     (device ? hex4(*device) : hex4(id.device));
    report.hint = "use a vBIOS dumped from this GPU model";
  }
  for (const Image& img : report.chain->images) {
    if (img.checksum_ok == false) {
      report.warnings.push_back("romfile " + path + ": the x86 image at " + hex(img.offset) +
                                " has a bad checksum; SeaBIOS will skip it (UEFI guests do "
                                "not use it)");
    }
  }
  return report;
}

void validate_romfile(const std::string& path, std::optional<uint16_t> vendor,
                      std::optional<uint16_t> device) {
  RomfileReport report = check_romfile(path, vendor, device);
  if (!report.ok()) throw Error(Exit::kUsage, report.problem, report.hint);
}

}  // namespace pl::rom
