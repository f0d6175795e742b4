// Tests of `passlaunch latency`: the pure parts (roles, procfs parsers,
// histogram, renderings), then the sampler against a real child process
// whose threads the test pins, and the command line.
#include <fcntl.h>
#include <liburing.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/text.h"
#include "core/tracepoint.h"
#include "gtest/gtest.h"
#include "latency/bpf_source.h"
#include "latency/histogram.h"
#include "latency/procfs.h"
#include "latency/report.h"
#include "latency/role.h"
#include "latency/sampler.h"
#include "qemu_fixture.h"
#include "run/pinning.h"

namespace pl::latency {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// ---------------------------------------------------------------- pure parts

TEST(LatencyRole, ClassifiesQemuThreadNames) {
  struct Case {
    const char* name;
    const char* role;
  };
  for (Case c :
       {Case{"CPU 0/KVM", "vcpu 0"}, Case{"CPU 12/TCG", "vcpu 12"},
        Case{"IO iothread0", "iothread iothread0"}, Case{"IO disk-io", "iothread disk-io"},
        Case{"vhost-4242", "vhost"}, Case{"qemu-system-x86", "emulator"},
        Case{"worker", "emulator"}, Case{"call_rcu", "emulator"}, Case{"CPU x/KVM", "emulator"},
        Case{"CPU 1/HVF", "emulator"}, Case{"CPU /KVM", "emulator"}, Case{"IO ", "emulator"},
        Case{"vhost-", "emulator"}, Case{"vhost-12a", "emulator"}, Case{"", "emulator"}}) {
    EXPECT_EQ(to_string(classify_thread(c.name)), c.role) << "name '" << c.name << "'";
  }
  Role r = classify_thread("CPU 3/KVM");
  EXPECT_EQ(r.kind, Role::Kind::kVcpu);
  EXPECT_EQ(r.vcpu, 3);
  EXPECT_EQ(classify_thread("IO io1").id, "io1");
}

// Replies as QEMU 7.2 gives them: "IO iothread-disk0" does not fit a thread
// name, so only QMP knows that thread is an iothread.
TEST(LatencyRole, RolesFromQmpKeepFullIothreadIds) {
  auto cpus = nlohmann::json::parse(R"([
    {"cpu-index": 0, "qom-path": "/machine/unattached/device[0]", "thread-id": 4101,
     "props": {"core-id": 0, "socket-id": 0, "thread-id": 0}, "target": "x86_64"},
    {"cpu-index": 1, "qom-path": "/machine/unattached/device[1]", "thread-id": 4102,
     "props": {"core-id": 1, "socket-id": 0, "thread-id": 0}, "target": "x86_64"}])");
  auto ios = nlohmann::json::parse(R"([
    {"id": "iothread-disk0", "thread-id": 4099, "poll-max-ns": 32768, "poll-grow": 0,
     "poll-shrink": 0, "aio-max-batch": 0},
    {"id": "io1", "thread-id": 4100, "poll-max-ns": 32768, "poll-grow": 0, "poll-shrink": 0,
     "aio-max-batch": 0}])");
  std::map<int, std::string> want{{4099, "iothread iothread-disk0"},
                                  {4100, "iothread io1"},
                                  {4101, "vcpu 0"},
                                  {4102, "vcpu 1"}};
  EXPECT_EQ(roles_from_qmp(cpus, ios), want);
  // The same labels as thread names give, where the name is not cut.
  EXPECT_EQ(roles_from_qmp(cpus, ios)[4100], to_string(classify_thread("IO io1")));
  EXPECT_EQ(roles_from_qmp(cpus, ios)[4102], to_string(classify_thread("CPU 1/TCG")));
  QemuThreads q = parse_qemu_threads(cpus, ios);
  EXPECT_EQ(q.vcpus, (std::map<int, pid_t>{{0, 4101}, {1, 4102}}));
  EXPECT_EQ(q.iothreads.at("iothread-disk0"), 4099);
  EXPECT_TRUE(roles_from_qmp(nlohmann::json::array(), nlohmann::json::array()).empty());
}

TEST(LatencyRole, MalformedQmpRepliesAreRejectedNamingTheField) {
  using nlohmann::json;
  json cpus = json::parse(R"([{"cpu-index": 0, "thread-id": 10}])");
  json ios = json::parse(R"([{"id": "io0", "thread-id": 11}])");
  ASSERT_EQ(roles_from_qmp(cpus, ios).size(), 2u);
  struct Case {
    const char* cpus;
    const char* ios;
    const char* message;  // a part of the error
  };
  for (Case c : {
           Case{R"({"cpu-index": 0})", "[]", "query-cpus-fast: expected an array"},
           Case{"[]", R"({"return": []})", "query-iothreads: expected an array"},
           Case{"[0]", "[]", "query-cpus-fast: entry 0 (0): expected an object"},
           Case{R"([{"thread-id": 10}])", "[]", "entry 0 ({\"thread-id\":10}): no \"cpu-index\""},
           Case{R"([{"cpu-index": 0}])", "[]", "no \"thread-id\""},
           Case{R"([{"cpu-index": "0", "thread-id": 10}])", "[]",
                "\"cpu-index\": expected an integer >= 0"},
           Case{R"([{"cpu-index": -1, "thread-id": 10}])", "[]",
                "\"cpu-index\": expected an integer >= 0"},
           Case{R"([{"cpu-index": 0, "thread-id": 0}])", "[]",
                "\"thread-id\": expected an integer >= 1"},
           Case{R"([{"cpu-index": 0, "thread-id": 1.5}])", "[]",
                "\"thread-id\": expected an integer >= 1"},
           Case{R"([{"cpu-index": 0, "thread-id": 4294967297}])", "[]",
                "\"thread-id\": expected an integer >= 1"},
           Case{R"([{"cpu-index": 0, "thread-id": 10}, {"cpu-index": 0, "thread-id": 12}])", "[]",
                "query-cpus-fast: entry 1 ({\"cpu-index\":0,\"thread-id\":12}): cpu-index 0 "
                "listed twice"},
           Case{"[]", R"([{"thread-id": 11}])",
                "query-iothreads: entry 0 ({\"thread-id\":11}): \"id\": expected a non-empty "
                "string"},
           Case{"[]", R"([{"id": "", "thread-id": 11}])", "\"id\": expected a non-empty string"},
           Case{"[]", R"([{"id": 7, "thread-id": 11}])", "\"id\": expected a non-empty string"},
           Case{"[]", R"([{"id": "io0"}])", "query-iothreads: entry 0 ({\"id\":\"io0\"}): no "},
           Case{"[]", R"([{"id": "io0", "thread-id": 11}, {"id": "io0", "thread-id": 12}])",
                "id \"io0\" listed twice"},
           Case{R"([{"cpu-index": 0, "thread-id": 10}])", R"([{"id": "io0", "thread-id": 10}])",
                "query-iothreads: entry 0 ({\"id\":\"io0\",\"thread-id\":10}): thread-id 10 "
                "listed twice"},
       }) {
    try {
      roles_from_qmp(json::parse(c.cpus), json::parse(c.ios));
      ADD_FAILURE() << "accepted " << c.cpus << " / " << c.ios;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Exit::kEnvironment) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos)
          << "'" << e.what() << "' does not say '" << c.message << "'";
    }
  }
}

TEST(LatencyProcfs, ParsesSchedstat) {
  auto s = parse_schedstat("173297692 9090727 390\n");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->run_ns, 173297692u);
  EXPECT_EQ(s->wait_ns, 9090727u);
  EXPECT_EQ(s->timeslices, 390u);
  EXPECT_FALSE(parse_schedstat(""));
  EXPECT_FALSE(parse_schedstat("1 2\n"));
  EXPECT_FALSE(parse_schedstat("1 2 x\n"));
  EXPECT_FALSE(parse_schedstat("1 2 3 4\n"));
}

