// The QMP client against a scripted fake server on a real Unix socket.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <future>
#include <set>

#include "qmp/client.h"
#include "qmp_test_util.h"

namespace qmp::testing {
namespace {

namespace asio = boost::asio;

struct Outcome {
  std::optional<json> value;
  std::optional<Error> error;
};

/// Runs all `ops` concurrently on the current executor and collects each
/// result or qmp::Error.
awaitable<std::vector<Outcome>> gather(std::vector<awaitable<json>> ops) {
  auto ex = co_await asio::this_coro::executor;
  std::vector<Outcome> out(ops.size());
  std::size_t left = ops.size();
  asio::steady_timer done(ex, Clock::time_point::max());
  for (std::size_t i = 0; i < ops.size(); ++i) {
    asio::co_spawn(ex, std::move(ops[i]), [&, i](std::exception_ptr e, json v) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const Error& err) {
          out[i].error = err;
        } catch (const std::exception& other) {
          out[i].error = Error(ErrorKind::protocol, std::string("unexpected: ") + other.what());
        }
      } else {
        out[i].value = std::move(v);
      }
      if (--left == 0) done.cancel();
    });
  }
  while (left) {
    boost::system::error_code ec;
    co_await done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return out;
}

/// Runs `op` expecting a qmp::Error; returns it.
template <class F>
Error expect_error(F&& op) {
  try {
    op();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no qmp::Error thrown";
  return Error(ErrorKind::protocol, "none");
}

TEST(QmpClient, ConnectsAndExecutes) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    json cmd = p.expect("query-status");
    EXPECT_FALSE(cmd.contains("arguments"));  // null arguments are omitted
    p.reply(cmd, {{"status", "prelaunch"}});
    cmd = p.expect("echo");
    p.reply(cmd, cmd["arguments"]);
    p.wait_eof();
  });
  SyncClient c;
  Greeting g = c.connect(server.path, fake_connect());
  EXPECT_EQ(g.major, 7);
  EXPECT_EQ(g.minor, 2);
  EXPECT_EQ(g.package, "fake");
  EXPECT_EQ(g.capabilities, std::vector<std::string>{"oob"});
  EXPECT_EQ(c.client().state(), State::ready);
  EXPECT_EQ(c.execute("query-status")["status"], "prelaunch");
  EXPECT_EQ(c.execute("echo", {{"x", 1}}), json({{"x", 1}}));
  c.close();
  EXPECT_EQ(server.failure(), "");
  EXPECT_TRUE(c.client().ending()->normal());
}

TEST(QmpClient, GreetingByteByByte) {
  std::string greeting = Peer::greeting().dump() + "\r\n";
  FakeServer server([&](Peer& p) {
    p.send_bytewise(greeting);
    json cmd = p.expect("qmp_capabilities");
    p.send_bytewise(json({{"return", json::object()}, {"id", cmd["id"]}}).dump());
    p.send("\r\n");  // the client may already have stopped reading: connect() is done
    p.wait_eof();
  });
  SyncClient c;
  EXPECT_EQ(c.connect(server.path, fake_connect()).package, "fake");
  EXPECT_GE(c.client().stats().reads, greeting.size());  // really one byte per read
  c.close();
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, EventBeforeGreetingIsDeliveredNotFatal) {
  FakeServer server([](Peer& p) {
    p.send_json(Peer::event("EARLY"));
    p.negotiate();
    p.wait_eof();
  });
  SyncClient c;
  Subscription all = c.client().subscribe();
  c.connect(server.path, fake_connect());
  EXPECT_EQ(c.next_event(all, 10s)["event"], "EARLY");
  c.close();
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, BytesAfterTheGreetingInTheSameReadAreKept) {
  FakeServer server([](Peer& p) {
    p.send(Peer::greeting().dump() + "\r\n" + Peer::event("AFTER").dump() + "\r\n{\"ev");
    p.send("ent\": \"SPLIT\"}\r\n");
    p.reply(p.expect("qmp_capabilities"), json::object());
    p.wait_eof();
  });
  SyncClient c;
  Subscription all = c.client().subscribe();
  c.connect(server.path, fake_connect());
  EXPECT_EQ(c.next_event(all, 10s)["event"], "AFTER");
  EXPECT_EQ(c.next_event(all, 10s)["event"], "SPLIT");
  c.close();
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, NoGreetingMeansBusy) {
  FakeServer server([](Peer& p) { p.wait_eof(); });
  SyncClient c;
  Error e = expect_error([&] { c.connect(server.path, fake_connect(300ms)); });
  EXPECT_EQ(e.kind(), ErrorKind::busy);
  EXPECT_NE(std::string(e.what()).find("one QMP client at a time"), std::string::npos) << e.what();
  EXPECT_EQ(c.client().state(), State::closed);
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, EventBetweenCapabilitiesAndItsReplyIsDelivered) {
  FakeServer server([](Peer& p) {
    p.greet();
    json cmd = p.expect("qmp_capabilities");
    p.send_json(Peer::event("RESUME"));
    p.reply(cmd, json::object());
    p.wait_eof();
  });
  SyncClient c;
  Subscription resumes = c.client().subscribe("RESUME");
  c.connect(server.path, fake_connect());
  EXPECT_EQ(c.next_event(resumes, 10s)["event"], "RESUME");
  EXPECT_EQ(c.client().state(), State::ready);
  c.close();
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, OobIsEnabledOnlyWhenAsked) {
  for (bool oob : {false, true}) {
    FakeServer server([oob](Peer& p) {
      p.greet();
      json cmd = p.expect("qmp_capabilities");
      if (oob) {
        EXPECT_EQ(cmd["arguments"], json({{"enable", {"oob"}}}));
      } else {
        EXPECT_FALSE(cmd.contains("arguments"));
      }
      EXPECT_TRUE(cmd.contains("id"));
      p.reply(cmd, json::object());
      p.wait_eof();
    });
    SyncClient c;
    ConnectOptions o = fake_connect();
    o.oob = oob;
    c.connect(server.path, o);
    c.close();
    EXPECT_EQ(server.failure(), "");
  }
}

