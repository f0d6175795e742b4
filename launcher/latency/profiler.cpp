#include "latency/profiler.h"

#include "core/error.h"
#include "latency/bpf_source.h"

namespace pl::latency {

namespace {

// The procfs sampler behind the Profiler interface.
class ProcfsProfiler : public Profiler {
 public:
  explicit ProcfsProfiler(SamplerOptions o) : sampler_(std::move(o)) {}
  void run() override { sampler_.run(); }
  void stop() override { sampler_.stop(); }
  Report report() const override { return sampler_.report(); }
  uint64_t ticks() const override { return sampler_.stats().ticks; }

 private:
  Sampler sampler_;
};

}  // namespace

std::optional<Source> parse_source(std::string_view text) {
  if (text == "auto") return Source::kAuto;
  if (text == "bpf") return Source::kBpf;
  if (text == "tracefs") return Source::kTracefs;
  if (text == "procfs") return Source::kProcfs;
  return std::nullopt;
}

const char* to_string(Source source) {
  switch (source) {
    case Source::kAuto:
      return "auto";
    case Source::kBpf:
      return "bpf";
    case Source::kTracefs:
      return "tracefs";
    case Source::kProcfs:
      return "procfs";
  }
  return "?";
}

ProfilerChoice make_profiler(const SamplerOptions& o) {
  ProfilerChoice c;
  if (o.source == Source::kBpf) {
    c.profiler = std::make_unique<BpfSource>(o);  // errors say why BPF cannot run
    c.source = Source::kBpf;
    return c;
  }
  if (o.source == Source::kAuto) {
    try {
      c.profiler = std::make_unique<BpfSource>(o);
      c.source = Source::kBpf;
      return c;
    } catch (const Error& e) {
      if (e.code() != Exit::kEnvironment) throw;
      c.notice = std::string(
                     "latency: source procfs (schedstat sampling; waits are per "
                     "interval, no blame): BPF cannot run: ") +
                 e.what();
    }
  } else if (o.source == Source::kTracefs) {
    c.notice = "latency: source procfs: the tracefs source is not built yet (docs/latency.md)";
  }
  c.profiler = std::make_unique<ProcfsProfiler>(o);
  c.source = Source::kProcfs;
  return c;
}

}  // namespace pl::latency
