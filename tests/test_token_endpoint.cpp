// Tests of the token endpoint and its friends against the mock APS server over real sockets, each over HTTP and
// over HTTPS (a PKI generated at test time, trusted through Config::ca_file): code exchange (confidential and
// public clients), login() end to end with a scripted browser, refresh with rotation and narrowed scopes, client
// credentials, revoke, introspect, userinfo, logout URL, discovery, both error shapes APS answers with (its own
// {developerMessage, errorCode, more info} and RFC 6749's {error, error_description}) through injected faults.
// The properties: the redirect_uri of the code exchange is the authorize request's, byte for byte, and bodies
// are form-encoded; client credentials go in the Basic header or (public client) client_id in the body, never
// both; redirects are not followed, answers are size-capped, only safe calls are retried; no secret, code or
// token ever appears in what().
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/library.hpp"
#include "support/mock.hpp"
#include "support/text.hpp"
#include "support/timing.hpp"

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace auth = aps::auth;
using namespace std::chrono_literals;
using Env = support::MockEnv;
using support::catch_error, support::require_error, support::contains, support::fault, support::kIntrospectPath,
    support::kRevokePath, support::kTokenPath, support::kUserinfoPath, support::kDiscoveryPath;

namespace {

// Runs the rest of the test case twice (as two subcases): against a plain HTTP mock (false), then against an HTTPS
// one (true).
bool http_then_https() {
  bool tls = false;
  SUBCASE("over HTTP") {
    tls = false;
  }
  SUBCASE("over HTTPS") {
    tls = true;
  }
  return tls;
}

// Runs the rest of the test case twice (as two subcases): as the confidential client (true), then as the public
// one (false).
bool confidential_then_public() {
  bool confidential = true;
  SUBCASE("confidential client") {
    confidential = true;
  }
  SUBCASE("public client") {
    confidential = false;
  }
  return confidential;
}

// No value of `secrets` appears in the message.
void check_no_secret(const auth::Error& e, const std::vector<std::string>& secrets) {
  const std::string what = e.what();
  for (const auto& s : secrets) {
    CAPTURE(s);
    CHECK_FALSE(contains(what, s));
  }
}

// LoginOptions of a sign-in the scripted browser plays; showing the URL instead would be a bug here.
auth::LoginOptions scripted_login(support::ScriptedBrowser& browser) {
  auth::LoginOptions o = browser.login_options();
  o.timeout = 20s;
  o.show_url = [](const std::string&) { FAIL("show_url called although the browser opened"); };
  return o;
}

// The code the mock issues for `request` when the user of `config`'s client signs in and consents.
std::string code_for(Env& env, const auth::Config& config, const auth::AuthorizationRequest& request,
                     const std::string& scope) {
  return env.server.issue_code(config.client_id, request.redirect_uri, scope, request.code_challenge);
}

// A refresh token and its access token, issued by the mock for a 3-legged grant.
struct Grant {
  std::string access_token, refresh_token;
};
Grant issue_grant(Env& env, const std::string& client_id, const std::string& scope) {
  auto j = env.server.issue_tokens(client_id, scope);
  return {j.at("access_token").get<std::string>(), j.at("refresh_token").get<std::string>()};
}

// A 3-legged grant the mock issued (for data:read data:write), over HTTP then HTTPS, to the confidential client
// then to the public one.
struct Granted {
  Env env{http_then_https()};
  const bool confidential = confidential_then_public();
  auth::Config config = env.config(confidential);
  Grant g = issue_grant(env, config.client_id, "data:read data:write");
};

}  // namespace

