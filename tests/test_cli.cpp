// End-to-end tests of the `aps-auth` CLI: the built binary ($APS_AUTH_CLI) run as a child process,
// with an environment the test controls and stdout/stderr captured separately, against an
// in-process mock APS server over HTTP and over HTTPS (a CA generated at test time, trusted through
// --ca-file). `login` runs with $BROWSER set to the stand-in browser (support::stand_in_browser(): it
// follows the redirect to the loopback callback), or with --no-browser and the test itself following the URL
// the CLI printed. Every run's stderr is checked for the client secret, codes, PKCE verifiers and
// tokens: none may appear there.
#include <doctest/doctest.h>

#include "support/cli.hpp"
#include "support/environment.hpp"
#include "support/files.hpp"
#include "support/mock.hpp"
#include "support/network.hpp"
#include "support/platform.hpp"
#include "support/process.hpp"
#include "support/text.hpp"
#include "support/timing.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using support::contains, support::EnvMap, support::require_cli, support::unix_now;
using Run = support::RunResult;

std::string find_arg(const std::vector<std::string>& args, const std::string& name) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == name && i + 1 < args.size())
      return args[i + 1];
    if (args[i].rfind(name + "=", 0) == 0)
      return args[i].substr(name.size() + 1);
  }
  return "";
}

const char* const kSecret = "cli-secret-9f8e7d6c5b4a";
const char* const kClient = "cli-client";
const char* const kPublic = "cli-public";

// One mock APS server (HTTP or HTTPS) and the means to run the CLI against it.
struct Fixture : support::Mock {
  std::string callback;
  std::set<std::string> secrets;  // values that must never appear on any stderr

  explicit Fixture(bool tls = false) : support::Mock(options(tls)) { secrets.insert(kSecret); }

  static aps_mock::Options options(bool tls) {
    aps_mock::Options o;
    o.tls = tls;
    o.clients = {{kClient, kSecret, {}}, {kPublic, "", {}}};
    return o;
  }

  // A fresh callback URL on a free port (the CLI's callback must be registered with the mock before the
  // browser is started, exactly, so the port is chosen up front), registered (exactly) for both clients.
  std::string register_callback() {
    callback = "http://127.0.0.1:" + std::to_string(support::free_port()) + "/api/auth/callback";
    aps_mock::Options o = server.options();
    o.clients = {{kClient, kSecret, {callback}}, {kPublic, "", {callback}}};
    server.set_options(o);
    return callback;
  }


  // The environment of a run: a minimal one (support::base_env) with a private HOME, a $BROWSER that
  // cannot start (so nothing real ever opens) and the mock's address; nothing else is inherited (no
  // proxy, no SSL_CERT_FILE, no APS_*).
  EnvMap env(bool confidential = true) const {
    EnvMap e = support::base_env(dir.path());
    e["LC_ALL"] = "C";
    e["BROWSER"] = "aps-auth-test-no-such-browser";
    e["APS_BASE_URL"] = server.base_url();
    e["APS_CLIENT_ID"] = confidential ? kClient : kPublic;
    if (confidential)
      e["APS_CLIENT_SECRET"] = kSecret;
    if (!ca_file.empty())
      e["APS_CA_FILE"] = ca_file;
    return e;
  }

  Run run(const std::vector<std::string>& args, const EnvMap& environment,
          const support::StderrWatcher& on_stderr = {},
          std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    Run r = support::run_cli(args, environment, timeout, on_stderr);
    check_stderr_clean(r, environment);
    return r;
  }
  Run run(const std::vector<std::string>& args) { return run(args, env()); }

  // No secret of any kind on stderr: the client secret, any code, verifier or token the mock saw or
  // issued, and any token the CLI printed or was given.
  void check_stderr_clean(const Run& r, const EnvMap& environment) {
    std::set<std::string> s = secrets;
    if (auto it = environment.find("APS_CLIENT_SECRET"); it != environment.end())
      s.insert(it->second);
    for (const char* flag : {"--client-secret", "--refresh-token", "--token"})
      s.insert(find_arg(r.argv, flag));
    for (const auto& secret : support::secrets_received_by(server))
      s.insert(secret);
    for (const auto& token : support::printed_tokens(r.out))
      s.insert(token);
    for (const auto& line : support::split_lines(r.out))
      s.insert(line);  // access-token prints a bare token
    for (const auto& secret : s) {
      if (secret.size() < 8)
        continue;
      CHECK_MESSAGE(!contains(r.err, secret), "a secret, code or token ("
                                                  << secret.substr(0, 4)
                                                  << "...) appeared on stderr of\n"
                                                  << r.describe());
    }
  }
};

json parse_object(const Run& r) {
  json j = json::parse(r.out, nullptr, false);
  INFO(r.describe());
  REQUIRE(j.is_object());
  return j;
}

