#include "latency/sampler.h"

#include <dirent.h>
#include <fcntl.h>
#include <liburing.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/cpulist.h"
#include "core/error.h"
#include "latency/histogram.h"
#include "latency/procfs.h"
#include "latency/profiler.h"
#include "latency/role.h"

namespace pl::latency {

namespace {

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void sleep_until_ns(int64_t t) {
  timespec ts{static_cast<time_t>(t / 1'000'000'000), static_cast<long>(t % 1'000'000'000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

double process_cpu_s() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Reads a small file relative to a directory fd into `buf`; returns the bytes
// read or -errno. Used outside the tick (discovery, host scan).
ssize_t read_at(int dirfd, const char* path, char* buf, size_t len) {
  int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = read(fd, buf, len);
  int err = errno;
  close(fd);
  return n < 0 ? -err : n;
}

template <size_t N>
void copy_str(char (&dst)[N], std::string_view src) {
  size_t n = std::min(N - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

bool is_number(const char* s) {
  if (!*s) return false;
  for (; *s; ++s)
    if (*s < '0' || *s > '9') return false;
  return true;
}

// ---------------------------------------------------------------------------
// Host scan: which tasks ran on which CPU. Runs on its own thread at a slow
// cadence; bounded by max_tasks stat reads per scan and kPerCpu tasks per CPU.

class HostScanner {
 public:
  static constexpr size_t kPerCpu = 32;

  HostScanner(std::string proc_root, std::chrono::nanoseconds interval, size_t max_tasks)
      : proc_root_(std::move(proc_root)), interval_(interval), max_tasks_(max_tasks) {
    long n = sysconf(_SC_NPROCESSORS_CONF);
    cpus_.resize(static_cast<size_t>(std::max<long>(n, 1)));
  }
  ~HostScanner() { stop(); }

  void start() {
    if (interval_.count() <= 0) return;
    thread_ = std::thread([this] { loop(); });
  }
  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  uint64_t scans() const {
    std::lock_guard lock(mu_);
    return scans_;
  }
  /// CPU time the scans took, in ns.
  int64_t cpu_ns() const {
    std::lock_guard lock(mu_);
    return cpu_ns_;
  }

  /// The tasks seen on any of `cpus`, excluding `self_tid`, most seen first.
  std::vector<OtherTask> tasks_on(const cpu_set_t& cpus, int self_tid, size_t limit) const {
    std::lock_guard lock(mu_);
    std::map<int, OtherTask> merged;
    for (size_t c = 0; c < cpus_.size() && c < CPU_SETSIZE; ++c) {
      if (!CPU_ISSET(c, &cpus)) continue;
      for (const Seen& s : cpus_[c]) {
        if (s.tid == self_tid) continue;
        OtherTask& o = merged[s.tid];
        o.pid = s.pid;
        o.tid = s.tid;
        o.comm = s.comm;
        o.samples += s.count;
      }
    }
    std::vector<OtherTask> out;
    for (auto& [tid, o] : merged) out.push_back(o);
    std::stable_sort(out.begin(), out.end(),
                     [](const OtherTask& a, const OtherTask& b) { return a.samples > b.samples; });
    if (out.size() > limit) out.resize(limit);
    return out;
  }

 private:
  struct Seen {
    int pid = 0;
    int tid = 0;
    char comm[32] = {};
    uint64_t count = 0;
  };

  void loop() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      lock.unlock();
      timespec a, b;
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
      scan_once();
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
      lock.lock();
      ++scans_;
      cpu_ns_ += (b.tv_sec - a.tv_sec) * 1'000'000'000LL + (b.tv_nsec - a.tv_nsec);
      cv_.wait_for(lock, interval_, [this] { return stopping_; });
    }
  }

  void note(int cpu, int pid, int tid, std::string_view comm) {
    if (cpu < 0 || static_cast<size_t>(cpu) >= cpus_.size()) return;
    auto& list = cpus_[cpu];
    for (Seen& s : list)
      if (s.tid == tid) {
        ++s.count;
        return;
      }
    if (list.size() >= kPerCpu) {
      // Bounded (the Space-Saving algorithm): a newcomer replaces the least
      // seen task and inherits its count, so frequent tasks are never lost;
      // a count may overstate by at most the count it inherited.
      Seen& min = *std::min_element(list.begin(), list.end(),
                                    [](const Seen& a, const Seen& b) { return a.count < b.count; });
      min.pid = pid;
      min.tid = tid;
      copy_str(min.comm, comm);
      ++min.count;
      return;
    }
    Seen s;
    s.pid = pid;
    s.tid = tid;
    copy_str(s.comm, comm);
    s.count = 1;
    list.push_back(s);
  }

  void scan_once() {
    DIR* proc = opendir(proc_root_.c_str());
    if (!proc) return;
    std::unordered_map<int, uint64_t> now;
    now.reserve(prev_.size() + 64);
    size_t budget = max_tasks_;
    char buf[1024];
    std::vector<std::tuple<int, int, int, std::string>> seen;  // cpu, pid, tid, comm
    while (dirent* pe = readdir(proc)) {
      if (!is_number(pe->d_name) || budget == 0) continue;
      int pid = std::atoi(pe->d_name);
      std::string task_path = proc_root_ + "/" + pe->d_name + "/task";
      int taskfd = open(task_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (taskfd < 0) continue;
      DIR* tasks = fdopendir(taskfd);
      if (!tasks) {
        close(taskfd);
        continue;
      }
      while (dirent* te = readdir(tasks)) {
        if (!is_number(te->d_name) || budget == 0) continue;
        --budget;
        char path[sizeof te->d_name + 8];
        std::snprintf(path, sizeof path, "%s/stat", te->d_name);
        ssize_t n = read_at(dirfd(tasks), path, buf, sizeof buf - 1);
        if (n <= 0) continue;
        auto st = parse_task_stat(std::string_view(buf, static_cast<size_t>(n)));
        if (!st) continue;
        int tid = std::atoi(te->d_name);
        now[tid] = st->cpu_ticks;
        auto it = prev_.find(tid);
        bool used_cpu = it != prev_.end() && it->second != st->cpu_ticks;
        if (st->state == 'R' || used_cpu)
          seen.emplace_back(st->processor, pid, tid, std::string(st->comm));
      }
      closedir(tasks);
    }
    closedir(proc);
    prev_ = std::move(now);
    std::lock_guard lock(mu_);
    for (auto& [cpu, pid, tid, comm] : seen) note(cpu, pid, tid, comm);
  }

  std::string proc_root_;
  std::chrono::nanoseconds interval_;
  size_t max_tasks_;
  std::unordered_map<int, uint64_t> prev_;  // tid -> utime+stime at the last scan
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  uint64_t scans_ = 0;
  int64_t cpu_ns_ = 0;
  std::vector<std::vector<Seen>> cpus_;
  std::thread thread_;
};

// The three files read per thread, and their buffer sizes.
enum Kind : uint8_t { kSched = 0, kStat = 1, kStatus = 2 };
constexpr size_t kBufSize[3] = {128, 1024, 4096};
constexpr size_t kBufOffset[3] = {0, 128, 128 + 1024};
constexpr size_t kSlotBytes = 128 + 1024 + 4096;
constexpr size_t kPlotPoints = 720;
constexpr uint64_t kTimerTag = ~uint64_t{0};  // user_data of the tick timer

}  // namespace

// ---------------------------------------------------------------------------

struct Sampler::Impl {
  // One per thread ever sampled; kept after the thread exits.
  struct Record {
    int tid = 0;
    char name[32] = {};
    char role[48] = {};
    cpu_set_t allowed{};
    char allowed_list[256] = {};
    char allowed_now[256] = {};
    bool have_sched = false;
    Schedstat first_sched, last_sched;
    int64_t first_ts = 0, last_ts = 0;
    bool have_status = false;
    uint64_t nvcsw_first = 0, nvcsw_last = 0;
    int64_t status_first_ts = 0, status_last_ts = 0;
    Histogram delay;
    uint64_t delay_sum_ns = 0;
    uint64_t cpu_samples = 0, outside = 0;
    int last_cpu = -1;
    uint64_t start_ticks = 0;     // stat field 22: tells a reused tid from this thread
    uint32_t cpu_countdown = 1;   // intervals it runs before its next CPU sample
    bool stat_due = true;         // read stat in the next batch
    bool stat_counted = false;    // ... and count it as a CPU sample
    uint64_t cpu_sampled_at = 0;  // the tick of the last CPU sample (0: none)
    bool rebaseline = false;      // the next schedstat starts afresh, no sample
    bool exited = false;
    float series[kPlotPoints];
  };
  // A live thread: its record, its three fds (fixed-file indices 3*slot+kind).
  struct Slot {
    bool live = false;
    bool seen = false;
    int tid = 0;
    int record = -1;
    uint16_t gen = 0;
    int fd[3] = {-1, -1, -1};
    uint16_t want[3] = {0, 0, 0};  // bytes to ask for; 0: not known yet, the whole buffer
  };
  // One read of one tick's batch.
  struct Entry {
    uint16_t slot;
    uint16_t gen;
    uint8_t kind;
    bool counted;    // a stat read after the thread ran: counts as a CPU sample
    uint16_t asked;  // bytes asked for
    int32_t res;
  };

  SamplerOptions opt;
  int taskdir = -1;
  int csv_fd = -1;
  std::atomic<bool> stopping{false};
  bool ran = false;

  io_uring ring{};
  bool ring_ready = false;
  std::vector<Slot> slots;
  size_t live = 0;              // live slots
  std::vector<Record> records;  // reserved up front: emplace_back never reallocates
  size_t max_records = 0;
  std::vector<char> buffers;   // [slot][kind]
  std::vector<Entry> entries;  // this tick's batch
  size_t entry_count = 0;
  size_t outstanding = 0;      // reads submitted, not completed
  bool timer_pending = false;  // the tick timer is armed, not fired
  int64_t batch_ts = 0;
  std::vector<char> dents;
  std::vector<char> csv_buf;
  size_t csv_len = 0;

  // Progress and results.
  int64_t start_ts = 0, end_ts = 0;
  std::atomic<uint64_t> tick{0};  // read by stats() from other threads
  uint64_t missed = 0;
  // Read by stats() from other threads while run() runs: atomic (relaxed
  // increments cost nothing measurable here).
  std::atomic<uint64_t> uring_enters{0}, reads{0}, short_reads{0}, rereads{0};
  uint64_t untracked = 0;
  bool process_exited = false;
  double cpu_start = 0, cpu_end = 0;
  int64_t bucket_ns = 0;
  bool status_due = true;
  bool rescan_due = false;  // a thread went away: re-list soon, new ones may have come
  uint32_t cpu_every = 1;   // ticks a thread runs between two CPU samples
  std::unique_ptr<HostScanner> scanner;

  char* buf(size_t slot, int kind) { return buffers.data() + slot * kSlotBytes + kBufOffset[kind]; }

  // --- threads --------------------------------------------------------------

  void close_slot(size_t s) {
    Slot& sl = slots[s];
    if (ring_ready) {
      int none[3] = {-1, -1, -1};
      io_uring_register_files_update(&ring, static_cast<unsigned>(3 * s), none, 3);
    }
    for (int& fd : sl.fd)
      if (fd >= 0) {
        close(fd);
        fd = -1;
      }
    sl.live = false;
    --live;
    ++sl.gen;  // reads of this slot still in flight are ignored when they land
  }

  void thread_gone(size_t s) {
    if (!slots[s].live) return;
    records[slots[s].record].exited = true;
    close_slot(s);
    rescan_due = true;
  }

  // True if `tid`, listed again, is a thread already sampled and gone: a
  // zombie leader stays listed, and an exiting thread may be listed a moment
  // longer. A new thread that got a recycled tid starts at another time.
  bool seen_and_gone(int tid) {
    const Record* gone = nullptr;
    for (const Record& r : records)
      if (r.tid == tid && r.exited) gone = &r;  // the latest
    if (!gone) return false;
    char path[64], text[1024];
    std::snprintf(path, sizeof path, "%d/stat", tid);
    ssize_t n = read_at(taskdir, path, text, sizeof text);
    if (n <= 0) return true;  // gone for good
    auto st = parse_task_stat(std::string_view(text, static_cast<size_t>(n)));
    if (!st) return true;
    if (st->state == 'Z' || st->state == 'X') return true;
    return gone->start_ticks != 0 && st->start_ticks == gone->start_ticks;
  }

  // Starts sampling a thread; false if there is no room for it.
  bool add_thread(int tid) {
    if (seen_and_gone(tid)) return true;
    size_t s = 0;
    while (s < slots.size() && slots[s].live) ++s;
    if (s == slots.size() || records.size() >= max_records) return false;
    Slot& sl = slots[s];
    static const char* kFile[3] = {"schedstat", "stat", "status"};
    for (int k = 0; k < 3; ++k) {
      char path[64];
      std::snprintf(path, sizeof path, "%d/%s", tid, kFile[k]);
      // O_NONBLOCK lets io_uring read the file inline, see read_batch_and_wait().
      sl.fd[k] = openat(taskdir, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
      if (sl.fd[k] < 0) {
        int err = errno;
        for (int& fd : sl.fd)
          if (fd >= 0) close(fd), fd = -1;
        return err != EMFILE && err != ENFILE;  // else: gone already
      }
    }
    Record& r = records.emplace_back();
    r.tid = tid;
    // Spread the threads' CPU samples over the ticks.
    r.cpu_countdown = 1 + static_cast<uint32_t>(records.size() % cpu_every);
    std::fill(std::begin(r.series), std::end(r.series), NAN);
    char comm[64];
    char path[64];
    std::snprintf(path, sizeof path, "%d/comm", tid);
    ssize_t n = read_at(taskdir, path, comm, sizeof comm - 1);
    std::string_view name = n > 0 ? std::string_view(comm, static_cast<size_t>(n)) : "";
    if (!name.empty() && name.back() == '\n') name.remove_suffix(1);
    copy_str(r.name, name);
    if (auto known = opt.roles.find(tid); known != opt.roles.end())
      copy_str(r.role, known->second);
    else
      copy_str(r.role, to_string(classify_thread(r.name)));
    CPU_ZERO(&r.allowed);
    if (sched_getaffinity(tid, sizeof r.allowed, &r.allowed) == 0) {
      std::vector<int> cpus;
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &r.allowed)) cpus.push_back(c);
      copy_str(r.allowed_list, format_cpulist(cpus));
    } else {
      for (int c = 0; c < CPU_SETSIZE; ++c) CPU_SET(c, &r.allowed);
    }
    sl.live = true;
    ++live;
    sl.seen = true;
    sl.tid = tid;
    sl.record = static_cast<int>(records.size() - 1);
    // Read each file once, whole, to learn how much to ask for (0: not
    // learnt, the next read asks for the whole buffer).
    for (int k = 0; k < 3; ++k) {
      sl.want[k] = 0;
      ssize_t got = pread(sl.fd[k], buf(s, k), kBufSize[k], 0);
      if (got <= 0) continue;
      std::string_view text(buf(s, k), static_cast<size_t>(got));
      if (k != kStat) {
        sl.want[k] = want_after(k, text, nullptr);
      } else if (auto st = parse_task_stat(text)) {
        r.start_ticks = st->start_ticks;
        r.last_cpu = st->processor;
        sl.want[k] = want_after(k, text, &*st);
      }
    }
    r.stat_due = r.last_cpu < 0;  // else known: the first CPU sample waits its turn
    if (ring_ready) {
      int rc = io_uring_register_files_update(&ring, static_cast<unsigned>(3 * s), sl.fd, 3);
      if (rc < 0) throw system_error(Exit::kEnvironment, "io_uring_register_files_update", "", -rc);
    }
    return true;
  }

  // Re-lists /proc/PID/task with getdents64 into a preallocated buffer.
  // Returns false when the process is gone.
  bool rescan() {
    for (Slot& sl : slots) sl.seen = false;
    if (lseek(taskdir, 0, SEEK_SET) < 0) return false;
    size_t found = 0, no_room = 0;
    for (;;) {
      long n = syscall(SYS_getdents64, taskdir, dents.data(), dents.size());
      if (n < 0) return false;
      if (n == 0) break;
      for (long off = 0; off < n;) {
        auto* d = reinterpret_cast<dirent64*>(dents.data() + off);
        off += d->d_reclen;
        if (!is_number(d->d_name)) continue;
        ++found;
        int tid = std::atoi(d->d_name);
        bool known = false;
        for (Slot& sl : slots)
          if (sl.live && sl.tid == tid) {
            sl.seen = known = true;
            break;
          }
        if (!known && !add_thread(tid)) ++no_room;
      }
    }
    // Listing a task directory is not atomic: a thread that exits while it
    // is listed can make the listing skip a live one. So a thread missing
    // from it is gone only if its own file says so.
    for (size_t s = 0; s < slots.size(); ++s) {
      if (!slots[s].live || slots[s].seen) continue;
      char probe[128];
      ssize_t n = pread(slots[s].fd[kSched], probe, sizeof probe, 0);
      if (n <= 0) thread_gone(s);
    }
    untracked = std::max<uint64_t>(untracked, no_room);
    // Gone when nothing is listed, or only threads already seen and gone (a
    // zombie leader): threads we had no room for still count as running.
    return found > 0 && (live > 0 || no_room > 0);
  }

  // --- one tick ---------------------------------------------------------------

  // This tick's reads: schedstat for every thread; stat for a thread whose
  // CPU sample is due (every cpu_every-th interval it ran, and when found);
  // status for all at a rescan.
  void prepare() {
    size_t n = 0;
    auto add = [&](size_t s, int kind, bool counted) {
      const Slot& sl = slots[s];
      uint16_t asked = opt.reader == ReadMethod::kUring && sl.want[kind] != 0
                           ? sl.want[kind]
                           : static_cast<uint16_t>(kBufSize[kind]);
      entries[n++] = {
          static_cast<uint16_t>(s), sl.gen, static_cast<uint8_t>(kind), counted, asked, 0};
    };
    for (size_t s = 0; s < slots.size(); ++s) {
      Slot& sl = slots[s];
      if (!sl.live) continue;
      Record& r = records[sl.record];
      add(s, kSched, false);
      if (r.stat_due) {
        add(s, kStat, r.stat_counted);
        r.stat_due = r.stat_counted = false;
      }
      if (status_due) add(s, kStatus, false);
    }
    status_due = false;
    entry_count = n;
  }

  // Reads this tick's batch, then waits until `wake_at` (CLOCK_MONOTONIC ns;
  // 0: do not wait). With io_uring both are ONE io_uring_enter: the batch's
  // reads and an absolute timeout are submitted together, the reads run at
  // once, inline, and the call returns when the timeout fires.
  void read_batch_and_wait(int64_t wake_at) {
    batch_ts = now_ns();
    size_t n = entry_count;
    reads.fetch_add(n, std::memory_order_relaxed);
    if (opt.reader == ReadMethod::kPread) {
      for (size_t i = 0; i < n; ++i) {
        Entry& e = entries[i];
        ssize_t r = pread(slots[e.slot].fd[e.kind], buf(e.slot, e.kind), e.asked, 0);
        e.res = r < 0 ? -errno : static_cast<int32_t>(r);
      }
      if (wake_at > 0) sleep_until_ns(wake_at);
      return;
    }
    // Each read asks for at most the bytes the file has (Slot::want). io_uring
    // takes a short read of a regular file -- procfs files are -- as "more
    // may come" and finishes it on an io-wq worker thread, a context switch
    // per read. A read that fills what it asked for completes inline, inside
    // the io_uring_enter below (O_NONBLOCK lets procfs be read there).
    for (size_t i = 0; i < n; ++i) {
      Entry& e = entries[i];
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);  // the SQ holds a whole batch
      io_uring_prep_read(sqe, static_cast<int>(3 * e.slot + e.kind), buf(e.slot, e.kind), e.asked,
                         0);
      sqe->flags |= IOSQE_FIXED_FILE;
      io_uring_sqe_set_data64(sqe, i);
    }
    outstanding = n;
    __kernel_timespec at{wake_at / 1'000'000'000, wake_at % 1'000'000'000};
    if (wake_at > 0) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      io_uring_prep_timeout(sqe, &at, 0, IORING_TIMEOUT_ABS);  // CLOCK_MONOTONIC
      io_uring_sqe_set_data64(sqe, kTimerTag);
      timer_pending = true;
    }
    // Waiting for every read and the timeout: the ring uses DEFER_TASKRUN,
    // so nothing wakes us before that (not even a read that went to io-wq).
    int rc;
    do {
      rc = io_uring_submit_and_wait(&ring, static_cast<unsigned>(n + (wake_at > 0)));
      ++uring_enters;
    } while (rc == -EINTR);
    // Anything else, or a batch the kernel did not take whole, would leave
    // reads that never complete: fail loudly (what the kernel did not take is
    // never run; drain() waits for the rest).
    if (size_t untaken = io_uring_sq_ready(&ring); rc < 0 || untaken > 0) {
      if (timer_pending && untaken > 0) timer_pending = false, --untaken;
      outstanding -= std::min(outstanding, untaken);
      throw system_error(Exit::kEnvironment, "io_uring submit", "", rc < 0 ? -rc : EAGAIN);
    }
    harvest();
    wait_all();  // after an EINTR, or a read that went to io-wq
  }

  void harvest() {
    io_uring_cqe* cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      uint64_t ud = io_uring_cqe_get_data64(cqe);
      if (ud == kTimerTag) {
        timer_pending = false;
      } else {
        entries[ud].res = cqe->res;
        --outstanding;
      }
      ++seen;
    }
    io_uring_cq_advance(&ring, seen);
  }

