// What crash safety costs the handover: appending one inverse to the journal
// (write + fdatasync, as Journal::append does before every host change)
// against the same append without the sync, on the disk that holds the
// benchmark's directory (pass a directory on the disk of /var/lib to measure
// that one). A prepare journals about 20 changes; the goal is that the whole
// journal costs well under the time the display manager takes to stop (~1 s).
//
// Usage: journal_bench [DIR] [ROUNDS] (default: the current directory, 200).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "host/host_fs.h"
#include "host/journal.h"

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::absolute(argc > 1 ? argv[1] : ".") / ("journal-bench-" + std::to_string(::getpid()));
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 200;
  fs::create_directories(dir);
  pl::host::HostFs host(dir.string());
  const nlohmann::json entry = {{"step", "vfio"},
                                {"undo", "pci_restore"},
                                {"address", "0000:01:00.0"},
                                {"driver", "nvidia"},
                                {"override", ""}};

  // Synced: the real Journal.
  auto journal = pl::host::Journal::create(host, "bench", {"0000:01:00.0"});
  std::vector<double> synced;
  for (int i = 0; i < rounds; ++i) {
    auto t0 = Clock::now();
    journal.append(entry);
    synced.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  // Baseline: the same line appended without a sync.
  const std::string plain = (dir / "plain").string();
  const std::string line = entry.dump() + "\n";
  std::vector<double> unsynced;
  for (int i = 0; i < rounds; ++i) {
    auto t0 = Clock::now();
    int fd = ::open(plain.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || ::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      return 1;
    ::close(fd);
    unsynced.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  journal.remove();
  fs::remove_all(dir);

  const double s = median(synced), u = median(unsynced);
  std::printf("journal append, median of %d: synced %.1f us, unsynced %.1f us, ratio %.1fx\n",
              rounds, s, u, s / u);
  std::printf("a prepare of 20 changes spends %.2f ms on its journal\n", 20 * s / 1000);
  return 0;
}
