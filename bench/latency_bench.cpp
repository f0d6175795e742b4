// Cost of one latency-sampler tick for 24 threads: io_uring against a plain
// pread(2) loop over the same files, in one run, plus the whole sampler at
// 1 kHz as a share of one core. Prints ratios; see docs/latency.md.
//
//   build/bench/latency_bench [ticks]
//
// Syscalls are counted with the raw_syscalls:sys_enter tracepoint (needs
// tracefs: mount -t tracefs nodev /sys/kernel/tracing, and root); without it
// they are reported as not measured. CPU time is the whole process's
// (getrusage RUSAGE_SELF), which includes io_uring's io-wq workers: procfs
// files cannot be read without blocking, so io_uring hands each read to them.
#include <fcntl.h>
#include <liburing.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "latency/sampler.h"

namespace {

using namespace std::chrono_literals;
constexpr int kThreads = 24;

double cpu_s() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double wall_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Counts the calling thread's system calls, if the kernel lets us.
class SyscallCounter {
 public:
  SyscallCounter() {
    int id = -1;
    for (const char* p : {"/sys/kernel/tracing/events/raw_syscalls/sys_enter/id",
                          "/sys/kernel/debug/tracing/events/raw_syscalls/sys_enter/id"}) {
      std::ifstream in(p);
      if (in >> id) break;
    }
    if (id < 0) return;
    perf_event_attr attr{};
    attr.type = PERF_TYPE_TRACEPOINT;
    attr.size = sizeof attr;
    attr.config = static_cast<uint64_t>(id);
    fd_ = static_cast<int>(syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC));
  }
  ~SyscallCounter() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  uint64_t read_count() const {
    uint64_t n = 0;
    if (fd_ >= 0 && read(fd_, &n, sizeof n) != sizeof n) n = 0;
    return n;
  }

 private:
  int fd_ = -1;
};

// A child process with 24 threads that each wake up every millisecond, as
// busy vCPU and I/O threads do: every tick has something new to read.
pid_t start_child() {
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i)
      threads.emplace_back([] {
        for (;;) std::this_thread::sleep_for(1ms);
      });
    pause();
    _exit(0);
  }
  // Wait until all threads exist.
  for (;;) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    int n = 0;
    while (std::getline(in, line))
      if (line.rfind("Threads:", 0) == 0) n = std::atoi(line.c_str() + 8);
    if (n == kThreads + 1) break;
    std::this_thread::sleep_for(1ms);
  }
  return pid;
}

std::vector<int> open_files(pid_t pid) {
  std::vector<int> fds;
  std::string dir = "/proc/" + std::to_string(pid) + "/task/";
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::string tid = e.path().filename();
    if (tid == std::to_string(pid)) continue;  // the 24 threads, not the main one
    for (const char* f : {"/schedstat", "/stat"})
      fds.push_back(open((dir + tid + f).c_str(), O_RDONLY | O_CLOEXEC));
  }
  return fds;
}

struct Cost {
  double cpu_us = 0;     // per tick
  double wall_us = 0;    // per tick
  double syscalls = -1;  // per tick; -1: not measured
};

// The plain loop: one pread per file per tick.
Cost pread_ticks(const std::vector<int>& fds, std::vector<char>& buf, int ticks) {
  SyscallCounter sc;
  double c0 = cpu_s(), w0 = wall_s();
  uint64_t s0 = sc.read_count();
  for (int t = 0; t < ticks; ++t)
    for (size_t i = 0; i < fds.size(); ++i)
      if (pread(fds[i], &buf[i * 1024], 1024, 0) <= 0) std::abort();
  uint64_t s1 = sc.read_count();
  return {(cpu_s() - c0) / ticks * 1e6, (wall_s() - w0) / ticks * 1e6,
          sc.ok() ? static_cast<double>(s1 - s0) / ticks : -1};
}

// io_uring as the sampler sets it up: registered files, deferred task work,
// io-wq on our CPU; one submission per tick, waiting for all its reads.
Cost uring_ticks(const std::vector<int>& fds, std::vector<char>& buf, int ticks) {
  io_uring ring;
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(256, &ring, &p) < 0) std::abort();
  cpu_set_t mine;
  sched_getaffinity(0, sizeof mine, &mine);
  io_uring_register_iowq_aff(&ring, sizeof mine, &mine);
  if (io_uring_register_files(&ring, fds.data(), static_cast<unsigned>(fds.size())) < 0)
    std::abort();
  SyscallCounter sc;
  double c0 = cpu_s(), w0 = wall_s();
  uint64_t s0 = sc.read_count();
  for (int t = 0; t < ticks; ++t) {
    for (size_t i = 0; i < fds.size(); ++i) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      io_uring_prep_read(sqe, static_cast<int>(i), &buf[i * 1024], 1024, 0);
      sqe->flags |= IOSQE_FIXED_FILE;
    }
    io_uring_submit_and_wait(&ring, static_cast<unsigned>(fds.size()));
    unsigned head, n = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring, head, cqe) {
      if (cqe->res <= 0) std::abort();
      ++n;
    }
    io_uring_cq_advance(&ring, n);
    if (n != fds.size()) std::abort();  // submit_and_wait waited for all
  }
  uint64_t s1 = sc.read_count();
  Cost c{(cpu_s() - c0) / ticks * 1e6, (wall_s() - w0) / ticks * 1e6,
         sc.ok() ? static_cast<double>(s1 - s0) / ticks : -1};
  io_uring_queue_exit(&ring);
  return c;
}

