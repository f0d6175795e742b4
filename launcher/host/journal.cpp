#include "host/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "core/error.h"

namespace pl::host {
namespace {

/// Where journals live: /var/lib/passlaunch, or $PASSLAUNCH_STATE_DIR (the
/// same state root as the OVMF vars copy, run/facts.h; tests use their own).
std::string base() {
  const char* dir = std::getenv("PASSLAUNCH_STATE_DIR");
  return (dir && *dir) ? std::string(dir) : "/var/lib/passlaunch";
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECTORY);
  if (fd < 0) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw system_error(Exit::kFailed, "cannot open", path, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) throw system_error(Exit::kFailed, "cannot sync", path, err);
}

std::string parent(const std::string& path) { return path.substr(0, path.rfind('/')); }

/// mkdir -p, syncing each parent in which a directory was created.
void make_dirs(const std::string& path) {
  if (path.empty()) return;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return;
  make_dirs(parent(path));
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    throw system_error(Exit::kFailed, "cannot create directory", path, errno,
                       "passlaunch keeps its journal there; run as root");
  }
  fsync_path(parent(path).empty() ? "/" : parent(path));
}

void write_all(int fd, const std::string& text, const std::string& path) {
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw system_error(Exit::kFailed, "cannot write", path, errno);
    off += static_cast<size_t>(n);
  }
}

}  // namespace

std::string Journal::dir_for(const std::string& vm) { return base() + "/" + vm; }

std::vector<std::string> Journal::list(const HostFs& fs) {
  std::vector<std::string> out;
  for (const auto& name : fs.list(base())) {
    if (fs.exists(dir_for(name) + "/journal")) out.push_back(name);
  }
  return out;
}

std::string Journal::boot_id(const HostFs& fs) {
  return fs.read_trimmed("/proc/sys/kernel/random/boot_id").value_or("");
}

std::optional<Journal> Journal::open(const HostFs& fs, const std::string& vm) {
  const std::string host_path = dir_for(vm) + "/journal";
  auto text = fs.read(host_path);
  if (!text) return std::nullopt;
  std::vector<nlohmann::json> lines;
  size_t pos = 0;
  int line_no = 0;
  while (pos < text->size()) {
    size_t nl = text->find('\n', pos);
    ++line_no;
    if (nl == std::string::npos) break;  // torn last line: its change was never made
    try {
      lines.push_back(nlohmann::json::parse(text->substr(pos, nl - pos)));
    } catch (const nlohmann::json::exception& e) {
      throw Error(Exit::kHostDirty,
                  "corrupt journal " + fs.real(host_path) + " line " + std::to_string(line_no) +
                      ": " + e.what(),
                  "inspect it and undo the listed changes by hand, then delete it");
    }
    pos = nl + 1;
  }
  if (lines.empty()) {
    // The process died while writing the header: nothing was changed yet.
    Journal j(fs.real(host_path), nlohmann::json::object());
    return j;
  }
  Journal j(fs.real(host_path), lines.front());
  j.entries_.assign(lines.begin() + 1, lines.end());
  return j;
}

Journal Journal::create(const HostFs& fs, const std::string& vm,
                        const std::vector<std::string>& devices) {
  const std::string dir = fs.real(dir_for(vm));
  make_dirs(dir);
  const std::string path = dir + "/journal";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) throw system_error(Exit::kHostDirty, "cannot create journal", path, errno);
  nlohmann::json header = {{"passlaunch_journal", 1},
                           {"vm", vm},
                           {"boot_id", boot_id(fs)},
                           {"pid", static_cast<int>(::getpid())},
                           {"devices", devices}};
  try {
    write_all(fd, header.dump() + "\n", path);
    if (::fsync(fd) != 0) throw system_error(Exit::kFailed, "cannot sync", path, errno);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  fsync_path(dir);
  return Journal(path, std::move(header));
}

bool Journal::live(const HostFs& fs) const {
  // A journal of an earlier boot describes a host that no longer exists.
  return header_.value("boot_id", std::string()) == boot_id(fs);
}

void Journal::append(nlohmann::json entry) {
  entry["seq"] = entries_.size() + 1;
  int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) throw system_error(Exit::kFailed, "cannot open journal", path_, errno);
  try {
    write_all(fd, entry.dump() + "\n", path_);
    if (::fdatasync(fd) != 0) throw system_error(Exit::kFailed, "cannot sync", path_, errno);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  entries_.push_back(std::move(entry));
}

void Journal::remove() {
  const std::string dir = parent(path_);
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
    throw system_error(Exit::kFailed, "cannot delete journal", path_, errno);
  }
  ::rmdir(dir.c_str());  // only when empty; a user's files there stay
  fsync_path(parent(dir));
}

}  // namespace pl::host
