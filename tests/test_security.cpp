// Security round 2: what a hostile local user or a hostile endpoint must not get. Each TEST_CASE is
// one defect of the adversarial review, and fails on the code before its fix: token and lock files planted as
// links, FIFOs, other users' files or locks held forever; token answers with header-breaking characters.
// Cases that need a second user run as root (as CI does) and are skipped by name otherwise.
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/cli.hpp"
#include "support/environment.hpp"
#include "support/files.hpp"
#include "support/library.hpp"
#include "support/mock.hpp"
#include "support/network.hpp"
#include "support/platform.hpp"
#include "support/process.hpp"
#include "support/text.hpp"
#include "support/timing.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <vector>

#ifndef _WIN32
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace {

namespace auth = aps::auth;
using namespace std::chrono_literals;
using support::contains, support::require_error, support::TempDir;

// How a stand-in browser (support::environment_recording_browser) was started: its arguments after the program,
// and its environment as "K=V" lines. Waits for the record (up to 20 s: a guard, not a timing assertion), which
// a browser started detached writes when it likes.
struct BrowserStart {
  std::vector<std::string> argv;
  std::string environment;
};

BrowserStart wait_for_browser(const std::string& record) {
  for (auto until = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < until;) {
    if (std::optional<std::string> text = support::read_file(record)) {
      const nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
      REQUIRE_MESSAGE(j.is_object(), "not a record: " << *text);
      BrowserStart b;
      b.argv = j["argv"].get<std::vector<std::string>>();
      for (const auto& kv : j["environment"])
        b.environment += kv.get<std::string>() + "\n";
      return b;
    }
    std::this_thread::sleep_for(20ms);
  }
  FAIL("no browser record " << record << " after 20 s");
  return {};
}

// The environment of a browser that open_browser(url, {secret}) started, with secret-holding variables set.
void check_secret_variables_dropped(const BrowserStart& browser, const std::string& secret) {
  INFO("the browser's environment:\n" << browser.environment);
  CHECK_FALSE(contains(browser.environment, secret));
  CHECK_FALSE(contains(browser.environment, "SOME_TOOL_PASSWORD="));
  CHECK_FALSE(contains(browser.environment, "SOME_URL="));
  CHECK_FALSE(contains(browser.environment, "APS_CLIENT_SECRET="));
  CHECK(contains(browser.environment, "HARMLESS_SETTING=kept-4711"));
}

auth::Token a_token() {
  auth::Token t;
  t.access_token = "access-0123";
  t.refresh_token = "refresh-4567";
  t.expires_in = std::chrono::seconds(3600);
  t.expires_at = std::chrono::system_clock::now() + t.expires_in;
  return t;
}

#ifndef _WIN32
// POSIX only: the second user of these cases is uid 65534, made with chown(), which needs root.
constexpr uid_t kNobody = 65534;
bool running_as_root() {
  return ::geteuid() == 0;
}
#endif

}  // namespace