TEST(QmpClient, HundredPipelinedCommandsWithRepliesOutOfOrder) {
  const int n = 100;
  FakeServer server([&](Peer& p) {
    p.negotiate();
    std::vector<json> cmds;
    for (int i = 0; i < n; ++i) cmds.push_back(p.expect("echo"));
    std::set<json> ids;
    for (auto& c : cmds) ids.insert(c["id"]);
    EXPECT_EQ(ids.size(), static_cast<std::size_t>(n));  // every id unique
    for (int i = n - 1; i >= 0; --i) p.reply(cmds[i], cmds[i]["arguments"]);
    p.wait_eof();
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  std::vector<awaitable<json>> ops;
  for (int i = 0; i < n; ++i) ops.push_back(c.client().execute("echo", {{"n", i}}));
  auto results = c.run(gather(std::move(ops)));
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(results[i].value) << results[i].error->what();
    EXPECT_EQ((*results[i].value)["n"], i);
  }
  c.close();
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, UnknownAndDuplicateIdsAreDropped) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    json cmd = p.expect("a");
    p.send_json(json{{"return", "stray"}, {"id", 424242}});
    p.send_json(json{{"return", "stray"}, {"id", "not-ours"}});
    p.reply(cmd, "first");
    p.reply(cmd, "duplicate");
    cmd = p.expect("b");
    p.reply(cmd, "second");
    p.wait_eof();
  });
  std::vector<std::string> logs;
  Options opt;
  opt.log = [&](const std::string& m) { logs.push_back(m); };
  SyncClient c(opt);
  c.connect(server.path, fake_connect());
  EXPECT_EQ(c.execute("a"), "first");
  EXPECT_EQ(c.execute("b"), "second");
  EXPECT_EQ(c.client().stats().dropped_replies, 3u);
  EXPECT_EQ(logs.size(), 3u);
  c.close();
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, IdlessErrorBurstIsLoggedAndTheConnectionGoesOn) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    json cmd = p.expect("a");
    for (int i = 0; i < 5; ++i) {
      p.send_json(json{{"error", {{"class", "GenericError"}, {"desc", "JSON parse error"}}}});
    }
    p.reply(cmd, "ok");
    p.wait_eof();
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  EXPECT_EQ(c.execute("a"), "ok");
  EXPECT_EQ(c.client().stats().idless_errors, 5u);
  EXPECT_EQ(c.client().state(), State::ready);
  c.close();
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, ErrorReplyCarriesCommandClassAndDescription) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    p.error(p.expect("nope"), "CommandNotFound", "The command nope has not been found");
    p.reply(p.expect("after"), 1);
    p.wait_eof();
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  Error e = expect_error([&] { c.execute("nope"); });
  EXPECT_EQ(e.kind(), ErrorKind::command_error);
  EXPECT_EQ(e.command(), "nope");
  EXPECT_EQ(e.error_class(), "CommandNotFound");
  EXPECT_EQ(e.description(), "The command nope has not been found");
  EXPECT_EQ(c.execute("after"), 1);
  c.close();
  EXPECT_EQ(server.failure(), "");
}

