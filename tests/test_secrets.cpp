// Secret hygiene: no secret ever reaches a log. Every `aps-auth` subcommand, on its success and its failure
// paths, run with a recognisable client secret against the HTTPS mock APS server. Afterwards every secret the
// runs handled is collected - the client secret (and its Basic header form), every authorization code, PKCE
// verifier, refresh token and access token the mock received, and every token the CLI printed - and no run may
// show any of them on stderr, nor on stdout except the tokens that are the run's requested output (the token
// JSON of login/token/refresh/demo, the bare access token of access-token). Then the library's own
// Error::what() and ErrorDetails for each failing free function, with servers that echo what they were sent.
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

#include <chrono>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace {

namespace auth = aps::auth;
using json = nlohmann::json;
using namespace std::chrono_literals;
using support::require_error, support::contains, support::printed_tokens, support::RunResult, support::trim;

const char* const kSecret = "SECRET-aaaa-7f3e";
const char* const kWrongSecret = "SECRET-bbbb-0c9d";
const char* const kClient = "secrets-client";
const char* const kTokenPath = "/authentication/v2/token";

// A run and the tokens it may print on stdout (its requested output).
struct Checked {
  RunResult run;
  std::set<std::string> allowed_on_stdout;
};

struct Fixture {
  support::TempDir dir;
  // Two registered callbacks on fixed ports: after a sign-in its port stays unusable for a while (TIME_WAIT of
  // the listener's connections, as the listener binds without SO_REUSEADDR), so a second login takes the other.
  std::string callback, callback2;
  aps_mock::Server mock;
  std::string ca_file, unrelated_ca, browser;
  std::string cli = support::require_cli();
  std::vector<Checked> runs;
  std::set<std::string> extra_secrets;  // secrets the mock did not record (e.g. a wrong secret)

  Fixture()
      : callback("http://127.0.0.1:" + std::to_string(support::free_port()) + "/api/auth/callback"),
        callback2("http://127.0.0.1:" + std::to_string(support::free_port()) + "/api/auth/callback"),
        mock(options(callback, callback2)) {
    ca_file = dir.write("ca.pem", mock.pki().ca_cert_pem);
    unrelated_ca = dir.write("unrelated.pem", aps_mock::Pki::generate("unrelated.example").ca_cert_pem);
    browser = support::stand_in_browser();  // follows the authorize redirect to the CLI's callback
  }
  static aps_mock::Options options(const std::string& cb, const std::string& cb2) {
    aps_mock::Options o;
    o.tls = true;
    o.clients = {{kClient, kSecret, {cb, cb2}}};
    return o;
  }
  std::string base_url() const { return mock.base_url(); }  // https://localhost: mingw cpp-httplib checks names only

  // The environment of a run: the mock, its CA, the secret in APS_CLIENT_SECRET, the stand-in browser; the
  // machine's trust store replaced by an unrelated CA.
  support::EnvMap env() const {
    support::EnvMap e = support::base_env(dir.path());
    e["APS_CLIENT_ID"] = kClient;
    e["APS_CLIENT_SECRET"] = kSecret;
    e["APS_BASE_URL"] = base_url();
    e["APS_CA_FILE"] = ca_file;
    e["APS_CALLBACK_URL"] = callback;
    e["BROWSER"] = browser;
    e["APS_TEST_CA_FILE"] = ca_file;  // the stand-in browser's trust
    e["SSL_CERT_FILE"] = unrelated_ca;
    e["SSL_CERT_DIR"] = dir.path();
    return e;
  }

  RunResult run(const std::vector<std::string>& args, const support::EnvMap& e, int expect_exit,
                bool token_json_output = false, bool bare_token_output = false) {
    Checked c;
    c.run = support::run_cli(args, e, 60s);
    INFO(c.run.describe());
    CHECK(c.run.exit_code == expect_exit);
    if (token_json_output && c.run.exit_code == 0) {
      c.allowed_on_stdout = printed_tokens(c.run.out);
      CHECK_FALSE(c.allowed_on_stdout.empty());
    }
    if (bare_token_output && c.run.exit_code == 0)
      c.allowed_on_stdout = {trim(c.run.out)};
    if (expect_exit != 0)
      CHECK(contains(c.run.err, "aps-auth: "));
    runs.push_back(c);
    return c.run;
  }
  RunResult run(const std::vector<std::string>& args, int expect_exit, bool token_json_output = false,
                bool bare_token_output = false) {
    return run(args, env(), expect_exit, token_json_output, bare_token_output);
  }

