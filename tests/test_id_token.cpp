// OpenID Connect id_token verification: RS256 against the mock's JWKS, with keys generated at test time, and
// every forgery or mismatch rejected.
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/mock.hpp"
#include "support/text.hpp"
#include "support/timing.hpp"

#include <chrono>
#include <string>
#include <thread>

namespace auth = aps::auth;
using nlohmann::json;

using support::contains, support::unix_now;

namespace {

struct Fixture {
  support::Mock env{aps_mock::Options{}};
  aps_mock::Server& mock = env.server;
  auth::Config config = env.config("mock-client", "mock-secret");
  json claims;

  Fixture() {
    config.retry.max_attempts = 1;
    claims = {{"iss", mock.issuer()}, {"aud", "mock-client"},     {"sub", "USER1"},  {"email", "u@example.com"},
              {"iat", unix_now()},    {"exp", unix_now() + 3600}, {"nonce", "n-123"}};
  }
  std::string signed_token(const json& c) const { return mock.sign_rs256({{"alg", "RS256"}, {"typ", "JWT"}}, c); }

  // The error verify_id_token throws (it must throw bad_response for every rejection).
  std::string rejection(const std::string& token, const std::string& nonce = "n-123") const {
    try {
      (void)auth::verify_id_token(config, token, nonce);
    } catch (const auth::Error& e) {
      CHECK(e.kind() == auth::ErrorKind::bad_response);
      return e.what();
    }
    FAIL("the id_token was accepted");
    return {};
  }
};

}  // namespace

