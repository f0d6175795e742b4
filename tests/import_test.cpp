// `passlaunch import libvirt` and `passlaunch init`: table tests (each domain
// in tests/import/ with its expected profile and report beside it), every
// node of the input reported exactly once, libvirt's own expectations for its
// test domains, malformed input, `init` on a host shaped like the seed's, and
// QEMU accepting the argv of every imported real-shaped domain.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <pugixml.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "core/cpulist.h"
#include "core/error.h"
#include "host/host_fs.h"
#include "import/host_facts.h"
#include "import/init.h"
#include "import/libvirt.h"
#include "profile/argv.h"
#include "profile/profile.h"
#include "sim_host.h"
#include "test_util.h"

namespace pl {
namespace {

namespace fs = std::filesystem;
using import::ImportResult;

const fs::path kDir = fs::path(PL_SOURCE_DIR) / "tests/import";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

/// Every domain of the table: tests/import/*.xml and tests/import/libvirt/*.xml.
std::vector<fs::path> domains() {
  std::vector<fs::path> out;
  for (const fs::path& dir : {kDir, kDir / "libvirt"}) {
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ".xml") out.push_back(e.path());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// The fixed host of the table tests: QEMU's firmware descriptors, libvirt's
/// "default" network on bridge virbr0 (tests/import/host).
ImportResult import_path(const fs::path& xml, const host::HostFs& host) {
  import::ImportOptions o;
  o.host = &host;
  return import::import_libvirt(slurp(xml), xml.filename().string(), o);
}

// Set PL_UPDATE_GOLDEN=1 to rewrite the expected files after an intended change.
TEST(Import, EveryDomainGivesItsExpectedProfileAndReport) {
  host::HostFs host((kDir / "host").string());
  const bool update = getenv("PL_UPDATE_GOLDEN") != nullptr;
  auto list = domains();
  ASSERT_GE(list.size(), 8u);
  for (const fs::path& xml : list) {
    SCOPED_TRACE(xml.string());
    ImportResult r = import_path(xml, host);
    fs::path profile = fs::path(xml).replace_extension(".profile.jsonc");
    fs::path report = fs::path(xml).replace_extension(".report.txt");
    if (update) {
      spit(profile, r.profile.text());
      spit(report, r.report.to_text());
      continue;
    }
    EXPECT_EQ(r.profile.text(), slurp(profile)) << "PL_UPDATE_GOLDEN=1 rewrites " << profile;
    EXPECT_EQ(r.report.to_text(), slurp(report)) << "PL_UPDATE_GOLDEN=1 rewrites " << report;
  }
}

// CPU sets, partial pinning and real-time schedulers give profiles that load,
// with what libvirt would do (the table files hold the text and the report).
TEST(Import, CputuneDomainsGiveValidProfilesWithLibvirtsPinning) {
  host::HostFs host((kDir / "host").string());
  auto load = [&](const char* name) {
    ImportResult r = import_path(kDir / name, host);
    return parse_profile(r.profile.text(), name, ProfileChecks{.files = false});
  };
  using V = std::vector<int>;
  Profile sets = load("cputune-sets.xml");
  EXPECT_EQ(sets.pinning.vcpu_cpus(0), (V{2, 10}));
  EXPECT_EQ(sets.pinning.vcpu_cpus(1), (V{3}));
  EXPECT_EQ(sets.pinning.vcpu_cpus(2), (V{11}));
  EXPECT_EQ(sets.pinning.vcpu_cpus(3), (V{6, 7, 9}));  // <vcpu cpuset='6-9,^8'>
  EXPECT_EQ(sets.pinning.emulator, (V{6, 7, 9}));
  Profile partial = load("cputune-partial.xml");
  V online(16);
  for (int i = 0; i < 16; ++i) online[i] = i;
  EXPECT_EQ(partial.pinning.vcpu_cpus(0), online);
  EXPECT_EQ(partial.pinning.vcpu_cpus(1), (V{5}));
  EXPECT_EQ(partial.pinning.vcpu_cpus(3), (V{6, 7}));
  Profile sched = load("cputune-sched.xml");
  EXPECT_EQ(sched.pinning.realtime_policy, RealtimePolicy::kRr);
  EXPECT_EQ(sched.pinning.realtime_priority, 2);
  EXPECT_EQ(sched.pinning.emulator_realtime_priority, 3);
  ASSERT_EQ(sched.pinning.iothreads.size(), 2u);
  EXPECT_EQ(sched.pinning.iothreads[0].realtime_priority, 4);
  EXPECT_EQ(sched.pinning.iothreads[1].realtime_priority, 4);
  EXPECT_EQ(sched.pinning.iothreads[1].cpus, (V{8, 9}));  // <vcpu cpuset>, not the emulator's
  Profile subset = load("cputune-sched-subset.xml");
  EXPECT_EQ(subset.pinning.realtime_policy, RealtimePolicy::kFifo);
  EXPECT_EQ(subset.pinning.realtime_priority, 1);
}

/// Every element and attribute of a document, as node_path() names them.
std::vector<std::string> all_nodes(const pugi::xml_node& n) {
  std::vector<std::string> out;
  if (n.type() == pugi::node_element) {
    std::string p = import::node_path(n);
    out.push_back(p);
    for (pugi::xml_attribute a : n.attributes()) out.push_back(p + "/@" + a.name());
  }
  for (pugi::xml_node c : n.children()) {
    auto sub = all_nodes(c);
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

// "Not carried over" is a result: the report names every node exactly once,
// and what was not carried says why.
TEST(Import, ReportListsEveryElementAndAttributeExactlyOnce) {
  host::HostFs host((kDir / "host").string());
  for (const fs::path& xml : domains()) {
    SCOPED_TRACE(xml.string());
    pugi::xml_document doc;
    ASSERT_TRUE(doc.load_file(xml.c_str()));
    std::vector<std::string> nodes = all_nodes(doc);
    ImportResult r = import_path(xml, host);
    std::vector<std::string> reported;
    for (const auto& e : r.report.entries) {
      reported.push_back(e.path);
      if (e.fate != import::Fate::kCarried) {
        EXPECT_FALSE(e.why.empty()) << e.path;
      }
    }
    EXPECT_EQ(reported, nodes);
    EXPECT_EQ(std::set<std::string>(reported.begin(), reported.end()).size(), reported.size());
    // The JSON report holds the same entries, split by fate.
    auto j = r.report.to_json();
    EXPECT_EQ(j["carried"].size() + j["changed"].size() + j["dropped"].size(), nodes.size());
  }
}

TEST(Import, RealDomainsLeaveNothingUnexamined) {
  // In the domains of the shape users publish, every node was looked at: none
  // falls through to the catch-all "not supported by passlaunch".
  host::HostFs host((kDir / "host").string());
  for (const char* name :
       {"seed-win11.xml", "win10-gaming.xml", "linux-amd.xml", "win11-lookingglass.xml"}) {
    ImportResult r = import_path(kDir / name, host);
    for (const auto& e : r.report.entries) {
      EXPECT_NE(e.why, "not supported by passlaunch") << name << ": " << e.path;
    }
  }
}

// ---- libvirt's own expectations (tests/import/libvirt/*.args) ----

/// "-smp 6,sockets=1,dies=1,clusters=1,cores=2,threads=3" -> {vcpus, sockets,
/// cores per socket (dies and clusters folded in), threads}.
std::array<int, 4> smp_of(const std::string& value) {
  std::array<int, 4> out{0, 1, 1, 1};
  int dies = 1, clusters = 1;
  std::stringstream ss(value);
  std::string part;
  std::getline(ss, part, ',');
  out[0] = std::stoi(part);
  while (std::getline(ss, part, ',')) {
    auto eq = part.find('=');
    std::string k = part.substr(0, eq);
    int v = std::stoi(part.substr(eq + 1));
    if (k == "sockets") out[1] = v;
    if (k == "cores") out[2] = v;
    if (k == "threads") out[3] = v;
    if (k == "dies") dies = v;
    if (k == "clusters") clusters = v;
  }
  out[2] *= dies * clusters;
  return out;
}

/// "-cpu host,migratable=on,abm=on" -> model and the set of properties, less
/// what is QEMU's default either way (migratable=on for -cpu host).
std::pair<std::string, std::set<std::string>> cpu_of(const std::string& value) {
  std::stringstream ss(value);
  std::string model, part;
  std::getline(ss, model, ',');
  std::set<std::string> flags;
  while (std::getline(ss, part, ',')) {
    if (part != "migratable=on") flags.insert(part);
  }
  return {model, flags};
}

uint64_t memory_bytes_of(const std::string& value) {
  std::string v = value.starts_with("size=") ? value.substr(5) : value;
  uint64_t n = std::stoull(v);
  char unit = v.back();
  return n * (unit == 'k' ? 1024 : unit == 'M' ? 1 << 20 : unit == 'G' ? 1 << 30 : 1);
}

struct VfioDev {
  std::string host, romfile;
  std::optional<int> rombar;
  auto operator<=>(const VfioDev&) const = default;
};
void PrintTo(const VfioDev& d, std::ostream* os) {
  *os << d.host << " romfile=" << d.romfile
      << " rombar=" << (d.rombar ? std::to_string(*d.rombar) : "default");
}

std::vector<VfioDev> vfio_of(const std::vector<std::string>& argv) {
  std::vector<VfioDev> out;
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] != "-device") continue;
    const std::string& v = argv[i + 1];
    VfioDev d;
    if (v.starts_with("'{")) {  // libvirt's JSON form
      auto j = nlohmann::json::parse(v.substr(1, v.size() - 2));
      if (j["driver"] != "vfio-pci") continue;
      d.host = j["host"];
      d.romfile = j.value("romfile", "");
      if (j.contains("rombar")) d.rombar = j["rombar"].get<int>();
      // rombar=1 is QEMU's default: the same as saying nothing.
      if (d.rombar == 1) d.rombar.reset();
    } else if (v.starts_with("vfio-pci,")) {
      std::stringstream ss(v);
      for (std::string part; std::getline(ss, part, ',');) {
        if (part.starts_with("host=")) d.host = part.substr(5);
        if (part.starts_with("romfile=")) d.romfile = part.substr(8);
        if (part.starts_with("rombar=")) d.rombar = std::stoi(part.substr(7));
      }
      if (d.rombar == 1) d.rombar.reset();
    } else {
      continue;
    }
    out.push_back(d);
  }
  return out;
}

bool profile_holds_rombar() {
  try {
    parse_profile(R"({"name": "t", "memory": {"size_mib": 64}, "cpu": {"vcpus": 1},
                      "devices": [{"type": "vfio", "address": "0000:01:00.0", "rombar": false}]})",
                  "t.json", ProfileChecks{.files = false});
    return true;
  } catch (const Error&) {
    return false;
  }
}

