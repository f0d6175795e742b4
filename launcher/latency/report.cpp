#include "latency/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>

#include "latency/procfs.h"

namespace pl::latency {

namespace {

double round_to(double v, double step) { return std::round(v / step) * step; }

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// XML text escaping for names that come from the host.
std::string xml_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A "nice" axis step (1, 2 or 5 times a power of ten) giving about `ticks` ticks.
double nice_step(double span, int ticks) {
  if (span <= 0) return 1;
  double raw = span / ticks;
  double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * p) return m * p;
  return 10 * p;
}

std::string axis_label(double v) {
  char buf[32];
  if (v == std::floor(v))
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

nlohmann::json wait_json(const WaitStats& w) {
  nlohmann::json buckets = nlohmann::json::array();
  for (const auto& [edge, n] : w.buckets) buckets.push_back({round_to(edge, 0.001), n});
  return {{"count", w.count},
          {"total", round_to(w.total_us, 0.1)},
          {"p50", round_to(w.p50_us, 0.1)},
          {"p90", round_to(w.p90_us, 0.1)},
          {"p99", round_to(w.p99_us, 0.1)},
          {"max", round_to(w.max_us, 0.1)},
          {"buckets", buckets}};
}

nlohmann::json blockers_json(const std::vector<Blocker>& list) {
  nlohmann::json out = nlohmann::json::array();
  for (const Blocker& b : list) {
    nlohmann::json j = {{"kind", b.kind},
                        {"id", b.id},
                        {"name", b.name},
                        {"time_us", round_to(b.time_us, 0.1)},
                        {"count", b.count}};
    if (b.kind == "task") j["pid"] = b.pid;
    if (!b.cgroup.empty()) j["cgroup"] = b.cgroup;
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace

std::string blocker_label(const Blocker& b) {
  if (b.kind == "task") return b.name + "[" + std::to_string(b.id) + "]";
  if (b.kind == "irq") return "irq " + std::to_string(b.id) + (b.name.empty() ? "" : " " + b.name);
  if (b.kind == "softirq") return "softirq " + (b.name.empty() ? std::to_string(b.id) : b.name);
  if (b.kind == "local_timer") return "local timer";
  if (b.kind == "idle") return "idle exit";
  return b.kind;
}

nlohmann::json to_json(const Report& r) {
  nlohmann::json threads = nlohmann::json::array();
  for (const ThreadReport& t : r.threads) {
    nlohmann::json others = nlohmann::json::array();
    for (const OtherTask& o : t.other_tasks)
      others.push_back({{"pid", o.pid}, {"tid", o.tid}, {"comm", o.comm}, {"samples", o.samples}});
    nlohmann::json j = {
        {"tid", t.tid},
        {"name", t.name},
        {"role", t.role},
        {"allowed_cpus", t.allowed_cpus},
        {"runqueue_delay_us",
         {{"p50", round_to(t.delay_p50_us, 0.1)},
          {"p99", round_to(t.delay_p99_us, 0.1)},
          {"max", round_to(t.delay_max_us, 0.1)},
          {"mean", round_to(t.delay_mean_us, 0.1)},
          {"intervals", t.intervals}}},
        {"cpu_share", round_to(t.cpu_share, 0.0001)},
        {"runqueue_wait_share", round_to(t.wait_share, 0.0001)},
        {"timeslices_per_s", round_to(t.timeslices_per_s, 0.1)},
        {"involuntary_switches_per_s",
         t.involuntary_switches_per_s < 0
             ? nlohmann::json(nullptr)
             : nlohmann::json(round_to(t.involuntary_switches_per_s, 0.1))},
        {"outside_allowed_samples", t.outside_allowed_samples},
        {"cpu_samples", t.cpu_samples},
        {"last_cpu", t.last_cpu},
        {"exited", t.exited},
        {"other_tasks", others},
    };
    if (!t.allowed_cpus_now.empty()) j["allowed_cpus_now"] = t.allowed_cpus_now;
    if (r.source == "bpf") {
      j["wakeup_us"] = wait_json(t.wakeup);
      j["preempt_us"] = wait_json(t.preempt);
      j["waking_us"] = wait_json(t.waking);
      j["worst_wait"] = {{"us", round_to(t.worst_wait_us, 0.001)},
                         {"at_s", round_to(t.worst_wait_at_s, 0.000001)},
                         {"kind", t.worst_wait_kind},
                         {"cpu", t.worst_wait_cpu}};
      j["migrations"] = t.migrations;
      j["outside_allowed_us"] = round_to(t.outside_us, 0.1);
      j["noise_us"] = round_to(t.noise_us, 0.1);
      j["noise_count"] = t.noise_count;
      j["noise"] = blockers_json(t.noise);
      j["blockers"] = blockers_json(t.blockers);
      j["blame_lost_us"] = round_to(t.blame_lost_us, 0.1);
    }
    threads.push_back(std::move(j));
  }
  nlohmann::json j = {
      {"pid", r.pid},
      {"reader", r.reader},
      {"duration_s", round_to(r.duration_s, 0.001)},
      {"interval_us", r.interval_ns / 1000.0},
      {"ticks", r.ticks},
      {"missed_ticks", r.missed_ticks},
      {"host_scans", r.host_scans},
      {"host_scan_interval_us", r.host_scan_interval_ns / 1000.0},
      {"host_scan_cpu_share", round_to(r.host_scan_cpu_share, 0.0001)},
      {"untracked_threads", r.untracked_threads},
      {"process_exited", r.process_exited},
      {"sampler_cpu_share", round_to(r.sampler_cpu_share, 0.0001)},
      {"cpu_sample_interval_us", r.cpu_sample_interval_ns / 1000.0},
      {"reads_per_tick", round_to(r.reads_per_tick, 0.01)},
      {"short_reads", r.short_reads},
      {"rereads", r.rereads},
      {"threads", threads},
  };
  if (!r.vm.empty()) j["vm"] = r.vm;
  j["source"] = r.source;
  if (!r.source_notice.empty()) j["source_notice"] = r.source_notice;
  if (r.source == "bpf") {
    nlohmann::json events = nlohmann::json::array();
    for (const WaitEvent& e : r.events)
      events.push_back({{"at_s", round_to(e.at_s, 0.000001)},
                        {"tid", e.tid},
                        {"kind", e.kind},
                        {"cpu", e.cpu},
                        {"wait_us", round_to(e.wait_us, 0.001)},
                        {"waking_us", round_to(e.waking_us, 0.001)},
                        {"top_blocker", e.top_blocker},
                        {"top_us", round_to(e.top_us, 0.1)}});
    j["threshold_us"] = r.threshold_us;
    j["events"] = events;
    j["events_dropped"] = r.events_dropped;
    j["cost"] = {{"bpf_events", r.bpf_events},
                 {"bpf_ns_per_event", round_to(r.bpf_ns_per_event, 0.1)},
                 {"bpf_cpu_share", round_to(r.bpf_cpu_share, 0.00001)},
                 {"user_cpu_share", round_to(r.sampler_cpu_share, 0.00001)}};
    j["slots_full"] = r.slots_full;
  }
  return j;
}

namespace {

std::string align(const std::vector<std::vector<std::string>>& rows, size_t left_cols) {
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      bool left = i >= 1 && i <= left_cols;
      std::string pad(width[i] - row[i].size(), ' ');
      line += left ? row[i] + pad : pad + row[i];
      if (i + 1 < row.size()) line += "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string triple(const WaitStats& w) {
  if (w.count == 0) return "-";
  return fixed(w.p50_us, 1) + "/" + fixed(w.p99_us, 1) + "/" + fixed(w.max_us, 1);
}

// The BPF source's table: every wait, kept apart by kind, and who was in the way.
std::string format_bpf_table(const Report& r) {
  std::string out;
  char head[512];
  std::snprintf(head, sizeof head,
                "pid %d%s: %.1f s, source bpf (every wait from the scheduler's events); cost: "
                "%.0f ns x %llu events = %.3f%% of a core in the kernel, %.3f%% in user space\n",
                r.pid, r.vm.empty() ? "" : (" (" + r.vm + ")").c_str(), r.duration_s,
                r.bpf_ns_per_event, static_cast<unsigned long long>(r.bpf_events),
                r.bpf_cpu_share * 100, r.sampler_cpu_share * 100);
  out += head;
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"TID", "ROLE", "NAME", "CPUS", "CPU%", "WAKEUPS", "WAKEUP p50/p99/max us",
                  "PREEMPTS", "PREEMPT p50/p99/max us", "WORST us (at s)", "MIGR", "OUTSIDE us",
                  "NOISE us"});
  for (const ThreadReport& t : r.threads) {
    std::string cpus = t.allowed_cpus;
    if (!t.allowed_cpus_now.empty()) cpus += "->" + t.allowed_cpus_now;
    rows.push_back({std::to_string(t.tid) + (t.exited ? "*" : ""), t.role, t.name, cpus,
                    fixed(t.cpu_share * 100, 1), std::to_string(t.wakeup.count), triple(t.wakeup),
                    std::to_string(t.preempt.count), triple(t.preempt),
                    t.worst_wait_us > 0
                        ? fixed(t.worst_wait_us, 1) + " (" + fixed(t.worst_wait_at_s, 3) + ")"
                        : "-",
                    std::to_string(t.migrations), fixed(t.outside_us, 0), fixed(t.noise_us, 1)});
  }
  out += align(rows, 3);
  if (std::any_of(r.threads.begin(), r.threads.end(), [](auto& t) { return t.exited; }))
    out += "* exited while profiled\n";
  bool any = false;
  for (const ThreadReport& t : r.threads) {
    if (t.blockers.empty() && t.noise.empty()) continue;
    if (!any) out += "Who was in the way (while waiting) and noise (while running), most first:\n";
    any = true;
    std::string line = "  " + std::to_string(t.tid) + " " + t.role + ":";
    size_t n = 0;
    for (const Blocker& b : t.blockers) {
      if (n++ == 4) break;
      line += " " + blocker_label(b) + (b.cgroup.empty() ? "" : " (" + b.cgroup + ")") + " " +
              fixed(b.time_us, 0) + "us/" + std::to_string(b.count);
    }
    if (!t.noise.empty()) {
      line += " | noise:";
      n = 0;
      for (const Blocker& b : t.noise) {
        if (n++ == 3) break;
        line +=
            " " + blocker_label(b) + " " + fixed(b.time_us, 0) + "us/" + std::to_string(b.count);
      }
    }
    out += line + "\n";
  }
  if (!r.events.empty() || r.events_dropped)
    out += std::to_string(r.events.size()) + " waits over " + fixed(r.threshold_us, 0) +
           " us streamed (" + std::to_string(r.events_dropped) + " dropped); see --json\n";
  return out;
}

}  // namespace

std::string format_table(const Report& r) {
  if (r.source == "bpf") return format_bpf_table(r);
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"TID", "ROLE", "NAME", "CPUS", "CPU%", "WAIT%", "P50us", "P99us", "MAXus",
                  "SLICES/s", "INVOL/s", "OUTSIDE"});
  for (const ThreadReport& t : r.threads) {
    std::string cpus = t.allowed_cpus;
    if (!t.allowed_cpus_now.empty()) cpus += "->" + t.allowed_cpus_now;
    std::string tid = std::to_string(t.tid) + (t.exited ? "*" : "");
    rows.push_back(
        {tid, t.role, t.name, cpus, fixed(t.cpu_share * 100, 1), fixed(t.wait_share * 100, 1),
         fixed(t.delay_p50_us, 1), fixed(t.delay_p99_us, 1), fixed(t.delay_max_us, 1),
         fixed(t.timeslices_per_s, 0),
         t.involuntary_switches_per_s < 0 ? "-" : fixed(t.involuntary_switches_per_s, 1),
         std::to_string(t.outside_allowed_samples) + "/" + std::to_string(t.cpu_samples)});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  std::string out;
  char head[256];
  std::snprintf(
      head, sizeof head,
      "pid %d%s: %.1f s, %llu ticks every %s (%llu missed), reader %s, sampler CPU %.2f%%\n", r.pid,
      r.vm.empty() ? "" : (" (" + r.vm + ")").c_str(), r.duration_s,
      static_cast<unsigned long long>(r.ticks),
      format_duration(std::chrono::nanoseconds(r.interval_ns)).c_str(),
      static_cast<unsigned long long>(r.missed_ticks), r.reader.c_str(), r.sampler_cpu_share * 100);
  out += head;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      bool left = i == 1 || i == 2 || i == 3;
      std::string cell = row[i];
      std::string pad(width[i] - cell.size(), ' ');
      line += left ? cell + pad : pad + cell;
      if (i + 1 < row.size()) line += "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  bool any_exited =
      std::any_of(r.threads.begin(), r.threads.end(), [](auto& t) { return t.exited; });
  if (any_exited) out += "* exited while sampled\n";
  out += "OUTSIDE = last-CPU samples outside the CPUs allowed when first seen / samples taken\n";
  // Other tasks, once per distinct CPU set (threads pinned alike share them).
  std::vector<std::string> done;
  for (const ThreadReport& t : r.threads) {
    if (t.other_tasks.empty()) continue;
    std::string cpus = t.allowed_cpus;
    if (std::find(done.begin(), done.end(), cpus) != done.end()) continue;
    if (done.empty())
      out += "Other tasks seen running on the threads' CPUs (" + std::to_string(r.host_scans) +
             " host scans):\n";
    done.push_back(cpus);
    bool one = cpus.find_first_of(",-") == std::string::npos;
    std::string line = (one ? "  CPU " : "  CPUs ") + cpus + ":";
    for (const OtherTask& o : t.other_tasks)
      line += " " + o.comm + "[" + std::to_string(o.tid) + "]x" + std::to_string(o.samples);
    out += line + "\n";
  }
  return out;
}

std::string render_svg(const Report& r) {
  // Layout: plot area on the left, legend on the right.
  const double W = 1000, H = 520, left = 80, right = 290, top = 50, bottom = 60;
  // The BPF source adds a bar chart of who was in the way, below the lines.
  std::map<std::string, double> blame;
  if (r.source == "bpf")
    for (const ThreadReport& t : r.threads)
      for (const Blocker& b : t.blockers) blame[blocker_label(b)] += b.time_us;
  std::vector<std::pair<std::string, double>> bars(blame.begin(), blame.end());
  std::sort(bars.begin(), bars.end(), [](auto& a, auto& b) { return a.second > b.second; });
  if (bars.size() > 10) bars.resize(10);
  const double bar_h = 22, chart_h = bars.empty() ? 0 : 60 + bar_h * bars.size();
  const double pw = W - left - right, ph = H - top - bottom;
  const double bucket_s = r.plot_bucket_ns / 1e9;

  size_t points = 0;
  float ymax = 0;
  for (const ThreadReport& t : r.threads) {
    points = std::max(points, t.delay_series_us.size());
    for (float v : t.delay_series_us)
      if (!std::isnan(v)) ymax = std::max(ymax, v);
  }
  double xmax = std::max(bucket_s * static_cast<double>(points), r.duration_s);
  if (xmax <= 0) xmax = 1;
  double ystep = nice_step(ymax > 0 ? ymax : 1, 5);
  double ytop = std::max(ystep, std::ceil(ymax / ystep) * ystep);
  double xstep = nice_step(xmax, 8);
  auto X = [&](double s) { return left + s / xmax * pw; };
  auto Y = [&](double us) { return top + ph - us / ytop * ph; };

  // Legend: the threads with the largest delay first; beyond 12, grey and summed up.
  std::vector<size_t> order(r.threads.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return r.threads[a].delay_max_us > r.threads[b].delay_max_us;
  });
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                  "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939", "#843c39"};
  const size_t kNamed = std::size(kColors);

  std::string s;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
                "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                W, H + chart_h, W, H + chart_h);
  s += buf;
  std::string title = "Run-queue delay per thread, pid " + std::to_string(r.pid);
  if (!r.vm.empty()) title += " (" + r.vm + ")";
  std::snprintf(
      buf, sizeof buf,
      "<text x=\"%.0f\" y=\"22\" font-size=\"15\" font-weight=\"bold\">%s</text>\n"
      "<text x=\"%.0f\" y=\"40\" fill=\"#555\">sampled every %s; each point is the "
      "largest delay in %s</text>\n",
      left, xml_escape(title).c_str(), left,
      format_duration(std::chrono::nanoseconds(r.interval_ns)).c_str(),
      format_duration(std::chrono::nanoseconds(std::max<int64_t>(r.plot_bucket_ns, 1))).c_str());
  s += buf;

  // Grid and tick labels.
  for (double y = 0; y <= ytop + ystep / 2; y += ystep) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                  left, Y(y), left + pw, Y(y), left - 6, Y(y) + 4, axis_label(y).c_str());
    s += buf;
  }
  for (double x = 0; x <= xmax + xstep / 2; x += xstep) {
    if (x > xmax) break;
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                  X(x), top, X(x), top + ph, X(x), top + ph + 18, axis_label(x).c_str());
    s += buf;
  }
  std::snprintf(buf, sizeof buf,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                "stroke=\"#333\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">time (s)</text>\n"
                "<text transform=\"translate(%.1f,%.1f) rotate(-90)\" text-anchor=\"middle\">"
                "run-queue delay (\xC2\xB5s)</text>\n",
                left, top, pw, ph, left + pw / 2, H - 15, 22.0, top + ph / 2);
  s += buf;

  // One path per thread; a gap (NaN) starts a new segment. Grey ones first,
  // so the named ones are drawn on top.
  auto path_of = [&](const ThreadReport& t) {
    std::string d;
    bool pen = false;
    for (size_t i = 0; i < t.delay_series_us.size(); ++i) {
      float v = t.delay_series_us[i];
      if (std::isnan(v)) {
        pen = false;
        continue;
      }
      char p[64];
      std::snprintf(p, sizeof p, "%s%.1f %.1f ", pen ? "L" : "M", X((i + 0.5) * bucket_s), Y(v));
      d += p;
      pen = true;
    }
    return d;
  };
  for (size_t k = order.size(); k-- > 0;) {
    const ThreadReport& t = r.threads[order[k]];
    std::string d = path_of(t);
    if (d.empty()) continue;
    const char* color = k < kNamed ? kColors[k] : "#bbbbbb";
    s += "<path fill=\"none\" stroke=\"" + std::string(color) + "\" stroke-width=\"" +
         (k < kNamed ? "1.5" : "1") + "\" stroke-linejoin=\"round\" d=\"" + d + "\"/>\n";
  }

  // Legend.
  double ly = top + 6;
  for (size_t k = 0; k < order.size() && k < kNamed; ++k) {
    const ThreadReport& t = r.threads[order[k]];
    // "vcpu 0 [4711]"; an emulator thread goes by its name: "worker [4712]".
    std::string label = t.role == "emulator" && !t.name.empty() ? t.name : t.role;
    if (label.size() > 22) label = label.substr(0, 21) + "\xE2\x80\xA6";
    label += " [" + std::to_string(t.tid) + "]";
    label += "  max " + fixed(t.delay_max_us, 0) + " \xC2\xB5s";
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                  "stroke-width=\"3\"/>\n<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                  left + pw + 14, ly, left + pw + 34, ly, kColors[k], left + pw + 40, ly + 4,
                  xml_escape(label).c_str());
    s += buf;
    ly += 18;
  }
  if (order.size() > kNamed) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#bbbbbb\" "
                  "stroke-width=\"3\"/>\n<text x=\"%.1f\" y=\"%.1f\">%zu other threads</text>\n",
                  left + pw + 14, ly, left + pw + 34, ly, left + pw + 40, ly + 4,
                  order.size() - kNamed);
    s += buf;
  }
  if (!bars.empty()) {
    double y0 = H + 30, bw = W - left - 300,
           most = bars.front().second > 0 ? bars.front().second : 1;
    std::snprintf(buf, sizeof buf,
                  "<text x=\"%.0f\" y=\"%.0f\" font-size=\"15\" font-weight=\"bold\">Who was in "
                  "the way: wait time per blocker, all threads (\xC2\xB5s)</text>\n",
                  left, y0);
    s += buf;
    for (size_t i = 0; i < bars.size(); ++i) {
      double y = y0 + 15 + i * bar_h, w = bars[i].second / most * bw;
      std::string label = bars[i].first;
      if (label.size() > 30) label = label.substr(0, 29) + "\xE2\x80\xA6";
      std::snprintf(buf, sizeof buf,
                    "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n<rect x=\"%.1f\" y=\"%.1f\" "
                    "width=\"%.1f\" height=\"%.1f\" fill=\"#d62728\"/>\n<text x=\"%.1f\" "
                    "y=\"%.1f\">%s</text>\n",
                    left, y + 15, xml_escape(label).c_str(), left + 220, y + 3, std::max(w, 1.0),
                    bar_h - 6, left + 226 + w, y + 15, fixed(bars[i].second, 0).c_str());
      s += buf;
    }
  }
  s += "</svg>\n";
  return s;
}

}  // namespace pl::latency
