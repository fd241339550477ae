// Tests of check_callback(), the callback check of a web server that receives the redirect itself (many users,
// each with a pending AuthorizationRequest in a session), and of AuthorizationRequest's JSON round trip for that
// session store. The properties: the state is checked first (another session's or a forged callback is
// state_mismatch, whatever else it carries), then iss, error= and a missing code, with the listener's typed
// errors; a request older than max_age is refused; what() holds neither the code nor the state; a replayed
// callback's code is refused by the server (single use), so the application must forget the request first.
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/library.hpp"
#include "support/mock.hpp"
#include "support/text.hpp"

#include <chrono>
#include <string>
#include <tuple>

namespace auth = aps::auth;
using namespace std::chrono_literals;
using support::contains, support::require_error;

namespace {

const char* const kIssuer = "https://developer.api.autodesk.com";

// A request as authorization_request() makes it, without a network: a fresh state, now as its creation time.
auth::AuthorizationRequest pending(bool require_iss = false) {
  auth::Config c;
  c.client_id = "web-app";
  c.callback_url = "https://app.example/api/auth/callback";
  c.scopes = {"data:read", "openid"};
  c.endpoints.authorization_response_iss_parameter_supported = require_iss;
  return auth::authorization_request(c);
}

auth::ErrorKind kind_of(const auth::AuthorizationRequest& r, const std::string& callback) {
  return require_error([&] { (void)auth::check_callback(r, callback); }).kind();
}

}  // namespace

