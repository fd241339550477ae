// The loopback listener under abuse. Any process on the machine can reach the callback port, so while a real
// LoopbackListener waits (on the test's main thread, one 20 s deadline), attacker threads throw junk at it: 100
// concurrent junk connections (random bytes, half-closed, silent, never closed by the client), slowloris
// clients, 1 MB request lines and headers, invalid UTF-8 and broken percent-escapes, duplicate code/state
// parameters, a connection flood beyond the listener's connection cap, and all of it at once. Then the real
// callback (right state) is sent: it must end the wait with its code well within the deadline, the browser must
// get the success page, nothing may crash (run under ASan+UBSan and TSan too), and no descriptor may leak (the
// process's open descriptors counted before and after).
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/network.hpp"
#include "support/platform.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace auth = aps::auth;
namespace platform = support::platform;
namespace raw_http = support::raw_http;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using support::Socket;

namespace {

const char* const kCallback = "http://127.0.0.1:0/cb";
const char* const kCode = "the-real-code_0123456789";
constexpr auto kDeadline = 20s;  // the wait's one overall deadline

// The attackers: threads that share a stop flag and report when their abuse is in place.
struct Attack {
  std::atomic<bool> stop{false};
  std::atomic<int> in_place{0};
  std::vector<std::thread> threads;
  std::mutex mutex;
  std::vector<std::string> notes;  // what the attackers saw (reported by the test)

  void note(const std::string& s) {
    std::lock_guard<std::mutex> lock(mutex);
    notes.push_back(s);
  }
  void join() {
    stop = true;
    for (auto& t : threads)
      if (t.joinable())
        t.join();
    threads.clear();
  }
  ~Attack() { join(); }
  // Sleeps up to `d` in small steps; false when told to stop.
  bool nap(std::chrono::milliseconds d) {
    for (auto until = Clock::now() + d; Clock::now() < until;) {
      if (stop)
        return false;
      std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(10ms, d));
    }
    return !stop;
  }
};

// A socket that does not block the attacker for long (the listener may stop reading at any time).
Socket attacker_socket(int port) {
  return support::connect_to("127.0.0.1", port, nullptr, 2000);
}

std::string junk(std::mt19937& rng, std::size_t max_len) {
  std::uniform_int_distribution<std::size_t> len(1, max_len);
  std::uniform_int_distribution<int> byte(0, 255);
  std::string s(len(rng), '\0');
  for (char& c : s) {
    c = static_cast<char>(byte(rng));
    if (c == '\r')
      c = '\n';  // never a complete request head: these connections stay open
  }
  return s;
}

// One sign-in under attack: the listener waits on this thread; `start_attack` launches the attackers (they
// bump attack.in_place); once `needed` of them are in place (or after 10 s), a browser thread sends the real
// callback. Everything is torn down before returning.
struct Outcome {
  std::optional<std::string> code;
  std::optional<auth::Error> error;
  double latency_s = -1;       // real callback sent -> wait() returned
  double page_latency_s = -1;  // real callback sent -> success page received
  int browser_status = 0;
  bool attack_in_place = false;
  std::vector<std::string> notes;
};

Outcome sign_in_under_attack(const std::function<void(int port, const std::string& state, Attack&)>& start_attack,
                             int needed) {
  Outcome out;
  auth::LoopbackListener listener(kCallback);
  auth::Config config;
  config.client_id = "abuse-test";
  const auth::AuthorizationRequest request = auth::authorization_request(config, {}, listener.redirect_uri());
  const int port = listener.port();

  Attack attack;
  start_attack(port, request.state, attack);

  Clock::time_point sent{}, answered{};
  std::thread browser([&] {
    for (auto until = Clock::now() + 10s; attack.in_place < needed && Clock::now() < until;)
      std::this_thread::sleep_for(10ms);
    out.attack_in_place = attack.in_place >= needed;
    std::this_thread::sleep_for(300ms);  // let the listener chew on the abuse first
    sent = Clock::now();
    // The browser waits as long as the listener's own deadline: how fast it got its page is reported, not judged.
    raw_http::Response r =
        raw_http::request("127.0.0.1", port, std::string("/cb?code=") + kCode + "&state=" + request.state, "GET", "",
                          static_cast<int>(std::chrono::milliseconds(kDeadline).count()));
    answered = Clock::now();
    out.browser_status = r.status;
  });

  try {
    out.code = listener.wait(request, kDeadline);
  } catch (const auth::Error& e) {
    out.error = e;
  }
  const auto returned = Clock::now();
  browser.join();
  attack.join();
  out.notes = attack.notes;
  if (out.code)
    out.latency_s = std::chrono::duration<double>(returned - sent).count();
  if (out.browser_status)
    out.page_latency_s = std::chrono::duration<double>(answered - sent).count();
  return out;
}