// Each malformed reply is a protocol error reported at once: the command's
// timeout is a minute, the test would notice waiting for it.
TEST(QmpClient, MalformedRepliesFailAtOnce) {
  struct Case {
    const char* name;
    std::function<std::string(const json& id)> reply;
  };
  std::vector<Case> cases = {
      {"not JSON", [](const json&) { return "this is not json\r\n"; }},
      {"invalid JSON",
       [](const json& id) { return "{\"return\": {}, \"id\": " + id.dump() + ",}\r\n"; }},
      {"neither",
       [](const json& id) {
         return json{{"id", id}}.dump() + "\r\n";
       }},
      {"both",
       [](const json& id) {
         return json{{"id", id}, {"return", {}}, {"error", {{"class", "X"}, {"desc", "y"}}}}
                    .dump() +
                "\r\n";
       }},
      {"error without class",
       [](const json& id) {
         return json{{"id", id}, {"error", {{"desc", "y"}}}}.dump() + "\r\n";
       }},
      {"not an object", [](const json&) { return "[1, 2, 3]\r\n"; }},
      {"second greeting", [](const json&) { return Peer::greeting().dump() + "\r\n"; }},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.name);
    FakeServer server([&](Peer& p) {
      p.negotiate();
      json cmd = p.expect("a");
      p.send(tc.reply(cmd["id"]));
      p.wait_eof();
    });
    SyncClient c;
    c.connect(server.path, fake_connect());
    auto start = Clock::now();
    Error e = expect_error([&] { c.execute("a", nullptr, 60s); });
    EXPECT_EQ(e.kind(), ErrorKind::protocol) << e.what();
    EXPECT_LT(Clock::now() - start, 30s);
    EXPECT_EQ(c.client().ending()->reason, Ending::Reason::failed);
    EXPECT_EQ(expect_error([&] { c.execute("b"); }).kind(), ErrorKind::protocol);
    EXPECT_EQ(server.failure(), "");
  }
}