// ============================================================================================================
TEST_SUITE("token endpoint: code exchange") {
  TEST_CASE("confidential client: Basic header, no client_id in the body, PKCE verifier, same redirect_uri") {
    Env env(http_then_https());
    auth::Config config = env.config(true);
    auth::AuthorizationRequest request = auth::authorization_request(config);
    std::string code = code_for(env, config, request, "data:read data:write");
    auto before = std::chrono::system_clock::now();
    auth::Token t = auth::exchange_code(config, request, code);
    auto after = std::chrono::system_clock::now();

    CHECK_FALSE(t.access_token.empty());
    CHECK_FALSE(t.refresh_token.empty());
    CHECK(t.token_type == "Bearer");
    CHECK(t.expires_in == 3599s);
    CHECK(t.expires_at >= before + 3599s);  // absolute, from when the request was sent
    CHECK(t.expires_at <= after + 3599s);
    CHECK(env.server.is_active_access_token(t.access_token));

    auto reqs = env.requests_to(kTokenPath);
    REQUIRE(reqs.size() == 1);
    const auto& r = reqs[0];
    CHECK(r.method == "POST");
    CHECK(r.header("Content-Type").rfind("application/x-www-form-urlencoded", 0) == 0);
    CHECK(r.header("Authorization") ==
          auth::detail::basic_authorization(Env::kConfidentialId, Env::kConfidentialSecret));
    CHECK(r.form.count("client_id") == 0);  // never both header and body (APS answers 400)
    CHECK(r.form.count("client_secret") == 0);
    CHECK(r.param("grant_type") == "authorization_code");
    CHECK(r.param("code") == code);
    CHECK(r.param("code_verifier") == request.code_verifier);
    CHECK(r.param("redirect_uri") == request.redirect_uri);
    CHECK(r.param("redirect_uri") == Env::kRedirect);
    CHECK(r.form.size() == 4);
    // a form body, correctly encoded; nothing secret in the URL
    CHECK(contains(r.body, "redirect_uri=http%3A%2F%2Flocalhost%3A8080%2Fapi%2Fauth%2Fcallback"));
    CHECK(r.query.empty());
  }

  TEST_CASE("public client: client_id in the body, no Authorization header, PKCE verifier") {
    Env env(http_then_https());
    auth::Config config = env.config(false);
    auth::AuthorizationRequest request = auth::authorization_request(config);
    std::string code = code_for(env, config, request, "data:read");
    auth::Token t = auth::exchange_code(config, request, code);
    CHECK_FALSE(t.access_token.empty());
    CHECK_FALSE(t.refresh_token.empty());

    auto reqs = env.requests_to(kTokenPath);
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].header("Authorization").empty());
    CHECK(reqs[0].param("client_id") == Env::kPublicId);
    CHECK(reqs[0].form.count("client_id") == 1);
    CHECK(reqs[0].form.count("client_secret") == 0);
    CHECK(reqs[0].param("code_verifier") == request.code_verifier);
    CHECK(reqs[0].param("redirect_uri") == request.redirect_uri);
  }

  TEST_CASE("a code is single-use, and a wrong verifier fails: invalid_grant, nothing secret in what()") {
    Env env(http_then_https());
    auth::Config config = env.config(true);
    auth::AuthorizationRequest request = auth::authorization_request(config);
    std::string code = code_for(env, config, request, "data:read");
    (void)auth::exchange_code(config, request, code);
    SUBCASE("the same code twice") {
      auto e = require_error([&] { (void)auth::exchange_code(config, request, code); });
      CHECK(e.kind() == auth::ErrorKind::oauth);
      CHECK(e.status() == 400);
      CHECK(e.details().error == "invalid_grant");
      check_no_secret(e, {code, request.code_verifier, Env::kConfidentialSecret});
    }
    SUBCASE("another verifier than the one the challenge was made from") {
      auth::AuthorizationRequest other = auth::authorization_request(config);
      std::string code2 = code_for(env, config, request, "data:read");
      auto e = require_error([&] { (void)auth::exchange_code(config, other, code2); });
      CHECK(e.kind() == auth::ErrorKind::oauth);
      CHECK(e.details().error == "invalid_grant");
      check_no_secret(e, {code2, other.code_verifier, Env::kConfidentialSecret});
    }
    SUBCASE("another redirect_uri than at authorize") {
      auth::AuthorizationRequest moved =
          auth::authorization_request(config, {}, "http://127.0.0.1:8080/api/auth/callback");
      std::string code3 =
          env.server.issue_code(config.client_id, request.redirect_uri, "data:read", moved.code_challenge);
      auto e = require_error([&] { (void)auth::exchange_code(config, moved, code3); });
      CHECK(e.details().error == "invalid_grant");
    }
  }

  TEST_CASE("a wrong client secret is an error naming the likely cause, without the secret") {
    Env env(http_then_https());
    auth::Config config = env.config(true);
    config.client_secret = "wrong-secret-value-42";
    auth::AuthorizationRequest request = auth::authorization_request(config);
    auto e = require_error([&] { (void)auth::exchange_code(config, request, "some-code-value"); });
    CHECK(e.status() == 401);
    CHECK(e.details().error_code == "AUTH-003");
    CHECK(contains(e.what(), "check the client id and secret"));
    check_no_secret(e, {"wrong-secret-value-42", "some-code-value", request.code_verifier});
  }

  TEST_CASE("usage errors are raised before any request") {
    Env env(false);
    auth::Config config = env.config(true);
    auth::AuthorizationRequest request = auth::authorization_request(config);
    auto e = require_error([&] { (void)auth::exchange_code(config, request, ""); });
    CHECK(e.kind() == auth::ErrorKind::usage);
    auto r = catch_error([&] { (void)auth::refresh(config, ""); });
    REQUIRE(r);
    CHECK(r->kind() == auth::ErrorKind::usage);
    auth::Config public_client = env.config(false);
    auto c = catch_error([&] { (void)auth::client_credentials(public_client); });
    REQUIRE(c);
    CHECK(c->kind() == auth::ErrorKind::usage);
    auth::Config no_id = env.config(true);
    no_id.client_id.clear();
    auto n = catch_error([&] { (void)auth::client_credentials(no_id); });
    REQUIRE(n);
    CHECK(n->kind() == auth::ErrorKind::usage);
    CHECK(env.server.count("token") == 0);
  }
}