TEST_SUITE("security: token and lock files"){TEST_CASE(
    "row 1: a symbolic link planted at the lock or token path is refused; nothing is created where it points"){
    TempDir dir;
const std::string path = dir.file("tok.json");
const std::string elsewhere = dir.file("victim-private/planted");
std::filesystem::create_directory(dir.file("victim-private"));
std::error_code ec;
std::filesystem::create_symlink(elsewhere, path + ".lock", ec);
if (ec) {  // Windows: creating one needs Developer Mode or an administrator; Wine cannot
  MESSAGE("skipped: this system cannot create symbolic links (" << ec.message() << ")");
  return;
}

auth::FileTokenStore store(path);
auth::Error e = require_error([&] { (void)store.lock(); });
CHECK(e.kind() == auth::ErrorKind::io);
CHECK(contains(e.what(), path + ".lock"));
CHECK(contains(e.what(), "symbolic link"));
CHECK_FALSE(support::exists(elsewhere));

// The token file itself: a link to a file of ours is not read through.
const std::string real = dir.write("real.json", a_token().to_json(), 0600);
std::filesystem::create_symlink(real, path);
auth::Token t;
e = require_error([&] { (void)store.load(t); });
CHECK(e.kind() == auth::ErrorKind::io);
CHECK(contains(e.what(), path));
CHECK(contains(e.what(), "symbolic link"));
}

TEST_CASE("row 2: a lock held by another process: lock() gives up after lock_timeout() saying the lock is held") {
  TempDir dir;
  const std::string path = dir.file("tok.json");
  auth::FileTokenStore holder(path), waiter(path);
  CHECK(waiter.lock_timeout() == 30s);  // the documented default
  std::unique_ptr<auth::StoreLock> held = holder.lock();
  REQUIRE(held);
  // Another open of the lock file: another process's lock, as far as the OS is concerned.
  waiter.set_lock_timeout(300ms);
  auth::Error e = require_error([&] { (void)waiter.lock(); });
  CHECK(e.kind() == auth::ErrorKind::timeout);
  CHECK(contains(e.what(), path + ".lock"));
  CHECK(contains(e.what(), "held by another process"));
  CHECK(contains(e.what(), "300 ms"));
  held.reset();
  CHECK(waiter.lock() != nullptr);  // released: taken at once
}

#ifndef _WIN32
// POSIX only: FIFOs.
TEST_CASE("row 3: a FIFO at the token path is an immediate io error, not a hang") {
  TempDir dir;
  const std::string path = dir.file("tok.json");
  REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
  auth::FileTokenStore store(path);
  std::future<std::optional<auth::Error>> loading = std::async(std::launch::async, [&] {
    return support::catch_error([&] {
      auth::Token t;
      (void)store.load(t);
    });
  });
  // Not a timing assertion: a guard so that a hanging open (the defect) ends the test instead of hanging it.
  if (loading.wait_for(20s) != std::future_status::ready) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK);  // lets the blocked open return
    if (fd >= 0)
      ::close(fd);
    FAIL("FileTokenStore::load() blocked on a FIFO at the token path");
  }
  std::optional<auth::Error> e = loading.get();
  REQUIRE(e.has_value());
  CHECK(e->kind() == auth::ErrorKind::io);
  CHECK(contains(e->what(), path));
  CHECK(contains(e->what(), "FIFO"));

  // The lock path too.
  REQUIRE(::mkfifo((path + ".lock").c_str(), 0600) == 0);
  auth::Error le = require_error([&] { (void)store.lock(); });
  CHECK(le.kind() == auth::ErrorKind::io);
  CHECK(contains(le.what(), "FIFO"));
}

// POSIX only: chown() to a second user, as root.
TEST_CASE("row 2: a token file or lock file owned by another user is refused (as root)") {
  if (!running_as_root()) {
    MESSAGE("skipped: needs root to give a file to uid 65534");
    return;
  }
  TempDir dir;
  const std::string path = dir.file("tok.json");
  auth::FileTokenStore store(path);
  store.save(a_token());
  {
    std::unique_ptr<auth::StoreLock> l = store.lock();  // creates the lock file
  }
  REQUIRE(::chown(path.c_str(), kNobody, kNobody) == 0);
  auth::Token t;
  auth::Error e = require_error([&] { (void)store.load(t); });
  CHECK(e.kind() == auth::ErrorKind::io);
  CHECK(contains(e.what(), path));
  CHECK(contains(e.what(), "another user (uid 65534"));

  REQUIRE(::chown((path + ".lock").c_str(), kNobody, kNobody) == 0);
  auth::Error le = require_error([&] { (void)store.lock(); });
  CHECK(le.kind() == auth::ErrorKind::io);
  CHECK(contains(le.what(), path + ".lock"));
  CHECK(contains(le.what(), "another user"));
}
#else
TEST_CASE("row 3 and row 2 (owner): FIFOs and a second user") {
  MESSAGE("skipped on Windows: a FIFO at a path and chown() to a second user are POSIX mechanisms");
}
#endif
}

