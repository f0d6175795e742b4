// run_process, which runs hooks and systemctl: bounded, whatever the child does.
#include <gtest/gtest.h>

#include <chrono>

#include "host/host_env.h"

namespace pl::host {
namespace {

using namespace std::chrono_literals;

TEST(HostProcess, CapturesOutputAndStatus) {
  auto r = run_process({"sh", "-c", "echo out; echo err >&2; exit 3"}, {"X=1"});
  EXPECT_EQ(r.status, 3);
  EXPECT_EQ(r.output, "out\nerr\n");
  EXPECT_EQ(run_process({"sh", "-c", "printf %s \"$X\""}, {"X=hello"}).output, "hello");
}

// A hook that leaves a background child behind (it holds the pipe) must not
// keep the launcher waiting for that child.
TEST(HostProcess, ReturnsWhenTheProcessExitsEvenIfItsChildHoldsThePipe) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_process({"sh", "-c", "sleep 30 & echo started"});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.output, "started\n");
}

TEST(HostProcess, AHookThatNeverEndsIsKilledAtTheDeadline) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_process({"sh", "-c", "echo waiting; sleep 30"}, {}, 500ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(r.status, 128 + 9);
  EXPECT_NE(r.output.find("waiting"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace pl::host
