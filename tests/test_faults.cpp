// Fault injection: each TEST_CASE is one way a token endpoint, a proxy, a captive portal or the network can fail,
// played by the mock APS server (examples/mock_aps_server.hpp: injected answers, hung handlers) or by a RawServer
// (transport faults httplib cannot script), and asserts what the library does: the ErrorKind, the HTTP status,
// and how many requests or connections reached the server.
//
// The retry rule verified here (RetryPolicy in aps_auth.hpp):
//  * attempts: at most RetryPolicy::max_attempts sends of one call (1 = never retry);
//  * 429 and 503 are retried for every call (the server says it did not act on the request); Retry-After
//    (delta-seconds) is honoured, capped at max_delay; without it, the backoff below;
//  * 500, 502 and 504, a reset or closed connection and a read timeout are retried only for calls that are safe
//    to repeat (client credentials, introspect, revoke, userinfo, discovery, JWKS); never for a code exchange or
//    a refresh, whose answer may have been lost after the server acted (a refresh token rotates);
//  * connection refused and connect timeout are retried for every call (the request never left);
//  * TLS failures, 3xx, other 4xx, and bad bodies are never retried;
//  * backoff before re-send number n (n = 1, 2, ...): uniform in [0, min(max_delay, initial_backoff * 2^(n-1))].
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/cli.hpp"
#include "support/environment.hpp"
#include "support/files.hpp"
#include "support/library.hpp"
#include "support/mock.hpp"
#include "support/network.hpp"
#include "support/process.hpp"
#include "support/text.hpp"
#include "support/timing.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

// ---- allocation probe --------------------------------------------------------------------------------------
// The largest single operator-new request made by this thread while `tracking` is on: proves a huge answer is
// refused without allocating it. (Replacing the global operator new is allowed in a program; this executable
// is only this file and the doctest main.)
namespace {
thread_local bool g_tracking = false;
thread_local std::size_t g_largest = 0;

void* counted_alloc(std::size_t n) {
  if (g_tracking && n > g_largest)
    g_largest = n;
  return std::malloc(n == 0 ? 1 : n);
}
}  // namespace

void* operator new(std::size_t n) {
  if (void* p = counted_alloc(n))
    return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = counted_alloc(n))
    return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return counted_alloc(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return counted_alloc(n);
}
// GCC (>= 11) cannot see that these new and delete are a pair over malloc/free once it inlines them.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic pop
#endif

namespace {

namespace auth = aps::auth;
using namespace std::chrono_literals;
using support::catch_error, support::require_error, support::contains, support::seconds_since;

// The retries of every Config here: three attempts, short waits.
const auth::RetryPolicy kFastRetries{3, 10ms, 100ms};

const char* const kClient = "fault-client";
const char* const kSecret = "fault-secret-5d1c";
const char* const kCallback = "http://127.0.0.1:8080/api/auth/callback";

// The mock APS server (HTTP, or HTTPS with its CA in a temporary file) and a Config for it with fast retries.
struct Mock : support::Mock {
  explicit Mock(bool tls = false) : support::Mock(options(tls)) {}
  static aps_mock::Options options(bool tls) {
    aps_mock::Options o;
    o.tls = tls;
    o.clients = {{kClient, kSecret, {kCallback}}};
    return o;
  }
  auth::Config config() const {
    auth::Config c = support::Mock::config(kClient, kSecret);
    c.callback_url = kCallback;
    c.scopes = {"data:read"};
    c.connect_timeout = 2s;
    c.read_timeout = 3s;
    c.retry = kFastRetries;
    return c;
  }
  std::string refresh_token() { return server.issue_tokens(kClient, "data:read")["refresh_token"].get<std::string>(); }
  int tokens() const { return server.count("token"); }
  void inject(int status, const std::string& body, int count = 1, const std::string& content_type = "application/json",
              std::vector<std::pair<std::string, std::string>> headers = {}) {
    server.inject(support::fault(support::kTokenPath, status, body, count, content_type, std::move(headers)));
  }
  // A code the mock issued for an authorization request, for a code exchange without a browser.
  support::IssuedCode issue_code() { return support::issue_code(server, kClient, kCallback, "data:read"); }
};

// A Config for a RawServer (or any loopback port) speaking plain HTTP.
auth::Config raw_config(int port) {
  auth::Config c = support::config_for("http://127.0.0.1:" + std::to_string(port), kClient, kSecret);
  c.connect_timeout = 2s;
  c.read_timeout = 2s;
  c.retry = kFastRetries;
  return c;
}

const std::string kToken = R"({"access_token":"at-from-fault","token_type":"Bearer","expires_in":3599})";

// Whether Config has a member of a name that would switch TLS verification off (it must have none).
#define FAULTS_HAS_MEMBER(name)           \
  template <class T, class = void>        \
  struct has_##name : std::false_type {}; \
  template <class T>                      \
  struct has_##name<T, std::void_t<decltype(&T::name)>> : std::true_type {};
FAULTS_HAS_MEMBER(insecure)
FAULTS_HAS_MEMBER(verify)
FAULTS_HAS_MEMBER(verify_tls)
FAULTS_HAS_MEMBER(tls_verify)
FAULTS_HAS_MEMBER(verify_peer)
FAULTS_HAS_MEMBER(ssl_verify)
FAULTS_HAS_MEMBER(skip_tls_verify)
FAULTS_HAS_MEMBER(insecure_skip_verify)
FAULTS_HAS_MEMBER(ca_file)  // the control: this one exists
#undef FAULTS_HAS_MEMBER

const std::string kBusy = R"({"developerMessage":"Quota limit exceeded."})";

}  // namespace