  void wait_all() {
    while (outstanding > 0 || timer_pending) {
      io_uring_cqe* cqe;
      int rc = io_uring_wait_cqe(&ring, &cqe);
      ++uring_enters;
      if (rc < 0 && rc != -EINTR) throw system_error(Exit::kEnvironment, "io_uring wait", "", -rc);
      harvest();
    }
  }

  void record_series(Record& r, int64_t ts, uint64_t delay_ns) {
    int64_t at = ts - start_ts;
    while (at / bucket_ns >= static_cast<int64_t>(kPlotPoints)) {
      // Out of points: halve the resolution of every thread's series.
      for (Record& x : records) {
        for (size_t i = 0; i < kPlotPoints / 2; ++i) {
          float a = x.series[2 * i], b = x.series[2 * i + 1];
          x.series[i] = std::isnan(a) ? b : std::isnan(b) ? a : std::max(a, b);
        }
        std::fill(x.series + kPlotPoints / 2, x.series + kPlotPoints, NAN);
      }
      bucket_ns *= 2;
    }
    float us = static_cast<float>(delay_ns / 1000.0);
    float& v = r.series[at / bucket_ns];
    v = std::isnan(v) ? us : std::max(v, us);
  }

  // One row per thread and tick; `cpu` and `outside_allowed` only on the
  // ticks that sampled the thread's CPU (empty otherwise).
  void csv_row(const Record& r, int64_t ts, const Schedstat& d) {
    if (csv_fd < 0) return;
    char cpu[32] = ",";
    if (r.cpu_sampled_at == tick.load(std::memory_order_relaxed)) {
      bool outside =
          r.last_cpu < 0 || r.last_cpu >= CPU_SETSIZE || !CPU_ISSET(r.last_cpu, &r.allowed);
      std::snprintf(cpu, sizeof cpu, "%d,%d", r.last_cpu, outside ? 1 : 0);
    }
    char* out = csv_buf.data() + csv_len;
    int n = std::snprintf(out, 256, "%lld,%d,%s,%.1f,%.1f,%llu,%s\n",
                          static_cast<long long>((ts - start_ts) / 1000), r.tid, r.role,
                          d.run_ns / 1000.0, d.wait_ns / 1000.0,
                          static_cast<unsigned long long>(d.timeslices), cpu);
    csv_len += static_cast<size_t>(std::max(n, 0));
    if (csv_len > csv_buf.size() - 256) flush_csv();
  }