TEST_SUITE("security: token answers") {
  TEST_CASE(
      "row 8: tokens outside RFC 6750's b64token characters or a token_type other than Bearer: bad_response, "
      "nothing saved") {
    support::MockEnv env(false);
    const auth::Config config = env.config();
    const struct {
      const char* what;
      std::string body;
    } bad[] = {
        {"CR LF in access_token", R"({"access_token":"at\r\nX-Evil: 1","token_type":"Bearer","expires_in":3599})"},
        {"space in access_token", R"({"access_token":"at -H x","token_type":"Bearer","expires_in":3599})"},
        {"'=' inside access_token", R"({"access_token":"a=b","token_type":"Bearer","expires_in":3599})"},
        {"LF in refresh_token",
         R"({"access_token":"at","refresh_token":"rt\nX: y","token_type":"Bearer","expires_in":3599})"},
        {"token_type mac", R"({"access_token":"at","token_type":"mac","expires_in":3599})"},
        {"token_type N_A", R"({"access_token":"at","token_type":"N_A","expires_in":3599})"},
    };
    for (const auto& b : bad) {
      CAPTURE(b.what);
      env.server.inject(support::fault(support::kTokenPath, 200, b.body));
      auth::Error e = require_error([&] { (void)auth::client_credentials(config); });
      CHECK(e.kind() == auth::ErrorKind::bad_response);
      CHECK_FALSE(contains(e.what(), "X-Evil"));
    }

    // Accepted: RFC 6750's characters, trailing '=', and Bearer in any case.
    env.server.inject(support::fault(support::kTokenPath, 200,
                                     R"({"access_token":"aZ09-._~+/==","token_type":"bearer","expires_in":3599})"));
    auth::Token t = auth::client_credentials(config);
    CHECK(t.access_token == "aZ09-._~+/==");
    // The mock (like APS) says Bearer.
    CHECK(auth::client_credentials(config).token_type == "Bearer");

    // A refresh answered with a header-breaking token: the stored token is left as it was.
    TempDir dir;
    const std::string path = dir.file("tok.json");
    auth::Token old = a_token();
    old.expires_at = std::chrono::system_clock::now() - 1s;  // due for a refresh
    auto store = std::make_shared<auth::FileTokenStore>(path);
    store->save(old);
    const std::string before = *support::read_file(path);
    env.server.inject(support::fault(support::kTokenPath, 200, bad[0].body));
    auth::TokenSource source(config, store);
    auth::Error e = require_error([&] { (void)source.access_token(); });
    CHECK(e.kind() == auth::ErrorKind::bad_response);
    CHECK(*support::read_file(path) == before);
  }

  TEST_CASE("row 8: a token file holding a header-breaking token is refused, not handed out") {
    TempDir dir;
    const std::string path = dir.file("tok.json");  // written owner-only, as the library writes (a Windows DACL too)
    auth::detail::replace_file(
        path, R"({"access_token":"at\r\nX-Evil: 1","token_type":"Bearer","expires_in":3599,"expires_at":4000000000})");
    auth::FileTokenStore store(path);
    auth::Token t;
    auth::Error e = require_error([&] { (void)store.load(t); });
    INFO(std::string(e.what()));
    CHECK(e.kind() == auth::ErrorKind::io);
    CHECK(contains(e.what(), "not a valid token"));
  }
}

