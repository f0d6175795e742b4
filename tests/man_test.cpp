// The man pages and shell completions stay in step with what they describe:
// passlaunch-profile(5) (made from profiles/README.md at build time) carries
// every field the README documents and no other; passlaunch(1) names every
// subcommand and option of the CLI; completion offers the CLI's own words.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "cli/cli.h"
#include "cli/complete.h"

namespace {

std::string read(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot read " << path;
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// roff text back to plain text: fonts, escapes, the no-op \&.
std::string unroff(std::string s) {
  for (const char* f : {"\\fB", "\\fI", "\\fR", "\\&"}) {
    for (auto p = s.find(f); p != std::string::npos; p = s.find(f)) s.erase(p, std::strlen(f));
  }
  s = std::regex_replace(s, std::regex(R"(\\-)"), "-");
  s = std::regex_replace(s, std::regex(R"(\\e)"), "\\");
  return s;
}

// "SECTION: field" for each table row and each "- `field`:" item of the README.
std::set<std::string> readme_fields(const std::string& md) {
  std::set<std::string> out;
  std::istringstream in(md);
  std::string line, section;
  bool header_next = false;  // the next table row is a header
  std::smatch m;
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) {
      section = std::regex_replace(line.substr(3), std::regex("`"), "");
      section = upper(section);
      header_next = true;
    } else if (line.rfind("|", 0) == 0) {
      if (std::regex_match(line, std::regex(R"(\|[\s:|-]+\|\s*)"))) continue;
      if (header_next) {
        header_next = false;
        continue;
      }
      std::string cell = line.substr(1, line.find('|', 1) - 1);
      cell = std::regex_replace(cell, std::regex("^\\s+|\\s+$|`"), "");
      out.insert(section + ": " + cell);
    } else {
      header_next = true;
      if (std::regex_match(line, m, std::regex(R"([-*]\s+`([^`]+)`:.*)"))) {
        out.insert(section + ": " + m[1].str());
      }
    }
  }
  return out;
}