TEST_SUITE("faults") {
  // ---- the retry rule itself ---------------------------------------------------------------------------------

  TEST_CASE("backoff: full jitter in [0, min(max_delay, initial_backoff * 2^(n-1))] before re-send n") {
    auth::RetryPolicy p;
    p.initial_backoff = 100ms;
    p.max_delay = 350ms;
    for (int n = 1; n <= 6; ++n) {
      const std::int64_t cap = std::min<std::int64_t>(350, 100LL << (n - 1));
      std::int64_t lo = cap, hi = 0;
      for (int i = 0; i < 400; ++i) {
        std::int64_t d = auth::detail::backoff(p, n).count();
        lo = std::min(lo, d);
        hi = std::max(hi, d);
      }
      CAPTURE(n);
      CHECK(lo >= 0);
      CHECK(hi <= cap);
      CHECK(hi > cap / 2);  // jitter spans the range (400 draws)
      CHECK(lo < cap / 2);
    }
    p.initial_backoff = 0ms;
    CHECK(auth::detail::backoff(p, 3).count() == 0);
  }

  // ---- 429 -----------------------------------------------------------------------------------------------------

  TEST_CASE("429 with Retry-After: retried after Retry-After, then success") {
    Mock m;
    auto config = m.config();
    config.retry.max_delay = 5s;
    m.inject(429, kBusy, 1, "application/json", {{"Retry-After", "1"}});
    auto t0 = std::chrono::steady_clock::now();
    auth::Token t = auth::client_credentials(config);
    CHECK(t.access_token.size() > 0);
    CHECK(m.tokens() == 2);
    CHECK(seconds_since(t0) >= 0.95);  // waited the second Retry-After asked for
    CHECK(seconds_since(t0) < 2.5);
  }

  TEST_CASE("429 with Retry-After above max_delay: the wait is capped at max_delay") {
    Mock m;
    auto config = m.config();
    config.retry.max_delay = 150ms;
    m.inject(429, kBusy, 2, "application/json", {{"Retry-After", "3600"}});
    auto t0 = std::chrono::steady_clock::now();
    auth::Token t = auth::client_credentials(config);
    CHECK(t.access_token.size() > 0);
    CHECK(m.tokens() == 3);
    CHECK(seconds_since(t0) >= 0.28);  // two capped waits of 150 ms
    CHECK(seconds_since(t0) < 2.0);
  }

  TEST_CASE("429 until the attempts run out: ErrorKind::http, status 429, Retry-After kept") {
    Mock m;
    m.inject(429, kBusy, 5, "application/json", {{"Retry-After", "7"}});
    auto config = m.config();
    config.retry.max_delay = 10ms;
    auto e = require_error([&] { (void)auth::client_credentials(config); });
    CHECK(e.kind() == auth::ErrorKind::http);
    CHECK(e.status() == 429);
    CHECK(e.details().retry_after == 7s);
    CHECK(e.details().developer_message == "Quota limit exceeded.");
    CHECK(contains(e.what(), "rate limited"));
    CHECK(m.tokens() == 3);
  }

  TEST_CASE("429 for a refresh and a code exchange: re-sent (the server did not act on it)") {
    Mock m;
    auto config = m.config();
    m.inject(429, kBusy, 1, "application/json", {{"Retry-After", "0"}});
    auth::Token t = auth::refresh(config, m.refresh_token());
    CHECK(t.refresh_token.size() > 0);
    CHECK(m.server.count("token.refresh_token") == 2);

    support::IssuedCode g = m.issue_code();
    m.inject(429, kBusy, 1, "application/json", {{"Retry-After", "0"}});
    auth::Token x = auth::exchange_code(config, g.request, g.code);
    CHECK(x.access_token.size() > 0);
    CHECK(m.server.count("token.authorization_code") == 2);
  }

  // ---- 5xx -----------------------------------------------------------------------------------------------------

  TEST_CASE("500/502/503/504 for client credentials: retried with backoff, then success") {
    for (int status : {500, 502, 503, 504}) {
      CAPTURE(status);
      Mock m;
      m.inject(status, R"({"developerMessage":"server trouble"})", 2);
      auth::Token t = auth::client_credentials(m.config());
      CHECK(t.access_token.size() > 0);
      CHECK(m.tokens() == 3);
    }
  }

  TEST_CASE("500/502/503/504 for client credentials until the attempts run out: ErrorKind::http with the status") {
    for (int status : {500, 502, 503, 504}) {
      CAPTURE(status);
      Mock m;
      m.inject(status, R"({"developerMessage":"server trouble","errorCode":"X-1"})", 10);
      auto e = require_error([&] { (void)auth::client_credentials(m.config()); });
      CHECK(e.kind() == auth::ErrorKind::http);
      CHECK(e.status() == status);
      CHECK(e.details().error_code == "X-1");
      CHECK(contains(e.what(), "HTTP " + std::to_string(status)));
      CHECK(m.tokens() == 3);
    }
  }

  TEST_CASE("5xx from an HTML outage page: ErrorKind::http naming the non-JSON body") {
    Mock m;
    m.inject(502, "<html><body>Bad Gateway</body></html>", 10, "text/html");
    auto e = require_error([&] { (void)auth::client_credentials(m.config()); });
    CHECK(e.kind() == auth::ErrorKind::http);
    CHECK(e.status() == 502);
    CHECK(contains(e.what(), "non-JSON body (text/html)"));
  }

  TEST_CASE("503 for a refresh: re-sent, then success") {
    Mock m;
    m.inject(503, R"({"developerMessage":"busy"})", 2);
    const std::string rt = m.refresh_token();
    auth::Token t = auth::refresh(m.config(), rt);
    CHECK(t.refresh_token.size() > 0);
    CHECK(t.refresh_token != rt);
    CHECK(m.server.count("token.refresh_token") == 3);
  }

  TEST_CASE("500/502/504 for a refresh or a code exchange: NOT re-sent, exactly one request reached the server") {
    for (int status : {500, 502, 504}) {
      CAPTURE(status);
      Mock m;
      const std::string rt = m.refresh_token();
      m.inject(status, R"({"developerMessage":"server trouble"})", 10);
      auto e = require_error([&] { (void)auth::refresh(m.config(), rt); });
      CHECK(e.kind() == auth::ErrorKind::http);
      CHECK(e.status() == status);
      CHECK(m.tokens() == 1);
      CHECK(m.server.is_valid_refresh_token(rt));  // the fault answered: the token was not used

      support::IssuedCode g = m.issue_code();
      m.server.reset_stats();
      auto x = catch_error([&] { (void)auth::exchange_code(m.config(), g.request, g.code); });
      REQUIRE(x);
      CHECK(x->status() == status);
      CHECK(m.tokens() == 1);
    }
  }

  // ---- the network -----------------------------------------------------------------------------------------

  TEST_CASE("connection refused: retried, then ErrorKind::network naming the port") {
    const int port = support::free_port();
    auto config = raw_config(port);
    auto t0 = std::chrono::steady_clock::now();
    auto e = require_error([&] { (void)auth::client_credentials(config); });
    CHECK(e.kind() == auth::ErrorKind::network);
    CHECK(contains(e.what(), "could not connect"));
    CHECK(contains(e.what(), std::to_string(port)));
    CHECK(seconds_since(t0) < 2.0);
  }

  TEST_CASE("connection refused, then the server comes up: even a refresh is re-sent (it never left)") {
    const int port = support::free_port();
    auto config = raw_config(port);
    config.retry.max_attempts = 8;
    config.retry.initial_backoff = 100ms;
    config.retry.max_delay = 400ms;
    httplib::Server late;
    std::atomic<int> served{0};
    late.Post(support::kTokenPath, [&](const httplib::Request&, httplib::Response& res) {
      ++served;
      res.set_content(R"({"access_token":"late","refresh_token":"rotated","expires_in":3599})", "application/json");
    });
    std::thread starter([&] {
      std::this_thread::sleep_for(150ms);
      late.listen("127.0.0.1", port);
    });
    auto e = catch_error([&] {
      auth::Token t = auth::refresh(config, "refresh-before");
      CHECK(t.refresh_token == "rotated");
    });
    late.stop();
    starter.join();
    CHECK_FALSE(e);
    CHECK(served == 1);
  }

  TEST_CASE("connection reset mid-answer: ErrorKind::network; a refresh is NOT re-sent, client credentials are") {
    for (auto mode : {aps_mock::RawMode::reset, aps_mock::RawMode::partial_then_close}) {
      CAPTURE(static_cast<int>(mode));
      {
        aps_mock::RawServer raw(mode);
        auto e = require_error([&] { (void)auth::refresh(raw_config(raw.port()), "refresh-token-5d1c"); });
        CHECK(e.kind() == auth::ErrorKind::network);
        CHECK(contains(e.what(), "not sent again"));
        CHECK_FALSE(contains(e.what(), "refresh-token-5d1c"));
        raw.stop();
        CHECK(raw.connections() == 1);
      }
      {
        aps_mock::RawServer raw(mode);
        auto t0 = std::chrono::steady_clock::now();
        auto e = require_error([&] { (void)auth::client_credentials(raw_config(raw.port())); });
        CHECK(e.kind() == auth::ErrorKind::network);
        CHECK(seconds_since(t0) < 5.0);
        raw.stop();
        CHECK(raw.connections() == 3);
      }
    }
  }

  TEST_CASE("a server that accepts and never answers: ErrorKind::timeout after Config::read_timeout") {
    aps_mock::RawServer raw(aps_mock::RawMode::never_answer);
    auto config = raw_config(raw.port());
    config.read_timeout = 300ms;
    SUBCASE("a refresh: one connection, then the timeout") {
      auto t0 = std::chrono::steady_clock::now();
      auto e = catch_error([&] { (void)auth::refresh(config, "refresh-token-5d1c"); });
      const double took = seconds_since(t0);
      REQUIRE(e);
      CHECK(e->kind() == auth::ErrorKind::timeout);
      CHECK(contains(e->what(), "no answer within 300 ms"));
      CHECK(took >= 0.28);
      CHECK(took < 2.0);
      raw.stop();
      CHECK(raw.connections() == 1);
    }
    SUBCASE("client credentials: each attempt times out, then the timeout") {
      config.retry.max_attempts = 2;
      auto t0 = std::chrono::steady_clock::now();
      auto e = catch_error([&] { (void)auth::client_credentials(config); });
      const double took = seconds_since(t0);
      REQUIRE(e);
      CHECK(e->kind() == auth::ErrorKind::timeout);
      CHECK(took >= 0.58);
      CHECK(took < 3.0);
      raw.stop();
      CHECK(raw.connections() == 2);
    }
  }

  TEST_CASE("a mock handler that hangs, over HTTPS: ErrorKind::timeout after read_timeout") {
    Mock m(true);
    aps_mock::Fault f;
    f.path = support::kTokenPath;
    f.hang = true;
    m.server.inject(f);
    auto config = m.config();
    config.read_timeout = 300ms;
    auto t0 = std::chrono::steady_clock::now();
    auto e = require_error([&] { (void)auth::refresh(config, m.refresh_token()); });
    CHECK(e.kind() == auth::ErrorKind::timeout);
    CHECK(seconds_since(t0) < 2.0);
    CHECK(m.tokens() == 1);
    m.server.stop();
  }

  TEST_CASE("connect timeout: a host that never completes the handshake: ErrorKind::timeout after connect_timeout") {
    support::FullBacklog blackhole;
    auto config = raw_config(blackhole.port());
    config.connect_timeout = 300ms;
    config.retry.max_attempts = 1;
    auto t0 = std::chrono::steady_clock::now();
    auto e = catch_error([&] { (void)auth::client_credentials(config); });
    const double took = seconds_since(t0);
    REQUIRE(e);
    CHECK(e->kind() == auth::ErrorKind::timeout);
    CHECK(contains(e->what(), "connecting timed out"));
    CHECK(took >= 0.28);
    CHECK(took < 2.0);

    SUBCASE("retried even for a refresh (the request never left)") {
      config.retry.max_attempts = 2;
      t0 = std::chrono::steady_clock::now();
      auto r = require_error([&] { (void)auth::refresh(config, "refresh-token-5d1c"); });
      CHECK(r.kind() == auth::ErrorKind::timeout);
      CHECK(seconds_since(t0) >= 0.58);  // two connect timeouts
    }
  }

  TEST_CASE("a kept-alive HTTPS connection the server closed while idle: the next refresh goes out on a new one") {
    Mock m(true);
    aps_mock::Options o = m.server.options();
    o.expires_in = 1;  // every refreshed access token is stale after a second
    m.server.set_options(o);
    auth::Token start;
    start.access_token = "expired";
    start.expires_in = 3599s;
    start.expires_at = std::chrono::system_clock::now() - 1s;
    start.refresh_token = m.refresh_token();
    auto store = std::make_shared<auth::MemoryTokenStore>();
    store->save(start);
    auth::TokenSourceOptions so;
    so.refresh_lead = 0s;
    auth::TokenSource source(m.config(), store, so);
    const std::string first = source.access_token();   // refresh 1 opens the kept-alive connection
    std::this_thread::sleep_for(1600ms);               // the mock closes idle connections after 1 s
    const std::string second = source.access_token();  // refresh 2: must not use the dead connection
    CHECK(first != second);
    CHECK(m.server.count("token.refresh_token") == 2);
  }

  // ---- bodies ------------------------------------------------------------------------------------------------

  TEST_CASE("200 with an HTML body (captive portal): ErrorKind::bad_response naming proxy and captive portal") {
    Mock m;
    m.inject(200, "<html><body><form>Accept the Wi-Fi terms</form></body></html>", 1, "text/html; charset=utf-8");
    auto e = require_error([&] { (void)auth::client_credentials(m.config()); });
    CHECK(e.kind() == auth::ErrorKind::bad_response);
    CHECK(e.status() == 200);
    CHECK(contains(e.what(), "proxy"));
    CHECK(contains(e.what(), "captive portal"));
    CHECK(contains(e.what(), "text/html"));
    CHECK(m.tokens() == 1);  // a 200 is not retried
  }

  TEST_CASE("truncated JSON: ErrorKind::bad_response") {
    Mock m;
    m.inject(200, R"({"access_token":"abc","expires_in":35)");
    auto e = require_error([&] { (void)auth::client_credentials(m.config()); });
    CHECK(e.kind() == auth::ErrorKind::bad_response);
    CHECK(contains(e.what(), "not a JSON object"));
    CHECK_FALSE(contains(e.what(), "abc"));
  }

  TEST_CASE("a 10 MB body: ErrorKind::bad_response 'more than ... bytes', quickly, without allocating it") {
    for (bool tls : {false, true}) {
      CAPTURE(tls);
      Mock m(tls);
      m.inject(200, R"({"access_token":")" + std::string(10 * 1024 * 1024, 'a') + R"("})");
      const auto config = m.config();
      auto t0 = std::chrono::steady_clock::now();
      g_largest = 0;
      g_tracking = true;
      auto e = catch_error([&] { (void)auth::client_credentials(config); });
      g_tracking = false;
      REQUIRE(e);
      CHECK(e->kind() == auth::ErrorKind::bad_response);
      CHECK(contains(e->what(), "more than " + std::to_string(APS_AUTH_MAX_RESPONSE_BYTES) + " bytes"));
      CHECK(seconds_since(t0) < 5.0);
      CHECK(g_largest < 3u * APS_AUTH_MAX_RESPONSE_BYTES);  // the body stops at the cap (x2 string growth)
      CHECK(m.tokens() == 1);
    }
  }

  TEST_CASE("a 3xx: ErrorKind::http 'redirect, not followed'; the Location is never requested") {
    for (int status : {301, 302, 307, 308}) {
      CAPTURE(status);
      Mock m;
      m.inject(status, "", 1, "", {{"Location", m.server.base_url() + "/elsewhere/token"}});
      auto e = require_error([&] { (void)auth::client_credentials(m.config()); });
      CHECK(e.kind() == auth::ErrorKind::http);
      CHECK(e.status() == status);
      CHECK(contains(e.what(), "redirect, not followed"));
      CHECK(m.tokens() == 1);
      CHECK(m.server.count("other") == 0);
      CHECK(m.server.requests().size() == 1);
    }
  }

  // Decision: the Content-Type of a 2xx answer is not checked. A JSON object is accepted under any label
  // (servers and proxies mislabel answers); what protects the caller is the body check (a JSON object with an
  // access_token), which an HTML page or a truncated body fails.
  TEST_CASE("a wrong Content-Type with a JSON body: accepted when the body is a JSON object") {
    for (const char* type : {"text/plain", "text/html", "application/octet-stream", ""}) {
      CAPTURE(std::string(type));
      Mock m;
      m.inject(200, kToken, 1, type);
      auth::Token t = auth::client_credentials(m.config());
      CHECK(t.access_token == "at-from-fault");
    }
  }

  TEST_CASE("no access_token: ErrorKind::bad_response") {
    Mock m;
    m.inject(200, R"({"token_type":"Bearer","expires_in":3599})");
    auto e = require_error([&] { (void)auth::client_credentials(m.config()); });
    CHECK(e.kind() == auth::ErrorKind::bad_response);
    CHECK(contains(e.what(), "without an access_token"));
  }

  // ---- TLS: test_tls.cpp covers untrusted CAs, name mismatches, ca_file, APS_CA_FILE and
  // SSL_CERT_FILE; here: there is no way, silent or not, to turn verification off.

  TEST_CASE("TLS: verification cannot be turned off (no option, no flag, no environment variable)") {
    // The library: no Config member of that kind, and the header never disables verification.
    static_assert(has_ca_file<auth::Config>::value, "the detector works");
    static_assert(!has_insecure<auth::Config>::value && !has_verify<auth::Config>::value &&
                      !has_verify_tls<auth::Config>::value && !has_tls_verify<auth::Config>::value &&
                      !has_verify_peer<auth::Config>::value && !has_ssl_verify<auth::Config>::value &&
                      !has_skip_tls_verify<auth::Config>::value && !has_insecure_skip_verify<auth::Config>::value,
                  "no Config option turns TLS verification off");
    const std::string header = support::read_file(support::source_dir() + "/aps_auth.hpp").value_or("");
    REQUIRE(header.size() > 10000);
    CHECK(support::count_of(header, "enable_server_certificate_verification(") ==
          support::count_of(header, "enable_server_certificate_verification(true)"));
    CHECK_FALSE(contains(header, "SSL_VERIFY_NONE"));
    CHECK_FALSE(contains(support::lower(header), "insecure"));

    // Environment variables other tools use to weaken TLS change nothing here.
    Mock m(true);
    auth::Config config = m.config();
    config.ca_file.clear();
    support::TempDir dir;
    support::IsolatedTrust trust(dir);
    support::ScopedEnv e1("NODE_TLS_REJECT_UNAUTHORIZED", "0"), e2("PYTHONHTTPSVERIFY", "0"), e3("CURL_CA_BUNDLE", ""),
        e4("APS_INSECURE", "1"), e5("APS_TLS_VERIFY", "0"), e6("APS_AUTH_INSECURE", "1");
    auto e = require_error([&] { (void)auth::client_credentials(config); });
    CHECK(e.kind() == auth::ErrorKind::tls);
    CHECK(m.tokens() == 0);

    // The CLI: no such flag in any help text, and a guessed one is a usage error.
    const std::string cli = support::require_cli();
    support::EnvMap env = support::base_env(dir.path());
    std::vector<std::vector<std::string>> helps = {{cli, "--help"}};
    for (const char* c :
         {"login", "token", "refresh", "access-token", "revoke", "logout", "introspect", "userinfo", "demo"})
      helps.push_back({cli, c, "--help"});
    for (const auto& args : helps) {
      support::RunResult r = support::run(args, env, 20s);
      INFO(r.describe());
      CHECK(r.exit_code == 0);
      CHECK(contains(r.out, "usage"));
      for (const char* word : {"insecure", "no-verify", "noverify", "skip-verify", "verify=false", "--no-check"})
        CHECK_FALSE(contains(support::lower(r.out + r.err), word));
    }
    for (const char* flag : {"--insecure", "--no-verify", "-k", "--skip-tls-verify"}) {
      support::RunResult r = support::run({cli, "token", flag}, env, 20s);
      INFO(r.describe());
      CHECK(r.exit_code == 2);
    }
    env["APS_CLIENT_ID"] = kClient;
    env["APS_CLIENT_SECRET"] = kSecret;
    env["SSL_CERT_FILE"] = trust.system_file();
    env["SSL_CERT_DIR"] = trust.system_dir();
    env["NODE_TLS_REJECT_UNAUTHORIZED"] = "0";
    env["APS_INSECURE"] = "1";
    support::RunResult r = support::run({cli, "token", "--base-url", m.server.base_url()}, env, 20s);
    INFO(r.describe());
    CHECK(r.exit_code == 1);
    CHECK(contains(r.err, "[aps_auth.tls]"));
    CHECK(m.tokens() == 0);
  }

  TEST_CASE("expires_in negative, huge, a numeric string, a non-numeric string") {
    Mock m;
    auto with = [](const std::string& v) { return R"({"access_token":"a","expires_in":)" + v + "}"; };
    SUBCASE("negative: bad_response") {
      for (const char* v : {"-1", "-3599", "-0.5e3"}) {
        CAPTURE(std::string(v));
        m.inject(200, with(v));
        auto e = require_error([&] { (void)auth::client_credentials(m.config()); });
        CHECK(e.kind() == auth::ErrorKind::bad_response);
        CHECK(contains(e.what(), "negative expires_in"));
      }
    }
    SUBCASE("huge: capped at 366 days") {
      for (const char* v : {"99999999999", "18446744073709551615", "1e300"}) {
        CAPTURE(std::string(v));
        m.inject(200, with(v));
        auto before = std::chrono::system_clock::now();
        auth::Token t = auth::client_credentials(m.config());
        CHECK(t.expires_in == std::chrono::seconds(366LL * 24 * 3600));
        CHECK(t.expires_at >= before + std::chrono::hours(366 * 24) - 5s);
        CHECK(t.expires_at <= std::chrono::system_clock::now() + std::chrono::hours(366 * 24));
      }
    }
    SUBCASE("a numeric string: accepted") {
      m.inject(200, with("\"3599\""));
      auth::Token t = auth::client_credentials(m.config());
      CHECK(t.expires_in == 3599s);
    }
    SUBCASE("a non-numeric string: bad_response") {
      for (const char* v : {"\"soon\"", "\"-5\"", "\"\"", "\"3599s\"", "true", "null", "{}"}) {
        CAPTURE(std::string(v));
        m.inject(200, with(v));
        auto e = require_error([&] { (void)auth::client_credentials(m.config()); });
        CHECK(e.kind() == auth::ErrorKind::bad_response);
        CHECK(contains(e.what(), "expires_in"));
      }
    }
  }
}