TEST(LatencyProcfs, ParsesStatWithParenthesesAndSpacesInName) {
  // Fields 3.. of a real line; the name holds ") (" and spaces.
  std::string rest =
      " R 1 1 1 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 9 1000 10 18446744073709551615 1 1 0 0 0 "
      "0 0 0 0 0 0 0 17 3 0 0 0 0 0\n";
  std::string line77 = "77 (a) (b c)" + rest;  // comm is a view into it
  auto st = parse_task_stat(line77);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->comm, "a) (b c");
  EXPECT_EQ(st->state, 'R');
  EXPECT_EQ(st->cpu_ticks, 12u);
  EXPECT_EQ(st->processor, 3);
  EXPECT_FALSE(parse_task_stat("77 (x) R 1 2 3\n"));  // too short: no field 39
  EXPECT_FALSE(parse_task_stat("garbage"));

  // And this very process's stat, as the kernel writes it.
  std::ifstream in("/proc/self/stat");
  std::string line;
  std::getline(in, line);
  auto self = parse_task_stat(line);
  ASSERT_TRUE(self);
  EXPECT_GE(self->processor, 0);
  EXPECT_EQ(self->state, 'R');
}

// The sampler asks the kernel for no more bytes than a file had, so a file
// that grew comes cut short. Every cut of real files is either refused or
// read exactly as the whole file: a cut number is never taken.
TEST(LatencyProcfs, ReadsCutAtAnyByteAreRefusedNotMisread) {
  auto slurp = [](const char* path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  std::string sched = slurp("/proc/thread-self/schedstat");
  std::string stat = slurp("/proc/thread-self/stat");
  std::string status = slurp("/proc/thread-self/status");
  ASSERT_TRUE(parse_schedstat(sched));
  for (size_t n = 0; n < sched.size(); ++n)
    EXPECT_FALSE(parse_schedstat(std::string_view(sched).substr(0, n))) << n;

  auto whole = parse_task_stat(stat);
  ASSERT_TRUE(whole);
  ASSERT_LT(whole->processor_end, stat.size());
  EXPECT_EQ(stat[whole->processor_end], ' ');
  for (size_t n = 0; n < stat.size(); ++n) {
    auto cut = parse_task_stat(std::string_view(stat).substr(0, n));
    if (n <= whole->processor_end) {
      EXPECT_FALSE(cut) << n;
    } else {
      ASSERT_TRUE(cut) << n;
      EXPECT_EQ(cut->processor, whole->processor);
      EXPECT_EQ(cut->start_ticks, whole->start_ticks);
      EXPECT_EQ(cut->cpu_ticks, whole->cpu_ticks);
      EXPECT_EQ(cut->processor_end, whole->processor_end);
    }
  }

  for (const char* key : {"State", "Cpus_allowed_list", "nonvoluntary_ctxt_switches"}) {
    auto value = status_field(status, key);
    ASSERT_TRUE(value) << key;
    size_t line_end = status.find('\n', status.find(std::string(key) + ":"));
    for (size_t n = 0; n < status.size(); ++n) {
      auto cut = status_field(std::string_view(status).substr(0, n), key);
      if (n <= line_end)
        EXPECT_FALSE(cut) << key << " cut at " << n;
      else
        EXPECT_EQ(cut, value) << key << " cut at " << n;
    }
  }
}

TEST(LatencyProcfs, FindsStatusFields) {
  std::string status =
      "Name:\tqemu\nCpus_allowed_list:\t2-3\nvoluntary_ctxt_switches:\t10\n"
      "nonvoluntary_ctxt_switches:\t4\n";
  EXPECT_EQ(status_field(status, "nonvoluntary_ctxt_switches"), "4");
  EXPECT_EQ(status_field(status, "voluntary_ctxt_switches"), "10");
  EXPECT_EQ(status_field(status, "Cpus_allowed_list"), "2-3");
  EXPECT_FALSE(status_field(status, "Cpus_allowed"));
}

TEST(LatencyProcfs, ParsesDurations) {
  EXPECT_EQ(parse_duration("10s"), 10s);
  EXPECT_EQ(parse_duration("1ms"), 1ms);
  EXPECT_EQ(parse_duration("500us"), 500us);
  EXPECT_EQ(parse_duration("1.5s"), 1500ms);
  EXPECT_EQ(parse_duration("2m"), 120s);
  EXPECT_EQ(parse_duration("250ns"), 250ns);
  for (const char* bad : {"", "10", "0s", "-1s", "1x", ".5s", "5.s", "1.2.3s", "s", "1 s"})
    EXPECT_FALSE(parse_duration(bad)) << "'" << bad << "'";
  EXPECT_EQ(format_duration(1ms), "1ms");
  EXPECT_EQ(format_duration(1500ms), "1.5s");
}

TEST(LatencyHistogram, QuantilesWithinBucketError) {
  Histogram h;
  EXPECT_EQ(h.quantile(0.5), 0u);
  for (uint64_t v = 1; v <= 100000; ++v) h.add(v * 1000);  // 1 us .. 100 ms
  EXPECT_EQ(h.count(), 100000u);
  EXPECT_EQ(h.max(), 100000000u);
  EXPECT_EQ(h.quantile(1.0), 100000000u);
  for (double q : {0.5, 0.9, 0.99}) {
    double want = q * 100000 * 1000;
    double got = static_cast<double>(h.quantile(q));
    EXPECT_NEAR(got, want, want / 32) << "q " << q;
    EXPECT_GE(got, want);  // upper edge: never understates
  }
  Histogram small;
  for (uint64_t v : {0, 0, 0, 5}) small.add(v);
  EXPECT_EQ(small.quantile(0.5), 0u);
  EXPECT_EQ(small.quantile(0.99), 5u);
  for (uint64_t v :
       {uint64_t{63}, uint64_t{64}, uint64_t{1000}, uint64_t{123456789}, uint64_t{1} << 50})
    EXPECT_GE(Histogram::upper_edge(Histogram::bucket_of(v)),
              std::min<uint64_t>(v, (uint64_t{1} << 42) - 1));
}

Report sample_report() {
  Report r;
  r.pid = 42;
  r.reader = "io_uring";
  r.duration_s = 2;
  r.interval_ns = 1'000'000;
  r.ticks = 2000;
  r.plot_bucket_ns = 100'000'000;
  ThreadReport a;
  a.tid = 43;
  a.name = "CPU 0/KVM";
  a.role = "vcpu 0";
  a.allowed_cpus = "3";
  a.delay_p50_us = 1.25;
  a.delay_p99_us = 80;
  a.delay_max_us = 900;
  a.cpu_share = 0.5;
  a.involuntary_switches_per_s = 12;
  a.outside_allowed_samples = 2;
  a.cpu_samples = 10;
  a.other_tasks = {{7, 7, "kworker/3:1", 4}};
  a.delay_series_us = {1, 2, NAN, 900, 3};
  ThreadReport b;
  b.tid = 44;
  b.name = "<evil & name>";
  b.role = "emulator";
  b.allowed_cpus = "0-1";
  b.allowed_cpus_now = "1";
  b.exited = true;
  b.delay_series_us = {0, 0, 5, 5, 5};
  r.threads = {a, b};
  return r;
}

TEST(LatencyReport, JsonHasTheIssueShape) {
  nlohmann::json j = to_json(sample_report());
  ASSERT_TRUE(j["threads"].is_array());
  ASSERT_EQ(j["threads"].size(), 2u);
  const auto& t = j["threads"][0];
  EXPECT_EQ(t["tid"], 43);
  EXPECT_EQ(t["name"], "CPU 0/KVM");
  EXPECT_EQ(t["role"], "vcpu 0");
  EXPECT_EQ(t["allowed_cpus"], "3");
  EXPECT_DOUBLE_EQ(t["runqueue_delay_us"]["p50"].get<double>(), 1.3);
  EXPECT_DOUBLE_EQ(t["runqueue_delay_us"]["p99"].get<double>(), 80);
  EXPECT_DOUBLE_EQ(t["runqueue_delay_us"]["max"].get<double>(), 900);
  EXPECT_DOUBLE_EQ(t["cpu_share"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(t["involuntary_switches_per_s"].get<double>(), 12);
  EXPECT_EQ(t["outside_allowed_samples"], 2);
  EXPECT_EQ(t["other_tasks"][0]["comm"], "kworker/3:1");
  EXPECT_FALSE(t.contains("allowed_cpus_now"));
  const auto& u = j["threads"][1];
  EXPECT_EQ(u["allowed_cpus_now"], "1");
  EXPECT_TRUE(u["involuntary_switches_per_s"].is_null());  // never observed twice
  EXPECT_TRUE(u["exited"].get<bool>());
}

TEST(LatencyReport, TableShowsEveryThread) {
  std::string table = format_table(sample_report());
  EXPECT_NE(table.find("TID"), std::string::npos);
  EXPECT_NE(table.find("vcpu 0"), std::string::npos);
  EXPECT_NE(table.find("0-1->1"), std::string::npos);  // affinity changed
  EXPECT_NE(table.find("44*"), std::string::npos);     // exited
  EXPECT_NE(table.find("kworker/3:1[7]x4"), std::string::npos);
}

TEST(LatencyReport, SvgHasAxesLegendAndOnePathPerThread) {
  std::string svg = render_svg(sample_report());
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("time (s)"), std::string::npos);
  EXPECT_NE(svg.find("run-queue delay"), std::string::npos);
  size_t paths = 0;
  for (size_t at = svg.find("<path"); at != std::string::npos; at = svg.find("<path", at + 1))
    ++paths;
  EXPECT_EQ(paths, 2u);
  EXPECT_NE(svg.find("&lt;evil &amp; name&gt;"), std::string::npos);  // escaped
  EXPECT_EQ(svg.find("<evil"), std::string::npos);
  // The gap (NaN) starts a new segment: two "M" moves in the first thread's path.
  size_t first = svg.find("stroke=\"#1f77b4\" stroke-width=\"1.5\"");
  ASSERT_NE(first, std::string::npos);
  std::string d = svg.substr(first, svg.find("/>", first) - first);
  EXPECT_EQ(std::count(d.begin(), d.end(), 'M'), 2);
}

// ------------------------------------------------------ a synthetic process

// A child process with threads the test pins and controls. Each thread sets
// its own affinity and nice value, names itself, reports its tid, then runs
// its workload until told to exit. Commands go through a pipe.
class Workload {
 public:
  enum class Kind { kSpin, kBlink, kSleep, kTimerfd };
  struct Spec {
    Kind kind = Kind::kSleep;
    int cpu = -1;      ///< pin here; -1: leave as inherited
    int nice = 0;      ///< setpriority for this thread (root only; ignored if refused)
    std::string name;  ///< thread name; empty: keep
  };

  explicit Workload(std::vector<Spec> specs) : specs_(std::move(specs)) {
    int cmd[2], reply[2];
    if (pipe2(cmd, O_CLOEXEC) != 0 || pipe2(reply, O_CLOEXEC) != 0) std::abort();
    pid_ = fork();
    if (pid_ == 0) {
      close(cmd[1]);
      close(reply[0]);
      child(cmd[0], reply[1]);
      _exit(0);
    }
    close(cmd[0]);
    close(reply[1]);
    cmd_ = cmd[1];
    reply_ = reply[0];
    tids_.resize(specs_.size());
    for (size_t i = 0; i < specs_.size(); ++i) {
      auto [index, tid] = read_tid();
      tids_.at(index) = tid;
    }
  }
  ~Workload() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(cmd_);
    close(reply_);
  }

  int pid() const { return pid_; }
  int tid(size_t i) const { return tids_.at(i); }

  /// Thread i returns from its loop and exits.
  void end_thread(size_t i) { command('x', static_cast<char>(i)); }
  /// Starts one more sleeping thread; returns its tid.
  int add_thread() {
    command('n', 0);
    int t = read_tid().second;
    tids_.push_back(t);
    return t;
  }
  /// The main thread exits alone (a zombie leader); the others go on. No
  /// command works after this one.
  void end_leader() { command('l', 0); }
  /// The whole process exits; reaped here.
  void exit_process() {
    command('q', 0);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  void command(char c, char arg) {
    char msg[2] = {c, arg};
    if (write(cmd_, msg, 2) != 2) std::abort();
  }
  // Threads start in any order: each reports its index with its tid.
  std::pair<int, int> read_tid() {
    int msg[2];
    if (read(reply_, msg, sizeof msg) != sizeof msg) std::abort();
    return {msg[0], msg[1]};
  }

  static void run_thread(const Spec& s, int index, std::atomic<bool>* stop, int reply) {
    if (s.cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(s.cpu, &set);
      sched_setaffinity(0, sizeof set, &set);
    }
    int tid = static_cast<int>(syscall(SYS_gettid));
    if (s.nice != 0) setpriority(PRIO_PROCESS, static_cast<id_t>(tid), s.nice);
    if (!s.name.empty()) prctl(PR_SET_NAME, s.name.c_str());
    int msg[2] = {index, tid};
    if (write(reply, msg, sizeof msg) != sizeof msg) _exit(1);  // atomic: < PIPE_BUF
    auto spin_for = [](std::chrono::microseconds d) {
      auto until = std::chrono::steady_clock::now() + d;
      while (std::chrono::steady_clock::now() < until) {
      }
    };
    while (!stop->load()) {
      switch (s.kind) {
        case Kind::kSpin:
          spin_for(2ms);
          break;
        case Kind::kBlink:
          spin_for(1ms);
          std::this_thread::sleep_for(1ms);
          break;
        case Kind::kSleep:
          std::this_thread::sleep_for(2ms);
          break;
        case Kind::kTimerfd: {  // a timer interrupt every 50 us on its CPU
          static thread_local int fd = -1;
          if (fd < 0) {
            fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
            prctl(PR_SET_TIMERSLACK, 1UL);
            itimerspec its{{0, 50'000}, {0, 50'000}};
            timerfd_settime(fd, 0, &its, nullptr);
          }
          uint64_t n;
          if (read(fd, &n, sizeof n) < 0) std::this_thread::sleep_for(1ms);
          break;
        }
      }
    }
  }

  void child(int cmd, int reply) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
    // With autogroup scheduling, nice only counts within a session's group:
    // a thread's nice < 0 means nothing against other sessions' builds. So
    // take a session (and so a group) of our own and give the group that
    // nice too (root only; ignored when refused or autogroup is off).
    int group_nice = 0;
    for (const Spec& s : specs_) group_nice = std::min(group_nice, s.nice);
    if (group_nice < 0 && setsid() > 0) {
      std::ofstream("/proc/self/autogroup") << group_nice;
    }
    std::vector<std::unique_ptr<std::atomic<bool>>> stops;
    std::vector<std::thread> threads;
    auto start = [&](const Spec& s) {
      stops.push_back(std::make_unique<std::atomic<bool>>(false));
      threads.emplace_back(run_thread, s, static_cast<int>(threads.size()), stops.back().get(),
                           reply);
    };
    for (const Spec& s : specs_) start(s);
    char msg[2];
    while (read(cmd, msg, 2) == 2) {
      if (msg[0] == 'x') {
        size_t i = static_cast<unsigned char>(msg[1]);
        stops.at(i)->store(true);
        threads.at(i).join();
      } else if (msg[0] == 'n') {
        start(Spec{});
      } else if (msg[0] == 'q') {
        _exit(0);
      } else if (msg[0] == 'l') {
        syscall(SYS_exit, 0);  // this thread only
      }
    }
    _exit(0);
  }

  std::vector<Spec> specs_;
  pid_t pid_ = -1;
  int cmd_ = -1, reply_ = -1;
  std::vector<int> tids_;
};

const ThreadReport* find_thread(const Report& r, int tid) {
  for (const ThreadReport& t : r.threads)
    if (t.tid == tid) return &t;
  return nullptr;
}

// Waits (polling, with a generous deadline) until `done` holds.
void wait_for(const std::function<bool()>& done, const char* what) {
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!done()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "timed out waiting for " << what;
    std::this_thread::sleep_for(2ms);
  }
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  sched_getaffinity(0, sizeof set, &set);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

SamplerOptions options_for(int pid) {
  SamplerOptions o;
  o.pid = pid;
  o.interval = 2ms;
  o.host_scan_interval = 50ms;
  return o;
}

// Pins the calling thread (and what it starts) to one CPU while in scope.
class PinSelf {
 public:
  explicit PinSelf(int cpu) {
    sched_getaffinity(0, sizeof old_, &old_);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
  }
  ~PinSelf() { sched_setaffinity(0, sizeof old_, &old_); }

 private:
  cpu_set_t old_;
};

// Samples a thread spinning on `cpu`, with or without a hog spinning there
// too; returns its report. The sampler runs on `sampler_cpu`, away from the
// nice -20 spinners.
ThreadReport spinner(int cpu, int sampler_cpu, bool with_hog, ReadMethod reader) {
  PinSelf pin(sampler_cpu);
  // nice -20 (as root) makes both outweigh the other builds sharing this
  // machine, so that the hog, not the load, decides the difference.
  std::vector<Workload::Spec> specs = {{Workload::Kind::kSpin, cpu, -20, "CPU 0/KVM"}};
  if (with_hog) specs.push_back({Workload::Kind::kSpin, cpu, -20, "hog"});
  Workload w(specs);
  SamplerOptions o = options_for(w.pid());
  o.duration = 1500ms;
  o.reader = reader;
  Sampler s(o);
  s.run();
  Report r = s.report();
  const ThreadReport* t = find_thread(r, w.tid(0));
  EXPECT_NE(t, nullptr);
  if (!t) return {};
  EXPECT_EQ(t->role, "vcpu 0");
  EXPECT_EQ(t->allowed_cpus, std::to_string(cpu));
  EXPECT_GT(t->intervals, 10u);
  if (with_hog) {
    bool hog_seen = false;
    for (const OtherTask& o : t->other_tasks) hog_seen |= o.tid == w.tid(1);
    std::string seen;
    for (const OtherTask& o : t->other_tasks)
      seen += " " + o.comm + "[" + std::to_string(o.tid) + "]x" + std::to_string(o.samples);
    EXPECT_TRUE(hog_seen) << "the hog (" << w.tid(1)
                          << ") was not among the other tasks seen on CPU " << cpu << " in "
                          << r.host_scans << " scans:" << seen;
  }
  return *t;
}

// The comparison uses the kernel's own totals (wait and run time over the
// run), so a sampler that misses ticks on a loaded machine still compares right.
void expect_hog_makes_it_wait(ReadMethod reader) {
  std::vector<int> cpus = allowed_cpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs: one for the sampler";
  int cpu = cpus.back();  // the same CPU for both runs: the same outside load
  ThreadReport alone = spinner(cpu, cpus[0], false, reader);
  ThreadReport shared = spinner(cpu, cpus[0], true, reader);
  // With the hog it runs about half the time and waits the other half;
  // alone it hardly waits.
  std::string both = "alone: wait " + std::to_string(alone.wait_share) + " run " +
                     std::to_string(alone.cpu_share) + " mean delay " +
                     std::to_string(alone.delay_mean_us) + " us; with hog: wait " +
                     std::to_string(shared.wait_share) + " run " +
                     std::to_string(shared.cpu_share) + " mean delay " +
                     std::to_string(shared.delay_mean_us) + " us";
  std::cout << "[ info     ] " << both << "\n";
  EXPECT_GT(shared.wait_share, 0.25) << both;
  EXPECT_GT(shared.wait_share, 2 * alone.wait_share + 0.1) << both;
  EXPECT_GT(shared.delay_mean_us, 2 * alone.delay_mean_us) << both;
  EXPECT_GT(shared.delay_max_us, 1000) << both;
  EXPECT_LT(shared.cpu_share, 0.75) << both;
}

// One test for both readers: run in parallel (ctest -j), two of these would
// spin on the same CPU and be each other's hog.
TEST(LatencySampler, ThreadSharingItsCpuWithAHogWaitsLonger) {
  for (ReadMethod reader : {ReadMethod::kUring, ReadMethod::kPread}) {
    SCOPED_TRACE(reader == ReadMethod::kUring ? "io_uring" : "pread");
    expect_hog_makes_it_wait(reader);
  }
}

TEST(LatencySampler, ThreadMovedToAnotherCpuIsReportedOutsideItsAllowedSet) {
  std::vector<int> cpus = allowed_cpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs";
  int from = cpus[0], to = cpus[1];
  Workload w(
      {{Workload::Kind::kBlink, from, 0, "CPU 1/KVM"}, {Workload::Kind::kSleep, from, 0, ""}});
  SamplerOptions o = options_for(w.pid());
  o.rescan_interval = 20ms;
  o.cpu_sample_interval = o.interval;  // every interval it ran: this test is about where
  BackgroundSampler bg(o);
  wait_for([&] { return bg.ticks() >= 50; }, "50 ticks");
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(to, &set);
  ASSERT_EQ(sched_setaffinity(w.tid(0), sizeof set, &set), 0);
  uint64_t moved_at = bg.ticks();
  wait_for([&] { return bg.ticks() >= moved_at + 200; }, "200 more ticks");
  Report r = bg.stop();

  const ThreadReport* moved = find_thread(r, w.tid(0));
  ASSERT_NE(moved, nullptr);
  EXPECT_EQ(moved->allowed_cpus, std::to_string(from));
  EXPECT_EQ(moved->allowed_cpus_now, std::to_string(to));
  EXPECT_GT(moved->outside_allowed_samples, 0u);
  EXPECT_LT(moved->outside_allowed_samples, moved->cpu_samples);  // it ran on `from` first
  EXPECT_EQ(moved->last_cpu, to);
  const ThreadReport* stayed = find_thread(r, w.tid(1));
  ASSERT_NE(stayed, nullptr);
  EXPECT_EQ(stayed->outside_allowed_samples, 0u);
  EXPECT_TRUE(stayed->allowed_cpus_now.empty());
}

TEST(LatencySampler, ThreadsThatExitOrAppearMidRunDoNotBreakIt) {
  for (ReadMethod reader : {ReadMethod::kUring, ReadMethod::kPread}) {
    Workload w({{Workload::Kind::kBlink, -1, 0, "CPU 0/TCG"},
                {Workload::Kind::kBlink, -1, 0, "IO iothread0"},
                {Workload::Kind::kSleep, -1, 0, "worker"}});
    SamplerOptions o = options_for(w.pid());
    o.reader = reader;
    o.rescan_interval = 20ms;
    BackgroundSampler bg(o);
    wait_for([&] { return bg.ticks() >= 30; }, "30 ticks");
    w.end_thread(1);
    int gone = w.tid(1);
    std::string task = "/proc/" + std::to_string(w.pid()) + "/task/" + std::to_string(gone);
    wait_for([&] { return !fs::exists(task); }, "the thread to exit");
    int added = w.add_thread();
    uint64_t after = bg.ticks();
    wait_for([&] { return bg.ticks() >= after + 100; }, "100 more ticks");
    EXPECT_FALSE(bg.finished());
    Report r = bg.stop();

    const ThreadReport* ended = find_thread(r, gone);
    ASSERT_NE(ended, nullptr);
    EXPECT_TRUE(ended->exited);
    EXPECT_EQ(ended->role, "iothread iothread0");
    const ThreadReport* vcpu = find_thread(r, w.tid(0));
    ASSERT_NE(vcpu, nullptr);
    EXPECT_FALSE(vcpu->exited);
    EXPECT_EQ(vcpu->role, "vcpu 0");
    EXPECT_GT(vcpu->intervals, 100u);
    EXPECT_GT(vcpu->cpu_share, 0.0);
    const ThreadReport* fresh = find_thread(r, added);
    ASSERT_NE(fresh, nullptr) << "a thread started mid-run was not sampled";
    EXPECT_GT(fresh->intervals, 0u);
    EXPECT_FALSE(r.process_exited);
  }
}

// A leader that exits before its threads stays listed as a zombie: it is
// reported once, as exited, and the run goes on with the others.
TEST(LatencySampler, LeaderThatExitsFirstIsReportedOnceAndTheOthersGoOn) {
  Workload w({{Workload::Kind::kBlink, -1, 0, "CPU 0/KVM"}});
  SamplerOptions o = options_for(w.pid());
  o.rescan_interval = 10ms;
  BackgroundSampler bg(o);
  wait_for([&] { return bg.ticks() >= 20; }, "20 ticks");
  w.end_leader();
  std::string status = "/proc/" + std::to_string(w.pid()) + "/status";
  wait_for(
      [&] {
        std::ifstream in(status);
        std::string line;
        while (std::getline(in, line))
          if (line.rfind("State:", 0) == 0) return line.find('Z') != std::string::npos;
        return false;
      },
      "the leader to be a zombie");
  uint64_t after = bg.ticks();
  wait_for([&] { return bg.ticks() >= after + 100; }, "100 more ticks (about 20 rescans)");
  EXPECT_FALSE(bg.finished());
  Report r = bg.stop();
  int leaders = 0;
  for (const ThreadReport& t : r.threads)
    if (t.tid == w.pid()) {
      ++leaders;
      EXPECT_TRUE(t.exited);
    }
  EXPECT_EQ(leaders, 1) << "the zombie leader was taken for a new thread";
  const ThreadReport* vcpu = find_thread(r, w.tid(0));
  ASSERT_NE(vcpu, nullptr);
  EXPECT_FALSE(vcpu->exited);
  EXPECT_GT(vcpu->intervals, 100u);
  EXPECT_FALSE(r.process_exited);
}

// A thread's CPU is sampled once per cpu_sample_interval of running, not
// every interval: stat is the dear file.
TEST(LatencySampler, CpuIsSampledOncePerCpuSampleInterval) {
  Workload w({{Workload::Kind::kBlink, -1, 0, "CPU 0/KVM"}});
  for (auto every : {2ms, 16ms}) {
    SamplerOptions o = options_for(w.pid());
    o.cpu_sample_interval = every;
    o.duration = 400ms;
    o.host_scan_interval = 0ns;
    Sampler s(o);
    s.run();
    const ThreadReport* t = find_thread(s.report(), w.tid(0));
    ASSERT_NE(t, nullptr);
    uint64_t ran = t->intervals;  // at most: it blinks every ms, so it ran in most
    SCOPED_TRACE("every " + format_duration(every) + ": " + std::to_string(t->cpu_samples) +
                 " CPU samples in " + std::to_string(ran) + " intervals");
    EXPECT_GT(t->cpu_samples, 0u);
    uint64_t cap = every == 2ms ? ran : ran / 8;
    EXPECT_LE(t->cpu_samples, cap + 1);
    EXPECT_GE(t->cpu_samples, cap / 4);  // and it keeps sampling (load may skip a few)
    if (every == 2ms) {
      EXPECT_GT(t->cpu_samples, ran / 4);  // in every interval it ran
    }
  }
}

// With O_NONBLOCK files and reads sized to the files, io_uring runs every
// read inline: nothing goes to io-wq (counted by the kernel's own
// tracepoint), one io_uring_enter per tick.
TEST(LatencySampler, IoUringReadsRunInlineInOneEnterPerTick) {
  if (!fs::exists("/sys/kernel/tracing/events"))
    mount("nodev", "/sys/kernel/tracing", "tracefs", 0, nullptr);  // as root; else skipped
  TracepointCounter iowq("io_uring/io_uring_queue_async_work");
  if (!iowq.ok()) GTEST_SKIP() << "needs root and tracefs (/sys/kernel/tracing)";
  {  // The counter sees a read that goes to io-wq: one asking for more than the file has.
    io_uring ring;
    ASSERT_EQ(io_uring_queue_init(4, &ring, 0), 0);
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    char b[256];
    io_uring_prep_read(io_uring_get_sqe(&ring), fd, b, sizeof b, 0);
    io_uring_submit_and_wait(&ring, 1);
    close(fd);
    io_uring_queue_exit(&ring);
    ASSERT_GE(iowq.count(), 1u) << "the tracepoint does not count io-wq hand-overs";
  }
  Workload w({{Workload::Kind::kBlink, -1, 0, "CPU 0/KVM"},
              {Workload::Kind::kBlink, -1, 0, "CPU 1/KVM"},
              {Workload::Kind::kSleep, -1, 0, "IO iothread0"}});
  SamplerOptions o = options_for(w.pid());
  o.interval = 1ms;
  o.duration = 300ms;
  o.host_scan_interval = 0ns;
  Sampler s(o);
  uint64_t before = iowq.count();
  s.run();
  uint64_t handed = iowq.count() - before;
  Sampler::Stats st = s.stats();
  EXPECT_GT(st.reads, 4 * st.ticks);
  // Only a read that came short goes to io-wq: a file that shrank, or one
  // read whole after it grew (a counter gaining a digit: often in a young
  // thread like these, rare later). Every read would without O_NONBLOCK.
  EXPECT_LE(handed, st.short_reads);
  EXPECT_LE(st.short_reads * 10, st.reads) << st.short_reads << " short of " << st.reads;
  EXPECT_LE(st.rereads * 10, st.reads) << st.rereads << " read again of " << st.reads;
  EXPECT_LE(st.uring_enters, st.ticks + handed + 1);
}

TEST(LatencySampler, EndsByItselfWhenTheProcessExits) {
  Workload w({{Workload::Kind::kBlink, -1, 0, "CPU 0/KVM"}});
  int pid = w.pid();
  SamplerOptions o = options_for(pid);
  o.rescan_interval = 20ms;
  BackgroundSampler bg(o);
  wait_for([&] { return bg.ticks() >= 20; }, "20 ticks");
  w.exit_process();
  wait_for([&] { return bg.finished(); }, "the sampler to notice the exit");
  std::string path = testing::TempDir() + "/latency_log.json";
  bg.stop_and_write(path);
  std::ifstream in(path);
  nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_TRUE(j["process_exited"].get<bool>());
  EXPECT_EQ(j["pid"], pid);
  ASSERT_FALSE(j["threads"].empty());
}

TEST(LatencySampler, ThreadsBeyondMaxThreadsAreCountedNotSampled) {
  Workload w({{}, {}, {}, {}});  // 4 sleeping threads + the main one
  SamplerOptions o = options_for(w.pid());
  o.max_threads = 2;
  o.duration = 100ms;
  o.rescan_interval = 10ms;
  Sampler s(o);
  s.run();
  Report r = s.report();
  EXPECT_EQ(r.threads.size(), 2u);
  EXPECT_EQ(r.untracked_threads, 3u);
}

TEST(LatencySampler, UnknownPidIsAnEnvironmentError) {
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);  // now a pid nobody has
  try {
    Sampler s(options_for(child));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kEnvironment);
    EXPECT_NE(std::string(e.what()).find(std::to_string(child)), std::string::npos);
  }
}

