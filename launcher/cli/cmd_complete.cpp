// passlaunch __complete: see complete.h.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <string_view>

#include "cli/cli.h"
#include "cli/complete.h"
#include "run/facts.h"
#include "run/runtime.h"

namespace pl::cli {
namespace {

// What a positional argument or an option's value names, from its name.
std::vector<std::string> value_candidates(const CLI::Option& opt,
                                          const std::function<std::vector<std::string>()>& vms) {
  std::string n = opt.get_name(false, true);
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  if (n == "name") return vms();
  if (n == "--host-root") return {":dirs"};
  if (n == "--reader") return {"uring", "pread"};
  if (n == "profile" || n == "--profile" || n == "file" || n == "in" || n == "out" ||
      n == "--csv" || n == "--plot" || n == "--latency-log" || n == "--socket" || n == "--qemu") {
    return {":files"};
  }
  return {};  // numbers, durations, tags, QMP commands: nothing to offer
}

bool visible(const CLI::App* sub) { return !sub->get_group().empty(); }

}  // namespace

std::vector<std::string> completions(CLI::App& root, const std::vector<std::string>& words,
                                     const std::function<std::vector<std::string>()>& vm_names) {
  CLI::App* app = &root;
  std::size_t positionals = 0;           // positional arguments given to `app` so far
  const CLI::Option* pending = nullptr;  // an option whose value comes next
  for (std::size_t i = 0; i + 1 < words.size(); ++i) {
    const std::string& w = words[i];
    if (pending) {
      pending = nullptr;
      continue;
    }
    if (w.size() > 1 && w[0] == '-') {
      const CLI::Option* opt = app->get_option_no_throw(w.substr(0, w.find('=')));
      if (opt && w.find('=') == std::string::npos && opt->get_expected_min() > 0) pending = opt;
      continue;
    }
    auto subs = app->get_subcommands([&](CLI::App* s) { return s->get_name() == w; });
    if (!subs.empty()) {
      app = subs.front();
      positionals = 0;
      continue;
    }
    ++positionals;
  }

  const std::string cur = words.empty() ? std::string() : words.back();
  std::vector<std::string> out;
  if (pending) {
    out = value_candidates(*pending, vm_names);
  } else if (cur.size() > 0 && cur[0] == '-') {
    for (const CLI::Option* o : app->get_options()) {
      for (const auto& l : o->get_lnames()) out.push_back("--" + l);
    }
  } else {
    auto pos = app->get_options([](const CLI::Option* o) { return o->get_positional(); });
    bool positional_left = false;
    if (!pos.empty()) {
      // The positional this word fills; the last one may take many words.
      std::size_t k = std::min(positionals, pos.size() - 1);
      const CLI::Option* p = pos[k];
      positional_left = positionals < pos.size() || p->get_items_expected_max() > 1;
      if (positional_left) out = value_candidates(*p, vm_names);
    }
    // Subcommands, once the arguments that come before them are given (ctl NAME ...).
    bool required_missing = positionals < pos.size() && pos[positionals]->get_required();
    if (!required_missing) {
      for (CLI::App* s : app->get_subcommands(visible)) out.push_back(s->get_name());
    }
  }
  std::erase_if(out, [&](const std::string& c) {
    return !(c.starts_with(":") || std::string_view(c).starts_with(cur));
  });
  return out;
}

std::vector<std::string> running_vm_names() {
  std::vector<std::string> names;
  std::error_code ec;
  auto base = std::filesystem::path(runtime_dir_for("x")).parent_path();
  for (const auto& e : std::filesystem::directory_iterator(base, ec)) {
    std::string name = e.path().filename();
    if (running_launcher(name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

void add_complete_command(CLI::App& app, Action& action) {
  CLI::App* sub = app.add_subcommand("__complete", "Shell completion (scripts/completions/)");
  sub->group("");         // hidden from --help
  sub->prefix_command();  // every word after it is data, options included
  sub->callback([&app, sub, &action] {
    action = [&app, words = sub->remaining()]() -> int {
      for (const auto& c : completions(app, words, running_vm_names)) std::cout << c << "\n";
      return 0;
    };
  });
}

}  // namespace pl::cli