  void flush_csv() {
    size_t off = 0;
    while (off < csv_len) {
      ssize_t n = write(csv_fd, csv_buf.data() + off, csv_len - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    csv_len = 0;
  }

  // How many bytes to ask for next time, from a whole file's text.
  // schedstat only grows (three counters) and status ends with the field we
  // need: their length. stat: stat_read_size() (a read that comes short is
  // still right, only slower: see read_batch_and_wait()).
  static uint16_t want_after(int kind, std::string_view whole, const TaskStat* st) {
    size_t n = whole.size();
    if (kind == kStat && st) n = stat_read_size(n, *st);
    return static_cast<uint16_t>(std::clamp<size_t>(n, 1, kBufSize[kind]));
  }

  // One completed read's text. `whole` is set when the read came short, so
  // the text is the whole file; a read that filled what it asked for may
  // have been cut (the file grew): its parser tells, and the caller reads it
  // again whole (reread).
  std::string_view text_of(const Entry& e, bool& whole) {
    char* b = buf(e.slot, e.kind);
    whole = e.res < e.asked;  // short: the kernel gave the whole file
    if (opt.reader == ReadMethod::kUring && whole)
      short_reads.fetch_add(1, std::memory_order_relaxed);
    return std::string_view(b, static_cast<size_t>(e.res));
  }

  std::string_view reread(const Entry& e) {
    rereads.fetch_add(1, std::memory_order_relaxed);
    char* b = buf(e.slot, e.kind);
    ssize_t n = pread(slots[e.slot].fd[e.kind], b, kBufSize[e.kind], 0);
    return n > 0 ? std::string_view(b, static_cast<size_t>(n)) : std::string_view();
  }

  // Folds a completed batch into the records.
  void process() {
    int64_t ts = batch_ts;
    size_t n = entry_count;
    entry_count = 0;
    // Stat and status first (last CPU, switches), then schedstat deltas.
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t i = 0; i < n; ++i) {
        const Entry& e = entries[i];
        Slot& sl = slots[e.slot];
        if (!sl.live || sl.gen != e.gen) continue;  // exited since
        if ((pass == 0) == (e.kind == kSched)) continue;
        Record& r = records[sl.record];
        if (e.res == -ESRCH || e.res == -ENOENT) {
          thread_gone(e.slot);
          continue;
        }
        if (e.res <= 0) continue;
        bool whole;
        std::string_view text = text_of(e, whole);
        if (e.kind == kStat) {
          auto st = parse_task_stat(text);
          if (!st && !whole) st = parse_task_stat(text = reread(e)), whole = true;
          if (!st) continue;
          if (whole) sl.want[kStat] = want_after(kStat, text, &*st);
          if (st->state == 'Z' || st->state == 'X') {
            thread_gone(e.slot);
            continue;
          }
          if (r.start_ticks == 0) r.start_ticks = st->start_ticks;
          r.last_cpu = st->processor;
          if (e.counted) {
            ++r.cpu_samples;
            r.cpu_sampled_at = tick.load(std::memory_order_relaxed);
            if (st->processor < 0 || st->processor >= CPU_SETSIZE ||
                !CPU_ISSET(st->processor, &r.allowed))
              ++r.outside;
          }
        } else if (e.kind == kStatus) {
          auto switches = status_field(text, "nonvoluntary_ctxt_switches");
          if (!switches && !whole) {
            text = reread(e), whole = true;
            switches = status_field(text, "nonvoluntary_ctxt_switches");
          }
          if (!switches) continue;
          if (whole) sl.want[kStatus] = want_after(kStatus, text, nullptr);
          if (auto state = status_field(text, "State");
              state && !state->empty() && (state->front() == 'Z' || state->front() == 'X')) {
            thread_gone(e.slot);
            continue;
          }
          uint64_t x = 0;
          std::from_chars(switches->data(), switches->data() + switches->size(), x);
          if (!r.have_status) {
            r.have_status = true;
            r.nvcsw_first = x;
            r.status_first_ts = ts;
          }
          r.nvcsw_last = x;
          r.status_last_ts = ts;
          if (auto v = status_field(text, "Cpus_allowed_list")) {
            if (*v != r.allowed_list)
              copy_str(r.allowed_now, *v);
            else
              r.allowed_now[0] = '\0';
          }
        } else {
          auto ss = parse_schedstat(text);
          if (!ss) {
            if (!whole) {
              // Cut: a counter gained a digit. Read it whole next tick (the
              // read comes short, io-wq finishes it), and take no sample
              // until then: a read made now would be an interval late.
              sl.want[kSched] = 0;
              r.rebaseline = true;
            }
            continue;
          }
          // A schedstat that parses is whole (it ends with its newline).
          sl.want[kSched] = want_after(kSched, text, nullptr);
          if (!r.have_sched || r.rebaseline) {
            if (!r.have_sched) r.first_sched = *ss, r.first_ts = ts;
            r.have_sched = true;
            r.rebaseline = false;
            r.last_sched = *ss;
            r.last_ts = ts;
            continue;
          }
          Schedstat d{ss->run_ns - r.last_sched.run_ns, ss->wait_ns - r.last_sched.wait_ns,
                      ss->timeslices - r.last_sched.timeslices};
          r.last_sched = *ss;
          r.last_ts = ts;
          r.delay.add(d.wait_ns);
          r.delay_sum_ns += d.wait_ns;
          record_series(r, ts, d.wait_ns);
          bool ran = d.run_ns > 0 || d.timeslices > 0;
          if (ran && --r.cpu_countdown == 0) {
            r.stat_due = r.stat_counted = true;
            r.cpu_countdown = cpu_every;
          }
          csv_row(r, ts, d);
        }
      }
    }
  }

