// A small synchronous client of the QEMU guest agent (qemu-ga) over the Unix
// socket of the profile's guest_agent channel (qga.sock in the runtime dir).
// The agent speaks QMP-like JSON lines without a greeting; a reply may be left
// over from an earlier client, so every session starts with
// guest-sync-delimited, whose reply is preceded by a 0xFF byte.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

namespace pl {

class GuestAgent {
 public:
  using json = nlohmann::json;

  /// Connects to the agent's socket. Throws pl::Error(kEnvironment) when it cannot.
  explicit GuestAgent(const std::string& socket_path);
  ~GuestAgent();
  GuestAgent(const GuestAgent&) = delete;
  GuestAgent& operator=(const GuestAgent&) = delete;

  /// guest-sync-delimited: true when an agent answered within `timeout`
  /// (QEMU accepts the connection whether or not an agent runs in the guest).
  bool sync(std::chrono::milliseconds timeout);

  /// Runs `cmd` and returns its "return". Throws pl::Error(kFailed) for an
  /// error reply, pl::Error(kEnvironment) for a timeout or a broken channel.
  json execute(const std::string& cmd, const json& args = nullptr,
               std::chrono::milliseconds timeout = std::chrono::seconds(10));

  /// Sends a command that sends no reply on success (guest-shutdown).
  void send(const std::string& cmd, const json& args = nullptr);

 private:
  /// The next line (without '\n') within `deadline`; false on timeout.
  bool read_line(std::string& line, std::chrono::steady_clock::time_point deadline);
  void write_all(const std::string& data);

  int fd_ = -1;
  std::string path_;
  std::string buf_;
};

}  // namespace pl
