#include "run/guest_agent.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "core/error.h"

namespace pl {

GuestAgent::GuestAgent(const std::string& socket_path) : path_(socket_path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    throw Error(Exit::kEnvironment, "guest agent socket path too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw system_error(Exit::kEnvironment, "cannot create a socket for", path_, errno);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw system_error(Exit::kEnvironment, "cannot connect to the guest agent at", path_, err);
  }
}

GuestAgent::~GuestAgent() {
  if (fd_ >= 0) ::close(fd_);
}

void GuestAgent::write_all(const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      throw system_error(Exit::kEnvironment, "cannot write to the guest agent at", path_, errno);
    done += static_cast<size_t>(n);
  }
}

bool GuestAgent::read_line(std::string& line, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    auto nl = buf_.find('\n');
    if (nl != std::string::npos) {
      line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return true;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0)
      throw system_error(Exit::kEnvironment, "cannot wait for the guest agent at", path_, errno);
    if (r == 0) return false;
    char chunk[4096];
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      throw system_error(Exit::kEnvironment, "cannot read from the guest agent at", path_, errno);
    if (n == 0) throw Error(Exit::kEnvironment, "the guest agent's socket " + path_ + " closed");
    buf_.append(chunk, static_cast<size_t>(n));
  }
}

bool GuestAgent::sync(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::random_device rd;
  int64_t id = static_cast<int64_t>(rd() & 0x7fffffff);
  // 0xFF first: it resets the agent's JSON parser after a half-sent request.
  write_all(std::string("\xff") +
            json{{"execute", "guest-sync-delimited"}, {"arguments", {{"id", id}}}}.dump() + "\n");
  for (;;) {
    std::string line;
    if (!read_line(line, deadline)) return false;
    // Everything up to the last 0xFF is stale output of an earlier session.
    auto ff = line.rfind('\xff');
    if (ff != std::string::npos) line.erase(0, ff + 1);
    json reply = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (reply.is_object() && reply.contains("return") && reply["return"] == id) {
      buf_.clear();
      return true;
    }
  }
}

GuestAgent::json GuestAgent::execute(const std::string& cmd, const json& args,
                                     std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  json req{{"execute", cmd}};
  if (!args.is_null()) req["arguments"] = args;
  write_all(req.dump() + "\n");
  std::string line;
  for (;;) {
    if (!read_line(line, deadline)) {
      throw Error(Exit::kEnvironment, "the guest agent did not answer " + cmd + " within " +
                                          std::to_string(timeout.count() / 1000) + " s");
    }
    json reply = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!reply.is_object()) continue;
    if (reply.contains("error")) {
      const json& e = reply["error"];
      throw Error(Exit::kFailed, "guest agent: " + cmd + ": " + e.value("class", "Error") + ": " +
                                     e.value("desc", ""));
    }
    if (reply.contains("return")) return reply["return"];
  }
}

void GuestAgent::send(const std::string& cmd, const json& args) {
  json req{{"execute", cmd}};
  if (!args.is_null()) req["arguments"] = args;
  write_all(req.dump() + "\n");
}

}  // namespace pl