TEST_SUITE("security: the loopback listener") {
#ifdef __linux__
  // Linux only: the peer check reads /proc/net/tcp; the second user is made with fork() and setuid() (root).
  TEST_CASE("row 6: a callback from another local user's process is refused and does not count (as root)") {
    if (!running_as_root()) {
      MESSAGE("skipped: needs root to send the callback from a process of uid 65534");
      return;
    }
    auth::LoopbackListener listener("http://127.0.0.1:0/cb");
    const int port = listener.port();
    auth::Config config;
    config.client_id = "peer-check";
    const auth::AuthorizationRequest request = auth::authorization_request(config, {}, listener.redirect_uri());
    // The other user read the authorize URL (state included) from the browser's command line.
    support::platform::ChildProcess child = support::platform::fork_child([&](int out) -> int {
      if (::setgroups(0, nullptr) != 0 || ::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) {
        support::platform::write_all(out, "cannot drop to uid 65534");
        return 4;
      }
      const support::raw_http::Response r =
          support::raw_http::request("127.0.0.1", port, "/cb?code=ATTACKER-CODE&state=" + request.state);
      const support::raw_http::Response cancel =
          support::raw_http::request("127.0.0.1", port, "/cb?error=access_denied&state=" + request.state);
      support::platform::write_all(out, std::to_string(r.status) + " " + std::to_string(cancel.status) + "\n" + r.body);
      return 0;
    });
    std::future<std::pair<support::RunResult, int>> browser = std::async(std::launch::async, [&] {
      support::RunResult attacker = support::Process(child).finish(60s);
      const int status =
          support::raw_http::request("127.0.0.1", port, "/cb?code=the-users-code&state=" + request.state).status;
      return std::make_pair(attacker, status);
    });
    CHECK(listener.wait(request, 60s) == "the-users-code");
    const std::pair<support::RunResult, int> outcome = browser.get();
    const support::RunResult& attacker = outcome.first;  // not a structured binding: INFO captures it (C++17)
    const int status = outcome.second;
    INFO("attacker: exit " << attacker.exit_code << " output: " << attacker.out);
    REQUIRE(attacker.exit_code == 0);
    CHECK(support::starts_with(attacker.out, "403 403\n"));
    CHECK(contains(attacker.out, "another user of this computer"));
    CHECK(status == 200);
  }
#else
  TEST_CASE("row 6: the peer check") {
    MESSAGE(
        "skipped here: the test needs a second local user (setuid to 65534 as root, Linux); on Windows the "
        "check (GetExtendedTcpTable, the owning process's user SID) is built but no test runs it");
  }
#endif

  TEST_CASE("row 9: listener pages forbid framing: CSP frame-ancestors 'none' and X-Frame-Options: DENY") {
    auth::LoopbackListener listener("http://127.0.0.1:0/cb");
    auth::Config config;
    config.client_id = "frames";
    const auth::AuthorizationRequest request = auth::authorization_request(config, {}, listener.redirect_uri());
    std::future<std::vector<support::raw_http::Response>> pages = std::async(std::launch::async, [&] {
      return std::vector<support::raw_http::Response>{
          support::raw_http::request("127.0.0.1", listener.port(), "/favicon.ico"),
          support::raw_http::request("127.0.0.1", listener.port(), "/cb?code=c1&state=" + request.state)};
    });
    CHECK(listener.wait(request, 20s) == "c1");
    for (const support::raw_http::Response& answer : pages.get()) {
      CHECK(answer.status != 0);
      CHECK(contains(answer.header("content-security-policy"), "frame-ancestors 'none'"));
      CHECK(answer.header("x-frame-options") == "DENY");
    }
  }

  TEST_CASE("row 9: a request whose Host is not the callback's host:port is refused and does not count") {
    auth::LoopbackListener listener("http://127.0.0.1:0/cb");
    const int port = listener.port();
    const std::string p = std::to_string(port);
    auth::Config config;
    config.client_id = "rebinding";
    const auth::AuthorizationRequest request = auth::authorization_request(config, {}, listener.redirect_uri());
    std::vector<support::raw_http::Response> refused;
    std::future<support::raw_http::Response> browser = std::async(std::launch::async, [&] {
      const std::string good = "/cb?code=the-code&state=" + request.state;
      const std::string cancel = "/cb?error=access_denied&state=" + request.state;
      // A DNS-rebinding page (evil.example resolved to 127.0.0.1), the right port but another name, no Host at
      // all, two Host headers: each carries the right state, none may end the wait.
      for (const std::string& head :
           {"GET " + good + " HTTP/1.1\r\nHost: evil.example:" + p + "\r\n\r\n",
            "GET " + cancel + " HTTP/1.1\r\nHost: evil.example:" + p + "\r\n\r\n",
            "GET " + good + " HTTP/1.1\r\nHost: localhost:" + p + "\r\n\r\n",
            "GET " + good + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port + 1) + "\r\n\r\n",
            "GET " + good + " HTTP/1.1\r\nUser-Agent: x\r\n\r\n",
            "GET " + good + " HTTP/1.1\r\nHost: 127.0.0.1:" + p + "\r\nHost: evil.example\r\n\r\n"})
        refused.push_back(support::raw_http::exchange("127.0.0.1", port, head));
      return support::raw_http::request("127.0.0.1", port, "/cb?code=the-real-code&state=" + request.state);
    });
    CHECK(listener.wait(request, 20s) == "the-real-code");
    CHECK(browser.get().status == 200);
    REQUIRE(refused.size() == 6);
    for (const auto& r : refused) {
      CHECK(r.status == 421);
      CHECK(contains(r.body, "not addressed to the sign-in"));
    }
  }
}