// ------------------------------------------------------------ command line

// ------------------------------------------------------------- BPF source
// The BPF source against real threads on the real kernel's scheduler: each
// test names what the kernel must have seen, not how fast it was.

bool bpf_can_run(std::string* why) {
  *why = bpf_unavailable_reason();
  if (!why->empty()) return false;
  try {
    Workload w({{Workload::Kind::kSleep, -1, 0, ""}});
    SamplerOptions o;
    o.pid = w.pid();
    BpfSource probe(o);
  } catch (const Error& e) {
    *why = e.what();
    return false;
  }
  return true;
}

#define REQUIRE_BPF()                                                   \
  do {                                                                  \
    static std::string why;                                             \
    static bool ok = bpf_can_run(&why);                                 \
    if (!ok) GTEST_SKIP() << "the BPF source cannot run here: " << why; \
  } while (0)

Report profile_bpf(int pid, std::chrono::nanoseconds duration,
                   const std::function<void(SamplerOptions&)>& tune = {}) {
  SamplerOptions o;
  o.pid = pid;
  o.source = Source::kBpf;
  o.duration = duration;
  o.window = 10ms;
  if (tune) tune(o);
  BpfSource s(o);
  s.run();
  return s.report();
}

const Blocker* find_blocker(const std::vector<Blocker>& list, const std::string& kind, int id) {
  for (const Blocker& b : list)
    if (b.kind == kind && (id < 0 || b.id == id)) return &b;
  return nullptr;
}