TEST(QmpClient, EofInsideAReplyFailsAllThreePendingCommands) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    json first = p.expect("a");
    p.expect("a");
    p.expect("a");
    p.send("{\"return\": {}, \"id\": " + first["id"].dump());  // cut off: never dispatched
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  std::vector<awaitable<json>> ops;
  for (int i = 0; i < 3; ++i) ops.push_back(c.client().execute("a", nullptr, 60s));
  auto results = c.run(gather(std::move(ops)));
  for (auto& r : results) {
    ASSERT_TRUE(r.error);
    EXPECT_EQ(r.error->kind(), ErrorKind::disconnected) << r.error->what();
  }
  auto end = c.client().ending();
  ASSERT_TRUE(end);
  EXPECT_EQ(end->reason, Ending::Reason::peer_closed);
  EXPECT_FALSE(end->normal());
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, OversizeMessageIsAProtocolErrorWithBoundedMemory) {
  std::size_t sent = 0;
  FakeServer server([&](Peer& p) {
    p.negotiate();
    p.expect("a");
    p.send("{\"return\": \"");
    std::string chunk(256 * 1024, 'a');
    while (sent < (64u << 20) && p.send(chunk)) sent += chunk.size();  // until the client hangs up
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  Error e = expect_error([&] { c.execute("a", nullptr, 120s); });
  EXPECT_EQ(e.kind(), ErrorKind::protocol);
  EXPECT_NE(std::string(e.what()).find("larger than 16777216"), std::string::npos) << e.what();
  EXPECT_LE(c.client().stats().max_buffered, Framer::kDefaultMaxMessage + 64 * 1024 + 64);
  EXPECT_EQ(server.failure(), "");
  EXPECT_LT(sent, 64u << 20);  // the client stopped reading and closed
}

TEST(QmpClient, TimeoutThenLateReplyIsDroppedAndNextCommandWorks) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    json stalled = p.expect("slow");
    json next = p.expect("fast");  // sent only after "slow" timed out
    p.reply(stalled, "late");
    p.reply(next, "fast-reply");
    p.wait_eof();
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  Error e = expect_error([&] { c.execute("slow", nullptr, 200ms); });
  EXPECT_EQ(e.kind(), ErrorKind::timeout);
  EXPECT_EQ(e.command(), "slow");
  EXPECT_EQ(c.execute("fast", nullptr, 60s), "fast-reply");
  EXPECT_EQ(c.client().stats().dropped_replies, 1u);
  EXPECT_EQ(c.client().state(), State::ready);
  c.close();
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, EventStormWithIdleConsumerKeepsRepliesFlowingAndMemoryBounded) {
  const int storm = 10000;
  FakeServer server([&](Peer& p) {
    p.negotiate();
    json cmd = p.expect("a");
    for (int i = 0; i < storm; ++i) p.send_json(Peer::event("STORM", {{"n", i}}));
    p.reply(cmd, "still here");
    p.wait_eof();
  });
  SyncClient c;
  Subscription idle = c.client().subscribe("STORM", 64);  // never read during the storm
  Subscription unrelated = c.client().subscribe("SHUTDOWN", 4);
  c.connect(server.path, fake_connect());
  EXPECT_EQ(c.execute("a", nullptr, 60s), "still here");
  EXPECT_EQ(c.client().stats().events, static_cast<std::uint64_t>(storm));
  EXPECT_EQ(idle.size(), 64u);
  EXPECT_EQ(idle.dropped(), static_cast<std::uint64_t>(storm - 64));
  EXPECT_EQ(idle.try_next()->at("data")["n"], storm - 64);  // oldest were dropped
  EXPECT_EQ(unrelated.size(), 0u);
  EXPECT_LT(c.client().stats().max_buffered, 256u * 1024);
  c.close();
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, PrettyMultiLineBareLfAndBlankLines) {
  FakeServer server([](Peer& p) {
    p.send("\r\n\n" + Peer::greeting().dump(4) + "\n\n");
    json cmd = p.expect("qmp_capabilities");
    p.send(json{{"return", json::object()}, {"id", cmd["id"]}}.dump(2) + "\n");
    cmd = p.expect("a");
    p.send("\n\n" + Peer::event("X").dump(3) + "\n\r\n" +
           json{{"return", {{"k", {1, 2}}}}, {"id", cmd["id"]}}.dump(4) + "\n");
    p.wait_eof();
  });
  SyncClient c;
  Subscription xs = c.client().subscribe("X");
  c.connect(server.path, fake_connect());
  EXPECT_EQ(c.execute("a"), json({{"k", {1, 2}}}));
  EXPECT_EQ(xs.size(), 1u);
  c.close();
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, EventBeforeTheReplyIsSeenByAListenerRegisteredFirst) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    json cmd = p.expect("stop");
    p.send_json(Peer::event("STOP"));  // QEMU sends STOP before stop's reply
    p.reply(cmd, json::object());
    cmd = p.expect("x");
    for (int i = 0; i < 5; ++i) p.send_json(Peer::event("N", {{"n", i}}));
    p.reply(cmd, json::object());
    p.wait_eof();
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  std::vector<std::string> seen;
  c.client().add_listener([&](const json& ev) { seen.push_back(ev["event"]); });
  auto stopped = c.client().wait_for_event("STOP", {}, 30s);
  c.execute("stop");
  EXPECT_EQ(c.run(std::move(stopped))["event"], "STOP");
  auto third = c.client().wait_for_event(
      "N", [](const json& ev) { return ev["data"]["n"] == 3; }, 30s);
  c.execute("x");
  EXPECT_EQ(c.run(std::move(third))["data"]["n"], 3);
  EXPECT_EQ(seen, (std::vector<std::string>{"STOP", "N", "N", "N", "N", "N"}));
  c.close();
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, WaitForEventTimesOut) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    p.wait_eof();
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  Error e = expect_error([&] { c.run(c.client().wait_for_event("NEVER", {}, 100ms)); });
  EXPECT_EQ(e.kind(), ErrorKind::timeout);
  c.close();
}

TEST(QmpClient, ThrowingListenerIsLoggedAndIgnored) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    json cmd = p.expect("a");
    p.send_json(Peer::event("E"));
    p.reply(cmd, 1);
    p.wait_eof();
  });
  std::vector<std::string> logs;
  Options opt;
  opt.log = [&](const std::string& m) { logs.push_back(m); };
  SyncClient c(opt);
  c.client().add_listener([](const json&) { throw std::runtime_error("boom"); });
  c.connect(server.path, fake_connect());
  EXPECT_EQ(c.execute("a"), 1);
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_NE(logs[0].find("boom"), std::string::npos);
  c.close();
}