  void setup_ring() {
    if (opt.reader != ReadMethod::kUring) return;
    unsigned entries_n = 1;
    while (entries_n < 3 * slots.size() + 1) entries_n <<= 1;  // a batch and the timer
    io_uring_params params{};
    // Deferred task work: completions are posted when we next enter the ring,
    // not by waking us up once per read (kernel 6.1+; fall back without).
    // SUBMIT_ALL: a read the kernel cannot set up fails alone (its own CQE)
    // instead of ending the submission early (5.18+).
    params.flags =
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL;
    params.flags |= IORING_SETUP_CQSIZE;
    params.cq_entries = 2 * entries_n;
    int rc = io_uring_queue_init_params(entries_n, &ring, &params);
    if (rc == -EINVAL) {
      params = {};
      params.flags = IORING_SETUP_CQSIZE;
      params.cq_entries = 2 * entries_n;
      rc = io_uring_queue_init_params(entries_n, &ring, &params);
    }
    if (rc < 0)
      throw system_error(Exit::kEnvironment, "io_uring_queue_init", "", -rc,
                         "io_uring may be disabled (sysctl kernel.io_uring_disabled)");
    // io-wq workers run the procfs reads (procfs cannot read without
    // blocking); keep them on the sampler's own CPUs, not on the CPUs under
    // observation (by default they may run anywhere).
    cpu_set_t mine;
    if (sched_getaffinity(0, sizeof mine, &mine) == 0)
      io_uring_register_iowq_aff(&ring, sizeof mine, &mine);
    rc = io_uring_register_files_sparse(&ring, static_cast<unsigned>(3 * slots.size()));
    if (rc < 0) {
      io_uring_queue_exit(&ring);
      throw system_error(Exit::kEnvironment, "io_uring_register_files_sparse", "", -rc);
    }
    ring_ready = true;
  }