// The common verdict: the real callback won within the wait's deadline, and nothing leaked (the time it took is
// reported: a timing budget would fail on a loaded machine, not on a broken listener).
void check_real_callback_won(const Outcome& o, const std::string& scenario) {
  CHECK_MESSAGE(o.attack_in_place, scenario << ": the abuse was not in place before the real callback");
  if (o.error)
    FAIL_CHECK(scenario << ": wait() threw " << o.error->what());
  REQUIRE(o.code.has_value());
  CHECK(*o.code == kCode);
  CHECK(o.browser_status == 200);
  CHECK(o.latency_s >= 0);
  MESSAGE(scenario << ": real callback -> wait() returned in " << o.latency_s * 1000 << " ms, success page in "
                   << o.page_latency_s * 1000 << " ms");
  for (const auto& n : o.notes)
    MESSAGE(scenario << ": " << n);
}

// Runs the scenario and checks the descriptor count is back where it was.
void run_scenario(const std::string& scenario, const std::function<void(int, const std::string&, Attack&)>& attack,
                  int needed) {
  {  // warm-up: whatever the first listener, RNG or thread lazily opens is not a leak
    auth::LoopbackListener warm(kCallback);
    auth::Config config;
    config.client_id = "abuse-test";
    (void)auth::authorization_request(config, {}, warm.redirect_uri());
  }
  const int before = platform::open_descriptor_count();
  Outcome o = sign_in_under_attack(attack, needed);
  check_real_callback_won(o, scenario);
  int after = platform::open_descriptor_count();
  for (int i = 0; i < 50 && after != before; ++i) {  // closes are synchronous; allow sanitizer threads a moment
    std::this_thread::sleep_for(20ms);
    after = platform::open_descriptor_count();
  }
  CHECK_MESSAGE(after == before, scenario << ": descriptors before " << before << ", after " << after);
}

// ---- the attackers -----------------------------------------------------------------------------------------

// `count` junk connections over `threads` threads: a third silent, a third sending random bytes now and then,
// a third sending random bytes and half-closing. None is closed by the client until the attack ends.
void junk_connections(int port, Attack& attack, int count, int threads) {
  for (int t = 0; t < threads; ++t) {
    attack.threads.emplace_back([&attack, port, count, threads, t] {
      std::mt19937 rng(static_cast<unsigned>(1234 + t));
      std::vector<Socket> socks;
      for (int i = t; i < count && !attack.stop; i += threads) {
        int err = 0;
        Socket s = support::connect_to("127.0.0.1", port, &err, 2000);
        if (!s.valid()) {
          attack.note("junk connection " + std::to_string(i) +
                      " could not connect: " + platform::socket_error_text(err));
          continue;
        }
        if (i % 3 != 0)
          s.send_without_blocking(junk(rng, 512));
        if (i % 3 == 2)
          s.shutdown_write();
        socks.push_back(std::move(s));
        ++attack.in_place;
      }
      while (attack.nap(50ms))
        for (std::size_t i = 0; i < socks.size(); ++i)
          if (i % 3 == 1)
            socks[i].send_without_blocking(junk(rng, 16));
    });
  }
}

// A flood that never stops: each thread opens new junk connections as fast as it can, keeping its newest
// `keep` open (closing its oldest), so the listener keeps hitting its connection cap while the real callback
// arrives.
void connection_churn(int port, Attack& attack, int threads, std::size_t keep) {
  for (int t = 0; t < threads; ++t) {
    attack.threads.emplace_back([&attack, port, t, keep] {
      std::mt19937 rng(static_cast<unsigned>(99 + t));
      std::vector<Socket> socks;
      std::size_t opened = 0;
      bool counted = false;
      while (!attack.stop) {
        Socket s = attacker_socket(port);
        if (!s.valid())
          continue;
        s.send_without_blocking(junk(rng, 64));
        socks.push_back(std::move(s));
        ++opened;
        if (socks.size() > keep)
          socks.erase(socks.begin());
        if (!counted && opened >= keep) {
          counted = true;
          ++attack.in_place;
        }
      }
      attack.note("churn thread " + std::to_string(t) + " opened " + std::to_string(opened) + " connections");
    });
  }
}

