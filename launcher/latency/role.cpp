#include "latency/role.h"

#include <charconv>
#include <limits>
#include <set>

#include "core/error.h"

namespace pl::latency {

namespace {

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

using json = nlohmann::json;

[[noreturn]] void bad_reply(const std::string& command, size_t i, const json& entry,
                            const std::string& problem) {
  throw Error(Exit::kEnvironment, "QMP " + command + ": entry " + std::to_string(i) + " (" +
                                      entry.dump() + "): " + problem);
}

/// entry[field] as an int in [min, INT_MAX].
int int_field(const std::string& command, size_t i, const json& entry, const char* field, int min) {
  auto it = entry.find(field);
  if (it == entry.end()) bad_reply(command, i, entry, std::string("no \"") + field + "\"");
  if (!it->is_number_integer() || it->get<long long>() < min ||
      it->get<long long>() > std::numeric_limits<int>::max())
    bad_reply(command, i, entry,
              std::string("\"") + field + "\": expected an integer >= " + std::to_string(min));
  return it->get<int>();
}

void expect_array(const std::string& command, const json& reply) {
  if (!reply.is_array())
    throw Error(Exit::kEnvironment,
                "QMP " + command + ": expected an array of threads, got " + reply.dump());
}

}  // namespace

Role classify_thread(std::string_view name) {
  Role role;
  // "CPU <n>/KVM" or "CPU <n>/TCG" (QEMU's qemu_thread_create names, debug-threads=on).
  if (name.starts_with("CPU ")) {
    std::string_view rest = name.substr(4);
    auto slash = rest.find('/');
    if (slash != std::string_view::npos) {
      std::string_view num = rest.substr(0, slash);
      std::string_view accel = rest.substr(slash + 1);
      int n = 0;
      if (all_digits(num) && (accel == "KVM" || accel == "TCG") &&
          std::from_chars(num.data(), num.data() + num.size(), n).ec == std::errc{}) {
        role.kind = Role::Kind::kVcpu;
        role.vcpu = n;
        return role;
      }
    }
  }
  if (name.starts_with("IO ") && name.size() > 3) {
    role.kind = Role::Kind::kIothread;
    role.id = name.substr(3);
    return role;
  }
  if (name.starts_with("vhost-") && all_digits(name.substr(6))) {
    role.kind = Role::Kind::kVhost;
    return role;
  }
  return role;
}

std::string to_string(const Role& role) {
  switch (role.kind) {
    case Role::Kind::kVcpu:
      return "vcpu " + std::to_string(role.vcpu);
    case Role::Kind::kIothread:
      return "iothread " + std::string(role.id);
    case Role::Kind::kVhost:
      return "vhost";
    case Role::Kind::kEmulator:
      break;
  }
  return "emulator";
}

QemuThreads parse_qemu_threads(const json& cpus_fast, const json& iothreads) {
  QemuThreads q;
  std::set<int> tids;
  const std::string cpus_cmd = "query-cpus-fast", io_cmd = "query-iothreads";
  expect_array(cpus_cmd, cpus_fast);
  expect_array(io_cmd, iothreads);
  for (size_t i = 0; i < cpus_fast.size(); ++i) {
    const json& c = cpus_fast[i];
    if (!c.is_object()) bad_reply(cpus_cmd, i, c, "expected an object");
    int index = int_field(cpus_cmd, i, c, "cpu-index", 0);
    int tid = int_field(cpus_cmd, i, c, "thread-id", 1);
    if (!q.vcpus.emplace(index, tid).second)
      bad_reply(cpus_cmd, i, c, "cpu-index " + std::to_string(index) + " listed twice");
    if (!tids.insert(tid).second)
      bad_reply(cpus_cmd, i, c, "thread-id " + std::to_string(tid) + " listed twice");
  }
  for (size_t i = 0; i < iothreads.size(); ++i) {
    const json& t = iothreads[i];
    if (!t.is_object()) bad_reply(io_cmd, i, t, "expected an object");
    auto id = t.find("id");
    if (id == t.end() || !id->is_string() || id->get_ref<const std::string&>().empty())
      bad_reply(io_cmd, i, t, "\"id\": expected a non-empty string");
    int tid = int_field(io_cmd, i, t, "thread-id", 1);
    if (!q.iothreads.emplace(id->get<std::string>(), tid).second)
      bad_reply(io_cmd, i, t, "id \"" + id->get<std::string>() + "\" listed twice");
    if (!tids.insert(tid).second)
      bad_reply(io_cmd, i, t, "thread-id " + std::to_string(tid) + " listed twice");
  }
  return q;
}

std::map<int, std::string> thread_roles(const QemuThreads& qemu) {
  std::map<int, std::string> roles;
  for (const auto& [index, tid] : qemu.vcpus) {
    Role r;
    r.kind = Role::Kind::kVcpu;
    r.vcpu = index;
    roles[tid] = to_string(r);
  }
  for (const auto& [id, tid] : qemu.iothreads) {
    Role r;
    r.kind = Role::Kind::kIothread;
    r.id = id;
    roles[tid] = to_string(r);
  }
  return roles;
}

std::map<int, std::string> roles_from_qmp(const json& cpus_fast, const json& iothreads) {
  return thread_roles(parse_qemu_threads(cpus_fast, iothreads));
}

}  // namespace pl::latency
