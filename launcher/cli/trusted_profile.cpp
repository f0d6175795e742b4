#include "cli/trusted_profile.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <regex>

#include "core/error.h"

namespace pl::cli {
namespace {

const char* kHint =
    "profiles that `passlaunch start` runs for others must be root's alone: "
    "chown root:root and chmod go-w the directory and the file (see README, Hotkeys)";

/// Why `st` cannot be trusted, or "" when it can: root-owned, not writable by
/// group or others.
std::string distrust(const struct stat& st) {
  if (st.st_uid != 0) return "is owned by uid " + std::to_string(st.st_uid) + ", not root";
  if (st.st_mode & S_IWGRP) return "is group-writable";
  if (st.st_mode & S_IWOTH) return "is world-writable";
  return "";
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

/// lstat-based check of a path given by the profile (a hook): no symlink,
/// root's, and so is the directory it is in.
void check_trusted_path(const std::string& profile, const std::string& field,
                        const std::string& path) {
  namespace fs = std::filesystem;
  for (const std::string& p : {path, fs::path(path).parent_path().string()}) {
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) {
      throw system_error(Exit::kUsage, profile + ": " + field + ": cannot check", p, errno);
    }
    std::string why = S_ISLNK(st.st_mode) ? "is a symlink" : distrust(st);
    if (!why.empty()) {
      throw Error(Exit::kUsage,
                  "refusing to run " + profile + " for others: its " + field + " " + p + " " + why,
                  kHint);
    }
  }
}

}  // namespace

bool valid_vm_name(const std::string& name) {
  static const std::regex re("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
  return std::regex_match(name, re);
}

void check_vm_name(const std::string& name) {
  if (!valid_vm_name(name)) {
    throw Error(Exit::kUsage,
                "\"" + name +
                    "\" is not a VM name: expected letters, digits, '.', '_' or '-' (at most 64, "
                    "not starting with a symbol), never a path",
                "name a profile of /etc/passlaunch without its .json, e.g. `win11`");
  }
}

Profile load_trusted_profile(const std::string& config_dir, const std::string& name) {
  check_vm_name(name);
  // The directory: opened without following a symlink, then checked through
  // the descriptor, so what is checked is what the file is looked up in.
  Fd dir(::open(config_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (dir.get() < 0) {
    int err = errno;
    struct stat st;
    if (err == ELOOP ||
        (err == ENOTDIR && ::lstat(config_dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode))) {
      throw Error(Exit::kUsage,
                  "refusing the profile directory " + config_dir + ": it is a symlink", kHint);
    }
    throw system_error(Exit::kUsage, "cannot open the profile directory", config_dir, err,
                       "profiles for `passlaunch start NAME` live in /etc/passlaunch/NAME.json");
  }
  struct stat st;
  if (::fstat(dir.get(), &st) != 0) {
    throw system_error(Exit::kUsage, "cannot check", config_dir, errno);
  }
  if (std::string why = distrust(st); !why.empty()) {
    throw Error(Exit::kUsage, "refusing the profile directory " + config_dir + ": it " + why,
                kHint);
  }
  std::string leaf = name + ".json";
  std::string path = config_dir + "/" + leaf;
  Fd file(::openat(dir.get(), leaf.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (file.get() < 0) {
    int err = errno;
    if (err == ELOOP) {
      throw Error(Exit::kUsage, "refusing the profile " + path + ": it is a symlink", kHint);
    }
    throw system_error(Exit::kUsage, "cannot open the profile", path, err,
                       err == ENOENT ? "`ls " + config_dir + "` shows the VMs that can be started"
                                     : std::string());
  }
  if (::fstat(file.get(), &st) != 0) throw system_error(Exit::kUsage, "cannot check", path, errno);
  if (!S_ISREG(st.st_mode)) {
    throw Error(Exit::kUsage, "refusing the profile " + path + ": it is not a regular file");
  }
  if (std::string why = distrust(st); !why.empty()) {
    throw Error(Exit::kUsage, "refusing the profile " + path + ": it " + why, kHint);
  }
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(file.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw system_error(Exit::kUsage, "cannot read", path, errno);
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (16u << 20)) {
      throw Error(Exit::kUsage, "refusing the profile " + path + ": larger than 16 MiB");
    }
  }
  Profile p = parse_profile(text, path);
  if (p.name != name) {
    throw Error(
        Exit::kUsage,
        path + ": /name: expected \"" + name + "\" (the file's name), got \"" + p.name + "\"",
        "`passlaunch stop NAME` and `ctl NAME` find a VM by its profile's name");
  }
  if (!p.host.prepare_hook.empty()) check_trusted_path(path, "hooks/prepare", p.host.prepare_hook);
  if (!p.host.release_hook.empty()) check_trusted_path(path, "hooks/release", p.host.release_hook);
  return p;
}

}  // namespace pl::cli