std::string blockers_text(const ThreadReport& t) {
  std::string s;
  for (const Blocker& b : t.blockers)
    s += " " + blocker_label(b) + "=" + std::to_string(b.time_us) + "us/" + std::to_string(b.count);
  s += " | noise:";
  for (const Blocker& b : t.noise)
    s += " " + blocker_label(b) + "=" + std::to_string(b.time_us) + "us/" + std::to_string(b.count);
  return s;
}

TEST(LatencyBpf, HogsPreemptionIsBlamedOnTheHogsPid) {
  REQUIRE_BPF();
  std::vector<int> cpus = allowed_cpus();
  int cpu = cpus.back();
  Workload w(
      {{Workload::Kind::kSpin, cpu, -20, "CPU 0/KVM"}, {Workload::Kind::kSpin, cpu, -20, "hog"}});
  Report r = profile_bpf(w.pid(), 1s);
  EXPECT_EQ(r.source, "bpf");
  const ThreadReport* t = find_thread(r, w.tid(0));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->role, "vcpu 0");
  EXPECT_EQ(t->allowed_cpus, std::to_string(cpu));
  // Two equal spinners on one CPU take turns: each waits about half the time,
  // every wait a preemption (neither sleeps).
  EXPECT_GT(t->preempt.count, 10u);
  EXPECT_GT(t->preempt.total_us, 200'000) << blockers_text(*t);
  EXPECT_GT(t->wait_share, 0.2);
  ASSERT_FALSE(t->blockers.empty());
  const Blocker* hog = find_blocker(t->blockers, "task", w.tid(1));
  ASSERT_NE(hog, nullptr) << "the hog " << w.tid(1) << " is not blamed:" << blockers_text(*t);
  EXPECT_EQ(hog->pid, w.pid());
  EXPECT_EQ(hog->name, "hog");
  // The hog took most of the spinner's waits.
  EXPECT_GT(hog->time_us, 0.5 * t->preempt.total_us) << blockers_text(*t);
  EXPECT_EQ(&t->blockers.front(), hog) << blockers_text(*t);
  // Every wait counted once: the histogram holds them all, the worst is exact.
  uint64_t in_buckets = 0;
  for (const auto& [edge, n] : t->preempt.buckets) in_buckets += n;
  EXPECT_EQ(in_buckets, t->preempt.count);
  EXPECT_DOUBLE_EQ(t->worst_wait_us, std::max(t->preempt.max_us, t->wakeup.max_us));
  EXPECT_EQ(t->worst_wait_cpu, cpu);
  EXPECT_GT(r.bpf_events, 0u);
  EXPECT_GT(r.bpf_ns_per_event, 0.0);
}