// The token JSON the CLI prints: a Bearer access token, expires_in and the absolute expires_at (Unix
// seconds), refresh_token when 3-legged, id_token with the openid scope.
void check_token_json(const json& j, bool three_legged, bool openid) {
  REQUIRE(j.is_object());
  CHECK(j.value("access_token", "").size() >= 16);
  CHECK(j.value("token_type", "") == "Bearer");
  REQUIRE(j.contains("expires_in"));
  CHECK(j["expires_in"].get<std::int64_t>() == 3599);
  REQUIRE(j.contains("expires_at"));
  std::int64_t expires_at = j["expires_at"].get<std::int64_t>();
  CHECK(expires_at >= unix_now() + 3599 - 60);
  CHECK(expires_at <= unix_now() + 3599 + 5);
  CHECK(j.contains("refresh_token") == three_legged);
  CHECK(j.contains("id_token") == openid);
}

// Checks that the mock saw a sign-in with state and PKCE S256, and that the code exchange carried
// the verifier of that challenge and the identical redirect_uri.
void check_state_and_pkce(const Fixture& f) {
  auto authorizes = f.requests_to(support::kAuthorizePath);
  REQUIRE(authorizes.size() == 1);
  const auto& a = authorizes[0];
  CHECK(a.param("state").size() >= 22);  // 128 bits, base64url
  CHECK(a.param("code_challenge_method") == "S256");
  CHECK(a.param("redirect_uri") == f.callback);
  std::vector<aps_mock::RecordedRequest> exchanges;
  for (const auto& t : f.requests_to(support::kTokenPath))
    if (t.param("grant_type") == "authorization_code")
      exchanges.push_back(t);
  REQUIRE(exchanges.size() == 1);
  const std::string verifier = exchanges[0].param("code_verifier");
  CHECK(verifier.size() >= 43);
  CHECK(aps_mock::detail::base64url(aps_mock::detail::sha256(verifier)) ==
        a.param("code_challenge"));
  CHECK(exchanges[0].param("redirect_uri") == f.callback);
}

// Writes a token file (mode 0600) like FileTokenStore does.
void write_token_file(const std::string& path, const json& token) {
  support::write_file(path, token.dump() + "\n", 0600);
}

json read_json_file(const std::string& path) {
  return json::parse(support::read_file(path).value_or(""), nullptr, false);
}

// The environment of a login whose callback is registered with the mock and whose $BROWSER follows
// the redirect.
EnvMap browser_env(Fixture& f) {
  auto e = f.env();
  e["APS_CALLBACK_URL"] = f.register_callback();
  e["BROWSER"] = support::stand_in_browser();
  if (!f.ca_file.empty())
    e["APS_TEST_CA_FILE"] = f.ca_file;
  return e;
}

}  // namespace