/// libvirt's .args as an argv (one "option value" pair per line).
std::vector<std::string> args_file(const fs::path& p) {
  std::vector<std::string> out;
  std::stringstream ss(slurp(p));
  for (std::string line; std::getline(ss, line);) {
    if (line.ends_with(" \\")) line.resize(line.size() - 2);
    auto sp = line.find(' ');
    out.push_back(line.substr(0, sp));
    if (sp != std::string::npos) out.push_back(line.substr(sp + 1));
  }
  return out;
}

std::string value_after(const std::vector<std::string>& argv, const std::string& opt) {
  auto it = std::find(argv.begin(), argv.end(), opt);
  return it == argv.end() || it + 1 == argv.end() ? "" : *(it + 1);
}

HostFacts facts_for(const Profile& p) {
  HostFacts f;
  f.runtime_dir = "/run/passlaunch/" + p.name;
  f.qmp_fd = 3;
  f.accel = p.accel == Accel::kTcg ? Accel::kTcg : Accel::kKvm;
  int next = 4;
  for (const NetDevice& n : p.network) {
    if (n.type != NetDevice::Type::kUser) f.net_fds.push_back({next, next + 1}), next += 2;
  }
  f.ovmf_vars = "/var/lib/passlaunch/" + p.name + "/OVMF_VARS.fd";
  return f;
}