TEST(LatencyBpf, TimerWakeupOnABusyCpuShowsWakeupLatencyBlamedOnWhatRan) {
  REQUIRE_BPF();
  std::vector<int> cpus = allowed_cpus();
  int cpu = cpus.back();
  // A sleeper beside a nice -20 hog: each 2 ms sleep ends in a timer wakeup
  // that must wait for the hog (its group at nice -20 outweighs other work).
  Workload w(
      {{Workload::Kind::kSleep, cpu, 0, "CPU 1/KVM"}, {Workload::Kind::kSpin, cpu, -20, "hog"}});
  Report r = profile_bpf(w.pid(), 1s);
  const ThreadReport* t = find_thread(r, w.tid(0));
  ASSERT_NE(t, nullptr);
  EXPECT_GT(t->wakeup.count, 20u) << blockers_text(*t);
  EXPECT_GT(t->wakeup.max_us, 0.0);
  EXPECT_GE(t->wakeup.p99_us, t->wakeup.p50_us);
  // The sleeper never runs long enough to be preempted much: its waits are wakeups.
  EXPECT_GT(t->wakeup.total_us, t->preempt.total_us);
  const Blocker* hog = find_blocker(t->blockers, "task", w.tid(1));
  ASSERT_NE(hog, nullptr) << blockers_text(*t);
  EXPECT_GT(hog->count, 10u);
  // The waking -> wakeup part is kept apart, and is small.
  EXPECT_GT(t->waking.count, 0u);
  EXPECT_LT(t->waking.p50_us, t->wakeup.p99_us + 1);
}