// Slowloris: a request head that never ends, one byte every 100 ms.
void slowloris(int port, Attack& attack, int clients) {
  for (int c = 0; c < clients; ++c) {
    attack.threads.emplace_back([&attack, port, c] {
      Socket s = attacker_socket(port);
      const std::string head =
          "GET /cb?code=evil&state=not-the-state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-" + std::to_string(c) + ": ";
      std::size_t sent = 0;
      bool counted = false;
      while (attack.nap(100ms)) {
        char b = sent < head.size() ? head[sent] : 'a';
        if (!s.send_without_blocking(std::string(1, b))) {
          attack.note("slowloris " + std::to_string(c) + " was disconnected after " + std::to_string(sent) + " bytes");
          break;
        }
        ++sent;
        if (sent == 5 && !counted) {
          counted = true;
          ++attack.in_place;
        }
      }
      if (!counted)
        ++attack.in_place;
    });
  }
}

// Sends a huge request (1 MB request line, or a normal line and 1 MB of headers) and reads what comes back.
void huge_request(int port, Attack& attack, bool huge_line, const std::string& state) {
  attack.threads.emplace_back([&attack, port, huge_line, state] {
    std::string req;
    if (huge_line)
      req = "GET /cb?code=big&state=" + state + "&pad=" + std::string(1 << 20, 'A') + " HTTP/1.1\r\n\r\n";
    else
      req = "GET /cb?code=big&state=" + state + " HTTP/1.1\r\nX-Pad: " + std::string(1 << 20, 'B') + "\r\n\r\n";
    Socket s = attacker_socket(port);
    bool all_sent = s.valid() && s.send_all(req);
    raw_http::Response r = s.valid() ? raw_http::read_response(s) : raw_http::Response();
    attack.note(std::string(huge_line ? "1 MB request line" : "1 MB of headers") + ": " +
                (all_sent ? "all sent" : "cut off by the listener") + ", answer " +
                (r.status ? "HTTP " + std::to_string(r.status) : std::string("none (connection reset)")));
    if (r.status != 0 && r.status != 431)
      attack.note("UNEXPECTED status for a huge request");
    ++attack.in_place;
    while (attack.nap(50ms)) {
    }
  });
}

// Sends each target as its own request and records the statuses; all must be 400 (or 404 for a mangled path).
struct Probe {
  std::string target;
  int expected;
};

void probes(int port, Attack& attack, std::vector<Probe> list, std::vector<int>* statuses) {
  attack.threads.emplace_back([&attack, port, list, statuses] {
    for (const auto& p : list) {
      raw_http::Response r = raw_http::exchange(
          "127.0.0.1", port, "GET " + p.target + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) + "\r\n\r\n");
      statuses->push_back(r.status);
    }
    ++attack.in_place;
  });
}

std::vector<Probe> bad_encoding_probes(const std::string& state) {
  const std::string cut = state.substr(0, state.size() - 1);
  return {
      {"/cb?code=%FF%FE%FD&state=%C3%28", 400},   // invalid UTF-8, wrong state
      {"/cb?code=%C0%AF&state=%ED%A0%80", 400},   // overlong form, lone surrogate
      {"/cb?code=\xff\xfe&state=\xc3\x28", 400},  // raw invalid UTF-8 bytes
      {"/cb?code=a&state=%", 400},                // broken escapes
      {"/cb?code=a&state=%4", 400},
      {"/cb?code=a&state=%zz", 400},
      {"/cb?code=a&state=%%%", 400},
      {"/cb?code=%G1&state=" + state, 400},           // right state, broken escape elsewhere
      {"/cb?code=a&state=" + state + "%", 400},       // right state, then a broken escape
      {"/cb?code=a&state=" + state + "%00", 400},     // right state + NUL
      {"/cb?code=a&state=" + cut + "%C3", 400},       // almost the state
      {"/cb?code=a&state=" + state + "%E2%82", 400},  // right state + truncated UTF-8
      {"/c%ZZb?code=a&state=" + state, 404},          // broken escape in the path
      {"/cb%3Fcode=a%26state=" + state, 404},         // the query escaped into the path
  };
}