TEST(QmpClient, QuitThenShutdownReplyAndEofIsANormalEnd) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    json cmd = p.expect("quit");
    p.send_json(Peer::event("SHUTDOWN", {{"guest", false}, {"reason", "host-qmp-quit"}}));
    p.reply(cmd, json::object());
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  EXPECT_EQ(c.execute("quit"), json::object());
  Ending end = c.wait_closed();
  EXPECT_EQ(end.reason, Ending::Reason::quit);
  EXPECT_TRUE(end.normal());
  ASSERT_TRUE(end.shutdown_event);
  EXPECT_EQ((*end.shutdown_event)["data"]["reason"], "host-qmp-quit");
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, QuitWhoseReplyIsLostToTheClosingSocketStillSucceeds) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    p.expect("quit");
    ::shutdown(p.fd(), SHUT_RDWR);
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  EXPECT_EQ(c.execute("quit", nullptr, 60s), json::object());
  EXPECT_EQ(c.wait_closed().reason, Ending::Reason::quit);
}

TEST(QmpClient, EofWithoutQuitIsNotNormalAndEndsSubscriptions) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    p.send_json(Peer::event("SHUTDOWN", {{"guest", true}, {"reason", "guest-shutdown"}}));
  });
  SyncClient c;
  Subscription all = c.client().subscribe();
  c.connect(server.path, fake_connect());
  Ending end = c.wait_closed();
  EXPECT_EQ(end.reason, Ending::Reason::peer_closed);
  EXPECT_FALSE(end.normal());
  ASSERT_TRUE(end.shutdown_event);
  EXPECT_EQ(c.next_event(all)["event"], "SHUTDOWN");  // queued events survive the end
  EXPECT_EQ(expect_error([&] { c.next_event(all); }).kind(), ErrorKind::disconnected);
  EXPECT_EQ(expect_error([&] { c.execute("a"); }).kind(), ErrorKind::disconnected);
}

