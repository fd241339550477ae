// A real browser end to end: `aps-auth login` against the in-process mock APS server, with $BROWSER set to
// tests/browser/headless_browser.mjs, which opens the authorize URL in headless Chromium and presses the
// consent page's button with a real (DevTools) mouse click. Then the final page's DOM is checked:
//   - Allow: the listener's success page says so, and the CLI prints token JSON and exits 0;
//   - Deny, with <script> markup in error_description: the failure page shows the markup as text, nothing in
//     it runs (title unchanged, no dialog, no <script>/<img> element, no request for the img), the CLI exits 1.
// Screenshots of both final pages (and of the consent page) are kept in <build>/screenshots/.
//
// Needs Chromium (Debian: chromium) and Node.js (Debian: nodejs); no npm package. A missing one fails the test,
// it is not skipped. APS_AUTH_CHROMIUM overrides the Chromium binary, APS_AUTH_NODE the node binary.
// Bounded: each sign-in has 25 s; the CLI, the driver and every Chromium process are killed on every path.
#include <doctest/doctest.h>

#include "aps_auth.hpp"
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
using support::contains, support::env_or;

constexpr auto kSignInBudget = 25s;  // per sign-in: Chromium start + two pages, normally ~3 s
const char* const kCallbackPath = "/api/auth/callback";
const char* const kPayload = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";

std::string read_file(const std::string& p) { return support::read_file(p).value_or(""); }

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

// Width and height of a PNG file (0, 0 when it is not one).
std::pair<unsigned, unsigned> png_size(const std::string& p) {
  std::string b = read_file(p);
  if (b.size() < 24 || b.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0 || b.compare(12, 4, "IHDR") != 0) return {0, 0};
  auto be32 = [&](std::size_t i) {
    return (static_cast<unsigned>(static_cast<unsigned char>(b[i])) << 24) |
           (static_cast<unsigned>(static_cast<unsigned char>(b[i + 1])) << 16) |
           (static_cast<unsigned>(static_cast<unsigned char>(b[i + 2])) << 8) |
           static_cast<unsigned>(static_cast<unsigned char>(b[i + 3]));
  };
  return {be32(16), be32(20)};
}

struct Tools {
  std::string chromium, node, cli, driver, out_dir;
};

// Everything the test needs, or a clear failure saying what to install. An override that is set must work.
Tools find_tools() {
  Tools t;
  const std::string chromium = env_or("APS_AUTH_CHROMIUM", ""), node = env_or("APS_AUTH_NODE", "");
  if (!chromium.empty() && !support::platform::is_executable(chromium))
    FAIL("APS_AUTH_CHROMIUM=" << chromium << " is not an executable file");
  t.chromium = support::find_program({chromium, "chromium", "chromium-browser", "/usr/bin/chromium", "google-chrome",
                             "google-chrome-stable"});
  if (t.chromium.empty())
    FAIL("Chromium not found: install Debian's chromium package (apt-get install chromium), or set "
         "APS_AUTH_CHROMIUM to a Chromium/Chrome binary");
  if (!node.empty() && !support::platform::is_executable(node))
    FAIL("APS_AUTH_NODE=" << node << " is not an executable file");
  t.node = support::find_program({node, "node", "nodejs"});
  if (t.node.empty()) FAIL("Node.js not found: install Debian's nodejs package (apt-get install nodejs)");
  t.cli = support::find_program({support::cli_path(), support::binary_dir() + "/aps-auth"});
  if (t.cli.empty())
    FAIL("the aps-auth CLI was not found: build it (APS_AUTH_BUILD_EXAMPLES=ON) or set APS_AUTH_CLI");
  t.driver = support::source_dir() + "/tests/browser/headless_browser.mjs";
  if (!support::is_file(t.driver)) FAIL("missing " << t.driver << " (set APS_AUTH_SOURCE_DIR)");
  t.out_dir = support::binary_dir() + "/screenshots";
  std::error_code ec;
  std::filesystem::create_directories(t.out_dir, ec);
  return t;
}

