// Tests of token persistence and the auto-refreshing token source, against the mock APS server, whose refresh
// tokens rotate and are single-use. The properties: one refresh at a time across threads and processes (single
// flight), an invalid_grant answered by re-reading the store (another process may have rotated), every new token
// saved before it is handed out; token files written atomically, with mode 0600 (directories 0700).
//
// Processes: the CLI twice in parallel ($APS_AUTH_CLI, set by ctest), forked children (which never start
// threads and always _exit), and a child SIGKILLed at random moments of a save loop. The fork() cases are
// POSIX-only, as are those about permission bits; each is marked so where it stands.
//
// A failing save as root: root ignores directory permissions, so a chmod 0500 directory does not stop it. The
// read-only-directory case therefore runs the source in a child that drops to uid/gid 65534 ("nobody") when the
// test runs as root; a second case makes the temp file name too long for the file system (ENAMETOOLONG from
// open(), which root gets too). A path under a regular file (ENOTDIR) or under /proc does not do: the lock file
// lives next to the token file, so lock() fails before any refresh and nothing is there to lose.
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/cli.hpp"
#include "support/files.hpp"
#include "support/library.hpp"
#include "support/mock.hpp"
#include "support/platform.hpp"
#include "support/process.hpp"
#include "support/text.hpp"
#include "support/timing.hpp"

#ifndef _WIN32
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace auth = aps::auth;
namespace platform = support::platform;
using namespace std::chrono_literals;
using support::catch_error, support::require_error, support::contains, support::file_mode, support::list_dir,
    support::mode_text, support::TempDir;
using SysClock = std::chrono::system_clock;
using SteadyClock = std::chrono::steady_clock;

namespace {

using support::check_is_the_live_refresh_token;
const char* const kClient = support::kRefreshClient;
const char* const kSecret = support::kRefreshSecret;
const char* const kScope = support::kRefreshScope;

auth::Config mock_config(const aps_mock::Server& mock) {
  return support::refresh_config(mock, 5s, 20s);
}

aps_mock::Options mock_options(int token_delay_ms = 0, int expires_in = 3599) {
  return support::refresh_mock_options(expires_in, token_delay_ms);
}

// A 3-legged token the mock issued, as after a sign-in.
auth::Token issued(aps_mock::Server& mock) {
  return support::issued_token(mock, kClient, kScope);
}

auth::Token load_file(const std::string& path) {
  auth::Token t;
  REQUIRE(auth::FileTokenStore(path).load(t));
  return t;
}

// A store over a token file that lets a test act at two moments of a refresh:
//  - before_lock: just before the source takes the cross-process lock (another process that takes the lock
//    itself and rotates first: the source must then find the new token and not refresh);
//  - after_locked_load: right after the source read the file under the lock, before it refreshes (a writer
//    that does not take the lock rotates in between: the source's refresh then gets invalid_grant).
// Each hook runs once.
class HookedFileStore : public auth::TokenStore {
 public:
  explicit HookedFileStore(std::string path) : inner_(std::move(path)) {}
  std::function<void()> before_lock, after_locked_load;

  bool load(auth::Token& token) override {
    bool found = inner_.load(token);
    if (locked_ && after_locked_load)
      std::exchange(after_locked_load, nullptr)();
    return found;
  }
  void save(const auth::Token& token) override { inner_.save(token); }
  void clear() override { inner_.clear(); }
  std::unique_ptr<auth::StoreLock> lock() override {
    if (before_lock)
      std::exchange(before_lock, nullptr)();
    auto l = std::make_unique<Lock>();
    l->inner = inner_.lock();
    l->locked = &locked_;
    locked_ = true;
    return l;
  }

 private:
  struct Lock : auth::StoreLock {
    std::unique_ptr<auth::StoreLock> inner;
    bool* locked = nullptr;
    ~Lock() override { *locked = false; }
  };
  auth::FileTokenStore inner_;
  bool locked_ = false;
};

// The mock (its refreshes delayed by `token_delay_ms`) and a token file holding a token it issued whose access
// token has expired: the next access_token() refreshes.
struct ExpiredTokenFile {
  aps_mock::Server mock;
  TempDir dir;
  const std::string path = dir.file("token.json");
  const auth::Token before = issued(mock);
  const auth::Config config = mock_config(mock);

  explicit ExpiredTokenFile(int token_delay_ms = 0) : mock(mock_options(token_delay_ms)) {
    auth::FileTokenStore(path).save(support::expired_token(before));
  }
};

// Two processes over the same expired token file, started together: the first refresh is still in flight when
// the second process asks.
struct TwoProcesses : ExpiredTokenFile {
  static constexpr int kDelayMs = 500;
  TwoProcesses() : ExpiredTokenFile(kDelayMs) {}

  // Both print the same valid token, one refresh reached the mock, the file holds the newest refresh token (the
  // one the mock still accepts) with the printed access token. (The time is reported, not asserted.)
  void check(support::Process& first, support::Process& second, SteadyClock::time_point t0, const char* who) {
    support::RunResult a = first.finish(60s);
    support::RunResult b = second.finish(60s);
    double seconds = support::seconds_since(t0);
    INFO("first: exit " << a.exit_code << " signal " << a.signal << " stderr: " << a.err << " stdout: " << a.out);
    INFO("second: exit " << b.exit_code << " signal " << b.signal << " stderr: " << b.err << " stdout: " << b.out);
    CHECK(a.exit_code == 0);
    CHECK(b.exit_code == 0);
    const std::string ta = support::trim(a.out), tb = support::trim(b.out);
    CHECK_FALSE(ta.empty());
    CHECK(ta == tb);
    CHECK(ta != before.access_token);
    CHECK(mock.is_active_access_token(ta));
    CHECK(mock.count("token.refresh_token") == 1);
    CHECK(mock.count("token") == 1);
    auth::Token after = load_file(path);
    CHECK(after.access_token == ta);
    CHECK(after.refresh_token != before.refresh_token);
    check_is_the_live_refresh_token(mock, after.refresh_token);
    CHECK(support::others_access(path) == "");
#ifndef _WIN32
    CHECK(file_mode(path) == 0600);
#endif
    CHECK(list_dir(dir.path(), "token.json.tmp-").empty());
    MESSAGE(who << ", one refresh: " << seconds << " s (token delay " << kDelayMs << " ms)");
  }
};

// The two tokens a save loop alternates: A small, B more than a page (a torn write would show).
auth::Token save_loop_token(char which) {
  auth::Token t;
  t.access_token = std::string(which == 'A' ? 40 : 6000, which);
  t.refresh_token = std::string("refresh-") + which;
  t.expires_in = 3600s;
  t.expires_at = SysClock::time_point(std::chrono::seconds(which == 'A' ? 2000000000 : 2000003600));
  if (which == 'B')
    t.scope = "data:read data:write";
  return t;
}

// Random moments to kill a save loop on `path` at: 0-5 ms after the child is ready, or within 1.5 saves' time where
// a save (two fsyncs) takes longer than that (ext4 here: ~10 ms; tmpfs: ~0.1 ms), so that kills land both in the
// first save and after it. The seed is kept for the test's log.
struct KillDelays {
  unsigned seed = std::random_device{}();
  std::mt19937 rng{seed};
  std::uniform_int_distribution<long> delay_us;
  std::chrono::microseconds save_time{}, window{};  // one save's time, and the kills' window

