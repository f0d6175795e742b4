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

/// Who ran on a thread's CPU while it waited (blame), or interrupted it while
/// it ran (noise). BPF source only.
struct Blocker {
  std::string kind;    ///< "task", "irq", "softirq", "local_timer", "idle"
  int id = 0;          ///< task: tid; irq: number; softirq: vector; local_timer: vector
  int pid = 0;         ///< task: its process (tgid)
  std::string name;    ///< task: comm; irq: the handler's name; softirq: "NET_RX", ...
  std::string cgroup;  ///< task: its cgroup v2 path, when not the root
  double time_us = 0;
  uint64_t count = 0;  ///< times it got in the way (noise: interruptions)
};

/// One kind of wait (wakeup latency, preemption delay, waking->wakeup): every
/// one, from the scheduler's events. BPF source only.
struct WaitStats {
  uint64_t count = 0;
  double total_us = 0, p50_us = 0, p90_us = 0, p99_us = 0, max_us = 0;
  /// Non-empty histogram buckets: the bucket's upper edge (µs) and its count.
  std::vector<std::pair<double, uint64_t>> buckets;
};

/// A wait over the threshold, as streamed from the kernel.
struct WaitEvent {
  double at_s = 0;     ///< when it ended, from the start of profiling
  int64_t end_ns = 0;  ///< when it ended, CLOCK_MONOTONIC (perf record -k mono's clock)
  int tid = 0;
  std::string kind;  ///< "wakeup" or "preempt"
  int cpu = -1;
  double wait_us = 0;
  double waking_us = 0;     ///< sched_waking -> sched_wakeup part (wakeups)
  std::string top_blocker;  ///< "task stress[1234]", "irq 24 virtio0", ...
  double top_us = 0;        ///< its longest single stretch in the wait
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

  // BPF source only (empty / zero otherwise).
  WaitStats wakeup, preempt, waking;
  double worst_wait_us = 0;
  double worst_wait_at_s = 0;  ///< when it ended, from the start of profiling
  std::string worst_wait_kind;
  int worst_wait_cpu = -1;
  uint64_t migrations = 0;
  double outside_us = 0;  ///< run time on CPUs outside allowed_cpus
  double noise_us = 0;    ///< IRQ and softirq time while it was the running task
  uint64_t noise_count = 0;
  double blame_lost_us = 0;       ///< wait time no blocker could be given for
  std::vector<Blocker> blockers;  ///< most time first
  std::vector<Blocker> noise;     ///< most time first
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

  std::string source = "procfs";  ///< "bpf" or "procfs"
  std::string source_notice;      ///< why this source, when not the one asked for
  // BPF source only.
  double threshold_us = 0;
  std::vector<WaitEvent> events;  ///< waits over the threshold, at most kMaxEvents
  uint64_t events_dropped = 0;    ///< over kMaxEvents, or lost in a full ring
  static constexpr size_t kMaxEvents = 10000;
  uint64_t bpf_events = 0;      ///< tracepoint hits run by the programs
  double bpf_ns_per_event = 0;  ///< their mean run time (bpf_stats)
  double bpf_cpu_share = 0;     ///< kernel-side cost, of one core
  uint64_t slots_full = 0;      ///< threads left untracked
};

/// {"pid":..,"threads":[{"tid","name","role","allowed_cpus","runqueue_delay_us":{"p50","p99",
/// "max"},"cpu_share","involuntary_switches_per_s","outside_allowed_samples",...}],...}
nlohmann::json to_json(const Report& report);

/// A blocker's label: "task stress[1234]", "irq 24 virtio0-input", "softirq NET_RX".
std::string blocker_label(const Blocker& b);

/// One row per thread, aligned columns, then the other tasks seen per thread.
std::string format_table(const Report& report);

/// Run-queue delay over time, one line per thread, axes with labels, legend.
std::string render_svg(const Report& report);

}  // namespace pl::latency