// ============================================================================================================
TEST_SUITE("token endpoint: login") {
  TEST_CASE("login(): browser hook, loopback listener, consent, state check, code exchange, id_token verified") {
    const bool tls = http_then_https();
    const bool confidential = confidential_then_public();
    CAPTURE(confidential);
    Env env(tls, [](aps_mock::Options& o) { o.consent = aps_mock::Consent::page; });
    auth::Config config = env.config(confidential);
    config.callback_url = "http://localhost:0/api/auth/callback";
    config.scopes = {"data:read", "openid"};
    support::ScriptedBrowser browser(env.server, env.server.pki().ca_cert_pem, 15000);
    auth::LoginOptions options = scripted_login(browser);
    std::string listening_uri;
    auto register_uri = options.on_listening;
    options.on_listening = [&](auth::LoopbackListener& l) {
      listening_uri = l.redirect_uri();
      register_uri(l);
    };

    auth::Token t = auth::login(config, options);

    CHECK_FALSE(t.access_token.empty());
    CHECK_FALSE(t.refresh_token.empty());
    CHECK_FALSE(t.id_token.empty());
    CHECK_FALSE(t.expired(60s));
    CHECK(env.server.is_active_access_token(t.access_token));
    // The browser ended on the listener's success page.
    CHECK(browser.result().status == 200);
    CHECK(browser.result().final_url.rfind(listening_uri + "?", 0) == 0);
    CHECK(contains(browser.result().body, "close this window"));
    // The authorize request carried PKCE S256 and a nonce; the token request the identical redirect_uri.
    auto authorize = env.requests_to("/authentication/v2/authorize");
    REQUIRE(authorize.size() == 1);
    CHECK(authorize[0].param("code_challenge_method") == "S256");
    CHECK(authorize[0].param("redirect_uri") == listening_uri);
    CHECK_FALSE(authorize[0].param("nonce").empty());
    CHECK(authorize[0].param("scope") == "data:read openid");
    auto token = env.requests_to(kTokenPath);
    REQUIRE(token.size() == 1);
    CHECK(token[0].param("redirect_uri") == listening_uri);
    CHECK(auth::pkce_challenge(token[0].param("code_verifier")) == authorize[0].param("code_challenge"));
    CHECK(token[0].header("Authorization").empty() == !confidential);
  }

  TEST_CASE("login(): the user denies consent: ErrorKind::access_denied") {
    Env env(http_then_https(), [](aps_mock::Options& o) {
      o.consent = aps_mock::Consent::page;
      o.deny = true;
    });
    auth::Config config = env.config(false);
    config.callback_url = "http://127.0.0.1:0/api/auth/callback";
    support::ScriptedBrowser browser(env.server, env.server.pki().ca_cert_pem, 15000);
    auth::LoginOptions options = scripted_login(browser);
    auto e = require_error([&] { (void)auth::login(config, options); });
    CHECK(e.kind() == auth::ErrorKind::access_denied);
    CHECK(e.details().error_description == "The user denied access.");
    CHECK(browser.result().status == 200);
    CHECK(contains(browser.result().body, "Access was not granted"));
    CHECK(env.server.count("token") == 0);
  }

  TEST_CASE("login(): an unregistered callback URL times out with a message naming the redirect URI mismatch") {
    Env env(false);
    auth::Config config = env.config(false);
    config.callback_url = "http://127.0.0.1:0/api/auth/callback";  // the port is never registered
    support::ScriptedBrowser browser(env.server, env.server.pki().ca_cert_pem, 15000);
    auth::LoginOptions options = scripted_login(browser);
    options.on_listening = nullptr;
    options.timeout = 700ms;
    auto e = require_error([&] { (void)auth::login(config, options); });
    CHECK(e.kind() == auth::ErrorKind::timeout);
    CHECK(contains(e.what(), "Invalid redirect_uri"));
    CHECK(browser.result().status == 400);  // the mock, like Autodesk, showed "Invalid redirect_uri"
    CHECK(contains(browser.result().body, "Invalid redirect_uri"));
  }
}

// ============================================================================================================
TEST_SUITE("token endpoint: refresh and client credentials") {
  TEST_CASE_FIXTURE(Granted, "refresh rotates the refresh token; the old one then fails with invalid_grant") {
    auth::Token t = auth::refresh(config, g.refresh_token);
    CHECK_FALSE(t.access_token.empty());
    CHECK(t.access_token != g.access_token);
    CHECK_FALSE(t.refresh_token.empty());
    CHECK(t.refresh_token != g.refresh_token);  // rotated
    CHECK(env.server.is_valid_refresh_token(t.refresh_token));
    CHECK_FALSE(env.server.is_valid_refresh_token(g.refresh_token));

    auto reqs = env.requests_to(kTokenPath);
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].param("grant_type") == "refresh_token");
    CHECK(reqs[0].param("refresh_token") == g.refresh_token);
    CHECK(reqs[0].form.count("scope") == 0);
    CHECK(reqs[0].form.count("client_id") == (confidential ? 0u : 1u));
    CHECK(reqs[0].header("Authorization").empty() == !confidential);

    auto e = require_error([&] { (void)auth::refresh(config, g.refresh_token); });
    CHECK(e.kind() == auth::ErrorKind::oauth);
    CHECK(e.status() == 400);
    CHECK(e.details().error == "invalid_grant");
    CHECK(contains(e.what(), "invalid_grant"));
    check_no_secret(e, {g.refresh_token, t.refresh_token, Env::kConfidentialSecret});

    // The new one works, once.
    auth::Token t2 = auth::refresh(config, t.refresh_token);
    CHECK(t2.refresh_token != t.refresh_token);
  }

  TEST_CASE("refresh with narrowed scopes sends them and gets a token for them only; wider scopes fail") {
    Env env(http_then_https());
    auth::Config config = env.config(true);
    Grant g = issue_grant(env, config.client_id, "data:read data:write");
    auth::Token t = auth::refresh(config, g.refresh_token, {"data:read"});
    auto reqs = env.requests_to(kTokenPath);
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].param("scope") == "data:read");
    auth::Introspection i = auth::introspect(config, t.access_token);
    CHECK(i.active);
    CHECK(i.scope == "data:read");

    auto e = require_error([&] { (void)auth::refresh(config, t.refresh_token, {"data:read", "bucket:delete"}); });
    CHECK(e.kind() == auth::ErrorKind::oauth);
    CHECK(e.details().error == "invalid_scope");
    check_no_secret(e, {t.refresh_token, Env::kConfidentialSecret});
  }

  TEST_CASE("client_credentials: Basic header, scopes space-separated in the form, no refresh token") {
    Env env(http_then_https());
    auth::Config config = env.config(true);
    config.scopes = {"data:read", "bucket:create"};
    auth::Token t = auth::client_credentials(config);
    CHECK_FALSE(t.access_token.empty());
    CHECK(t.refresh_token.empty());
    CHECK(t.expires_in == 3599s);
    auto reqs = env.requests_to(kTokenPath);
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].param("grant_type") == "client_credentials");
    CHECK(reqs[0].param("scope") == "data:read bucket:create");
    CHECK(contains(reqs[0].body, "scope=data%3Aread+bucket%3Acreate"));  // form encoding: space is '+'
    CHECK(reqs[0].header("Authorization") ==
          auth::detail::basic_authorization(Env::kConfidentialId, Env::kConfidentialSecret));
    CHECK(reqs[0].form.count("client_id") == 0);
    auth::Introspection i = auth::introspect(config, t.access_token);
    CHECK(i.active);
    CHECK(i.scope == "data:read bucket:create");
    CHECK(i.userid.empty());  // 2-legged
  }
}

