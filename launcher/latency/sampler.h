// The pinned-thread latency sampler: every interval it reads, for each thread
// of one process, /proc/PID/task/TID/schedstat (run time, run-queue wait,
// timeslices) and, after every Nth interval a thread ran, .../stat (the CPU it
// last ran on).
//
// Each tick's reads go to the kernel in ONE io_uring submission, on file
// descriptors registered once (a sparse fixed-file table: a thread that appears
// fills a slot, one that exits frees it), into buffers allocated up front: the
// tick loop allocates nothing. A slower cadence (rescan_interval) re-lists the
// threads and reads .../status (involuntary switches, current affinity); a
// separate thread scans /proc/*/task/*/stat (host_scan_interval) to see which
// other tasks ran on the CPUs. See docs/latency.md.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "latency/report.h"

namespace pl::latency {

using namespace std::chrono_literals;

/// How a tick's reads reach the kernel: one io_uring submission, or one
/// pread(2) per file (the baseline the benchmark compares against).
enum class ReadMethod { kUring, kPread };

/// Where the numbers come from (docs/latency.md). kAuto: BPF if it can run
/// here, else procfs, with a one-line notice saying why (make_profiler in
/// latency/profiler.h).
enum class Source { kAuto, kBpf, kTracefs, kProcfs };

struct SamplerOptions {
  int pid = 0;
  std::chrono::nanoseconds interval = 1ms;
  std::chrono::nanoseconds duration = 0ns;           ///< 0: until stop() or the process exits
  std::chrono::nanoseconds rescan_interval = 100ms;  ///< thread list + status reads
  /// How often a running thread's CPU (stat) is sampled: its stat is read
  /// after every Nth interval in which it ran, N = this / interval (at least
  /// 1): 20 samples per second of running. stat costs 5x a schedstat read
  /// to generate; reading it every tick would double the sampler's cost.
  std::chrono::nanoseconds cpu_sample_interval = 50ms;
  std::chrono::nanoseconds host_scan_interval = 1s;  ///< 0: no host scan
  size_t host_scan_max_tasks = 4096;                 ///< stat files read per host scan, at most
  ReadMethod reader = ReadMethod::kUring;
  size_t max_threads = 256;  ///< threads sampled at once (3 fds each)
  std::string csv_path;      ///< per-tick rows, one per thread and tick; empty: none
  std::string proc_root = "/proc";
  std::string vm;  ///< VM name, only to label the report
  /// Roles known from QMP (tid -> "vcpu 0", "iothread io1"): they win over
  /// the thread's name, which the kernel truncates to 15 bytes. Threads not
  /// listed are classified by name (latency/role.h).
  std::map<int, std::string> roles;

  // The BPF source (latency/bpf_source.h) reads these; the procfs Sampler ignores them.
  Source source = Source::kProcfs;
  /// Waits at least this long are streamed one by one (the report's `events`).
  std::chrono::nanoseconds threshold = 100us;
  /// Resolution of the series (plot, CSV, --watch): each window's longest wait.
  std::chrono::nanoseconds window = 100ms;
  /// Called on the profiling thread about once a second with the report so far
  /// (--watch). Empty: none.
  std::function<void(const Report&)> on_second;
  /// Stop on SIGINT/SIGTERM, taken through a signalfd in the profiler's own
  /// wait (the caller blocks them in every thread).
  bool stop_on_signals = false;
};

/// Samples one process. Construct, run() on one thread, stop() from any thread,
/// then report(). Not copyable.
class Sampler {
 public:
  /// Opens PROC/PID/task; throws pl::Error(kEnvironment) if the process does
  /// not exist, kUsage for bad options, and opens csv_path (kUsage on failure).
  explicit Sampler(SamplerOptions options);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  /// Samples until stop(), the duration, or the process exits. Call once.
  /// Throws pl::Error(kEnvironment) if io_uring cannot be set up.
  void run();
  /// Asks run() to finish within one interval. Thread-safe, idempotent.
  void stop();
  /// The report of what run() saw; call after run() returned.
  Report report() const;

  /// Counters, safe to read while run() runs (e.g. to wait for the first
  /// ticks).
  struct Stats {
    uint64_t ticks = 0;
    uint64_t uring_enters = 0;  ///< io_uring_enter calls
    uint64_t reads = 0;         ///< reads in the ticks' batches
    uint64_t short_reads = 0;   ///< io_uring reads that came short: finished by io-wq
    uint64_t rereads = 0;       ///< reads cut short (the file grew), read again with pread
  };
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// For `passlaunch run --latency-log FILE`: samples a process on its own
/// thread from construction until stop(), or until the process exits, with
/// the source options.source asks for (make_profiler, latency/profiler.h).
class BackgroundSampler {
 public:
  explicit BackgroundSampler(SamplerOptions options);  ///< throws like Sampler
  ~BackgroundSampler();                                ///< stops and joins (no report written)
  /// Stops sampling, joins the thread and returns the report. Rethrows an
  /// error the sampling thread hit. Call once.
  Report stop();
  /// stop(), then writes the JSON report to `path` (kFailed if it cannot).
  void stop_and_write(const std::string& path);
  /// Ticks sampled so far.
  uint64_t ticks() const;
  /// True once sampling ended by itself (the process exited) or by stop().
  bool finished() const;
  /// Why the source is not the one asked for (options.source), or empty.
  const std::string& notice() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Writes to_json(report) to `path`, pretty-printed; throws pl::Error(kFailed).
void write_json_report(const Report& report, const std::string& path);

}  // namespace pl::latency
