// The one error type of passlaunch, and the documented exit codes.
//
// Errors are exceptions everywhere (one choice, used throughout). Each carries
// the exit code of its category, a message that names the operation and its
// subject (file and JSON path, CPU, QMP command, sysfs path) and an optional
// hint for the fix. main() prints the message once and exits with the code.
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>

namespace pl {

/// Exit codes, documented once here and in README.md ("Exit codes").
enum class Exit : int {
  kOk = 0,
  kFailed = 1,         ///< The operation failed: QMP error reply, pin failure, a host step failed.
  kUsage = 2,          ///< Bad usage or invalid input: profile, arguments, files.
  kEnvironment = 3,    ///< Environment or connection: QEMU missing, socket, protocol, timeout.
  kHostDirty = 4,      ///< The host holds unrestored changes from an earlier run.
  kQemuCrashed = 5,    ///< run: QEMU died on its own (signal or non-zero status).
  kGuestPanic = 6,     ///< run: the guest reported GUEST_PANICKED.
  kForcedQuit = 7,     ///< run: the guest did not shut down in time and was quit.
  kStartupFailed = 8,  ///< run: QEMU exited or refused before the guest started.
};

inline int exit_code(Exit e) { return static_cast<int>(e); }

class Error : public std::runtime_error {
 public:
  Error(Exit code, const std::string& message, std::string hint = {})
      : std::runtime_error(message), code_(code), hint_(std::move(hint)) {}

  Exit code() const { return code_; }
  const std::string& hint() const { return hint_; }

 private:
  Exit code_;
  std::string hint_;
};

/// An error from a system call: "<operation> <subject>: <strerror(err)>".
inline Error system_error(Exit code, const std::string& operation, const std::string& subject,
                          int err, std::string hint = {}) {
  std::string msg = operation;
  if (!subject.empty()) msg += " " + subject;
  msg += ": " + std::generic_category().message(err);
  return Error(code, msg, std::move(hint));
}

}  // namespace pl
