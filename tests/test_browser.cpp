// A real browser end to end: `aps-auth login` against the in-process mock APS server, with $BROWSER set to
// tests/browser/headless_browser.mjs, which opens the authorize URL in headless Chromium and presses the
// consent page's button with a real (DevTools) mouse click. Then the final page's DOM is checked:
//   - Allow: the listener's success page says so, and the CLI prints token JSON and exits 0;
//   - Deny, with <script> markup in error_description: the failure page shows the markup as text, nothing in
//     it runs (title unchanged, no dialog, no <script>/<img> element, no request for the img), the CLI exits 1;
//   - Allow with openid: the page, answered after the code exchange, names the user from the verified id_token;
//   - Allow, then the code exchange fails (a wrong client secret; a 500 from the token endpoint): the page says
//     "Sign-in failed" and what failed, with neither the secret nor the code, and the CLI exits 1.
// Screenshots of every final page (and of the consent page) are kept in <build>/screenshots/ (NAME.png).
//
// Needs Chromium (Debian: chromium) and Node.js (Debian: nodejs); no npm package. A missing one fails the test,
// it is not skipped. APS_AUTH_CHROMIUM overrides the Chromium binary, APS_AUTH_NODE the node binary.
// Bounded: each sign-in has 45 s (after one warm-up start of Chromium per process); the CLI, the driver and every
// Chromium process are killed on every path.
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
#include <cmath>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using support::contains, support::png_size;

// Per sign-in: Chromium start + two pages, ~1 s here and up to ~20 s on a slow, loaded CI machine. A bound on a
// hang, not a timing check; the driver and the CLI get kWaitSeconds of it.
constexpr auto kSignInBudget = 45s;
const char* const kWaitSeconds = "40";
const char* const kCallbackPath = "/api/auth/callback";
const char* const kPayload = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";

std::string read_file(const std::string& p) {
  return support::read_file(p).value_or("");
}

// Single-quotes an argument for aps::auth::open_browser's $BROWSER splitting (no shell is involved).
std::string quoted(const std::string& s) {
  REQUIRE_MESSAGE(s.find('\'') == std::string::npos, "path with a single quote: " << s);
  return "'" + s + "'";
}

// Processes whose command line mentions `marker` (the sign-in's own, unique Chromium profile directory: it is
// on the command line of the driver and of every Chromium process, and of nothing else).
std::vector<long> processes_mentioning(const std::string& marker) {
  return support::platform::processes_mentioning(marker).value_or(std::vector<long>{});
}

struct Tools : support::BrowserTools {
  std::string cli;
};

// The browser tools, and the CLI under test.
Tools find_tools() {
  Tools t;
  static_cast<support::BrowserTools&>(t) = support::find_browser_tools();
  t.cli = support::find_program({support::cli_path(), support::binary_dir() + "/aps-auth"});
  if (t.cli.empty())
    FAIL("the aps-auth CLI was not found: build it (APS_AUTH_BUILD_EXAMPLES=ON) or set APS_AUTH_CLI");
  return t;
}

struct SignIn {
  int exit_code = -1;  // the CLI's; -1: killed at the deadline
  std::string out, err;
  std::optional<nlohmann::json> page;  // the driver's result (NAME.json)
  std::vector<long> strays;            // processes still alive 3 s after both finished (then killed)
  double seconds = 0;
  std::string png, consent_png, chromium_log;
  std::string steps;  // the driver's, as they happened (NAME.steps): where it was when nothing came
};

// The app as registered with the mock, and as the CLI is told about it.
struct App {
  std::string scopes = "data:read";
  std::string registered_secret;  // none: a public client
  std::string given_secret;       // what the CLI gets in APS_CLIENT_SECRET (never on its command line)
  std::vector<aps_mock::Fault> faults;
};

