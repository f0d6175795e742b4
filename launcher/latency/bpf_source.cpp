// The BPF source: loads latency/bpf/latency.bpf.c through its bpftool
// skeleton, tells it the process and the threads known now (slots), and
// reads what it counts straight from mmap'ed memory: the slots array
// (BPF_F_MMAPABLE) and the ring buffer of waits over the threshold. The loop
// waits in one io_uring_enter for the ring buffer (a multishot poll), the
// process's pidfd, the window timer, stop() and a signalfd. Percentiles,
// names and cgroup paths are worked out here, at report time.
#include "latency/bpf_source.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <unordered_map>

#include "core/cpulist.h"
#include "core/error.h"
#include "latency/histogram.h"
#include "latency/procfs.h"
#include "latency/role.h"

#ifdef PL_HAVE_BPF
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <liburing.h>

#include "latency/bpf/latency_bpf.h"

// The skeleton names the program's .bss types: after the shared header.
#include "latency.skel.h"
#endif

namespace pl::latency {

namespace fs = std::filesystem;

#ifndef PL_HAVE_BPF

std::string bpf_unavailable_reason() {
  return "passlaunch was built without the BPF source (cmake found no clang, bpftool, libbpf "
         "or BTF)";
}
struct BpfSource::Impl {};
BpfSource::BpfSource(SamplerOptions) {
  throw Error(Exit::kEnvironment, "latency: " + bpf_unavailable_reason(),
              "use --source procfs, or rebuild with clang, bpftool and libbpf-dev");
}
BpfSource::~BpfSource() = default;
void BpfSource::run() {}
void BpfSource::stop() {}
Report BpfSource::report() const { return {}; }
uint64_t BpfSource::ticks() const { return 0; }

#else

static_assert(PL_HIST_BUCKETS == Histogram::kBuckets, "kernel and user histograms differ");

namespace {

int64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

int64_t thread_cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

// libbpf reports through one process-wide print callback; keep its last
// warnings for the error message instead of printing them (its one piece of
// global state, libbpf's own).
std::mutex g_libbpf_mutex;
std::string g_libbpf_log;
int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  int n = vsnprintf(buf, sizeof buf, fmt, args);
  std::lock_guard lock(g_libbpf_mutex);
  g_libbpf_log += buf;
  if (g_libbpf_log.size() > 4096) g_libbpf_log.erase(0, g_libbpf_log.size() - 4096);
  return n;
}
std::string take_libbpf_log() {
  std::lock_guard lock(g_libbpf_mutex);
  std::string s;
  std::swap(s, g_libbpf_log);
  // The last meaningful line is what a user needs.
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  auto nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

const char* kSoftirqNames[] = {"HI",       "TIMER",   "NET_TX", "NET_RX",  "BLOCK",
                               "IRQ_POLL", "TASKLET", "SCHED",  "HRTIMER", "RCU"};

std::string read_comm(int pid, int tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/comm");
  std::string s;
  std::getline(in, s);
  return s;
}

std::string cpus_of(const __u64* words) {
  std::vector<int> cpus;
  for (int c = 0; c < PL_MAX_CPUS; ++c)
    if ((words[c / 64] >> (c % 64)) & 1) cpus.push_back(c);
  return format_cpulist(cpus);
}

std::string affinity_now(int tid) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(tid, sizeof set, &set) != 0) return {};
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return format_cpulist(cpus);
}

WaitStats stats_of(const pl_hist& h, uint64_t count, uint64_t total_ns, uint64_t max_ns) {
  Histogram hist;
  for (int b = 0; b < PL_HIST_BUCKETS; ++b) hist.add_bucket(b, h.counts[b], max_ns);
  WaitStats w;
  w.count = count;
  w.total_us = total_ns / 1000.0;
  w.p50_us = hist.quantile(0.5) / 1000.0;
  w.p90_us = hist.quantile(0.9) / 1000.0;
  w.p99_us = hist.quantile(0.99) / 1000.0;
  w.max_us = max_ns / 1000.0;
  for (int b = 0; b < PL_HIST_BUCKETS; ++b)
    if (h.counts[b]) w.buckets.push_back({Histogram::upper_edge(b) / 1000.0, h.counts[b]});
  return w;
}

