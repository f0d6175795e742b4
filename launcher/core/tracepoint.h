// Counting a kernel tracepoint for the calling thread (perf_event_open), for
// benchmarks and tests: system calls (raw_syscalls/sys_enter), io_uring
// requests handed to io-wq (io_uring/io_uring_queue_async_work).
#pragma once

#include <cstdint>
#include <string>

namespace pl {

class TracepointCounter {
 public:
  /// `event` is "SYSTEM/NAME" under tracefs' events/. Needs tracefs mounted
  /// (/sys/kernel/tracing or /sys/kernel/debug/tracing) and root; without
  /// them ok() is false and count() is 0.
  explicit TracepointCounter(const std::string& event);
  ~TracepointCounter();
  TracepointCounter(const TracepointCounter&) = delete;
  TracepointCounter& operator=(const TracepointCounter&) = delete;

  bool ok() const { return fd_ >= 0; }
  /// Events seen on the calling thread since construction.
  uint64_t count() const;

 private:
  int fd_ = -1;
};

}  // namespace pl
