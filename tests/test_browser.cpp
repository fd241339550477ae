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
#include "mock_aps_server.hpp"

#include <nlohmann/json.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kSignInBudget = 25s;  // per sign-in: Chromium start + two pages, normally ~3 s
const char* const kCallbackPath = "/api/auth/callback";
const char* const kPayload = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

bool is_executable_file(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
}

bool is_file(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The first of `names` found as an executable in $PATH (or an absolute path given directly).
std::string find_program(const std::vector<std::string>& names) {
  for (const auto& n : names) {
    if (n.empty()) continue;
    if (n.find('/') != std::string::npos) {
      if (is_executable_file(n)) return n;
      continue;
    }
    std::stringstream path(env_or("PATH", "/usr/local/bin:/usr/bin:/bin"));
    for (std::string dir; std::getline(path, dir, ':');)
      if (is_executable_file((dir.empty() ? "." : dir) + "/" + n)) return (dir.empty() ? "." : dir) + "/" + n;
  }
  return "";
}

std::string read_file(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string source_dir() {
  std::string dir = env_or("APS_AUTH_SOURCE_DIR", "");
  if (!dir.empty()) return dir;
  std::string here = __FILE__;  // <source>/tests/test_browser.cpp
  auto slash = here.rfind("/tests/");
  return slash == std::string::npos ? "." : here.substr(0, slash);
}

std::string binary_dir() { return env_or("APS_AUTH_BINARY_DIR", "."); }

// A free TCP port on loopback (bound, read, released: the CLI's listener binds it a moment later).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  REQUIRE(ok);
  return ntohs(a.sin_port);
}

// Single-quotes an argument for aps::auth::open_browser's $BROWSER splitting (no shell is involved).
std::string quoted(const std::string& s) {
  REQUIRE_MESSAGE(s.find('\'') == std::string::npos, "path with a single quote: " << s);
  return "'" + s + "'";
}

// Processes whose command line mentions `marker` (the sign-in's own, unique Chromium profile directory: it is
// on the command line of the driver and of every Chromium process, and of nothing else).
std::vector<pid_t> processes_mentioning(const std::string& marker) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (!end || *end || pid <= 0 || pid == ::getpid()) continue;
    std::string cmdline = read_file(std::string("/proc/") + e->d_name + "/cmdline");
    for (char& c : cmdline)
      if (c == '\0') c = ' ';
    if (contains(cmdline, marker)) out.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(d);
  return out;
}

void remove_tree(const std::string& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    if (DIR* d = ::opendir(p.c_str())) {
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") remove_tree(p + "/" + n);
      }
      ::closedir(d);
    }
    ::rmdir(p.c_str());
  } else {
    ::unlink(p.c_str());
  }
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
  if (!chromium.empty() && !is_executable_file(chromium))
    FAIL("APS_AUTH_CHROMIUM=" << chromium << " is not an executable file");
  t.chromium = find_program({chromium, "chromium", "chromium-browser", "/usr/bin/chromium", "google-chrome",
                             "google-chrome-stable"});
  if (t.chromium.empty())
    FAIL("Chromium not found: install Debian's chromium package (apt-get install chromium), or set "
         "APS_AUTH_CHROMIUM to a Chromium/Chrome binary");
  if (!node.empty() && !is_executable_file(node)) FAIL("APS_AUTH_NODE=" << node << " is not an executable file");
  t.node = find_program({node, "node", "nodejs"});
  if (t.node.empty()) FAIL("Node.js not found: install Debian's nodejs package (apt-get install nodejs)");
  t.cli = find_program({env_or("APS_AUTH_CLI", ""), binary_dir() + "/aps-auth"});
  if (t.cli.empty())
    FAIL("the aps-auth CLI was not found: build it (APS_AUTH_BUILD_EXAMPLES=ON) or set APS_AUTH_CLI");
  t.driver = source_dir() + "/tests/browser/headless_browser.mjs";
  if (!is_file(t.driver)) FAIL("missing " << t.driver << " (set APS_AUTH_SOURCE_DIR)");
  t.out_dir = binary_dir() + "/screenshots";
  ::mkdir(t.out_dir.c_str(), 0755);
  return t;
}

struct SignIn {
  int exit_code = -1;  // the CLI's; -1: killed at the deadline
  std::string out, err;
  std::optional<nlohmann::json> page;  // the driver's result (NAME.json)
  std::vector<pid_t> strays;           // processes still alive 3 s after both finished (then killed)
  double seconds = 0;
  std::string png, consent_png, chromium_log;
};