struct SamplerCost {
  double core_share = 0;  // CPU time / wall time
  double syscalls = -1;   // per tick, of the sampling thread
  double reads = 0;       // per tick
  double enters = 0;      // io_uring_enter calls per tick
  double scan_share = 0;  // host scans' CPU / wall
  uint64_t scans = 0;
  uint64_t ticks = 0, missed = 0;
};

SamplerCost sampler_run(pid_t pid, pl::latency::ReadMethod reader, std::chrono::nanoseconds d,
                        std::chrono::nanoseconds host_scan = 0ns) {
  pl::latency::SamplerOptions o;
  o.pid = pid;
  o.interval = 1ms;
  o.duration = d;
  o.reader = reader;
  o.host_scan_interval = host_scan;
  pl::latency::Sampler s(o);
  SyscallCounter sc;
  double c0 = cpu_s(), w0 = wall_s();
  uint64_t s0 = sc.read_count();
  s.run();
  uint64_t s1 = sc.read_count();
  double cpu = cpu_s() - c0, wall = wall_s() - w0;
  auto st = s.stats();
  pl::latency::Report r = s.report();
  SamplerCost c;
  c.core_share = cpu / wall;
  c.syscalls = sc.ok() ? static_cast<double>(s1 - s0) / st.ticks : -1;
  c.reads = static_cast<double>(st.reads) / st.ticks;
  c.enters = static_cast<double>(st.uring_enters) / st.ticks;
  c.scan_share = r.host_scan_cpu_share;
  c.scans = r.host_scans;
  c.ticks = st.ticks;
  c.missed = r.missed_ticks;
  return c;
}

std::string num(double v, const char* fmt = "%.1f") {
  if (v < 0) return "n/a";
  char b[32];
  std::snprintf(b, sizeof b, fmt, v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  int ticks = argc > 1 ? std::atoi(argv[1]) : 2000;
  pid_t child = start_child();
  std::vector<int> fds = open_files(child);
  std::vector<char> buf(fds.size() * 1024);
  std::printf("latency_bench: %d threads, %zu files per tick (schedstat + stat each)\n", kThreads,
              fds.size());
  if (!SyscallCounter().ok())
    std::printf("  (syscalls not measured: needs root and tracefs at /sys/kernel/tracing)\n");

  // 1. One tick, back to back, alternating rounds so both see the same load.
  Cost pr, ur;
  const int rounds = 3;
  for (int r = 0; r < rounds; ++r) {
    Cost a = pread_ticks(fds, buf, ticks), b = uring_ticks(fds, buf, ticks);
    pr.cpu_us += a.cpu_us / rounds, pr.wall_us += a.wall_us / rounds;
    ur.cpu_us += b.cpu_us / rounds, ur.wall_us += b.wall_us / rounds;
    pr.syscalls = a.syscalls, ur.syscalls = b.syscalls;
  }
  std::printf("\nper tick (%d ticks x %d rounds)   syscalls   CPU us   wall us\n", ticks, rounds);
  std::printf("  pread loop                    %8s %8s %9s\n", num(pr.syscalls).c_str(),
              num(pr.cpu_us).c_str(), num(pr.wall_us).c_str());
  std::printf("  io_uring, one submission      %8s %8s %9s\n", num(ur.syscalls).c_str(),
              num(ur.cpu_us).c_str(), num(ur.wall_us).c_str());
  std::printf("  ratio pread/io_uring          %8s %8s %9s   (>1: io_uring cheaper)\n",
              ur.syscalls > 0 ? num(pr.syscalls / ur.syscalls).c_str() : "n/a",
              num(pr.cpu_us / ur.cpu_us, "%.2f").c_str(),
              num(pr.wall_us / ur.wall_us, "%.2f").c_str());

  // 2. The whole sampler at 1 kHz (host scan off), each reader in turn.
  const auto d = 3s;
  SamplerCost su = sampler_run(child, pl::latency::ReadMethod::kUring, d);
  SamplerCost sp = sampler_run(child, pl::latency::ReadMethod::kPread, d);
  std::printf(
      "\nsampler at 1 kHz, %llds each  %% of a core  syscalls/tick  uring_enter/tick  "
      "reads/tick  ticks (missed)\n",
      static_cast<long long>(d.count()));
  for (auto [name, c] : {std::pair{"io_uring", su}, std::pair{"pread", sp}})
    std::printf("  %-26s %8s%% %14s %17s %11s  %llu (%llu)\n", name,
                num(c.core_share * 100, "%.2f").c_str(), num(c.syscalls).c_str(),
                num(c.enters).c_str(), num(c.reads).c_str(),
                static_cast<unsigned long long>(c.ticks),
                static_cast<unsigned long long>(c.missed));
  std::printf("  goal: under 2%% of one core; ratio pread/io_uring CPU %.2f\n",
              sp.core_share / su.core_share);

  // 3. What the host scan costs, every 200 ms (the default is every 1 s).
  SamplerCost sh = sampler_run(child, pl::latency::ReadMethod::kUring, d, 200ms);
  size_t tasks = 0;
  for (const auto& p : std::filesystem::directory_iterator("/proc")) {
    std::string name = p.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(p.path() / "task", ec);
         !ec && it != std::filesystem::directory_iterator{}; ++it)
      ++tasks;
  }
  std::printf("\nhost scan every 200 ms: %.2f%% of a core (%.2f ms CPU per scan of %zu tasks)\n",
              sh.scan_share * 100, sh.scans ? sh.scan_share * d.count() * 1e3 / sh.scans : 0.0,
              tasks);

  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  return 0;
}