  // Everything secret the runs handled: what the mock received, and what the CLI printed.
  std::set<std::string> secrets() const {
    std::set<std::string> s = support::secrets_received_by(mock);
    s.insert(extra_secrets.begin(), extra_secrets.end());
    s.insert(kSecret);
    s.insert(auth::detail::base64(std::string(kClient) + ":" + kSecret, false));  // the Basic header's form
    for (const auto& c : runs)
      for (const auto& t : printed_tokens(c.run.out))
        s.insert(t);
    s.erase("");
    return s;
  }

  // No secret on any stderr; on stdout only the run's own requested tokens.
  void check_all() const {
    const auto all = secrets();
    CHECK(all.size() >= 8);
    for (const auto& c : runs) {
      INFO(c.run.describe());
      for (const auto& s : all) {
        CAPTURE(s);
        CHECK_FALSE(contains(c.run.err, s));
        if (!c.allowed_on_stdout.count(s))
          CHECK_FALSE(contains(c.run.out, s));
      }
    }
  }

  void inject(const std::string& path, int status, const std::string& body, int count = 1) {
    mock.inject(support::fault(path, status, body, count));
  }
};

// An error body that echoes back what the client sent (some servers and proxies do).
std::string echo_body(const std::vector<std::string>& sent) {
  std::string all;
  for (const auto& s : sent)
    all += s + " ";
  json j{{"error", "invalid_request"},
         {"error_description", "rejected: " + all},
         {"developerMessage", "you sent " + all},
         {"userMessage", all},
         {"errorCode", "AUTH-008"},
         {"more info", all}};
  return j.dump();
}

}  // namespace