struct SignIn {
  int exit_code = -1;  // the CLI's; -1: killed at the deadline
  std::string out, err;
  std::optional<nlohmann::json> page;  // the driver's result (NAME.json)
  std::vector<long> strays;            // processes still alive 3 s after both finished (then killed)
  double seconds = 0;
  std::string png, consent_png, chromium_log;
};

// Runs `aps-auth login` against the mock with $BROWSER = the headless driver, which clicks `button`.
// Whatever happens, the CLI, the driver and Chromium are gone when this returns.
SignIn sign_in(const Tools& t, const std::string& name, aps_mock::Options options, const std::string& button) {
  const auto t0 = Clock::now();
  const int port = support::free_port();
  REQUIRE(port > 0);
  const std::string origin = "http://localhost:" + std::to_string(port);
  const std::string callback = origin + kCallbackPath;
  options.consent = aps_mock::Consent::page;
  options.clients = {aps_mock::RegisteredClient{"aps-auth-browser-test", "", {callback}}};
  aps_mock::Server mock(options);

  support::TempDir profile_dir("aps-auth-browser-");
  const std::string profile = profile_dir.path();

  const std::string base = t.out_dir + "/" + name;
  std::error_code ec;
  for (const char* s : {".json", ".png", ".consent.png", ".html", ".error.png", ".pids", ".cli.stdout", ".cli.stderr"})
    std::filesystem::remove(base + s, ec);

  const std::string browser = quoted(t.node) + " " + quoted(t.driver) + " --out " + quoted(t.out_dir) + " --name " +
                              name + " --profile " + quoted(profile) + " --chromium " + quoted(t.chromium) +
                              " --click " + quoted(button) + " --final-prefix " + quoted(callback) +
                              " --timeout 22 %s";

  // The CLI's environment: this one without APS_* settings (but the test's own APS_AUTH_*), plus ours.
  support::EnvMap env;
  for (const auto& [k, v] : support::platform::current_environment())
    if (!((k.rfind("APS_", 0) == 0 && k.rfind("APS_AUTH_", 0) != 0) || k == "BROWSER")) env[k] = v;
  env["BROWSER"] = browser;
  const std::vector<std::string> args = {t.cli,          "login",         "--client-id",    "aps-auth-browser-test",
                                         "--base-url",   mock.base_url(), "--callback-url", callback,
                                         "--scopes",     "data:read",     "--timeout",      "22"};
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
        if (processes_mentioning(profile).empty()) break;
        std::this_thread::sleep_for(50ms);
      }
      r.strays = processes_mentioning(profile);
      for (long p : r.strays) support::platform::kill_process(p);
      for (int i = 0; i < 60 && !processes_mentioning(profile).empty(); ++i) std::this_thread::sleep_for(50ms);
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
        if (!r.page->is_object() || !r.page->value("ok", false)) break;  // the browser failed: stop the CLI now
      }
      std::this_thread::sleep_for(25ms);
    }
  }
  mock.stop();
  r.out = read_file(output.stdout_file);
  r.err = read_file(output.stderr_file);
  r.chromium_log = read_file(base + ".chromium.log");
  if (r.chromium_log.size() > 2000) r.chromium_log = "..." + r.chromium_log.substr(r.chromium_log.size() - 2000);
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

// There is no Windows Chromium here: under Wine the browser would be the Linux one, which the Linux stages test
// already. What is Windows's own, the CLI starting $BROWSER with CreateProcessW, test_cli tests there with its
// stand-in browser. Says so by name on Windows.
bool browser_tests_run_here() {
#ifdef _WIN32
  MESSAGE("skipped on Windows: no Windows Chromium here (under Wine it would be the Linux one, tested by the Linux "
          "stages); the CLI starting $BROWSER with CreateProcessW is tested by test_cli");
  return false;
#else
  return true;
#endif
}

}  // namespace

TEST_CASE("browser: Allow on the consent page -> success page, token JSON, exit 0") {
  if (!browser_tests_run_here()) return;
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
  if (!browser_tests_run_here()) return;
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