TEST(QmpClient, CloseFailsPendingCommands) {
  FakeServer server([](Peer& p) {
    p.negotiate();
    p.wait_eof();
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  auto body = [&]() -> awaitable<std::vector<Outcome>> {
    std::vector<awaitable<json>> ops;
    ops.push_back(c.client().execute("a", nullptr, 60s));
    ops.push_back(c.client().execute("b", nullptr, 60s));
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(
        ex,
        [&]() -> awaitable<void> {
          c.close();
          co_return;
        },
        asio::detached);
    co_return co_await gather(std::move(ops));
  };
  auto results = c.run(body());
  for (auto& r : results) {
    ASSERT_TRUE(r.error);
    EXPECT_EQ(r.error->kind(), ErrorKind::disconnected);
  }
  EXPECT_EQ(c.client().ending()->reason, Ending::Reason::closed);
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, ConnectRetriesWhileThePeerIsAliveUntilTheSocketAppears) {
  FakeServer server(
      [](Peer& p) {
        p.negotiate();
        p.wait_eof();
      },
      /*listen_now=*/false);
  int asked = 0;
  ConnectOptions o = fake_connect();
  o.peer_alive = [&] {
    if (++asked == 2) server.listen();  // appears after two failed attempts
    return true;
  };
  SyncClient c;
  c.connect(server.path, o);
  EXPECT_EQ(asked, 2);
  c.close();
  EXPECT_EQ(server.failure(), "");
}

TEST(QmpClient, ConnectStopsRetryingWhenThePeerDies) {
  TempDir dir;
  ConnectOptions o = fake_connect();
  o.timeout = 120s;
  int asked = 0;
  o.peer_alive = [&] { return ++asked < 3; };
  SyncClient c;
  auto start = Clock::now();
  Error e = expect_error([&] { c.connect(dir.path("absent.sock"), o); });
  EXPECT_EQ(e.kind(), ErrorKind::connect_failed);
  EXPECT_NE(std::string(e.what()).find("QEMU has exited"), std::string::npos) << e.what();
  EXPECT_LT(Clock::now() - start, 60s);
}

TEST(QmpClient, ConnectGivesUpAtTheDeadline) {
  TempDir dir;
  ConnectOptions o = fake_connect();
  o.timeout = 300ms;
  o.peer_alive = [] { return true; };
  SyncClient c;
  Error e = expect_error([&] { c.connect(dir.path("absent.sock"), o); });
  EXPECT_EQ(e.kind(), ErrorKind::connect_failed);
  EXPECT_NE(std::string(e.what()).find("gave up"), std::string::npos) << e.what();
}

TEST(QmpClient, ConnectWithoutPeerAliveTriesOnce) {
  TempDir dir;
  SyncClient c;
  Error e = expect_error([&] { c.connect(dir.path("absent.sock"), fake_connect()); });
  EXPECT_EQ(e.kind(), ErrorKind::connect_failed);
  EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
}

TEST(QmpClient, EofBeforeGreetingIsDisconnected) {
  FakeServer server([](Peer&) {});
  SyncClient c;
  Error e = expect_error([&] { c.connect(server.path, fake_connect()); });
  EXPECT_EQ(e.kind(), ErrorKind::disconnected);
  EXPECT_NE(std::string(e.what()).find("before the greeting"), std::string::npos) << e.what();
}

TEST(QmpClient, MalformedGreetingIsAProtocolError) {
  for (const json& bad :
       {json{{"QMP", {{"version", 7}}}},
        json{{"QMP",
              {{"version", {{"qemu", {{"major", "seven"}}}}}, {"capabilities", json::array()}}}},
        json{{"hello", 1}}}) {
    SCOPED_TRACE(bad.dump());
    FakeServer server([&](Peer& p) {
      p.send_json(bad);
      p.wait_eof();
    });
    SyncClient c;
    EXPECT_EQ(expect_error([&] { c.connect(server.path, fake_connect()); }).kind(),
              ErrorKind::protocol);
  }
}

// fd passing: the fd rides on the command's own sendmsg, and a second
// fd-bearing command waits until the first has its reply, while plain
// commands are not held back.
TEST(QmpClient, FdPassingSendsTheFdWithTheCommandOneAtATime) {
  int memfd = ::memfd_create("pl-fake-fd", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  struct stat want {};
  ::fstat(memfd, &want);
  FakeServer server([&](Peer& p) {
    p.negotiate();
    json first = p.expect("getfd");
    EXPECT_EQ(first["arguments"]["fdname"], "one");
    ASSERT_EQ(p.fds.size(), 1u);
    struct stat got {};
    ::fstat(p.fds.front(), &got);
    EXPECT_EQ(got.st_ino, want.st_ino);
    json plain = p.expect("plain");  // the second getfd must not come before first's reply
    p.reply(plain, "plain");
    p.reply(first, json::object());
    json second = p.expect("getfd");
    EXPECT_EQ(second["arguments"]["fdname"], "two");
    EXPECT_EQ(p.fds.size(), 2u);
    p.reply(second, json::object());
    p.wait_eof();
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  std::vector<awaitable<json>> ops;
  ops.push_back(c.client().execute_with_fd("getfd", {{"fdname", "one"}}, memfd, 60s));
  ops.push_back(c.client().execute_with_fd("getfd", {{"fdname", "two"}}, memfd, 60s));
  ops.push_back(c.client().execute("plain", nullptr, 60s));
  auto results = c.run(gather(std::move(ops)));
  for (auto& r : results) EXPECT_TRUE(r.value) << r.error->what();
  c.close();
  ::close(memfd);
  EXPECT_EQ(server.failure(), "");
}

}  // namespace
}  // namespace qmp::testing

namespace qmp::testing {
namespace {

// A command that times out before any of its bytes reached the socket (QEMU
// not reading) is taken back: QEMU never runs it, and the queue cannot grow
// without bound behind a stalled peer.
TEST(QmpClient, CommandTimedOutBeforeSendingIsNeverSent) {
  std::promise<void> go;
  auto started = go.get_future().share();
  FakeServer server([started](Peer& p) {
    p.negotiate();
    started.wait();  // stall: the client's big command fills the socket
    json big = p.expect("big");
    p.reply(big, "ok");
    json next = p.expect("after");  // "queued" must not come in between
    p.reply(next, "after-reply");
    p.wait_eof();
  });
  SyncClient c;
  c.connect(server.path, fake_connect());
  json big_result;
  boost::asio::co_spawn(c.context(),
                        c.client().execute("big", {{"blob", std::string(8 << 20, 'x')}}, 60s),
                        [&](std::exception_ptr, json r) { big_result = std::move(r); });
  Error e = expect_error([&] { c.execute("queued", nullptr, 200ms); });
  EXPECT_EQ(e.kind(), ErrorKind::timeout);
  go.set_value();
  EXPECT_EQ(c.execute("after", nullptr, 60s), "after-reply");
  EXPECT_EQ(big_result, "ok");
  c.close();
  EXPECT_EQ(server.failure(), "");
}

}  // namespace
}  // namespace qmp::testing
