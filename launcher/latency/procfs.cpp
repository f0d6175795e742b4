#include "latency/procfs.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace pl::latency {

namespace {

// Reads one unsigned decimal at the start of `s` and drops it (and the
// following spaces) from `s`.
bool take_u64(std::string_view& s, uint64_t& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (ec != std::errc{}) return false;
  s.remove_prefix(p - s.data());
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return true;
}

}  // namespace

std::optional<Schedstat> parse_schedstat(std::string_view text) {
  Schedstat s;
  if (!take_u64(text, s.run_ns) || !take_u64(text, s.wait_ns) || !take_u64(text, s.timeslices))
    return std::nullopt;
  if (text != "\n") return std::nullopt;
  return s;
}

std::optional<TaskStat> parse_task_stat(std::string_view text) {
  TaskStat st;
  auto open = text.find('(');
  auto close = text.rfind(')');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open)
    return std::nullopt;
  st.comm = text.substr(open + 1, close - open - 1);
  std::string_view rest = text.substr(close + 1);
  // Field 3 is the first after ") ".
  int field = 2;
  uint64_t utime = 0;
  bool have_cpu = false;
  while (!rest.empty()) {
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (rest.empty() || rest.front() == '\n') break;
    auto end = rest.find_first_of(" \n");
    if (end == std::string_view::npos) return std::nullopt;  // cut: the field may go on
    std::string_view tok = rest.substr(0, end);
    rest.remove_prefix(end);
    ++field;
    if (field == 3) {
      if (tok.size() != 1) return std::nullopt;
      st.state = tok[0];
    } else if (field == 14 || field == 15 || field == 22 || field == 39) {
      uint64_t v = 0;
      auto [p, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);
      if (ec != std::errc{} || p != tok.data() + tok.size()) return std::nullopt;
      if (field == 14) utime = v;
      if (field == 15) st.cpu_ticks = utime + v;
      if (field == 22) st.start_ticks = v;
      if (field == 39) {
        st.processor = static_cast<int>(v);
        st.processor_end = static_cast<size_t>(rest.data() - text.data());
        have_cpu = true;
        break;
      }
    }
  }
  if (!have_cpu) return std::nullopt;
  return st;
}

size_t stat_read_size(size_t size, const TaskStat& st) {
  if (st.processor_end >= size) return size;
  return st.processor_end + std::min<size_t>(48, (size - st.processor_end) / 2);
}

std::optional<std::string_view> status_field(std::string_view text, std::string_view key) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) break;  // cut short: the line may go on
    std::string_view line = text.substr(pos, eol - pos);
    if (line.size() > key.size() && line.starts_with(key) && line[key.size()] == ':') {
      line.remove_prefix(key.size() + 1);
      while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
      return line;
    }
    pos = eol + 1;
  }
  return std::nullopt;
}

std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text) {
  size_t unit_at = 0;
  while (unit_at < text.size() &&
         ((text[unit_at] >= '0' && text[unit_at] <= '9') || text[unit_at] == '.'))
    ++unit_at;
  std::string_view number = text.substr(0, unit_at);
  std::string_view unit = text.substr(unit_at);
  if (number.empty() || number.front() == '.' || number.back() == '.') return std::nullopt;
  if (number.find('.') != number.rfind('.')) return std::nullopt;
  double scale;
  if (unit == "ns")
    scale = 1;
  else if (unit == "us")
    scale = 1e3;
  else if (unit == "ms")
    scale = 1e6;
  else if (unit == "s")
    scale = 1e9;
  else if (unit == "m")
    scale = 60e9;
  else if (unit == "h")
    scale = 3600e9;
  else
    return std::nullopt;
  double value = 0;
  auto [p, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (ec != std::errc{} || p != number.data() + number.size()) return std::nullopt;
  double ns = value * scale;
  if (!(ns >= 1) || ns > 1e18) return std::nullopt;
  return std::chrono::nanoseconds(static_cast<int64_t>(std::llround(ns)));
}

std::string format_duration(std::chrono::nanoseconds d) {
  int64_t ns = d.count();
  struct Unit {
    int64_t per;
    const char* name;
  };
  for (Unit u : {Unit{3600'000'000'000, "h"}, Unit{60'000'000'000, "m"}, Unit{1'000'000'000, "s"},
                 Unit{1'000'000, "ms"}, Unit{1'000, "us"}}) {
    if (ns >= u.per) {
      char buf[64];
      if (ns % u.per == 0)
        std::snprintf(buf, sizeof buf, "%lld%s", static_cast<long long>(ns / u.per), u.name);
      else
        std::snprintf(buf, sizeof buf, "%g%s", static_cast<double>(ns) / u.per, u.name);
      return buf;
    }
  }
  return std::to_string(ns) + "ns";
}

}  // namespace pl::latency
