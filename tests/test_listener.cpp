// Tests of the loopback listener over real sockets, one property at a time: it binds loopback only and a port
// in use is an error; the port and path come from the callback URL; only the exact callback with the right state
// ends the wait; state and PKCE are strong; the deadline is overall and cancellable; the pages it serves are safe.
// wait() runs on its own thread (std::async); the test thread plays the browser (or a hostile local process)
// with a raw HTTP client, so the bytes on the wire are exactly what the test says.
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/environment.hpp"
#include "support/library.hpp"
#include "support/network.hpp"
#include "support/platform.hpp"
#include "support/process.hpp"
#include "support/text.hpp"
#include "support/timing.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace auth = aps::auth;
namespace platform = support::platform;
namespace raw_http = support::raw_http;
using namespace std::chrono_literals;
using support::catch_error, support::require_error, support::contains, support::Socket;

namespace {

const char* const kPath = "/api/auth/callback";

// One sign-in in progress: a bound listener, its authorization request, and wait() running on a thread.
struct Flow {
  auth::Config config;
  auth::LoopbackListener listener;
  auth::AuthorizationRequest request;
  std::future<std::string> result;
  std::string host;  // where the test's "browser" connects

  explicit Flow(const std::string& callback_url = std::string("http://127.0.0.1:0") + kPath,
                const std::string& connect_host = "127.0.0.1")
      : listener(callback_url), host(connect_host) {
    config.client_id = "test-client";
    request = auth::authorization_request(config, {}, listener.redirect_uri());
  }
  ~Flow() {
    if (result.valid() && result.wait_for(0s) != std::future_status::ready)
      listener.cancel();
    if (result.valid())
      result.wait();
  }
  Flow(const Flow&) = delete;
  Flow& operator=(const Flow&) = delete;

  void start(std::chrono::milliseconds timeout = 20s) {
    result = std::async(std::launch::async, [this, timeout] { return listener.wait(request, timeout); });
  }
  // True while wait() has not returned or thrown.
  bool still_waiting(std::chrono::milliseconds grace = 150ms) {
    return result.wait_for(grace) == std::future_status::timeout;
  }
  // The Error wait() ended with (nullopt when it returned a code).
  std::optional<auth::Error> error() {
    return catch_error([&] { (void)result.get(); });
  }

  raw_http::Response get(const std::string& target) { return raw_http::request(host, listener.port(), target); }
  raw_http::Response callback(const std::string& query) { return get(std::string(kPath) + "?" + query); }
  std::string good_query(const std::string& code = "the-code-123") const {
    return "code=" + auth::detail::url_encode(code) + "&state=" + auth::detail::url_encode(request.state);
  }
};

bool is_html_page(const raw_http::Response& r) {
  return r.header("content-type").rfind("text/html", 0) == 0 && contains(r.body, "<!DOCTYPE html") &&
         contains(r.body, "</html>");
}

// Cache-Control: no-store, HTML, and nothing fetched from elsewhere (no external scripts, styles, images).
// With echoed_text, the page shows text from the request (escaped), so only real tags are looked for.
void check_safe_page(const raw_http::Response& r, bool echoed_text = false) {
  CHECK(is_html_page(r));
  CHECK(contains(r.header("cache-control"), "no-store"));
  CHECK(r.header("content-length") == std::to_string(r.body.size()));
  CHECK_FALSE(contains(r.body, "<script"));
  CHECK_FALSE(contains(r.body, "<img"));
  CHECK_FALSE(contains(r.body, "<link"));
  CHECK_FALSE(contains(r.body, "<iframe"));
  if (echoed_text)
    return;
  CHECK_FALSE(contains(r.body, "http:"));
  CHECK_FALSE(contains(r.body, "https:"));
  CHECK_FALSE(contains(r.body, "//"));  // no protocol-relative URL either
  CHECK_FALSE(contains(r.body, "src="));
  CHECK_FALSE(contains(r.body, "href="));
  CHECK_FALSE(contains(r.body, "@import"));
  CHECK_FALSE(contains(r.body, "url("));
}

// What binding host:port again with every port-sharing option gives: "in use", or the system's error text.
std::string bind_again(const std::string& host, int port) {
  const int err = support::try_bind_shared(host, port);
  if (err == 0)
    return "bound";
  return platform::is_address_in_use(err) ? "in use" : platform::socket_error_text(err);
}

std::string text(const std::multiset<std::string>& s) {
  std::string out;
  for (const auto& x : s)
    out += (out.empty() ? "" : ",") + x;
  return out;
}

}  // namespace

