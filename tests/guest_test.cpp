// Boots the test guest built by scripts/make-test-guest (target test_guest) under TCG and
// checks what the demo and the end-to-end tests rely on: the ready line, the ACPI power
// button (and the variant that ignores it), the NICs with their MACs, virtio disks and the
// frames the guest sends once a second. QEMU is started directly as our own child.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

extern char** environ;

namespace pl {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

/// TCG on a loaded 2-core machine: the guest is usually ready in 2-3 s, allow far more.
constexpr auto kBootTimeout = 60s;
constexpr auto kShutdownTimeout = 30s;

constexpr std::string_view kReady = "passlaunch-guest: ready";

std::filesystem::path guest_dir() { return PL_TEST_GUEST_DIR; }

/// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    reset(std::exchange(other.fd_, -1));
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

/// Milliseconds left until `deadline`, for poll(); 0 once it has passed.
int ms_until(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

/// Splits what arrives on a stream fd into lines (serial console lines end in "\r\n").
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}

  /// The next complete line, or nothing at the deadline or end of stream.
  std::optional<std::string> next(Clock::time_point deadline) {
    while (true) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return line;
      }
      if (eof_) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      int n = poll(&p, 1, ms_until(deadline));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      std::array<char, 4096> chunk;
      ssize_t got = read(fd_, chunk.data(), chunk.size());
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        eof_ = true;
        continue;
      }
      buffer_.append(chunk.data(), static_cast<size_t>(got));
    }
  }

 private:
  int fd_;
  std::string buffer_;
  bool eof_ = false;
};

/// One QEMU child running the test guest: serial console on a pipe we read, QMP on a unix
/// socket in a private temp dir, stderr in a file there. Killed and reaped on destruction
/// if it is still running.
class GuestVm {
 public:
  GuestVm(const std::string& variant, const std::vector<std::string>& extra_args) {
    char tmpl[] = "/tmp/pl-guest-test-XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    qmp_path_ = dir_ / "qmp.sock";
    std::vector<std::string> args = {"qemu-system-x86_64",
                                     "-accel",
                                     "tcg",
                                     "-cpu",
                                     "max",
                                     "-m",
                                     "256",
                                     "-nodefaults",
                                     "-no-user-config",
                                     "-display",
                                     "none",
                                     "-machine",
                                     "q35",
                                     "-kernel",
                                     guest_dir() / "vmlinuz",
                                     "-initrd",
                                     guest_dir() / ("initramfs-" + variant + ".cpio.gz"),
                                     "-append",
                                     "console=ttyS0 quiet",
                                     "-chardev",
                                     "stdio,id=serial0,signal=off",
                                     "-serial",
                                     "chardev:serial0",
                                     "-qmp",
                                     "unix:" + qmp_path_.string() + ",server=on,wait=off"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    Fd read_end(fds[0]), write_end(fds[1]);
    std::string log = (dir_ / "qemu.stderr").string();
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
    posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    started_ = Clock::now();
    int rc = posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error(std::string("cannot start qemu-system-x86_64: ") + strerror(rc));
    }
    pidfd_.reset(static_cast<int>(syscall(SYS_pidfd_open, pid_, 0)));
    if (pidfd_.get() < 0) throw std::runtime_error("pidfd_open failed");
    serial_ = std::move(read_end);
    serial_reader_ = LineReader(serial_.get());
  }

  ~GuestVm() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  /// Reads serial lines until one equals `line`. Returns the time since QEMU was started,
  /// or nothing at the timeout or when QEMU closes the console.
  std::optional<Clock::duration> wait_for_line(std::string_view line, Clock::duration timeout) {
    auto deadline = Clock::now() + timeout;
    while (auto got = serial_reader_.next(deadline)) {
      lines_.push_back(*got);
      if (*got == line) return Clock::now() - started_;
    }
    return std::nullopt;
  }