// ============================================================================================================
TEST_SUITE("token endpoint: revoke, introspect, userinfo, logout, discovery") {
  TEST_CASE_FIXTURE(Granted, "revoke an access token and a refresh token") {
    auth::revoke(config, g.access_token, auth::TokenTypeHint::access_token);
    CHECK_FALSE(env.server.is_active_access_token(g.access_token));
    CHECK(env.server.is_valid_refresh_token(g.refresh_token));
    auth::revoke(config, g.refresh_token, auth::TokenTypeHint::refresh_token);
    CHECK_FALSE(env.server.is_valid_refresh_token(g.refresh_token));

    auto reqs = env.requests_to(kRevokePath);
    REQUIRE(reqs.size() == 2);
    CHECK(reqs[0].param("token") == g.access_token);
    CHECK(reqs[0].param("token_type_hint") == "access_token");
    CHECK(reqs[1].param("token") == g.refresh_token);
    CHECK(reqs[1].param("token_type_hint") == "refresh_token");
    for (const auto& r : reqs) {
      CHECK(r.form.count("client_id") == (confidential ? 0u : 1u));
      CHECK(r.header("Authorization").empty() == !confidential);
    }
    auto e = require_error([&] { (void)auth::refresh(config, g.refresh_token); });
    CHECK(e.details().error == "invalid_grant");
  }

  TEST_CASE("introspect: active and inactive tokens") {
    Env env(http_then_https());
    auth::Config config = env.config(true);
    Grant g = issue_grant(env, config.client_id, "data:read data:write");
    auth::Introspection a = auth::introspect(config, g.access_token);
    CHECK(a.active);
    CHECK(a.scope == "data:read data:write");
    CHECK(a.client_id == Env::kConfidentialId);
    CHECK(a.userid == aps_mock::Server::kUserId);
    CHECK(a.expires_at > std::chrono::system_clock::now());
    CHECK(contains(a.json, "\"active\":true"));
    auto reqs = env.requests_to(kIntrospectPath);
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].param("token") == g.access_token);
    CHECK(reqs[0].form.count("client_id") == 0);

    auth::Introspection gone = auth::introspect(config, "not-a-token-the-mock-issued");
    CHECK_FALSE(gone.active);
    CHECK(gone.scope.empty());
    CHECK(gone.expires_at == std::chrono::system_clock::time_point{});

    auth::revoke(config, g.access_token, auth::TokenTypeHint::access_token);
    CHECK_FALSE(auth::introspect(config, g.access_token).active);

    auth::Config public_client = env.config(false);
    Grant p = issue_grant(env, public_client.client_id, "data:read");
    CHECK(auth::introspect(public_client, p.access_token).active);
    CHECK(env.requests_to(kIntrospectPath).back().param("client_id") == Env::kPublicId);
  }

  TEST_CASE("userinfo with a 3-legged token; a 2-legged one is refused (401) without the token in what()") {
    Env env(http_then_https());
    auth::Config config = env.config(true);
    Grant g = issue_grant(env, config.client_id, "data:read openid");
    auth::UserInfo u = auth::userinfo(config, g.access_token);
    CHECK(u.sub == aps_mock::Server::kUserId);
    CHECK(u.name == "Mock User");
    CHECK(u.email == "mock.user@example.com");
    CHECK(u.preferred_username == "mockuser");
    CHECK(contains(u.json, "\"email_verified\":true"));
    auto reqs = env.requests_to(kUserinfoPath);
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].method == "GET");
    CHECK(reqs[0].header("Authorization") == "Bearer " + g.access_token);
    CHECK(reqs[0].query.empty());  // the token never in a URL

    auth::Token two_legged = auth::client_credentials(config);
    auto e = require_error([&] { (void)auth::userinfo(config, two_legged.access_token); });
    CHECK(e.kind() == auth::ErrorKind::http);
    CHECK(e.status() == 401);
    CHECK(e.details().error_code == "AUTH-006");
    check_no_secret(e, {two_legged.access_token, Env::kConfidentialSecret});
  }

  TEST_CASE("logout_url: the post-logout redirect survives the round trip through the server") {
    Env env(http_then_https());
    auth::Config config = env.config(true);
    CHECK(auth::logout_url(config) == env.base_url() + "/authentication/v2/logout");
    const std::string back = env.base_url() + "/signed-out?from=app&x=a b";
    std::string url = auth::logout_url(config, back);
    CHECK(url ==
          env.base_url() + "/authentication/v2/logout?post_logout_redirect_uri=" + auth::detail::url_encode(back));
    auto page = aps_mock::follow_like_browser(url, env.server.pki().ca_cert_pem, 5000);
    CHECK(page.final_url == back);  // the mock redirected to exactly the URI we gave
  }

  TEST_CASE("discover: endpoints from the OIDC document, usable as they are") {
    const bool tls = http_then_https();
    bool legacy = false;
    SUBCASE("revocation_endpoint") {
      legacy = false;
    }
    SUBCASE("legacy revoke_endpoint") {
      legacy = true;
    }
    CAPTURE(legacy);
    Env env(tls, [legacy](aps_mock::Options& o) {
      o.revoke_endpoint_name_legacy = legacy;
      o.iss_in_callback = true;
    });
    auth::Config config = env.config(true);
    config.endpoints = auth::Endpoints{};  // from discovery only
    auth::Endpoints e = auth::discover(config, env.server.issuer());
    CHECK(env.server.issuer() == env.base_url());
    support::check_aps_layout(e, env.base_url(), env.base_url() + "/userinfo");
    CHECK(e.authorization_response_iss_parameter_supported);

    config.endpoints = e;
    auth::Token t = auth::client_credentials(config);
    auth::revoke(config, t.access_token, auth::TokenTypeHint::access_token);
    CHECK_FALSE(env.server.is_active_access_token(t.access_token));

    SUBCASE("a trailing slash on the issuer is tolerated") {
      CHECK(auth::discover(config, env.server.issuer() + "/").token == e.token);
    }
  }

  TEST_CASE("discover: a document naming another issuer, or missing the token endpoint, is refused") {
    Env env(http_then_https());
    auth::Config config = env.config(true);
    const std::string base = env.base_url();
    SUBCASE("another issuer (mix-up)") {
      env.server.inject(fault(kDiscoveryPath, 200,
                              R"({"issuer":"https://evil.example","authorization_endpoint":")" + base +
                                  R"(/a","token_endpoint":")" + base + R"(/t"})"));
      auto e = require_error([&] { (void)auth::discover(config, env.server.issuer()); });
      CHECK(e.kind() == auth::ErrorKind::bad_response);
      CHECK(contains(e.what(), "evil.example"));
    }
    SUBCASE("no token endpoint") {
      env.server.inject(
          fault(kDiscoveryPath, 200, R"({"issuer":")" + base + R"(","authorization_endpoint":")" + base + R"(/a"})"));
      auto e = require_error([&] { (void)auth::discover(config, env.server.issuer()); });
      CHECK(e.kind() == auth::ErrorKind::bad_response);
      CHECK(contains(e.what(), "token_endpoint"));
    }
    SUBCASE("a plain-http token endpoint on a remote host") {
      env.server.inject(fault(kDiscoveryPath, 200,
                              R"({"issuer":")" + base + R"(","authorization_endpoint":")" + base +
                                  R"(/a","token_endpoint":"http://evil.example/token"})"));
      auto e = require_error([&] { (void)auth::discover(config, env.server.issuer()); });
      CHECK(e.kind() == auth::ErrorKind::usage);
    }
    SUBCASE("no document (404)") {
      auto e = require_error([&] { (void)auth::discover(config, base + "/nowhere"); });
      CHECK(e.kind() == auth::ErrorKind::http);
      CHECK(e.status() == 404);
    }
  }
}