TEST_SUITE("security: the browser's environment") {
  // The variables of the row 5 cases: the secret under its own name, copied and inside a URL, and one harmless.
  struct SecretVariables {
    explicit SecretVariables(const std::string& secret)
        : named("APS_CLIENT_SECRET", secret.c_str()),
          copy("SOME_TOOL_PASSWORD", secret.c_str()),
          wrapped("SOME_URL", ("https://user:" + secret + "@example.com/").c_str()),
          harmless("HARMLESS_SETTING", "kept-4711") {}
    support::ScopedEnv named, copy, wrapped, harmless;
  };

  TEST_CASE("row 5: open_browser keeps every variable whose value holds a secret from the browser ($BROWSER)") {
    TempDir dir;
    const std::string record = dir.file("browser.json");
    const std::string secret = "s3cr3t-Value-9f2c";
    support::ScopedEnv browser("BROWSER", support::environment_recording_browser(record).c_str());
    SecretVariables variables(secret);
    const std::string url = "http://127.0.0.1:9/cb?a=1&b=%22two%20words%22";
    REQUIRE(auth::open_browser(url, {secret}));
    const BrowserStart started = wait_for_browser(record);
    CHECK(started.argv == std::vector<std::string>{url});
    check_secret_variables_dropped(started, secret);
  }

#ifdef _WIN32
  TEST_CASE(
      "row 5 (Windows): the default browser is started from the command line registered for https, with the URL "
      "as one argument, and without the variables that hold a secret") {
    TempDir dir;
    const std::string record = dir.file("default-browser.json");
    const std::string secret = "d3fault-Br0wser-41c7";
    // A stand-in default browser, registered as a browser is: a class with a command line, chosen by the user.
    const std::wstring prog_id = L"ApsAuthTestBrowser." + std::to_wstring(support::platform::current_process_id());
    const std::wstring command = L"\"" + support::platform::widen(support::test_helper()) +
                                 L"\" record-environment \"" + support::platform::widen(record) +
                                 L"\" --single-argument %1";
    // Removed after the values below are put back: the class's keys too, nothing left behind.
    support::platform::ScopedRegistryKey remove_class(HKEY_CLASSES_ROOT, prog_id);
    support::platform::ScopedRegistryString cls(HKEY_CLASSES_ROOT, prog_id + L"\\shell\\open\\command", nullptr,
                                                command);
    support::platform::ScopedRegistryString choice(
        HKEY_CURRENT_USER, L"Software\\Microsoft\\Windows\\Shell\\Associations\\UrlAssociations\\https\\UserChoice",
        L"ProgId", prog_id);
    if (!cls.ok() || !choice.ok()) {
      MESSAGE("skipped: a stand-in default browser cannot be registered here ("
              << (cls.ok() ? choice.error() : cls.error())
              << "); it needs write access to HKEY_CLASSES_ROOT and to the https UserChoice (Wine gives both)");
      return;
    }
    support::ScopedEnv no_browser("BROWSER", nullptr);
    SecretVariables variables(secret);
    const std::string url = "https://127.0.0.1:9/cb?a=1&b=%22two%20words%22";
    REQUIRE(auth::open_browser(url, {secret}));
    const BrowserStart started = wait_for_browser(record);
    CHECK(started.argv == std::vector<std::string>{"--single-argument", url});
    check_secret_variables_dropped(started, secret);
  }
#endif

  TEST_CASE("row 5: aps-auth login: the browser gets neither the secret nor the CLI's APS_* secret variables") {
    const std::string cli = support::require_cli();
    TempDir dir;
    const std::string record = dir.file("browser.json");
    const std::string secret = "cli-s3cr3t-77e1", token = "tok-unused-5d0a";
    support::EnvMap env = support::base_env(dir.path());
    env["BROWSER"] = support::environment_recording_browser(record);
    env["APS_CLIENT_SECRET"] = secret;
    env["APS_TOKEN"] = token;  // not used by login: dropped by name
    env["A_COPY_OF_IT"] = secret;
    env["HARMLESS_SETTING"] = "kept-4711";
    support::RunResult r = support::run_cli({"login", "--client-id", "browser-env", "--base-url", "http://127.0.0.1:9",
                                             "--callback-url", "http://127.0.0.1:0/cb", "--timeout", "1"},
                                            env, 60s);
    INFO(r.describe());
    const std::string seen = wait_for_browser(record).environment;
    for (const std::string& hidden :
         {secret, token, std::string("APS_CLIENT_SECRET="), std::string("APS_TOKEN="), std::string("A_COPY_OF_IT=")})
      CHECK_MESSAGE(!contains(seen, hidden), hidden << " reached the browser");
    CHECK(contains(seen, "HARMLESS_SETTING=kept-4711"));
  }
}