  KillDelays(const std::string& path, const auth::Token& token) {
    auto m0 = SteadyClock::now();
    for (int i = 0; i < 5; ++i)
      auth::FileTokenStore(path).save(token);
    save_time = std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - m0) / 5;
    window = std::max<std::chrono::microseconds>(5ms, save_time * 3 / 2);
    delay_us = std::uniform_int_distribution<long>(0, static_cast<long>(window.count()));
  }
  std::chrono::microseconds next() { return std::chrono::microseconds(delay_us(rng)); }
};

// What the token file holds after a killed save loop: "A", "B", "missing", "another token" or "invalid: ...".
std::string held_by(const std::string& path, const auth::Token& a, const auth::Token& b) {
  auto text = support::read_file(path);
  if (!text)
    return "missing";
  try {
    auth::Token t = auth::Token::from_json(*text);
    auto same = [&](const auth::Token& x) {
      return t.access_token == x.access_token && t.refresh_token == x.refresh_token && t.expires_at == x.expires_at &&
             t.scope == x.scope;
    };
    return same(a) ? "A" : same(b) ? "B" : "another token";
  } catch (const std::exception& e) {
    return std::string("invalid: ") + e.what();
  }
}

}  // namespace

TEST_SUITE("token_source") {
  // ---- 1. threads -------------------------------------------------------------------------------------------

  // 8 threads call access_token() 10,000 times each, paced over `window` so that every thread makes calls
  // before the refresh point and after it. What each call returned is recorded with its start and end time.
  void threads_across_expiry(std::chrono::seconds lead) {
    constexpr int kThreads = 8;
    constexpr int kCalls = 10000;
    const auto window = 400ms;         // the calls of each thread are spread over this
    const auto refresh_after = 150ms;  // the refresh point, after the start of the calls
    aps_mock::Server mock(mock_options(/*token_delay_ms=*/50));
    const auth::Token old = issued(mock);

    auto store = std::make_shared<auth::MemoryTokenStore>();
    std::atomic<int> hooks{0};
    auth::TokenSourceOptions options;
    options.refresh_lead = lead;
    options.on_new_token = [&](const auth::Token&) { ++hooks; };
    auth::TokenSource source(mock_config(mock), store, options);

    struct Call {
      SysClock::time_point start, end;
      bool old = false;
    };
    std::vector<std::vector<Call>> calls(kThreads);
    std::vector<std::set<std::string>> others(kThreads);  // every value that is not the old token
    std::vector<std::string> errors(kThreads);
    support::StartLine start_line(kThreads);
    std::vector<std::thread> threads;
    const auto step = std::chrono::duration_cast<SteadyClock::duration>(window) / kCalls;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        auto& mine = calls[static_cast<std::size_t>(i)];
        mine.reserve(kCalls);
        const auto steady0 = start_line.arrive_and_wait();
        try {
          for (int k = 0; k < kCalls; ++k) {
            auto target = steady0 + step * k;
            if (SteadyClock::now() < target)
              std::this_thread::sleep_until(target);
            Call c;
            c.start = SysClock::now();
            std::string t = source.access_token();
            c.end = SysClock::now();
            c.old = t == old.access_token;
            if (!c.old)
              others[static_cast<std::size_t>(i)].insert(t);
            mine.push_back(c);
          }
        } catch (const std::exception& e) {
          errors[static_cast<std::size_t>(i)] = e.what();
        }
      });
    }
    // Every thread is running: the token in the store needs a refresh `refresh_after` after the start.
    start_line.wait_all_arrived();
    const auto steady0 = SteadyClock::now() + 10ms;
    const auto refresh_point = SysClock::now() + 10ms + refresh_after;
    auth::Token stored = old;
    stored.expires_in = 3600s;                 // the lead is then min(lead, 30 min) = lead
    stored.expires_at = refresh_point + lead;  // lead 0: the refresh point is the real expiry
    store->save(stored);
    start_line.open(steady0);
    for (auto& t : threads)
      t.join();

    for (int i = 0; i < kThreads; ++i) {
      INFO("thread " << i);
      CHECK(errors[static_cast<std::size_t>(i)] == "");
      CHECK(calls[static_cast<std::size_t>(i)].size() == static_cast<std::size_t>(kCalls));
    }
    // Exactly one refresh reached the mock, and exactly one new token came out of it.
    CHECK(mock.count("token.refresh_token") == 1);
    CHECK(mock.count("token") == 1);
    CHECK(hooks == 1);
    std::set<std::string> all_new;
    for (auto& s : others)
      all_new.insert(s.begin(), s.end());
    REQUIRE(all_new.size() == 1);
    const std::string fresh = *all_new.begin();
    CHECK(mock.is_active_access_token(fresh));
    auth::Token saved;
    REQUIRE(store->load(saved));
    CHECK(saved.access_token == fresh);
    check_is_the_live_refresh_token(mock, saved.refresh_token);

    // No call that started at or after the refresh point got the old token (with lead 0: no expired token);
    // once any caller had the new token, no call started later got the old one; each thread went from the old
    // token to the new one, once, and really ran across the refresh point.
    SysClock::time_point first_new_end = SysClock::time_point::max();
    for (auto& v : calls)
      for (auto& c : v)
        if (!c.old)
          first_new_end = std::min(first_new_end, c.end);
    int old_after_refresh_point = 0, old_after_a_new = 0, threads_across = 0, flips = 0;
    long before = 0, after = 0;
    for (auto& v : calls) {
      bool seen_old = false, seen_new = false;
      for (std::size_t k = 0; k < v.size(); ++k) {
        const Call& c = v[k];
        if (c.old && c.start >= refresh_point)
          ++old_after_refresh_point;
        if (c.old && c.start > first_new_end)
          ++old_after_a_new;
        if (k > 0 && v[k - 1].old != c.old)
          ++flips;
        (c.start < refresh_point ? before : after)++;
        (c.old ? seen_old : seen_new) = true;
      }
      if (seen_old && seen_new)
        ++threads_across;
    }
    CHECK(old_after_refresh_point == 0);
    CHECK(old_after_a_new == 0);
    CHECK(flips == kThreads);  // per thread: old ... old, new ... new
    CHECK(threads_across == kThreads);
    MESSAGE("lead " << lead.count() << " s: " << before << " calls before the refresh point, " << after
                    << " after; one refresh, shared by " << kThreads << " threads");
  }

  TEST_CASE("8 threads x 10,000 access_token() across the expiry (refresh_lead 0): one refresh, no expired token") {
    threads_across_expiry(0s);
  }

  TEST_CASE("8 threads x 10,000 access_token() across the refresh point (default 5 min lead): one refresh") {
    threads_across_expiry(auth::TokenSourceOptions{}.refresh_lead);
  }

  TEST_CASE("2-legged without a store, 8 threads across an expiry: one client-credentials request per token") {
    // Here the source's own single flight is all there is (no store to re-read under the lock).
    constexpr int kThreads = 8;
    constexpr int kCalls = 2000;
    const auto window = 1500ms;  // the first token is renewed after ~1 s, the second would be after ~2 s
    aps_mock::Server mock(mock_options(/*token_delay_ms=*/50, /*expires_in=*/2));
    auth::TokenSourceOptions options;
    options.client_credentials = true;
    auth::TokenSource source(mock_config(mock), nullptr, options);

    std::vector<std::vector<std::string>> seen(kThreads);
    std::vector<std::string> errors(kThreads);
    support::StartLine start_line(kThreads);
    const auto step = std::chrono::duration_cast<SteadyClock::duration>(window) / kCalls;
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i)
      threads.emplace_back([&, i] {
        auto& mine = seen[static_cast<std::size_t>(i)];
        const auto steady0 = start_line.arrive_and_wait();
        const auto stop = steady0 + window + 300ms;  // a thread that lagged behind stops before a third token
        try {
          for (int k = 0; k < kCalls; ++k) {
            auto target = steady0 + step * k;
            if (SteadyClock::now() < target)
              std::this_thread::sleep_until(target);
            if (SteadyClock::now() > stop)
              break;
            std::string t = source.access_token();
            if (mine.empty() || mine.back() != t)
              mine.push_back(t);  // the sequence of distinct tokens
          }
        } catch (const std::exception& e) {
          errors[static_cast<std::size_t>(i)] = e.what();
        }
      });
    start_line.wait_all_arrived();
    start_line.open(SteadyClock::now() + 10ms);
    for (auto& t : threads)
      t.join();
    CHECK(mock.count("token.client_credentials") == 2);
    CHECK(mock.count("token") == 2);
    std::set<std::string> all;
    for (int i = 0; i < kThreads; ++i) {
      INFO("thread " << i);
      CHECK(errors[static_cast<std::size_t>(i)] == "");
      CHECK(seen[static_cast<std::size_t>(i)].size() == 2);  // the first token, then the second, once
      all.insert(seen[static_cast<std::size_t>(i)].begin(), seen[static_cast<std::size_t>(i)].end());
    }
    CHECK(all.size() == 2);
    CHECK(mock.is_active_access_token(source.access_token()));
  }

  // ---- 2. processes -----------------------------------------------------------------------------------------

  TEST_CASE_FIXTURE(TwoProcesses,
                    "the CLI twice in parallel on an expired token file: one refresh, the same token, "
                    "the newest refresh token saved") {
    const std::string cli = support::require_cli();
    const std::vector<std::string> argv = {cli,           "access-token", "--token-file", path,
                                           "--client-id", kClient,        "--base-url",   mock.base_url()};
    support::EnvMap env = platform::current_environment();
    env["APS_CLIENT_SECRET"] = kSecret;  // not on the command line
    env["NO_PROXY"] = "*";
    auto t0 = SteadyClock::now();
    support::Process first(argv, env);
    support::Process second(argv, env);
    check(first, second, t0, "two CLI processes");
  }

  TEST_CASE_FIXTURE(TwoProcesses,
                    "two forked processes, each a TokenSource over the same expired token file: one "
                    "refresh, the same token, the newest refresh token saved") {
#ifdef _WIN32
    MESSAGE(
        "skipped on Windows: no fork(); two processes racing on one token file are the case above (the CLI "
        "twice, started with CreateProcess)");
#else
    if (!support::fork_with_mock_runs_here())
      return;
    platform::Pipe go;
    auto body = [&](int out) -> int {
      char c = 0;
      if (!platform::read_byte(go.read_fd(), c))
        return 3;  // both children start together
      auth::TokenSource source(config, std::make_shared<auth::FileTokenStore>(path));
      platform::write_all(out, source.access_token());
      return 0;
    };
    support::Process first(platform::fork_child(body));
    support::Process second(platform::fork_child(body));
    go.close_read();
    auto t0 = SteadyClock::now();
    platform::write_all(go.write_fd(), "gg");
    go.close_write();
    check(first, second, t0, "two forked processes");
#endif
  }

  TEST_CASE_FIXTURE(ExpiredTokenFile,
                    "another process rotated first (it held the lock): the source uses its token without refreshing") {
    auto store = std::make_shared<HookedFileStore>(path);
    std::string other_token;
    store->before_lock = [&] {  // the other process, with its own source over the same file
      auth::TokenSource other(config, std::make_shared<auth::FileTokenStore>(path));
      other_token = other.access_token();
    };
    auth::TokenSource source(config, store);
    CHECK(source.access_token() == other_token);
    CHECK(mock.count("token.refresh_token") == 1);  // the other process's only
    CHECK(source.token().refresh_token == load_file(path).refresh_token);
    check_is_the_live_refresh_token(mock, load_file(path).refresh_token);
  }

  // ---- 3. SIGKILL during saves ------------------------------------------------------------------------------

  TEST_CASE("SIGKILL at random moments of a save loop, 250 times: the file always holds A or B") {
#ifdef _WIN32
    MESSAGE("not run on Windows (no fork()): its Windows counterpart is the TerminateProcess case below");
#else
    constexpr int kKills = 250;
    TempDir dir;
    const std::string path = dir.file("token.json");
    const auth::Token a = save_loop_token('A'), b = save_loop_token('B');

    KillDelays kill_delay(path, a);
    INFO("seed " << kill_delay.seed);
    int bad = 0, held_a = 0, held_b = 0, not_killed = 0, changed = 0;
    std::string first_bad;
    bool holds_a = true;  // what the file holds before the child starts
    auto t0 = SteadyClock::now();
    for (int i = 0; i < kKills; ++i) {
      // The child saves the other token first, then alternates: a kill in its first save must leave the old one.
      const auth::Token& first = holds_a ? b : a;
      const auth::Token& second = holds_a ? a : b;
      platform::ChildProcess child = platform::fork_child([&](int out) -> int {
        auth::FileTokenStore store(path);
        platform::write_all(out, "r");  // ready: the kill lands inside the loop
        for (;;) {
          store.save(first);
          store.save(second);
        }
      });
      char ready = 0;
      bool started = platform::read_byte(child.out, ready);
      std::this_thread::sleep_for(kill_delay.next());
      platform::terminate(child);  // SIGKILL
      support::RunResult f = support::Process(child).finish(60s);
      if (!started || f.signal != SIGKILL) {
        ++not_killed;
        if (first_bad.empty())
          first_bad = "child " + std::to_string(i) + " ended by itself: " + f.out;
      }
      const std::string held = held_by(path, a, b);
      if (held == "A" || held == "B") {
        ++(held == "A" ? held_a : held_b);
        if ((held == "A") != holds_a)
          ++changed;
        holds_a = held == "A";
      } else {
        ++bad;
        if (first_bad.empty())
          first_bad = "after kill " + std::to_string(i) + ": " + held;
      }
    }
    double seconds = support::seconds_since(t0);
    INFO("first problem: " << first_bad);
    CHECK(bad == 0);
    CHECK(not_killed == 0);
    CHECK(held_a + held_b == kKills);
    CHECK(changed > 0);       // some kills came after a completed save...
    CHECK(changed < kKills);  // ...and some during the first one
    // The file is still a normal 0600 token file that loads (the permission check included).
    CHECK(file_mode(path) == 0600);
    auth::Token t;
    CHECK(auth::FileTokenStore(path).load(t));
    // A killed save leaves its temp file behind (nobody is left to unlink it): at most one per kill. They do
    // not disturb later saves (unique O_EXCL names) and never hold the only copy of a token.
    auto stale = list_dir(dir.path(), "token.json.tmp-");
    CHECK(stale.size() <= static_cast<std::size_t>(kKills));
    CHECK(list_dir(dir.path()).size() == stale.size() + 1);  // token.json and those, nothing else
    MESSAGE(kKills << " SIGKILLs in " << seconds << " s (a save takes " << kill_delay.save_time.count()
                   << " us, kills within " << kill_delay.window.count() << " us): file held A " << held_a << "x, B "
                   << held_b << "x, changed " << changed << "x; " << stale.size()
                   << " stale temp files left by killed saves");
#endif
  }

  TEST_CASE(
      "TerminateProcess at random moments of a save loop, 40 times: the file always holds A or B (the "
      "Windows counterpart of the SIGKILL case)") {
#ifndef _WIN32
    MESSAGE("Windows only: the SIGKILL case above is this one on POSIX");
#else
    constexpr int kKills = 40;  // a process start costs ~0.2 s under Wine
    const std::string helper = support::env_or("APS_AUTH_TEST_HELPER");
    REQUIRE_MESSAGE(!helper.empty(), "APS_AUTH_TEST_HELPER is not set: run this test through ctest");
    TempDir dir;
    const std::string path = dir.file("token.json");
    const auth::Token a = save_loop_token('A'), b = save_loop_token('B');
    const std::string a_file = dir.write("a.json", a.to_json()), b_file = dir.write("b.json", b.to_json());
    KillDelays kill_delay(path, a);
    INFO("seed " << kill_delay.seed);
    int held_a = 0, held_b = 0, changed = 0, not_killed = 0;
    bool holds_a = true;
    for (int i = 0; i < kKills; ++i) {
      // The helper saves the other token once, then alternates, and terminates itself (TerminateProcess, as
      // abrupt as a kill from outside) after the delay, wherever its save loop is.
      const std::string& first = holds_a ? b_file : a_file;
      const std::string& second = holds_a ? a_file : b_file;
      support::RunResult r =
          support::run({helper, "save-loop", path, first, second, std::to_string(kill_delay.next().count())},
                       platform::current_environment(), 60s);
      if (r.exit_code != platform::kKilledSelfExitCode) {
        ++not_killed;
        INFO("helper: " << r.describe());
        CHECK(r.exit_code == platform::kKilledSelfExitCode);
      }
      const std::string held = held_by(path, a, b);
      INFO("after kill " << i);
      REQUIRE((held == "A" || held == "B"));
      ++(held == "A" ? held_a : held_b);
      if ((held == "A") != holds_a)
        ++changed;
      holds_a = held == "A";
    }
    CHECK(not_killed == 0);
    CHECK(changed > 0);
    auth::Token t;
    CHECK(auth::FileTokenStore(path).load(t));  // still a private token file that loads
    CHECK(support::others_access(path) == "");
    MESSAGE(kKills << " TerminateProcess (save " << kill_delay.save_time.count() << " us, kills within "
                   << kill_delay.window.count() << " us): file held A " << held_a << "x, B " << held_b << "x, changed "
                   << changed << "x");
#endif
  }

  // ---- 4. permissions: POSIX permission bits; on Windows access lists ---------------------------------------

  TEST_CASE(
      "under umask 000 the file is created 0600, its directories 0700, the lock file 0600 (Windows: each "
      "with an access list for the user alone)") {
    TempDir dir;
    const std::string path = dir.file("state/aps-auth/token.json");
    const auth::Token t = support::valid_token("access", "refresh");
    {
#ifndef _WIN32
      platform::ScopedUmask mask(0);
#endif
      auth::FileTokenStore store(path);
      store.save(t);
      auto lock = store.lock();
      store.save(t);  // replacing keeps the access
    }
    for (const std::string& p : {dir.file("state"), dir.file("state/aps-auth"), path, path + ".lock"}) {
      INFO(p);
      CHECK(support::others_access(p) == "");
    }
#ifndef _WIN32
    CHECK(mode_text(file_mode(dir.file("state"))) == "0700");
    CHECK(mode_text(file_mode(dir.file("state/aps-auth"))) == "0700");
    CHECK(mode_text(file_mode(path)) == "0600");
    CHECK(mode_text(file_mode(path + ".lock")) == "0600");
    // And the umask was restored.
    CHECK(platform::ScopedUmask::current() != 0);
#endif
    CHECK(list_dir(dir.file("state/aps-auth"), "token.json.tmp-").empty());
  }

  TEST_CASE(
      "an existing token file readable by others is refused by default, only warned about with "
      "OpenPermissions::warn") {
    TempDir dir;
    const std::string path = dir.file("token.json");
    const auth::Token t = support::valid_token("secret-access-token-value", "secret-refresh-token-value");

#ifdef _WIN32
    // write_file makes an access list of the bits: the others' as Everyone's, the group's as Builtin Users' (which
    // Wine does not keep: only the others' bits are tried there).
    const char* const hint = "icacls";
    const std::vector<int> shared_modes = {0644, 0604, 0666};
#else
    const char* const hint = "chmod 600";
    const std::vector<int> shared_modes = {0644, 0640, 0604, 0660};
#endif
    for (int mode : shared_modes) {
      INFO("mode " << mode_text(mode));
      support::write_file(path, t.to_json(), mode);
      auth::Token loaded;
      auto e = require_error([&] { (void)auth::FileTokenStore(path).load(loaded); });
      CHECK(e.kind() == auth::ErrorKind::io);
      CHECK(contains(e.what(), hint));
      CHECK(contains(e.what(), path));
      CHECK_FALSE(contains(e.what(), t.access_token));
      CHECK_FALSE(contains(e.what(), t.refresh_token));
    }

    // A TokenSource over such a file refuses it too, before any request (nothing listens on port 9).
    support::write_file(path, t.to_json(), 0644);
    auth::Config config;
    config.client_id = kClient;
    config.endpoints = auth::Endpoints::from_base_url("http://127.0.0.1:9");
    auth::TokenSource source(config, std::make_shared<auth::FileTokenStore>(path));
    auto e = require_error([&] { (void)source.access_token(); });
    CHECK(e.kind() == auth::ErrorKind::io);
    CHECK(contains(e.what(), hint));

    // warn: the callback hears about it, the token is read.
    std::vector<std::string> warnings;
    auth::FileTokenStore lenient(path, auth::FileTokenStore::OpenPermissions::warn,
                                 [&](const std::string& m) { warnings.push_back(m); });
    auth::Token loaded;
    CHECK(lenient.load(loaded));
    CHECK(loaded.access_token == t.access_token);
    REQUIRE(warnings.size() == 1);
    CHECK(contains(warnings[0], hint));
    CHECK_FALSE(contains(warnings[0], t.access_token));
    // warn without a callback: read silently.
    CHECK(auth::FileTokenStore(path, auth::FileTokenStore::OpenPermissions::warn).load(loaded));
    // Saving replaces the file with a private one; then the default store accepts it.
    lenient.save(t);
    CHECK(support::others_access(path) == "");
    CHECK(auth::FileTokenStore(path).load(loaded));
    CHECK(warnings.size() == 1);
    // Owner-only modes are accepted.
    support::write_file(path, t.to_json(), 0400);
    CHECK(auth::FileTokenStore(path).load(loaded));
  }

  // ---- 5. invalid_grant after another process rotated -------------------------------------------------------

  TEST_CASE_FIXTURE(ExpiredTokenFile,
                    "invalid_grant after another writer rotated is recovered from the file, no "
                    "sign-in") {
    auto store = std::make_shared<HookedFileStore>(path);
    std::vector<auth::Token> hooked;
    auth::TokenSourceOptions options;
    options.on_new_token = [&](const auth::Token& t) { hooked.push_back(t); };
    auth::TokenSource source(config, store, options);
    auth::Token theirs;

    SUBCASE("the other writer saved an expired access token: the source refreshes with the file's refresh token") {
      // Between the source's read and its refresh, a writer that does not lock rotates and saves.
      store->after_locked_load = [&] {
        theirs = auth::refresh(config, before.refresh_token);
        auth::FileTokenStore(path).save(support::expired_token(theirs));
      };
      std::string access = source.access_token();
      // The writer's refresh, the source's refused one (the old refresh token), its refresh with the file's.
      CHECK(mock.count("token.refresh_token") == 3);
      CHECK(access != theirs.access_token);
      CHECK(mock.is_active_access_token(access));
      auth::Token saved = load_file(path);
      CHECK(saved.access_token == access);
      check_is_the_live_refresh_token(mock, saved.refresh_token);
      REQUIRE(hooked.size() == 1);
      CHECK(hooked[0].access_token == access);
    }
    SUBCASE("the other writer saved a valid access token: the source uses it, no further refresh") {
      store->after_locked_load = [&] {
        theirs = auth::refresh(config, before.refresh_token);
        auth::FileTokenStore(path).save(theirs);
      };
      CHECK(source.access_token() == theirs.access_token);
      CHECK(mock.count("token.refresh_token") == 2);  // theirs, and the source's refused one
      check_is_the_live_refresh_token(mock, load_file(path).refresh_token);
      CHECK(load_file(path).refresh_token == theirs.refresh_token);
      CHECK(hooked.empty());  // not a new token of this source's making
    }
    SUBCASE("the chain is really lost (the store has nothing newer): the invalid_grant error, after one re-read") {
      store->after_locked_load = [&] { theirs = auth::refresh(config, before.refresh_token); };  // never saved
      auto e = require_error([&] { (void)source.access_token(); });
      CHECK(e.kind() == auth::ErrorKind::oauth);
      CHECK(e.details().error == "invalid_grant");
      CHECK(mock.count("token.refresh_token") == 2);
      CHECK(load_file(path).refresh_token == before.refresh_token);  // the file is left alone
    }
    // Never a sign-in.
    CHECK(mock.count("authorize") == 0);
    CHECK(mock.count("token.authorization_code") == 0);
  }

  // ---- 6. a failing save ------------------------------------------------------------------------------------

  // POSIX only: fork(), permission bits, and (as root) setuid().
  TEST_CASE("a failing save (read-only directory) loses nothing and says so") {
#ifdef _WIN32
    MESSAGE(
        "skipped on Windows: a directory the user cannot write needs a deny entry in its access list, which "
        "Wine does not enforce; the failing save itself is the next case's, which runs everywhere");
#else
    if (!support::fork_with_mock_runs_here())
      return;
    aps_mock::Server mock(mock_options());
    TempDir dir;
    const std::string sub = dir.file("ro");
    REQUIRE(::mkdir(sub.c_str(), 0700) == 0);
    const std::string path = sub + "/token.json";
    const auth::Token before = issued(mock);
    {
      auth::FileTokenStore store(path);
      store.save(support::expired_token(before));
      (void)store.lock();  // the lock file exists: a read-only directory still lets the source lock
    }
    const auth::Config config = mock_config(mock);

    // As root, the source runs in a child that drops to nobody (root writes into a 0500 directory).
    const bool root = ::geteuid() == 0;
    const uid_t nobody = 65534;
    if (root) {
      REQUIRE(::chmod(dir.path().c_str(), 0711) == 0);  // nobody may traverse the scratch directory
      for (const std::string& p : {sub, path, path + ".lock"})
        REQUIRE(::chown(p.c_str(), nobody, nobody) == 0);
    }
    REQUIRE(::chmod(sub.c_str(), 0500) == 0);

    // Child: ask for an access token (the save fails), then report the error and what token() holds.
    platform::ChildProcess child = platform::fork_child([&](int out) -> int {
      if (root && (::setgroups(0, nullptr) != 0 || ::setgid(nobody) != 0 || ::setuid(nobody) != 0)) {
        platform::write_all(out, "cannot drop to uid/gid 65534: " + std::string(std::strerror(errno)));
        return 4;
      }
      auth::TokenSource source(config, std::make_shared<auth::FileTokenStore>(path));
      std::string report;
      try {
        (void)source.access_token();
        report = "no error\n";
      } catch (const auth::Error& e) {
        report = std::string(auth::to_string(e.kind())) + "\n" + e.what() + "\n";
      }
      auth::Token now = source.token();  // no refresh: the kept token is valid
      std::string again = source.access_token();
      report += now.access_token + "\n" + now.refresh_token + "\n" + again + "\n";
      platform::write_all(out, report);
      return 0;
    });
    support::RunResult f = support::Process(child).finish(60s);
    ::chmod(sub.c_str(), 0700);
    // Back to root, whose FileTokenStore (load_file below) refuses a token file of another user.
    if (root)
      for (const std::string& p : {sub, path, path + ".lock"})
        REQUIRE(::chown(p.c_str(), 0, 0) == 0);
    INFO("child: exit " << f.exit_code << " output: " << f.out);
    REQUIRE(f.exit_code == 0);
    std::vector<std::string> lines;
    for (std::size_t p = 0, n; p < f.out.size(); p = n + 1) {
      n = f.out.find('\n', p);
      if (n == std::string::npos)
        n = f.out.size();
      lines.push_back(f.out.substr(p, n - p));
    }
    REQUIRE(lines.size() >= 5);
    CHECK(lines[0] == "io");
    CHECK(contains(lines[1], "kept in memory"));
    CHECK(contains(lines[1], "token()"));
    CHECK(contains(lines[1], path));
    CHECK(contains(lines[1], "Permission denied"));
    CHECK_FALSE(contains(lines[1], before.refresh_token));
    const std::string kept_access = lines[2], kept_refresh = lines[3];
    CHECK(kept_access != before.access_token);
    CHECK(mock.is_active_access_token(kept_access));
    check_is_the_live_refresh_token(mock, kept_refresh);           // the rotated refresh token is the one kept
    CHECK(lines[4] == kept_access);                                // handed out from memory afterwards
    CHECK(mock.count("token.refresh_token") == 1);                 // token() and access_token() refreshed nothing more
    CHECK(load_file(path).refresh_token == before.refresh_token);  // the file was not touched
    CHECK(list_dir(sub, "token.json.tmp-").empty());
#endif
  }

  TEST_CASE(
      "a failing save (temp file name too long, fails for root too) loses nothing, and the "
      "kept token is the one used for the next refresh") {
    aps_mock::Server mock(mock_options(0, /*expires_in=*/2));  // the new tokens need a refresh after ~1 s
    TempDir dir;
    // NAME_MAX is 255: "<name>.lock" fits, "<name>.tmp-XXXXXXXX" does not.
    const std::string name = "token-" + std::string(234, 'x') + ".json";  // 245 characters
    REQUIRE(name.size() == 245);
    const std::string path = dir.file(name);
    const auth::Token before = issued(mock);
    support::write_file(path, support::expired_token(before).to_json(), 0600);
    const auth::Config config = mock_config(mock);
    std::vector<auth::Token> hooked;
    auth::TokenSourceOptions options;
    options.on_new_token = [&](const auth::Token& t) { hooked.push_back(t); };
    auth::TokenSource source(config, std::make_shared<auth::FileTokenStore>(path), options);

    auto e = require_error([&] { (void)source.access_token(); });
    CHECK(e.kind() == auth::ErrorKind::io);
    CHECK(contains(e.what(), "kept in memory"));
    CHECK(contains(e.what(), "create"));
    auth::Token kept = source.token();
    CHECK(mock.count("token.refresh_token") == 1);
    CHECK(mock.is_active_access_token(kept.access_token));
    check_is_the_live_refresh_token(mock, kept.refresh_token);
    CHECK(source.access_token() == kept.access_token);
    CHECK(load_file(path).refresh_token == before.refresh_token);
    CHECK(list_dir(dir.path(), "token-x").size() == 2);  // the token file and its lock file

    // Once the kept access token is due, the source refreshes with the kept refresh token (the file's one is
    // dead), the save fails again, and again nothing is lost. (It used to refresh with the file's dead refresh
    // token, get invalid_grant and throw: the chain was lost on the second refresh after a failed save.)
    std::this_thread::sleep_until(kept.expires_at - 1s + 50ms);  // lead: min(5 min, expires_in / 2) = 1 s
    auto e2 = catch_error([&] { (void)source.access_token(); });
    REQUIRE(e2);
    CHECK(e2->kind() == auth::ErrorKind::io);
    CHECK(contains(e2->what(), "kept in memory"));
    auth::Token next = source.token();
    CHECK(next.access_token != kept.access_token);
    CHECK(mock.is_active_access_token(next.access_token));
    check_is_the_live_refresh_token(mock, next.refresh_token);
    CHECK(mock.count("token.authorization_code") == 0);
    // The hook hears of each unsaved token too, so the application can keep it elsewhere.
    REQUIRE(hooked.size() == 2);
    CHECK(hooked[0].refresh_token == kept.refresh_token);
    CHECK(hooked[1].refresh_token == next.refresh_token);
  }

  // ---- 7. hook, 2-legged, memory store, default path ------------------------------------------------------

  TEST_CASE("on_new_token is called once per new token, after it was saved") {
    aps_mock::Server mock(mock_options(0, /*expires_in=*/2));
    auto store = std::make_shared<auth::MemoryTokenStore>();
    store->save(support::expired_token(issued(mock)));
    std::vector<auth::Token> hooked;
    std::vector<std::string> stored_at_hook;
    auth::TokenSourceOptions options;
    options.on_new_token = [&](const auth::Token& t) {
      hooked.push_back(t);
      auth::Token s;
      stored_at_hook.push_back(store->load(s) ? s.access_token : "");
    };
    auth::TokenSource source(mock_config(mock), store, options);
    std::string first = source.access_token();
    for (int i = 0; i < 100; ++i)
      CHECK(source.access_token() == first);
    REQUIRE(hooked.size() == 1);
    CHECK(hooked[0].access_token == first);
    CHECK(stored_at_hook[0] == first);  // saved before the hook and before the hand-out
    CHECK(mock.count("token.refresh_token") == 1);

    std::this_thread::sleep_until(hooked[0].expires_at - 1s + 50ms);
    std::string second = source.access_token();
    CHECK(second != first);
    for (int i = 0; i < 100; ++i)
      CHECK(source.access_token() == second);
    REQUIRE(hooked.size() == 2);
    CHECK(hooked[1].access_token == second);
    CHECK(stored_at_hook[1] == second);
    CHECK(mock.count("token.refresh_token") == 2);
    check_is_the_live_refresh_token(mock, hooked[1].refresh_token);
  }

  TEST_CASE("a 2-legged source gets a new client-credentials token when the old one expires") {
    aps_mock::Server mock(mock_options(0, /*expires_in=*/2));
    auto store = std::make_shared<auth::MemoryTokenStore>();
    int hooks = 0;
    auth::TokenSourceOptions options;
    options.client_credentials = true;
    options.on_new_token = [&](const auth::Token&) { ++hooks; };
    auth::TokenSource source(mock_config(mock), store, options);
    std::string first = source.access_token();
    CHECK(mock.is_active_access_token(first));
    for (int i = 0; i < 100; ++i)
      CHECK(source.access_token() == first);
    CHECK(mock.count("token.client_credentials") == 1);
    auth::Token t = source.token();
    CHECK(t.refresh_token.empty());
    std::this_thread::sleep_until(t.expires_at - 1s + 50ms);
    std::string second = source.access_token();
    CHECK(second != first);
    CHECK(mock.is_active_access_token(second));
    CHECK(mock.count("token.client_credentials") == 2);
    CHECK(mock.count("token.refresh_token") == 0);
    CHECK(hooks == 2);
    auth::Token saved;
    REQUIRE(store->load(saved));
    CHECK(saved.access_token == second);

    // Without a store, too.
    auth::TokenSourceOptions plain;
    plain.client_credentials = true;
    auth::TokenSource storeless(mock_config(mock), nullptr, plain);
    CHECK(mock.is_active_access_token(storeless.access_token()));
    CHECK(mock.count("token.client_credentials") == 3);
  }

  TEST_CASE("a 3-legged source with nothing stored asks to sign in first (usage), with no request") {
    aps_mock::Server mock(mock_options());
    auth::TokenSource source(mock_config(mock), std::make_shared<auth::MemoryTokenStore>());
    auto e = require_error([&] { (void)source.access_token(); });
    CHECK(e.kind() == auth::ErrorKind::usage);
    CHECK(contains(e.what(), "sign in"));
    CHECK(mock.count("token") == 0);
  }

  TEST_CASE("MemoryTokenStore: load/save/clear, copies, and concurrent use") {
    auth::MemoryTokenStore store;
    auth::Token t;
    CHECK_FALSE(store.load(t));
    auth::Token a;
    a.access_token = "a";
    a.refresh_token = "ra";
    store.save(a);
    a.access_token = "changed after save";
    REQUIRE(store.load(t));
    CHECK(t.access_token == "a");
    t.access_token = "changed after load";
    auth::Token again;
    REQUIRE(store.load(again));
    CHECK(again.access_token == "a");
    store.clear();
    CHECK_FALSE(store.load(t));
    CHECK(store.lock() == nullptr);  // no cross-process lock

    // Writers and readers at once (run under ThreadSanitizer): every load sees a whole token.
    std::atomic<int> torn{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
      threads.emplace_back([&, i] {
        for (int k = 0; k < 2000; ++k) {
          if (i % 2 == 0) {
            auth::Token w;
            w.access_token = "access-" + std::to_string(k);
            w.refresh_token = "refresh-" + std::to_string(k);
            store.save(w);
          } else {
            auth::Token r;
            if (store.load(r) && r.access_token.substr(7) != r.refresh_token.substr(8))
              ++torn;
          }
        }
      });
    for (auto& th : threads)
      th.join();
    CHECK(torn == 0);
  }

  TEST_CASE("FileTokenStore: a missing file is no token; the JSON round trip keeps every field; clear deletes") {
    TempDir dir;
    const std::string path = dir.file("t.json");
    auth::FileTokenStore store(path);
    auth::Token t;
    CHECK_FALSE(store.load(t));
    const auth::Token a = support::token_with_every_field();
    store.save(a);
    REQUIRE(store.load(t));
    support::check_same_token(t, a);
    store.clear();
    CHECK_FALSE(support::exists(path));
    CHECK_NOTHROW(store.clear());  // clearing twice is fine
    // A file that is not a token is an io error naming the file, not a crash.
    support::write_file(path, "{not json", 0600);
    auto e = require_error([&] { (void)store.load(t); });
    CHECK(e.kind() == auth::ErrorKind::io);
    CHECK(contains(e.what(), path));
    CHECK_THROWS_AS(auth::FileTokenStore(""), auth::Error);
  }

  TEST_CASE(
      "refresh_token_obtained_at: set when a refresh token is issued, kept when it does not rotate, unknown "
      "in an older file") {
    aps_mock::Server mock(mock_options());
    const auth::Token first = issued(mock);  // a token endpoint answer: issued now
    CHECK(first.refresh_token_obtained_at > SysClock::now() - 60s);
    CHECK(first.refresh_token_obtained_at <= SysClock::now());

    // A file written before the field existed: the age of its refresh token is unknown (epoch 0), not "now".
    auto old_json = nlohmann::json::parse(first.to_json());
    REQUIRE(old_json.contains("refresh_token_obtained_at"));
    old_json.erase("refresh_token_obtained_at");
    CHECK(auth::Token::from_json(old_json.dump()).refresh_token_obtained_at == SysClock::time_point{});

    auth::Token aged = support::expired_token(first);
    aged.refresh_token_obtained_at = SysClock::now() - 24h * 3;
    {
      // The mock rotates: the new refresh token is new, so is its time.
      auto store = std::make_shared<auth::MemoryTokenStore>();
      store->save(aged);
      auth::Token next = auth::TokenSource(mock_config(mock), store).token();
      CHECK(next.refresh_token != aged.refresh_token);
      CHECK(next.refresh_token_obtained_at > SysClock::now() - 60s);
    }
    {
      // A server that does not rotate (no refresh_token in its answer): the old one is kept, with its time.
      aged.refresh_token = mock.issue_tokens(kClient, kScope)["refresh_token"];
      mock.inject(support::fault(support::kTokenPath, 200,
                                 R"({"access_token":"at-not-rotated-0123456789","token_type":"Bearer",)"
                                 R"("expires_in":3599})"));
      auto store = std::make_shared<auth::MemoryTokenStore>();
      store->save(aged);
      auth::Token next = auth::TokenSource(mock_config(mock), store).token();
      CHECK(next.access_token == "at-not-rotated-0123456789");
      CHECK(next.refresh_token == aged.refresh_token);
      CHECK(next.refresh_token_obtained_at == aged.refresh_token_obtained_at);
      auth::Token saved;
      REQUIRE(store->load(saved));
      CHECK(saved.refresh_token_obtained_at == aged.refresh_token_obtained_at);
    }
  }

  TEST_CASE(
      "FileTokenStore::default_path: $XDG_STATE_HOME, else ~/.local/state (macOS: ~/Library/Application "
      "Support; Windows: %LOCALAPPDATA%)") {
#ifdef _WIN32
    {
      support::ScopedEnv local("LOCALAPPDATA", "C:\\Users\\Someone\\AppData\\Local");
      CHECK(auth::FileTokenStore::default_path() == "C:\\Users\\Someone\\AppData\\Local\\aps-auth\\token.json");
      CHECK(auth::FileTokenStore::default_path("work") == "C:\\Users\\Someone\\AppData\\Local\\aps-auth\\work.json");
    }
    {
      support::ScopedEnv local("LOCALAPPDATA", nullptr);
      support::ScopedEnv profile("USERPROFILE", "C:\\Users\\Søren");  // UTF-8 in, UTF-8 out
      CHECK(auth::FileTokenStore::default_path() == "C:\\Users\\Søren\\AppData\\Local\\aps-auth\\token.json");
    }
    {
      support::ScopedEnv local("LOCALAPPDATA", nullptr);
      support::ScopedEnv profile("USERPROFILE", nullptr);
      auto e = require_error([] { (void)auth::FileTokenStore::default_path(); });
      CHECK(e.kind() == auth::ErrorKind::usage);
    }
#else
#ifdef __APPLE__
    const std::string home_state = "/home/someone/Library/Application Support";
#else
    const std::string home_state = "/home/someone/.local/state";
#endif
    {
      support::ScopedEnv xdg("XDG_STATE_HOME", "/xdg/state");
      support::ScopedEnv home("HOME", "/home/someone");
      CHECK(auth::FileTokenStore::default_path() == "/xdg/state/aps-auth/token.json");
      CHECK(auth::FileTokenStore::default_path("work") == "/xdg/state/aps-auth/work.json");
    }
    {
      support::ScopedEnv xdg("XDG_STATE_HOME", nullptr);
      support::ScopedEnv home("HOME", "/home/someone");
      CHECK(auth::FileTokenStore::default_path() == home_state + "/aps-auth/token.json");
    }
    {
      support::ScopedEnv xdg("XDG_STATE_HOME", "");  // empty: unset, per the XDG spec
      support::ScopedEnv home("HOME", "/home/someone");
      CHECK(auth::FileTokenStore::default_path() == home_state + "/aps-auth/token.json");
    }
    {
      support::ScopedEnv xdg("XDG_STATE_HOME", "relative/state");  // relative: ignored, per the XDG spec
      support::ScopedEnv home("HOME", "/home/someone");
      CHECK(auth::FileTokenStore::default_path() == home_state + "/aps-auth/token.json");
    }
    {
      support::ScopedEnv xdg("XDG_STATE_HOME", nullptr);
      support::ScopedEnv home("HOME", nullptr);
      auto e = require_error([] { (void)auth::FileTokenStore::default_path(); });
      CHECK(e.kind() == auth::ErrorKind::usage);
    }
#endif
  }
}
