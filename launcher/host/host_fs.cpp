#include "host/host_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "core/error.h"

namespace pl::host {

HostFs::HostFs(std::string root) : root_(std::move(root)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
  if (root_ == "/") root_.clear();
}

std::string HostFs::real(std::string_view host_path) const {
  return root_ + std::string(host_path);
}

std::optional<std::string> HostFs::read(const std::string& path) const {
  const std::string p = real(path);
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR || errno == ENODEV) return std::nullopt;
    throw system_error(Exit::kEnvironment, "cannot open", p, errno);
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      // sysfs attributes of absent hardware read as ENODEV/EIO: treat ENODEV as absent.
      if (err == ENODEV) return std::nullopt;
      throw system_error(Exit::kEnvironment, "cannot read", p, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::optional<std::string> HostFs::read_trimmed(const std::string& path) const {
  auto text = read(path);
  if (!text) return text;
  const char* ws = " \t\r\n";
  auto b = text->find_first_not_of(ws);
  if (b == std::string::npos) return std::string();
  auto e = text->find_last_not_of(ws);
  return text->substr(b, e - b + 1);
}

std::vector<std::string> HostFs::list(const std::string& dir) const {
  std::vector<std::string> names;
  DIR* d = ::opendir(real(dir).c_str());
  if (!d) return names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::optional<std::string> HostFs::readlink(const std::string& path) const {
  char buf[4096];
  ssize_t n = ::readlink(real(path).c_str(), buf, sizeof buf - 1);
  if (n < 0) return std::nullopt;
  return std::string(buf, static_cast<size_t>(n));
}

bool HostFs::exists(const std::string& path) const {
  struct stat st;
  return ::lstat(real(path).c_str(), &st) == 0;
}

int HostFs::write(const std::string& path, std::string_view data) {
  int fd = ::open(real(path).c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  ssize_t n;
  do {
    n = ::write(fd, data.data(), data.size());
  } while (n < 0 && errno == EINTR);
  int err = n < 0 ? errno : (static_cast<size_t>(n) == data.size() ? 0 : EIO);
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

std::string basename(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  auto slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

}  // namespace pl::host