  void run() {
    if (ran) throw Error(Exit::kUsage, "latency sampler: run() called twice");
    ran = true;
    setup_ring();
    try {
      sample();
    } catch (...) {
      if (ring_ready) drain();
      throw;
    }
  }

  void sample() {
    scanner = std::make_unique<HostScanner>(opt.proc_root, opt.host_scan_interval,
                                            opt.host_scan_max_tasks);
    const int64_t interval = opt.interval.count();
    const int64_t rescan_ticks = std::max<int64_t>(1, opt.rescan_interval.count() / interval);
    bucket_ns = interval;
    cpu_start = process_cpu_s();
    start_ts = now_ns();
    const int64_t end = opt.duration.count() > 0 ? start_ts + opt.duration.count() : INT64_MAX;
    if (!rescan()) process_exited = true;
    scanner->start();

    // Each tick: read the batch, wait for the next tick (one io_uring_enter
    // for both), fold the batch, prepare the next.
    prepare();
    int64_t next = start_ts;
    while (!process_exited && !stopping.load(std::memory_order_relaxed)) {
      next += interval;
      int64_t now = now_ns();
      if (now > next) {  // fell behind: skip the ticks we missed, start afresh
        missed += static_cast<uint64_t>((now - next) / interval);
        next = now + interval;  // an interval between reads, not a sliver
      }
      bool last = next >= end;
      read_batch_and_wait(last ? 0 : next);
      tick.fetch_add(1, std::memory_order_relaxed);
      process();
      if (last) break;
      bool periodic = tick.load(std::memory_order_relaxed) % rescan_ticks == 0;
      if (periodic || live == 0 || rescan_due) {
        // A thread went away: look for new ones now (QEMU's worker threads
        // come and go), but read status only at the periodic rescans.
        rescan_due = false;
        if (!rescan()) process_exited = true;
        status_due |= periodic;
      }
      prepare();
    }
    end_ts = now_ns();
    cpu_end = process_cpu_s();
    scanner->stop();
    // Final status reads, so that involuntary switches cover the whole run.
    for (size_t s = 0; s < slots.size(); ++s) {
      if (!slots[s].live) continue;
      char text[4096];
      ssize_t n = pread(slots[s].fd[kStatus], text, sizeof text, 0);
      if (n <= 0) continue;
      Record& r = records[slots[s].record];
      if (auto v = status_field(std::string_view(text, static_cast<size_t>(n)),
                                "nonvoluntary_ctxt_switches")) {
        uint64_t x = 0;
        std::from_chars(v->data(), v->data() + v->size(), x);
        if (r.have_status) {
          r.nvcsw_last = x;
          r.status_last_ts = end_ts;
        }
      }
    }
    if (csv_fd >= 0) flush_csv();
  }

