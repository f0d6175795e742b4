// The real libkmod-backed loader against the installed kernel's modules
// (linux-image-cloud-amd64 is one of scripts/test's packages).
#include <gtest/gtest.h>

#include <filesystem>

#include "host/host_env.h"

namespace pl::host {
namespace {

TEST(HostKmod, VfioPciLoadOrderHasDependenciesAndSoftDependencies) {
  std::string dir;
  for (const auto& e : std::filesystem::directory_iterator("/lib/modules")) {
    if (std::filesystem::exists(e.path() / "modules.dep")) dir = e.path().string();
  }
  ASSERT_FALSE(dir.empty()) << "no kernel modules installed under /lib/modules";
  auto loader = make_kmod_loader(dir);
  auto deps = loader->load_order("vfio-pci");
  auto at = [&](const std::string& m) {
    return std::find(deps.begin(), deps.end(), m) - deps.begin();
  };
  ASSERT_LT(at("vfio_pci_core"), static_cast<long>(deps.size())) << dir;
  ASSERT_LT(at("vfio"), static_cast<long>(deps.size()));
  EXPECT_LT(at("vfio"), at("vfio_pci_core"));  // a dependency loads before its user
  // vfio's MODULE_SOFTDEP("post: vfio_iommu_type1 vfio_iommu_spapr_tce"):
  // modprobe loads type1 right after vfio (the spapr one is not built for x86),
  // and type1 then holds vfio, so vfio cannot be unloaded before it.
  ASSERT_LT(at("vfio_iommu_type1"), static_cast<long>(deps.size()));
  EXPECT_EQ(at("vfio_iommu_type1"), at("vfio") + 1);
  EXPECT_EQ(at("vfio_iommu_spapr_tce"), static_cast<long>(deps.size()));
  EXPECT_EQ(deps.back(), "vfio_pci");
  EXPECT_EQ(std::count(deps.begin(), deps.end(), "vfio"), 1);
  EXPECT_TRUE(loader->load_order("pl_no_such_module").empty() ||
              loader->load_order("pl_no_such_module") ==
                  std::vector<std::string>{"pl_no_such_module"});
}

}  // namespace
}  // namespace pl::host