// ============================================================================================================
TEST_SUITE("token endpoint: error shapes") {
  // Every endpoint call, with the secrets it sends. A fault answers before the mock looks at the request, so
  // the values need not be valid.
  struct Endpoint {
    const char* name;
    const char* path;
    std::function<void(const auth::Config&)> call;
    std::vector<std::string> secrets;
    bool reads_body_on_success;  // revoke ignores the body of a 2xx
  };

  std::vector<Endpoint> endpoints(const auth::Config& config) {
    auto request = std::make_shared<auth::AuthorizationRequest>(auth::authorization_request(config));
    const std::string code = "code-" + auth::random_urlsafe(18);
    const std::string rt = "rt-" + auth::random_urlsafe(24);
    const std::string at = "at-" + auth::random_urlsafe(30);
    return {
        {"exchange_code",
         kTokenPath,
         [request, code](const auth::Config& c) { (void)auth::exchange_code(c, *request, code); },
         {code, request->code_verifier},
         true},
        {"refresh", kTokenPath, [rt](const auth::Config& c) { (void)auth::refresh(c, rt); }, {rt}, true},
        {"client_credentials", kTokenPath, [](const auth::Config& c) { (void)auth::client_credentials(c); }, {}, true},
        {"revoke",
         kRevokePath,
         [rt](const auth::Config& c) { auth::revoke(c, rt, auth::TokenTypeHint::refresh_token); },
         {rt},
         false},
        {"introspect", kIntrospectPath, [at](const auth::Config& c) { (void)auth::introspect(c, at); }, {at}, true},
        {"userinfo", kUserinfoPath, [at](const auth::Config& c) { (void)auth::userinfo(c, at); }, {at}, true},
    };
  }

  struct Shape {
    const char* name;
    int status;
    std::string body;  // "{SECRETS}" is replaced by the call's secrets (a server echoing what it got)
    std::string content_type;
    std::vector<std::pair<std::string, std::string>> headers;
    auth::ErrorKind kind;
    std::function<void(const auth::Error&)> check;
  };

  std::string with_secrets(std::string body, const std::vector<std::string>& secrets) {
    std::string all;
    for (const auto& s : secrets)
      all += s + " ";
    for (std::size_t p = body.find("{SECRETS}"); p != std::string::npos; p = body.find("{SECRETS}", p + all.size()))
      body.replace(p, 9, all);
    return body;
  }

  TEST_CASE("every error shape APS answers with, from every endpoint, typed and without secrets in what()") {
    const bool tls = http_then_https();
    const std::vector<Shape> shapes = {
        {"APS style with \"more info\" (403 AUTH-001)",
         403,
         R"({"developerMessage":"The client_id specified does not have access to the api product {SECRETS}",)"
         R"("userMessage":"Ask your admin {SECRETS}","errorCode":"AUTH-001","more info":"https://aps.example/errors"})",
         "application/json",
         {},
         auth::ErrorKind::http,
         [](const auth::Error& e) {
           CHECK(e.status() == 403);
           CHECK(e.details().error_code == "AUTH-001");
           CHECK(contains(e.details().developer_message, "does not have access to the api product"));
           CHECK(contains(e.details().user_message, "Ask your admin"));
           CHECK(e.details().more_info == "https://aps.example/errors");
           CHECK(e.details().error.empty());
           CHECK(contains(e.what(), "AUTH-001"));
           CHECK(contains(e.what(), "HTTP 403"));
           CHECK(contains(e.what(), "not enabled for this API"));
         }},
        {"APS style with moreInfo (400 AUTH-008)",
         400,
         R"({"developerMessage":"The required parameter(s) scope not present in the request","errorCode":"AUTH-008",)"
         R"("moreInfo":"https://aps.example/more"})",
         "application/json",
         {},
         auth::ErrorKind::http,
         [](const auth::Error& e) {
           CHECK(e.status() == 400);
           CHECK(e.details().error_code == "AUTH-008");
           CHECK(e.details().more_info == "https://aps.example/more");
           CHECK(contains(e.what(), "AUTH-008"));
         }},
        {"RFC 6749 style (400 invalid_grant)",
         400,
         R"({"error":"invalid_grant","error_description":"The grant {SECRETS} is invalid"})",
         "application/json",
         {},
         auth::ErrorKind::oauth,
         [](const auth::Error& e) {
           CHECK(e.status() == 400);
           CHECK(e.details().error == "invalid_grant");
           CHECK(contains(e.details().error_description, "is invalid"));
           CHECK(contains(e.what(), "invalid_grant"));
           CHECK(contains(e.what(), "sign in again"));
         }},
        {"401 invalid_client",
         401,
         R"({"error":"invalid_client","error_description":"Client authentication failed"})",
         "application/json",
         {{"WWW-Authenticate", "Basic realm=\"x\""}},
         auth::ErrorKind::oauth,
         [](const auth::Error& e) {
           CHECK(e.status() == 401);
           CHECK(e.details().error == "invalid_client");
           CHECK(contains(e.what(), "check the client id and secret"));
         }},
        {"401 APS AUTH-003 (secret mismatch)",
         401,
         R"({"developerMessage":"The client_id specified does not have access to the api product","errorCode":"AUTH-003","more info":"x"})",
         "application/json",
         {},
         auth::ErrorKind::http,
         [](const auth::Error& e) {
           CHECK(e.details().error_code == "AUTH-003");
           CHECK(contains(e.what(), "check the client id and secret"));
         }},
        {"415 AUTH-007 (wrong Content-Type)",
         415,
         R"({"developerMessage":"Content-Type must be application/x-www-form-urlencoded","errorCode":"AUTH-007"})",
         "application/json",
         {},
         auth::ErrorKind::http,
         [](const auth::Error& e) {
           CHECK(e.status() == 415);
           CHECK(e.details().error_code == "AUTH-007");
         }},
        {"429 with Retry-After",
         429,
         R"({"developerMessage":"Quota limit exceeded."})",
         "application/json",
         {{"Retry-After", "7"}},
         auth::ErrorKind::http,
         [](const auth::Error& e) {
           CHECK(e.status() == 429);
           CHECK(e.details().retry_after == 7s);
           CHECK(e.details().developer_message == "Quota limit exceeded.");
           CHECK(contains(e.what(), "rate limited"));
         }},
        {"500",
         500,
         R"({"developerMessage":"Internal Server Error {SECRETS}"})",
         "application/json",
         {},
         auth::ErrorKind::http,
         [](const auth::Error& e) {
           CHECK(e.status() == 500);
           CHECK(contains(e.details().developer_message, "Internal Server Error"));
         }},
        {"503 with Retry-After",
         503,
         R"({"developerMessage":"Service Unavailable"})",
         "application/json",
         {{"Retry-After", "3"}},
         auth::ErrorKind::http,
         [](const auth::Error& e) {
           CHECK(e.status() == 503);
           CHECK(e.details().retry_after == 3s);
         }},
        {"an HTML error page from a proxy (502)",
         502,
         "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1>{SECRETS}</body></html>",
         "text/html",
         {},
         auth::ErrorKind::http,
         [](const auth::Error& e) {
           CHECK(e.status() == 502);
           CHECK(contains(e.what(), "HTTP 502"));
           CHECK(contains(e.what(), "non-JSON body"));
           CHECK(contains(e.what(), "text/html"));
           CHECK_FALSE(contains(e.what(), "<html>"));
         }},
        {"a redirect (not followed)",
         302,
         "",
         "text/plain",
         {{"Location", "https://evil.example/steal?{SECRETS}"}},
         auth::ErrorKind::http,
         [](const auth::Error& e) {
           CHECK(e.status() == 302);
           CHECK(contains(e.what(), "redirect, not followed"));
         }},
    };

    Env env(tls);
    const auth::Config config = env.config(true);
    for (const Shape& shape : shapes) {
      for (const Endpoint& ep : endpoints(config)) {
        const std::string shape_name = shape.name, endpoint_name = ep.name;
        CAPTURE(shape_name);
        CAPTURE(endpoint_name);
        // What the call sends (and so what a server could echo): its own secrets, and the client secret with
        // every call but userinfo.
        std::vector<std::string> secrets = ep.secrets;
        if (endpoint_name != "userinfo")
          secrets.push_back(Env::kConfidentialSecret);
        env.server.reset_stats();
        auto f = fault(ep.path, shape.status, with_secrets(shape.body, secrets), 1, shape.content_type, shape.headers);
        for (auto& h : f.headers)
          h.second = with_secrets(h.second, secrets);
        env.server.inject(f);
        auto e = require_error([&] { ep.call(config); });
        CHECK(e.kind() == shape.kind);
        CHECK(std::string(e.what()).rfind(std::string("[aps_auth.") + auth::to_string(shape.kind) + "] ", 0) == 0);
        shape.check(e);
        check_no_secret(e, secrets);
        CHECK(env.requests_to(ep.path).size() == 1);  // max_attempts = 1: sent once, redirect not followed
        CHECK(env.server.requests().size() == 1);
      }
    }
  }

  TEST_CASE("a 2xx answer that is not what the protocol promises is ErrorKind::bad_response") {
    Env env(http_then_https());
    const auth::Config config = env.config(true);
    struct Body {
      const char* name;
      std::string body, content_type;
    };
    const std::vector<Body> bodies = {
        {"an HTML page (captive portal)", "<html><body>Please sign in to the Wi-Fi</body></html>", "text/html"},
        {"an empty body", "", "application/json"},
        {"truncated JSON", R"({"access_token":"abc)", "application/json"},
        {"a JSON array", R"([{"access_token":"abc"}])", "application/json"},
        {"deeply nested JSON", std::string(5000, '[') + std::string(5000, ']'), "application/json"},
    };
    for (const Body& b : bodies) {
      for (const Endpoint& ep : endpoints(config)) {
        if (!ep.reads_body_on_success)
          continue;
        const std::string body_name = b.name, endpoint_name = ep.name;
        CAPTURE(body_name);
        CAPTURE(endpoint_name);
        env.server.inject(fault(ep.path, 200, b.body, 1, b.content_type));
        auto e = require_error([&] { ep.call(config); });
        CHECK(e.kind() == auth::ErrorKind::bad_response);
        CHECK(e.status() == 200);
        CHECK(contains(e.what(), "HTTP 200"));
        check_no_secret(e, ep.secrets);
      }
    }
    SUBCASE("a token answer without access_token, or with a bad expires_in") {
      for (const char* body :
           {R"({"token_type":"Bearer","expires_in":3599})", R"({"access_token":"a","expires_in":"soon"})",
            R"({"access_token":"a","expires_in":-1})"}) {
        CAPTURE(body);
        env.server.inject(fault(kTokenPath, 200, body));
        auto e = require_error([&] { (void)auth::client_credentials(config); });
        CHECK(e.kind() == auth::ErrorKind::bad_response);
      }
    }
    SUBCASE("an introspection answer without a boolean active") {
      env.server.inject(fault(kIntrospectPath, 200, R"({"active":"yes"})"));
      auto e = require_error([&] { (void)auth::introspect(config, "some-token-value"); });
      CHECK(e.kind() == auth::ErrorKind::bad_response);
      CHECK_FALSE(contains(e.what(), "some-token-value"));
    }
    SUBCASE("an answer larger than APS_AUTH_MAX_RESPONSE_BYTES") {
      std::string huge = R"({"access_token":")" + std::string(APS_AUTH_MAX_RESPONSE_BYTES + 10, 'a') + R"("})";
      env.server.inject(fault(kTokenPath, 200, huge));
      auto e = require_error([&] { (void)auth::client_credentials(config); });
      CHECK(e.kind() == auth::ErrorKind::bad_response);
      CHECK(contains(e.what(), "refused"));
      CHECK(std::string(e.what()).size() < 400);
    }
  }

  TEST_CASE("the server's own errors (not injected) keep every field") {
    Env env(http_then_https());
    auth::Config config = env.config(true);
    SUBCASE("client_credentials without scopes: APS style AUTH-008") {
      config.scopes.clear();
      auto e = require_error([&] { (void)auth::client_credentials(config); });
      CHECK(e.kind() == auth::ErrorKind::http);
      CHECK(e.status() == 400);
      CHECK(e.details().error_code == "AUTH-008");
      CHECK(e.details().more_info == aps_mock::Server::kErrorInfo);
      CHECK_FALSE(e.details().developer_message.empty());
    }
    SUBCASE("an unknown client: RFC style invalid_client") {
      config.client_id = "nobody";
      auto e = require_error([&] { (void)auth::client_credentials(config); });
      CHECK(e.kind() == auth::ErrorKind::oauth);
      CHECK(e.status() == 401);
      CHECK(e.details().error == "invalid_client");
      check_no_secret(e, {Env::kConfidentialSecret});
    }
  }
}