TEST(Import, ArgvAgreesWithLibvirtsOwnTestExpectations) {
  host::HostFs host((kDir / "host").string());
  int compared = 0;
  for (const auto& e : fs::directory_iterator(kDir / "libvirt")) {
    if (e.path().extension() != ".args") continue;
    SCOPED_TRACE(e.path().string());
    fs::path xml = fs::path(e.path()).replace_extension(".xml");
    ImportResult r = import_path(xml, host);
    Profile p = parse_profile(r.profile.text(), xml.string(), ProfileChecks{.files = false});
    std::vector<std::string> ours = build_qemu_argv(p, facts_for(p));
    std::vector<std::string> theirs = args_file(e.path());

    EXPECT_EQ(smp_of(value_after(ours, "-smp")), smp_of(value_after(theirs, "-smp")));
    EXPECT_EQ(memory_bytes_of(value_after(ours, "-m")), memory_bytes_of(value_after(theirs, "-m")));
    auto [our_model, our_flags] = cpu_of(value_after(ours, "-cpu"));
    auto [their_model, their_flags] = cpu_of(value_after(theirs, "-cpu"));
    EXPECT_EQ(our_model, their_model);
    EXPECT_EQ(our_flags, their_flags);
    std::vector<VfioDev> our_vfio = vfio_of(ours), their_vfio = vfio_of(theirs);
    if (!profile_holds_rombar()) {
      // Before the profile had "rombar", <rom bar='off'/> was dropped (reported so).
      for (auto* list : {&our_vfio, &their_vfio}) {
        for (VfioDev& d : *list) d.rombar.reset();
      }
    }
    EXPECT_EQ(our_vfio, their_vfio);
    // Passthrough makes a domain KVM (passlaunch's rule); otherwise the same accelerator.
    if (vfio_of(theirs).empty()) {
      EXPECT_EQ(value_after(ours, "-accel"), value_after(theirs, "-accel"));
    }
    ++compared;
  }
  EXPECT_GE(compared, 4);
}

