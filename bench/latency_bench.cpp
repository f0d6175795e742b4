// Cost of one latency-sampler tick for 24 threads: io_uring against a plain
// pread(2) loop over the same files, in one run, plus the whole sampler at
// 1 kHz as a share of one core, against an empty 1 kHz loop (the cost of
// waking up 1000 times a second at all). Prints ratios; see docs/latency.md.
//
//   build/bench/latency_bench [ticks]
//
// Syscalls are counted with the raw_syscalls:sys_enter tracepoint (needs
// tracefs: mount -t tracefs nodev /sys/kernel/tracing, and root); without it
// they are reported as not measured. CPU time is the whole process's
// (getrusage RUSAGE_SELF), io_uring's io-wq workers included.
#include <fcntl.h>
#include <liburing.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/tracepoint.h"
#include "latency/bpf_source.h"
#include "latency/procfs.h"
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
class SyscallCounter : public pl::TracepointCounter {
 public:
  SyscallCounter() : TracepointCounter("raw_syscalls/sys_enter") {}
  uint64_t read_count() const { return count(); }
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

// The 24 threads' schedstat and stat, opened as the sampler opens them
// (O_NONBLOCK: io_uring may then read them inline).
struct File {
  int fd = -1;
  bool stat = false;
  unsigned want = 0;  // bytes the sampler would ask for
};

std::vector<File> open_files(pid_t pid) {
  std::vector<File> files;
  std::string dir = "/proc/" + std::to_string(pid) + "/task/";
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::string tid = e.path().filename();
    if (tid == std::to_string(pid)) continue;  // the 24 threads, not the main one
    for (const char* f : {"/schedstat", "/stat"}) {
      int fd = open((dir + tid + f).c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
      if (fd < 0) std::abort();
      files.push_back({fd, f[2] == 't', 0});
    }
  }
  return files;
}

// What the sampler asks for, from the file's whole text (sampler.cpp's
// want_after): schedstat's length; stat up to its CPU field and half its tail.
unsigned want_for(const File& f, std::string_view text) {
  if (!f.stat) return static_cast<unsigned>(text.size());
  auto st = pl::latency::parse_task_stat(text);
  if (!st) std::abort();
  return static_cast<unsigned>(pl::latency::stat_read_size(text.size(), *st));
}

bool complete(const File& f, std::string_view text) {
  return f.stat ? pl::latency::parse_task_stat(text).has_value()
                : pl::latency::parse_schedstat(text).has_value();
}

struct Cost {
  double cpu_us = 0;     // per tick
  double wall_us = 0;    // per tick
  double syscalls = -1;  // per tick; -1: not measured
  double punted = 0;     // per tick: reads that io_uring finished on io-wq (came short)
  double reread = 0;     // per tick: reads cut by a grown file, read again
};

void add(Cost& sum, const Cost& c, int rounds) {
  sum.cpu_us += c.cpu_us / rounds;
  sum.wall_us += c.wall_us / rounds;
  sum.punted += c.punted / rounds;
  sum.reread += c.reread / rounds;
  sum.syscalls = c.syscalls;
}

// The plain loop: one pread per file per tick.
Cost pread_ticks(const std::vector<File>& files, std::vector<char>& buf, int ticks) {
  SyscallCounter sc;
  double c0 = cpu_s(), w0 = wall_s();
  uint64_t s0 = sc.read_count();
  for (int t = 0; t < ticks; ++t)
    for (size_t i = 0; i < files.size(); ++i)
      if (pread(files[i].fd, &buf[i * 1024], 1024, 0) <= 0) std::abort();
  uint64_t s1 = sc.read_count();
  return {(cpu_s() - c0) / ticks * 1e6, (wall_s() - w0) / ticks * 1e6,
          sc.ok() ? static_cast<double>(s1 - s0) / ticks : -1};
}

// One io_uring submission per tick on registered files, waiting for all its
// reads (deferred task work, io-wq on our CPUs). `sized`: each read asks for
// what the file has, as the sampler does, so that it completes inline; else
// each asks for the whole 1 KiB buffer, comes short, and io_uring finishes
// it on an io-wq worker.
Cost uring_ticks(std::vector<File>& files, std::vector<char>& buf, int ticks, bool sized) {
  io_uring ring;
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(256, &ring, &p) < 0) std::abort();
  cpu_set_t mine;
  sched_getaffinity(0, sizeof mine, &mine);
  io_uring_register_iowq_aff(&ring, sizeof mine, &mine);
  std::vector<int> fds;
  for (File& f : files) {
    fds.push_back(f.fd);
    ssize_t n = pread(f.fd, buf.data(), 1024, 0);
    if (n <= 0) std::abort();
    f.want = sized ? want_for(f, std::string_view(buf.data(), static_cast<size_t>(n))) : 1024;
  }
  if (io_uring_register_files(&ring, fds.data(), static_cast<unsigned>(fds.size())) < 0)
    std::abort();
  uint64_t punted = 0, reread = 0;
  pl::TracepointCounter iowq("io_uring/io_uring_queue_async_work");
  SyscallCounter sc;
  double c0 = cpu_s(), w0 = wall_s();
  uint64_t s0 = sc.read_count();
  for (int t = 0; t < ticks; ++t) {
    for (size_t i = 0; i < files.size(); ++i) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      io_uring_prep_read(sqe, static_cast<int>(i), &buf[i * 1024], files[i].want, 0);
      sqe->flags |= IOSQE_FIXED_FILE;
      io_uring_sqe_set_data64(sqe, i);
    }
    io_uring_submit_and_wait(&ring, static_cast<unsigned>(files.size()));
    unsigned head, n = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring, head, cqe) {
      if (cqe->res <= 0) std::abort();
      File& f = files[io_uring_cqe_get_data64(cqe)];
      char* b = &buf[io_uring_cqe_get_data64(cqe) * 1024];
      std::string_view text(b, static_cast<size_t>(cqe->res));
      if (static_cast<unsigned>(cqe->res) < f.want) {
        punted += sized;
        if (sized) f.want = want_for(f, text);
      } else if (!complete(f, text)) {  // the file grew: read it whole
        ++reread;
        ssize_t r = pread(f.fd, b, 1024, 0);
        if (r <= 0) std::abort();
        f.want = want_for(f, std::string_view(b, static_cast<size_t>(r)));
      }
      ++n;
    }
    io_uring_cq_advance(&ring, n);
    if (n != files.size()) std::abort();  // submit_and_wait waited for all
  }
  uint64_t s1 = sc.read_count();
  Cost c{(cpu_s() - c0) / ticks * 1e6, (wall_s() - w0) / ticks * 1e6,
         sc.ok() ? static_cast<double>(s1 - s0) / ticks : -1};
  // Reads handed to io-wq: counted by the kernel if it lets us, else the
  // reads that came short (the reason io_uring hands them over).
  c.punted = static_cast<double>(iowq.ok() ? iowq.count()
                                 : sized   ? punted
                                           : ticks * files.size()) /
             ticks;
  c.reread = static_cast<double>(reread) / ticks;
  io_uring_queue_exit(&ring);
  return c;
}