TEST_SUITE("cli") {
  TEST_CASE("cli: --help, usage errors and exit codes") {
    require_cli();
    Fixture f;

    SUBCASE("--help and -h print the usage on stdout, exit 0") {
      for (const char* h : {"--help", "-h", "help"}) {
        Run r = f.run({h});
        INFO(r.describe());
        CHECK(r.exit_code == 0);
        CHECK(contains(r.out, "usage: aps-auth"));
        for (const char* cmd : {"login", "token", "refresh", "revoke", "introspect", "userinfo",
                                "demo", "access-token", "logout"})
          CHECK(contains(r.out, cmd));
        CHECK(r.err.empty());
      }
    }
    SUBCASE("COMMAND --help prints that command's usage, exit 0") {
      for (const char* cmd : {"login", "token", "refresh", "revoke", "introspect", "userinfo",
                              "demo", "access-token", "logout"}) {
        Run r = f.run({cmd, "--help"});
        INFO(r.describe());
        CHECK(r.exit_code == 0);
        CHECK(contains(r.out, std::string("usage: aps-auth ") + cmd));
        CHECK(r.err.empty());
      }
      Run r = f.run({"-h", "refresh"});
      CHECK(r.exit_code == 0);
      CHECK(contains(r.out, "--refresh-token"));
    }
    SUBCASE("usage errors: exit 2, the reason and the usage on stderr, nothing on stdout") {
      struct Case {
        std::vector<std::string> args;
        const char* says;
      };
      const std::vector<Case> cases = {
          {{}, "no command"},
          {{"frobnicate"}, "unknown command"},
          {{"token", "--frobnicate"}, "unknown option --frobnicate"},
          {{"token", "--client-secrt=abcdefgh"}, "unknown option --client-secrt"},
          {{"login", "-x"}, "unknown option -x"},
          {{"token", "--client-id"}, "needs a value"},
          {{"token", "--scopes", "--client-id", "x"}, "needs a value"},
          {{"revoke", "--token"}, "needs a value"},
          {{"login", "--no-browser=yes"}, "takes no value"},
          {{"login", "--timeout", "soon"}, "--timeout"},
          {{"login", "--timeout", "-5"}, "--timeout"},
          {{"refresh"}, "--refresh-token"},
          {{"revoke"}, "missing --token"},
          {{"revoke", "--token", "abcdefgh1234", "--token-type-hint", "id_token"},
           "--token-type-hint"},
          {{"introspect"}, "missing --token"},
          {{"userinfo"}, "missing --token"},
          {{"logout"}, "--token-file"},
          {{"token", "--refresh-token", "abcdefgh1234"}, "does not apply"},
          {{"token", "extra"}, "unexpected argument"},
      };
      for (const auto& c : cases) {
        Run r = f.run(c.args);
        INFO(r.describe());
        CHECK(r.exit_code == 2);
        CHECK(contains(r.err, c.says));
        CHECK(contains(r.err, "usage: aps-auth"));
        CHECK(r.out.empty());
      }
    }
    SUBCASE("a token in the wrong place is not echoed in the usage error") {
      const std::string token = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLXZhbHVl.c2lnbmF0dXJl";
      f.secrets.insert(token);
      for (const std::vector<std::string>& args :
           {std::vector<std::string>{"revoke", token}, std::vector<std::string>{token},
            std::vector<std::string>{"revoke", "--token-type-hint", token, "--token", "x"}}) {
        Run r = f.run(args);
        INFO(r.describe());
        CHECK(r.exit_code == 2);
        CHECK(!contains(r.err, token.substr(0, 20)));
      }
    }
    SUBCASE("a missing client id is a usage error (exit 2)") {
      auto e = f.env();
      e.erase("APS_CLIENT_ID");
      for (const char* cmd : {"login", "token"}) {
        Run r = f.run({cmd}, e);
        INFO(r.describe());
        CHECK(r.exit_code == 2);
        CHECK(contains(r.err, "client id"));
        CHECK(contains(r.err, "APS_CLIENT_ID"));
      }
      Run r = f.run({"refresh", "--refresh-token", "abcdefgh12345678"}, e);
      CHECK(r.exit_code == 2);
    }
    SUBCASE("token without a secret is a usage error (exit 2)") {
      Run r = f.run({"token"}, f.env(false));
      INFO(r.describe());
      CHECK(r.exit_code == 2);
      CHECK(contains(r.err, "client secret"));
    }
    SUBCASE("a non-loopback plain-http base URL is refused as usage (exit 2)") {
      Run r = f.run({"token", "--base-url", "http://example.com"});
      INFO(r.describe());
      CHECK(r.exit_code == 2);
      CHECK(contains(r.err, "aps-auth: [aps_auth.usage]"));
    }
    CHECK(f.server.count("token") == 0);  // no usage error ever reached the server
  }

  TEST_CASE("cli: token (2-legged), over HTTP and over HTTPS") {
    require_cli();
    SUBCASE("from the environment") {
      for (bool tls : {false, true}) {
        CAPTURE(tls);
        Fixture f(tls);
        Run r = f.run({"token"});
        INFO(r.describe());
        REQUIRE(r.exit_code == 0);
        check_token_json(parse_object(r), false, false);
        auto t = f.requests_to(support::kTokenPath);
        REQUIRE(t.size() == 1);
        CHECK(t[0].param("grant_type") == "client_credentials");
        CHECK(t[0].param("scope") == "data:read");  // the default
        CHECK(t[0].header("Authorization").rfind("Basic ", 0) == 0);
        CHECK(t[0].param("client_secret").empty());  // never in the body, never both
      }
    }
    SUBCASE("from flags, both --flag value and --flag=value, overriding the environment") {
      for (bool tls : {false, true}) {
        CAPTURE(tls);
        Fixture f(tls);
        auto e = f.env();
        e["APS_CLIENT_ID"] = "someone-else";
        e["APS_CLIENT_SECRET"] = "wrong-secret-from-env";
        e["APS_BASE_URL"] = "http://127.0.0.1:9";
        std::vector<std::string> args = {"token",
                                         "--client-id=" + std::string(kClient),
                                         "--client-secret",
                                         kSecret,
                                         "--base-url=" + f.server.base_url(),
                                         "--scopes",
                                         "data:read bucket:read"};
        if (tls) {
          e.erase("APS_CA_FILE");
          args.push_back("--ca-file=" + f.ca_file);
        }
        Run r = f.run(args, e);
        INFO(r.describe());
        REQUIRE(r.exit_code == 0);
        check_token_json(parse_object(r), false, false);
        auto t = f.requests_to(support::kTokenPath);
        REQUIRE(t.size() == 1);
        CHECK(t[0].param("scope") == "data:read bucket:read");
      }
    }
    SUBCASE("--issuer: endpoints by OpenID Connect discovery") {
      for (bool tls : {false, true}) {
        CAPTURE(tls);
        Fixture f(tls);
        auto e = f.env();
        e.erase("APS_BASE_URL");
        Run r = f.run({"token", "--issuer", f.server.issuer()}, e);
        INFO(r.describe());
        REQUIRE(r.exit_code == 0);
        check_token_json(parse_object(r), false, false);
        CHECK(f.server.count("discovery") == 1);
      }
    }
    SUBCASE("a wrong secret: exit 1 with the APS error code, the secret not on stderr") {
      for (bool tls : {false, true}) {
        CAPTURE(tls);
        Fixture f(tls);
        const std::string wrong = "wrong-secret-0123456789";
        f.secrets.insert(wrong);
        auto e = f.env();
        e["APS_CLIENT_SECRET"] = wrong;
        Run r = f.run({"token"}, e);
        INFO(r.describe());
        CHECK(r.exit_code == 1);
        CHECK(contains(r.err, "aps-auth: [aps_auth."));
        CHECK(contains(r.err, "AUTH-003"));
        CHECK(r.out.empty());
      }
    }
  }

  TEST_CASE("cli: HTTPS needs a trusted CA") {
    require_cli();
    Fixture f(true);
    auto e = f.env();
    e.erase("APS_CA_FILE");  // the mock's CA is not in the system store
    Run r = f.run({"token"}, e);
    INFO(r.describe());
    CHECK(r.exit_code == 1);
    CHECK(contains(r.err, "aps-auth: [aps_auth.tls]"));
    CHECK(contains(r.err, "certificate"));
    CHECK(r.out.empty());
    CHECK(f.server.count("token") == 0);

    // SSL_CERT_FILE is honoured (by OpenSSL's default paths).
    e["SSL_CERT_FILE"] = f.ca_file;
    Run ok = f.run({"token"}, e);
    INFO(ok.describe());
    CHECK(ok.exit_code == 0);
  }

  TEST_CASE("cli: login through $BROWSER, over HTTP and over HTTPS") {
    require_cli();
    SUBCASE("confidential client, with openid") {
      for (bool tls : {false, true}) {
        CAPTURE(tls);
        Fixture f(tls);
        Run r = f.run({"login", "--scopes", "data:read openid", "--timeout", "20"}, browser_env(f));
        INFO(r.describe());
        REQUIRE(r.exit_code == 0);
        check_token_json(parse_object(r), true, true);
        check_state_and_pkce(f);
        CHECK(contains(r.err, "Waiting"));
        CHECK(contains(r.err, f.callback));
        CHECK(
            !contains(r.err, "/authentication/v2/authorize?"));  // a browser opened: no URL needed
        auto t = f.requests_to(support::kTokenPath);
        REQUIRE(t.size() == 1);
        CHECK(t[0].header("Authorization").rfind("Basic ", 0) == 0);
        CHECK(f.server.count("keys") >= 1);  // the id_token was verified against the JWKS
      }
    }
    SUBCASE("public client (no secret): PKCE, client_id in the body") {
      for (bool tls : {false, true}) {
        CAPTURE(tls);
        Fixture f(tls);
        auto e = browser_env(f);
        e["APS_CLIENT_ID"] = kPublic;
        e.erase("APS_CLIENT_SECRET");
        Run r = f.run({"login", "--timeout", "20"}, e);
        INFO(r.describe());
        REQUIRE(r.exit_code == 0);
        check_token_json(parse_object(r), true, false);
        check_state_and_pkce(f);
        auto t = f.requests_to(support::kTokenPath);
        REQUIRE(t.size() == 1);
        CHECK(t[0].header("Authorization").empty());
        CHECK(t[0].param("client_id") == kPublic);
      }
    }
  }

  TEST_CASE("cli: login --no-browser prints the URL on stderr and waits for it; a wrong state is ignored") {
    require_cli();
    Fixture f(true);
    aps_mock::Options o = f.server.options();
    o.consent = aps_mock::Consent::page;  // the test presses "Allow" like a user would
    f.server.set_options(o);
    auto e = f.env(false);               // and a public client
    e["BROWSER"] = support::stand_in_browser();  // must not be used with --no-browser
    const std::string callback = f.register_callback();
    const int port = std::stoi(callback.substr(callback.rfind(':') + 1));
    bool followed = false;
    support::raw_http::Response forged;
    aps_mock::BrowseResult browsed;
    auto follow = [&](const std::string& err) {
      const std::string start = f.server.base_url() + "/authentication/v2/authorize?";
      std::size_t at = err.find(start);
      if (followed || at == std::string::npos)
        return;
      std::size_t end = err.find_first_of(" \r\n", at);
      if (end == std::string::npos)
        return;  // the line is not complete yet
      followed = true;
      // First a callback with a state of another sign-in (a forged one): refused with a page, and the
      // CLI goes on waiting; then the real one.
      forged = support::raw_http::request("127.0.0.1", port, "/api/auth/callback?code=forged-code&state=" +
                                                                 std::string(22, 'A'));
      browsed = aps_mock::follow_like_browser(err.substr(at, end - at), f.server.pki().ca_cert_pem);
    };
    Run r =
        f.run({"login", "--no-browser", "--callback-url", callback, "--timeout", "20"}, e, follow);
    INFO(r.describe());
    REQUIRE(followed);
    CHECK(forged.status == 400);
    CHECK(contains(forged.body, "does not belong to the sign-in in progress"));
    CHECK(browsed.status == 200);
    CHECK(contains(browsed.body, "signed in"));  // the listener's page
    REQUIRE(r.exit_code == 0);
    check_token_json(parse_object(r), true, false);
    check_state_and_pkce(f);
    CHECK(contains(r.err, "Open this URL"));
  }

  TEST_CASE("cli: login --timeout when no callback comes") {
    require_cli();
    Fixture f;
    auto e = f.env();
    e["BROWSER"] =
        "true";  // "opens" the browser, which never comes back (as with an unregistered callback)
    Run r = f.run({"login", "--timeout", "2", "--callback-url",
                   "http://127.0.0.1:" + std::to_string(support::free_port()) + "/api/auth/callback"},
                  e);
    INFO(r.describe());
    CHECK(r.exit_code == 1);
    CHECK(r.seconds >= 1.5);
    CHECK(r.seconds < 15);
    CHECK(contains(r.err, "[aps_auth.timeout]"));
    CHECK(contains(r.err, "callback URL does not match"));  // the usual cause, named
    CHECK(r.out.empty());
  }

  TEST_CASE("cli: login with the callback port in use: exit 1 naming the port, no browser started") {
    require_cli();
    Fixture f;
    support::Socket taken = support::listen_on("127.0.0.1");
    const std::string port = std::to_string(taken.local_port());
    auto e = browser_env(f);
    const std::string opened = f.dir.file("browser-args.json");
    e["APS_TEST_BROWSER_ARGS"] = opened;
    Run r = f.run({"login", "--timeout", "20", "--callback-url",
                   "http://127.0.0.1:" + port + "/api/auth/callback"},
                  e);
    INFO(r.describe());
    CHECK(r.exit_code == 1);
    CHECK(contains(r.err, "[aps_auth.io]"));
    CHECK(contains(r.err, "port " + port + " is in use"));
    CHECK(r.out.empty());
    CHECK_FALSE(support::exists(opened));
    CHECK(f.server.count("authorize") == 0);
  }

  TEST_CASE("cli: $BROWSER gets the authorize URL as one argument, & and all (no shell, no cmd.exe)") {
    require_cli();
    Fixture f;
    auto e = browser_env(f);
    const std::string opened = f.dir.file("browser-args.json");
    e["APS_TEST_BROWSER_ARGS"] = opened;
    Run r = f.run({"login", "--timeout", "20"}, e);
    INFO(r.describe());
    REQUIRE(r.exit_code == 0);
    json args = read_json_file(opened);
    INFO("the browser's arguments: " << args.dump());
    REQUIRE(args.is_array());
    REQUIRE(args.size() == 1);
    const std::string url = args[0];
    CHECK(url.rfind(f.server.base_url() + support::kAuthorizePath + "?", 0) == 0);
    CHECK(support::count_of(url, "&") >= 6);  // client_id, redirect_uri, scope, state, PKCE...
    auto authorizes = f.requests_to(support::kAuthorizePath);
    REQUIRE(authorizes.size() == 1);
    CHECK(contains(url, "&state=" + authorizes[0].param("state")));
    CHECK(contains(url, "&code_challenge_method=S256"));
  }

  TEST_CASE("cli: a $BROWSER that is a .cmd or .bat script is not run (cmd.exe would split the URL at &)") {
#ifdef _WIN32
    require_cli();
    Fixture f;
    const std::string marker = f.dir.file("script-ran.txt");
    for (const char* name : {"browser.cmd", "browser.BAT"}) {
      CAPTURE(name);
      const std::string script = f.dir.write(name, "@echo off\r\necho %* > \"" + marker + "\"\r\n");
      auto e = f.env();
      e["BROWSER"] = "\"" + script + "\"";
      Run r = f.run({"login", "--timeout", "2", "--callback-url",
                     "http://127.0.0.1:" + std::to_string(support::free_port()) + "/api/auth/callback"},
                    e);
      INFO(r.describe());
      CHECK(r.exit_code == 1);
      CHECK(contains(r.err, "Could not open a browser"));
      CHECK(contains(r.err, "Open this URL"));  // the URL is shown instead
      CHECK_FALSE(support::exists(marker));
    }
#else
    MESSAGE("skipped: Windows only (cmd.exe runs .cmd and .bat scripts; POSIX starts $BROWSER without a shell, "
            "which the test above checks)");
#endif
  }

  TEST_CASE("cli: refresh rotates; the old refresh token is then refused") {
    require_cli();
    for (bool tls : {false, true}) {
      CAPTURE(tls);
      Fixture f(tls);
      json issued = f.server.issue_tokens(kClient, "data:read");
      const std::string old_rt = issued["refresh_token"];
      Run r = f.run({"refresh", "--refresh-token", old_rt});
      INFO(r.describe());
      REQUIRE(r.exit_code == 0);
      json j = parse_object(r);
      check_token_json(j, true, false);
      CHECK(j["refresh_token"] != old_rt);
      CHECK(f.server.is_valid_refresh_token(j["refresh_token"]));
      CHECK(!f.server.is_valid_refresh_token(old_rt));

      Run again = f.run({"refresh", "--refresh-token=" + old_rt});
      INFO(again.describe());
      CHECK(again.exit_code == 1);
      CHECK(contains(again.err, "invalid_grant"));
      CHECK(again.out.empty());
    }
  }

  TEST_CASE("cli: revoke, introspect, userinfo") {
    require_cli();
    for (bool tls : {false, true}) {
      CAPTURE(tls);
      Fixture f(tls);
      json issued = f.server.issue_tokens(kClient, "data:read openid");
      const std::string at = issued["access_token"], rt = issued["refresh_token"];

      Run info = f.run({"introspect", "--token", at});
      {
        INFO(info.describe());
        REQUIRE(info.exit_code == 0);
        json j = parse_object(info);
        CHECK(j["active"] == true);
        CHECK(j["client_id"] == kClient);
        CHECK(j["scope"] == "data:read openid");
      }
      Run user = f.run({"userinfo", "--token", at});
      {
        INFO(user.describe());
        REQUIRE(user.exit_code == 0);
        json j = parse_object(user);
        CHECK(j["sub"] == aps_mock::Server::kUserId);
        CHECK(j["email"] == "mock.user@example.com");
      }
      Run revoked = f.run({"revoke", "--token", at});
      {
        INFO(revoked.describe());
        CHECK(revoked.exit_code == 0);
        CHECK(revoked.out.empty());
        CHECK(!f.server.is_active_access_token(at));
        auto req = f.requests_to(support::kRevokePath);
        REQUIRE(req.size() == 1);
        CHECK(req[0].param("token_type_hint") == "access_token");
      }
      Run inactive = f.run({"introspect", "--token", at});
      {
        INFO(inactive.describe());
        REQUIRE(inactive.exit_code == 0);
        CHECK(parse_object(inactive)["active"] == false);
      }
      Run gone = f.run({"userinfo", "--token", at});
      {
        INFO(gone.describe());
        CHECK(gone.exit_code == 1);
        CHECK(contains(gone.err, "401"));
        CHECK(gone.out.empty());
      }
      Run revoked_rt = f.run({"revoke", "--token", rt, "--token-type-hint", "refresh_token"});
      {
        INFO(revoked_rt.describe());
        CHECK(revoked_rt.exit_code == 0);
        CHECK(!f.server.is_valid_refresh_token(rt));
        auto req = f.requests_to(support::kRevokePath);
        REQUIRE(req.size() == 2);
        CHECK(req[1].param("token_type_hint") == "refresh_token");
      }
      {  // a public client sends its client_id in the body
        json pub = f.server.issue_tokens(kPublic, "data:read");
        Run r =
            f.run({"introspect", "--token", pub["access_token"].get<std::string>()}, f.env(false));
        INFO(r.describe());
        REQUIRE(r.exit_code == 0);
        CHECK(parse_object(r)["active"] == true);
        CHECK(f.requests_to(support::kIntrospectPath).back().param("client_id") == kPublic);
      }
    }
  }

  TEST_CASE("cli: token file: login --token-file, access-token, refresh --token-file, logout") {
    require_cli();
    Fixture f;
    const std::string file = f.dir.file("state/aps-auth/token.json");
    auto e = browser_env(f);

    Run login = f.run({"login", "--token-file", file, "--timeout", "20"}, e);
    INFO(login.describe());
    REQUIRE(login.exit_code == 0);
    json printed = parse_object(login);
    json saved = read_json_file(file);
    REQUIRE(saved.is_object());
    CHECK(saved["refresh_token"] == printed["refresh_token"]);
    CHECK(saved["access_token"] == printed["access_token"]);
    CHECK(support::others_access(file) == "");  // 0600; Windows: an owner-only access list

    // A fresh token: handed out as is, no refresh.
    const int tokens_before = f.server.count("token");
    Run cached = f.run({"access-token", "--token-file", file}, e);
    {
      INFO(cached.describe());
      REQUIRE(cached.exit_code == 0);
      CHECK(cached.out == printed["access_token"].get<std::string>() + "\n");
      CHECK(f.server.count("token") == tokens_before);
    }

    // APS_TOKEN_FILE works as --token-file; an expired token is refreshed, and the file keeps the
    // new chain.
    json expired = saved;
    expired["expires_at"] = unix_now() - 10;
    write_token_file(file, expired);
    auto fe = e;
    fe["APS_TOKEN_FILE"] = file;
    Run renewed = f.run({"access-token"}, fe);
    {
      INFO(renewed.describe());
      REQUIRE(renewed.exit_code == 0);
      CHECK(f.server.count("token.refresh_token") == 1);
      json now = read_json_file(file);
      CHECK(renewed.out == now["access_token"].get<std::string>() + "\n");
      CHECK(now["refresh_token"] != saved["refresh_token"]);
      CHECK(now["refresh_token"] == f.server.current_refresh_token_for(kClient));
    }

    // refresh --token-file: reads the refresh token from the file, saves the new one.
    const std::string before_rt = read_json_file(file)["refresh_token"];
    Run refreshed = f.run({"refresh", "--token-file", file}, e);
    {
      INFO(refreshed.describe());
      REQUIRE(refreshed.exit_code == 0);
      json j = parse_object(refreshed);
      CHECK(j["refresh_token"] != before_rt);
      CHECK(read_json_file(file)["refresh_token"] == j["refresh_token"]);
      CHECK(!f.server.is_valid_refresh_token(before_rt));
      CHECK(support::others_access(file) == "");
    }

    // logout: revokes and deletes.
    const json last = read_json_file(file);
    Run logout = f.run({"logout", "--token-file", file}, e);
    {
      INFO(logout.describe());
      CHECK(logout.exit_code == 0);
      CHECK(!fs::exists(file));
      CHECK(!f.server.is_valid_refresh_token(last["refresh_token"]));
      CHECK(!f.server.is_active_access_token(last["access_token"]));
    }

    // Without a token: exit 1 with the way out; a second logout has nothing to do.
    Run none = f.run({"access-token", "--token-file", file}, e);
    {
      INFO(none.describe());
      CHECK(none.exit_code == 1);
      CHECK(contains(none.err, "aps-auth login --token-file"));
    }
    Run again = f.run({"logout", "--token-file", file}, e);
    CHECK(again.exit_code == 0);
  }

  TEST_CASE("cli: a token that cannot be saved is printed, not lost") {
    require_cli();
    Fixture f;
    const std::string blocker = f.dir.file("not-a-directory");
    std::ofstream(blocker) << "x";
    const std::string file = blocker + "/token.json";  // its parent is a regular file: saving fails
    Run r = f.run({"login", "--token-file", file, "--timeout", "20"}, browser_env(f));
    INFO(r.describe());
    CHECK(r.exit_code == 1);
    check_token_json(parse_object(r), true, false);  // the token, with its refresh token, on stdout
    CHECK(contains(r.err, "cannot save the token"));
    CHECK(contains(r.err, "printed on stdout"));
  }

  TEST_CASE("cli: access-token without a token file uses client credentials") {
    require_cli();
    Fixture f;
    Run r = f.run({"access-token"});
    INFO(r.describe());
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.size() > 16);
    CHECK(r.out.back() == '\n');
    CHECK(f.server.is_active_access_token(r.out.substr(0, r.out.size() - 1)));
    CHECK(f.server.count("token.client_credentials") == 1);

    Run pub = f.run({"access-token"}, f.env(false));
    CHECK(pub.exit_code == 2);  // neither a token file nor a secret
  }

  TEST_CASE("cli: two access-token processes sharing an expired token file refresh once") {
    require_cli();
    Fixture f;
    const std::string file = f.dir.file("token.json");
    json issued = f.server.issue_tokens(kClient, "data:read");
    json token = {{"access_token", issued["access_token"]},
                  {"token_type", "Bearer"},
                  {"expires_in", 3599},
                  {"expires_at", unix_now() - 60},
                  {"refresh_token", issued["refresh_token"]}};
    write_token_file(file, token);
    auto e = f.env();
    e["APS_TOKEN_FILE"] = file;
    Run a, b;
    std::thread ta([&] { a = support::run_cli({"access-token"}, e, std::chrono::seconds(30)); });
    std::thread tb([&] { b = support::run_cli({"access-token"}, e, std::chrono::seconds(30)); });
    ta.join();
    tb.join();
    f.check_stderr_clean(a, e);
    f.check_stderr_clean(b, e);
    INFO(a.describe());
    INFO(b.describe());
    REQUIRE(a.exit_code == 0);
    REQUIRE(b.exit_code == 0);
    CHECK(f.server.count("token.refresh_token") == 1);
    CHECK(a.out == b.out);
    json now = read_json_file(file);
    CHECK(a.out == now["access_token"].get<std::string>() + "\n");
    CHECK(now["refresh_token"] == f.server.current_refresh_token_for(kClient));
    CHECK(f.server.is_active_access_token(now["access_token"]));
  }

  TEST_CASE("cli: demo needs no account, no network, no arguments") {
    require_cli();
    support::TempDir tmp;
    EnvMap e = support::base_env(tmp.path());
    e["BROWSER"] = "aps-auth-test-no-such-browser";
    Run r = support::run_cli({"demo"}, e, std::chrono::seconds(30));
    INFO(r.describe());
    REQUIRE(r.exit_code == 0);
    json j = json::parse(r.out, nullptr, false);
    REQUIRE(j.is_object());
    CHECK(j.value("access_token", "").size() >= 16);
    CHECK(j.value("token_type", "") == "Bearer");
    CHECK(j.contains("refresh_token"));
    CHECK(j.contains("id_token"));
    CHECK(j.contains("expires_at"));
    // The narration: each step, on stderr.
    for (const char* step : {"mock APS server", "listening", "authorize?", "state", "PKCE", "code",
                             "refresh", "rotated", "userinfo"})
      CHECK_MESSAGE(contains(r.err, step), "the demo did not tell about: " << step);
    for (const char* k : {"access_token", "refresh_token", "id_token"})
      CHECK_MESSAGE(!contains(r.err, j[k].get<std::string>()), k << " appeared on stderr");
    CHECK(r.seconds < 20);
  }

  TEST_CASE("cli: the example programs, when built") {
    require_cli();
    // CMake builds them next to aps-auth as example_<name> (with aps-auth's suffix: .exe on
    // Windows); a build without examples skips this case.
    const fs::path cli = support::cli_path();
    auto example = [&](const char* name) {
      return (cli.parent_path() / (std::string("example_") + name + cli.extension().string())).string();
    };
    if (!support::platform::is_executable(example("token_2legged"))) {
      MESSAGE("example programs not built next to " << support::cli_path() << "; skipped");
      return;
    }
    Fixture f(true);
    {
      Run r = support::run({example("token_2legged")}, f.env(), std::chrono::seconds(30));
      f.check_stderr_clean(r, f.env());
      INFO(r.describe());
      REQUIRE(r.exit_code == 0);
      check_token_json(parse_object(r), false, false);
    }
    {
      json issued = f.server.issue_tokens(kClient, "data:read");
      auto e = f.env();
      e["APS_REFRESH_TOKEN"] = issued["refresh_token"];
      Run r = support::run({example("refresh_token")}, e, std::chrono::seconds(30));
      f.check_stderr_clean(r, e);
      INFO(r.describe());
      REQUIRE(r.exit_code == 0);
      json j = parse_object(r);
      check_token_json(j, true, false);
      CHECK(j["refresh_token"] != issued["refresh_token"]);
    }
    {  // a token file whose access token is due: refreshed once for all four calls, the new chain saved
      json issued = f.server.issue_tokens(kClient, "data:read");
      const std::string file = f.dir.file("example-token.json");
      write_token_file(file, {{"access_token", issued["access_token"]},
                              {"token_type", "Bearer"},
                              {"expires_in", 3599},
                              {"expires_at", unix_now() - 60},
                              {"refresh_token", issued["refresh_token"]}});
      auto e = f.env();
      e["APS_TOKEN_FILE"] = file;
      const int refreshes = f.server.count("token.refresh_token");
      Run r = support::run({example("token_source")}, e, std::chrono::seconds(30));
      f.check_stderr_clean(r, e);
      INFO(r.describe());
      REQUIRE(r.exit_code == 0);
      json now = read_json_file(file);
      // One line: the token (an example's stdout is in text mode: "\r\n" on Windows).
      CHECK(support::trim(r.out) == now["access_token"].get<std::string>());
      CHECK(support::split_lines(r.out).size() == 1);
      CHECK(f.server.count("token.refresh_token") == refreshes + 1);
      CHECK(now["refresh_token"] == f.server.current_refresh_token_for(kClient));
    }
    {
      auto e = browser_env(f);
      e["APS_SCOPES"] = "data:read openid";
      Run r = support::run({example("login_3legged")}, e, std::chrono::seconds(30));
      f.check_stderr_clean(r, e);
      INFO(r.describe());
      REQUIRE(r.exit_code == 0);
      check_token_json(parse_object(r), true, true);
      check_state_and_pkce(f);
    }
  }

}  // TEST_SUITE("cli")