  Report report() const {
    Report rep;
    rep.pid = opt.pid;
    rep.vm = opt.vm;
    rep.reader = opt.reader == ReadMethod::kUring ? "io_uring" : "pread";
    rep.duration_s = (end_ts - start_ts) / 1e9;
    rep.interval_ns = opt.interval.count();
    rep.ticks = tick.load();
    rep.missed_ticks = missed;
    rep.plot_bucket_ns = bucket_ns;
    rep.host_scan_interval_ns = opt.host_scan_interval.count();
    rep.host_scans = scanner ? scanner->scans() : 0;
    if (scanner && end_ts > start_ts)
      rep.host_scan_cpu_share = scanner->cpu_ns() / static_cast<double>(end_ts - start_ts);
    rep.untracked_threads = untracked;
    rep.process_exited = process_exited;
    rep.sampler_cpu_share = rep.duration_s > 0 ? (cpu_end - cpu_start) / rep.duration_s : 0;
    rep.cpu_sample_interval_ns = static_cast<uint64_t>(opt.cpu_sample_interval.count());
    if (rep.ticks > 0) rep.reads_per_tick = static_cast<double>(reads.load()) / rep.ticks;
    rep.short_reads = short_reads.load();
    rep.rereads = rereads.load();
    // Trim the series to the points that cover the run.
    size_t used = bucket_ns > 0 ? static_cast<size_t>((end_ts - start_ts) / bucket_ns) + 1 : 0;
    used = std::min(used, kPlotPoints);
    for (const Record& r : records) {
      ThreadReport t;
      t.tid = r.tid;
      t.name = r.name;
      t.role = r.role;
      t.allowed_cpus = r.allowed_list;
      t.allowed_cpus_now = r.allowed_now;
      t.intervals = r.delay.count();
      t.delay_p50_us = r.delay.quantile(0.5) / 1000.0;
      t.delay_p99_us = r.delay.quantile(0.99) / 1000.0;
      t.delay_max_us = r.delay.max() / 1000.0;
      t.delay_mean_us = t.intervals ? r.delay_sum_ns / 1000.0 / t.intervals : 0;
      double span = (r.last_ts - r.first_ts) / 1e9;
      if (span > 0) {
        t.cpu_share = (r.last_sched.run_ns - r.first_sched.run_ns) / 1e9 / span;
        t.wait_share = (r.last_sched.wait_ns - r.first_sched.wait_ns) / 1e9 / span;
        t.timeslices_per_s = (r.last_sched.timeslices - r.first_sched.timeslices) / span;
      }
      double sspan = (r.status_last_ts - r.status_first_ts) / 1e9;
      if (r.have_status && sspan > 0)
        t.involuntary_switches_per_s = (r.nvcsw_last - r.nvcsw_first) / sspan;
      t.cpu_samples = r.cpu_samples;
      t.outside_allowed_samples = r.outside;
      t.last_cpu = r.last_cpu;
      t.exited = r.exited;
      if (scanner) t.other_tasks = scanner->tasks_on(r.allowed, r.tid, 5);
      t.delay_series_us.assign(r.series, r.series + used);
      rep.threads.push_back(std::move(t));
    }
    return rep;
  }