// What one system call costs here, with next to no work in it.
double syscall_us() {
  int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
  char b[16];
  const int n = 200000;
  double c0 = cpu_s();
  for (int i = 0; i < n; ++i)
    if (pread(fd, b, sizeof b, 0) != sizeof b) std::abort();
  double us = (cpu_s() - c0) / n * 1e6;
  close(fd);
  return us;
}

// An empty loop that wakes every millisecond (clock_nanosleep, absolute):
// the least any 1 kHz sampler costs on this machine, as a share of one core.
double empty_loop_share(std::chrono::nanoseconds d) {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const long ticks = static_cast<long>(d / 1ms);
  double c0 = cpu_s(), w0 = wall_s();
  for (long i = 0; i < ticks; ++i) {
    ts.tv_nsec += 1'000'000;
    if (ts.tv_nsec >= 1'000'000'000) ts.tv_nsec -= 1'000'000'000, ++ts.tv_sec;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
  }
  return (cpu_s() - c0) / (wall_s() - w0);
}

struct SamplerCost {
  double core_share = 0;  // CPU time / wall time
  double syscalls = -1;   // per tick, of the sampling thread
  double reads = 0;       // per tick
  double enters = 0;      // io_uring_enter calls per tick
  double punted = 0;      // per tick: io_uring reads that came short (io-wq)
  double reread = 0;      // per tick: reads cut by a grown file, read again
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
  pl::TracepointCounter iowq("io_uring/io_uring_queue_async_work");
  SyscallCounter sc;
  double c0 = cpu_s(), w0 = wall_s();
  uint64_t s0 = sc.read_count();
  s.run();
  uint64_t s1 = sc.read_count();
  double cpu = cpu_s() - c0, wall = wall_s() - w0;
  auto st = s.stats();
  pl::latency::Report r = s.report();
  SamplerCost c;
  double ticks = static_cast<double>(st.ticks);
  c.core_share = cpu / wall;
  c.syscalls = sc.ok() ? static_cast<double>(s1 - s0) / ticks : -1;
  c.reads = static_cast<double>(st.reads) / ticks;
  c.enters = static_cast<double>(st.uring_enters) / ticks;
  c.punted = static_cast<double>(iowq.ok() ? iowq.count() : st.short_reads) / ticks;
  c.reread = static_cast<double>(st.rereads) / ticks;
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

// ---- 4. The BPF source: added cost per tracepoint hit --------------------
// `perf bench sched pipe -T` (two threads of one process ping-ponging over a
// pipe) on one CPU: every round trip is two wakeups, two wakings and two
// switches. Its time per op with nothing attached, then with the BPF source
// attached for another process (a non-target task: the tgid compare only),
// then targeting perf itself (both threads tracked: every hit does the
// work), and with libbpf-tools' runqlat (in-kernel histograms for all tasks).
// Per hit = added ns per op / hits per op (counted by bpf_stats).

// Forks `perf bench sched pipe` pinned to `cpu`, held before exec until
// go() so a profiler can attach to its pid first.
struct PipeBench {
  pid_t pid = -1;
  int gate[2] = {-1, -1}, out[2] = {-1, -1};
  explicit PipeBench(int loops, int cpu) {
    if (pipe(gate) != 0 || pipe(out) != 0) std::abort();
    pid = fork();
    if (pid == 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      sched_setaffinity(0, sizeof set, &set);
      char c;
      close(gate[1]);
      if (read(gate[0], &c, 1) != 1) _exit(1);
      dup2(out[1], 1);
      std::string l = std::to_string(loops);
      execlp("perf", "perf", "bench", "sched", "pipe", "-T", "-l", l.c_str(),
             static_cast<char*>(nullptr));
      _exit(127);
    }
    close(gate[0]);
    close(out[1]);
  }
  // Runs it; returns usecs/op (NaN if perf failed).
  double go() {
    (void)!write(gate[1], "x", 1);
    close(gate[1]);
    std::string text;
    char b[4096];
    ssize_t n;
    while ((n = read(out[0], b, sizeof b)) > 0) text.append(b, static_cast<size_t>(n));
    close(out[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    auto p = text.find("usecs/op");
    if (p == std::string::npos) return NAN;
    auto q = text.rfind('\n', p);
    return std::atof(text.c_str() + (q == std::string::npos ? 0 : q + 1));
  }
};

void bpf_hit_cost(int loops, int rounds) {
  std::printf(
      "\nBPF source, added cost per tracepoint hit: perf bench sched pipe -T -l %d on CPU 0\n",
      loops);
  if (std::string why = pl::latency::bpf_unavailable_reason(); !why.empty()) {
    std::printf("  skipped: %s\n", why.c_str());
    return;
  }
  bool have_runqlat = access("/usr/sbin/runqlat", X_OK) == 0;
  if (!have_runqlat) std::printf("  (no /usr/sbin/runqlat: install libbpf-tools)\n");
  std::vector<double> base, other, target, rq;
  double hits_per_op = 0;
  for (int r = 0; r < rounds; ++r) {
    base.push_back(PipeBench(loops, 0).go());
    {  // non-target: the BPF source profiles a sleeping child, perf runs untracked
      pid_t idle = fork();
      if (idle == 0) {
        pause();
        _exit(0);
      }
      pl::latency::SamplerOptions o;
      o.pid = idle;
      pl::latency::BpfSource src(o);
      std::thread t([&] { src.run(); });
      other.push_back(PipeBench(loops, 0).go());
      src.stop();
      t.join();
      kill(idle, SIGKILL);
      waitpid(idle, nullptr, 0);
    }
    {  // target: perf's own threads tracked
      PipeBench b(loops, 0);
      pl::latency::SamplerOptions o;
      o.pid = b.pid;
      pl::latency::BpfSource src(o);
      std::thread t([&] { src.run(); });
      target.push_back(b.go());
      t.join();  // ends with perf (pidfd)
      pl::latency::Report rep = src.report();
      hits_per_op = static_cast<double>(rep.bpf_events) / loops;
    }
    if (have_runqlat) {
      pid_t rql = fork();
      if (rql == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execl("/usr/sbin/runqlat", "runqlat", "60", "1", static_cast<char*>(nullptr));
        _exit(127);
      }
      std::this_thread::sleep_for(1500ms);  // loaded and attached
      rq.push_back(PipeBench(loops, 0).go());
      kill(rql, SIGINT);
      waitpid(rql, nullptr, 0);
    }
  }
  auto range = [](const std::vector<double>& v) {
    char b[64];
    if (v.empty()) return std::string("-");
    std::snprintf(b, sizeof b, "%.2f-%.2f", *std::min_element(v.begin(), v.end()),
                  *std::max_element(v.begin(), v.end()));
    return std::string(b);
  };
  auto med = [](std::vector<double> v) -> double {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  double b = med(base);
  // runqlat attaches sched_wakeup, sched_wakeup_new and sched_switch: 4 of the 6 hits per op.
  double rq_hits = hits_per_op > 2 ? hits_per_op - 2 : hits_per_op;
  std::printf("  %-40s %14s %14s\n", "", "usecs/op", "added ns/hit");
  std::printf("  %-40s %14s %14s\n", "nothing attached", range(base).c_str(), "");
  std::printf("  %-40s %14s %14.0f\n", "bpf source, perf is not its target", range(other).c_str(),
              (med(other) - b) * 1000 / hits_per_op);
  std::printf("  %-40s %14s %14.0f\n", "bpf source, perf's threads tracked", range(target).c_str(),
              (med(target) - b) * 1000 / hits_per_op);
  if (have_runqlat)
    std::printf("  %-40s %14s %14.0f\n", "runqlat (libbpf-tools), all tasks", range(rq).c_str(),
                (med(rq) - b) * 1000 / rq_hits);
  std::printf("  (%.1f tracepoint hits per op counted by bpf_stats; medians of %d rounds)\n",
              hits_per_op, rounds);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--bpf") {  // only the BPF per-hit cost
    bpf_hit_cost(argc > 2 ? std::atoi(argv[2]) : 200000, argc > 3 ? std::atoi(argv[3]) : 3);
    return 0;
  }
  int ticks = argc > 1 ? std::atoi(argv[1]) : 2000;
  pid_t child = start_child();
  std::vector<File> files = open_files(child);
  std::vector<char> buf(files.size() * 1024);
  std::printf("latency_bench: %d threads, %zu files per tick (schedstat + stat each)\n", kThreads,
              files.size());
  if (!SyscallCounter().ok())
    std::printf("  (syscalls not measured: needs root and tracefs at /sys/kernel/tracing)\n");

  // 1. One tick, every file read, back to back; rounds alternate so that
  //    all three see the same load.
  Cost pr, ur, naive;
  const int rounds = 3;
  for (int r = 0; r < rounds; ++r) {
    add(pr, pread_ticks(files, buf, ticks), rounds);
    add(ur, uring_ticks(files, buf, ticks, true), rounds);
    add(naive, uring_ticks(files, buf, ticks, false), rounds);
  }
  double sys_us = syscall_us();
  std::printf(
      "\nper tick (%d ticks x %d rounds)        syscalls   CPU us  wall us  io-wq  reread\n", ticks,
      rounds);
  auto row = [&](const char* name, const Cost& c) {
    std::printf("  %-34s %8s %8s %8s %6s %7s\n", name, num(c.syscalls).c_str(),
                num(c.cpu_us).c_str(), num(c.wall_us).c_str(), num(c.punted).c_str(),
                num(c.reread, "%.2f").c_str());
  };
  row("pread loop", pr);
  row("io_uring, reads sized (sampler)", ur);
  row("io_uring, whole-buffer reads", naive);
  std::printf(
      "  ratio pread / io_uring sized: syscalls %s, CPU %.2f, wall %.2f  (>1: io_uring "
      "cheaper)\n",
      ur.syscalls > 0 ? num(pr.syscalls / ur.syscalls, "%.0f").c_str() : "n/a",
      pr.cpu_us / ur.cpu_us, pr.wall_us / ur.wall_us);
  std::printf("  ratio pread / io_uring whole-buffer: CPU %.2f\n", pr.cpu_us / naive.cpu_us);
  double overhead = sys_us * static_cast<double>(files.size());
  std::printf(
      "  bound: a system call costs %.2f us here (pread of /dev/zero), so the pread loop spends\n"
      "  %.1f of its %.1f us entering the kernel; the rest is procfs generating the text, which\n"
      "  io_uring pays too. Best possible CPU ratio for any batching: %.2f\n",
      sys_us, overhead, pr.cpu_us, pr.cpu_us / std::max(pr.cpu_us - overhead, 1e-9));

  // 2. The whole sampler at 1 kHz (host scan off), each reader in turn, and
  //    the empty loop that only wakes up.
  const auto d = 3s;
  double floor = empty_loop_share(d);
  SamplerCost su = sampler_run(child, pl::latency::ReadMethod::kUring, d);
  SamplerCost sp = sampler_run(child, pl::latency::ReadMethod::kPread, d);
  std::printf(
      "\nsampler at 1 kHz, %llds each    %% of a core  above empty  syscalls/tick  "
      "reads/tick  io-wq/tick  reread/tick  ticks (missed)\n",
      static_cast<long long>(d.count()));
  std::printf("  %-28s %8s%%\n", "empty loop, wakes only", num(floor * 100, "%.2f").c_str());
  for (auto [name, c] : {std::pair{"io_uring", su}, std::pair{"pread", sp}})
    std::printf("  %-28s %8s%% %10s%% %14s %11s %11s %12s  %llu (%llu)\n", name,
                num(c.core_share * 100, "%.2f").c_str(),
                num((c.core_share - floor) * 100, "%.2f").c_str(), num(c.syscalls).c_str(),
                num(c.reads).c_str(), num(c.punted, "%.3f").c_str(), num(c.reread, "%.3f").c_str(),
                static_cast<unsigned long long>(c.ticks),
                static_cast<unsigned long long>(c.missed));
  std::printf(
      "  goal: under 2%% of one core. ratio pread/io_uring CPU %.2f; io_uring/empty loop "
      "%.2f\n",
      sp.core_share / su.core_share, su.core_share / floor);

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
