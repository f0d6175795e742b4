// The BPF source of `passlaunch latency`: every wait of every thread of one
// process, from the scheduler's tracepoints, counted in the kernel by
// latency/bpf/latency.bpf.c (CO-RE, loaded from a bpftool skeleton) and
// read here from mmap'ed maps. See docs/latency.md, "The BPF source".
#pragma once

#include <memory>
#include <string>

#include "latency/profiler.h"

namespace pl::latency {

/// Why the BPF source cannot run here ("built without BPF", "no BTF at
/// /sys/kernel/btf/vmlinux", "bpf(): Operation not permitted ..."), or
/// empty if it can. Loads nothing into the kernel beyond a probe.
std::string bpf_unavailable_reason();

/// Loads and attaches the programs in the constructor (pl::Error(kEnvironment)
/// when the kernel refuses them, kUsage for bad options); run() then waits in
/// one io_uring_enter for the ring buffer, QEMU's pidfd, the report timer,
/// stop() and (stop_on_signals) a signalfd.
class BpfSource : public Profiler {
 public:
  explicit BpfSource(SamplerOptions options);
  ~BpfSource() override;
  void run() override;
  void stop() override;
  Report report() const override;
  uint64_t ticks() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl::latency
