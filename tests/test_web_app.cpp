// examples/web_app.cpp, the multi-user web app, end to end with the real headless Chromium
// (tests/browser/headless_browser.mjs over the DevTools protocol), against the mock APS server of this test:
//   - two users sign in at the same time in two browsers (each its own profile: its own cookies), and each session
//     gets its own token (the /me pages show different fingerprints, each of a token the mock issued);
//   - each browser, at the consent page (its sign-in in progress), is sent to a callback carrying another
//     session's state (a sign-in an attacker started): refused, and its own sign-in then completes; after the
//     sign-in the same planted callback is refused again and the session stays signed in;
//   - a user's callback replayed, with the user's cookie or without one: refused, no second code exchange;
//   - the session cookie is HttpOnly and SameSite=Lax; after the sign-in it is a new one (no fixation);
//   - POST /logout revokes the token at the mock and ends the session; the other user stays signed in.
// And `--demo` (the mock inside the app) answers /login with a redirect to its mock APS.
// Screenshots in <build>/screenshots/web-*.png. Needs Chromium and Node.js (a missing one fails the test).
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/browser.hpp"
#include "support/environment.hpp"
#include "support/files.hpp"
#include "support/mock.hpp"
#include "support/network.hpp"
#include "support/platform.hpp"
#include "support/process.hpp"
#include "support/text.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace auth = aps::auth;
using namespace std::chrono_literals;
using support::contains;

namespace {

const char* const kClient = "web-app-test";
const char* const kSecret = "web-app-test-secret";

std::string str(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The built example: $APS_AUTH_WEB_APP (set by ctest), else <build>/example_web_app.
std::string web_app_program() {
  std::string p =
      support::find_program({support::env_or("APS_AUTH_WEB_APP"), support::binary_dir() + "/example_web_app"});
  if (p.empty())
    FAIL("example_web_app not found: build it (APS_AUTH_BUILD_EXAMPLES=ON) or set APS_AUTH_WEB_APP");
  return p;
}

// The web app running on 127.0.0.1:port until destroyed, started with `args`, its stdout in a file.
struct RunningApp {
  support::TempDir dir{"aps_auth_web_app_"};
  std::unique_ptr<support::Process> process;
  std::string url;  // what it printed after "listening on "

  RunningApp(const std::vector<std::string>& args, const support::EnvMap& env) {
    support::ProcessOptions o;
    o.stdout_file = o.stderr_file = dir.file("out.txt");
    process = std::make_unique<support::Process>(args, env, o);
    for (auto until = std::chrono::steady_clock::now() + 20s; url.empty();) {
      const std::string out = support::read_file(dir.file("out.txt")).value_or("");
      const std::size_t at = out.find("listening on ");
      if (at != std::string::npos && out.find_first_of(" \n", at + 13) != std::string::npos)
        url = out.substr(at + 13, out.find_first_of(" \n", at + 13) - at - 13);
      else if (!process->running() || std::chrono::steady_clock::now() > until)
        FAIL("the web app did not start: " << out);
      else
        std::this_thread::sleep_for(20ms);
    }
  }
};

// A GET or POST to the app, with a Cookie header when `cookie` is not empty.
support::raw_http::Response http(int port, const std::string& method, const std::string& target,
                                 const std::string& cookie = "") {
  std::string head =
      method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) + "\r\nConnection: close\r\n";
  if (!cookie.empty())
    head += "Cookie: " + cookie + "\r\n";
  if (method == "POST")
    head += "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n";
  return support::raw_http::exchange("127.0.0.1", port, head + "\r\n");
}

// The fingerprint a /me page shows: "This session's token: <16 chars>".
std::string fingerprint_in(const std::string& text) {
  const std::string marker = "This session's token: ";
  const std::size_t at = text.find(marker);
  return at == std::string::npos ? "" : text.substr(at + marker.size(), 16);
}

std::string fingerprint_of(const std::string& access_token) {
  return auth::pkce_challenge(access_token).substr(0, 16);
}

}  // namespace

