#include "core/cpulist.h"

#include <gtest/gtest.h>

namespace pl {
namespace {

TEST(CpuList, ParsesRangesAndSinglesInWrittenOrder) {
  EXPECT_EQ(parse_cpulist("0-3,8"), (std::vector<int>{0, 1, 2, 3, 8}));
  EXPECT_EQ(parse_cpulist("5,1"), (std::vector<int>{5, 1}));
  EXPECT_EQ(parse_cpulist("1,1"), (std::vector<int>{1, 1}));
}

TEST(CpuList, RejectsMalformedLists) {
  for (const char* bad : {"", ",", "1,", "-1", "3-1", "a", "1 ,2", "0-", "99999", "+1"}) {
    EXPECT_FALSE(parse_cpulist(bad)) << bad;
  }
}

TEST(CpuList, FormatsCompactly) {
  EXPECT_EQ(format_cpulist({5, 0, 1, 2, 2, 7, 8}), "0-2,5,7-8");
  EXPECT_EQ(format_cpulist({}), "");
}

}  // namespace
}  // namespace pl
