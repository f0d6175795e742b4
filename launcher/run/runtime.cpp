#include "run/runtime.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "run/facts.h"

namespace pl {
namespace {

namespace fs = std::filesystem;

/// Files the launcher may leave in the runtime directory.
constexpr const char* kLeaves[] = {"qmp.sock", "control.sock", "qemu.pid", "swtpm.sock"};

std::optional<pid_t> read_pid(const std::string& path) {
  std::ifstream in(path);
  long pid = 0;
  if (in >> pid && pid > 0) return static_cast<pid_t>(pid);
  return std::nullopt;
}

bool is_live_qemu(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(comm, name);
  return name.rfind("qemu", 0) == 0;
}

void make_private_dir(const std::string& path) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    throw system_error(Exit::kEnvironment, "cannot create the runtime directory", path, errno);
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
    throw Error(Exit::kEnvironment,
                "the runtime directory " + path + " is not a directory owned by this user");
  }
  ::chmod(path.c_str(), 0700);
}

}  // namespace

RuntimeDir::RuntimeDir(const std::string& name) : name_(name), path_(runtime_dir_for(name)) {
  make_private_dir(path_);
  std::string lock = file("lock");
  for (int attempt = 0;; ++attempt) {
    lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd_ < 0 && errno == ENOENT && attempt < 10) {
      make_private_dir(path_);  // an exiting launcher removed the directory just now
      continue;
    }
    if (lock_fd_ < 0) throw system_error(Exit::kEnvironment, "cannot open", lock, errno);
    // `list` and `ctl` probe the lock with a brief shared lock: wait that out.
    bool locked = false;
    for (int i = 0; i < 20 && !locked; ++i) {
      locked = ::flock(lock_fd_, LOCK_EX | LOCK_NB) == 0;
      if (!locked) ::usleep(5000);
    }
    if (!locked) {
      auto pid = read_pid(lock);
      ::close(lock_fd_);
      lock_fd_ = -1;
      throw Error(Exit::kFailed,
                  "VM \"" + name + "\" is already running (pid " +
                      (pid ? std::to_string(*pid) : std::string("unknown")) + ")",
                  "stop it with `passlaunch ctl " + name + " shutdown`");
    }
    // A launcher that was exiting may have unlinked the file we locked; then
    // lock the file that is there now.
    struct stat held, now;
    if (::fstat(lock_fd_, &held) == 0 && ::stat(lock.c_str(), &now) == 0 &&
        held.st_ino == now.st_ino && held.st_dev == now.st_dev) {
      break;
    }
    ::close(lock_fd_);
    make_private_dir(path_);
  }
  // We hold the lock: any launcher before us is gone. Its QEMU must be too.
  if (auto qemu = read_pid(file("qemu.pid")); qemu && is_live_qemu(*qemu)) {
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw Error(
        Exit::kHostDirty,
        "QEMU (pid " + std::to_string(*qemu) + ") of an earlier run of \"" + name +
            "\" is still alive, without its launcher",
        "stop it (kill " + std::to_string(*qemu) + "), then `passlaunch recover " + name + "`");
  }
  for (const char* leaf : kLeaves) ::unlink(file(leaf).c_str());
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) < 0) {
    throw system_error(Exit::kEnvironment, "cannot write", lock, errno);
  }
}

RuntimeDir::~RuntimeDir() {
  if (lock_fd_ < 0) return;
  for (const char* leaf : kLeaves) ::unlink(file(leaf).c_str());
  // Unlink the lock while holding it, so a racing launcher that opened the old
  // file notices nothing wrong: it will lock a file no one else uses.
  ::unlink(file("lock").c_str());
  ::close(lock_fd_);
  ::rmdir(path_.c_str());
}

void RuntimeDir::write_qemu_pid(pid_t pid) {
  std::string tmp = file("qemu.pid.tmp");
  {
    std::ofstream out(tmp);
    out << pid << "\n";
  }
  if (::rename(tmp.c_str(), file("qemu.pid").c_str()) != 0) {
    throw system_error(Exit::kEnvironment, "cannot write", file("qemu.pid"), errno);
  }
}

int listen_unix(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    throw Error(Exit::kEnvironment, "socket path too long: " + path);
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw system_error(Exit::kEnvironment, "cannot create a socket for", path, errno);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ::unlink(path.c_str());
  mode_t old = ::umask(0177);
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (rc != 0 || ::listen(fd, SOMAXCONN) != 0) {
    int err = errno;
    ::close(fd);
    throw system_error(Exit::kEnvironment, "cannot listen on", path, err);
  }
  return fd;
}

bool RuntimeDir::share_with_group(gid_t gid) {
  if (::chown(path_.c_str(), static_cast<uid_t>(-1), gid) != 0 ||
      ::chown(file("lock").c_str(), static_cast<uid_t>(-1), gid) != 0) {
    return false;
  }
  return ::chmod(path_.c_str(), 0750) == 0 && ::fchmod(lock_fd_, 0640) == 0;
}

namespace {
constexpr const char* kSystemBase = "/run/passlaunch";
}

std::vector<std::string> runtime_bases() {
  std::vector<std::string> out{fs::path(runtime_dir_for("x")).parent_path().string()};
  if (::getuid() != 0 && out[0] != kSystemBase) out.push_back(kSystemBase);
  return out;
}

std::string find_runtime_dir(const std::string& name) {
  std::string own = runtime_dir_for(name);
  if (running_launcher_in(own) || ::getuid() == 0) return own;
  std::string system = std::string(kSystemBase) + "/" + name;
  if (running_launcher_in(system)) return system;
  return own;
}

std::optional<pid_t> running_launcher(const std::string& name) {
  return running_launcher_in(find_runtime_dir(name));
}

std::optional<pid_t> running_launcher_in(const std::string& dir) {
  std::string lock = dir + "/lock";
  int fd = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);
  if (!held) return std::nullopt;
  return read_pid(lock);
}

}  // namespace pl