// ---- malformed input: exit 2 with the line and column ----

std::string import_error(const std::string& xml) {
  host::HostFs host((kDir / "host").string());
  import::ImportOptions o;
  o.host = &host;
  try {
    import::import_libvirt(xml, "bad.xml", o);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Exit::kUsage);
    return e.what();
  }
  return "(no error)";
}

constexpr const char* kGood = R"(<domain type='kvm'>
  <name>t</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <cputune>
    <vcpupin vcpu='0' cpuset='2'/>
    <vcpupin vcpu='1' cpuset='3'/>
  </cputune>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
</domain>
)";

std::string with(std::string text, const std::string& from, const std::string& to) {
  auto pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  return text.replace(pos, from.size(), to);
}

TEST(Import, MalformedDomainsNameLineAndColumn) {
  ASSERT_EQ(import_error(kGood), "(no error)");
  struct Case {
    std::string xml, expected;
  } cases[] = {
      {std::string(kGood).substr(0, 120), "bad.xml:6:"},  // truncated inside <cputune>
      {"<network>\n  <name>default</name>\n</network>\n",
       "bad.xml:1:1: expected a libvirt <domain>, got <network>"},
      {with(kGood, "<memory unit='MiB'>1024", "<memory unit='MiB'>1O24"),
       "bad.xml:3:3: <memory> value: expected a number, got \"1O24\""},
      {with(kGood, "<memory unit='MiB'>", "<memory unit='parsec'>"),
       "bad.xml:3:3: <memory> attribute unit: expected one of"},
      {with(kGood, "<vcpu>2", "<vcpu>two"), "bad.xml:4:3: <vcpu> value: expected a number"},
      {with(kGood, "vcpu='1' cpuset='3'", "vcpu='0' cpuset='3'"),
       "bad.xml:7:5: <vcpupin vcpu='0'> is given twice (first at 6:5)"},
      {with(kGood, "vcpu='1' cpuset='3'", "vcpu='1' cpuset='3-'"),
       "bad.xml:7:5: <vcpupin> attribute cpuset: expected a CPU list"},
      {with(kGood, "vcpu='1' cpuset='3'", "vcpu='5' cpuset='3'"),
       "bad.xml:7:5: <vcpupin vcpu='5'>: the domain has 2 vCPUs (0-1)"},
      {with(kGood, "arch='x86_64'", "arch='aarch64'"),
       "bad.xml:9:7: <os><type arch='aarch64'>: passlaunch runs x86_64 guests only"},
      {with(kGood, "type='kvm'", "type='xen'"), "bad.xml:1:1: <domain type='xen'>"},
      {with(kGood, "cpuset='2'", "cpuset='2-3,^2-3'"),
       "bad.xml:6:5: <vcpupin> attribute cpuset: expected a CPU list such as \"0-3,8\" or "
       "\"0-3,^2\", got \"2-3,^2-3\""},
      {with(kGood, "cpuset='2'", "cpuset='2,^2'"),
       "bad.xml:6:5: <vcpupin> attribute cpuset: expected at least one CPU, got \"2,^2\""},
      {with(kGood, "<vcpu>2", "<vcpu cpuset='1,,2'>2"),
       "bad.xml:4:3: <vcpu> attribute cpuset: expected a CPU list"},
  };
  for (const Case& c : cases) {
    std::string err = import_error(c.xml);
    EXPECT_NE(err.find(c.expected), std::string::npos) << err << "\nexpected: " << c.expected;
  }
  // Every problem at once.
  std::string two =
      import_error(with(with(kGood, "<vcpu>2", "<vcpu>x"), "cpuset='2'", "cpuset='z'"));
  EXPECT_NE(two.find("2 problems"), std::string::npos) << two;
}

TEST(Import, CommandLineExitsTwoOnMalformedXmlAndWritesNothing) {
  test::TempDir dir;
  spit(dir.path("bad.xml"), std::string(kGood).substr(0, 120));  // ends inside <vcpupin>
  auto [rc, out] = test::capture(
      {PL_PASSLAUNCH, "import", "libvirt", dir.path("bad.xml"), "-o", dir.path("out.json")});
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("bad.xml:6:19: not well-formed XML"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir.path("out.json")));
}