// ============================================================================================================
TEST_SUITE("listener") {
  TEST_CASE("binds loopback only (127.0.0.1, [::1], both for localhost), never a wildcard") {
    struct Case {
      const char* callback;
      std::vector<std::string> addresses;  // as bound_addresses() prints them, without the port
      std::multiset<std::string> kernel;   // as the kernel's table of listening sockets has them
    };
    const Case cases[] = {
        {"http://localhost:0/api/auth/callback", {"127.0.0.1", "[::1]"}, {"127.0.0.1", "::1"}},
        {"http://127.0.0.1:0/api/auth/callback", {"127.0.0.1"}, {"127.0.0.1"}},
        {"http://[::1]:0/api/auth/callback", {"[::1]"}, {"::1"}},
    };
    for (const Case& c : cases) {
      CAPTURE(c.callback);
      auth::LoopbackListener listener(c.callback);
      const int port = listener.port();
      REQUIRE(port > 0);

      // What the library reports: exactly these addresses, all on the same port.
      std::vector<std::string> want;
      for (const auto& a : c.addresses)
        want.push_back(a + ":" + std::to_string(port));
      CHECK(listener.bound_addresses() == want);

      // What the kernel says: the listening sockets on this port are these loopback addresses, nothing else
      // (no 0.0.0.0 / :: wildcard).
      if (auto kernel = platform::listening_addresses(port))
        CHECK(text(*kernel) == text(c.kernel));
      else
        MESSAGE("skipped: the kernel's table of listening sockets (Linux, Windows) is not readable on this OS");

      // The sockets themselves: getsockname gives loopback; SO_REUSEPORT is never set. (SO_REUSEADDR is set on
      // POSIX, where it cannot share a listening port; the bind checks below prove that.)
      if (auto own = platform::own_listening_sockets(port)) {
        CHECK(own->size() == c.addresses.size());
        for (const auto& s : *own) {
          CAPTURE(s.address);
          CHECK((s.address == "127.0.0.1" || s.address == "::1"));
          CHECK(s.reuseport == 0);
        }
      } else {
        MESSAGE("skipped: this process's own sockets and their SO_REUSEPORT are readable on Linux only");
      }

      // Another socket cannot share the port, even with SO_REUSEADDR + SO_REUSEPORT: the listener did not set
      // SO_REUSEPORT, so no other process can bind next to it and receive the code.
      for (const auto& a : c.addresses) {
        CAPTURE(a);
        CHECK(bind_again(a, port) == "in use");
      }
      // Nor can anyone shadow it with a wildcard bind on the same port.
      if (c.addresses.front() == "127.0.0.1")
        CHECK(bind_again("0.0.0.0", port) == "in use");
      if (c.addresses.back() == "[::1]")
        CHECK(bind_again("::", port) == "in use");

      // The port answers on loopback only: on this machine's other addresses nothing accepts the connection
      // (refused; or, behind a dropping firewall, timed out).
      for (const auto& other : platform::non_loopback_addresses()) {
        int err = 0;
        Socket s = support::connect_to(other, port, &err, 1000);
        const std::string result = platform::socket_error_text(err);
        CAPTURE(other);
        CAPTURE(result);
        CHECK_FALSE(s.valid());
      }
    }
  }

  TEST_CASE("localhost answers on both 127.0.0.1 and [::1]") {
    for (const char* via : {"127.0.0.1", "::1"}) {
      CAPTURE(via);
      Flow f("http://localhost:0/api/auth/callback", via);
      CHECK(f.listener.redirect_uri() == "http://localhost:" + std::to_string(f.listener.port()) + kPath);
      f.start();
      auto r = f.callback(f.good_query("code-via-" + std::string(via)));
      CHECK(r.status == 200);
      CHECK(f.result.get() == "code-via-" + std::string(via));
    }
  }

  TEST_CASE("[::1] callback works over IPv6") {
    Flow f("http://[::1]:0/api/auth/callback", "::1");
    CHECK(f.listener.redirect_uri() == "http://[::1]:" + std::to_string(f.listener.port()) + kPath);
    f.start();
    CHECK(f.callback(f.good_query()).status == 200);
    CHECK(f.result.get() == "the-code-123");
  }

  TEST_CASE("a callback host other than loopback is a usage error") {
    for (const char* bad : {"http://example.com:8080/cb", "http://0.0.0.0:0/cb", "http://[::]:0/cb",
                            "http://192.168.1.10:0/cb", "http://10.0.0.1/cb", "http://localhost.example.com:0/cb",
                            "https://localhost:0/cb", "localhost:0/cb", "not a url", ""}) {
      CAPTURE(bad);
      auto e = require_error([&] { auth::LoopbackListener l(bad); });
      CHECK(e.kind() == auth::ErrorKind::usage);
      CHECK(contains(e.what(), "never binds other interfaces"));
    }
  }

  // ----------------------------------------------------------------------------------------------------------
  TEST_CASE("a port in use is an io error from the constructor, naming the port") {
    SUBCASE("127.0.0.1") {
      Socket taken = support::listen_on("127.0.0.1");
      const std::string port = std::to_string(taken.local_port());
      auto e = require_error([&] { auth::LoopbackListener l("http://127.0.0.1:" + port + "/api/auth/callback"); });
      CHECK(e.kind() == auth::ErrorKind::io);
      CHECK(contains(e.what(), "127.0.0.1:" + port));
      CHECK(contains(e.what(), "port " + port + " is in use"));
    }
    SUBCASE("localhost with 127.0.0.1 taken") {
      Socket taken = support::listen_on("127.0.0.1");
      const std::string port = std::to_string(taken.local_port());
      auto e = require_error([&] { auth::LoopbackListener l("http://localhost:" + port + "/api/auth/callback"); });
      CHECK(e.kind() == auth::ErrorKind::io);
      CHECK(contains(e.what(), port));
    }
    SUBCASE("localhost with only [::1] taken") {
      Socket taken = support::listen_on("::1");
      const int p = taken.local_port();
      const std::string port = std::to_string(p);
      auto e = require_error([&] { auth::LoopbackListener l("http://localhost:" + port + "/api/auth/callback"); });
      CHECK(e.kind() == auth::ErrorKind::io);
      CHECK(contains(e.what(), "[::1]:" + port));
      // and the half that did bind (127.0.0.1) was released again
      if (auto kernel = platform::listening_addresses(p))
        CHECK(text(*kernel) == "::1");
      else
        MESSAGE("skipped: the kernel's table of listening sockets (Linux, Windows) is not readable on this OS");
    }
    SUBCASE("a second listener on the same callback URL") {
      auth::LoopbackListener first("http://localhost:0/api/auth/callback");
      const std::string port = std::to_string(first.port());
      auto e = require_error([&] { auth::LoopbackListener l("http://localhost:" + port + "/api/auth/callback"); });
      CHECK(e.kind() == auth::ErrorKind::io);
      CHECK(contains(e.what(), port));
    }
  }

  TEST_CASE("another process binding the callback port with SO_REUSEADDR (and SO_REUSEPORT) cannot take it") {
    // On Windows SO_REUSEADDR lets a second socket bind a port in use, and take its connections, unless the first
    // one set SO_EXCLUSIVEADDRUSE; elsewhere SO_REUSEPORT would. The thief is another program, as an attacker's
    // would be: tests/helper_program.cpp's bind-shared.
    const std::string helper = support::env_or("APS_AUTH_TEST_HELPER");
    REQUIRE_MESSAGE(!helper.empty(), "APS_AUTH_TEST_HELPER is not set: run this test through ctest or meson test");
    auth::LoopbackListener listener("http://localhost:0/api/auth/callback");
    const std::string port = std::to_string(listener.port());
    for (const char* host : {"127.0.0.1", "::1", "0.0.0.0", "::"}) {
      CAPTURE(host);
      support::RunResult r = support::run({helper, "bind-shared", host, port}, platform::current_environment(), 30s);
      INFO(r.describe());
      CHECK(r.exit_code == 3);
      CHECK(contains(r.out, "refused"));
    }
    // The listener still gets the callback.
    auth::Config config;
    config.client_id = "test-client";
    auto request = auth::authorization_request(config, {}, listener.redirect_uri());
    auto result = std::async(std::launch::async, [&] { return listener.wait(request, 20s); });
    auto r = raw_http::request("127.0.0.1", listener.port(),
                               std::string(kPath) + "?code=the-code&state=" + auth::detail::url_encode(request.state));
    CHECK(r.status == 200);
    CHECK(result.get() == "the-code");
  }

  TEST_CASE("login() raises the port-in-use error before any browser opens") {
    Socket taken = support::listen_on("127.0.0.1");
    const std::string port = std::to_string(taken.local_port());
    auth::Config config;
    config.client_id = "test-client";
    config.callback_url = "http://127.0.0.1:" + port + "/api/auth/callback";
    config.endpoints = auth::Endpoints::from_base_url("http://127.0.0.1:9");  // never contacted
    std::atomic<int> browsers{0}, shown{0}, listening{0};
    auth::LoginOptions options;
    options.timeout = 2s;
    options.browser = [&](const std::string&) {
      ++browsers;
      return true;
    };
    options.show_url = [&](const std::string&) { ++shown; };
    options.on_listening = [&](auth::LoopbackListener&) { ++listening; };
    auto e = require_error([&] { (void)auth::login(config, options); });
    CHECK(e.kind() == auth::ErrorKind::io);
    CHECK(contains(e.what(), port));
    CHECK(browsers == 0);
    CHECK(shown == 0);
    CHECK(listening == 0);
  }

  // ----------------------------------------------------------------------------------------------------------
  TEST_CASE("the port and the path come from the callback URL") {
    int port = 0;
    {
      auth::LoopbackListener probe("http://localhost:0/x");  // a port free on both loopback addresses
      port = probe.port();
    }
    const std::string url = "http://localhost:" + std::to_string(port) + "/api/auth/callback";
    Flow f(url);
    CHECK(f.listener.port() == port);
    CHECK(f.listener.redirect_uri() == url);  // registered exactly so at APS
    CHECK(f.request.redirect_uri == url);
    CHECK(support::param(support::query_of(f.request.url), "redirect_uri") == url);
    f.start();
    // Only the exact path is the callback.
    for (const char* other : {"/api/auth/callback/", "/api/auth", "/API/auth/callback", "/api/auth/callbackx", "/",
                              "/api/auth/callback%2F"}) {
      CAPTURE(other);
      CHECK(f.get(std::string(other) + "?" + f.good_query()).status == 404);
    }
    CHECK(f.still_waiting());
    CHECK(f.callback(f.good_query()).status == 200);
    CHECK(f.result.get() == "the-code-123");
  }

  TEST_CASE("a second sign-in on the same fixed port right after the first one binds (TIME_WAIT)") {
    // The first sign-in's connections leave the port in TIME_WAIT; the next login must still bind it.
    int port = 0;
    {
      Flow first;
      port = first.listener.port();
      first.start();
      for (int i = 0; i < 3; ++i)
        CHECK(first.get("/favicon.ico").status == 404);  // closed by the listener
      CHECK(first.callback(first.good_query()).status == 200);
      CHECK(first.result.get() == "the-code-123");
    }
    Flow second("http://127.0.0.1:" + std::to_string(port) + kPath);
    CHECK(second.listener.port() == port);
    second.start();
    CHECK(second.callback(second.good_query("code-2")).status == 200);
    CHECK(second.result.get() == "code-2");
  }

  TEST_CASE("port 0 picks a free port, reported in redirect_uri()") {
    auth::LoopbackListener a("http://127.0.0.1:0/cb");
    auth::LoopbackListener b("http://127.0.0.1:0/cb");
    CHECK(a.port() > 0);
    CHECK(b.port() > 0);
    CHECK(a.port() != b.port());
    CHECK(a.redirect_uri() == "http://127.0.0.1:" + std::to_string(a.port()) + "/cb");
  }

  TEST_CASE("a callback URL with a query keeps it in redirect_uri()") {
    Flow f("http://127.0.0.1:0/api/auth/callback?tenant=a%20b");
    CHECK(f.listener.redirect_uri() ==
          "http://127.0.0.1:" + std::to_string(f.listener.port()) + "/api/auth/callback?tenant=a%20b");
    f.start();
    CHECK(f.callback("tenant=a%20b&" + f.good_query()).status == 200);
    CHECK(f.result.get() == "the-code-123");
  }

  // ----------------------------------------------------------------------------------------------------------
  TEST_CASE("favicon and other paths get 404 and do not end the wait") {
    Flow f;
    f.start();
    for (const char* path : {"/favicon.ico", "/", "/robots.txt", "/api/auth/callback.html?x"}) {
      CAPTURE(path);
      auto r = f.get(path);
      CHECK(r.status == 404);
      check_safe_page(r);
    }
    // the right callback with a query on another path is not accepted either
    CHECK(f.get("/other?" + f.good_query()).status == 404);
    CHECK(f.still_waiting());
    CHECK(f.callback(f.good_query()).status == 200);
    CHECK(f.result.get() == "the-code-123");
  }

  TEST_CASE("a wrong state gets an explanatory page and the wait goes on; then the right one succeeds") {
    Flow f;
    f.start();
    auto r = f.callback("code=attacker-code&state=" + auth::detail::url_encode(auth::random_urlsafe(16)));
    CHECK(r.status == 400);
    check_safe_page(r);
    CHECK(contains(r.body, "does not belong to the sign-in in progress"));
    CHECK_FALSE(contains(r.body, "attacker-code"));
    CHECK(f.still_waiting());
    auto ok = f.callback(f.good_query("real-code"));
    CHECK(ok.status == 200);
    CHECK(f.result.get() == "real-code");
  }

  TEST_CASE("callbacks without the right state never end the wait") {
    Flow f;
    f.start();
    const std::string s = f.request.state;
    struct Bad {
      const char* what;
      std::string query;
    };
    const Bad bad[] = {
        {"missing state", "code=c1"},
        {"empty state", "code=c1&state="},
        {"error=access_denied without state", "error=access_denied&error_description=User%20denied"},
        {"error=access_denied with a wrong state", "error=access_denied&state=" + auth::random_urlsafe(16)},
        {"error=server_error without state", "error=server_error"},
        {"state with one character changed",
         "code=c1&state=" + s.substr(0, s.size() - 1) + (s.back() == 'A' ? "B" : "A")},
        {"a prefix of the state", "code=c1&state=" + s.substr(0, s.size() - 1)},
        {"the state plus one character", "code=c1&state=" + s + "A"},
        {"the state encoded twice (decoded only once)",
         "code=c1&state=" + auth::detail::url_encode(auth::detail::url_encode(s + "%"))},
        {"the state in another parameter", "code=c1&State=" + s},
    };
    for (const Bad& b : bad) {
      CAPTURE(b.what);
      auto r = f.callback(b.query);
      CHECK(r.status == 400);
      CHECK(is_html_page(r));
      CHECK(contains(r.body, "does not belong to the sign-in in progress"));
      CHECK(f.still_waiting(50ms));
    }
    // A wrong state is refused before anything else is looked at: not even a bad iss ends the wait.
    auto r = f.callback("code=c1&iss=https%3A%2F%2Fevil.example&state=wrong");
    CHECK(r.status == 400);
    CHECK(f.still_waiting());
    CHECK(f.callback(f.good_query("final")).status == 200);
    CHECK(f.result.get() == "final");
  }

  TEST_CASE("duplicated code or state parameters get 400 and the wait goes on") {
    Flow f;
    f.start();
    const std::string st = "state=" + f.request.state;
    for (const std::string& q : {"code=a&code=b&" + st, st + "&" + st + "&code=a", "code=a&" + st + "&state=other",
                                 "error=x&error=y&" + st, st + "&code=a&%zz=1", st + "&code=%G1"}) {
      CAPTURE(q);
      auto r = f.callback(q);
      CHECK(r.status == 400);
      check_safe_page(r);
      CHECK(f.still_waiting(50ms));
    }
    CHECK(f.callback(f.good_query()).status == 200);
    CHECK(f.result.get() == "the-code-123");
  }

  TEST_CASE("malformed requests and other methods do not end the wait") {
    Flow f;
    f.start();
    const int port = f.listener.port();
    CHECK(
        raw_http::request("127.0.0.1", port, std::string(kPath) + "?" + f.good_query("posted"), "POST", "x=1").status ==
        405);
    CHECK(raw_http::exchange("127.0.0.1", port, "GARBAGE\r\n\r\n").status == 400);
    CHECK(raw_http::exchange("127.0.0.1", port, "\r\n\r\n").status == 400);
    // a request head larger than the limit
    auto big = raw_http::exchange(
        "127.0.0.1", port, "GET " + std::string(kPath) + "?" + std::string(APS_AUTH_MAX_CALLBACK_BYTES + 100, 'a'));
    CHECK(big.status == 431);
    // a client that connects and closes at once
    { Socket s = support::connect_to("127.0.0.1", port); }
    CHECK(f.still_waiting());
    CHECK(f.callback(f.good_query()).status == 200);
    CHECK(f.result.get() == "the-code-123");
  }

  TEST_CASE("error=access_denied with the right state ends the flow with ErrorKind::access_denied") {
    Flow f;
    f.start();
    auto r = f.callback("error=access_denied&error_description=The%20user%20denied%20access&state=" + f.request.state);
    CHECK(r.status == 200);
    check_safe_page(r);
    CHECK(contains(r.body, "Access was not granted"));
    CHECK(contains(r.body, "The user denied access"));
    auto e = f.error();
    REQUIRE(e);
    CHECK(e->kind() == auth::ErrorKind::access_denied);
    CHECK(e->details().error == "access_denied");
    CHECK(e->details().error_description == "The user denied access");
    CHECK(contains(e->what(), "access_denied"));
  }

  TEST_CASE("another error= with the right state ends the flow with ErrorKind::oauth") {
    Flow f;
    f.start();
    auto r = f.callback("state=" + f.request.state + "&error=invalid_scope&error_description=bad%2Bscope%20x");
    CHECK(r.status == 200);
    check_safe_page(r);
    CHECK(contains(r.body, "invalid_scope"));
    auto e = f.error();
    REQUIRE(e);
    CHECK(e->kind() == auth::ErrorKind::oauth);
    CHECK(e->details().error == "invalid_scope");
    CHECK(e->details().error_description == "bad+scope x");  // decoded exactly once
  }

  TEST_CASE("the right state without a code ends the flow with ErrorKind::bad_response") {
    Flow f;
    f.start();
    CHECK(f.callback("state=" + f.request.state).status == 400);
    auto e = f.error();
    REQUIRE(e);
    CHECK(e->kind() == auth::ErrorKind::bad_response);
  }

  TEST_CASE("RFC 9207 iss is checked after the state (mix-up protection)") {
    SUBCASE("a wrong iss with the right state is issuer_mismatch") {
      Flow f;
      f.start();
      f.callback(f.good_query() + "&iss=https%3A%2F%2Fevil.example");
      auto e = f.error();
      REQUIRE(e);
      CHECK(e->kind() == auth::ErrorKind::issuer_mismatch);
    }
    SUBCASE("the expected iss is accepted") {
      Flow f;
      f.start();
      CHECK(f.callback(f.good_query() + "&iss=" + auth::detail::url_encode(f.request.issuer)).status == 200);
      CHECK(f.result.get() == "the-code-123");
    }
    SUBCASE("a missing iss when the server promised one is issuer_mismatch") {
      Flow f;
      f.request.require_iss = true;
      f.start();
      f.callback(f.good_query());
      auto e = f.error();
      REQUIRE(e);
      CHECK(e->kind() == auth::ErrorKind::issuer_mismatch);
    }
  }

  // ----------------------------------------------------------------------------------------------------------
  TEST_CASE("state of 128 bits and a 32-octet PKCE verifier, base64url; the state is decoded once") {
    Flow f;
    CHECK(f.request.state.size() == 22);
    CHECK(f.request.code_verifier.size() == 43);
    CHECK(support::only_base64url_chars(f.request.state));
    CHECK(support::only_base64url_chars(f.request.code_verifier));
    CHECK(auth::detail::base64_decode(f.request.state)->size() == 16);
    CHECK(auth::detail::base64_decode(f.request.code_verifier)->size() == 32);
    f.start();
    // A browser may percent-encode every character: decoded once, it is still the state.
    std::string every_char_encoded;
    for (char c : f.request.state) {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
      every_char_encoded += buf;
    }
    CHECK(f.callback("code=c%2Bd&state=" + every_char_encoded).status == 200);
    CHECK(f.result.get() == "c+d");  // the code decoded exactly once too
  }

  TEST_CASE("PKCE is S256 (RFC 7636 Appendix B vector) and the challenge matches the verifier") {
    CHECK(auth::pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") ==
          "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    Flow f;
    auto q = support::query_of(f.request.url);
    CHECK(support::param(q, "code_challenge_method") == "S256");
    CHECK(support::param(q, "code_challenge") == auth::pkce_challenge(f.request.code_verifier));
  }

  // ----------------------------------------------------------------------------------------------------------
  TEST_CASE("the deadline fires with ErrorKind::timeout naming the redirect URI mismatch") {
    Flow f;
    auto t0 = std::chrono::steady_clock::now();
    f.start(400ms);
    auto e = f.error();
    double elapsed = support::seconds_since(t0);
    REQUIRE(e);
    CHECK(e->kind() == auth::ErrorKind::timeout);
    CHECK(contains(e->what(), "does not match"));
    CHECK(contains(e->what(), "Invalid redirect_uri"));
    CHECK(contains(e->what(), f.listener.redirect_uri()));
    CHECK(elapsed >= 0.39);
    CHECK(elapsed < 3.0);
  }

  TEST_CASE("the deadline is overall: a stream of wrong requests does not extend it") {
    Flow f;
    const int port = f.listener.port();
    std::atomic<bool> stop{false};
    std::thread spam([&] {  // a local process probing the port all the time
      while (!stop) {
        (void)raw_http::request("127.0.0.1", port, "/favicon.ico", "GET", "", 300);
        (void)raw_http::request("127.0.0.1", port, std::string(kPath) + "?code=x&state=wrong", "GET", "", 300);
        std::this_thread::sleep_for(10ms);
      }
    });
    auto t0 = std::chrono::steady_clock::now();
    f.start(800ms);
    auto e = f.error();
    double elapsed = support::seconds_since(t0);
    stop = true;
    spam.join();
    REQUIRE(e);
    CHECK(e->kind() == auth::ErrorKind::timeout);
    CHECK(elapsed >= 0.79);
    CHECK(elapsed < 3.0);
  }

  TEST_CASE("cancel() from another thread ends the wait with ErrorKind::cancelled") {
    Flow f;
    auto t0 = std::chrono::steady_clock::now();
    f.start(60s);
    CHECK(f.still_waiting(100ms));
    std::thread([&] { f.listener.cancel(); }).join();
    auto e = f.error();
    REQUIRE(e);
    CHECK(e->kind() == auth::ErrorKind::cancelled);
    CHECK(support::seconds_since(t0) < 3.0);
  }

  TEST_CASE("cancel() through LoginOptions::on_listening ends login() with ErrorKind::cancelled") {
    auth::Config config;
    config.client_id = "test-client";
    config.callback_url = "http://127.0.0.1:0/api/auth/callback";
    config.endpoints = auth::Endpoints::from_base_url("http://127.0.0.1:9");  // never contacted
    auth::LoginOptions options;
    options.timeout = 60s;
    std::thread canceller;
    options.on_listening = [&](auth::LoopbackListener& l) {
      canceller = std::thread([&l] {
        std::this_thread::sleep_for(100ms);
        l.cancel();
      });
    };
    std::string shown;
    options.browser = [](const std::string&) { return false; };  // no browser: the URL is shown instead
    options.show_url = [&](const std::string& url) { shown = url; };
    auto e = catch_error([&] { (void)auth::login(config, options); });
    canceller.join();
    REQUIRE(e);
    CHECK(e->kind() == auth::ErrorKind::cancelled);
    CHECK(shown.rfind("http://127.0.0.1:9/authentication/v2/authorize?", 0) == 0);
  }

  TEST_CASE("a client that connects and sends nothing does not block the real callback") {
    Flow f;
    f.start();
    const int port = f.listener.port();
    // Silent connections, and one that sends half a request head and stalls (slowloris).
    std::vector<Socket> silent;
    for (int i = 0; i < 5; ++i)
      silent.push_back(support::connect_to("127.0.0.1", port));
    Socket partial = support::connect_to("127.0.0.1", port);
    REQUIRE(partial.send_all("GET " + std::string(kPath) + "?" + f.good_query("slow") + " HTTP/1.1\r\nHost: x"));
    std::this_thread::sleep_for(100ms);
    auto t0 = std::chrono::steady_clock::now();
    auto r = f.callback(f.good_query("real"));
    CHECK(r.status == 200);
    CHECK(support::seconds_since(t0) < 3.0);  // far below the 10 s after which a silent client is dropped
    CHECK(f.result.get() == "real");
    for (auto& s : silent)
      CHECK(s.valid());
  }

  TEST_CASE("a client connected before wait() started does not block it either") {
    Flow f;
    Socket early = support::connect_to("127.0.0.1", f.listener.port());
    REQUIRE(early.valid());
    f.start();
    CHECK(f.callback(f.good_query()).status == 200);
    CHECK(f.result.get() == "the-code-123");
  }

  // ----------------------------------------------------------------------------------------------------------
  TEST_CASE("the success page is safe HTML with no-store and says the window can be closed") {
    Flow f;
    f.start();
    auto r = f.callback(f.good_query("secret-code-xyz"));
    CHECK(r.status == 200);
    check_safe_page(r);
    CHECK(contains(r.body, "signed in"));
    CHECK(contains(r.body, "close this window"));
    CHECK_FALSE(contains(r.body, "secret-code-xyz"));  // the code is never echoed
    CHECK_FALSE(contains(r.body, f.request.state));
    CHECK(contains(r.header("content-security-policy"), "default-src 'none'"));
    CHECK(r.header("x-content-type-options") == "nosniff");
    CHECK(r.header("referrer-policy") == "no-referrer");
    CHECK(f.result.get() == "secret-code-xyz");
  }

  TEST_CASE("error text from the callback is HTML-escaped in the failure page") {
    Flow f;
    f.start();
    const std::string evil = "<script>alert('x')</script><img src=\"http://evil.example/a.png\">";
    auto r = f.callback("state=" + f.request.state + "&error=" + auth::detail::url_encode("<b>bad</b>") +
                        "&error_description=" + auth::detail::url_encode(evil));
    CHECK(r.status == 200);
    check_safe_page(r, true);  // no <script> or <img> tag survives escaping
    CHECK(contains(r.body, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    CHECK(contains(r.body, "&lt;b&gt;bad&lt;/b&gt;"));
    CHECK_FALSE(contains(r.body, "<b>"));
    CHECK(contains(r.body, "Sign-in failed"));
    CHECK(contains(r.body, "try again"));
    auto e = f.error();
    REQUIRE(e);
    CHECK(e->kind() == auth::ErrorKind::oauth);
    CHECK(e->details().error_description == evil);
  }

  TEST_CASE("every page the listener serves has the same safe headers") {
    Flow f;
    f.start();
    for (const std::string& target : {std::string("/favicon.ico"), std::string(kPath) + "?code=a&state=wrong",
                                      std::string(kPath) + "?code=a&code=b"}) {
      CAPTURE(target);
      auto r = f.get(target);
      check_safe_page(r);
      CHECK(r.header("connection") == "close");
    }
    CHECK(f.callback(f.good_query()).status == 200);
    CHECK(f.result.get() == "the-code-123");
  }
}