TEST(LatencyBpf, ThreadMovedOffItsSetIsReportedWithItsMigrationAndTimeOutside) {
  REQUIRE_BPF();
  std::vector<int> cpus = allowed_cpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs";
  int from = cpus[0], to = cpus[1];
  Workload w(
      {{Workload::Kind::kBlink, from, 0, "CPU 1/KVM"}, {Workload::Kind::kSleep, from, 0, ""}});
  SamplerOptions o;
  o.pid = w.pid();
  o.source = Source::kBpf;
  BpfSource s(o);
  std::thread mover([&] {
    std::this_thread::sleep_for(200ms);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(to, &set);
    sched_setaffinity(w.tid(0), sizeof set, &set);
    std::this_thread::sleep_for(300ms);
    s.stop();
  });
  s.run();
  mover.join();
  Report r = s.report();
  const ThreadReport* moved = find_thread(r, w.tid(0));
  ASSERT_NE(moved, nullptr);
  EXPECT_EQ(moved->allowed_cpus, std::to_string(from));
  EXPECT_EQ(moved->allowed_cpus_now, std::to_string(to));
  EXPECT_GE(moved->migrations, 1u);
  EXPECT_GT(moved->outside_us, 10'000);  // it ran ~50% of 300 ms there
  EXPECT_GT(moved->outside_allowed_samples, 0u);
  EXPECT_LT(moved->outside_allowed_samples, moved->cpu_samples);  // it ran on `from` first
  const ThreadReport* stayed = find_thread(r, w.tid(1));
  ASSERT_NE(stayed, nullptr);
  EXPECT_EQ(stayed->outside_us, 0);
  EXPECT_EQ(stayed->outside_allowed_samples, 0u);
  EXPECT_TRUE(stayed->allowed_cpus_now.empty());
}

TEST(LatencyBpf, TimerInterruptsOnASpinningThreadsCpuAreItsNoise) {
  REQUIRE_BPF();
  std::vector<int> cpus = allowed_cpus();
  int cpu = cpus.back();
  // A timerfd firing every 50 us on the spinner's CPU: each expiry is a local
  // timer interrupt taken while the spinner runs (and wakes the reader).
  Workload w(
      {{Workload::Kind::kSpin, cpu, 0, "CPU 0/KVM"}, {Workload::Kind::kTimerfd, cpu, 0, "timer"}});
  Report r = profile_bpf(w.pid(), 1s);
  const ThreadReport* t = find_thread(r, w.tid(0));
  ASSERT_NE(t, nullptr);
  EXPECT_GT(t->noise_us, 0);
  const Blocker* timer = find_blocker(t->noise, "local_timer", -1);
  ASSERT_NE(timer, nullptr) << blockers_text(*t);
  // Well above a scheduler tick's rate (at most 1000/s): the timerfd's.
  EXPECT_GT(timer->count, 2000u) << blockers_text(*t);
  EXPECT_GT(timer->time_us, 0);
  // And the woken reader preempts it: blamed by tid.
  EXPECT_NE(find_blocker(t->blockers, "task", w.tid(1)), nullptr) << blockers_text(*t);
}

TEST(LatencyBpf, ThreadsThatComeAndGoAreTrackedByTheKernelSide) {
  REQUIRE_BPF();
  Workload w({{Workload::Kind::kBlink, -1, 0, "CPU 0/TCG"},
              {Workload::Kind::kBlink, -1, 0, "IO iothread0"}});
  SamplerOptions o;
  o.pid = w.pid();
  o.source = Source::kBpf;
  o.window = 10ms;
  o.roles = {{w.tid(0), "vcpu 0"}};
  BpfSource s(o);
  int gone = w.tid(1), added = 0;
  std::thread churn([&] {
    std::this_thread::sleep_for(100ms);
    w.end_thread(1);
    added = w.add_thread();  // a slot the kernel side hands out
    std::this_thread::sleep_for(200ms);
    s.stop();
  });
  s.run();
  churn.join();
  Report r = s.report();
  const ThreadReport* ended = find_thread(r, gone);
  ASSERT_NE(ended, nullptr);
  EXPECT_TRUE(ended->exited);
  EXPECT_EQ(ended->role, "iothread iothread0");
  const ThreadReport* vcpu = find_thread(r, w.tid(0));
  ASSERT_NE(vcpu, nullptr);
  EXPECT_EQ(vcpu->role, "vcpu 0");
  EXPECT_FALSE(vcpu->exited);
  EXPECT_GT(vcpu->wakeup.count, 20u);
  const ThreadReport* fresh = find_thread(r, added);
  ASSERT_NE(fresh, nullptr) << "a thread started mid-run was not tracked";
  EXPECT_GT(fresh->wakeup.count, 0u);  // sched_wakeup_new, then its sleeps
  EXPECT_FALSE(fresh->delay_series_us.empty());
  EXPECT_FALSE(r.process_exited);
}

TEST(LatencyBpf, EndsWhenTheProcessExitsThroughItsPidfd) {
  REQUIRE_BPF();
  Workload w({{Workload::Kind::kBlink, -1, 0, ""}});
  SamplerOptions o;
  o.pid = w.pid();
  o.source = Source::kBpf;
  BpfSource s(o);
  std::thread quit([&] {
    std::this_thread::sleep_for(100ms);
    w.exit_process();
  });
  s.run();  // no duration, no stop(): the pidfd ends it
  quit.join();
  EXPECT_TRUE(s.report().process_exited);
}

// The fallback gives the same verdict: a thread sharing its CPU with a hog
// waits about half the time, from every source.
TEST(LatencyBpf, EverySourceGivesTheHogVerdict) {
  REQUIRE_BPF();
  std::vector<int> cpus = allowed_cpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs: one for the sampler";
  int cpu = cpus.back();
  PinSelf pin(cpus[0]);
  for (Source source : {Source::kBpf, Source::kTracefs, Source::kProcfs}) {
    SCOPED_TRACE(to_string(source));
    Workload w(
        {{Workload::Kind::kSpin, cpu, -20, "CPU 0/KVM"}, {Workload::Kind::kSpin, cpu, -20, "hog"}});
    SamplerOptions o = options_for(w.pid());
    o.source = source;
    o.duration = 1s;
    ProfilerChoice c = make_profiler(o);
    EXPECT_EQ(c.source, source == Source::kBpf ? Source::kBpf : Source::kProcfs);
    EXPECT_EQ(c.notice.empty(), source != Source::kTracefs) << c.notice;
    c.profiler->run();
    Report r = c.profiler->report();
    EXPECT_EQ(r.source, source == Source::kBpf ? "bpf" : "procfs");
    const ThreadReport* t = find_thread(r, w.tid(0));
    ASSERT_NE(t, nullptr);
    EXPECT_GT(t->wait_share, 0.25);
    EXPECT_LT(t->cpu_share, 0.75);
    EXPECT_GT(t->delay_max_us, 1000);
  }
}

struct CliRun {
  int code = -1;
  std::string out;  ///< stdout, and stderr unless split_stderr
  std::string err;  ///< stderr with split_stderr
};

CliRun passlaunch(const std::string& args, const std::string& env = "", bool split_stderr = false) {
  std::string err_file = testing::TempDir() + "/latency_cli_stderr." + std::to_string(getpid());
  std::string cmd = env + " " + shell_quote(PL_PASSLAUNCH) + " " + args +
                    (split_stderr ? " 2>" + shell_quote(err_file) : " 2>&1");
  CliRun r;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (split_stderr) {
    std::ifstream in(err_file);
    r.err.assign(std::istreambuf_iterator<char>(in), {});
  }
  return r;
}

/// The warning `latency NAME` gives when the VM has no control socket.
constexpr const char* kNamesWarning = "has no control socket: roles come from thread names";

TEST(LatencyCli, BadArgumentsExit2) {
  EXPECT_EQ(passlaunch("latency").code, 2);              // no target
  EXPECT_EQ(passlaunch("latency vm1 --pid 1").code, 2);  // both
  EXPECT_EQ(passlaunch("latency --pid 0").code, 2);
  EXPECT_EQ(passlaunch("latency --pid abc").code, 2);
  CliRun r = passlaunch("latency --pid 1 --duration 10");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("--duration '10' is not a duration"), std::string::npos) << r.out;
  EXPECT_EQ(passlaunch("latency --pid 1 --interval 2s --duration 1s").code, 2);
  EXPECT_EQ(passlaunch("latency --pid 1 --interval 1us").code, 2);
  EXPECT_EQ(passlaunch("latency --pid 1 --reader mmap").code, 2);
  r = passlaunch("latency --pid 1 --cpu-sample 5");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("--cpu-sample '5' is not a duration"), std::string::npos) << r.out;
  EXPECT_EQ(passlaunch("latency --pid 1 --duration 1s --csv /nonexistent/dir/x.csv").code, 2);
  EXPECT_EQ(passlaunch("latency ../etc --duration 1s").code, 2);
  r = passlaunch("latency --pid 1 --source ebpf");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("expected auto, bpf, tracefs or procfs"), std::string::npos) << r.out;
  EXPECT_EQ(passlaunch("latency --pid 1 --threshold 100").code, 2);
  EXPECT_EQ(passlaunch("latency --pid 1 --window 10us").code, 2);
}