TEST(Import, CommandLineWritesRefusesToOverwriteAndStrictFails) {
  test::TempDir dir;
  const std::string domain = (kDir / "seed-win11.xml").string();
  const std::string root = (kDir / "host").string();
  auto [rc, out] = test::capture(
      {PL_PASSLAUNCH, "import", "libvirt", domain, "-o", dir.path("vm.json"), "--host-root", root});
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("dropped  /domain/uuid: libvirt bookkeeping"), std::string::npos) << out;
  // The written profile is one passlaunch reads.
  Profile p = load_profile(dir.path("vm.json"), ProfileChecks{.files = false});
  EXPECT_EQ(p.name, "win11");
  auto again = test::capture(
      {PL_PASSLAUNCH, "import", "libvirt", domain, "-o", dir.path("vm.json"), "--host-root", root});
  EXPECT_EQ(again.first, 2);
  EXPECT_NE(again.second.find("exists already"), std::string::npos) << again.second;
  EXPECT_EQ(test::capture({PL_PASSLAUNCH, "import", "libvirt", domain, "-o", dir.path("vm.json"),
                           "--force", "--host-root", root})
                .first,
            0);
  // --strict: linux-amd's virtio RNG and host-model CPU are guest-visible losses.
  auto strict =
      test::capture({PL_PASSLAUNCH, "import", "libvirt", (kDir / "linux-amd.xml").string(), "-o",
                     dir.path("strict.json"), "--strict", "--host-root", root});
  EXPECT_EQ(strict.first, 2) << strict.second;
  EXPECT_FALSE(fs::exists(dir.path("strict.json")));
  // A domain with nothing the guest would notice passes --strict.
  spit(dir.path("plain.xml"), kGood);
  EXPECT_EQ(test::capture({PL_PASSLAUNCH, "import", "libvirt", dir.path("plain.xml"), "--strict",
                           "--host-root", root})
                .first,
            0);
}

TEST(Import, JsonReportHasTheIssuesShape) {
  const std::string domain = (kDir / "linux-amd.xml").string();
  auto [rc, out] = test::capture({PL_PASSLAUNCH, "import", "libvirt", domain, "--json",
                                  "--host-root", (kDir / "host").string()});
  ASSERT_EQ(rc, 0) << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["profile"]["name"], "arch-gaming");
  for (const char* k : {"carried", "changed", "dropped"}) ASSERT_TRUE(j[k].is_array()) << k;
  bool redirdev = false;
  for (const auto& d : j["dropped"]) {
    if (d["path"] == "/domain/devices/redirdev[1]") {
      redirdev = true;
      EXPECT_NE(d["why"].get<std::string>().find("SPICE"), std::string::npos);
    }
  }
  EXPECT_TRUE(redirdev) << j["dropped"].dump(1);
}

TEST(Import, ReadsStdinAndAcceptsBannersCommentsAndAnyAttributeOrder) {
  test::TempDir dir;
  std::string xml =
      "<?xml version='1.0'?>\n<!-- auto-generated banner -->\n"
      "<domain xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0' type='kvm'>"
      "<vcpu>1</vcpu><memory unit='KiB'>524288</memory><name>x</name>"
      "<q:commandline><q:arg value='-no-hpet'/></q:commandline></domain>";
  spit(dir.path("in.xml"), xml);
  auto [rc, out] = test::capture(
      {"/bin/sh", "-c", std::string(PL_PASSLAUNCH) + " import libvirt - < " + dir.path("in.xml")});
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"size_mib\": 512"), std::string::npos) << out;
  EXPECT_NE(out.find("/domain/q:commandline"), std::string::npos) << out;
}

// ---- init on a host shaped like the seed's ----

/// The seed's machine beyond tests/sim_host: an i9-12900KF (eight P-cores
/// with SMT as CPUs 0-15, eight E-cores 16-23), QEMU's firmware descriptors,
/// systemd's display-manager alias, a default route on the X710.
void make_seed_shaped(const std::string& root) {
  auto put = [&](const std::string& path, const std::string& text) {
    fs::create_directories(fs::path(root + path).parent_path());
    std::ofstream(root + path) << text;
  };
  put("/sys/devices/system/cpu/online", "0-23\n");
  for (int cpu = 0; cpu < 24; ++cpu) {
    std::string sib =
        cpu < 16 ? std::to_string(cpu & ~1) + "-" + std::to_string(cpu | 1) : std::to_string(cpu);
    put("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list",
        sib + "\n");
  }
  put("/sys/devices/cpu_core/cpus", "0-15\n");
  put("/sys/devices/cpu_atom/cpus", "16-23\n");
  for (const auto& e : fs::directory_iterator(kDir / "host/usr/share/qemu/firmware")) {
    put("/usr/share/qemu/firmware/" + e.path().filename().string(), slurp(e.path()));
  }
  fs::create_directories(root + "/etc/systemd/system");
  fs::create_symlink("/lib/systemd/system/gdm.service",
                     root + "/etc/systemd/system/display-manager.service");
  put("/proc/net/route",
      "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
      "enp7s0f0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n");
}