  // Waits for the reads still in flight when sampling stops on an error: the
  // kernel writes into `buffers` until they complete. On the sampling thread
  // (the ring's single issuer). procfs reads finish in microseconds. (The
  // timer needs nothing: the kernel copied its time at submission.)
  void drain() {
    int64_t deadline = now_ns() + 2'000'000'000;
    while (outstanding > 0 && now_ns() < deadline) {
      __kernel_timespec wait{0, 100'000'000};
      io_uring_cqe* cqe;
      int rc = io_uring_wait_cqe_timeout(&ring, &cqe, &wait);
      if (rc < 0 && rc != -ETIME && rc != -EINTR) break;
      harvest();
    }
  }

  ~Impl() {
    // Reads that never completed: leak their buffers rather than free them
    // under the kernel's feet.
    if (outstanding > 0) new std::vector<char>(std::move(buffers));
    if (ring_ready) io_uring_queue_exit(&ring);
    for (Slot& sl : slots)
      for (int fd : sl.fd)
        if (fd >= 0) close(fd);
    if (taskdir >= 0) close(taskdir);
    if (csv_fd >= 0) close(csv_fd);
  }
};

Sampler::Sampler(SamplerOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opt = std::move(options);
  if (m.opt.pid <= 0) throw Error(Exit::kUsage, "latency: pid must be positive");
  if (m.opt.interval.count() < 10'000)
    throw Error(Exit::kUsage, "latency: interval " + format_duration(m.opt.interval) +
                                  " is too short; expected at least 10us");
  if (m.opt.max_threads == 0 || m.opt.max_threads > 4096)
    throw Error(Exit::kUsage, "latency: max_threads must be 1..4096");
  std::string task_path = m.opt.proc_root + "/" + std::to_string(m.opt.pid) + "/task";
  m.taskdir = open(task_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (m.taskdir < 0)
    throw system_error(Exit::kEnvironment, "latency: open", task_path, errno,
                       "is process " + std::to_string(m.opt.pid) + " running?");
  if (m.opt.cpu_sample_interval.count() <= 0)
    throw Error(Exit::kUsage, "latency: the CPU sample interval must be positive");
  m.cpu_every = static_cast<uint32_t>(
      std::clamp<int64_t>(m.opt.cpu_sample_interval / m.opt.interval, 1, 1'000'000));
  m.slots.resize(m.opt.max_threads);
  m.max_records = 4 * m.opt.max_threads;
  m.records.reserve(m.max_records);
  m.buffers.resize(m.slots.size() * kSlotBytes);
  m.entries.resize(3 * m.slots.size());
  m.dents.resize(32768);
  if (!m.opt.csv_path.empty()) {
    m.csv_fd = open(m.opt.csv_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (m.csv_fd < 0)
      throw system_error(Exit::kUsage, "latency: cannot write --csv", m.opt.csv_path, errno);
    m.csv_buf.resize(65536);
    const char header[] =
        "time_us,tid,role,run_us,runqueue_delay_us,timeslices,cpu,outside_allowed\n";
    std::memcpy(m.csv_buf.data(), header, sizeof header - 1);
    m.csv_len = sizeof header - 1;
  }
}

Sampler::~Sampler() = default;
void Sampler::run() { impl_->run(); }
void Sampler::stop() { impl_->stopping.store(true); }
Report Sampler::report() const { return impl_->report(); }
Sampler::Stats Sampler::stats() const {
  return {impl_->tick.load(), impl_->uring_enters.load(), impl_->reads.load(),
          impl_->short_reads.load(), impl_->rereads.load()};
}

// ---------------------------------------------------------------------------

struct BackgroundSampler::Impl {
  ProfilerChoice choice;
  std::thread thread;
  std::exception_ptr error;
  std::atomic<bool> finished{false};
  explicit Impl(const SamplerOptions& o) : choice(make_profiler(o)) {}
};

BackgroundSampler::BackgroundSampler(SamplerOptions options)
    : impl_(std::make_unique<Impl>(options)) {
  Impl* m = impl_.get();
  m->thread = std::thread([m] {
    try {
      m->choice.profiler->run();
    } catch (...) {
      m->error = std::current_exception();
    }
    m->finished = true;
  });
}

BackgroundSampler::~BackgroundSampler() {
  if (impl_ && impl_->thread.joinable()) {
    impl_->choice.profiler->stop();
    impl_->thread.join();
  }
}

Report BackgroundSampler::stop() {
  impl_->choice.profiler->stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  if (impl_->error) std::rethrow_exception(impl_->error);
  Report r = impl_->choice.profiler->report();
  r.source_notice = impl_->choice.notice;
  return r;
}

uint64_t BackgroundSampler::ticks() const { return impl_->choice.profiler->ticks(); }
bool BackgroundSampler::finished() const { return impl_->finished.load(); }
const std::string& BackgroundSampler::notice() const { return impl_->choice.notice; }

void BackgroundSampler::stop_and_write(const std::string& path) { write_json_report(stop(), path); }

void write_json_report(const Report& report, const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) throw system_error(Exit::kFailed, "latency: cannot write report", path, errno);
  out << to_json(report).dump(2) << "\n";
  if (!out.flush()) throw system_error(Exit::kFailed, "latency: cannot write report", path, errno);
}

}  // namespace pl::latency
