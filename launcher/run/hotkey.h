// The profile's host hotkey (profiles/README.md, "host_hotkey"): passlaunch
// reads the listed evdev keyboards *without grabbing them* and, when the
// combination is held, asks for the graceful shutdown (held again: forced).
//
// Why not a grab of our own: QEMU's input-linux grabs its device exclusively
// (EVIOCGRAB), so while the guest has the keyboard no other reader, us
// included, gets an event. Taking the grab ourselves and feeding QEMU a
// uinput clone would put one more read/write hop and thread wake-up on every
// key of the guest (bench/hotkey_bench.cpp measures it; README "Hotkeys"
// gives the numbers), and it cannot be built or tested on a kernel without
// uinput, such as this project's test machine. So passlaunch keeps QEMU
// reading the device directly (nothing added to the guest's input path) and
// relies on the evdev entry's `grab_toggle`: the toggle gives the keyboard
// back to the host, QEMU stops sending its keys to the guest, and the hotkey
// is seen here.
#pragma once

// clang-format off
#include <utility>  // first: Boost 1.74's awaitable.hpp uses std::exchange without it
// clang-format on

#include <boost/asio.hpp>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

namespace pl {

/// Pure: the held state of a key combination, fed evdev events in order.
class HotkeyMatcher {
 public:
  explicit HotkeyMatcher(std::vector<int> codes);
  /// Feeds one event (type, code, value as in struct input_event). True when
  /// this event completes the combination; it fires once per hold, again only
  /// after one of its keys was released. SYN_DROPPED forgets every key.
  bool feed(uint16_t type, uint16_t code, int32_t value);

 private:
  std::vector<int> codes_;
  std::vector<bool> down_;
  bool fired_ = false;
};

/// Watches evdev devices on the supervisor's io_context (no thread, no timer).
class HotkeyWatcher {
 public:
  /// Called with the device's path each time the combination is held.
  using OnHotkey = std::function<void(const std::string& device)>;
  /// Called when a device cannot be read any more (unplugged, EOF).
  using OnLost = std::function<void(const std::string& device, const std::string& why)>;

  HotkeyWatcher(boost::asio::any_io_executor ex, std::vector<int> codes, OnHotkey on_hotkey,
                OnLost on_lost);
  ~HotkeyWatcher();
  HotkeyWatcher(const HotkeyWatcher&) = delete;
  HotkeyWatcher& operator=(const HotkeyWatcher&) = delete;

  /// Opens `path` read-only, non-blocking, without a grab, and reads it.
  /// Throws pl::Error(kEnvironment) when it cannot be opened.
  void watch(const std::string& path);
  /// Stops reading and closes every device.
  void close();

 private:
  struct Device;
  boost::asio::awaitable<void> read_loop(std::shared_ptr<Device> d);

  boost::asio::any_io_executor ex_;
  std::vector<int> codes_;
  OnHotkey on_hotkey_;
  OnLost on_lost_;
  std::list<std::shared_ptr<Device>> devices_;
};

}  // namespace pl