// ============================================================================================================
TEST_SUITE("token endpoint: transport failures and retries") {
  TEST_CASE("429/503 are retried after Retry-After; then the call succeeds") {
    Env env(http_then_https());
    auth::Config config = env.config(true);
    config.retry.max_attempts = 3;
    env.server.inject(
        fault(kTokenPath, 503, R"({"developerMessage":"busy"})", 2, "application/json", {{"Retry-After", "0"}}));
    auth::Token t = auth::client_credentials(config);
    CHECK_FALSE(t.access_token.empty());
    CHECK(env.server.count("token") == 3);

    SUBCASE("a refresh is re-sent on 429 (the server did not act on it)") {
      Grant g = issue_grant(env, config.client_id, "data:read");
      env.server.reset_stats();
      env.server.inject(fault(kTokenPath, 429, R"({"developerMessage":"Quota limit exceeded."})", 1, "application/json",
                              {{"Retry-After", "0"}}));
      auth::Token r = auth::refresh(config, g.refresh_token);
      CHECK_FALSE(r.access_token.empty());
      CHECK(env.server.count("token") == 2);
    }
  }

  TEST_CASE("a refresh or code exchange is not re-sent after a 500 (the server may have acted)") {
    Env env(http_then_https());
    auth::Config config = env.config(true);
    config.retry.max_attempts = 3;
    Grant g = issue_grant(env, config.client_id, "data:read");
    env.server.inject(fault(kTokenPath, 500, R"({"developerMessage":"oops"})"));
    auto e = require_error([&] { (void)auth::refresh(config, g.refresh_token); });
    CHECK(e.status() == 500);
    CHECK(env.server.count("token") == 1);

    SUBCASE("while client credentials (safe to repeat) are") {
      env.server.reset_stats();
      env.server.inject(fault(kTokenPath, 500, R"({"developerMessage":"oops"})"));
      auth::Token t = auth::client_credentials(config);
      CHECK_FALSE(t.access_token.empty());
      CHECK(env.server.count("token") == 2);
    }
  }

  TEST_CASE("a connection that dies mid-answer: network error, a refresh is not re-sent") {
    aps_mock::RawServer raw(aps_mock::RawMode::partial_then_close);
    auth::Config config = support::config_for(raw.base_url(), "c", "secret-value-123");
    config.retry.max_attempts = 3;
    config.retry.initial_backoff = 1ms;
    auto e = require_error([&] { (void)auth::refresh(config, "refresh-token-value"); });
    CHECK(e.kind() == auth::ErrorKind::network);
    CHECK(contains(e.what(), "not sent again"));
    check_no_secret(e, {"refresh-token-value", "secret-value-123"});
    CHECK(raw.connections() == 1);
  }

  TEST_CASE("a server that never answers: ErrorKind::timeout after read_timeout") {
    aps_mock::RawServer raw(aps_mock::RawMode::never_answer);
    auth::Config config = support::config_for(raw.base_url(), "c", "secret-value-123");
    config.read_timeout = 300ms;
    config.retry.max_attempts = 3;
    auto t0 = std::chrono::steady_clock::now();
    auto e = require_error([&] { (void)auth::refresh(config, "refresh-token-value"); });
    CHECK(e.kind() == auth::ErrorKind::timeout);
    CHECK(support::seconds_since(t0) < 3.0);
    CHECK(raw.connections() == 1);
    raw.stop();
  }

  TEST_CASE("nothing listening: ErrorKind::network") {
    int port = 0;
    {
      aps_mock::RawServer gone(aps_mock::RawMode::close_immediately);
      port = gone.port();
    }
    auth::Config config = support::config_for("http://127.0.0.1:" + std::to_string(port), "c", "secret-value-123");
    config.retry.max_attempts = 2;
    config.retry.initial_backoff = 1ms;
    auto e = require_error([&] { (void)auth::client_credentials(config); });
    CHECK(e.kind() == auth::ErrorKind::network);
    CHECK(contains(e.what(), std::to_string(port)));
    check_no_secret(e, {"secret-value-123"});
  }
}
