// Tests of RedisTokenStore (aps_auth_redis.hpp) against a real redis-server each test starts on a free loopback
// port (tests/support/redis.hpp), and the mock APS server, whose refresh tokens rotate and are single-use.
//
// The properties: the token and its generation in one hash, written whole or not at all; the lock is
// SET NX PX with a random owner, released only by its owner, expiring when its holder dies; a save by a holder
// whose lock expired cannot overwrite a newer token; TokenSource, unchanged, refreshes once per expiry across
// processes standing for machines (each its own HOME and XDG dirs, nothing shared but Redis); Redis down or
// restarted: clear errors, nothing lost, then recovery; errors never hold the Redis password.
//
// Processes: forked children (POSIX only, marked so where they stand), which never start threads and always
// _exit; a test without redis-server installed is skipped by name (support::redis_runs_here).
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "aps_auth_redis.hpp"
#include "support/cli.hpp"
#include "support/files.hpp"
#include "support/library.hpp"
#include "support/mock.hpp"
#include "support/network.hpp"
#include "support/platform.hpp"
#include "support/process.hpp"
#include "support/redis.hpp"
#include "support/text.hpp"
#include "support/timing.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace auth = aps::auth;
namespace platform = support::platform;
using namespace std::chrono_literals;
using support::catch_error, support::contains, support::require_error;
using SysClock = std::chrono::system_clock;
using SteadyClock = std::chrono::steady_clock;

namespace {

using support::check_is_the_live_refresh_token;
const char* const kClient = support::kRefreshClient;
const char* const kSecret = support::kRefreshSecret;
const char* const kKey = "test:token";

// Shorter deadlines than the token source tests', and one attempt per call (no retry).
auth::Config mock_config(const aps_mock::Server& mock) {
  auth::Config c = support::refresh_config(mock, 3s, 10s);
  c.retry.max_attempts = 1;
  return c;
}

// A 3-legged token the mock issued, as after a sign-in.
auth::Token issued(aps_mock::Server& mock) {
  return support::issued_token(mock, kClient, support::kRefreshScope);
}

auth::RedisTokenStoreOptions short_lock(std::chrono::milliseconds ttl, std::chrono::milliseconds wait = 0ms) {
  auth::RedisTokenStoreOptions o;
  o.timeout = 10s;  // a command's deadline: generous, a loaded CI machine once took over 2 s for one SET
  o.lock_ttl = ttl;
  o.lock_wait = wait;
  return o;
}

auth::Token stored(auth::RedisTokenStore& store) {
  auth::Token t;
  REQUIRE(store.load(t));
  return t;
}

// The store under test, with a hook run once at one moment of a TokenSource's refresh: right after it read the
// token under the lock, or when it is about to save the new one.
class HookedRedisStore : public auth::RedisTokenStore {
 public:
  using RedisTokenStore::RedisTokenStore;
  std::function<void()> after_locked_load, before_save;

  std::unique_ptr<auth::StoreLock> lock() override {
    auto l = RedisTokenStore::lock();
    locked_ = true;
    return l;
  }
  bool load(auth::Token& token) override {
    bool found = RedisTokenStore::load(token);
    if (locked_ && after_locked_load)
      std::exchange(after_locked_load, nullptr)();
    return found;
  }
  void save(const auth::Token& token) override {
    if (before_save)
      std::exchange(before_save, nullptr)();
    RedisTokenStore::save(token);
  }

 private:
  bool locked_ = false;
};

}  // namespace