TEST_SUITE("security: secrets on the command line") {
  TEST_CASE(
      "row 4: a secret given on argv is blanked at once (/proc/PID/cmdline) with a warning naming the safer form") {
    const std::string cli = support::require_cli();
    TempDir dir;
    // A server that accepts and never answers: the CLI stays in its call while its command line is read.
    support::Socket silent = support::listen_on("127.0.0.1");
    const std::string base = "http://127.0.0.1:" + std::to_string(silent.local_port());
    const std::string token = "argv-token-3b8f1c", secret = "argv-secret-a41d7e";
    std::optional<std::vector<long>> with_secret, with_token, with_marker;
    support::RunResult r = support::run_cli(
        {"introspect", "--client-id", "argv-test", "--base-url", base, "--client-secret=" + secret, "--token", token},
        support::base_env(dir.path()), 60s, [&](const std::string& err) {
          if (with_marker || support::count_of(err, "warning:") < 2)
            return;
          with_marker = support::platform::processes_mentioning(base);
          with_secret = support::platform::processes_mentioning(secret);
          with_token = support::platform::processes_mentioning(token);
          silent.reset();  // the CLI's call fails now
        });
    INFO(r.describe());
    REQUIRE(with_marker.has_value());
    if (with_marker->empty()) {
      MESSAGE("skipped the /proc check: this system does not show other processes' command lines");
    } else {
      CHECK(with_secret->empty());
      CHECK(with_token->empty());
    }
    CHECK(contains(r.err, "--token on the command line is visible to other users"));
    CHECK(contains(r.err, "--token-from FILE, --token - (stdin) or APS_TOKEN"));
    CHECK(contains(r.err, "--client-secret-from FILE, --client-secret - (stdin) or APS_CLIENT_SECRET"));
    CHECK_FALSE(contains(r.err, secret));
    CHECK_FALSE(contains(r.err, token));
  }

  TEST_CASE("row 4: --token, --refresh-token and --client-secret from a file, stdin (-) or the environment") {
    support::Mock mock([] {
      aps_mock::Options o;
      o.clients = {{"secret-forms", "form-s3cr3t-19ab", {"http://127.0.0.1:8080/cb"}}};
      return o;
    }());
    TempDir dir;
    const std::string token_file = dir.write("token.txt", "tok-from-file-0001\n", 0600);
    const std::string secret_file = dir.write("secret.txt", "form-s3cr3t-19ab\r\n", 0600);
    support::EnvMap env = support::base_env(dir.path());
    auto cli = [&](std::vector<std::string> args, const support::EnvMap& e, std::optional<std::string> in = {}) {
      std::vector<std::string> argv{support::require_cli()};
      argv.insert(argv.end(), args.begin(), args.end());
      for (const char* common : {"--client-id", "secret-forms", "--base-url"})
        argv.push_back(common);
      argv.push_back(mock.base_url());
      return support::run(argv, e, 60s, {}, in);
    };
    // The client secret from a file (CR LF line end dropped), the token from a file.
    support::RunResult r = cli({"introspect", "--client-secret-from", secret_file, "--token-from", token_file}, env);
    CHECK_MESSAGE(r.exit_code == 0, r.describe());
    // The token from stdin, the secret from the environment.
    support::EnvMap with_secret = env;
    with_secret["APS_CLIENT_SECRET"] = "form-s3cr3t-19ab";
    r = cli({"introspect", "--token", "-"}, with_secret, std::string("tok-from-stdin-0002\n"));
    CHECK_MESSAGE(r.exit_code == 0, r.describe());
    // The token from the environment; the secret from stdin.
    support::EnvMap with_token = env;
    with_token["APS_TOKEN"] = "tok-from-env-0003";
    r = cli({"introspect", "--client-secret", "-"}, with_token, std::string("form-s3cr3t-19ab\n"));
    CHECK_MESSAGE(r.exit_code == 0, r.describe());
    CHECK_FALSE(contains(r.err, "warning"));  // "-" is no secret on argv
    std::vector<std::string> seen;
    for (const auto& req : mock.requests_to(support::kIntrospectPath))
      seen.push_back(req.param("token"));
    CHECK(seen == std::vector<std::string>{"tok-from-file-0001", "tok-from-stdin-0002", "tok-from-env-0003"});
    // A refresh token from APS_REFRESH_TOKEN reaches the token endpoint (the mock refuses the unknown one).
    support::EnvMap with_rt = with_secret;
    with_rt["APS_REFRESH_TOKEN"] = "rt-from-env-0004";
    r = cli({"refresh"}, with_rt);
    CHECK(r.exit_code == 1);
    bool sent = false;
    for (const auto& req : mock.requests_to(support::kTokenPath))
      sent = sent || req.param("refresh_token") == "rt-from-env-0004";
    CHECK(sent);
  }
}