Profile seed_profile() {
  return load_profile(std::string(PL_SOURCE_DIR) + "/profiles/win11.json",
                      ProfileChecks{.files = false});
}

void expect_same_pinning(const Profile& a, const Profile& b) {
  EXPECT_EQ(a.cpu.vcpus, b.cpu.vcpus);
  EXPECT_EQ(a.cpu.sockets, b.cpu.sockets);
  EXPECT_EQ(a.cpu.cores, b.cpu.cores);
  EXPECT_EQ(a.cpu.threads, b.cpu.threads);
  EXPECT_EQ(a.pinning.vcpus, b.pinning.vcpus);
  EXPECT_EQ(a.pinning.emulator, b.pinning.emulator);
  ASSERT_EQ(a.pinning.iothreads.size(), b.pinning.iothreads.size());
  for (size_t i = 0; i < a.pinning.iothreads.size(); ++i) {
    EXPECT_EQ(a.pinning.iothreads[i].id, b.pinning.iothreads[i].id);
    EXPECT_EQ(a.pinning.iothreads[i].cpus, b.pinning.iothreads[i].cpus);
  }
}

std::vector<std::pair<std::string, bool>> passthrough(const Profile& p) {
  std::vector<std::pair<std::string, bool>> out;
  for (const VfioDevice& d : p.devices) out.push_back({d.address.str(), d.attach});
  return out;
}

TEST(Init, SeedShapedHostGivesTheSeedsPassthroughAndPinning) {
  host::sim::SimHost sim;
  make_seed_shaped(sim.root());
  import::InitOptions o;
  o.gpu = "0000:01:00.0";
  o.devices = {"0000:03:00.0", "0000:00:1f.3"};
  import::InitResult r = import::init_profile(sim.fs(), o);
  Profile p = parse_profile(r.profile.text(), "init.json", ProfileChecks{.files = false});
  Profile seed = seed_profile();
  EXPECT_EQ(passthrough(p), passthrough(seed)) << r.profile.text();
  expect_same_pinning(p, seed);
  EXPECT_EQ(p.host.display_manager, seed.host.display_manager);
  EXPECT_EQ(p.host.gpu_modules, seed.host.gpu_modules);
  EXPECT_EQ(p.host.unbind_vtconsoles, seed.host.unbind_vtconsoles);
  EXPECT_EQ(p.host.unbind_framebuffer, seed.host.unbind_framebuffer);
  ASSERT_EQ(p.network.size(), 1u);
  EXPECT_EQ(p.network[0].link, "enp7s0f0");
  EXPECT_EQ(p.memory_mib, 65536000 / 1024 / 2);  // half of MemTotal
  EXPECT_FALSE(p.tpm_state_dir.empty());         // Windows 11: TPM
  // Secure Boot: the firmware with Microsoft's keys enrolled.
  EXPECT_EQ(p.firmware.code, "/usr/share/OVMF/OVMF_CODE_4M.ms.fd");
  EXPECT_EQ(p.firmware.vars_template, "/usr/share/OVMF/OVMF_VARS_4M.ms.fd");
  // Each other endpoint of a group says why it is not attached.
  EXPECT_NE(r.profile.text().find("0000:00:1f.4 [8086:7aa3]: in the same IOMMU group"),
            std::string::npos)
      << r.profile.text();
}

TEST(Init, TheIssuesCommandLineWritesTheGpuAndNvmeGroups) {
  host::sim::SimHost sim;
  make_seed_shaped(sim.root());
  test::TempDir dir;
  auto [rc, out] =
      test::capture({PL_PASSLAUNCH, "init", "--gpu", "0000:01:00.0", "--device", "0000:03:00.0",
                     "-o", dir.path("win11.json"), "--host-root", sim.root()});
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("0000:00:1d.0 is a bridge"), std::string::npos) << out;
  Profile p = load_profile(dir.path("win11.json"), ProfileChecks{.files = false});
  Profile seed = seed_profile();
  // The seed's devices but the onboard audio's group (not asked for here).
  auto want = passthrough(seed);
  want.erase(std::remove_if(want.begin(), want.end(),
                            [](const auto& d) { return d.first.starts_with("0000:00:1f"); }),
             want.end());
  EXPECT_EQ(passthrough(p), want);
  expect_same_pinning(p, seed);
  EXPECT_EQ(p.host.gpu_modules, seed.host.gpu_modules);
}

