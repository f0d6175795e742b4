// The one error type of the qmp library. It does not depend on the launcher:
// callers map ErrorKind to their own exit codes (the CLI maps command_error to
// 1 and everything else to 3).
#pragma once

#include <stdexcept>
#include <string>

namespace qmp {

/// What went wrong; see docs/qmp.md for when each is raised.
enum class ErrorKind {
  command_error,   ///< QEMU answered with an error reply (class + desc are set).
  timeout,         ///< No reply, event or greeting before the deadline.
  disconnected,    ///< The connection ended (EOF, reset, close()) or was never made.
  protocol,        ///< The peer broke the protocol: bad JSON, oversize, bad shapes.
  busy,            ///< Connected, but no greeting: another client holds the monitor.
  connect_failed,  ///< connect() could not reach the socket before its deadline.
};

/// "command_error", "timeout", ...
const char* to_string(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message, std::string command = {},
        std::string error_class = {}, std::string description = {})
      : std::runtime_error(message),
        kind_(kind),
        command_(std::move(command)),
        class_(std::move(error_class)),
        desc_(std::move(description)) {}

  ErrorKind kind() const { return kind_; }
  /// The QMP command this error belongs to ("" for connection-level errors).
  const std::string& command() const { return command_; }
  /// QEMU's error class ("CommandNotFound", "GenericError"), command_error only.
  const std::string& error_class() const { return class_; }
  /// QEMU's human-readable description, command_error only.
  const std::string& description() const { return desc_; }

 private:
  ErrorKind kind_;
  std::string command_;
  std::string class_;
  std::string desc_;
};

}  // namespace qmp
