// What `passlaunch latency` reports, and its three renderings: a human table,
// JSON (the shape issue 8 fixes) and an SVG plot. All pure: no I/O.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace pl::latency {

/// A host task seen, by the host scan, as the last to run on one of a
/// thread's allowed CPUs while it was running or had used CPU since the scan before.
struct OtherTask {
  int pid = 0;
  int tid = 0;
  std::string comm;
  uint64_t samples = 0;  ///< scans in which it was seen on those CPUs
};

struct ThreadReport {
  int tid = 0;
  std::string name;          ///< /proc/PID/task/TID/comm when first seen
  std::string role;          ///< classify_thread(name): "vcpu 0", "iothread io0", "emulator", ...
  std::string allowed_cpus;  ///< affinity when first seen, "0-3"
  std::string allowed_cpus_now;  ///< the latest affinity, if it changed since; else empty
  uint64_t intervals = 0;        ///< intervals with a run-queue delay sample
  double delay_p50_us = 0, delay_p99_us = 0, delay_max_us = 0, delay_mean_us = 0;
  double cpu_share = 0;         ///< run time / wall time while observed (1.0 = one full CPU)
  double wait_share = 0;        ///< run-queue wait / wall time while observed
  double timeslices_per_s = 0;  ///< times it got a CPU per second
  double involuntary_switches_per_s = -1;  ///< from status; -1 if not observed twice
  uint64_t cpu_samples = 0;                ///< last-CPU samples taken after it ran
  uint64_t outside_allowed_samples = 0;    ///< of those, on a CPU outside allowed_cpus
  int last_cpu = -1;
  bool exited = false;                 ///< exited while sampled
  std::vector<OtherTask> other_tasks;  ///< most seen first, at most 5
  std::vector<float> delay_series_us;  ///< max delay per plot bucket; NaN = not observed
};

struct Report {
  int pid = 0;
  std::string vm;         ///< the VM name when given by name
  std::string reader;     ///< "io_uring" or "pread"
  double duration_s = 0;  ///< wall time sampled
  int64_t interval_ns = 0;
  uint64_t ticks = 0;          ///< ticks sampled
  uint64_t missed_ticks = 0;   ///< ticks skipped because the sampler fell behind
  int64_t plot_bucket_ns = 0;  ///< width of one delay_series_us point
  int64_t host_scan_interval_ns = 0;
  uint64_t host_scans = 0;
  double host_scan_cpu_share = 0;  ///< CPU used by the host scans (part of sampler_cpu_share)
  uint64_t untracked_threads = 0;  ///< most threads left unsampled at once (over max_threads)
  bool process_exited = false;
  double sampler_cpu_share = 0;  ///< CPU of the whole sampling process (incl. io-wq workers)
  double reads_per_tick = 0;     ///< procfs reads per tick
  uint64_t cpu_sample_interval_ns = 0;
  uint64_t short_reads = 0;  ///< io_uring reads that came short: finished on io-wq
  uint64_t rereads = 0;      ///< reads cut by a file that grew, read again whole
  std::vector<ThreadReport> threads;
};

/// {"pid":..,"threads":[{"tid","name","role","allowed_cpus","runqueue_delay_us":{"p50","p99",
/// "max"},"cpu_share","involuntary_switches_per_s","outside_allowed_samples",...}],...}
nlohmann::json to_json(const Report& report);

/// One row per thread, aligned columns, then the other tasks seen per thread.
std::string format_table(const Report& report);

/// Run-queue delay over time, one line per thread, axes with labels, legend.
std::string render_svg(const Report& report);

}  // namespace pl::latency