TEST(LatencyCli, UnknownPidOrStoppedVmExit3) {
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  CliRun r = passlaunch("latency --pid " + std::to_string(child) + " --duration 100ms");
  EXPECT_EQ(r.code, 3) << r.out;

  std::string runtime = testing::TempDir() + "/latency_rt_none";
  fs::create_directories(runtime);
  r = passlaunch("latency gamevm --duration 100ms", "XDG_RUNTIME_DIR=" + shell_quote(runtime));
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("VM 'gamevm' is not running"), std::string::npos) << r.out;

  // A stale qemu.pid (the VM is gone) is not running either.
  fs::create_directories(runtime + "/passlaunch/gamevm");
  std::ofstream(runtime + "/passlaunch/gamevm/qemu.pid") << child << "\n";
  r = passlaunch("latency gamevm --duration 100ms", "XDG_RUNTIME_DIR=" + shell_quote(runtime));
  EXPECT_EQ(r.code, 3) << r.out;
}

TEST(LatencyCli, SamplesAVmByNameAsJsonCsvAndPlot) {
  Workload w({{Workload::Kind::kBlink, -1, 0, "CPU 0/KVM"},
              {Workload::Kind::kSleep, -1, 0, "IO iothread0"},
              {Workload::Kind::kSleep, -1, 0, "worker"}});
  std::string runtime = testing::TempDir() + "/latency_rt";
  fs::create_directories(runtime + "/passlaunch/gamevm");
  std::ofstream(runtime + "/passlaunch/gamevm/qemu.pid") << w.pid() << "\n";
  std::string csv = testing::TempDir() + "/latency.csv";
  std::string svg = testing::TempDir() + "/latency.svg";
  CliRun r =
      passlaunch("latency gamevm --source procfs --duration 400ms --interval 2ms --json --csv " +
                     shell_quote(csv) + " --plot " + shell_quote(svg),
                 "XDG_RUNTIME_DIR=" + shell_quote(runtime), true);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find(kNamesWarning), std::string::npos) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["pid"], w.pid());
  EXPECT_EQ(j["vm"], "gamevm");
  // The sampler's own account: 4 threads, schedstat each every tick.
  EXPECT_GE(j["reads_per_tick"].get<double>(), 4.0) << j.dump();
  EXPECT_EQ(j["cpu_sample_interval_us"], 50000.0);
  EXPECT_TRUE(j["short_reads"].is_number_unsigned() && j["rereads"].is_number_unsigned());
  std::map<std::string, nlohmann::json> by_role;
  for (const auto& t : j["threads"]) {
    for (const char* key : {"tid", "name", "role", "allowed_cpus", "runqueue_delay_us", "cpu_share",
                            "involuntary_switches_per_s", "outside_allowed_samples"})
      EXPECT_TRUE(t.contains(key)) << key << " missing in " << t.dump();
    EXPECT_TRUE(t["allowed_cpus"].is_string());
    for (const char* key : {"p50", "p99", "max"})
      EXPECT_TRUE(t["runqueue_delay_us"][key].is_number()) << key;
    EXPECT_TRUE(t["involuntary_switches_per_s"].is_number()) << t.dump();
    by_role[t["role"]] = t;
  }
  EXPECT_EQ(by_role.count("vcpu 0"), 1u);
  EXPECT_EQ(by_role.count("iothread iothread0"), 1u);
  EXPECT_EQ(by_role.count("emulator"), 1u);  // the main thread and "worker": one key
  EXPECT_EQ(by_role["vcpu 0"]["tid"], w.tid(0));
  EXPECT_GT(by_role["vcpu 0"]["cpu_share"].get<double>(), 0.0);

  std::ifstream in(csv);
  std::string header, row;
  std::getline(in, header);
  EXPECT_EQ(header, "time_us,tid,role,run_us,runqueue_delay_us,timeslices,cpu,outside_allowed");
  size_t rows = 0, with_cpu = 0;
  while (std::getline(in, row)) {
    ++rows;
    EXPECT_EQ(std::count(row.begin(), row.end(), ','), 7) << row;
    with_cpu += row.substr(row.size() - 2) != ",,";  // the CPU columns, when sampled
  }
  EXPECT_GE(rows, 4 * 5u);  // 4 threads, a few ticks each even on a loaded machine
  // The CPU is sampled every 10 ms of running (5 ticks of 2 ms), not every row.
  EXPECT_GT(with_cpu, 0u);
  EXPECT_LT(with_cpu, rows);

  std::ifstream plot(svg);
  std::string text((std::istreambuf_iterator<char>(plot)), {});
  EXPECT_EQ(text.rfind("<svg", 0), 0u);
  EXPECT_NE(text.find("vcpu 0"), std::string::npos);
}

