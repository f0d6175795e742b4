// One interface over the latency sources, and the choice between them:
// the BPF source (latency/bpf_source.h: every wait, from the scheduler's
// events) and the procfs sampler (latency/sampler.h: schedstat deltas).
#pragma once

#include <memory>
#include <string>

#include "latency/report.h"
#include "latency/sampler.h"

namespace pl::latency {

/// Profiles one process. run() on one thread, stop() from any, then report().
class Profiler {
 public:
  virtual ~Profiler() = default;
  virtual void run() = 0;
  virtual void stop() = 0;
  virtual Report report() const = 0;
  /// Progress so far (procfs: ticks; BPF: report windows), safe while run() runs.
  virtual uint64_t ticks() const = 0;
};

/// "auto", "bpf", "tracefs", "procfs"; nullopt for anything else.
std::optional<Source> parse_source(std::string_view text);
const char* to_string(Source source);

struct ProfilerChoice {
  std::unique_ptr<Profiler> profiler;
  Source source = Source::kProcfs;  ///< the one chosen
  /// One line for stderr when the source is not the one asked for (or auto
  /// fell back), saying which is used and why; empty otherwise.
  std::string notice;
};

/// The profiler for options.source. kAuto: BPF where it can run (built in,
/// BTF, permission), else procfs. kTracefs: not built yet: procfs, with a
/// notice. kBpf where BPF cannot run: pl::Error(kEnvironment) saying why.
/// Throws as the chosen source's constructor does.
ProfilerChoice make_profiler(const SamplerOptions& options);

}  // namespace pl::latency
