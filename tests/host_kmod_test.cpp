// The real libkmod-backed loader against the installed kernel's modules
// (linux-image-cloud-amd64 is one of scripts/test's packages).
#include <gtest/gtest.h>

#include <filesystem>

#include "host/host_env.h"

namespace pl::host {
namespace {

TEST(HostKmod, VfioPciDependenciesComeInLoadOrder) {
  std::string dir;
  for (const auto& e : std::filesystem::directory_iterator("/lib/modules")) {
    if (std::filesystem::exists(e.path() / "modules.dep")) dir = e.path().string();
  }
  ASSERT_FALSE(dir.empty()) << "no kernel modules installed under /lib/modules";
  auto loader = make_kmod_loader(dir);
  auto deps = loader->dependencies("vfio-pci");
  auto at = [&](const std::string& m) {
    return std::find(deps.begin(), deps.end(), m) - deps.begin();
  };
  ASSERT_LT(at("vfio_pci_core"), static_cast<long>(deps.size())) << dir;
  ASSERT_LT(at("vfio"), static_cast<long>(deps.size()));
  EXPECT_LT(at("vfio"), at("vfio_pci_core"));  // a dependency loads before its user
  EXPECT_EQ(std::count(deps.begin(), deps.end(), "vfio_pci"), 0);
  EXPECT_TRUE(loader->dependencies("pl_no_such_module").empty());
}

}  // namespace
}  // namespace pl::host