namespace {

// Form encoding (application/x-www-form-urlencoded) and percent-encoding of RFC 3986, written here apart from
// the library's, to build the forms a secret travels in.
std::string percent_encoded(const std::string& in, bool form) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (char ch : in) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')
      out += ch;
    else if (form && c == ' ')
      out += '+';
    else
      out += std::string("%") + hex[c >> 4] + hex[c & 15];
  }
  return out;
}

const char* const kJwksPath = "/authentication/v2/keys";

struct IdTokens {
  support::Mock env{aps_mock::Options{}};
  auth::Config config = env.config("oidc-client", "oidc-secret");
  nlohmann::json claims = {{"iss", env.server.issuer()},
                           {"aud", "oidc-client"},
                           {"sub", "USER1"},
                           {"iat", support::unix_now()},
                           {"exp", support::unix_now() + 3600}};
  IdTokens() { config.retry.max_attempts = 1; }
  std::string token(const nlohmann::json& c, nlohmann::json header = {{"alg", "RS256"}, {"typ", "JWT"}}) const {
    return env.server.sign_rs256(header, c);
  }
  std::size_t jwks_fetches() const { return env.requests_to(kJwksPath).size(); }
  void serve_jwks_with(const std::string& cache_control, int times) {
    env.server.inject(support::fault(kJwksPath, 200, env.server.jwks_json(), times, "application/json",
                                     {{"Cache-Control", cache_control}}));
  }
};

}  // namespace