TEST(Init, RefusesABadGpu) {
  host::sim::SimHost sim;
  for (auto [gpu, expected] : {std::pair{"0000:03:00.0", "not a display controller"},
                               std::pair{"0000:09:00.0", "no such PCI device"},
                               std::pair{"zz", "expected a PCI address"}}) {
    import::InitOptions o;
    o.gpu = gpu;
    try {
      import::init_profile(sim.fs(), o);
      ADD_FAILURE() << gpu;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Exit::kUsage);
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  }
}

TEST(Init, HomogeneousCpuLeavesCpu0sCoreToTheHost) {
  host::sim::SimHost sim;  // CPUs 0-7, no topology files: each CPU its own core
  const std::string root = sim.root();
  for (int cpu = 0; cpu < 8; ++cpu) {
    std::string path = root + "/sys/devices/system/cpu/cpu" + std::to_string(cpu) +
                       "/topology/thread_siblings_list";
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path) << (cpu % 4) << "," << (cpu % 4 + 4) << "\n";
  }
  import::CpuLayout l = import::plan_cpus(sim.fs());
  ASSERT_EQ(l.vcpu_cores.size(), 3u);
  EXPECT_EQ(l.vcpu_cores[0].cpus, (std::vector<int>{1, 5}));
  EXPECT_EQ(l.host_cpus, (std::vector<int>{0, 4}));
}

TEST(Import, SeedDomainOnTheSeedShapedHostIsTheSeedsProfile) {
  host::sim::SimHost sim;
  make_seed_shaped(sim.root());
  ImportResult r = import_path(kDir / "seed-win11.xml", sim.fs());
  Profile p = parse_profile(r.profile.text(), "imported.json", ProfileChecks{.files = false});
  Profile seed = seed_profile();
  EXPECT_EQ(passthrough(p), passthrough(seed)) << r.profile.text();
  expect_same_pinning(p, seed);
  EXPECT_EQ(p.host.gpu_modules, seed.host.gpu_modules);
  EXPECT_EQ(p.cpu.hypervisor_bit, seed.cpu.hypervisor_bit);
  EXPECT_EQ(p.cpu.hyperv.vendor_id, seed.cpu.hyperv.vendor_id);
  EXPECT_EQ(p.cpu.hyperv.hide_kvm, seed.cpu.hyperv.hide_kvm);
  EXPECT_EQ(p.network[0].link, seed.network[0].link);
  EXPECT_EQ(p.network[0].mac, seed.network[0].mac);
  EXPECT_EQ(p.rtc, seed.rtc);
  EXPECT_EQ(p.memory_mib, seed.memory_mib);
  bool said = false;
  for (const auto& a : r.report.added) said |= a.to == "/host/gpu_modules";
  EXPECT_TRUE(said);
}

// `import -o VM.json && run VM.json --dry-run`: the only errors are the files
// the domain names that do not exist on this machine, all reported at once.
TEST(Import, DryRunOfAnImportedProfileFailsOnlyOnMissingFiles) {
  for (const char* name :
       {"seed-win11.xml", "win10-gaming.xml", "linux-amd.xml", "win11-lookingglass.xml"}) {
    SCOPED_TRACE(name);
    test::TempDir dir;
    auto [rc, out] =
        test::capture({PL_PASSLAUNCH, "import", "libvirt", (kDir / name).string(), "-o",
                       dir.path("vm.json"), "--host-root", (kDir / "host").string()});
    ASSERT_EQ(rc, 0) << out;
    auto dry = test::capture({PL_PASSLAUNCH, "run", dir.path("vm.json"), "--dry-run"});
    if (dry.first == 0) {
      EXPECT_NE(dry.second.find("qemu-system-x86_64"), std::string::npos) << dry.second;
      continue;
    }
    EXPECT_EQ(dry.first, 2) << dry.second;
    std::stringstream lines(dry.second);
    for (std::string line; std::getline(lines, line);) {
      if (line.starts_with("  " + dir.path("vm.json") + ": /")) {
        EXPECT_NE(line.find("file not found"), std::string::npos) << line;
      }
    }
  }
}

// ---- QEMU accepts what an imported profile builds ----

