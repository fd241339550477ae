// Tests of TLS verification of every call the library makes: the server's certificate must chain to a trusted
// CA and name the host, or the call fails with ErrorKind::tls before anything is sent. Against the HTTPS mock APS
// server with certificates generated at test time. The machine's trust store is replaced for these tests by one
// unrelated CA (support::IsolatedTrust), so what is trusted is exactly what a test says: Config::ca_file,
// APS_CA_FILE or SSL_CERT_FILE.
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/environment.hpp"
#include "support/library.hpp"
#include "support/mock.hpp"
#include "support/text.hpp"
#include "support/timing.hpp"

#include <chrono>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace auth = aps::auth;
using namespace std::chrono_literals;
using Env = support::MockEnv;
using support::catch_error, support::contains, support::ScopedEnv;

namespace {

// A Config for the mock reached under `host` ("localhost", "127.0.0.1") instead of the mock's own base URL.
auth::Config config_via(const Env& env, const std::string& host) {
  auth::Config c = env.config(true);
  c.endpoints = auth::Endpoints::from_base_url("https://" + host + ":" + std::to_string(env.server.port()));
  return c;
}

// Every call that talks to the server, one after the other; returns the first Error (nullopt: all worked).
std::optional<auth::Error> call_everything(Env& env, const auth::Config& config) {
  return catch_error([&] {
    auth::Token cc = auth::client_credentials(config);
    auto g = env.server.issue_tokens(config.client_id, "data:read openid");
    auth::Token r = auth::refresh(config, g.at("refresh_token").get<std::string>());
    (void)auth::introspect(config, r.access_token);
    (void)auth::userinfo(config, r.access_token);
    auth::revoke(config, cc.access_token, auth::TokenTypeHint::access_token);
    (void)auth::discover(config, config.endpoints.issuer);
  });
}

// Every call works: call_everything threw nothing.
void check_everything_works(Env& env, const auth::Config& config) {
  auto e = call_everything(env, config);
  CHECK_FALSE(e.has_value());
  if (e)
    MESSAGE(e->what());
}

void check_tls_error(const std::optional<auth::Error>& e) {
  REQUIRE(e);
  CHECK(e->kind() == auth::ErrorKind::tls);
  CHECK(std::string(e->what()).rfind("[aps_auth.tls] ", 0) == 0);
  CHECK_FALSE(contains(e->what(), Env::kConfidentialSecret));
}

}  // namespace