// Runs `aps-auth login` against the mock with $BROWSER = the headless driver, which clicks `button`.
// Whatever happens, the CLI, the driver and Chromium are gone when this returns.
SignIn sign_in(const Tools& t, const std::string& name, aps_mock::Options options, const std::string& button,
               const App& app = {}) {
  const auto t0 = Clock::now();
  const int port = support::free_port();
  REQUIRE(port > 0);
  const std::string origin = "http://localhost:" + std::to_string(port);
  const std::string callback = origin + kCallbackPath;
  options.consent = aps_mock::Consent::page;
  options.clients = {aps_mock::RegisteredClient{"aps-auth-browser-test", app.registered_secret, {callback}}};
  aps_mock::Server mock(options);
  for (const auto& f : app.faults)
    mock.inject(f);

  support::TempDir profile_dir("aps-auth-browser-");
  const std::string profile = profile_dir.path();

  const std::string base = t.out_dir + "/" + name;
  std::error_code ec;
  for (const char* s :
       {".json", ".png", ".consent.png", ".html", ".error.png", ".pids", ".steps", ".cli.stdout", ".cli.stderr"})
    std::filesystem::remove(base + s, ec);

  const std::string browser = quoted(t.node) + " " + quoted(t.driver) + " --out " + quoted(t.out_dir) + " --name " +
                              name + " --profile " + quoted(profile) + " --chromium " + quoted(t.chromium) +
                              " --click " + quoted(button) + " --final-prefix " + quoted(callback) + " --timeout " +
                              kWaitSeconds + " %s";

  // The CLI's environment: this one without APS_* settings (but the test's own APS_AUTH_*), plus ours.
  support::EnvMap env;
  for (const auto& [k, v] : support::platform::current_environment())
    if (!((k.rfind("APS_", 0) == 0 && k.rfind("APS_AUTH_", 0) != 0) || k == "BROWSER"))
      env[k] = v;
  env["BROWSER"] = browser;
  if (!app.given_secret.empty())
    env["APS_CLIENT_SECRET"] = app.given_secret;
  env["XDG_STATE_HOME"] = profile + "/state";  // login saves the token in the profile's file: keep it in here
  const std::vector<std::string> args = {t.cli,        "login",         "--client-id",    "aps-auth-browser-test",
                                         "--base-url", mock.base_url(), "--callback-url", callback,
                                         "--scopes",   app.scopes,      "--timeout",      kWaitSeconds};
  support::ProcessOptions output;
  output.stdout_file = base + ".cli.stdout";
  output.stderr_file = base + ".cli.stderr";
  output.own_group = true;  // killed with everything it started

  SignIn r;
  support::Process cli(args, env, output);

  // Cleanup on every path (a failed REQUIRE throws): the CLI's process group, then anything using the profile.
  struct Cleanup {
    support::Process& cli;
    std::string profile;
    SignIn& r;
    ~Cleanup() {
      cli.kill();
      for (int i = 0; i < 60; ++i) {  // the driver closes Chromium itself; give it 3 s to finish
        if (processes_mentioning(profile).empty())
          break;
        std::this_thread::sleep_for(50ms);
      }
      r.strays = processes_mentioning(profile);
      for (long p : r.strays)
        support::platform::kill_process(p);
      for (int i = 0; i < 60 && !processes_mentioning(profile).empty(); ++i)
        std::this_thread::sleep_for(50ms);
    }
  };
  {
    Cleanup cleanup{cli, profile, r};
    const auto deadline = t0 + kSignInBudget;
    bool have_page = false, cli_done = false;
    while (Clock::now() < deadline && (!cli_done || !have_page)) {
      if (!cli_done) {
        if (auto status = cli.poll()) {
          r.exit_code = status->signal ? 128 + status->signal : status->code;
          cli_done = true;
        }
      }
      if (!have_page && support::is_file(base + ".json")) {
        have_page = true;
        r.page = nlohmann::json::parse(read_file(base + ".json"), nullptr, false);
        if (!r.page->is_object() || !r.page->value("ok", false))
          break;  // the browser failed: stop the CLI now
      }
      std::this_thread::sleep_for(25ms);
    }
  }
  mock.stop();
  r.out = read_file(output.stdout_file);
  r.err = read_file(output.stderr_file);
  r.chromium_log = read_file(base + ".chromium.log");
  r.steps = read_file(base + ".steps");
  if (r.chromium_log.size() > 2000)
    r.chromium_log = "..." + r.chromium_log.substr(r.chromium_log.size() - 2000);
  r.png = base + ".png";
  r.consent_png = base + ".consent.png";
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  MESSAGE(name << ": " << r.seconds << " s; CLI exit " << r.exit_code << "; screenshot " << r.png);
  return r;
}