/// The imported profile made runnable here, as the argv tests do: hostdevs
/// removed (no vfio here), taps as user networking (no fds), files that exist
/// on this machine, TCG when KVM does not work, no TPM (no swtpm socket).
Profile runnable_here(Profile p, const test::TempDir& dir, bool kvm) {
  kvm = kvm && !p.firmware.secure_boot;
  p.devices.clear();
  for (NetDevice& n : p.network) n.type = NetDevice::Type::kUser;
  for (size_t i = 0; i < p.disks.size(); ++i) {
    std::string img = dir.path("disk" + std::to_string(i));
    EXPECT_EQ(test::run_command({"qemu-img", "create", "-q", "-f", p.disks[i].format, img, "16M"}),
              0);
    p.disks[i].path = img;
  }
  p.evdev.clear();
  p.usb.clear();
  p.tpm_state_dir.clear();
  p.hugepages = false;
  // QEMU's PulseAudio backend is a module of qemu-system-gui, not installed here.
  if (p.sound.backend == "pa") p.sound.backend = "none", p.sound.server.clear();
  p.memory_mib = std::min<uint64_t>(p.memory_mib, 512);
  if (p.firmware.type == Firmware::Type::kOvmf) {
    p.firmware.code = p.firmware.secure_boot ? "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
                                             : "/usr/share/OVMF/OVMF_CODE_4M.fd";
  }
  // (Nested KVM here has no SMM: a Secure Boot guest runs under TCG, above.)
  p.accel = kvm ? Accel::kKvm : Accel::kTcg;
  if (p.cpu.model == "host") {
    if (kvm) {
      p.cpu.features.push_back("-arch-capabilities");  // nested KVM (docs/test-guest.md)
    } else {
      p.cpu.model = "max";
    }
  }
  // Host features the nested CPU here may lack: QEMU warns, but accepts them.
  return p;
}

TEST(ImportQemu, QemuAcceptsTheArgvOfEveryRealShapedDomain) {
  host::HostFs host((kDir / "host").string());
  const bool kvm = test::kvm_works();
  // Nested KVM here (and TCG) refuses hv-vpindex when the vCPUs are realized,
  // whatever the argv: find out once, and leave the enlightenments out then.
  auto [vp_rc, vp_out] =
      test::capture({"/bin/sh", "-c",
                     "echo '{\"execute\":\"qmp_capabilities\"}{\"execute\":\"quit\"}' | "
                     "qemu-system-x86_64 -nodefaults -S -display none -machine q35 -accel " +
                         std::string(kvm ? "kvm -cpu host,-arch-capabilities" : "tcg -cpu max") +
                         ",hv-vpindex=on -m 64M -qmp stdio"});
  const bool hv_vpindex_works = vp_out.find("VP_INDEX") == std::string::npos;
  for (const fs::path& xml : domains()) {
    SCOPED_TRACE(xml.string());
    ImportResult r = import_path(xml, host);
    test::TempDir dir;
    Profile p = runnable_here(
        parse_profile(r.profile.text(), xml.string(), ProfileChecks{.files = false}), dir, kvm);
    if (!hv_vpindex_works && (p.cpu.hyperv.enlightenments || p.cpu.hyperv.passthrough ||
                              !p.cpu.hyperv.features.empty())) {
      std::cerr << xml.filename().string()
                << ": this machine's KVM cannot set HyperV VP_INDEX: the acceptance run leaves "
                   "the enlightenments out\n";
      p.cpu.hyperv.enlightenments = false;
      p.cpu.hyperv.passthrough = false;
      p.cpu.hyperv.features.clear();
      // A user's own "-cpu ...,hv_time" in qemu_args hits the same limit.
      for (size_t i = 0; i + 1 < p.qemu_args.size(); ++i) {
        if (p.qemu_args[i] == "-cpu" && p.qemu_args[i + 1].find("hv_") != std::string::npos) {
          p.qemu_args.erase(p.qemu_args.begin() + i, p.qemu_args.begin() + i + 2);
          break;
        }
      }
    }
    HostFacts f = facts_for(p);
    f.runtime_dir = dir.path();
    f.accel = p.accel;
    if (p.firmware.type == Firmware::Type::kOvmf) {
      f.ovmf_vars = dir.path("vars.fd");
      fs::copy_file("/usr/share/OVMF/OVMF_VARS_4M.fd", f.ovmf_vars);
    }
    test::Qemu qemu(build_qemu_argv(p, f));
    EXPECT_EQ(qemu.query_status(), "prelaunch") << qemu.stderr_text();
  }
}

}  // namespace
}  // namespace pl
