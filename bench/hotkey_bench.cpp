// What a host hotkey that sees keys under QEMU's grab would cost each key of
// the guest: passlaunch would grab the keyboard itself and copy every event
// to a uinput clone that QEMU reads (one more read, write and thread wake-up
// per event). Baseline: the reader gets the device's events directly (what
// QEMU does with input-linux). Each round writes one key event + SYN and
// waits until the reader has it; latency is write -> read, CLOCK_MONOTONIC.
//
// With /dev/uinput: a real uinput keyboard and a real uinput clone. Without
// it (CONFIG_INPUT_UINPUT not set, as on this project's CI machine): the
// same hop with pipes -- the thread wake-up and copy the clone adds, without
// the input core's own work, so a lower bound.
//
// Usage: hotkey_bench [ROUNDS] (default 2000). Prints medians, p99, the
// ratio and the added microseconds per event; passlaunch keeps direct
// passthrough when the forwarder adds more than ~50 us (run/hotkey.h).
#include <dirent.h>
#include <fcntl.h>
#include <linux/input.h>
#include <linux/uinput.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Stats {
  double median, p99;
};

Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[v.size() * 99 / 100]};
}

/// A uinput keyboard (KEY_A only); returns its fd, sets `node` to /dev/input/eventN.
int make_uinput(const char* name, std::string& node) {
  int fd = ::open("/dev/uinput", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -1;
  ::ioctl(fd, UI_SET_EVBIT, EV_KEY);
  ::ioctl(fd, UI_SET_KEYBIT, KEY_A);
  uinput_setup setup{};
  setup.id.bustype = BUS_VIRTUAL;
  std::snprintf(setup.name, sizeof setup.name, "%s", name);
  ::ioctl(fd, UI_DEV_SETUP, &setup);
  ::ioctl(fd, UI_DEV_CREATE);
  char sys[64] = {};
  ::ioctl(fd, UI_GET_SYSNAME(sizeof sys), sys);
  std::string dir = std::string("/sys/devices/virtual/input/") + sys;
  for (int i = 0; i < 200 && node.empty(); ++i) {
    if (DIR* d = ::opendir(dir.c_str())) {
      while (dirent* e = ::readdir(d)) {
        if (std::strncmp(e->d_name, "event", 5) == 0) node = std::string("/dev/input/") + e->d_name;
      }
      ::closedir(d);
    }
    if (node.empty()) ::usleep(10000);
  }
  for (int i = 0; i < 200 && ::access(node.c_str(), R_OK) != 0; ++i) ::usleep(10000);
  return fd;
}

void emit(int fd, int value) {
  input_event ev[2] = {};
  ev[0].type = EV_KEY;
  ev[0].code = KEY_A;
  ev[0].value = value;
  ev[1].type = EV_SYN;
  ev[1].code = SYN_REPORT;
  if (::write(fd, ev, sizeof ev) != sizeof ev) std::perror("write");
}

/// Reads until a whole key event + SYN arrived (blocking fd).
void await_event(int fd) {
  input_event ev[8];
  size_t got = 0;
  while (got < 2 * sizeof(input_event)) {
    ssize_t n = ::read(fd, reinterpret_cast<char*>(ev) + got, sizeof ev - got);
    if (n <= 0) return;
    got += static_cast<size_t>(n);
  }
}

/// write -> read latency of `rounds` events, in microseconds. The reader is
/// a thread blocked in read(), as QEMU's main loop is in ppoll(): the
/// baseline includes its wake-up, the forwarder adds a second one.
std::vector<double> measure(int write_fd, int read_fd, int rounds, bool uinput) {
  std::atomic<long> seen{0};
  std::atomic<Clock::rep> read_at{0};
  std::thread reader([&] {
    for (long i = 1; i <= rounds; ++i) {
      await_event(read_fd);
      read_at = Clock::now().time_since_epoch().count();
      seen = i;
      seen.notify_one();
    }
  });
  std::vector<double> us;
  for (long i = 1; i <= rounds; ++i) {
    auto t0 = Clock::now();
    if (uinput) {
      emit(write_fd, static_cast<int>(i % 2));
    } else {
      input_event ev[2] = {};
      if (::write(write_fd, ev, sizeof ev) != sizeof ev) std::perror("write");
    }
    for (long s = seen; s < i; s = seen) seen.wait(s);
    Clock::time_point t1{Clock::duration(read_at.load())};
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  reader.join();
  return us;
}

/// The forwarder passlaunch would run: read from `from`, write to `to`.
void forward(int from, int to, std::atomic<bool>& stop) {
  char buf[64 * sizeof(input_event)];
  while (!stop) {
    ssize_t n = ::read(from, buf, sizeof buf);
    if (n <= 0) return;
    if (::write(to, buf, static_cast<size_t>(n)) != n) return;
  }
}

void report(const char* what, const std::vector<double>& direct, const std::vector<double>& fwd) {
  Stats d = stats(direct), f = stats(fwd);
  std::printf("%s\n", what);
  std::printf("  direct (QEMU reads the device):   median %7.1f us   p99 %7.1f us\n", d.median,
              d.p99);
  std::printf("  through a forwarder and a clone:  median %7.1f us   p99 %7.1f us\n", f.median,
              f.p99);
  std::printf("  ratio %.2fx (median), added %.1f us per event (median), %.1f us (p99)\n",
              f.median / d.median, f.median - d.median, f.p99 - d.p99);
  std::printf("  verdict: %s\n",
              f.median - d.median > 50
                  ? "more than 50 us: keep direct passthrough (grab_toggle route)"
                  : "under 50 us per event (median)");
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 2000;
  std::string src_node;
  int src = make_uinput("hotkey_bench source", src_node);
  if (src >= 0 && !src_node.empty()) {
    int rd = ::open(src_node.c_str(), O_RDONLY | O_CLOEXEC);
    std::vector<double> direct = measure(src, rd, rounds, true);
    ::close(rd);
    std::string clone_node;
    int clone = make_uinput("hotkey_bench clone", clone_node);
    int grabbed = ::open(src_node.c_str(), O_RDONLY | O_CLOEXEC);
    ::ioctl(grabbed, EVIOCGRAB, 1);
    int crd = ::open(clone_node.c_str(), O_RDONLY | O_CLOEXEC);
    std::atomic<bool> stop{false};
    std::thread fw(forward, grabbed, clone, std::ref(stop));
    std::vector<double> fwd = measure(src, crd, rounds, true);
    stop = true;
    emit(src, 0);  // wakes the forwarder
    fw.join();
    report("uinput keyboard, events per round: 1 key + SYN", direct, fwd);
    return 0;
  }
  std::printf(
      "no /dev/uinput here (CONFIG_INPUT_UINPUT not set): the forwarder's hop with "
      "pipes, a lower bound (no input core)\n");
  int a[2], b[2], c[2];
  if (::pipe2(a, O_CLOEXEC) || ::pipe2(b, O_CLOEXEC) || ::pipe2(c, O_CLOEXEC)) return 1;
  std::vector<double> direct = measure(a[1], a[0], rounds, false);
  std::atomic<bool> stop{false};
  std::thread fw(forward, b[0], c[1], std::ref(stop));
  std::vector<double> fwd = measure(b[1], c[0], rounds, false);
  stop = true;
  ::close(b[1]);
  fw.join();
  report("pipes, 2 input_events (48 bytes) per round", direct, fwd);
  return 0;
}