  /// Sends one QMP command (a JSON object) and returns QEMU's reply line; events that
  /// arrive in between are skipped. Negotiates capabilities on first use.
  std::string qmp(std::string_view command) {
    auto deadline = Clock::now() + kShutdownTimeout;
    if (qmp_.get() < 0) {
      qmp_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, qmp_path_.c_str(), sizeof(addr.sun_path) - 1);
      if (connect(qmp_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        throw std::runtime_error("cannot connect to " + qmp_path_.string() + ": " +
                                 strerror(errno));
      }
      qmp_reader_.emplace(qmp_.get());
      auto greeting = qmp_reader_->next(deadline);
      if (!greeting || greeting->find("\"QMP\"") == std::string::npos) {
        throw std::runtime_error("no QMP greeting");
      }
      qmp(R"({"execute": "qmp_capabilities"})");
    }
    std::string out = std::string(command) + "\n";
    if (write(qmp_.get(), out.data(), out.size()) != static_cast<ssize_t>(out.size())) {
      throw std::runtime_error("cannot write to QMP");
    }
    while (auto line = qmp_reader_->next(deadline)) {
      if (line->starts_with(R"({"return")") || line->starts_with(R"({"error")")) return *line;
    }
    throw std::runtime_error("no QMP reply to " + std::string(command));
  }

  /// Waits for QEMU to exit and reaps it: its wait status, or nothing if it is still
  /// running after `timeout`.
  std::optional<int> wait_exit(Clock::duration timeout) {
    auto deadline = Clock::now() + timeout;
    pollfd p{pidfd_.get(), POLLIN, 0};
    int n;
    while ((n = poll(&p, 1, ms_until(deadline))) < 0 && errno == EINTR) {
    }
    if (n <= 0) return std::nullopt;
    int status = 0;
    if (waitpid(pid_, &status, 0) != pid_) throw std::runtime_error("waitpid failed");
    pid_ = -1;
    return status;
  }

  /// The serial lines read so far and QEMU's stderr, for failure messages.
  std::string transcript() const {
    std::string out = "serial console:\n";
    for (const auto& l : lines_) out += "  " + l + "\n";
    out += "qemu stderr:\n";
    if (FILE* f = std::fopen((dir_ / "qemu.stderr").c_str(), "r")) {
      char buf[512];
      while (std::fgets(buf, sizeof buf, f)) out += std::string("  ") + buf;
      std::fclose(f);
    }
    return out;
  }

  const std::vector<std::string>& lines() const { return lines_; }

 private:
  std::filesystem::path dir_;
  std::filesystem::path qmp_path_;
  pid_t pid_ = -1;
  Fd pidfd_;
  Fd serial_;
  LineReader serial_reader_{-1};
  Fd qmp_;
  std::optional<LineReader> qmp_reader_;
  Clock::time_point started_;
  std::vector<std::string> lines_;
};

/// Starts the guest and waits for its ready line; records and prints boot-to-ready time.
std::unique_ptr<GuestVm> boot(const std::string& variant,
                              const std::vector<std::string>& extra_args = {}) {
  for (auto name : {"vmlinuz", "initramfs-normal.cpio.gz", "initramfs-ignore-powerdown.cpio.gz"}) {
    if (!std::filesystem::exists(guest_dir() / name)) {
      ADD_FAILURE() << guest_dir() / name << " is missing: build the test_guest target";
      return nullptr;
    }
  }
  auto vm = std::make_unique<GuestVm>(variant, extra_args);
  auto ready = vm->wait_for_line(kReady, kBootTimeout);
  if (!ready) {
    ADD_FAILURE() << "no '" << kReady << "' within " << kBootTimeout.count() << " s\n"
                  << vm->transcript();
    return nullptr;
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*ready).count();
  ::testing::Test::RecordProperty("boot_to_ready_ms", static_cast<int>(ms));
  std::printf("[ measure  ] %s guest: QEMU start to ready line %lld ms (TCG)\n", variant.c_str(),
              static_cast<long long>(ms));
  return vm;
}

bool has_line(const GuestVm& vm, std::string_view line) {
  for (const auto& l : vm.lines()) {
    if (l == line) return true;
  }
  return false;
}

TEST(TestGuestQemu, PowersOffByItselfOnAcpiPowerButton) {
  auto vm = boot("normal");
  ASSERT_TRUE(vm);
  EXPECT_TRUE(has_line(*vm, "passlaunch-guest: variant normal")) << vm->transcript();
  EXPECT_EQ(vm->qmp(R"({"execute": "system_powerdown"})"), R"({"return": {}})");
  EXPECT_TRUE(vm->wait_for_line("passlaunch-guest: powering off", kShutdownTimeout))
      << vm->transcript();
  auto status = vm->wait_exit(kShutdownTimeout);
  ASSERT_TRUE(status) << "QEMU still running " << kShutdownTimeout.count()
                      << " s after system_powerdown\n"
                      << vm->transcript();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
}

