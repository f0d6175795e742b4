// Pure parsers for the procfs files the latency sampler reads, and the
// duration syntax of its command line. No I/O: the sampler feeds them bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pl::latency {

// Every parser accepts a read cut short at any byte (the sampler may ask the
// kernel for fewer bytes than the file has, see sampler.cpp): a field is
// only taken when the byte after it is there, so a cut number never passes.

/// /proc/PID/task/TID/schedstat: "<run ns> <run-queue wait ns> <timeslices>\n",
/// newline included.
struct Schedstat {
  uint64_t run_ns = 0;
  uint64_t wait_ns = 0;
  uint64_t timeslices = 0;
};
std::optional<Schedstat> parse_schedstat(std::string_view text);

/// The fields of /proc/PID/task/TID/stat the sampler uses. The name (field 2)
/// may hold spaces and parentheses, so fields are counted after the LAST ')'.
struct TaskStat {
  std::string_view comm;     ///< field 2 without the parentheses (a view into the text)
  char state = '?';          ///< field 3: R running/runnable, S, D, Z, ...
  uint64_t cpu_ticks = 0;    ///< fields 14+15: utime + stime, in clock ticks
  uint64_t start_ticks = 0;  ///< field 22: when the task started, in clock ticks
  int processor = -1;        ///< field 39: the CPU the task last ran on
  size_t processor_end = 0;  ///< offset in the text just past field 39
};
std::optional<TaskStat> parse_task_stat(std::string_view text);

/// How many bytes a read of a stat file should ask for, given the whole text
/// (of `size` bytes) last read and its parse: up to the CPU field and half
/// the tail after it, at most 48 bytes of it. The tail (13 fields) can
/// shrink; asking for no more than the file will have lets io_uring finish
/// the read inline (see sampler.cpp).
size_t stat_read_size(size_t size, const TaskStat& st);

/// From /proc/PID/task/TID/status: the value after "<key>:" and whitespace, up
/// to the end of the line ("nonvoluntary_ctxt_switches", "Cpus_allowed_list").
/// A last line without its newline is not taken (the read was cut there).
std::optional<std::string_view> status_field(std::string_view text, std::string_view key);

/// "10s", "1ms", "500us", "250000ns", "2m", "1.5s": a positive duration.
/// Returns nullopt for anything else (no unit, zero, negative, unknown unit).
std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text);

/// "1ms", "10s", "1.5s", "250us": the short form used in reports.
std::string format_duration(std::chrono::nanoseconds d);

}  // namespace pl::latency