TEST_SUITE("callback") {
  TEST_CASE("the right state: the code, from a query string, a request target or a whole URL") {
    const auth::AuthorizationRequest r = pending();
    const std::string query = "code=the-code&state=" + r.state;
    CHECK(auth::check_callback(r, query) == "the-code");
    CHECK(auth::check_callback(r, "/api/auth/callback?" + query) == "the-code");
    CHECK(auth::check_callback(r, "https://app.example/api/auth/callback?" + query + "#frag") == "the-code");
    CHECK(auth::check_callback(r, "code=a%2Bb%20c&state=" + r.state) == "a+b c");  // decoded once
    CHECK(auth::check_callback(r, query + "&iss=" + kIssuer) == "the-code");
  }

  TEST_CASE("a wrong, missing or other session's state: state_mismatch, checked before iss, error= and code") {
    const auth::AuthorizationRequest mine = pending(), theirs = pending();
    REQUIRE(mine.state != theirs.state);
    CHECK(kind_of(mine, "code=c&state=" + theirs.state) == auth::ErrorKind::state_mismatch);
    CHECK(kind_of(mine, "code=c") == auth::ErrorKind::state_mismatch);
    CHECK(kind_of(mine, "code=c&state=") == auth::ErrorKind::state_mismatch);
    CHECK(kind_of(mine, "code=c&state=" + mine.state.substr(1)) == auth::ErrorKind::state_mismatch);
    CHECK(kind_of(mine, "/api/auth/callback") == auth::ErrorKind::state_mismatch);               // no query at all
    CHECK(kind_of(mine, "/cb#?code=c&state=" + mine.state) == auth::ErrorKind::state_mismatch);  // in the fragment
    // An attacker's error= or wrong iss without the right state is not the sign-in's business either.
    CHECK(kind_of(mine, "error=access_denied&state=" + theirs.state) == auth::ErrorKind::state_mismatch);
    CHECK(kind_of(mine, "code=c&iss=https://evil.example&state=" + theirs.state) == auth::ErrorKind::state_mismatch);
    auth::AuthorizationRequest none = mine;
    none.state.clear();  // a request without a state matches nothing, not even an empty state
    CHECK(kind_of(none, "code=c&state=") == auth::ErrorKind::state_mismatch);
    auth::Error e = require_error([&] { (void)auth::check_callback(mine, "code=secret-code&state=" + theirs.state); });
    CHECK_FALSE(contains(e.what(), "secret-code"));
    CHECK_FALSE(contains(e.what(), theirs.state));
    CHECK_FALSE(contains(e.what(), mine.state));
  }

  TEST_CASE("iss (RFC 9207): a different issuer is issuer_mismatch; missing is accepted unless promised") {
    const auth::AuthorizationRequest r = pending();
    REQUIRE(r.issuer == kIssuer);
    CHECK(kind_of(r, "code=c&iss=https://evil.example&state=" + r.state) == auth::ErrorKind::issuer_mismatch);
    CHECK(auth::check_callback(r, "code=c&state=" + r.state) == "c");
    const auth::AuthorizationRequest promised = pending(/*require_iss=*/true);
    CHECK(kind_of(promised, "code=c&state=" + promised.state) == auth::ErrorKind::issuer_mismatch);
    CHECK(auth::check_callback(promised, "code=c&state=" + promised.state + "&iss=" + kIssuer) == "c");
  }

  TEST_CASE("error= with the right state: access_denied or oauth, the server's words kept; no code: bad_response") {
    const auth::AuthorizationRequest r = pending();
    auth::Error denied = require_error(
        [&] { (void)auth::check_callback(r, "error=access_denied&error_description=no%20thanks&state=" + r.state); });
    CHECK(denied.kind() == auth::ErrorKind::access_denied);
    CHECK(denied.details().error == "access_denied");
    CHECK(denied.details().error_description == "no thanks");
    CHECK(kind_of(r, "error=server_error&state=" + r.state) == auth::ErrorKind::oauth);
    CHECK(kind_of(r, "state=" + r.state) == auth::ErrorKind::bad_response);
    CHECK(kind_of(r, "code=a&code=b&state=" + r.state) == auth::ErrorKind::bad_response);  // given twice
    CHECK(kind_of(r, "code=%zz&state=" + r.state) == auth::ErrorKind::bad_response);       // a broken escape
  }

  TEST_CASE("expiry: a request older than max_age is refused (timeout) before anything else") {
    auth::AuthorizationRequest r = pending();
    r.created_at = std::chrono::system_clock::now() - 11min;
    auth::Error e = require_error([&] { (void)auth::check_callback(r, "code=c&state=" + r.state); });
    CHECK(e.kind() == auth::ErrorKind::timeout);
    CHECK(contains(e.what(), "start the sign-in again"));
    CHECK(auth::check_callback(r, "code=c&state=" + r.state, 15min) == "c");
    r.created_at = std::chrono::system_clock::now() - 2min;
    CHECK(auth::check_callback(r, "code=c&state=" + r.state, 5min) == "c");
    CHECK(require_error([&] { (void)auth::check_callback(r, "code=c&state=" + r.state, 1min); }).kind() ==
          auth::ErrorKind::timeout);
  }

  TEST_CASE("AuthorizationRequest JSON round trip keeps every field (a session store); anything else is usage") {
    auth::AuthorizationRequest r = pending(/*require_iss=*/true);
    auth::AuthorizationRequest back = auth::AuthorizationRequest::from_json(r.to_json());
    const auto fields = [](const auth::AuthorizationRequest& x) {
      return std::tie(x.url, x.state, x.code_verifier, x.code_challenge, x.nonce, x.redirect_uri, x.issuer,
                      x.require_iss);
    };
    INFO("stored: " << r.to_json() << "\nrestored: " << back.to_json());
    CHECK(fields(back) == fields(r));
    CHECK(std::chrono::duration_cast<std::chrono::seconds>(back.created_at - r.created_at).count() == 0);
    CHECK(auth::check_callback(back, "code=c&iss=" + std::string(kIssuer) + "&state=" + r.state) == "c");
    for (const char* bad : {"", "{}", "[]", "not json", R"({"state":"s"})"}) {
      INFO(bad);
      CHECK(require_error([&] { (void)auth::AuthorizationRequest::from_json(bad); }).kind() == auth::ErrorKind::usage);
    }
  }

  TEST_CASE(
      "a replayed callback: the code is single use at the server, so an application that forgot to drop the "
      "request still cannot sign in twice") {
    support::MockEnv env(/*tls=*/false);
    auth::Config config = env.config(/*confidential=*/true);
    const auth::AuthorizationRequest r = auth::authorization_request(config);
    const std::string code =
        env.server.issue_code(support::MockEnv::kConfidentialId, r.redirect_uri, "data:read", r.code_challenge);
    const std::string callback = "/api/auth/callback?code=" + code + "&state=" + r.state;
    const auth::Token first = auth::exchange_code(config, r, auth::check_callback(r, callback));
    CHECK(env.server.is_active_access_token(first.access_token));
    auth::Error replay =
        require_error([&] { (void)auth::exchange_code(config, r, auth::check_callback(r, callback)); });
    CHECK(replay.kind() == auth::ErrorKind::oauth);
    CHECK(replay.details().error == "invalid_grant");
    CHECK_FALSE(contains(replay.what(), code));
  }
}