// Runs `aps-auth login` against the mock with $BROWSER = the headless driver, which clicks `button`.
// Whatever happens, the CLI, the driver and Chromium are gone when this returns.
SignIn sign_in(const Tools& t, const std::string& name, aps_mock::Options options, const std::string& button) {
  const auto t0 = Clock::now();
  const int port = free_port();
  const std::string origin = "http://localhost:" + std::to_string(port);
  const std::string callback = origin + kCallbackPath;
  options.consent = aps_mock::Consent::page;
  options.clients = {aps_mock::RegisteredClient{"aps-auth-browser-test", "", {callback}}};
  aps_mock::Server mock(options);

  char profile_template[] = "/tmp/aps-auth-browser-XXXXXX";
  REQUIRE(::mkdtemp(profile_template) != nullptr);
  const std::string profile = profile_template;

  const std::string base = t.out_dir + "/" + name;
  for (const char* s : {".json", ".png", ".consent.png", ".html", ".error.png", ".pids", ".cli.stdout", ".cli.stderr"})
    ::unlink((base + s).c_str());

  const std::string browser = quoted(t.node) + " " + quoted(t.driver) + " --out " + quoted(t.out_dir) + " --name " +
                              name + " --profile " + quoted(profile) + " --chromium " + quoted(t.chromium) +
                              " --click " + quoted(button) + " --final-prefix " + quoted(callback) +
                              " --timeout 22 %s";

  // The CLI's environment: this one without APS_* settings (but the test's own APS_AUTH_*), plus ours.
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    if ((kv.rfind("APS_", 0) == 0 && kv.rfind("APS_AUTH_", 0) != 0) || kv.rfind("BROWSER=", 0) == 0) continue;
    env.push_back(kv);
  }
  env.push_back("BROWSER=" + browser);
  std::vector<std::string> args = {t.cli,          "login",       "--client-id",    "aps-auth-browser-test",
                                   "--base-url",   mock.base_url(), "--callback-url", callback,
                                   "--scopes",     "data:read",   "--timeout",      "22"};
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string out_path = base + ".cli.stdout", err_path = base + ".cli.stderr";

  SignIn r;
  pid_t cli = ::fork();
  REQUIRE(cli >= 0);
  if (cli == 0) {  // only async-signal-safe calls between fork and exec
    ::setpgid(0, 0);
    int o = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int n = ::open("/dev/null", O_RDONLY);
    if (o < 0 || e < 0 || n < 0) ::_exit(126);
    ::dup2(n, 0);
    ::dup2(o, 1);
    ::dup2(e, 2);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::setpgid(cli, cli);

  // Cleanup on every path (a failed REQUIRE throws): the CLI's process group, then anything using the profile.
  struct Cleanup {
    pid_t& cli;
    std::string profile;
    SignIn& r;
    ~Cleanup() {
      if (cli > 0) {
        ::kill(-cli, SIGKILL);
        ::kill(cli, SIGKILL);
        ::waitpid(cli, nullptr, 0);
        cli = -1;
      }
      for (int i = 0; i < 60; ++i) {  // the driver closes Chromium itself; give it 3 s to finish
        if (processes_mentioning(profile).empty()) break;
        std::this_thread::sleep_for(50ms);
      }
      r.strays = processes_mentioning(profile);
      for (pid_t p : r.strays) ::kill(p, SIGKILL);
      for (int i = 0; i < 60 && !processes_mentioning(profile).empty(); ++i) std::this_thread::sleep_for(50ms);
      remove_tree(profile);
    }
  };
  {
    Cleanup cleanup{cli, profile, r};
    const auto deadline = t0 + kSignInBudget;
    bool have_page = false;
    while (Clock::now() < deadline && (cli > 0 || !have_page)) {
      if (cli > 0) {
        int status = 0;
        if (::waitpid(cli, &status, WNOHANG) == cli) {
          r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
          cli = -1;
        }
      }
      if (!have_page && is_file(base + ".json")) {
        have_page = true;
        r.page = nlohmann::json::parse(read_file(base + ".json"), nullptr, false);
        if (!r.page->is_object() || !r.page->value("ok", false)) break;  // the browser failed: stop the CLI now
      }
      std::this_thread::sleep_for(25ms);
    }
  }
  mock.stop();
  r.out = read_file(out_path);
  r.err = read_file(err_path);
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

}  // namespace

TEST_CASE("browser: Allow on the consent page -> success page, token JSON, exit 0") {
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
