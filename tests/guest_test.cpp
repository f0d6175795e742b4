// Boots the test guest built by scripts/make-test-guest (target test_guest) under TCG and
// checks what the demo and the end-to-end tests rely on: the ready line, the ACPI power
// button (and the variant that ignores it), the NICs with their MACs, virtio disks and the
// frames the guest sends once a second. QEMU is started directly as our own child
// (qemu_fixture.h).

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "qemu_fixture.h"

namespace pl {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

/// TCG on a loaded 2-core machine: the guest is usually ready in 2-3 s, allow far more.
constexpr auto kBootTimeout = 60s;
constexpr auto kShutdownTimeout = 30s;

constexpr std::string_view kReady = "passlaunch-guest: ready";

/// Starts the guest and waits for its ready line; records and prints boot-to-ready time.
std::unique_ptr<test::Qemu> boot(const std::string& variant,
                                 const std::vector<std::string>& extra_args = {}) {
  for (const auto& file : {test::guest_kernel(), test::guest_initrd("normal"),
                           test::guest_initrd("ignore-powerdown"), test::guest_initrd("panic")}) {
    if (!std::filesystem::exists(file)) {
      ADD_FAILURE() << file << " is missing: build the test_guest target";
      return nullptr;
    }
  }
  auto vm = std::make_unique<test::Qemu>(test::guest_qemu_argv(variant, extra_args),
                                         test::Qemu::Options{.serial = true});
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

bool has_line(const test::Qemu& vm, std::string_view line) {
  for (const auto& l : vm.lines()) {
    if (l == line) return true;
  }
  return false;
}

TEST(TestGuestQemu, PowersOffByItselfOnAcpiPowerButton) {
  auto vm = boot("normal");
  ASSERT_TRUE(vm);
  EXPECT_TRUE(has_line(*vm, "passlaunch-guest: variant normal")) << vm->transcript();
  EXPECT_EQ(vm->qmp(R"({"execute": "system_powerdown"})"), R"({"return":{}})");
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
  EXPECT_EQ(vm->qmp(R"({"execute": "system_powerdown"})"), R"({"return":{}})");
  // The guest saw the press (so the absence of a power-off below means something) ...
  EXPECT_TRUE(vm->wait_for_line("passlaunch-guest: ignoring power button", kShutdownTimeout))
      << vm->transcript();
  // ... and stays up.
  EXPECT_FALSE(vm->wait_exit(10s)) << "guest powered off\n" << vm->transcript();
  EXPECT_EQ(vm->qmp(R"({"execute": "quit"})"), R"({"return":{}})");
  auto status = vm->wait_exit(kShutdownTimeout);
  ASSERT_TRUE(status) << "QEMU still running after quit";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
}

// The panic variant panics right after its ready line; its pvpanic driver tells
// QEMU, which pauses the guest (the launcher's argv for the "pci" panic model;
// run_test.cpp covers "isa" through `passlaunch run`).
TEST(TestGuestQemu, PanicVariantReportsItsPanicThroughPvpanicPci) {
  auto vm = boot("panic", {"-device", "pvpanic-pci,events=1", "-action", "panic=pause"});
  ASSERT_TRUE(vm);
  EXPECT_TRUE(has_line(*vm, "passlaunch-guest: variant panic")) << vm->transcript();
  ASSERT_TRUE(vm->wait_for_line("passlaunch-guest: panicking", kShutdownTimeout))
      << vm->transcript();
  EXPECT_TRUE(std::any_of(
      vm->lines().begin(), vm->lines().end(),
      [](const std::string& l) { return l.rfind("passlaunch-guest: pvpanic 0000:", 0) == 0; }))
      << "the PCI device is bound to pvpanic-pci\n"
      << vm->transcript();
  // The guest writes to the device just after that line: poll until QEMU has it.
  std::string status;
  for (auto deadline = Clock::now() + kShutdownTimeout;
       (status = vm->query_status()) != "guest-panicked" && Clock::now() < deadline;) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(status, "guest-panicked") << vm->transcript();
  EXPECT_TRUE(vm->alive()) << "panic=pause keeps QEMU for its supervisor to quit";
}

/// A UDP socket on 127.0.0.1 for QEMU's `-netdev socket,udp=`: each datagram is one
/// Ethernet frame the guest sent.
struct FrameSink {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int port = 0;
  FrameSink() {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("cannot bind a UDP socket");
    }
    port = ntohs(addr.sin_port);
  }
  FrameSink(const FrameSink&) = delete;
  ~FrameSink() { close(fd); }
  /// Counts ARP frames (ethertype 0x0806) from `mac` until `want` or the timeout.
  int count_arp_from(const std::array<unsigned char, 6>& mac, int want, Clock::duration timeout) {
    auto deadline = Clock::now() + timeout;
    int n = 0;
    pollfd p{fd, POLLIN, 0};
    while (n < want) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
      std::array<unsigned char, 2048> frame;
      ssize_t got = recv(fd, frame.data(), frame.size(), 0);
      if (got >= 14 && std::equal(mac.begin(), mac.end(), frame.begin() + 6) && frame[12] == 0x08 &&
          frame[13] == 0x06) {
        ++n;
      }
    }
    return n;
  }
};

TEST(TestGuestQemu, ListsNicsAndDiskAndSendsFramesFromEachNic) {
  FrameSink sink0, sink1;  // one per NIC: each NIC's frames arrive on its own socket
  auto disk = std::filesystem::temp_directory_path() /
              ("pl-guest-disk-" + std::to_string(getpid()) + ".img");
  std::ofstream(disk).close();
  std::filesystem::resize_file(disk, 8 << 20);
  auto vm =
      boot("normal",
           {"-netdev",
            "socket,id=n0,udp=127.0.0.1:" + std::to_string(sink0.port) + ",localaddr=127.0.0.1:0",
            "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56", "-netdev",
            "socket,id=n1,udp=127.0.0.1:" + std::to_string(sink1.port) + ",localaddr=127.0.0.1:0",
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
  // The sockets buffer what arrives meanwhile, so counting one after the other is fair.
  EXPECT_EQ(sink0.count_arp_from({0x52, 0x54, 0x00, 0x12, 0x34, 0x56}, 3, 30s), 3) << "from eth0";
  EXPECT_EQ(sink1.count_arp_from({0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}, 3, 30s), 3) << "from eth1";
  EXPECT_EQ(vm->qmp(R"({"execute": "quit"})"), R"({"return":{}})");
  EXPECT_TRUE(vm->wait_exit(kShutdownTimeout));
}

}  // namespace
}  // namespace pl