TEST_SUITE("tls") {
  TEST_CASE("a server whose CA is not trusted is refused with ErrorKind::tls, before any request is sent") {
    Env env(true);
    auth::Config config = env.config(true);
    config.ca_file.clear();
    config.retry.max_attempts = 3;  // a TLS failure is not retried either
    auto t0 = std::chrono::steady_clock::now();
    auto e = catch_error([&] { (void)auth::client_credentials(config); });
    check_tls_error(e);
    CHECK(contains(e->what(), "not trusted"));
    CHECK(support::seconds_since(t0) < 2.0);
    CHECK(env.server.count("token") == 0);  // the handler never saw the request (nor the credentials)

    SUBCASE("every endpoint call verifies") {
      const std::string rt = "refresh-token-never-sent";
      const std::vector<std::pair<const char*, std::function<void()>>> calls = {
          {"exchange_code",
           [&] { (void)auth::exchange_code(config, auth::authorization_request(config), "code-never-sent"); }},
          {"refresh", [&] { (void)auth::refresh(config, rt); }},
          {"client_credentials", [&] { (void)auth::client_credentials(config); }},
          {"revoke", [&] { auth::revoke(config, rt, auth::TokenTypeHint::refresh_token); }},
          {"introspect", [&] { (void)auth::introspect(config, rt); }},
          {"userinfo", [&] { (void)auth::userinfo(config, rt); }},
          {"discover", [&] { (void)auth::discover(config, env.server.issuer()); }},
      };
      for (const auto& call : calls) {
        const std::string name = call.first;
        CAPTURE(name);
        auto err = catch_error(call.second);
        check_tls_error(err);
        CHECK_FALSE(contains(err->what(), rt));
        CHECK_FALSE(contains(err->what(), "code-never-sent"));
      }
      CHECK(env.server.requests().empty());
    }
  }

  TEST_CASE("with Config::ca_file naming the mock's CA, every call works over HTTPS") {
    Env env(true);
    auth::Config config = env.config(true);
    REQUIRE_FALSE(config.ca_file.empty());
    check_everything_works(env, config);
  }

  TEST_CASE("a certificate whose names do not match the host is refused with ErrorKind::tls") {
    SUBCASE("issued for other.example, reached as localhost and as 127.0.0.1") {
      Env env(true, [](aps_mock::Options& o) { o.pki = aps_mock::Pki::generate_for({"other.example"}, {}); });
      for (const char* host : {"localhost", "127.0.0.1"}) {
        CAPTURE(host);
        auto e = catch_error([&] { (void)auth::client_credentials(config_via(env, host)); });
        check_tls_error(e);
      }
      CHECK(env.server.count("token") == 0);
    }
    SUBCASE("issued for DNS:localhost only: works as localhost, refused as 127.0.0.1") {
      Env env(true, [](aps_mock::Options& o) { o.pki = aps_mock::Pki::generate_for({"localhost"}, {}); });
      CHECK_FALSE(catch_error([&] { (void)auth::client_credentials(config_via(env, "localhost")); }).has_value());
      check_tls_error(catch_error([&] { (void)auth::client_credentials(config_via(env, "127.0.0.1")); }));
    }
    SUBCASE("issued for IP:127.0.0.1 only: works as 127.0.0.1, refused as localhost") {
      Env env(true, [](aps_mock::Options& o) { o.pki = aps_mock::Pki::generate_for({}, {"127.0.0.1"}); });
      CHECK_FALSE(catch_error([&] { (void)auth::client_credentials(config_via(env, "127.0.0.1")); }).has_value());
      check_tls_error(catch_error([&] { (void)auth::client_credentials(config_via(env, "localhost")); }));
    }
  }

  // With Config::ca_file empty, `variable` naming the mock's CA makes every call work; set back to what it was
  // (unset, or the unrelated "system" CA), the mock is refused again.
  void check_trusted_through(const char* variable) {
    Env env(true);
    auth::Config config = env.config(true);
    config.ca_file.clear();
    {
      ScopedEnv ca(variable, env.ca_file.c_str());
      check_everything_works(env, config);
    }
    check_tls_error(catch_error([&] { (void)auth::client_credentials(config); }));
  }

  TEST_CASE("APS_CA_FILE is honoured when Config::ca_file is empty") {
    check_trusted_through("APS_CA_FILE");
  }

  TEST_CASE("SSL_CERT_FILE (OpenSSL's default trust store) is honoured") {
    check_trusted_through("SSL_CERT_FILE");
  }

  TEST_CASE("ca_file adds to the default store: a bundle with an unrelated CA does not trust the mock") {
    Env env(true);
    auth::Config config = env.config(true);
    config.ca_file = env.trust.system_file();  // a valid PEM, but of another CA
    check_tls_error(catch_error([&] { (void)auth::client_credentials(config); }));
  }

  TEST_CASE("an unreadable or invalid ca_file is ErrorKind::tls naming the file") {
    Env env(true);
    auth::Config config = env.config(true);
    SUBCASE("missing") {
      config.ca_file = env.dir.file("no-such-ca.pem");
      auto e = catch_error([&] { (void)auth::client_credentials(config); });
      check_tls_error(e);
      CHECK(contains(e->what(), "no-such-ca.pem"));
    }
    SUBCASE("not PEM") {
      config.ca_file = env.dir.file("garbage.pem");
      std::ofstream(config.ca_file) << "this is not a certificate\n";
      auto e = catch_error([&] { (void)auth::client_credentials(config); });
      check_tls_error(e);
      CHECK(contains(e->what(), "garbage.pem"));
    }
    CHECK(env.server.count("token") == 0);
  }

  TEST_CASE("https:// to a server that does not speak TLS is ErrorKind::tls, not a silent fallback") {
    Env env(false);  // plain HTTP mock
    auth::Config config = env.config(true);
    config.endpoints = auth::Endpoints::from_base_url("https://127.0.0.1:" + std::to_string(env.server.port()));
    check_tls_error(catch_error([&] { (void)auth::client_credentials(config); }));
    CHECK(env.server.count("token") == 0);

    SUBCASE("nor to one that answers plain HTTP bytes") {
      aps_mock::RawServer raw(aps_mock::RawMode::send_bytes,
                              "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
      config.endpoints = auth::Endpoints::from_base_url("https://127.0.0.1:" + std::to_string(raw.port()));
      check_tls_error(catch_error([&] { (void)auth::client_credentials(config); }));
    }
  }

  TEST_CASE("login(): the code exchange verifies TLS too (browser trusted the server, the library does not)") {
    Env env(true);
    auth::Config config = env.config(false);
    config.ca_file.clear();
    config.callback_url = "http://127.0.0.1:0/api/auth/callback";
    support::ScriptedBrowser browser(env.server, env.server.pki().ca_cert_pem);
    auth::LoginOptions options = browser.login_options();
    options.timeout = 15s;
    auto e = catch_error([&] { (void)auth::login(config, options); });
    check_tls_error(e);
    CHECK(browser.result().status == 200);  // the listener accepted the callback
    CHECK(env.server.count("authorize") == 1);
    CHECK(env.server.count("token") == 0);  // the code never reached an untrusted server
  }
}
