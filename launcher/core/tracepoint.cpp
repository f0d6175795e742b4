#include "core/tracepoint.h"

#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>

namespace pl {

TracepointCounter::TracepointCounter(const std::string& event) {
  long id = -1;
  for (const char* root : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}) {
    std::ifstream in(std::string(root) + "/events/" + event + "/id");
    if (in >> id) break;
  }
  if (id < 0) return;
  perf_event_attr attr{};
  attr.type = PERF_TYPE_TRACEPOINT;
  attr.size = sizeof attr;
  attr.config = static_cast<uint64_t>(id);
  fd_ = static_cast<int>(syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC));
}

TracepointCounter::~TracepointCounter() {
  if (fd_ >= 0) close(fd_);
}

uint64_t TracepointCounter::count() const {
  uint64_t n = 0;
  if (fd_ >= 0 && read(fd_, &n, sizeof n) != sizeof n) n = 0;
  return n;
}

}  // namespace pl