TEST_SUITE("redis") {
  // ---- 1. the URL, and errors that never hold the password ----------------------------------------------------

  TEST_CASE("URLs: defaults, credentials, IPv6, the database; where() and errors never show the password") {
    CHECK(auth::RedisTokenStore("redis://cache", "k").where() == "redis://cache:6379/0");
    CHECK(auth::RedisTokenStore("redis://:pw@10.0.0.5:7000/3", "k").where() == "redis://10.0.0.5:7000/3");
    CHECK(auth::RedisTokenStore("redis://app:p%40ss@[::1]:6380/", "k").where() == "redis://[::1]:6380/0");
    CHECK(auth::RedisTokenStore("redis://h", "k").key() == "k");
    CHECK(auth::RedisTokenStore::default_key("my app") == "aps-auth:token:my app");

    for (const char* bad : {"cache:6379", "http://cache", "redis://", "redis://:pw@", "redis://h:0", "redis://h:99999",
                            "redis://h:x", "redis://h/db", "redis://[::1", "redis://[::1]x", "redis://pwonly@h"}) {
      INFO(bad);
      auth::Error e = require_error([&] { auth::RedisTokenStore s(bad, "k"); });
      CHECK(e.kind() == auth::ErrorKind::usage);
      CHECK_FALSE(contains(e.what(), "pw"));
      CHECK(contains(e.what(), "bad Redis URL"));
    }
    auth::Error tls = require_error([] { auth::RedisTokenStore s("rediss://:pw@h:6380/0", "k"); });
    CHECK(tls.kind() == auth::ErrorKind::usage);
    CHECK(contains(tls.what(), "rediss://"));
    CHECK(contains(tls.what(), "not supported"));
    CHECK(require_error([] { auth::RedisTokenStore s("redis://h", ""); }).kind() == auth::ErrorKind::usage);
  }

  TEST_CASE(
      "the default lock lifetime is lock_ttl_for(Config{}), and lock_ttl_for covers two refreshes' worst "
      "case") {
    CHECK(auth::RedisTokenStoreOptions{}.lock_ttl == auth::RedisTokenStore::lock_ttl_for(auth::Config{}));
    auth::Config c;
    c.connect_timeout = 1s;
    c.read_timeout = 4s;
    c.retry.max_attempts = 3;
    c.retry.max_delay = 2s;
    // one refresh: 3 x (1 + 4) s + 2 x 2 s = 19 s; two of them, plus 30 s for the store's own calls
    CHECK(auth::RedisTokenStore::lock_ttl_for(c) == 68s);
  }

  TEST_CASE("Redis down: every call is ErrorKind::network naming redis://host:port/db, never the password") {
    const int port = support::free_port();
    REQUIRE(port != 0);
    const std::string password = "sup3r-secret-pw";
    auth::RedisTokenStore store("redis://:" + password + "@127.0.0.1:" + std::to_string(port) + "/2", kKey);
    auth::Token t;
    const std::vector<std::pair<const char*, std::function<void()>>> calls = {
        {"load", [&] { (void)store.load(t); }},
        {"save", [&] { store.save(support::valid_token("a", "r")); }},
        {"clear", [&] { store.clear(); }},
        {"lock", [&] { (void)store.lock(); }},
        {"ping", [&] { store.ping(); }}};
    for (const auto& call : calls) {
      INFO(call.first);
      auth::Error e = require_error(call.second);
      CHECK(e.kind() == auth::ErrorKind::network);
      CHECK(contains(e.what(), "Redis at redis://127.0.0.1:" + std::to_string(port) + "/2"));
      CHECK_FALSE(contains(e.what(), password));
    }
  }

  TEST_CASE("a Redis that accepts the connection and never answers: ErrorKind::timeout after options.timeout") {
    support::Socket silent = support::listen_on("127.0.0.1", 0, 8);  // the backlog completes the connection
    REQUIRE(silent.valid());
    auth::RedisTokenStoreOptions o;
    o.timeout = 300ms;
    auth::RedisTokenStore store("redis://127.0.0.1:" + std::to_string(silent.local_port()), kKey, o);
    auth::Token t;
    auth::Error e = require_error([&] { (void)store.load(t); });
    CHECK(e.kind() == auth::ErrorKind::timeout);
    CHECK(contains(e.what(), "no answer"));
  }

  // ---- 2. the store on a real redis-server --------------------------------------------------------------------

  TEST_CASE(
      "load/save/clear: nothing before the first save, the JSON round trip, a generation raised by each "
      "write, clear keeps the generation") {
    if (!support::redis_runs_here())
      return;
    support::RedisServer redis;
    auth::RedisTokenStore store(redis.url(), kKey);
    auth::Token t;
    CHECK_FALSE(store.load(t));
    auth::Token a = support::valid_token("access-a", "refresh-a");
    a.id_token = "id";
    a.scope = "data:read data:write";
    store.save(a);
    auth::Token back = stored(store);
    CHECK(back.access_token == a.access_token);
    CHECK(back.refresh_token == a.refresh_token);
    CHECK(back.id_token == a.id_token);
    CHECK(back.scope == a.scope);
    CHECK(std::chrono::duration_cast<std::chrono::seconds>(back.expires_at - a.expires_at).count() == 0);
    auto client = redis.client();
    CHECK(client->command({"HGET", kKey, "generation"}).text == "1");
    store.save(support::valid_token("access-b", "refresh-b"));
    CHECK(client->command({"HGET", kKey, "generation"}).text == "2");
    store.clear();
    CHECK_FALSE(store.load(t));
    CHECK(client->command({"HGET", kKey, "generation"}).text == "3");
    CHECK(client->command({"HEXISTS", kKey, "token"}).integer == 0);
  }

  TEST_CASE(
      "a database other than 0, and a password: the right one works, a wrong one is a clear error without "
      "it") {
    if (!support::redis_runs_here())
      return;
    support::RedisServer redis("the-right-pw");
    auth::RedisTokenStore store(redis.url(5), kKey);
    store.save(support::valid_token("a", "r"));
    auto client = redis.client();
    client->command({"SELECT", "5"});
    CHECK(client->command({"HEXISTS", kKey, "token"}).integer == 1);
    client->command({"SELECT", "0"});
    CHECK(client->command({"EXISTS", kKey}).integer == 0);

    auth::RedisTokenStore wrong("redis://:not-the-pw@127.0.0.1:" + std::to_string(redis.port()), kKey);
    auth::Token t;
    auth::Error e = require_error([&] { (void)wrong.load(t); });
    CHECK(e.kind() == auth::ErrorKind::io);
    CHECK(contains(e.what(), "AUTH"));
    CHECK_FALSE(contains(e.what(), "not-the-pw"));
    auth::RedisTokenStore none("redis://127.0.0.1:" + std::to_string(redis.port()), kKey);
    CHECK(require_error([&] { (void)none.load(t); }).kind() == auth::ErrorKind::io);  // NOAUTH
  }

  TEST_CASE("the lock: SET NX PX with a random owner and the lifetime; released by its owner only") {
    if (!support::redis_runs_here())
      return;
    support::RedisServer redis;
    auto client = redis.client();
    const std::string lock_key = std::string(kKey) + ":lock";
    auth::RedisTokenStore a(redis.url(), kKey, short_lock(60s));
    std::string first_owner;
    {
      auto held = a.lock();
      first_owner = client->command({"GET", lock_key}).text;
      CHECK(first_owner.size() == 22);  // 16 random octets, base64url
      long long pttl = client->command({"PTTL", lock_key}).integer;
      CHECK(pttl > 0);
      CHECK(pttl <= 60000);
    }
    CHECK(client->command({"EXISTS", lock_key}).integer == 0);  // released
    {
      auto held = a.lock();
      CHECK(client->command({"GET", lock_key}).text != first_owner);  // a new owner value each time
    }

    // A holder whose lock expired and was taken by another: its release leaves the other's lock alone.
    auth::RedisTokenStore slow("redis://127.0.0.1:" + std::to_string(redis.port()), kKey, short_lock(300ms));
    auto stale = slow.lock();
    while (client->command({"EXISTS", lock_key}).integer == 1)
      std::this_thread::sleep_for(20ms);
    auth::RedisTokenStore other(redis.url(), kKey, short_lock(60s));
    auto current = other.lock();
    const std::string current_owner = client->command({"GET", lock_key}).text;
    stale.reset();
    CHECK(client->command({"GET", lock_key}).text == current_owner);
  }

  TEST_CASE(
      "two stores on different keys do not block each other; on one key the second waits, then says who "
      "held it") {
    if (!support::redis_runs_here())
      return;
    support::RedisServer redis;
    auth::RedisTokenStore one(redis.url(), "app-one", short_lock(60s));
    auth::RedisTokenStore two(redis.url(), "app-two", short_lock(60s, 300ms));
    auth::RedisTokenStore one_again(redis.url(), "app-one", short_lock(60s, 300ms));
    auto held = one.lock();
    auto other_key = catch_error([&] { (void)two.lock(); });  // lock_wait 300 ms: a wait would throw
    CHECK_FALSE(other_key.has_value());
    auth::Error e = require_error([&] { (void)one_again.lock(); });
    CHECK(e.kind() == auth::ErrorKind::timeout);
    CHECK(contains(e.what(), "app-one:lock"));
    held.reset();
    CHECK_FALSE(catch_error([&] { (void)one_again.lock(); }).has_value());
  }

  TEST_CASE(
      "generation check-and-set: a holder whose lock expired cannot overwrite a newer token; when nobody "
      "saved since, its save goes through") {
    if (!support::redis_runs_here())
      return;
    support::RedisServer redis;
    auto client = redis.client();
    const std::string lock_key = std::string(kKey) + ":lock";
    auth::RedisTokenStore setup(redis.url(), kKey);
    setup.save(support::valid_token("a0", "r0"));

    SUBCASE("another holder saved after the lock expired: refused, nothing written, the newer token kept") {
      auth::RedisTokenStore slow(redis.url(), kKey, short_lock(300ms));
      auto stale = slow.lock();
      auth::Token t = stored(slow);
      while (client->command({"EXISTS", lock_key}).integer == 1)
        std::this_thread::sleep_for(20ms);
      {
        auth::RedisTokenStore fast(redis.url(), kKey, short_lock(60s));
        auto held = fast.lock();
        (void)stored(fast);
        fast.save(support::valid_token("a-new", "r-new"));
      }
      auth::Error e = require_error([&] { slow.save(support::valid_token("a-stale", "r-stale")); });
      CHECK(e.kind() == auth::ErrorKind::io);
      CHECK(contains(e.what(), "the newer one is kept"));
      CHECK(stored(setup).refresh_token == "r-new");
      CHECK(client->command({"HGET", kKey, "generation"}).text == "2");
    }
    SUBCASE("a logout (clear) after the lock expired: the stale holder does not bring the token back") {
      auth::RedisTokenStore slow(redis.url(), kKey, short_lock(300ms));
      auto stale = slow.lock();
      (void)stored(slow);
      setup.clear();
      CHECK(require_error([&] { slow.save(support::valid_token("a-stale", "r-stale")); }).kind() ==
            auth::ErrorKind::io);
      auth::Token t;
      CHECK_FALSE(setup.load(t));
    }
    SUBCASE("nobody saved since: the save goes through (its token is the live one)") {
      auth::RedisTokenStore slow(redis.url(), kKey, short_lock(300ms));
      auto stale = slow.lock();
      (void)stored(slow);
      while (client->command({"EXISTS", lock_key}).integer == 1)
        std::this_thread::sleep_for(20ms);
      slow.save(support::valid_token("a-late", "r-late"));
      CHECK(stored(setup).refresh_token == "r-late");
    }
    SUBCASE("without the lock (a sign-in): written unconditionally") {
      auth::RedisTokenStore login(redis.url(), kKey);
      login.save(support::valid_token("a-login", "r-login"));
      CHECK(stored(setup).refresh_token == "r-login");
    }
  }

  // ---- 3. TokenSource on the store ----------------------------------------------------------------------------

  TEST_CASE(
      "Redis restarted mid-run: calls fail clearly and refresh nothing, then recover; Redis down between "
      "refresh and save: the new token is kept in memory and saved at the next refresh") {
    if (!support::redis_runs_here())
      return;
    support::RedisServer redis("restart-pw");
    aps_mock::Server mock(support::refresh_mock_options(/*expires_in=*/2));
    const auth::Config config = mock_config(mock);
    auto store = std::make_shared<HookedRedisStore>(redis.url(), kKey, short_lock(3s));
    store->save(support::expired_token(issued(mock)));
    auth::TokenSource source(config, store);

    const std::string first = source.access_token();
    CHECK(mock.count("token.refresh_token") == 1);
    redis.stop();
    std::this_thread::sleep_until(source.token().expires_at - 1s + 50ms);  // the refresh point (lead: 1 s)
    auth::Error down = require_error([&] { (void)source.access_token(); });
    CHECK(down.kind() == auth::ErrorKind::network);
    CHECK(contains(down.what(), "Redis at redis://127.0.0.1:" + std::to_string(redis.port()) + "/0"));
    CHECK_FALSE(contains(down.what(), "restart-pw"));
    CHECK(mock.count("token.refresh_token") == 1);  // no lock, no refresh: nothing to lose

    redis.start();  // same port, same append-only file
    const std::string second = source.access_token();
    CHECK(second != first);
    CHECK(mock.is_active_access_token(second));
    CHECK(mock.count("token.refresh_token") == 2);
    check_is_the_live_refresh_token(mock, stored(*store).refresh_token);
    CHECK(stored(*store).access_token == second);

    // Down between the refresh and the save: the refresh token just rotated lives in memory only.
    store->before_save = [&] { redis.stop(); };
    std::this_thread::sleep_until(source.token().expires_at - 1s + 50ms);
    auth::Error unsaved = require_error([&] { (void)source.access_token(); });
    CHECK(unsaved.kind() == auth::ErrorKind::io);
    CHECK(contains(unsaved.what(), "kept in memory"));
    const auth::Token kept = source.token();
    check_is_the_live_refresh_token(mock, kept.refresh_token);
    CHECK(mock.count("token.refresh_token") == 3);
    redis.start();
    CHECK(stored(*store).refresh_token != kept.refresh_token);  // Redis still holds the spent one
    std::this_thread::sleep_until(kept.expires_at - 1s + 50ms);
    const std::string fourth = source.access_token();  // refreshed with the kept refresh token, then saved
    CHECK(mock.count("token.refresh_token") == 4);
    CHECK(stored(*store).access_token == fourth);
    check_is_the_live_refresh_token(mock, stored(*store).refresh_token);
  }

  // ---- 4. the CLI ---------------------------------------------------------------------------------------------

  TEST_CASE(
      "cli: --token-store (APS_TOKEN_STORE) with --token-key: login saves there, access-token and refresh "
      "use it from other machines, logout revokes and deletes; a password on the command line is refused; "
      "Redis down fails before the sign-in") {
    if (!support::redis_runs_here())
      return;
    const std::string cli = support::require_cli();
    support::RedisServer redis;
    aps_mock::Server mock(support::refresh_mock_options(/*expires_in=*/3599));
    const std::string callback = "http://127.0.0.1:" + std::to_string(support::free_port()) + "/api/auth/callback";
    aps_mock::Options o = mock.options();
    o.clients = {{kClient, kSecret, {callback}}};
    mock.set_options(o);
    support::TempDir machine_a, machine_b;
    auto env_of = [&](const support::TempDir& home) {
      support::EnvMap e = support::base_env(home.path());
      e["APS_CLIENT_ID"] = kClient;
      e["APS_CLIENT_SECRET"] = kSecret;
      e["APS_BASE_URL"] = mock.base_url();
      e["NO_PROXY"] = "*";
      return e;
    };
    const std::string default_key = auth::RedisTokenStore::default_key(kClient);
    auth::RedisTokenStore at_default(redis.url(), default_key);

    // login on machine A, the store from APS_TOKEN_STORE, the default key
    support::EnvMap a = env_of(machine_a);
    a["APS_TOKEN_STORE"] = redis.url();
    bool followed = false;
    auto follow = [&](const std::string& err) {
      const std::size_t at = err.find(mock.base_url() + "/authentication/v2/authorize?");
      const std::size_t end = at == std::string::npos ? at : err.find_first_of(" \r\n", at);
      if (followed || end == std::string::npos)
        return;
      followed = true;
      aps_mock::follow_like_browser(err.substr(at, end - at));
    };
    support::RunResult login =
        support::run_cli({"login", "--no-browser", "--callback-url", callback, "--timeout", "20"}, a, 30s, follow);
    INFO(login.describe());
    REQUIRE(login.exit_code == 0);
    REQUIRE(followed);
    CHECK(support::printed_tokens(login.out).count(stored(at_default).refresh_token) == 1);
    CHECK(contains(login.err, "Saved the token to " + redis.url() + " key '" + default_key + "'"));

    // machine B: access-token from the same key (no refresh while fresh), then after expiry one refresh
    support::EnvMap b = env_of(machine_b);
    b["APS_TOKEN_STORE"] = redis.url();
    support::RunResult fresh = support::run_cli({"access-token"}, b, 30s);
    CHECK(fresh.exit_code == 0);
    CHECK(support::trim(fresh.out) == stored(at_default).access_token);
    CHECK(mock.count("token.refresh_token") == 0);
    at_default.save(support::expired_token(stored(at_default)));
    support::RunResult renewed = support::run_cli({"access-token"}, b, 30s);
    CHECK(renewed.exit_code == 0);
    CHECK(mock.count("token.refresh_token") == 1);
    CHECK(support::trim(renewed.out) == stored(at_default).access_token);
    check_is_the_live_refresh_token(mock, stored(at_default).refresh_token);

    // --token-store and --token-key on the command line (no password in it): refresh, then logout
    auth::RedisTokenStore at_custom(redis.url(), "team:render-farm");
    at_custom.save(stored(at_default));
    const std::vector<std::string> place = {"--token-store", redis.url(), "--token-key", "team:render-farm"};
    std::vector<std::string> refresh = {"refresh"};
    refresh.insert(refresh.end(), place.begin(), place.end());
    support::RunResult refreshed = support::run_cli(refresh, env_of(machine_a), 30s);
    INFO(refreshed.describe());
    CHECK(refreshed.exit_code == 0);
    CHECK(mock.count("token.refresh_token") == 2);
    check_is_the_live_refresh_token(mock, stored(at_custom).refresh_token);
    const std::string last_rt = stored(at_custom).refresh_token;
    std::vector<std::string> logout = {"logout"};
    logout.insert(logout.end(), place.begin(), place.end());
    support::RunResult out = support::run_cli(logout, env_of(machine_b), 30s);
    CHECK(out.exit_code == 0);
    auth::Token none;
    CHECK_FALSE(at_custom.load(none));
    CHECK_FALSE(mock.is_valid_refresh_token(last_rt));

    // refused: a password on the command line; a token file and a store together
    support::RunResult pw = support::run_cli(
        {"access-token", "--token-store", "redis://:hunter2-pw@127.0.0.1:" + std::to_string(redis.port())},
        env_of(machine_a), 30s);
    CHECK(pw.exit_code == 2);
    CHECK(contains(pw.err, "APS_TOKEN_STORE"));
    CHECK_FALSE(contains(pw.err, "hunter2-pw"));
    support::RunResult both =
        support::run_cli({"access-token", "--token-store", redis.url(), "--token-file", machine_a.file("t.json")},
                         env_of(machine_a), 30s);
    CHECK(both.exit_code == 2);
    CHECK(contains(both.err, "not both"));

    // Redis down: login fails before any sign-in starts (nothing to lose), naming the server without the password
    const int closed = support::free_port();
    support::EnvMap down = env_of(machine_a);
    down["APS_TOKEN_STORE"] = "redis://:down-pw@127.0.0.1:" + std::to_string(closed) + "/0";
    const int authorizes = mock.count("authorize");
    support::RunResult early = support::run_cli({"login", "--no-browser", "--callback-url", callback}, down, 30s);
    CHECK(early.exit_code == 1);
    CHECK(contains(early.err, "Redis at redis://127.0.0.1:" + std::to_string(closed) + "/0"));
    CHECK_FALSE(contains(early.err, "down-pw"));
    CHECK_FALSE(contains(early.err, "Open this URL"));
    CHECK(mock.count("authorize") == authorizes);
  }

#ifndef _WIN32
  // POSIX only: fork().
  TEST_CASE(
      "4 processes standing for 4 machines, each a TokenSource on one Redis key, across 20 expiries: one "
      "refresh per expiry, never invalid_grant, the stored refresh token the live one") {
    if (!support::redis_runs_here() || !support::fork_with_mock_runs_here())
      return;
    constexpr int kProcesses = 4;
    constexpr int kExpiries = 20;
    support::RedisServer redis;
    aps_mock::Server mock(
        support::refresh_mock_options(/*expires_in=*/2, /*token_delay_ms=*/50));  // refreshed every ~1 s
    const auth::Config config = mock_config(mock);
    const auth::Token initial = issued(mock);
    auth::RedisTokenStore(redis.url(), kKey).save(initial);
    const std::string stop_key = std::string(kKey) + ":test-stop";

    std::vector<std::unique_ptr<support::TempDir>> homes;
    for (int i = 0; i < kProcesses; ++i)
      homes.push_back(std::make_unique<support::TempDir>("aps_auth_machine_"));
    std::vector<std::unique_ptr<support::Process>> machines;
    const auto t0 = SteadyClock::now();
    for (int i = 0; i < kProcesses; ++i) {
      const std::string home = homes[static_cast<std::size_t>(i)]->path();
      machines.push_back(std::make_unique<support::Process>(platform::fork_child([&, home](int out) -> int {
        platform::set_env("HOME", home);
        platform::set_env("XDG_STATE_HOME", home + "/state");
        platform::set_env("XDG_CONFIG_HOME", home + "/config");
        auth::TokenSource source(config, std::make_shared<auth::RedisTokenStore>(redis.url(), kKey));
        support::RedisClient control(redis.port());
        std::string report, last;
        int errors = 0;
        while (control.command({"GET", stop_key}).nil()) {
          try {
            std::string at = source.access_token();
            if (at != last)
              report += "token " + at + "\n";
            last = at;
          } catch (const auth::Error& e) {
            report += std::string("error ") + e.what() + " [" + e.details().error + "]\n";
            ++errors;
          }
          std::this_thread::sleep_for(10ms);
        }
        platform::write_all(out, report);
        return errors == 0 ? 0 : 2;
      })));
    }
    // After each refresh the stored refresh token becomes the live one (the one the mock accepts) once the
    // refreshing machine has saved it: checked at every expiry, not only at the end.
    auth::RedisTokenStore watcher(redis.url(), kKey);
    int checked = 0, not_live = 0;
    for (int seen_refreshes = 0; seen_refreshes < kExpiries && support::seconds_since(t0) < 180;) {
      std::this_thread::sleep_for(10ms);
      if (mock.count("token.refresh_token") == seen_refreshes)
        continue;
      seen_refreshes = mock.count("token.refresh_token");
      bool live = false;
      for (auto until = SteadyClock::now() + 5s; !live && SteadyClock::now() < until;
           std::this_thread::sleep_for(5ms)) {
        auth::Token now;
        live = watcher.load(now) && now.refresh_token == mock.current_refresh_token_for(kClient) &&
               mock.is_valid_refresh_token(now.refresh_token);
      }
      ++checked;
      if (!live)
        ++not_live;
    }
    redis.client()->command({"SET", stop_key, "1"});
    CHECK(checked > 0);
    CHECK(not_live == 0);

    std::set<std::string> seen;  // every access token some machine was handed
    for (int i = 0; i < kProcesses; ++i) {
      support::RunResult r = machines[static_cast<std::size_t>(i)]->finish(60s);
      INFO("machine " << i << ": " << r.describe());
      CHECK(r.exit_code == 0);
      CHECK_FALSE(contains(r.out, "error "));
      CHECK_FALSE(contains(r.out, "EXCEPTION"));
      for (const std::string& line : support::split_lines(r.out))
        if (line.rfind("token ", 0) == 0)
          seen.insert(line.substr(6));
    }
    const double seconds = support::seconds_since(t0);
    const int refreshes = mock.count("token.refresh_token");
    CHECK(refreshes >= kExpiries);
    CHECK(mock.count("token") == refreshes);  // nothing but refreshes
    // One refresh per expiry: every refresh request produced a token a machine used, none was a second try on an
    // expiry (it would have been refused: the refresh token it sent would have been spent already).
    seen.erase(initial.access_token);
    CHECK(static_cast<int>(seen.size()) == refreshes);
    std::set<std::string> sent;
    for (const auto& req : mock.requests())
      if (req.path == support::kTokenPath)
        sent.insert(req.form.count("refresh_token") ? req.form.find("refresh_token")->second : "");
    CHECK(static_cast<int>(sent.size()) == refreshes);  // each refresh token was sent once
    auth::RedisTokenStore check(redis.url(), kKey);
    const auth::Token last = stored(check);
    check_is_the_live_refresh_token(mock, last.refresh_token);
    CHECK(seen.count(last.access_token) == 1);
    MESSAGE(kProcesses << " processes (separate HOME/XDG dirs) on one Redis key: " << refreshes << " expiries, "
                       << refreshes << " refreshes counted by the mock, " << seen.size()
                       << " access tokens handed out, 0 errors, the stored refresh token live after each of " << checked
                       << " refreshes watched; " << seconds << " s");
  }

  // The refresh of the process `body` forks, stopped at one moment by a hook that reports "h" and then sleeps.
  struct KilledHolder {
    support::RedisServer redis;
    aps_mock::Server mock{support::refresh_mock_options(/*expires_in=*/3599)};
    const auth::Config config = mock_config(mock);
    const auth::Token before = issued(mock);
    static constexpr auto kLockTtl = 2s;

    KilledHolder() { auth::RedisTokenStore(redis.url(), kKey).save(support::expired_token(before)); }

    // Forks the holder, waits until it is at the hook, SIGKILLs it; the lock key is then still there.
    void kill_holder_at(bool after_rotation) {
      platform::ChildProcess child = platform::fork_child([&](int out) -> int {
        auto store = std::make_shared<HookedRedisStore>(redis.url(), kKey, short_lock(kLockTtl));
        auto stop_here = [out] {
          platform::write_all(out, "h");
          std::this_thread::sleep_for(60s);
        };
        (after_rotation ? store->before_save : store->after_locked_load) = stop_here;
        auth::TokenSource source(config, store);
        (void)source.access_token();
        return 0;
      });
      char c = 0;
      REQUIRE(platform::read_byte(child.out, c));
      platform::terminate(child);  // SIGKILL
      support::RunResult r = support::Process(child).finish(30s);
      CHECK(r.signal == SIGKILL);
      CHECK(redis.client()->command({"EXISTS", std::string(kKey) + ":lock"}).integer == 1);
    }
  };

  // POSIX only: fork() and SIGKILL.
  TEST_CASE_FIXTURE(KilledHolder,
                    "a lock holder SIGKILLed mid-refresh (before it reached APS): another process "
                    "takes over once the lock's lifetime has passed") {
    if (!support::redis_runs_here() || !support::fork_with_mock_runs_here())
      return;
    kill_holder_at(/*after_rotation=*/false);
    CHECK(mock.count("token.refresh_token") == 0);
    const auto t0 = SteadyClock::now();
    auto store = std::make_shared<auth::RedisTokenStore>(redis.url(), kKey, short_lock(kLockTtl));
    auth::TokenSource source(config, store);
    const std::string at = source.access_token();
    const double waited = support::seconds_since(t0);
    CHECK(mock.is_active_access_token(at));
    CHECK(mock.count("token.refresh_token") == 1);
    CHECK(stored(*store).access_token == at);
    check_is_the_live_refresh_token(mock, stored(*store).refresh_token);
    MESSAGE("the next process took over after " << waited << " s (lock lifetime 2 s)");
  }

  // POSIX only: fork() and SIGKILL.
  TEST_CASE_FIXTURE(KilledHolder,
                    "the one loss no lock prevents: the holder SIGKILLed after APS rotated, before "
                    "saving: the next process gets invalid_grant (sign in again)") {
    if (!support::redis_runs_here() || !support::fork_with_mock_runs_here())
      return;
    kill_holder_at(/*after_rotation=*/true);
    CHECK(mock.count("token.refresh_token") == 1);
    CHECK_FALSE(mock.is_valid_refresh_token(before.refresh_token));  // spent by the dead holder
    auto store = std::make_shared<auth::RedisTokenStore>(redis.url(), kKey, short_lock(kLockTtl));
    auth::TokenSource source(config, store);
    auth::Error e = require_error([&] { (void)source.access_token(); });
    CHECK(e.kind() == auth::ErrorKind::oauth);
    CHECK(e.details().error == "invalid_grant");
    CHECK(stored(*store).refresh_token == before.refresh_token);  // nothing newer was ever saved
    MESSAGE("what the user sees: " << std::string(e.what()));
  }
#endif
}