std::set<std::string> man_fields(const std::string& roff) {
  std::set<std::string> out;
  std::istringstream in(roff);
  std::string line, section;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_match(line, m, std::regex(R"re(\.SH "?([^"]*)"?)re"))) {
      section = unroff(m[1].str());
    } else if (line == ".TP" && std::getline(in, line)) {
      out.insert(section + ": " + unroff(line));
    } else if (line.rfind(".IP \\(bu", 0) == 0 && std::getline(in, line)) {
      if (std::regex_match(line, m, std::regex(R"(\\fB([^\\]+)\\fR:.*)"))) {
        out.insert(section + ": " + unroff(m[1].str()));
      }
    }
  }
  return out;
}

std::string diff(const std::set<std::string>& a, const std::set<std::string>& b) {
  std::string s;
  for (const auto& x : a) {
    if (!b.count(x)) s += "  " + x + "\n";
  }
  return s;
}

TEST(ManPage, ProfileManPageHasEveryFieldOfProfilesReadme) {
  auto readme = readme_fields(read(PL_SOURCE_DIR "/profiles/README.md"));
  auto man = man_fields(read(PL_BINARY_DIR "/docs/man/passlaunch-profile.5"));
  EXPECT_GT(readme.size(), 50u);  // the parser above still finds the tables
  EXPECT_TRUE(readme.count("TOP LEVEL: name")) << "the README's tables were not found";
  EXPECT_TRUE(readme.count("INPUT: evdev"));
  EXPECT_EQ(diff(readme, man), "") << "in profiles/README.md but not in passlaunch-profile(5)";
  EXPECT_EQ(diff(man, readme), "") << "in passlaunch-profile(5) but not in profiles/README.md";
}

// Every visible subcommand (as "ctl snapshot save") and long option of the CLI.
void walk(CLI::App& app, const std::string& path, std::set<std::string>& subs,
          std::set<std::string>& options) {
  for (const CLI::Option* o : app.get_options()) {
    for (const auto& l : o->get_lnames()) {
      if (l != "help") options.insert("--" + l);
    }
  }
  for (CLI::App* s : app.get_subcommands([](CLI::App* s) { return !s->get_group().empty(); })) {
    std::string p = path.empty() ? s->get_name() : path + " " + s->get_name();
    subs.insert(s->get_name());
    walk(*s, p, subs, options);
  }
}

TEST(ManPage, PasslaunchManPageNamesEverySubcommandAndOption) {
  CLI::App app;
  pl::cli::Action action;
  pl::cli::add_all_commands(app, action);
  std::set<std::string> subs, options;
  walk(app, "", subs, options);
  EXPECT_TRUE(subs.count("run") && subs.count("snapshot") && options.count("--dry-run"));

  std::string man = unroff(read(PL_BINARY_DIR "/docs/man/passlaunch.1"));
  std::string missing;
  for (const auto& s : subs) {
    if (!std::regex_search(man, std::regex("(^|[^-\\w])" + s + "([^-\\w]|$)"))) {
      missing += "  subcommand " + s + "\n";
    }
  }
  for (const auto& o : options) {
    if (!std::regex_search(man, std::regex(o + "([^-\\w]|$)"))) missing += "  option " + o + "\n";
  }
  EXPECT_EQ(missing, "") << "docs/man/passlaunch.1.md does not mention";
  for (const char* section : {"SYNOPSIS", "EXIT STATUS", "FILES", "ENVIRONMENT"}) {
    EXPECT_NE(man.find(std::string(".SH \"") + section + "\""), std::string::npos) << section;
  }
}

std::vector<std::string> complete(const std::vector<std::string>& words) {
  CLI::App app;
  pl::cli::Action action;
  pl::cli::add_all_commands(app, action);
  return pl::cli::completions(app, words, [] { return std::vector<std::string>{"demo", "win11"}; });
}

bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(Completion, OffersSubcommandsButNotTheHiddenOne) {
  auto c = complete({""});
  EXPECT_TRUE(has(c, "run") && has(c, "ctl") && has(c, "latency") && has(c, "list")) << c.size();
  EXPECT_FALSE(has(c, "__complete"));
  EXPECT_EQ(complete({"la"}), std::vector<std::string>{"latency"});
}

TEST(Completion, OffersRunningVmNamesForCtlAndLatency) {
  EXPECT_EQ(complete({"ctl", ""}), (std::vector<std::string>{"demo", "win11"}));
  EXPECT_EQ(complete({"ctl", "w"}), std::vector<std::string>{"win11"});
  auto lat = complete({"latency", ""});
  EXPECT_TRUE(has(lat, "demo") && has(lat, "win11"));
  // After the name come ctl's subcommands.
  auto sub = complete({"ctl", "demo", ""});
  EXPECT_TRUE(has(sub, "status") && has(sub, "shutdown") && has(sub, "snapshot"));
  EXPECT_FALSE(has(sub, "demo"));
  EXPECT_TRUE(has(complete({"ctl", "demo", "snapshot", ""}), "save"));
}

TEST(Completion, OffersOptionsOfTheSubcommand) {
  auto c = complete({"run", "--"});
  EXPECT_TRUE(has(c, "--dry-run") && has(c, "--latency-log") && has(c, "--help"));
  EXPECT_FALSE(has(c, "--pid"));
  EXPECT_EQ(complete({"ctl", "demo", "shutdown", "--t"}), std::vector<std::string>{"--timeout"});
}

TEST(Completion, AsksForFilesWhereAProfileOrFileGoes) {
  EXPECT_EQ(complete({"run", ""}), std::vector<std::string>{":files"});
  EXPECT_EQ(complete({"run", "--dry-run", "prof"}), std::vector<std::string>{":files"});
  EXPECT_EQ(complete({"latency", "--csv", ""}), std::vector<std::string>{":files"});
  EXPECT_EQ(complete({"iommu", "--host-root", ""}), std::vector<std::string>{":dirs"});
  EXPECT_EQ(complete({"latency", "--reader", ""}), (std::vector<std::string>{"uring", "pread"}));
  // An option's value is not taken for a positional: the profile comes next.
  EXPECT_EQ(complete({"run", "--latency-log", "x.json", ""}), std::vector<std::string>{":files"});
}

}  // namespace