TEST(TestGuestQemu, IgnorePowerdownVariantKeepsRunningUntilQuit) {
  auto vm = boot("ignore-powerdown");
  ASSERT_TRUE(vm);
  EXPECT_EQ(vm->qmp(R"({"execute": "system_powerdown"})"), R"({"return": {}})");
  // The guest saw the press (so the absence of a power-off below means something) ...
  EXPECT_TRUE(vm->wait_for_line("passlaunch-guest: ignoring power button", kShutdownTimeout))
      << vm->transcript();
  // ... and stays up.
  EXPECT_FALSE(vm->wait_exit(10s)) << "guest powered off\n" << vm->transcript();
  EXPECT_EQ(vm->qmp(R"({"execute": "quit"})"), R"({"return": {}})");
  auto status = vm->wait_exit(kShutdownTimeout);
  ASSERT_TRUE(status) << "QEMU still running after quit";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
}

/// A UDP socket on 127.0.0.1 for QEMU's `-netdev socket,udp=`: each datagram is one
/// Ethernet frame the guest sent.
struct FrameSink {
  Fd fd{socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  int port = 0;
  FrameSink() {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("cannot bind a UDP socket");
    }
    port = ntohs(addr.sin_port);
  }
  /// Counts ARP frames (ethertype 0x0806) from `mac` until `want` or the timeout.
  int count_arp_from(const std::array<unsigned char, 6>& mac, int want, Clock::duration timeout) {
    auto deadline = Clock::now() + timeout;
    int n = 0;
    pollfd p{fd.get(), POLLIN, 0};
    while (n < want && poll(&p, 1, ms_until(deadline)) > 0) {
      std::array<unsigned char, 2048> frame;
      ssize_t got = recv(fd.get(), frame.data(), frame.size(), 0);
      if (got >= 14 && std::equal(mac.begin(), mac.end(), frame.begin() + 6) && frame[12] == 0x08 &&
          frame[13] == 0x06) {
        ++n;
      }
    }
    return n;
  }
};

TEST(TestGuestQemu, ListsNicsAndDiskAndSendsFramesFromEachNic) {
  FrameSink sink;
  auto disk = std::filesystem::temp_directory_path() /
              ("pl-guest-disk-" + std::to_string(getpid()) + ".img");
  std::ofstream(disk).close();
  std::filesystem::resize_file(disk, 8 << 20);
  auto vm = boot("normal", {"-netdev", "user,id=n0", "-device",
                            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56", "-netdev",
                            "socket,id=n1,udp=127.0.0.1:" + std::to_string(sink.port) +
                                ",localaddr=127.0.0.1:0",
                            "-device", "virtio-net-pci,netdev=n1,mac=52:54:00:ab:cd:ef", "-drive",
                            "file=" + disk.string() + ",if=none,id=d0,format=raw", "-device",
                            "virtio-blk-pci,drive=d0"});
  std::filesystem::remove(disk);
  ASSERT_TRUE(vm);
  EXPECT_TRUE(has_line(*vm, "passlaunch-guest: net eth0 52:54:00:12:34:56")) << vm->transcript();
  EXPECT_TRUE(has_line(*vm, "passlaunch-guest: net eth1 52:54:00:ab:cd:ef")) << vm->transcript();
  EXPECT_TRUE(has_line(*vm, "passlaunch-guest: disk vda 16384 sectors")) << vm->transcript();
  // About one ARP probe a second; 3 within 30 s leaves room for a slow TCG guest. Without
  // the guest's sender loop there would be none (the NIC has no IPv4 address).
  EXPECT_EQ(sink.count_arp_from({0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}, 3, 30s), 3);
  EXPECT_EQ(vm->qmp(R"({"execute": "quit"})"), R"({"return": {}})");
  EXPECT_TRUE(vm->wait_exit(kShutdownTimeout));
}

}  // namespace
}  // namespace pl
