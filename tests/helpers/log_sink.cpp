// log_sink stands in for journald or syslogd in the hotkey-script tests: it
// listens on the given unix sockets and appends everything it receives to a
// file, a datagram per line. It prints "ready" once every socket listens and
// runs until it is killed.
//
// Usage: log_sink OUT stream:PATH|dgram:PATH...
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: log_sink OUT stream:PATH|dgram:PATH...\n");
    return 2;
  }
  std::ofstream out(argv[1], std::ios::app);
  std::vector<pollfd> fds;
  std::vector<bool> listening;
  for (int i = 2; i < argc; ++i) {
    std::string spec = argv[i];
    bool stream = spec.rfind("stream:", 0) == 0;
    std::string path = spec.substr(spec.find(':') + 1);
    int s = ::socket(AF_UNIX, (stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    ::unlink(path.c_str());
    if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        (stream && ::listen(s, 16) != 0)) {
      std::perror(path.c_str());
      return 1;
    }
    fds.push_back({s, POLLIN, 0});
    listening.push_back(stream);
  }
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) {
    if (::poll(fds.data(), fds.size(), -1) < 0) continue;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      if (listening[i]) {
        int c = ::accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) {
          fds.push_back({c, POLLIN, 0});
          listening.push_back(false);
        }
        continue;
      }
      char buf[65536];
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      int type = 0;
      socklen_t len = sizeof type;
      ::getsockopt(fds[i].fd, SOL_SOCKET, SO_TYPE, &type, &len);
      if (n <= 0) {
        if (type == SOCK_STREAM) {
          ::close(fds[i].fd);
          fds[i].fd = -1;  // poll ignores it from now on
        }
        continue;
      }
      out.write(buf, n);
      if (type == SOCK_DGRAM) out << "\n";
      out.flush();
    }
  }
}