std::vector<Probe> duplicate_probes(const std::string& state) {
  return {
      {"/cb?code=a&code=b&state=" + state, 400},
      {"/cb?state=" + state + "&state=" + state + "&code=a", 400},
      {"/cb?state=WRONG&state=" + state + "&code=a", 400},
      {"/cb?state=" + state + "&code=a&state=WRONG", 400},
      {"/cb?code=&code=x&state=" + state, 400},
      {"/cb?code=a&state=" + state + "&error=access_denied&error=x", 400},
      {"/cb?code=a&state=" + state + "&iss=a&iss=b", 400},
      {"/cb?code=a&st%61te=" + state + "&state=" + state, 400},  // the same name, encoded differently
  };
}

void check_probe_statuses(const std::vector<Probe>& list, const std::vector<int>& statuses) {
  REQUIRE(statuses.size() == list.size());
  for (std::size_t i = 0; i < list.size(); ++i) {
    INFO("probe " << i << ": " << list[i].target.substr(0, 120));
    CHECK(statuses[i] == list[i].expected);
  }
}

}  // namespace

TEST_SUITE("listener") {
  TEST_CASE("abuse: 100 concurrent junk connections (random bytes, half-closed, silent, never closed)") {
    run_scenario(
        "100 junk connections", [](int port, const std::string&, Attack& a) { junk_connections(port, a, 100, 4); },
        100);
  }

  TEST_CASE("abuse: slowloris clients dribbling one byte every 100 ms") {
    SUBCASE("one client") {
      run_scenario(
          "slowloris x1", [](int port, const std::string&, Attack& a) { slowloris(port, a, 1); }, 1);
    }
    SUBCASE("twenty clients") {
      run_scenario(
          "slowloris x20", [](int port, const std::string&, Attack& a) { slowloris(port, a, 20); }, 20);
    }
  }

  TEST_CASE(
      "abuse: 1 MB request line and 1 MB of headers (cut at APS_AUTH_MAX_CALLBACK_BYTES, never ending the wait)") {
    SUBCASE("1 MB request line carrying the right state") {
      run_scenario(
          "1 MB request line",
          [](int port, const std::string& state, Attack& a) { huge_request(port, a, true, state); }, 1);
    }
    SUBCASE("1 MB of headers after a right-state request line") {
      run_scenario(
          "1 MB headers", [](int port, const std::string& state, Attack& a) { huge_request(port, a, false, state); },
          1);
    }
    SUBCASE("three of each at once") {
      run_scenario(
          "6 huge requests",
          [](int port, const std::string& state, Attack& a) {
            for (int i = 0; i < 3; ++i) {
              huge_request(port, a, true, state);
              huge_request(port, a, false, state);
            }
          },
          6);
    }
  }

  TEST_CASE("abuse: invalid UTF-8 and broken percent-escapes in the query get 400 and do not end the wait") {
    std::vector<Probe> list;
    std::vector<int> statuses;
    run_scenario(
        "bad encodings",
        [&](int port, const std::string& state, Attack& a) {
          list = bad_encoding_probes(state);
          probes(port, a, list, &statuses);
        },
        1);
    check_probe_statuses(list, statuses);
  }

  TEST_CASE("abuse: duplicate code/state (and error/iss) parameters get 400 and do not end the wait") {
    std::vector<Probe> list;
    std::vector<int> statuses;
    run_scenario(
        "duplicates",
        [&](int port, const std::string& state, Attack& a) {
          list = duplicate_probes(state);
          probes(port, a, list, &statuses);
        },
        1);
    check_probe_statuses(list, statuses);
  }

  TEST_CASE("abuse: a flood of 300 open connections, beyond the listener's cap of 128") {
    run_scenario(
        "300 junk connections", [](int port, const std::string&, Attack& a) { junk_connections(port, a, 300, 6); },
        300);
  }

  TEST_CASE("abuse: a continuous flood of new connections while the real callback arrives") {
    run_scenario(
        "connection churn", [](int port, const std::string&, Attack& a) { connection_churn(port, a, 4, 100); }, 4);
  }

  TEST_CASE("abuse: everything at once") {
    std::vector<Probe> bad, dup;
    std::vector<int> bad_statuses, dup_statuses;
    run_scenario(
        "everything at once",
        [&](int port, const std::string& state, Attack& a) {
          junk_connections(port, a, 100, 4);
          slowloris(port, a, 5);
          huge_request(port, a, true, state);
          huge_request(port, a, false, state);
          bad = bad_encoding_probes(state);
          dup = duplicate_probes(state);
          probes(port, a, bad, &bad_statuses);
          probes(port, a, dup, &dup_statuses);
        },
        100 + 5 + 2 + 2);
    check_probe_statuses(bad, bad_statuses);
    check_probe_statuses(dup, dup_statuses);
  }
}
