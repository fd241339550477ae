// RFC 9207: the `iss` parameter of the authorization response. The mock APS server, with
// Options::iss_in_callback, adds iss=<its issuer> to every redirect back to the app and advertises
// authorization_response_iss_parameter_supported in its discovery document. The library checks iss whenever
// it is present, and requires it when the issuer advertised it (AuthorizationRequest::require_iss, set by
// authorization_request() from Endpoints, which discover() fills). A wrong or missing iss ends the sign-in
// with ErrorKind::issuer_mismatch before any code exchange (mix-up protection).
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/library.hpp"
#include "support/mock.hpp"
#include "support/network.hpp"
#include "support/text.hpp"

#include <chrono>
#include <string>
#include <thread>

namespace {

namespace auth = aps::auth;
namespace raw_http = support::raw_http;
using namespace std::chrono_literals;
using support::catch_error, support::require_error, support::contains;

const char* const kClient = "iss-client";
const char* const kSecret = "iss-secret-3a5b";

aps_mock::Options options(bool iss_in_callback) {
  aps_mock::Options o;
  o.iss_in_callback = iss_in_callback;
  o.clients = {{kClient, kSecret, {}}};  // the callback is registered once the listener has its port
  return o;
}

auth::Config config_for(const aps_mock::Server& mock) {
  auth::Config c = support::config_for(mock, kClient, kSecret);
  c.callback_url = "http://127.0.0.1:0/api/auth/callback";  // any free port
  c.retry.max_attempts = 1;
  return c;
}

// A Config whose endpoints come from the mock's discovery document.
auth::Config discovered_config_for(const aps_mock::Server& mock) {
  auth::Config c = config_for(mock);
  c.endpoints = auth::discover(c, mock.issuer());
  return c;
}

// login() with a scripted browser and the listener's callback registered with the mock as soon as it is bound.
// `browsed` gets what the browser saw last.
auth::Token login(aps_mock::Server& mock, const auth::Config& config, aps_mock::BrowseResult* browsed = nullptr) {
  support::ScriptedBrowser browser(mock);
  auth::LoginOptions lo = browser.login_options();
  lo.timeout = 15s;
  try {
    auth::Token t = auth::login(config, lo);
    if (browsed)
      *browsed = browser.result();
    return t;
  } catch (...) {
    if (browsed)
      *browsed = browser.result();
    throw;
  }
}

}  // namespace

TEST_SUITE("iss") {
  TEST_CASE("a callback carrying the right iss passes") {
    aps_mock::Server mock(options(true));
    aps_mock::BrowseResult browsed;
    auth::Token t = login(mock, config_for(mock), &browsed);
    CHECK_FALSE(t.access_token.empty());
    CHECK(contains(browsed.final_url, "iss="));  // the mock really sent it
    CHECK(browsed.status == 200);
    CHECK(mock.count("token.authorization_code") == 1);

    SUBCASE("also when the issuer came from discovery (iss then required)") {
      auth::Config c = discovered_config_for(mock);
      CHECK(c.endpoints.authorization_response_iss_parameter_supported);
      auth::Token d = login(mock, c);
      CHECK_FALSE(d.access_token.empty());
    }
  }

  TEST_CASE("a wrong iss: ErrorKind::issuer_mismatch naming both issuers; the code is not exchanged") {
    aps_mock::Server mock(options(true));
    auth::Config c = config_for(mock);
    c.endpoints.issuer = "https://issuer.example";  // the mock (a mix-up) answers with its own issuer
    aps_mock::BrowseResult browsed;
    auto e = require_error([&] { (void)login(mock, c, &browsed); });
    CHECK(e.kind() == auth::ErrorKind::issuer_mismatch);
    CHECK(contains(e.what(), "iss '" + mock.issuer() + "'"));
    CHECK(contains(e.what(), "https://issuer.example"));
    CHECK(contains(e.what(), "RFC 9207"));
    CHECK(mock.count("token") == 0);
    CHECK(browsed.status == 400);  // the browser was told
    CHECK(contains(browsed.body, "unexpected server"));
  }

  TEST_CASE("a missing iss when discovery advertised authorization_response_iss_parameter_supported: error") {
    aps_mock::Server mock(options(true));
    auth::Config c = discovered_config_for(mock);
    REQUIRE(c.endpoints.authorization_response_iss_parameter_supported);
    auth::AuthorizationRequest r = auth::authorization_request(c);
    CHECK(r.require_iss);
    CHECK(r.issuer == mock.issuer());

    aps_mock::Options o = mock.options();
    o.iss_in_callback = false;  // the promise is broken: no iss on the redirect
    mock.set_options(o);
    aps_mock::BrowseResult browsed;
    auto e = require_error([&] { (void)login(mock, c, &browsed); });
    CHECK(e.kind() == auth::ErrorKind::issuer_mismatch);
    CHECK(contains(e.what(), "no iss"));
    CHECK(contains(e.what(), "authorization_response_iss_parameter_supported"));
    CHECK(mock.count("token") == 0);
    CHECK_FALSE(contains(browsed.final_url, "iss="));
  }

  TEST_CASE("a missing iss when not advertised: accepted") {
    aps_mock::Server mock(options(false));
    auth::Config c = discovered_config_for(mock);
    CHECK_FALSE(c.endpoints.authorization_response_iss_parameter_supported);
    CHECK_FALSE(auth::authorization_request(c).require_iss);
    aps_mock::BrowseResult browsed;
    auth::Token t = login(mock, c, &browsed);
    CHECK_FALSE(t.access_token.empty());
    CHECK_FALSE(contains(browsed.final_url, "iss="));
    CHECK(mock.count("token.authorization_code") == 1);
  }

  TEST_CASE("the listener alone: iss checked when present (a trailing slash tolerated), required when promised") {
    auth::Config c;
    c.client_id = kClient;
    c.callback_url = "http://127.0.0.1:0/cb";
    c.endpoints = auth::Endpoints::from_base_url("https://issuer.example");
    struct Case {
      const char* name;
      bool require;
      std::string iss;  // "-": no iss parameter
      bool ok;
    };
    for (const Case& k :
         {Case{"right", false, "https://issuer.example", true},
          Case{"right, trailing slash", true, "https://issuer.example/", true},
          Case{"absent, not promised", false, "-", true}, Case{"absent, promised", true, "-", false},
          Case{"empty, promised", true, "", false}, Case{"another issuer", false, "https://evil.example", false},
          Case{"a prefix of the issuer", false, "https://issuer.exampl", false},
          Case{"the issuer with a path", false, "https://issuer.example/x", false}}) {
      CAPTURE(std::string(k.name));
      auth::LoopbackListener listener(c.callback_url);
      auth::AuthorizationRequest r = auth::authorization_request(c, {}, listener.redirect_uri());
      r.require_iss = k.require;
      std::string target = "/cb?code=the-code&state=" + r.state;
      if (k.iss != "-")
        target += "&iss=" + auth::detail::url_encode(k.iss);
      raw_http::Response answer;
      std::thread client([&] { answer = raw_http::request("127.0.0.1", listener.port(), target); });
      std::string code;
      auto e = catch_error([&] { code = listener.wait(r, 5s); });
      client.join();
      CHECK(static_cast<bool>(e) == !k.ok);
      if (e) {
        CHECK(e->kind() == auth::ErrorKind::issuer_mismatch);
        CHECK(answer.status == 400);
      } else {
        CHECK(code == "the-code");
        CHECK(answer.status == 200);
      }
    }
  }
}