TEST_SUITE("security: smaller holes") {
  TEST_CASE("row 10: the secret's Basic and form-encoded forms are masked in error text too") {
    support::MockEnv env(false);
    const auth::Config config = env.config();
    (void)auth::client_credentials(config);
    const std::string authorization = env.requests_to(support::kTokenPath).back().headers.find("Authorization")->second;
    REQUIRE(support::starts_with(authorization, "Basic "));
    const std::string basic = authorization.substr(6);
    const std::string secret = support::MockEnv::kConfidentialSecret;
    const std::string form = percent_encoded(secret, true), url = percent_encoded(secret, false);
    REQUIRE(form != secret);
    const std::string echo = "header " + authorization + " body client_secret=" + form + " or " + url;
    env.server.inject(support::fault(support::kTokenPath, 400,
                                     nlohmann::json{{"error", "invalid_request"}, {"error_description", echo}}.dump()));
    auth::Error e = require_error([&] { (void)auth::client_credentials(config); });
    for (const std::string& text : {std::string(e.what()), e.details().error_description}) {
      CHECK_FALSE(contains(text, basic));
      CHECK_FALSE(contains(text, form));
      CHECK_FALSE(contains(text, url));
      CHECK_FALSE(contains(text, secret));
    }
    CHECK(contains(e.details().error_description, "***"));
  }

  TEST_CASE("row 10: the JWKS is fetched again after its Cache-Control max-age (no-store: every time)") {
    IdTokens t;
    const std::string token = t.token(t.claims);
    t.serve_jwks_with("public, max-age=0", 2);
    (void)auth::verify_id_token(t.config, token);
    (void)auth::verify_id_token(t.config, token);
    CHECK(t.jwks_fetches() == 2);

    IdTokens kept;  // another mock, another JWKS URL, another cache entry
    const std::string kept_token = kept.token(kept.claims);
    kept.serve_jwks_with("max-age=600", 1);
    (void)auth::verify_id_token(kept.config, kept_token);
    (void)auth::verify_id_token(kept.config, kept_token);
    CHECK(kept.jwks_fetches() == 1);

    CHECK(auth::detail::jwks_max_age("max-age=600") == 600s);
    CHECK(auth::detail::jwks_max_age("private, Max-Age=\"90\"") == 90s);
    CHECK(auth::detail::jwks_max_age("max-age=31536000") == 24h);  // capped
    CHECK(auth::detail::jwks_max_age("max-age=99999999999999999999") == 24h);
    CHECK(auth::detail::jwks_max_age("no-store") == 0s);
    CHECK(auth::detail::jwks_max_age("") == 1h);
    CHECK(auth::detail::jwks_max_age("max-age=soon") == 1h);
  }

  TEST_CASE("row 10: id_token nbf is checked with the leeway; an unknown crit header is rejected") {
    IdTokens t;
    nlohmann::json later = t.claims;
    later["nbf"] = support::unix_now() + 3600;
    auth::Error e = require_error([&] { (void)auth::verify_id_token(t.config, t.token(later)); });
    CHECK(e.kind() == auth::ErrorKind::bad_response);
    CHECK(contains(e.what(), "nbf"));
    nlohmann::json soon = t.claims;
    soon["nbf"] = support::unix_now() + 20;  // within the 60 s leeway
    CHECK(auth::verify_id_token(t.config, t.token(soon)).subject == "USER1");

    e = require_error([&] {
      (void)auth::verify_id_token(t.config, t.token(t.claims, {{"alg", "RS256"}, {"crit", {"exp"}}, {"exp", 1}}));
    });
    CHECK(e.kind() == auth::ErrorKind::bad_response);
    CHECK(contains(e.what(), "crit"));
  }

  TEST_CASE("row 10: aps-auth login --token-file saves under the token file's lock") {
    const std::string cli = support::require_cli();
    TempDir dir;
    const std::string callback = "http://127.0.0.1:" + std::to_string(support::free_port()) + "/cb";
    aps_mock::Options o;
    o.clients = {{"lock-client", "", {callback}}};
    aps_mock::Server mock(o);
    const std::string path = dir.file("tok.json");
    support::EnvMap env = support::base_env(dir.path());
    env["BROWSER"] = support::stand_in_browser();
    env["APS_LOCK_TIMEOUT"] = "0.5";
    auth::FileTokenStore other_process(path);
    std::unique_ptr<auth::StoreLock> held = other_process.lock();
    support::RunResult r = support::run_cli({"login", "--client-id", "lock-client", "--base-url", mock.base_url(),
                                             "--callback-url", callback, "--token-file", path, "--timeout", "30"},
                                            env, 60s);
    INFO(r.describe());
    CHECK(r.exit_code == 1);
    CHECK(contains(r.err, "held by another process"));
    CHECK(contains(r.err, "printed on stdout instead"));
    CHECK(support::printed_tokens(r.out).size() >= 2);  // the token is not lost
    CHECK_FALSE(support::exists(path));                 // and was not written while the lock was held
    held.reset();
    r = support::run_cli({"login", "--client-id", "lock-client", "--base-url", mock.base_url(), "--callback-url",
                          callback, "--token-file", path, "--timeout", "30"},
                         env, 60s);
    CHECK_MESSAGE(r.exit_code == 0, r.describe());
    CHECK(support::exists(path));
  }
}
