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

  Run run(const std::vector<std::string>& args, const EnvMap& environment, const support::StderrWatcher& on_stderr = {},
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
      CHECK_MESSAGE(!contains(r.err, secret), "a secret, code or token (" << secret.substr(0, 4)
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
  CHECK(aps_mock::detail::base64url(aps_mock::detail::sha256(verifier)) == a.param("code_challenge"));
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

// Where a run with Fixture::env() keeps the token file `name` of the library's default place:
// $XDG_STATE_HOME/aps-auth (POSIX), %LOCALAPPDATA%\aps-auth (Windows), as FileTokenStore::default_path() says.
std::string state_file(const Fixture& f, const std::string& name) {
#ifdef _WIN32
  return f.dir.path() + "\\AppData\\Local\\aps-auth\\" + name;
#else
  return f.dir.file("state/aps-auth/" + name);
#endif
}

// How status describes a token file only its owner can use, and one that others can read, with the fix it names.
#ifdef _WIN32
const char* const kOwnerOnly = " (access list: owner only)";
const char* const kOthersCanRead = "access list: OTHERS CAN READ IT";
const char* const kPermissionFix = "icacls";
#else
const char* const kOwnerOnly = " (mode 0600, owner only)";
const char* const kOthersCanRead = "mode 0644, OTHERS CAN READ IT";
const char* const kPermissionFix = "chmod 600";
#endif

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
        for (const char* cmd :
             {"login", "token", "refresh", "revoke", "introspect", "userinfo", "demo", "access-token", "logout"})
          CHECK(contains(r.out, cmd));
        CHECK(r.err.empty());
      }
    }
    SUBCASE("COMMAND --help prints that command's usage, exit 0") {
      for (const char* cmd :
           {"login", "token", "refresh", "revoke", "introspect", "userinfo", "demo", "access-token", "logout"}) {
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
          {{"revoke"}, "missing --token"},
          {{"revoke", "--token", "abcdefgh1234", "--token-type-hint", "id_token"}, "--token-type-hint"},
          {{"introspect"}, "missing --token"},
          {{"userinfo"}, "missing --token"},
          {{"status", "--profile", "../elsewhere"}, "--profile needs a name"},
          {{"status", "--profile", "token"}, "--profile needs a name"},
          {{"profile"}, "needs one of list|set"},
          {{"profile", "set"}, "needs one of --client-id"},
          {{"profile", "set", "--client-secret", "abcdefgh"}, "does not apply"},
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
        CHECK(contains(r.err, "Waiting up to 20 s"));
        CHECK(!contains(r.err, "\x1b["));  // not a terminal: plain lines, no counting line
        CHECK(contains(r.err, f.callback));
        CHECK(!contains(r.err, "/authentication/v2/authorize?"));  // a browser opened: no URL needed
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
    auto e = f.env(false);                       // and a public client
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
      forged = support::raw_http::request("127.0.0.1", port,
                                          "/api/auth/callback?code=forged-code&state=" + std::string(22, 'A'));
      browsed = aps_mock::follow_like_browser(err.substr(at, end - at), f.server.pki().ca_cert_pem);
    };
    Run r = f.run({"login", "--no-browser", "--callback-url", callback, "--timeout", "20"}, e, follow);
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
    e["BROWSER"] = "true";  // "opens" the browser, which never comes back (as with an unregistered callback)
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
    Run r = f.run({"login", "--timeout", "20", "--callback-url", "http://127.0.0.1:" + port + "/api/auth/callback"}, e);
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
    MESSAGE(
        "skipped: Windows only (cmd.exe runs .cmd and .bat scripts; POSIX starts $BROWSER without a shell, "
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
        Run r = f.run({"introspect", "--token", pub["access_token"].get<std::string>()}, f.env(false));
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

  TEST_CASE("cli: status tells who, which scopes, until when; exit 0 only with a usable token; no token shown") {
    require_cli();
    Fixture f;
    const std::string file = f.dir.file("state/aps-auth/work.json");
    auto e = browser_env(f);
    e["APS_TOKEN_FILE"] = file;

    // Nobody signed in yet.
    Run none = f.run({"status"}, e);
    {
      INFO(none.describe());
      CHECK(none.exit_code == 1);
      CHECK(contains(none.err, "Not signed in"));
      CHECK(contains(none.err, "aps-auth login"));
      CHECK(none.out.empty());
    }
    Run none_json = f.run({"status", "--json"}, e);
    CHECK(none_json.exit_code == 1);
    CHECK(parse_object(none_json)["signed_in"] == false);

    Run login = f.run({"login", "--scopes", "data:read openid", "--timeout", "20"}, e);
    INFO(login.describe());
    REQUIRE(login.exit_code == 0);
    const std::set<std::string> tokens = support::printed_tokens(login.out);
    REQUIRE(tokens.size() == 3);

    // The name from the verified id_token; the scopes; the expiry; the refresh token's age; the file.
    Run status = f.run({"status"}, e);
    {
      INFO(status.describe());
      CHECK(status.exit_code == 0);
      CHECK(status.out.empty());  // for people: stderr only
      // The mock's id_token has no name claim: its email names the user.
      CHECK(contains(status.err,
                     "Signed in as:   mock.user@example.com (id MOCKAPSUSER1; from the verified "
                     "id_token)"));
      CHECK(contains(status.err, "Scopes:         data:read openid"));
      CHECK(contains(status.err, "Access token:   valid for 59 min"));
      CHECK(contains(status.err, "Refresh token:  present, obtained "));
      CHECK(contains(status.err, "(APS: 15 days)"));
      CHECK(contains(status.err, file + kOwnerOnly));
    }
    Run status_json = f.run({"status", "--json"}, e);
    {
      INFO(status_json.describe());
      CHECK(status_json.exit_code == 0);
      json j = parse_object(status_json);
      CHECK(j["signed_in"] == true);
      CHECK(j["usable"] == true);
      CHECK(status_json.err.empty());
      CHECK(j["token_file"] == file);
#ifdef _WIN32
      CHECK(j["file_mode"].is_null());  // no POSIX mode: the access list decides
#else
      CHECK(j["file_mode"] == "0600");
#endif
      CHECK(j["file_owner_only"] == true);
      CHECK(j["user"]["email"] == "mock.user@example.com");
      CHECK(j["user"]["sub"] == "MOCKAPSUSER1");
      CHECK(j["user"]["source"] == "id_token");
      CHECK(j["scopes"] == json::array({"data:read", "openid"}));
      CHECK(j["access_token"]["expired"] == false);
      CHECK(j["access_token"]["expires_in"].get<long long>() > 3500);
      CHECK(j["refresh_token"]["present"] == true);
      CHECK(j["refresh_token"]["age"].get<long long>() < 600);
      CHECK(j["refresh_token"]["expires_at"].get<long long>() ==
            j["refresh_token"]["obtained_at"].get<long long>() + 15 * 86400);
      for (const auto& t : tokens)
        CHECK_MESSAGE(!contains(status_json.out, t), "a token in status --json");
    }

    // Without an id_token, one userinfo call when the scopes allow it.
    json saved = read_json_file(file);
    json profile_only = f.server.issue_tokens(kClient, "data:read user-profile:read");
    profile_only["expires_at"] = unix_now() + 3000;
    profile_only["scope"] = "data:read user-profile:read";
    profile_only["refresh_token_obtained_at"] = unix_now() - 3 * 86400;
    write_token_file(file, profile_only);
    const int userinfos = f.server.count("userinfo");
    Run by_userinfo = f.run({"status", "--json"}, e);
    {
      INFO(by_userinfo.describe());
      CHECK(by_userinfo.exit_code == 0);
      json j = parse_object(by_userinfo);
      CHECK(j["user"]["source"] == "userinfo");
      CHECK(j["user"]["name"] == "Mock User");
      CHECK(f.server.count("userinfo") == userinfos + 1);
      CHECK(j["refresh_token"]["age"].get<long long>() >= 3 * 86400);
    }

    // Neither an id_token nor a scope for userinfo: the user is unknown, said why, and no call is made.
    json data_only = profile_only;
    data_only["scope"] = "data:read";
    write_token_file(file, data_only);
    Run unknown = f.run({"status", "--json"}, e);
    {
      INFO(unknown.describe());
      CHECK(unknown.exit_code == 0);  // still a usable token
      json j = parse_object(unknown);
      CHECK(j["user"].is_null());
      CHECK(contains(j.value("user_note", ""), "user-profile:read"));
      CHECK(f.server.count("userinfo") == userinfos + 1);
    }

    // An expired access token with a refresh token still inside its 15 days: usable (access-token renews it).
    json expired = saved;
    expired["expires_at"] = unix_now() - 600;
    write_token_file(file, expired);
    Run renewable = f.run({"status"}, e);
    CHECK(renewable.exit_code == 0);
    CHECK(contains(renewable.err, "expired 10 min"));

    // ... beyond its 15 days: expired beyond refresh, exit 1.
    expired["refresh_token_obtained_at"] = unix_now() - 16 * 86400;
    write_token_file(file, expired);
    Run dead = f.run({"status"}, e);
    {
      INFO(dead.describe());
      CHECK(dead.exit_code == 1);
      CHECK(contains(dead.err, "older than APS's 15 days"));
      CHECK(contains(dead.err, "sign in again"));
    }

    // A file others can read is reported, and not usable (the other commands refuse it).
    write_token_file(file, saved);
    support::write_file(file, support::read_file(file).value_or(""), 0644);
    Run shared = f.run({"status"}, e);
    {
      INFO(shared.describe());
      CHECK(shared.exit_code == 1);
      CHECK(contains(shared.err, kOthersCanRead));
      CHECK(contains(shared.err, kPermissionFix));
    }
  }

  TEST_CASE("cli: two profiles: login --save-profile, status, access-token, profile list, logout") {
    require_cli();
    Fixture f;
    auto e = browser_env(f);  // registers the callback, sets $BROWSER
    const std::string callback = e["APS_CALLBACK_URL"];
    for (const char* k : {"APS_CLIENT_ID", "APS_CLIENT_SECRET", "APS_BASE_URL", "APS_CALLBACK_URL"})
      e.erase(k);  // the profiles carry the settings
    e["XDG_CONFIG_HOME"] = f.dir.file("config");
    const std::string settings = f.dir.file("config/aps-auth/profiles.json");
    const std::string test_file = state_file(f, "test.json");
    const std::string prod_file = state_file(f, "prod.json");

    // Sign in to each profile once with flags, saving them; the secret only in the environment.
    Run test_login =
        f.run({"login", "--profile", "test", "--client-id", kPublic, "--base-url", f.server.base_url(),
               "--callback-url", callback, "--scopes", "data:read openid", "--timeout", "20", "--save-profile"},
              e);
    INFO(test_login.describe());
    REQUIRE(test_login.exit_code == 0);
    auto prod_env = e;
    prod_env["APS_CLIENT_SECRET"] = kSecret;
    Run prod_login = f.run({"login", "--profile=prod", "--client-id", kClient, "--base-url", f.server.base_url(),
                            "--callback-url", callback, "--timeout", "20", "--save-profile"},
                           prod_env);
    INFO(prod_login.describe());
    REQUIRE(prod_login.exit_code == 0);
    CHECK(read_json_file(test_file)["access_token"] == parse_object(test_login)["access_token"]);
    CHECK(read_json_file(prod_file)["access_token"] == parse_object(prod_login)["access_token"]);
    CHECK(support::others_access(test_file) == "");

    // The settings file: owner-only, both profiles, never the secret.
    REQUIRE(support::exists(settings));
    CHECK(support::others_access(settings) == "");
    const json saved = read_json_file(settings);
    CHECK(saved["profiles"]["test"]["client-id"] == kPublic);
    CHECK(saved["profiles"]["test"]["scopes"] == "data:read openid");
    CHECK(saved["profiles"]["test"]["callback-url"] == callback);
    CHECK(saved["profiles"]["prod"]["client-id"] == kClient);
    CHECK(saved["profiles"]["prod"]["base-url"] == f.server.base_url());
    CHECK(!contains(support::read_file(settings).value_or(""), kSecret));

    // No flags now: --profile or APS_PROFILE picks the file and the settings.
    Run test_status = f.run({"status", "--profile", "test"}, e);
    CHECK(test_status.exit_code == 0);
    CHECK(contains(test_status.err, "Profile:        test"));
    CHECK(contains(test_status.err, test_file));
    CHECK(contains(test_status.err, "from the verified id_token"));  // the profile's client id is the audience
    auto as_prod = e;
    as_prod["APS_PROFILE"] = "prod";
    Run prod_status = f.run({"status"}, as_prod);
    CHECK(prod_status.exit_code == 0);
    CHECK(contains(prod_status.err, prod_file));
    Run at = f.run({"access-token", "--profile", "test"}, e);
    CHECK(at.exit_code == 0);
    CHECK(at.out == read_json_file(test_file)["access_token"].get<std::string>() + "\n");

    // Options and the environment win over the saved settings.
    as_prod["APS_CLIENT_SECRET"] = kSecret;
    Run two_legged = f.run({"token"}, as_prod);
    CHECK(two_legged.exit_code == 0);
    CHECK(f.requests_to(support::kTokenPath).back().header("Authorization").rfind("Basic ", 0) == 0);
    Run flag_wins = f.run({"token", "--client-id", "no-such-client"}, as_prod);
    CHECK(flag_wins.exit_code == 1);
    auto env_wins = as_prod;
    env_wins["APS_CLIENT_ID"] = "no-such-client";
    CHECK(f.run({"token"}, env_wins).exit_code == 1);
    Run other_file = f.run({"status", "--token-file", f.dir.file("other.json")}, as_prod);
    CHECK(other_file.exit_code == 1);
    CHECK(contains(other_file.err, "other.json"));

    // profile list: default (the library's token.json), test and prod, with their files.
    Run list = f.run({"profile", "list", "--json", "--profile", "prod"}, e);
    {
      INFO(list.describe());
      REQUIRE(list.exit_code == 0);
      json j = json::parse(list.out, nullptr, false);
      REQUIRE(j.is_array());
      std::map<std::string, json> by_name;
      for (const auto& p : j)
        by_name[p["name"]] = p;
      REQUIRE(by_name.size() == 3);
      CHECK(by_name["default"]["token_file"] == state_file(f, "token.json"));
      CHECK(by_name["default"]["has_token"] == false);
      CHECK(by_name["test"]["has_token"] == true);
      CHECK(by_name["prod"]["selected"] == true);
      CHECK(by_name["prod"]["client-id"] == kClient);
      CHECK(contains(list.err, "* prod"));
    }

    // profile set changes one setting and keeps the others; an empty value removes one.
    Run set = f.run({"profile", "set", "--profile", "test", "--scopes", "data:read"}, e);
    CHECK(set.exit_code == 0);
    CHECK(read_json_file(settings)["profiles"]["test"]["scopes"] == "data:read");
    CHECK(read_json_file(settings)["profiles"]["test"]["client-id"] == kPublic);
    CHECK(f.run({"profile", "set", "--profile", "test", "--scopes="}, e).exit_code == 0);
    CHECK(!read_json_file(settings)["profiles"]["test"].contains("scopes"));

    // logout signs out of one profile only.
    Run logout = f.run({"logout", "--profile", "test"}, e);
    INFO(logout.describe());
    CHECK(logout.exit_code == 0);
    CHECK(!fs::exists(test_file));
    CHECK(fs::exists(prod_file));
    Run gone = f.run({"status", "--profile", "test"}, e);
    CHECK(gone.exit_code == 1);
    CHECK(contains(gone.err, "aps-auth login --profile test"));
    CHECK(f.run({"status", "--profile", "prod"}, e).exit_code == 0);
    // refresh and logout without a file use the (default) profile's, which holds nothing.
    Run refresh = f.run({"refresh", "--profile", "test"}, e);
    CHECK(refresh.exit_code == 1);
    CHECK(contains(refresh.err, test_file));
  }

  TEST_CASE(
      "cli: completion bash: sourced in bash, completes every command of the usage, each one's options, "
      "operands and file names") {
    require_cli();
    Fixture f;
    const std::string bash = support::find_program({"bash"});
    if (bash.empty()) {
      MESSAGE("skipped: bash not found");
      return;
    }
    Run gen = f.run({"completion", "bash"});
    INFO(gen.describe());
    REQUIRE(gen.exit_code == 0);
    const std::string script = f.dir.file("aps-auth.bash");
    support::write_file(script, gen.out, 0600);
    support::write_file(f.dir.file("tokens-here.json"), "{}", 0600);
    auto env = f.env();  // two profiles saved, for the names after --profile
    env["XDG_CONFIG_HOME"] = f.dir.file("config");
    fs::create_directories(f.dir.file("config/aps-auth"));
    f.dir.write("config/aps-auth/profiles.json", R"({"profiles": {"work": {"client-id": "w"}, "prod": {}}})");

    // The words bash offers after `<the CLI's path> WORDS...` (the last word is the one being completed).
    auto complete = [&](const std::vector<std::string>& words) {
      std::string line =
          "source '" + script + "'; cd '" + f.dir.path() + "'; COMP_WORDS=('" + support::cli_path() + "'";
      for (const auto& w : words)
        line += " '" + w + "'";
      line += "); COMP_CWORD=" + std::to_string(words.size()) +
              "; _aps_auth; printf '%s\\n' \"${COMPREPLY[@]}\"; complete -p aps-auth >&2";
      Run r = support::run({bash, "--norc", "--noprofile", "-c", line}, env, std::chrono::seconds(20));
      INFO(r.describe());
      CHECK(r.exit_code == 0);
      CHECK(contains(r.err, "complete -F _aps_auth aps-auth"));
      std::set<std::string> got;
      for (const auto& w : support::split_lines(r.out))
        if (!w.empty())
          got.insert(w);
      return got;
    };

    // Every command listed in the usage, and only those (plus help): the script is made from the same table.
    Run help = f.run({"--help"});
    std::set<std::string> commands = {"help"};
    bool in_commands = false;
    for (const auto& line : support::split_lines(help.out)) {
      if (line == "commands:") {
        in_commands = true;
        continue;
      }
      if (in_commands && line.empty())
        break;
      if (in_commands && line.size() > 2 && line[2] != ' ')
        commands.insert(line.substr(2, line.find(' ', 2) - 2));
    }
    CHECK(commands.count("status") == 1);
    CHECK(commands.count("completion") == 1);
    std::set<std::string> first = commands;
    first.insert({"--help", "--version"});
    CHECK(complete({""}) == first);
    CHECK(complete({"lo"}) == std::set<std::string>{"login", "logout"});
    CHECK(complete({"help", "st"}) == std::set<std::string>{"status"});

    // A command's options, and not another's.
    std::set<std::string> status_opts = complete({"status", "--"});
    for (const char* o : {"--json", "--token-file", "--profile", "--client-id", "--help"})
      CHECK_MESSAGE(status_opts.count(o) == 1, o);
    CHECK(status_opts.count("--no-browser") == 0);
    CHECK(complete({"login", "--save"}) == std::set<std::string>{"--save-profile"});
    CHECK(complete({"status", "--profile", "work", "--js"}) == std::set<std::string>{"--json"});  // a value skipped

    // Operands, then options.
    CHECK(complete({"profile", ""}) == std::set<std::string>{"list", "set"});
    CHECK(complete({"profile", "list", "--j"}) == std::set<std::string>{"--json"});
    CHECK(complete({"completion", ""}) == std::set<std::string>{"bash", "zsh"});

    // File names after --token-file; the saved profiles' names (and default) after --profile, asked of the CLI
    // itself; nothing after an option whose value is not a file.
    CHECK(complete({"status", "--token-file", "tokens-"}) == std::set<std::string>{"tokens-here.json"});
    CHECK(complete({"status", "--profile", ""}) == std::set<std::string>{"default", "prod", "work"});
    CHECK(complete({"login", "--profile", "w"}) == std::set<std::string>{"work"});
    CHECK(complete({"login", "--client-id", ""}).empty());

    // zsh gets the same function through its bash-compatible layer (the next case runs it in zsh).
    Run zsh = f.run({"completion", "zsh"});
    CHECK(zsh.exit_code == 0);
    CHECK(contains(zsh.out, "bashcompinit"));
    CHECK(contains(zsh.out, gen.out));
  }

  TEST_CASE(
      "cli: completion zsh: loaded in an interactive zsh on a pseudo-terminal, Tab completes commands, options, "
      "operands and file names") {
    require_cli();
    const std::string python = support::find_program({"python3"}), zsh = support::find_program({"zsh"});
    if (python.empty() || zsh.empty()) {
      MESSAGE("skipped: " << (zsh.empty() ? "zsh" : "python3")
                          << " not found (scripts/install-deps --test installs zsh; python3's pty module gives zsh "
                             "its terminal)");
      return;
    }
    Fixture f;
    Run gen = f.run({"completion", "zsh"});
    REQUIRE(gen.exit_code == 0);
    const std::string script = f.dir.write("aps-auth.zsh", gen.out);
    f.dir.write("tokens-here.json", "{}");
    // What a person types (Ctrl-U first: a fresh line), and what the terminal must show after the Tab. None of
    // the expected texts is in the typed text, so an echo cannot pass.
    const json steps = json::array({
        {{"type", "aps-auth log\t"}, {"expect", {"login", "logout"}}},
        {{"type", "aps-auth login --save\t"}, {"expect", {"--save-profile "}}},
        {{"type", "aps-auth status --pro\t"}, {"expect", {"--profile "}}},
        {{"type", "aps-auth profile \t"}, {"expect", {"list", "set"}}},
        {{"type", "aps-auth completion z\t"}, {"expect", {"completion zsh "}}},
        {{"type", "aps-auth status --token-file tokens-\t"}, {"expect", {"tokens-here.json"}}},
        {{"type", "aps-auth status --profile wo\t"}, {"expect", {"--profile work "}}},
    });
    // aps-auth on the PATH (the profile names come from it), and one profile saved.
    auto env = f.env();
    env["PATH"] = fs::path(support::cli_path()).parent_path().string() + ":" + env["PATH"];
    env["XDG_CONFIG_HOME"] = f.dir.file("config");
    fs::create_directories(f.dir.file("config/aps-auth"));
    f.dir.write("config/aps-auth/profiles.json", R"({"profiles": {"work": {"client-id": "w"}}})");
    // zsh -f (no rc file) on a pseudo-terminal: sources the script, then for each step types it and waits (up to
    // 15 s) until every expected text has appeared. Prints one JSON result per step.
    const std::string driver = f.dir.write("zsh_tab.py", R"(import json, os, pty, select, sys, time
zsh, script, workdir, steps = sys.argv[1], sys.argv[2], sys.argv[3], json.load(open(sys.argv[4]))
pid, fd = pty.fork()
if pid == 0:
    os.chdir(workdir)
    os.execv(zsh, [zsh, "-f", "-i"])
def wait_for(texts, seconds):
    shown, until = b"", time.monotonic() + seconds
    while time.monotonic() < until and not all(t.encode() in shown for t in texts):
        if select.select([fd], [], [], 0.1)[0]:
            try:
                shown += os.read(fd, 4096)
            except OSError:
                break
    return shown.decode("utf-8", "replace")
os.write(fd, ("source '%s'; print ready-$((6*7))\n" % script).encode())
results = [{"ok": "ready-42" in wait_for(["ready-42"], 20), "step": "source"}]
for step in steps:
    os.write(fd, b"\x15" + step["type"].encode())
    shown = wait_for(step["expect"], 15)
    results.append({"ok": all(t in shown for t in step["expect"]), "step": step["type"], "shown": shown})
os.write(fd, b"\x15exit\n")
os.waitpid(pid, 0)
print(json.dumps(results))
)");
    const std::string steps_file = f.dir.write("steps.json", steps.dump());
    Run r = support::run({python, driver, zsh, script, f.dir.path(), steps_file}, env, std::chrono::seconds(150));
    INFO(r.describe());
    REQUIRE(r.exit_code == 0);
    const json results = json::parse(r.out, nullptr, false);
    REQUIRE(results.is_array());
    REQUIRE(results.size() == steps.size() + 1);
    for (const auto& result : results) {
      INFO("step " << result.dump());
      CHECK(result["ok"] == true);
    }
  }

  TEST_CASE(
      "cli: login on a terminal: one counting line, Ctrl-C cancels (listener closed, nothing saved, exit "
      "130)") {
    require_cli();
    const std::string python = support::find_program({"python3"});
    if (python.empty()) {
      MESSAGE("skipped: python3 not found (its pty module gives the CLI a pseudo-terminal)");
      return;
    }
    Fixture f;
    auto e = f.env();
    e["APS_CALLBACK_URL"] = f.register_callback();
    e["TERM"] = "xterm";
    // The CLI on a pseudo-terminal (stdout and stderr both): waits for three counting lines, presses Ctrl-C
    // (the terminal sends SIGINT), then reads to the end. Prints what the terminal showed, then the exit code.
    const std::string driver = f.dir.file("ctrl_c.py");
    support::write_file(driver, R"(import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
shown, until = b"", time.monotonic() + 20
while time.monotonic() < until and shown.count(" left \u00b7 Ctrl-C to cancel".encode()) < 3:
    if select.select([fd], [], [], 0.2)[0]:
        try:
            shown += os.read(fd, 4096)
        except OSError:
            break
os.write(fd, b"\x03")
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    shown += data
status = os.waitpid(pid, 0)[1]
sys.stdout.write(shown.decode("utf-8", "replace"))
sys.stdout.write("\nexit=%d\n" % (os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)))
)",
                        0600);
    Run r = support::run({python, driver, support::cli_path(), "login", "--no-browser", "--timeout", "120"}, e,
                         std::chrono::seconds(40));
    INFO(r.describe());
    CHECK(contains(r.out, "\r\x1b[2KWaiting for the sign-in in your browser\u2026 "));
    CHECK(support::count_of(r.out, " left \u00b7 Ctrl-C to cancel") >= 3);  // one line, redrawn in place
    CHECK(!contains(r.out, "Waiting up to"));                               // the plain line is for logs
    CHECK(contains(r.out, "Cancelled: nothing was saved."));
    CHECK(contains(r.out, "\nexit=130\n"));
    CHECK(!fs::exists(f.dir.file("state/aps-auth/token.json")));
    CHECK(f.server.count("token") == 0);
    // The listener is gone: nothing answers on its port.
    const int port = std::stoi(f.callback.substr(f.callback.rfind(':') + 1));
    CHECK(!support::connect_to("127.0.0.1", port).valid());
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
    CHECK(contains(r.err, file));  // the library's error names the path (of the lock file, taken before saving)
#ifndef _WIN32
    CHECK(contains(r.err, "Not a directory"));  // the system's words (Windows has its own)
#endif
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
    CHECK(pub.exit_code == 1);               // neither a token (in the default profile's file) nor a secret
    CHECK(contains(pub.err, "token.json"));  // the default profile's file, named
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
    for (const char* step :
         {"mock APS server", "listening", "authorize?", "state", "PKCE", "code", "refresh", "rotated", "userinfo"})
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