/// `passlaunch latency --pid PID --source SOURCE --duration 10m --json` as a
/// child whose stdout we read: for the interrupt tests.
struct InterruptedCli {
  pid_t pid;
  int out;
  /// Reads the report to its end and reaps the child: {wait status, stdout}.
  std::pair<int, std::string> finish() {
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = read(out, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
    close(out);
    int status = 0;
    waitpid(pid, &status, 0);
    return {status, text};
  }
};

InterruptedCli start_latency_json(pid_t target, const char* source) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  std::string pid = std::to_string(target);
  pid_t cli = fork();
  if (cli == 0) {
    dup2(out[1], 1);
    execl(PL_PASSLAUNCH, PL_PASSLAUNCH, "latency", "--pid", pid.c_str(), "--source", source,
          "--duration", "10m", "--json", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  return {cli, out[0]};
}

TEST(LatencyCli, InterruptStopsEarlyAndStillPrintsTheReport) {
  Workload w({{Workload::Kind::kBlink, -1, 0, "CPU 0/KVM"}});
  InterruptedCli c = start_latency_json(w.pid(), "procfs");
  pid_t cli = c.pid;
  // SIGINT is taken by a waiter thread, started before sampling begins:
  // once a second thread exists, the interrupt stops the sampler.
  wait_for([&] { return list_threads(cli).size() >= 2; }, "the sampler to start");
  kill(cli, SIGINT);
  auto [status, text] = c.finish();
  ASSERT_TRUE(WIFEXITED(status)) << "killed by the interrupt instead of stopping";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  nlohmann::json j = nlohmann::json::parse(text);
  EXPECT_LT(j["duration_s"].get<double>(), 300);
  EXPECT_FALSE(j["threads"].empty());
}

// Real QEMU (paused; KVM or TCG) with a qemu.pid but no passlaunch control
// socket: its debug-threads names give the roles, and a warning says so.
// (tests/run_test.cpp: with a control socket, roles come from QMP.)
TEST(LatencyCliQemu, ThreadsOfQemuGetTheirRolesByVmName) {
  test::Qemu qemu(test::paused_qemu_argv(
      {"-name", "lat,debug-threads=on", "-smp", "2", "-object", "iothread,id=iothread0"}));
  pid_t pid = qemu.pid();
  // QEMU names its vCPU threads once the machine is built.
  wait_for(
      [&] {
        std::vector<ThreadInfo> threads = list_threads(pid);
        return std::count_if(threads.begin(), threads.end(),
                             [](const ThreadInfo& t) { return t.name.rfind("CPU ", 0) == 0; }) == 2;
      },
      "QEMU's vCPU threads");
  std::string runtime = testing::TempDir() + "/latency_rt_qemu";
  fs::create_directories(runtime + "/passlaunch/lat");
  std::ofstream(runtime + "/passlaunch/lat/qemu.pid") << pid << "\n";
  CliRun r = passlaunch("latency lat --duration 300ms --interval 2ms --json",
                        "XDG_RUNTIME_DIR=" + shell_quote(runtime), true);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("warning: VM 'lat' " + std::string(kNamesWarning)), std::string::npos)
      << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  std::map<std::string, std::string> role_of;  // name -> role
  for (const auto& t : j["threads"]) role_of[t["name"]] = t["role"];
  std::string accel = test::kvm_works() ? "KVM" : "TCG";
  EXPECT_EQ(role_of["CPU 0/" + accel], "vcpu 0") << j.dump();
  EXPECT_EQ(role_of["CPU 1/" + accel], "vcpu 1") << j.dump();
  EXPECT_EQ(role_of["IO iothread0"], "iothread iothread0") << j.dump();
  EXPECT_EQ(role_of["qemu-system-x86"], "emulator") << j.dump();
}

TEST(LatencyCli, TableIsTheDefault) {
  Workload w({{Workload::Kind::kSleep, -1, 0, "CPU 0/KVM"}});
  CliRun r =
      passlaunch("latency --pid " + std::to_string(w.pid()) + " --source procfs --duration 200ms");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.find(kNamesWarning), std::string::npos) << "--pid uses names, silently";
  EXPECT_NE(r.out.find("P99us"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("vcpu 0"), std::string::npos) << r.out;
}

TEST(LatencyCli, BpfSourceReportsEveryWaitAsTableJsonCsvAndPlot) {
  REQUIRE_BPF();
  Workload w(
      {{Workload::Kind::kBlink, -1, 0, "CPU 0/KVM"}, {Workload::Kind::kSleep, -1, 0, "worker"}});
  std::string pid = std::to_string(w.pid());
  CliRun r = passlaunch("latency --pid " + pid + " --duration 300ms", "", true);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "") << "auto picks bpf here, silently";
  EXPECT_NE(r.out.find("source bpf"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("WAKEUP p50/p99/max us"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("% of a core in the kernel"), std::string::npos) << r.out;

  std::string csv = testing::TempDir() + "/latency_bpf." + pid + ".csv";
  std::string svg = testing::TempDir() + "/latency_bpf." + pid + ".svg";
  r = passlaunch("latency --pid " + pid +
                     " --source bpf --duration 300ms --window 10ms --threshold 1us --json --csv " +
                     shell_quote(csv) + " --plot " + shell_quote(svg),
                 "", true);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["source"], "bpf");
  EXPECT_EQ(j["threshold_us"], 1.0);
  EXPECT_FALSE(j["events"].empty()) << "every wait over 1 us is streamed";
  EXPECT_GT(j["cost"]["bpf_events"].get<uint64_t>(), 0u);
  bool vcpu_seen = false;
  for (const auto& t : j["threads"]) {
    for (const char* key :
         {"tid", "role", "runqueue_delay_us", "cpu_share", "wakeup_us", "preempt_us", "waking_us",
          "worst_wait", "blockers", "noise", "noise_us", "migrations", "outside_allowed_us"})
      EXPECT_TRUE(t.contains(key)) << key << " missing in " << t.dump();
    if (t["role"] != "vcpu 0") continue;
    vcpu_seen = true;
    EXPECT_GT(t["wakeup_us"]["count"].get<uint64_t>(), 20u) << t.dump();
    EXPECT_FALSE(t["wakeup_us"]["buckets"].empty());
  }
  EXPECT_TRUE(vcpu_seen) << j.dump();
  std::ifstream in(csv);
  std::string header, row;
  std::getline(in, header);
  EXPECT_EQ(header, "time_s,tid,role,max_wait_us,waits,wait_us,run_us,noise_us,migrations");
  size_t rows = 0;
  while (std::getline(in, row)) ++rows;
  EXPECT_GE(rows, 3 * 5u);  // 3 threads, 10 ms windows
  std::ifstream plot(svg);
  std::string text((std::istreambuf_iterator<char>(plot)), {});
  EXPECT_EQ(text.rfind("<svg", 0), 0u);
  EXPECT_NE(text.find("vcpu 0"), std::string::npos);
  EXPECT_NE(text.find("Who was in the way"), std::string::npos) << "the blocker bar chart";
}

TEST(LatencyCli, ForcedSourcesSayWhichIsUsed) {
  REQUIRE_BPF();
  Workload w({{Workload::Kind::kSleep, -1, 0, "CPU 0/KVM"}});
  std::string pid = std::to_string(w.pid());
  CliRun r =
      passlaunch("latency --pid " + pid + " --source tracefs --duration 100ms --json", "", true);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("latency: source procfs"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["source"], "procfs");
  r = passlaunch("latency --pid " + pid + " --source procfs --duration 100ms --json", "", true);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(nlohmann::json::parse(r.out)["source"], "procfs");
}

// The BPF source takes SIGINT through its signalfd, in its one io_uring wait.
TEST(LatencyCli, InterruptStopsTheBpfSourceAndStillPrintsTheReport) {
  REQUIRE_BPF();
  Workload w({{Workload::Kind::kBlink, -1, 0, "CPU 0/KVM"}});
  InterruptedCli c = start_latency_json(w.pid(), "bpf");
  pid_t cli = c.pid;
  // SIGINT is blocked (SigBlk bit 2) before the profiler is made; from then
  // on it waits in the signalfd.
  auto blocked = [&] {
    std::ifstream in("/proc/" + std::to_string(cli) + "/status");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("SigBlk:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) & 2) != 0;
    return false;
  };
  wait_for(blocked, "the profiler to block SIGINT");
  kill(cli, SIGINT);
  auto [status, text] = c.finish();
  ASSERT_TRUE(WIFEXITED(status)) << "killed by the interrupt instead of stopping";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  nlohmann::json j = nlohmann::json::parse(text);
  EXPECT_EQ(j["source"], "bpf");
  EXPECT_LT(j["duration_s"].get<double>(), 300);
}

}  // namespace
}  // namespace pl::latency