// cgroup v2 id (kernfs inode) -> path, from the cgroup2 mount.
std::map<uint64_t, std::string> cgroup_paths() {
  std::map<uint64_t, std::string> out;
  std::ifstream mounts("/proc/self/mounts");
  std::string dev, dir, type, rest;
  std::string root;
  while (mounts >> dev >> dir >> type && std::getline(mounts, rest))
    if (type == "cgroup2") {
      root = dir;
      break;
    }
  if (root.empty()) return out;
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
  int budget = 20000;
  for (; !ec && it != end && budget-- > 0; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    struct stat st;
    if (stat(it->path().c_str(), &st) == 0)
      out[st.st_ino] = "/" + fs::relative(it->path(), root, ec).string();
  }
  return out;
}

}  // namespace

std::string bpf_unavailable_reason() {
  if (access("/sys/kernel/btf/vmlinux", R_OK) != 0)
    return "the kernel has no BTF (/sys/kernel/btf/vmlinux)";
  return {};
}

struct BpfSource::Impl {
  SamplerOptions opt;
  latency_bpf* skel = nullptr;
  pl_slot* slots = nullptr;
  size_t slots_bytes = 0;
  uint32_t nslots = 0;
  int stats_fd = -1;
  ring_buffer* rb = nullptr;
  io_uring ring{};
  bool ring_ready = false;
  int pidfd = -1, timerfd = -1, stopfd = -1, sigfd = -1;

  struct SlotInfo {
    bool known = false;
    std::string name, role, allowed;
    std::vector<float> series;  // the longest wait per plot point, µs; NaN before it appeared
    float acc = NAN;
    // Previous counters, for the CSV deltas.
    uint64_t waits = 0, wait_ns = 0, run_ns = 0, noise_ns = 0, migrations = 0;
  };
  std::vector<SlotInfo> info;
  static constexpr size_t kPlotPoints = 720;
  uint64_t windows_per_point = 1;
  std::atomic<uint64_t> windows{0};
  std::vector<WaitEvent> events;
  uint64_t events_dropped = 0;
  std::unordered_map<int, std::string> comms;  // blocker tid -> comm, for events
  int64_t start_ns = 0, end_ns = 0;
  int64_t cpu_start = 0, cpu_end = 0;
  uint64_t prog_ns_start = 0, prog_cnt_start = 0, prog_ns_end = 0, prog_cnt_end = 0;
  bool process_exited = false;
  std::ofstream csv;

  ~Impl() {
    if (ring_ready) io_uring_queue_exit(&ring);
    if (rb) ring_buffer__free(rb);
    if (slots) munmap(slots, slots_bytes);
    if (skel) latency_bpf__destroy(skel);
    for (int fd : {stats_fd, pidfd, timerfd, stopfd, sigfd})
      if (fd >= 0) close(fd);
  }

  void load() {
    libbpf_set_print(libbpf_print);
    skel = latency_bpf__open();
    if (!skel)
      throw Error(Exit::kEnvironment,
                  "latency: cannot open the BPF programs: " + take_libbpf_log());
    nslots = static_cast<uint32_t>(std::min<size_t>(opt.max_threads, PL_MAX_SLOTS));
    skel->rodata->target_tgid = static_cast<uint32_t>(opt.pid);
    skel->rodata->threshold_ns = static_cast<uint64_t>(opt.threshold.count());
    skel->rodata->max_slots = nslots;
    bpf_map__set_max_entries(skel->maps.slots, nslots);
    if (int rc = latency_bpf__load(skel); rc != 0) {
      std::string why = take_libbpf_log();
      throw Error(Exit::kEnvironment,
                  "latency: the kernel refused the BPF programs: " + std::string(strerror(-rc)) +
                      (why.empty() ? "" : " (" + why + ")"),
                  "run as root (CAP_BPF and CAP_PERFMON), or use --source procfs");
    }
    long page = sysconf(_SC_PAGESIZE);
    slots_bytes = (sizeof(pl_slot) * nslots + page - 1) / page * page;
    void* p = mmap(nullptr, slots_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                   bpf_map__fd(skel->maps.slots), 0);
    if (p == MAP_FAILED)
      throw system_error(Exit::kEnvironment, "latency: mmap", "the BPF slots map", errno);
    slots = static_cast<pl_slot*>(p);
    info.resize(nslots);
  }

