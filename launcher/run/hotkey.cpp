#include "run/hotkey.h"

#include <fcntl.h>
#include <linux/input.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace pl {

namespace asio = boost::asio;

HotkeyMatcher::HotkeyMatcher(std::vector<int> codes)
    : codes_(std::move(codes)), down_(codes_.size(), false) {}

bool HotkeyMatcher::feed(uint16_t type, uint16_t code, int32_t value) {
  if (type == EV_SYN && code == SYN_DROPPED) {
    // The kernel dropped events: which keys are held is unknown now.
    std::fill(down_.begin(), down_.end(), false);
    fired_ = false;
    return false;
  }
  if (type != EV_KEY) return false;
  auto it = std::find(codes_.begin(), codes_.end(), code);
  if (it == codes_.end()) return false;
  size_t i = static_cast<size_t>(it - codes_.begin());
  if (value == 0) {
    down_[i] = false;
    fired_ = false;
    return false;
  }
  down_[i] = true;  // 1: press, 2: autorepeat
  if (fired_ || !std::all_of(down_.begin(), down_.end(), [](bool b) { return b; })) return false;
  fired_ = true;
  return true;
}

struct HotkeyWatcher::Device {
  Device(asio::any_io_executor ex, int fd, std::string p, std::vector<int> codes)
      : stream(ex, fd), path(std::move(p)), matcher(std::move(codes)) {}
  asio::posix::stream_descriptor stream;
  std::string path;
  HotkeyMatcher matcher;
  std::string pending;  ///< bytes of an event not read whole yet
};

HotkeyWatcher::HotkeyWatcher(asio::any_io_executor ex, std::vector<int> codes, OnHotkey on_hotkey,
                             OnLost on_lost)
    : ex_(ex),
      codes_(std::move(codes)),
      on_hotkey_(std::move(on_hotkey)),
      on_lost_(std::move(on_lost)) {}

HotkeyWatcher::~HotkeyWatcher() { close(); }

void HotkeyWatcher::watch(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw system_error(Exit::kEnvironment, "host_hotkey: cannot open", path, errno,
                       "the keyboards of input/evdev must be readable by passlaunch");
  }
  auto d = std::make_shared<Device>(ex_, fd, path, codes_);
  devices_.push_back(d);
  asio::co_spawn(ex_, read_loop(d), asio::detached);
}

void HotkeyWatcher::close() {
  for (auto& d : devices_) {
    boost::system::error_code ec;
    d->stream.close(ec);
  }
  devices_.clear();
}

asio::awaitable<void> HotkeyWatcher::read_loop(std::shared_ptr<Device> d) {
  char buf[64 * sizeof(input_event)];
  for (;;) {
    boost::system::error_code ec;
    size_t n = co_await d->stream.async_read_some(asio::buffer(buf),
                                                  asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !d->stream.is_open()) co_return;
    if (ec) {
      if (on_lost_) on_lost_(d->path, ec == asio::error::eof ? "end of file" : ec.message());
      co_return;
    }
    d->pending.append(buf, n);
    size_t whole = d->pending.size() / sizeof(input_event) * sizeof(input_event);
    for (size_t off = 0; off < whole; off += sizeof(input_event)) {
      input_event ev;
      std::memcpy(&ev, d->pending.data() + off, sizeof ev);
      if (d->matcher.feed(ev.type, ev.code, ev.value) && on_hotkey_) on_hotkey_(d->path);
    }
    d->pending.erase(0, whole);
  }
}

}  // namespace pl