TEST_SUITE("id_token") {
  TEST_CASE("a valid RS256 id_token verifies and its claims are exposed") {
    Fixture f;
    auto c = auth::verify_id_token(f.config, f.signed_token(f.claims), "n-123");
    CHECK(c.subject == "USER1");
    CHECK(c.email == "u@example.com");
    CHECK(c.audience == "mock-client");
    CHECK(c.nonce == "n-123");
    CHECK(c.issuer == f.mock.issuer());
    CHECK(c.expires_at > std::chrono::system_clock::now());
    CHECK(contains(c.json, "\"sub\":\"USER1\""));
    CHECK(f.mock.count("keys") == 1);
    // The JWKS is cached: a second verification fetches nothing.
    (void)auth::verify_id_token(f.config, f.signed_token(f.claims), "n-123");
    CHECK(f.mock.count("keys") == 1);
  }

  TEST_CASE("an audience list containing the client with azp verifies") {
    Fixture f;
    f.claims["aud"] = json::array({"other", "mock-client"});
    f.claims["azp"] = "mock-client";
    CHECK(auth::verify_id_token(f.config, f.signed_token(f.claims), "n-123").subject == "USER1");
  }

  TEST_CASE("a token signed with another key is rejected") {
    Fixture f;
    auto wrong = aps_mock::Server::generate_rsa_key();
    std::string token =
        aps_mock::Server::sign_with_key_rs256(wrong.get(), {{"alg", "RS256"}, {"kid", f.mock.key_id()}}, f.claims);
    CHECK(contains(f.rejection(token), "signature"));
  }

  TEST_CASE("an unknown kid refetches the JWKS once, then is rejected") {
    Fixture f;
    (void)auth::verify_id_token(f.config, f.signed_token(f.claims), "n-123");  // fills the cache
    int before = f.mock.count("keys");
    auto wrong = aps_mock::Server::generate_rsa_key();
    std::string token =
        aps_mock::Server::sign_with_key_rs256(wrong.get(), {{"alg", "RS256"}, {"kid", "rotated-key"}}, f.claims);
    CHECK(contains(f.rejection(token), "kid"));
    CHECK(f.mock.count("keys") == before + 1);
  }

  TEST_CASE("an expired token is rejected (beyond the leeway), one within the leeway verifies") {
    Fixture f;
    f.claims["iat"] = unix_now() - 7200;
    f.claims["exp"] = unix_now() - 120;
    CHECK(contains(f.rejection(f.signed_token(f.claims)), "expired"));
    f.claims["exp"] = unix_now() - 10;  // 60 s leeway
    CHECK(auth::verify_id_token(f.config, f.signed_token(f.claims), "n-123").subject == "USER1");
  }

  TEST_CASE("a token issued in the future is rejected") {
    Fixture f;
    f.claims["iat"] = unix_now() + 600;
    CHECK(contains(f.rejection(f.signed_token(f.claims)), "future"));
  }

  TEST_CASE("a wrong audience is rejected") {
    Fixture f;
    f.claims["aud"] = "another-client";
    CHECK(contains(f.rejection(f.signed_token(f.claims)), "aud"));
    f.claims["aud"] = json::array({"another-client", "mock-client"});  // a list without azp naming us
    CHECK(contains(f.rejection(f.signed_token(f.claims)), "aud"));
  }

  TEST_CASE("a wrong issuer is rejected") {
    Fixture f;
    f.claims["iss"] = "https://evil.example";
    CHECK(contains(f.rejection(f.signed_token(f.claims)), "issuer"));
  }

  TEST_CASE("a wrong nonce is rejected") {
    Fixture f;
    CHECK(contains(f.rejection(f.signed_token(f.claims), "another-nonce"), "nonce"));
    f.claims.erase("nonce");
    CHECK(contains(f.rejection(f.signed_token(f.claims), "n-123"), "nonce"));
  }

  TEST_CASE("alg none is rejected") {
    Fixture f;
    std::string header = auth::detail::base64(json{{"alg", "none"}, {"typ", "JWT"}}.dump(), true);
    std::string payload = auth::detail::base64(f.claims.dump(), true);
    CHECK(contains(f.rejection(header + "." + payload + "."), "alg"));
    // The same token carrying a valid RS256 signature of other content is still refused for its alg.
    std::string good = f.signed_token(f.claims);
    CHECK(contains(f.rejection(header + "." + payload + good.substr(good.rfind('.'))), "alg"));
  }

  TEST_CASE("HS256 signed with the server's public key is rejected (algorithm confusion)") {
    Fixture f;
    std::string token =
        aps_mock::Server::sign_hs256(f.mock.public_key_pem(), {{"alg", "HS256"}, {"kid", f.mock.key_id()}}, f.claims);
    CHECK(contains(f.rejection(token), "alg"));
  }

  TEST_CASE("malformed tokens are rejected without crashing") {
    Fixture f;
    for (const char* t : {"", "a", "a.b", "a.b.c.d", "!!!.???.***", "e30.e30.", "e30.e30.e30"}) {
      CAPTURE(t);
      if (*t == '\0') {
        CHECK_THROWS_AS((void)auth::verify_id_token(f.config, t), auth::Error);
      } else {
        (void)f.rejection(t);
      }
    }
  }

  TEST_CASE("login() verifies the id_token of the openid scope with the nonce it sent") {
    aps_mock::Options o;
    o.consent = aps_mock::Consent::auto_approve;
    aps_mock::Server mock(o);
    auth::Config config;
    config.client_id = "mock-client";
    config.client_secret = "mock-secret";
    config.scopes = {"data:read", "openid"};
    config.callback_url = "http://127.0.0.1:0/api/auth/callback";
    config.endpoints = auth::Endpoints::from_base_url(mock.base_url());
    config.proxy = "direct";
    auth::LoginOptions options;
    options.timeout = std::chrono::seconds(20);
    options.on_listening = [&](auth::LoopbackListener& l) {
      auto opts = mock.options();
      opts.clients = {{"mock-client", "mock-secret", {l.redirect_uri()}}};
      mock.set_options(opts);
    };
    std::thread browser;
    options.browser = [&](const std::string& url) {
      browser = std::thread([url] { (void)aps_mock::follow_like_browser(url); });
      return true;
    };
    auth::Token token = auth::login(config, options);
    browser.join();
    REQUIRE_FALSE(token.id_token.empty());
    auto claims = auth::verify_id_token(config, token.id_token);
    CHECK_FALSE(claims.nonce.empty());
    const auto& reqs = mock.requests();
    bool nonce_sent = false;
    for (const auto& r : reqs)
      if (r.path == "/authentication/v2/authorize" && r.param("nonce") == claims.nonce)
        nonce_sent = true;
    CHECK(nonce_sent);
  }
}