std::string str(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// What every run must show, whatever the button: the driver got to the end, the pages were the ones expected,
// the page loaded nothing from outside this machine, no dialog opened, nothing was left running.
void check_common(const SignIn& r, const std::string& consent_title) {
  INFO("CLI stderr:\n" << r.err);
  INFO("Chromium's stderr (end):\n" << r.chromium_log);
  INFO("the driver's steps (seconds since it started):\n" << (r.steps.empty() ? "none: it never started\n" : r.steps));
  REQUIRE_MESSAGE(r.page.has_value(), "the browser driver wrote no result within the time allowed");
  const nlohmann::json& p = *r.page;
  INFO("driver result:\n" << p.dump(2));
  REQUIRE(p.is_object());
  REQUIRE(p.value("ok", false));
  CHECK(r.strays.empty());
  REQUIRE(p["consent"].is_object());
  CHECK(str(p["consent"], "title") == consent_title);
  CHECK(contains(str(p["consent"], "text"), "Allow access?"));
  REQUIRE(p["final"].is_object());
  CHECK(p["dialogs"].empty());
  CHECK(p["final"]["scripts"] == 0);  // the listener's pages carry no script at all
  for (const auto& req : p["requests"]) {
    std::string url = str(req, "url");
    INFO("request " << url);
    CHECK((url.rfind("http://localhost:", 0) == 0 || url.rfind("http://127.0.0.1:", 0) == 0 ||
           url.rfind("data:", 0) == 0));
  }
  // The card is centred in the window.
  const auto& card = p["final"]["card"];
  REQUIRE(card.is_object());
  double cx = card["x"].get<double>() + card["width"].get<double>() / 2;
  double cy = card["y"].get<double>() + card["height"].get<double>() / 2;
  CHECK(std::abs(cx - card["viewportWidth"].get<double>() / 2) < 2);
  CHECK(std::abs(cy - card["viewportHeight"].get<double>() / 2) < 2);
  auto size = png_size(r.png);
  CHECK(size.first == card["viewportWidth"].get<unsigned>());
  CHECK(size.second == card["viewportHeight"].get<unsigned>());
  CHECK(png_size(r.consent_png).first > 0);
}

}  // namespace

TEST_CASE("browser: Allow on the consent page -> success page, token JSON, exit 0") {
  if (!support::browser_tests_run_here())
    return;
  Tools t = find_tools();
  SignIn r = sign_in(t, "success", aps_mock::Options{}, "#allow button");
  check_common(r, "Mock APS – Authorize");
  const nlohmann::json& fin = (*r.page)["final"];
  INFO("final page text:\n" << str(fin, "text"));
  CHECK(str(fin, "url").rfind("http://localhost:", 0) == 0);
  CHECK(contains(str(fin, "url"), std::string(kCallbackPath) + "?code="));
  CHECK(str(fin, "title") == "Signed in - aps_auth");
  CHECK(contains(str(fin, "text"), "You are signed in"));
  CHECK(contains(str(fin, "text"), "close this window"));
  CHECK(contains(str(fin, "text"), "aps_auth"));

  INFO("CLI stdout:\n" << r.out << "\nCLI stderr:\n" << r.err);
  CHECK(r.exit_code == 0);
  auto token = nlohmann::json::parse(r.out, nullptr, false);
  REQUIRE(token.is_object());
  CHECK(!str(token, "access_token").empty());
  CHECK(!str(token, "refresh_token").empty());
  CHECK(!contains(r.err, str(token, "access_token")));  // the token goes to stdout only
}