  // The threads there now get the first slots, before the programs attach;
  // the kernel gives later ones the next (next_slot).
  void register_threads() {
    std::string dir = opt.proc_root + "/" + std::to_string(opt.pid) + "/task";
    std::error_code ec;
    std::vector<int> tids;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      int tid = std::atoi(e.path().filename().c_str());
      if (tid > 0) tids.push_back(tid);
    }
    if (ec)
      throw system_error(Exit::kEnvironment, "latency: open", dir, ec.value(),
                         "is process " + std::to_string(opt.pid) + " running?");
    std::sort(tids.begin(), tids.end());
    uint32_t n = 0;
    for (int tid : tids) {
      if (n >= nslots) break;
      pl_slot& s = slots[n];
      std::memset(&s, 0, sizeof s);
      s.tid = static_cast<uint32_t>(tid);
      s.run_cpu = -1;
      s.wait_cpu = -1;
      cpu_set_t set;
      CPU_ZERO(&set);
      if (sched_getaffinity(tid, sizeof set, &set) != 0) continue;  // gone already
      for (int c = 0; c < PL_MAX_CPUS && c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) s.allowed[c / 64] |= uint64_t{1} << (c % 64);
      s.in_use = 1;
      uint32_t key = s.tid, val = n;
      if (bpf_map_update_elem(bpf_map__fd(skel->maps.tids), &key, &val, BPF_ANY) != 0)
        throw system_error(Exit::kEnvironment, "latency: bpf_map_update_elem", "tids", errno);
      ++n;
    }
    skel->bss->next_slot = n;
  }

  static int on_event(void* ctx, void* data, size_t size) {
    auto* m = static_cast<Impl*>(ctx);
    if (size < sizeof(pl_event)) return 0;
    const auto* e = static_cast<const pl_event*>(data);
    if (m->events.size() >= Report::kMaxEvents) {
      ++m->events_dropped;
      return 0;
    }
    WaitEvent w;
    w.at_s = (static_cast<int64_t>(e->ts) - m->start_ns) / 1e9;
    w.end_ns = static_cast<int64_t>(e->ts);
    w.tid = static_cast<int>(e->tid);
    w.kind = e->kind == PL_WAIT_WAKEUP ? "wakeup" : "preempt";
    w.cpu = e->cpu;
    w.wait_us = e->wait_ns / 1000.0;
    w.waking_us = e->waking_ns / 1000.0;
    w.top_us = e->top_ns / 1000.0;
    Blocker b;
    b.kind = kind_name(e->top_kind);
    b.id = static_cast<int>(e->top_id);
    if (e->top_kind == PL_BLK_TASK) {  // named at once (it may go), once per task
      auto [it, fresh] = m->comms.try_emplace(b.id);
      if (fresh && m->comms.size() < 4096) it->second = read_comm(b.id, b.id);
      b.name = it->second;
    }
    if (e->top_kind == PL_BLK_SOFTIRQ && e->top_id < std::size(kSoftirqNames))
      b.name = kSoftirqNames[e->top_id];
    w.top_blocker = e->top_kind ? blocker_label(b) : "";
    m->events.push_back(std::move(w));
    return 0;
  }

  static std::string kind_name(unsigned kind) {
    switch (kind) {
      case PL_BLK_TASK:
        return "task";
      case PL_BLK_IRQ:
        return "irq";
      case PL_BLK_SOFTIRQ:
        return "softirq";
      case PL_BLK_IDLE:
        return "idle";
      case PL_BLK_LOCAL_TIMER:
        return "local_timer";
    }
    return "unknown";
  }

  void prog_stats(uint64_t& ns, uint64_t& cnt) const {
    ns = cnt = 0;
    bpf_program* prog;
    bpf_object__for_each_program(prog, skel->obj) {
      bpf_prog_info pi{};
      uint32_t len = sizeof pi;
      if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &pi, &len) == 0) {
        ns += pi.run_time_ns;
        cnt += pi.run_cnt;
      }
    }
  }

  void attach() {
    // bpf_stats: the programs' own run time, for the report's cost line.
    stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
    rb = ring_buffer__new(bpf_map__fd(skel->maps.events), on_event, this, nullptr);
    if (!rb) throw system_error(Exit::kEnvironment, "latency: ring_buffer__new", "events", errno);
    if (int rc = latency_bpf__attach(skel); rc != 0)
      throw Error(Exit::kEnvironment,
                  "latency: cannot attach the BPF programs: " + std::string(strerror(-rc)) + " (" +
                      take_libbpf_log() + ")",
                  "use --source procfs");
    start_ns = mono_ns();
    prog_stats(prog_ns_start, prog_cnt_start);
  }

  void open_fds() {
    pidfd = static_cast<int>(syscall(SYS_pidfd_open, opt.pid, 0));
    if (pidfd < 0)
      throw system_error(Exit::kEnvironment, "latency: pidfd_open",
                         "pid " + std::to_string(opt.pid), errno, "is the process running?");
    timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    stopfd = eventfd(0, EFD_CLOEXEC);
    if (timerfd < 0 || stopfd < 0)
      throw system_error(Exit::kEnvironment, "latency: timerfd/eventfd", "", errno);
    if (opt.stop_on_signals) {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGINT);
      sigaddset(&set, SIGTERM);
      sigfd = signalfd(-1, &set, SFD_CLOEXEC);
      if (sigfd < 0) throw system_error(Exit::kEnvironment, "latency: signalfd", "", errno);
    }
    if (int rc = io_uring_queue_init(8, &ring, 0); rc < 0)
      throw system_error(Exit::kEnvironment, "latency: io_uring_queue_init", "", -rc);
    ring_ready = true;
    if (!opt.csv_path.empty()) {
      csv.open(opt.csv_path, std::ios::trunc);
      if (!csv)
        throw system_error(Exit::kUsage, "latency: cannot write --csv", opt.csv_path, errno);
      csv << "time_s,tid,role,max_wait_us,waits,wait_us,run_us,noise_us,migrations\n";
    }
  }

  // A slot the kernel filled since the last window: name it now, while the
  // thread is there.
  void know(uint32_t i) {
    SlotInfo& si = info[i];
    si.known = true;
    int tid = static_cast<int>(slots[i].tid);
    si.name = read_comm(opt.pid, tid);
    auto r = opt.roles.find(tid);
    si.role = r != opt.roles.end() ? r->second : to_string(classify_thread(si.name));
    si.allowed = cpus_of(slots[i].allowed);
    // Points before it appeared are gaps.
    size_t points = windows.load() / windows_per_point;
    for (SlotInfo& other : info)
      if (&other != &si && other.known) points = std::max(points, other.series.size());
    si.series.assign(points, NAN);
  }

  // One report window: each thread's longest wait in it (reset here), CSV rows.
  void window() {
    uint64_t w = windows.fetch_add(1) + 1;
    double t = (mono_ns() - start_ns) / 1e9;
    uint32_t used = std::min(skel->bss->next_slot, nslots);
    for (uint32_t i = 0; i < used; ++i) {
      pl_slot& s = slots[i];
      if (!__atomic_load_n(&s.in_use, __ATOMIC_ACQUIRE)) continue;
      SlotInfo& si = info[i];
      if (!si.known) know(i);
      uint64_t max = __atomic_exchange_n(&s.window_max_ns, 0, __ATOMIC_RELAXED);
      float us = static_cast<float>(max / 1000.0);
      si.acc = std::isnan(si.acc) ? us : std::max(si.acc, us);
      if (csv.is_open()) {
        uint64_t waits = s.wakeups + s.preempts, wait_ns = s.wakeup_ns + s.preempt_ns;
        char row[256];
        snprintf(row, sizeof row, "%.3f,%u,%s,%.1f,%llu,%.1f,%.1f,%.1f,%llu\n", t, s.tid,
                 si.role.c_str(), max / 1000.0, static_cast<unsigned long long>(waits - si.waits),
                 (wait_ns - si.wait_ns) / 1000.0, (s.run_ns - si.run_ns) / 1000.0,
                 (s.noise_ns - si.noise_ns) / 1000.0,
                 static_cast<unsigned long long>(s.migrations - si.migrations));
        csv << row;
        si.waits = waits;
        si.wait_ns = wait_ns;
        si.run_ns = s.run_ns;
        si.noise_ns = s.noise_ns;
        si.migrations = s.migrations;
      }
    }
    if (w % windows_per_point == 0) {
      for (SlotInfo& si : info) {
        if (!si.known) continue;
        si.series.push_back(si.acc);
        si.acc = NAN;
      }
      size_t longest = 0;
      for (SlotInfo& si : info) longest = std::max(longest, si.series.size());
      if (longest >= kPlotPoints) {  // fixed memory for a VM's whole life: halve the resolution
        for (SlotInfo& si : info) {
          if (!si.known) continue;
          std::vector<float> half;
          for (size_t k = 0; k + 1 < si.series.size(); k += 2) {
            float a = si.series[k], b = si.series[k + 1];
            half.push_back(std::isnan(a) ? b : std::isnan(b) ? a : std::max(a, b));
          }
          si.series = std::move(half);
        }
        windows_per_point *= 2;
      }
    }
  }

  void arm_read(int fd, uint64_t tag, void* buf, unsigned len) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_read(sqe, fd, buf, len, 0);
    io_uring_sqe_set_data64(sqe, tag);
  }

  void run() {
    enum : uint64_t { kRing = 1, kPid, kTimer, kStop, kSignal };
    uint64_t timer_buf = 0, stop_buf = 0;
    signalfd_siginfo sig_buf{};
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_poll_multishot(sqe, bpf_map__fd(skel->maps.events), POLLIN);
    io_uring_sqe_set_data64(sqe, kRing);
    sqe = io_uring_get_sqe(&ring);
    io_uring_prep_poll_add(sqe, pidfd, POLLIN);
    io_uring_sqe_set_data64(sqe, kPid);
    arm_read(timerfd, kTimer, &timer_buf, sizeof timer_buf);
    arm_read(stopfd, kStop, &stop_buf, sizeof stop_buf);
    if (sigfd >= 0) arm_read(sigfd, kSignal, &sig_buf, sizeof sig_buf);

    int64_t window_ns = std::max<int64_t>(opt.window.count(), 1'000'000);
    itimerspec its{};
    its.it_interval.tv_sec = window_ns / 1'000'000'000;
    its.it_interval.tv_nsec = window_ns % 1'000'000'000;
    its.it_value = its.it_interval;
    timerfd_settime(timerfd, 0, &its, nullptr);
    int64_t end = opt.duration.count() > 0 ? start_ns + opt.duration.count() : INT64_MAX;
    int64_t next_second = start_ns + 1'000'000'000;
    cpu_start = thread_cpu_ns();
    bool done = false;
    while (!done) {
      int rc = io_uring_submit_and_wait(&ring, 1);
      if (rc < 0 && rc != -EINTR)
        throw system_error(Exit::kEnvironment, "latency: io_uring_enter", "", -rc);
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      bool ring_ready_now = false, tick = false;
      io_uring_for_each_cqe(&ring, head, cqe) {
        ++seen;
        switch (io_uring_cqe_get_data64(cqe)) {
          case kRing:
            ring_ready_now = true;
            if (!(cqe->flags & IORING_CQE_F_MORE)) {  // the multishot poll ended: re-arm
              io_uring_sqe* s = io_uring_get_sqe(&ring);
              io_uring_prep_poll_multishot(s, bpf_map__fd(skel->maps.events), POLLIN);
              io_uring_sqe_set_data64(s, kRing);
            }
            break;
          case kPid:
            process_exited = true;
            done = true;
            break;
          case kTimer:
            tick = true;
            arm_read(timerfd, kTimer, &timer_buf, sizeof timer_buf);
            break;
          case kStop:
          case kSignal:
            done = true;
            break;
        }
      }
      io_uring_cq_advance(&ring, seen);
      if (ring_ready_now || tick || done) ring_buffer__consume(rb);
      if (tick) {
        window();
        int64_t now = mono_ns();
        if (now >= end) done = true;
        if (opt.on_second && now >= next_second) {
          next_second += 1'000'000'000;
          cpu_end = thread_cpu_ns();
          end_ns = now;
          opt.on_second(build_report());
        }
      }
    }
    ring_buffer__consume(rb);
    window();
    end_ns = mono_ns();
    cpu_end = thread_cpu_ns();
    prog_stats(prog_ns_end, prog_cnt_end);
    if (csv.is_open()) csv.flush();
  }

  Report build_report() const {
    Report r;
    r.source = "bpf";
    r.pid = opt.pid;
    r.vm = opt.vm;
    r.reader = "bpf";
    int64_t end = end_ns ? end_ns : mono_ns();
    r.duration_s = (end - start_ns) / 1e9;
    r.interval_ns = std::max<int64_t>(opt.window.count(), 1'000'000);
    r.ticks = windows.load();
    r.plot_bucket_ns = r.interval_ns * static_cast<int64_t>(windows_per_point);
    r.process_exited = process_exited;
    r.threshold_us = opt.threshold.count() / 1000.0;
    r.events = events;
    r.events_dropped = events_dropped + skel->bss->events_lost;
    r.slots_full = skel->bss->slots_full;
    r.untracked_threads = skel->bss->slots_full;
    if (r.duration_s > 0) r.sampler_cpu_share = (cpu_end - cpu_start) / 1e9 / r.duration_s;
    uint64_t ns = prog_ns_end, cnt = prog_cnt_end;
    if (!end_ns) prog_stats(ns, cnt);
    r.bpf_events = cnt - prog_cnt_start;
    if (r.bpf_events) r.bpf_ns_per_event = static_cast<double>(ns - prog_ns_start) / r.bpf_events;
    if (r.duration_s > 0) r.bpf_cpu_share = (ns - prog_ns_start) / 1e9 / r.duration_s;

    // Blame, keyed by slot.
    std::map<uint32_t, std::vector<Blocker> > blame, noise;
    std::map<uint64_t, std::string> cgroups;
    bool cgroups_read = false;
    int fd = bpf_map__fd(skel->maps.blame);
    pl_blame_key key{}, next{};
    void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      key = next;
      prev = &key;
      pl_blame_val v;
      if (bpf_map_lookup_elem(fd, &key, &v) != 0) continue;
      Blocker b;
      b.kind = kind_name(key.kind);
      b.id = static_cast<int>(key.id);
      b.time_us = v.ns / 1000.0;
      b.count = v.count;
      b.name.assign(v.comm, strnlen(v.comm, sizeof v.comm));
      if (key.kind == PL_BLK_TASK) {
        b.pid = static_cast<int>(v.tgid);
        if (v.cgroup_id > 1) {
          if (!cgroups_read) {
            cgroups = cgroup_paths();
            cgroups_read = true;
          }
          auto c = cgroups.find(v.cgroup_id);
          if (c != cgroups.end() && c->second != "/.") b.cgroup = c->second;
        }
      } else if (key.kind == PL_BLK_SOFTIRQ && key.id < std::size(kSoftirqNames)) {
        b.name = kSoftirqNames[key.id];
      } else if (key.kind == PL_BLK_LOCAL_TIMER) {
        b.name = "LOC";
      }
      (key.flags & PL_BLAME_NOISE ? noise : blame)[key.slot].push_back(std::move(b));
    }
    auto by_time = [](const Blocker& a, const Blocker& b) { return a.time_us > b.time_us; };

    uint32_t used = std::min(skel->bss->next_slot, nslots);
    for (uint32_t i = 0; i < used; ++i) {
      const pl_slot& s = slots[i];
      if (!s.in_use) continue;
      const SlotInfo& si = info[i];
      ThreadReport t;
      t.tid = static_cast<int>(s.tid);
      t.name = si.known ? si.name : read_comm(opt.pid, t.tid);
      auto role = opt.roles.find(t.tid);
      t.role = si.known                  ? si.role
               : role != opt.roles.end() ? role->second
                                         : to_string(classify_thread(t.name));
      t.allowed_cpus = cpus_of(s.allowed);
      std::string now = affinity_now(t.tid);
      t.exited =
          access(("/proc/" + std::to_string(opt.pid) + "/task/" + std::to_string(t.tid)).c_str(),
                 F_OK) != 0;
      if (!t.exited && !now.empty() && now != t.allowed_cpus) t.allowed_cpus_now = now;
      t.wakeup = stats_of(s.wakeup, s.wakeups, s.wakeup_ns, s.wakeup_max_ns);
      t.preempt = stats_of(s.preempt, s.preempts, s.preempt_ns, s.preempt_max_ns);
      t.waking = stats_of(s.waking, s.wakings, s.waking_ns, s.waking_max_ns);
      Histogram all;
      for (int b = 0; b < PL_HIST_BUCKETS; ++b) {
        all.add_bucket(b, s.wakeup.counts[b], s.wakeup_max_ns);
        all.add_bucket(b, s.preempt.counts[b], s.preempt_max_ns);
      }
      t.intervals = all.count();
      t.delay_p50_us = all.quantile(0.5) / 1000.0;
      t.delay_p99_us = all.quantile(0.99) / 1000.0;
      t.delay_max_us = all.max() / 1000.0;
      t.delay_mean_us = t.intervals ? (s.wakeup_ns + s.preempt_ns) / 1000.0 / t.intervals : 0;
      if (r.duration_s > 0) {
        t.cpu_share = s.run_ns / 1e9 / r.duration_s;
        t.wait_share = (s.wakeup_ns + s.preempt_ns) / 1e9 / r.duration_s;
        t.timeslices_per_s = s.switch_ins / r.duration_s;
        t.involuntary_switches_per_s = s.preempts / r.duration_s;
      }
      t.cpu_samples = s.switch_ins;
      t.outside_allowed_samples = s.outside_switch_ins;
      t.last_cpu = s.run_cpu >= 0 ? s.run_cpu : static_cast<int>(s.worst_cpu);
      t.worst_wait_us = s.worst_ns / 1000.0;
      if (s.worst_ns) {
        t.worst_wait_at_s = (static_cast<int64_t>(s.worst_ts) - start_ns) / 1e9;
        t.worst_wait_kind = s.worst_kind == PL_WAIT_WAKEUP ? "wakeup" : "preempt";
        t.worst_wait_cpu = static_cast<int>(s.worst_cpu);
      }
      t.migrations = s.migrations;
      t.outside_us = s.outside_ns / 1000.0;
      t.noise_us = s.noise_ns / 1000.0;
      t.noise_count = s.noise_count;
      t.blame_lost_us = s.blame_lost_ns / 1000.0;
      t.blockers = std::move(blame[i]);
      t.noise = std::move(noise[i]);
      std::sort(t.blockers.begin(), t.blockers.end(), by_time);
      std::sort(t.noise.begin(), t.noise.end(), by_time);
      t.delay_series_us = si.series;
      r.threads.push_back(std::move(t));
    }
    return r;
  }
};

BpfSource::BpfSource(SamplerOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opt = std::move(options);
  if (m.opt.pid <= 0) throw Error(Exit::kUsage, "latency: pid must be positive");
  if (m.opt.max_threads == 0 || m.opt.max_threads > 4096)
    throw Error(Exit::kUsage, "latency: max_threads must be 1..4096");
  if (std::string why = bpf_unavailable_reason(); !why.empty())
    throw Error(Exit::kEnvironment, "latency: " + why, "use --source procfs");
  if (kill(m.opt.pid, 0) != 0 && errno == ESRCH)
    throw Error(Exit::kEnvironment,
                "latency: process " + std::to_string(m.opt.pid) + " does not exist");
  m.open_fds();
  m.load();
  m.register_threads();
  m.attach();
}

BpfSource::~BpfSource() = default;
void BpfSource::run() { impl_->run(); }
void BpfSource::stop() {
  uint64_t one = 1;
  if (impl_->stopfd >= 0) (void)!write(impl_->stopfd, &one, sizeof one);
}
Report BpfSource::report() const { return impl_->build_report(); }
uint64_t BpfSource::ticks() const { return impl_->windows.load(); }

#endif

}  // namespace pl::latency