TEST_SUITE("secrets") {
  TEST_CASE("CLI success paths: login, token, refresh, access-token, introspect, userinfo, revoke, logout, demo") {
    Fixture f;
    // Through a token file: login, refresh, access-token, introspect, userinfo, and at the end logout.
    const std::string token_file = f.dir.file("state/token.json");
    f.run({"login", "--token-file", token_file, "--timeout", "30"}, 0, true);
    CHECK(f.mock.count("token.authorization_code") == 1);
    f.run({"refresh", "--token-file", token_file}, 0, true);
    RunResult at = f.run({"access-token", "--token-file", token_file}, 0, false, true);
    const std::string file_access = trim(at.out);
    CHECK(file_access.size() > 10);
    f.run({"introspect", "--token", file_access}, 0);
    f.run({"userinfo", "--token", file_access}, 0);

    // Without a file: login, refresh by the token on the command line, revoke both tokens.
    auto second = f.env();
    second["APS_CALLBACK_URL"] = f.callback2;
    RunResult login = f.run({"login", "--timeout", "30"}, second, 0, true);
    const std::string rt = json::parse(login.out, nullptr, false).value("refresh_token", "");
    REQUIRE_FALSE(rt.empty());
    RunResult refreshed = f.run({"refresh", "--refresh-token", rt}, 0, true);
    const json r = json::parse(refreshed.out, nullptr, false);
    REQUIRE(r.is_object());
    f.run({"revoke", "--token", r.value("access_token", "")}, 0);
    f.run({"revoke", "--token", r.value("refresh_token", ""), "--token-type-hint", "refresh_token"}, 0);

    // 2-legged: token (secret from the environment, then from the flag), access-token from the secret.
    f.run({"token"}, 0, true);
    f.run({"token", "--client-secret", kSecret, "--client-id", kClient}, f.env(), 0, true);
    f.run({"access-token"}, 0, false, true);

    f.run({"logout", "--token-file", token_file}, 0);
    CHECK(f.mock.count("revoke") >= 3);
    CHECK(f.mock.count("token.authorization_code") == 2);
    CHECK(f.mock.count("token.refresh_token") == 2);
    f.run({"demo"}, support::base_env(f.dir.path()), 0, true);
    f.check_all();
  }

  TEST_CASE("CLI failure paths: wrong secret, invalid_grant, server 500, untrusted TLS, failed login, logout") {
    Fixture f;
    f.extra_secrets.insert(kWrongSecret);
    f.extra_secrets.insert(auth::detail::base64(std::string(kClient) + ":" + kWrongSecret, false));
    const json grant = f.mock.issue_tokens(kClient, "data:read openid");
    const std::string rt = grant["refresh_token"].get<std::string>();
    const std::string access = grant["access_token"].get<std::string>();
    f.extra_secrets.insert(access);

    // A wrong secret, from the environment and from the flag.
    auto wrong = f.env();
    wrong["APS_CLIENT_SECRET"] = kWrongSecret;
    f.run({"token"}, wrong, 1);
    f.run({"refresh", "--refresh-token", rt}, wrong, 1);
    f.run({"introspect", "--token", access}, wrong, 1);
    f.run({"revoke", "--token", access}, wrong, 1);
    f.run({"token", "--client-secret", kWrongSecret}, f.env(), 1);
    CHECK(f.mock.is_valid_refresh_token(rt));

    // invalid_grant: a refresh token that was already used.
    RunResult ok = f.run({"refresh", "--refresh-token", rt}, 0, true);
    RunResult used = f.run({"refresh", "--refresh-token", rt}, 1);
    CHECK(contains(used.err, "invalid_grant"));

    // Server errors whose bodies echo what was sent.
    const std::string rt2 = json::parse(ok.out, nullptr, false).value("refresh_token", "");
    f.inject(kTokenPath, 500, echo_body({rt2, kSecret}));
    RunResult e500 = f.run({"refresh", "--refresh-token", rt2}, 1);
    CHECK(contains(e500.err, "HTTP 500"));
    f.inject(kTokenPath, 500, echo_body({kSecret}), 3);
    f.run({"token"}, 1);
    f.inject("/authentication/v2/introspect", 500, echo_body({access, kSecret}), 3);
    f.run({"introspect", "--token", access}, 1);
    f.inject("/authentication/v2/revoke", 500, echo_body({access, kSecret}), 3);
    f.run({"revoke", "--token", access}, 1);
    f.inject("/userinfo", 500, echo_body({access}), 3);
    f.run({"userinfo", "--token", access}, 1);
    f.inject("/userinfo", 401, echo_body({access}), 3);
    f.run({"userinfo", "--token", access}, 1);

    // Untrusted TLS: no CA for the mock.
    auto untrusted = f.env();
    untrusted.erase("APS_CA_FILE");
    for (std::vector<std::string> args : std::vector<std::vector<std::string>>{{"token"},
                                                                               {"refresh", "--refresh-token", rt2},
                                                                               {"introspect", "--token", access},
                                                                               {"userinfo", "--token", access},
                                                                               {"revoke", "--token", access},
                                                                               {"access-token"}}) {
      RunResult r = f.run(args, untrusted, 1);
      CHECK(contains(r.err, "[aps_auth.tls]"));
    }

    // A login whose code exchange fails.
    f.inject(kTokenPath, 400, R"({"error":"invalid_grant","error_description":"code rejected"})");
    RunResult bad_login = f.run({"login", "--timeout", "30"}, 1);
    CHECK(contains(bad_login.err, "invalid_grant"));
    CHECK(f.mock.count("token.authorization_code") == 1);

    // access-token and logout with a token file whose refresh token is dead, and a revoke endpoint failing.
    const std::string token_file = f.dir.file("state/dead.json");
    auth::Token dead;
    dead.access_token = "expired-access-token-4411";
    dead.refresh_token = rt;  // used above
    dead.expires_in = 3599s;
    dead.expires_at = std::chrono::system_clock::now() - 1h;
    auth::FileTokenStore(token_file).save(dead);
    f.extra_secrets.insert(dead.access_token);
    RunResult a = f.run({"access-token", "--token-file", token_file}, 1);
    CHECK(contains(a.err, "invalid_grant"));
    f.inject("/authentication/v2/revoke", 500, echo_body({rt, kSecret}), 3);
    f.run({"logout", "--token-file", token_file}, 1);
    f.check_all();
  }

  TEST_CASE("library: Error::what() and ErrorDetails of every failing free function carry no secret") {
    const std::string callback = "http://127.0.0.1:8080/api/auth/callback";
    aps_mock::Options o;
    o.tls = true;
    o.clients = {{kClient, kSecret, {callback}}};
    support::Mock m(o);
    aps_mock::Server& mock = m.server;
    support::IsolatedTrust trust(m.dir);
    auth::Config config = m.config(kClient, kSecret);
    config.endpoints = auth::Endpoints::from_base_url(mock.base_url());  // https://localhost (mingw: names only)
    config.read_timeout = 2s;
    config.retry.max_attempts = 1;

    const json grant = mock.issue_tokens(kClient, "data:read openid");
    const std::string rt = grant["refresh_token"].get<std::string>();
    const std::string access = grant["access_token"].get<std::string>();
    const support::IssuedCode issued = support::issue_code(mock, kClient, callback, "data:read");
    const auth::AuthorizationRequest& req = issued.request;
    const std::string& code = issued.code;

    struct Call {
      const char* name;
      const char* path;
      std::vector<std::string> sent;  // the secrets this call sends
      std::function<void(const auth::Config&)> call;
    };
    const std::vector<Call> calls = {
        {"exchange_code",
         kTokenPath,
         {code, req.code_verifier, kSecret},
         [&](const auth::Config& c) { (void)auth::exchange_code(c, req, code); }},
        {"refresh", kTokenPath, {rt, kSecret}, [&](const auth::Config& c) { (void)auth::refresh(c, rt); }},
        {"client_credentials",
         kTokenPath,
         {kSecret},
         [&](const auth::Config& c) { (void)auth::client_credentials(c); }},
        {"revoke",
         "/authentication/v2/revoke",
         {access, kSecret},
         [&](const auth::Config& c) { auth::revoke(c, access, auth::TokenTypeHint::access_token); }},
        {"introspect",
         "/authentication/v2/introspect",
         {access, kSecret},
         [&](const auth::Config& c) { (void)auth::introspect(c, access); }},
        {"userinfo", "/userinfo", {access}, [&](const auth::Config& c) { (void)auth::userinfo(c, access); }},
    };
    const std::vector<std::string> all = {code,    req.code_verifier,
                                          kSecret, rt,
                                          access,  auth::detail::base64(std::string(kClient) + ":" + kSecret, false)};
    auto check_clean = [&](const auth::Error& e) {
      const auto& d = e.details();
      for (const auto& s : all) {
        CAPTURE(s);
        CHECK_FALSE(contains(e.what(), s));
        for (const std::string* field :
             {&d.error, &d.error_description, &d.error_code, &d.developer_message, &d.user_message, &d.more_info})
          CHECK_FALSE(contains(*field, s));
      }
    };
    for (const Call& c : calls) {
      CAPTURE(std::string(c.name));
      for (int status : {400, 401, 500, 200}) {
        if (status == 200 && std::string(c.name) == "revoke")
          continue;  // revoke reads no body on success
        CAPTURE(status);
        // 200: a body that is no answer at all (not a JSON object), still echoing.
        mock.inject(support::fault(c.path, status,
                                   status == 200 ? "<html>" + echo_body(c.sent) + "</html>" : echo_body(c.sent)));
        auto e = require_error([&] { c.call(config); });
        CHECK(contains(e.what(), "***") == (status != 200));  // the echo is there, masked
        check_clean(e);
      }
      {  // untrusted TLS
        auth::Config untrusted = config;
        untrusted.ca_file.clear();
        auto e = require_error([&] { c.call(untrusted); });
        CHECK(e.kind() == auth::ErrorKind::tls);
        check_clean(e);
      }
      {  // a connection reset
        aps_mock::RawServer raw(aps_mock::RawMode::reset);
        auth::Config broken = config;
        broken.endpoints = auth::Endpoints::from_base_url(raw.base_url());
        auto e = require_error([&] { c.call(broken); });
        CHECK(e.kind() == auth::ErrorKind::network);
        check_clean(e);
      }
      {  // a server that never answers
        aps_mock::RawServer raw(aps_mock::RawMode::never_answer);
        auth::Config slow = config;
        slow.endpoints = auth::Endpoints::from_base_url(raw.base_url());
        slow.read_timeout = 200ms;
        auto e = require_error([&] { c.call(slow); });
        CHECK(e.kind() == auth::ErrorKind::timeout);
        check_clean(e);
        raw.stop();
      }
    }
  }
}