TEST_CASE("browser: Deny with <script> in error_description -> shown as text, nothing runs, exit 1") {
  if (!support::browser_tests_run_here())
    return;
  Tools t = find_tools();
  aps_mock::Options o;
  o.deny = true;  // the consent page tells a scripted user to press Deny; we press it for real
  o.deny_description = std::string("The user said no. ") + kPayload;
  SignIn r = sign_in(t, "denied", o, "#deny button");
  check_common(r, "Mock APS – Authorize");
  const nlohmann::json& fin = (*r.page)["final"];
  INFO("final page text:\n" << str(fin, "text"));
  CHECK(contains(str(fin, "url"), std::string(kCallbackPath) + "?error=access_denied"));
  CHECK(str(fin, "title") == "Sign-in cancelled - aps_auth");  // not 'pwned'
  CHECK(contains(str(fin, "text"), "Sign-in cancelled"));
  CHECK(contains(str(fin, "text"), "access_denied"));
  CHECK(contains(str(fin, "text"), "try again"));
  // The markup is visible, literally, as text; none of it became an element.
  CHECK(contains(str(fin, "text"), kPayload));
  CHECK(contains(str(fin, "textContent"), kPayload));
  CHECK(fin["images"] == 0);
  for (const auto& req : (*r.page)["requests"]) {  // the <img src=x> would have asked for <callback dir>/x
    std::string url = str(req, "url");
    CHECK(url.substr(url.size() < 2 ? 0 : url.size() - 2) != "/x");
  }
  CHECK((*r.page)["console"].empty());

  INFO("CLI stdout:\n" << r.out << "\nCLI stderr:\n" << r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK(contains(r.err, "access_denied"));
}

TEST_CASE("browser: Allow with openid -> the page names the user from the verified id_token, exit 0") {
  if (!support::browser_tests_run_here())
    return;
  Tools t = find_tools();
  App app;
  app.scopes = "data:read openid";
  SignIn r = sign_in(t, "signed-in-as", aps_mock::Options{}, "#allow button", app);
  check_common(r, "Mock APS – Authorize");
  const nlohmann::json& fin = (*r.page)["final"];
  INFO("final page text:\n" << str(fin, "text"));
  CHECK(str(fin, "title") == "Signed in - aps_auth");
  // The mock's id_token carries no name claim: its email names the user.
  CHECK(contains(str(fin, "text"), "You are signed in as mock.user@example.com."));
  CHECK(contains(str(fin, "text"), "close this window"));
  INFO("CLI stdout:\n" << r.out << "\nCLI stderr:\n" << r.err);
  CHECK(r.exit_code == 0);
  auto token = nlohmann::json::parse(r.out, nullptr, false);
  REQUIRE(token.is_object());
  CHECK(!str(token, "id_token").empty());
}

// The page after a code exchange that failed: what failed in words, no secret, no code, and the CLI fails too.
void check_failure_page(const SignIn& r, const std::string& words, const std::string& secret) {
  check_common(r, "Mock APS – Authorize");
  const nlohmann::json& fin = (*r.page)["final"];
  INFO("final page text:\n" << str(fin, "text"));
  CHECK(str(fin, "title") == "Sign-in failed - aps_auth");
  CHECK(contains(str(fin, "text"), "Sign-in failed"));
  CHECK(contains(str(fin, "text"), words));
  CHECK(!contains(str(fin, "text"), "You are signed in"));
  const std::string url = str(fin, "url");
  const std::size_t at = url.find("code=");
  REQUIRE(at != std::string::npos);
  const std::string code = url.substr(at + 5, url.find('&', at) - at - 5);
  REQUIRE(code.size() >= 8);
  CHECK(!contains(str(fin, "textContent"), code));
  if (!secret.empty())
    CHECK(!contains(str(fin, "textContent"), secret));
  INFO("CLI stdout:\n" << r.out << "\nCLI stderr:\n" << r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  if (!secret.empty())
    CHECK(!contains(r.err, secret));
}

TEST_CASE("browser: the code exchange fails (wrong client secret) -> the failure page says so, exit 1") {
  if (!support::browser_tests_run_here())
    return;
  Tools t = find_tools();
  App app;
  app.registered_secret = "browser-right-secret-0123";
  app.given_secret = "browser-wrong-secret-4567";
  SignIn r = sign_in(t, "exchange-refused", aps_mock::Options{}, "#allow button", app);
  check_failure_page(r, "client ID or secret was refused", app.given_secret);
  CHECK(contains(r.err, "AUTH-003"));
}

TEST_CASE("browser: the token endpoint answers 500 -> the failure page says the service refused, exit 1") {
  if (!support::browser_tests_run_here())
    return;
  Tools t = find_tools();
  App app;
  app.faults = {
      support::fault(support::kTokenPath, 500, R"({"developerMessage":"Internal failure.","errorCode":"AUTH-500"})")};
  SignIn r = sign_in(t, "exchange-failed", aps_mock::Options{}, "#allow button", app);
  check_failure_page(r, "refused to finish the sign-in", "");
  CHECK(contains(str((*r.page)["final"], "text"), "HTTP 500"));
}