TEST_SUITE("web_app") {
  TEST_CASE(
      "web app: two users at once in two browsers, each their own token; another session's state and a "
      "replayed callback refused; logout revokes") {
    if (!support::browser_tests_run_here())
      return;
    const support::BrowserTools tools = support::find_browser_tools();
    const std::string program = web_app_program();
    const int port = support::free_port();
    REQUIRE(port > 0);
    const std::string origin = "http://127.0.0.1:" + std::to_string(port);
    aps_mock::Options mo;
    mo.clients = {{kClient, kSecret, {origin + "/api/auth/callback"}}};
    mo.consent = aps_mock::Consent::page;  // the browsers stop there, a sign-in in progress, until they click
    aps_mock::Server mock(mo);
    support::TempDir home;
    support::EnvMap env = support::base_env(home.path());
    env["APS_CLIENT_ID"] = kClient;
    env["APS_CLIENT_SECRET"] = kSecret;
    env["APS_BASE_URL"] = mock.base_url();
    env["NO_PROXY"] = "*";
    RunningApp app({program, "--port", std::to_string(port)}, env);
    REQUIRE(app.url == origin);

    // An attacker starts a sign-in of their own: its state is what they would plant in a victim's browser.
    support::raw_http::Response attacker = http(port, "GET", "/login");
    REQUIRE(attacker.status == 303);
    const std::string att_location = attacker.header("location");
    const std::size_t st = att_location.find("state=");
    REQUIRE(st != std::string::npos);
    const std::string attacker_state = att_location.substr(st + 6, att_location.find('&', st) - st - 6);
    const std::string planted = origin + "/api/auth/callback?code=planted&state=" + attacker_state;

    // Two users, two browsers, at the same time.
    const std::vector<std::string> users = {"alice", "bob"};
    std::vector<std::unique_ptr<support::TempDir>> profiles;
    std::vector<std::unique_ptr<support::Process>> browsers;
    for (const auto& user : users) {
      profiles.push_back(std::make_unique<support::TempDir>("aps-auth-web-browser-"));
      const std::vector<std::string> argv = {tools.node,   tools.driver,   "--out",          tools.out_dir,
                                             "--name",     "web-" + user,  "--profile",      profiles.back()->path(),
                                             "--chromium", tools.chromium, "--click",        "#allow button",
                                             "--detour",   planted,        "--final-prefix", origin + "/me",
                                             "--then",     planted,        "--then",         origin + "/me",
                                             "--timeout",  "45",           origin + "/login"};
      support::ProcessOptions o;
      o.own_group = true;
      browsers.push_back(std::make_unique<support::Process>(argv, support::platform::current_environment(), o));
    }
    std::vector<nlohmann::json> results;
    for (std::size_t i = 0; i < users.size(); ++i) {
      support::RunResult r = browsers[i]->finish(60s);
      INFO(users[i] << "'s driver: " << r.describe());
      auto j = nlohmann::json::parse(support::read_file(tools.out_dir + "/web-" + users[i] + ".json").value_or(""),
                                     nullptr, false);
      REQUIRE(j.is_object());
      INFO("driver result: " << j.dump(2));
      REQUIRE(j.value("ok", false));
      results.push_back(j);
    }

    std::vector<std::string> fingerprints, cookies, callbacks;
    for (std::size_t i = 0; i < users.size(); ++i) {
      const nlohmann::json& j = results[i];
      INFO(users[i] << ": " << j.dump(2));
      const nlohmann::json& fin = j["final"];
      CHECK(str(fin, "title") == "Signed in - APS web app");
      CHECK(contains(str(fin, "text"), "Signed in as Mock User (mock.user@example.com)"));
      CHECK(fin["scripts"] == 0);
      fingerprints.push_back(fingerprint_in(str(fin, "text")));
      CHECK(fingerprints.back().size() == 16);
      // The planted callback during the sign-in: refused (and the sign-in went on: the final page above).
      REQUIRE(j["detour"].is_object());
      CHECK(str(j["detour"], "title") == "Not your sign-in - APS web app");
      CHECK(contains(str(j["detour"], "text"), "does not belong to the sign-in started in this browser"));
      // After it: refused, and the user is still signed in with the same token.
      REQUIRE(j["then"].size() == 2);
      CHECK(str(j["then"][0], "title") == "No sign-in in progress - APS web app");
      CHECK(str(j["then"][1], "title") == "Signed in - APS web app");
      CHECK(fingerprint_in(str(j["then"][1], "text")) == fingerprints.back());
      // The session cookie: HttpOnly, SameSite=Lax (not Secure: this is plain HTTP), and one only.
      std::string cookie;
      for (const auto& c : j["cookies"]) {
        if (str(c, "name") != "aps_session")
          continue;
        CHECK(cookie.empty());
        cookie = "aps_session=" + str(c, "value");
        CHECK(c["httpOnly"] == true);
        CHECK(str(c, "sameSite") == "Lax");
        CHECK(c["secure"] == false);
        CHECK(str(c, "value").size() == 43);  // 32 random octets
      }
      REQUIRE_FALSE(cookie.empty());
      cookies.push_back(cookie);
      std::string callback;
      for (const auto& req : j["requests"])  // every URL the browser asked for, redirect hops included
        if (contains(str(req, "url"), "/api/auth/callback?code=") && !contains(str(req, "url"), "planted"))
          callback = str(req, "url");
      REQUIRE_FALSE(callback.empty());
      callbacks.push_back(callback.substr(origin.size()));
      CHECK(support::png_size(tools.out_dir + "/web-" + users[i] + ".png").first > 0);
      CHECK(support::png_size(tools.out_dir + "/web-" + users[i] + ".then-1.png").first > 0);
      CHECK(support::png_size(tools.out_dir + "/web-" + users[i] + ".detour.png").first > 0);
    }
    // Each session its own token, each a token the mock issued to this app and the app used for /me.
    CHECK(fingerprints[0] != fingerprints[1]);
    CHECK(cookies[0] != cookies[1]);
    CHECK(mock.count("token.authorization_code") == 2);
    std::set<std::string> used, used_fingerprints;
    for (const auto& r : mock.requests())
      if (r.path == support::kUserinfoPath && r.header("Authorization").rfind("Bearer ", 0) == 0)
        used.insert(r.header("Authorization").substr(7));
    for (const auto& t : used)
      used_fingerprints.insert(fingerprint_of(t));
    CHECK(used.size() == 2);
    CHECK(used_fingerprints == std::set<std::string>(fingerprints.begin(), fingerprints.end()));

    // The cookie the browser holds is not the one /login set (a new session id after the sign-in).
    support::raw_http::Response fresh = http(port, "GET", "/login");
    REQUIRE(fresh.status == 303);
    CHECK(contains(fresh.header("set-cookie"), "HttpOnly; SameSite=Lax"));

    // Replays of alice's callback: with her cookie, and with none. Refused; no third code exchange.
    for (const std::string& cookie : {cookies[0], std::string()}) {
      support::raw_http::Response replay = http(port, "GET", callbacks[0], cookie);
      CHECK(replay.status == 400);
      CHECK(contains(replay.body, "No sign-in in progress"));
    }
    CHECK(mock.count("token.authorization_code") == 2);

    // Bob signs out: his token is revoked at the mock, his session is gone; Alice is still signed in.
    std::string bob_token;
    for (const auto& t : used)
      if (fingerprint_of(t) == fingerprints[1])
        bob_token = t;
    REQUIRE(mock.is_active_access_token(bob_token));
    support::raw_http::Response out = http(port, "POST", "/logout", cookies[1]);
    CHECK(out.status == 200);
    CHECK(contains(out.body, "You are signed out"));
    CHECK(contains(out.header("set-cookie"), "Max-Age=0"));
    CHECK_FALSE(mock.is_active_access_token(bob_token));
    CHECK(mock.count("revoke") >= 1);
    CHECK(http(port, "GET", "/me", cookies[1]).status == 303);
    support::raw_http::Response alice = http(port, "GET", "/me", cookies[0]);
    CHECK(alice.status == 200);
    CHECK(contains(alice.body, fingerprints[0]));
    CHECK(http(port, "GET", "/logout", cookies[0]).status == 404);  // POST only

    MESSAGE("screenshots: " << tools.out_dir << "/web-alice.consent.png, web-alice.detour.png (the planted "
                            << "callback, refused), web-alice.png (/me), web-alice.then-1.png (planted again), "
                            << "web-alice.then-2.png; the same for bob");
  }

  TEST_CASE("web app --demo: runs with no account, /login redirects to its in-process mock APS") {
    const std::string program = web_app_program();
    support::TempDir home;
    RunningApp app({program, "--demo", "--port", "0"}, support::base_env(home.path()));
    const int port = std::stoi(app.url.substr(app.url.rfind(':') + 1));  // the public URL, by default
    support::raw_http::Response login = http(port, "GET", "/login");
    CHECK(login.status == 303);
    CHECK(contains(login.header("location"), "/authentication/v2/authorize?response_type=code&client_id=web-app-demo"));
    CHECK(contains(login.header("location"), "code_challenge_method=S256"));
    CHECK(contains(login.header("set-cookie"), "aps_session="));
    CHECK_FALSE(contains(login.header("set-cookie"), "Secure"));
  }

  TEST_CASE("web app served over HTTPS (behind a TLS proxy): the cookie is __Host- prefixed and Secure") {
    const std::string program = web_app_program();
    support::TempDir home;
    RunningApp app({program, "--demo", "--port", "0", "--public-url", "https://app.example"},
                   support::base_env(home.path()));
    REQUIRE(app.url == "https://app.example");
    const std::string out = support::read_file(app.dir.file("out.txt")).value_or("");
    const std::size_t bound = out.find("(bound to 127.0.0.1:");  // the public URL is not where it listens
    REQUIRE(bound != std::string::npos);
    const int port = std::stoi(out.substr(bound + 20));
    support::raw_http::Response login = http(port, "GET", "/login");
    CHECK(login.status == 303);
    CHECK(contains(login.header("set-cookie"), "__Host-aps_session="));
    CHECK(contains(login.header("set-cookie"), "; Path=/; HttpOnly; SameSite=Lax; Secure"));
    CHECK(contains(login.header("location"), "redirect_uri=https%3A%2F%2Fapp.example%2Fapi%2Fauth%2Fcallback"));
  }
}
