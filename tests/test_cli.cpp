// End-to-end tests of the `aps-auth` CLI: the built binary ($APS_AUTH_CLI) run as a child process,
// with an environment the test controls and stdout/stderr captured separately, against an
// in-process mock APS server over HTTP and over HTTPS (a CA generated at test time, trusted through
// --ca-file). `login` runs with $BROWSER set to tests/cli/follow_redirect.sh (curl following the
// redirect to the loopback callback), or with --no-browser and the test itself following the URL
// the CLI printed. Every run's stderr is checked for the client secret, codes, PKCE verifiers and
// tokens: none may appear there.
#include <doctest/doctest.h>

#include "mock_aps_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
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

// ---- running the CLI ----------------------------------------------------------------------------

struct Run {
  int exit_code = -1;  // -1: killed (timeout) or did not start
  bool timed_out = false;
  std::string out, err;
  double seconds = 0;
  std::vector<std::string> args;
};

std::string getenv_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string cli_path() {
  return getenv_str("APS_AUTH_CLI");
}

// Runs argv with exactly `env` as its environment (no inheritance), stdin from /dev/null, stdout
// and stderr on separate pipes. `on_stderr` sees the stderr read so far after every chunk (e.g. to
// act on a printed URL). Killed after `timeout`.
Run run_process(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                std::chrono::milliseconds timeout,
                const std::function<void(const std::string&)>& on_stderr = {}) {
  Run r;
  r.args = argv;
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0)
    return r;
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return r;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env)
    env_strings.push_back(k + "=" + v);
  std::vector<char*> c_argv, c_env;
  for (const auto& a : argv)
    c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  for (auto& e : env_strings)
    c_env.push_back(const_cast<char*>(e.c_str()));
  c_env.push_back(nullptr);
  const auto started = std::chrono::steady_clock::now();
  pid_t pid = -1;
  int rc = posix_spawn(&pid, c_argv[0], &actions, nullptr, c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (rc != 0) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    r.err = std::string("posix_spawn failed: ") + std::strerror(rc);
    return r;
  }
  const auto deadline = started + timeout;
  int fds[2] = {out_pipe[0], err_pipe[0]};
  bool open_fd[2] = {true, true};
  while (open_fd[0] || open_fd[1]) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      if (!r.timed_out)
        kill(pid, SIGKILL);
      r.timed_out = true;
      left = std::chrono::milliseconds(2000);  // the pipes close once the process is gone
    }
    pollfd p[2];
    nfds_t n = 0;
    int which[2];
    for (int i = 0; i < 2; ++i)
      if (open_fd[i]) {
        p[n] = {fds[i], POLLIN, 0};
        which[n++] = i;
      }
    int ready = poll(p, n, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR)
      break;
    if (r.timed_out && ready == 0)
      break;
    for (nfds_t k = 0; k < n; ++k) {
      if (!p[k].revents)
        continue;
      char buf[8192];
      ssize_t got = read(p[k].fd, buf, sizeof buf);
      if (got > 0) {
        std::string& dst = which[k] == 0 ? r.out : r.err;
        dst.append(buf, static_cast<std::size_t>(got));
        if (which[k] == 1 && on_stderr)
          on_stderr(r.err);
      } else if (got == 0 || errno != EINTR) {
        open_fd[which[k]] = false;
      }
    }
  }
  close(out_pipe[0]);
  close(err_pipe[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!r.timed_out && WIFEXITED(status))
    r.exit_code = WEXITSTATUS(status);
  return r;
}

// A directory removed with everything in it at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string base = getenv_str("TMPDIR");
    if (base.empty())
      base = "/tmp";
    std::string tmpl = base + "/aps_auth_test_cli_XXXXXX";
    if (!mkdtemp(&tmpl[0]))
      throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string source_dir() {
  std::string dir = getenv_str("APS_AUTH_SOURCE_DIR");
  if (!dir.empty())
    return dir;
  return fs::path(__FILE__).parent_path().parent_path().string();
}

// A free loopback port (bound, read, released): the CLI's callback must be registered with the mock
// before the browser is started, exactly, so the port is chosen up front.
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

std::string find_arg(const std::vector<std::string>& args, const std::string& name) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == name && i + 1 < args.size())
      return args[i + 1];
    if (args[i].rfind(name + "=", 0) == 0)
      return args[i].substr(name.size() + 1);
  }
  return "";
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string describe(const Run& r) {
  std::string cmd;
  for (std::size_t i = 1; i < r.args.size(); ++i)
    cmd += (i > 1 ? " " : "") + r.args[i];
  return "aps-auth " + cmd + "\n  exit " + std::to_string(r.exit_code) +
         (r.timed_out ? " (killed: timeout)" : "") + "\n  stdout: " + r.out +
         "\n  stderr: " + r.err;
}

const char* const kSecret = "cli-secret-9f8e7d6c5b4a";
const char* const kClient = "cli-client";
const char* const kPublic = "cli-public";

// One mock APS server (HTTP or HTTPS) and the means to run the CLI against it.
struct Fixture {
  TempDir tmp;
  aps_mock::Server mock;
  std::string ca_file;  // HTTPS: the mock's CA certificate (PEM), written to the temp dir
  std::string callback;
  std::set<std::string> secrets;  // values that must never appear on any stderr

  explicit Fixture(bool tls = false) : mock(options(tls)) {
    if (tls) {
      ca_file = tmp.file("ca.pem");
      std::ofstream(ca_file) << mock.pki().ca_cert_pem;
    }
    secrets.insert(kSecret);
  }

  static aps_mock::Options options(bool tls) {
    aps_mock::Options o;
    o.tls = tls;
    o.clients = {{kClient, kSecret, {}}, {kPublic, "", {}}};
    return o;
  }

  // A fresh callback URL on a free port, registered (exactly) for both clients.
  std::string register_callback() {
    callback = "http://127.0.0.1:" + std::to_string(free_port()) + "/api/auth/callback";
    aps_mock::Options o = mock.options();
    o.clients = {{kClient, kSecret, {callback}}, {kPublic, "", {callback}}};
    mock.set_options(o);
    return callback;
  }

  std::string browser_command() const {
    return "sh '" + source_dir() + "/tests/cli/follow_redirect.sh'";
  }

  // The environment of a run: PATH, a private HOME, a $BROWSER that cannot start (so nothing real
  // ever opens) and the mock's address; nothing else is inherited (no proxy, no SSL_CERT_FILE, no
  // APS_*).
  std::map<std::string, std::string> env(bool confidential = true) const {
    std::map<std::string, std::string> e = {{"PATH", getenv_str("PATH")},
                                            {"HOME", tmp.path.string()},
                                            {"LC_ALL", "C"},
                                            {"BROWSER", "aps-auth-test-no-such-browser"},
                                            {"APS_BASE_URL", mock.base_url()},
                                            {"APS_CLIENT_ID", confidential ? kClient : kPublic}};
    if (confidential)
      e["APS_CLIENT_SECRET"] = kSecret;
    if (!ca_file.empty())
      e["APS_CA_FILE"] = ca_file;
    if (!getenv_str("ASAN_OPTIONS").empty())
      e["ASAN_OPTIONS"] = getenv_str("ASAN_OPTIONS");
    if (!getenv_str("TSAN_OPTIONS").empty())
      e["TSAN_OPTIONS"] = getenv_str("TSAN_OPTIONS");
    return e;
  }

  Run run(const std::vector<std::string>& args,
          const std::map<std::string, std::string>& environment,
          const std::function<void(const std::string&)>& on_stderr = {},
          std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    std::vector<std::string> argv = {cli_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    Run r = run_process(argv, environment, timeout, on_stderr);
    check_stderr_clean(r, environment);
    return r;
  }
  Run run(const std::vector<std::string>& args) { return run(args, env()); }

  // No secret of any kind on stderr: the client secret, any code, verifier or token the mock saw or
  // issued, and any token the CLI printed or was given.
  void check_stderr_clean(const Run& r, const std::map<std::string, std::string>& environment) {
    std::set<std::string> s = secrets;
    if (auto it = environment.find("APS_CLIENT_SECRET"); it != environment.end())
      s.insert(it->second);
    for (const char* flag : {"--client-secret", "--refresh-token", "--token"})
      s.insert(find_arg(r.args, flag));
    for (const auto& req : mock.requests())
      for (const char* k : {"code", "code_verifier", "refresh_token", "token", "client_secret"})
        s.insert(req.param(k));
    for (const auto& req : mock.requests()) {
      std::string auth = req.header("Authorization");
      if (auth.size() > 7)
        s.insert(auth.substr(auth.find(' ') + 1));  // Basic credentials, bearer tokens
    }
    json j = json::parse(r.out, nullptr, false);
    if (j.is_object())
      for (const char* k : {"access_token", "refresh_token", "id_token"})
        if (j.contains(k) && j[k].is_string())
          s.insert(j[k].get<std::string>());
    for (const auto& line : split_lines(r.out))
      s.insert(line);  // access-token prints a bare token
    for (const auto& secret : s) {
      if (secret.size() < 8)
        continue;
      CHECK_MESSAGE(!contains(r.err, secret), "a secret, code or token ("
                                                  << secret.substr(0, 4)
                                                  << "...) appeared on stderr of\n"
                                                  << describe(r));
    }
  }

  static std::vector<std::string> split_lines(const std::string& s) {
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (pos < s.size()) {
      std::size_t nl = s.find('\n', pos);
      if (nl == std::string::npos)
        nl = s.size();
      out.push_back(s.substr(pos, nl - pos));
      pos = nl + 1;
    }
    return out;
  }

  std::vector<aps_mock::RecordedRequest> requests_to(const std::string& path_suffix) const {
    std::vector<aps_mock::RecordedRequest> out;
    for (const auto& r : mock.requests())
      if (r.path.size() >= path_suffix.size() &&
          r.path.compare(r.path.size() - path_suffix.size(), path_suffix.size(), path_suffix) == 0)
        out.push_back(r);
    return out;
  }
};

void require_cli() {
  // Failing (not skipping) keeps CI from passing silently without the CLI under test.
  REQUIRE_MESSAGE(!cli_path().empty(),
                  "APS_AUTH_CLI is not set: run this test through ctest or meson test, or set "
                  "APS_AUTH_CLI to the path of the built aps-auth");
  REQUIRE_MESSAGE(access(cli_path().c_str(), X_OK) == 0,
                  "APS_AUTH_CLI='" << cli_path() << "' is not executable");
}

json parse_object(const Run& r) {
  json j = json::parse(r.out, nullptr, false);
  INFO(describe(r));
  REQUIRE(j.is_object());
  return j;
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The token JSON contract of issue 2.
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
  auto authorizes = f.requests_to("/authentication/v2/authorize");
  REQUIRE(authorizes.size() == 1);
  const auto& a = authorizes[0];
  CHECK(a.param("state").size() >= 22);  // 128 bits, base64url
  CHECK(a.param("code_challenge_method") == "S256");
  CHECK(a.param("redirect_uri") == f.callback);
  std::vector<aps_mock::RecordedRequest> exchanges;
  for (const auto& t : f.requests_to("/authentication/v2/token"))
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
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  std::string text = token.dump() + "\n";
  CHECK(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
}

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return json::parse(text, nullptr, false);
}

bool in_path(const std::string& program) {
  std::string path = getenv_str("PATH");
  for (std::size_t pos = 0; pos <= path.size();) {
    std::size_t colon = path.find(':', pos);
    if (colon == std::string::npos)
      colon = path.size();
    std::string dir = path.substr(pos, colon - pos);
    if (!dir.empty() && access((dir + "/" + program).c_str(), X_OK) == 0)
      return true;
    pos = colon + 1;
  }
  return false;
}

// The environment of a login whose callback is registered with the mock and whose $BROWSER follows
// the redirect with curl.
std::map<std::string, std::string> browser_env(Fixture& f) {
  REQUIRE_MESSAGE(in_path("curl"), "curl is needed: tests/cli/follow_redirect.sh is the browser");
  auto e = f.env();
  e["APS_CALLBACK_URL"] = f.register_callback();
  e["BROWSER"] = f.browser_command();
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
        INFO(describe(r));
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
        INFO(describe(r));
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
        INFO(describe(r));
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
        INFO(describe(r));
        CHECK(r.exit_code == 2);
        CHECK(!contains(r.err, token.substr(0, 20)));
      }
    }
    SUBCASE("a missing client id is a usage error (exit 2)") {
      auto e = f.env();
      e.erase("APS_CLIENT_ID");
      for (const char* cmd : {"login", "token"}) {
        Run r = f.run({cmd}, e);
        INFO(describe(r));
        CHECK(r.exit_code == 2);
        CHECK(contains(r.err, "client id"));
        CHECK(contains(r.err, "APS_CLIENT_ID"));
      }
      Run r = f.run({"refresh", "--refresh-token", "abcdefgh12345678"}, e);
      CHECK(r.exit_code == 2);
    }
    SUBCASE("token without a secret is a usage error (exit 2)") {
      Run r = f.run({"token"}, f.env(false));
      INFO(describe(r));
      CHECK(r.exit_code == 2);
      CHECK(contains(r.err, "client secret"));
    }
    SUBCASE("a non-loopback plain-http base URL is refused as usage (exit 2)") {
      Run r = f.run({"token", "--base-url", "http://example.com"});
      INFO(describe(r));
      CHECK(r.exit_code == 2);
      CHECK(contains(r.err, "aps-auth: [aps_auth.usage]"));
    }
    CHECK(f.mock.count("token") == 0);  // no usage error ever reached the server
  }

  TEST_CASE("cli: token (2-legged), over HTTP and over HTTPS") {
    require_cli();
    SUBCASE("from the environment") {
      for (bool tls : {false, true}) {
        CAPTURE(tls);
        Fixture f(tls);
        Run r = f.run({"token"});
        INFO(describe(r));
        REQUIRE(r.exit_code == 0);
        check_token_json(parse_object(r), false, false);
        auto t = f.requests_to("/authentication/v2/token");
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
                                         "--base-url=" + f.mock.base_url(),
                                         "--scopes",
                                         "data:read bucket:read"};
        if (tls) {
          e.erase("APS_CA_FILE");
          args.push_back("--ca-file=" + f.ca_file);
        }
        Run r = f.run(args, e);
        INFO(describe(r));
        REQUIRE(r.exit_code == 0);
        check_token_json(parse_object(r), false, false);
        auto t = f.requests_to("/authentication/v2/token");
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
        Run r = f.run({"token", "--issuer", f.mock.issuer()}, e);
        INFO(describe(r));
        REQUIRE(r.exit_code == 0);
        check_token_json(parse_object(r), false, false);
        CHECK(f.mock.count("discovery") == 1);
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
        INFO(describe(r));
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
    INFO(describe(r));
    CHECK(r.exit_code == 1);
    CHECK(contains(r.err, "aps-auth: [aps_auth.tls]"));
    CHECK(contains(r.err, "certificate"));
    CHECK(r.out.empty());
    CHECK(f.mock.count("token") == 0);

    // SSL_CERT_FILE is honoured (by OpenSSL's default paths).
    e["SSL_CERT_FILE"] = f.ca_file;
    Run ok = f.run({"token"}, e);
    INFO(describe(ok));
    CHECK(ok.exit_code == 0);
  }

  TEST_CASE("cli: login through $BROWSER, over HTTP and over HTTPS") {
    require_cli();
    SUBCASE("confidential client, with openid") {
      for (bool tls : {false, true}) {
        CAPTURE(tls);
        Fixture f(tls);
        Run r = f.run({"login", "--scopes", "data:read openid", "--timeout", "20"}, browser_env(f));
        INFO(describe(r));
        REQUIRE(r.exit_code == 0);
        check_token_json(parse_object(r), true, true);
        check_state_and_pkce(f);
        CHECK(contains(r.err, "Waiting"));
        CHECK(contains(r.err, f.callback));
        CHECK(
            !contains(r.err, "/authentication/v2/authorize?"));  // a browser opened: no URL needed
        auto t = f.requests_to("/authentication/v2/token");
        REQUIRE(t.size() == 1);
        CHECK(t[0].header("Authorization").rfind("Basic ", 0) == 0);
        CHECK(f.mock.count("keys") >= 1);  // the id_token was verified against the JWKS
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
        INFO(describe(r));
        REQUIRE(r.exit_code == 0);
        check_token_json(parse_object(r), true, false);
        check_state_and_pkce(f);
        auto t = f.requests_to("/authentication/v2/token");
        REQUIRE(t.size() == 1);
        CHECK(t[0].header("Authorization").empty());
        CHECK(t[0].param("client_id") == kPublic);
      }
    }
  }

  TEST_CASE("cli: login --no-browser prints the URL on stderr and waits for it") {
    require_cli();
    Fixture f(true);
    aps_mock::Options o = f.mock.options();
    o.consent = aps_mock::Consent::page;  // the test presses "Allow" like a user would
    f.mock.set_options(o);
    auto e = f.env(false);               // and a public client
    e["BROWSER"] = f.browser_command();  // must not be used with --no-browser
    const std::string callback = f.register_callback();
    bool followed = false;
    aps_mock::BrowseResult browsed;
    auto follow = [&](const std::string& err) {
      const std::string start = f.mock.base_url() + "/authentication/v2/authorize?";
      std::size_t at = err.find(start);
      if (followed || at == std::string::npos)
        return;
      std::size_t end = err.find_first_of(" \r\n", at);
      if (end == std::string::npos)
        return;  // the line is not complete yet
      followed = true;
      browsed = aps_mock::follow_like_browser(err.substr(at, end - at), f.mock.pki().ca_cert_pem);
    };
    Run r =
        f.run({"login", "--no-browser", "--callback-url", callback, "--timeout", "20"}, e, follow);
    INFO(describe(r));
    REQUIRE(followed);
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
                   "http://127.0.0.1:" + std::to_string(free_port()) + "/api/auth/callback"},
                  e);
    INFO(describe(r));
    CHECK(r.exit_code == 1);
    CHECK(r.seconds >= 1.5);
    CHECK(r.seconds < 15);
    CHECK(contains(r.err, "[aps_auth.timeout]"));
    CHECK(contains(r.err, "callback URL does not match"));  // the usual cause, named
    CHECK(r.out.empty());
  }

  TEST_CASE("cli: refresh rotates; the old refresh token is then refused") {
    require_cli();
    for (bool tls : {false, true}) {
      CAPTURE(tls);
      Fixture f(tls);
      json issued = f.mock.issue_tokens(kClient, "data:read");
      const std::string old_rt = issued["refresh_token"];
      Run r = f.run({"refresh", "--refresh-token", old_rt});
      INFO(describe(r));
      REQUIRE(r.exit_code == 0);
      json j = parse_object(r);
      check_token_json(j, true, false);
      CHECK(j["refresh_token"] != old_rt);
      CHECK(f.mock.is_valid_refresh_token(j["refresh_token"]));
      CHECK(!f.mock.is_valid_refresh_token(old_rt));

      Run again = f.run({"refresh", "--refresh-token=" + old_rt});
      INFO(describe(again));
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
      json issued = f.mock.issue_tokens(kClient, "data:read openid");
      const std::string at = issued["access_token"], rt = issued["refresh_token"];

      Run info = f.run({"introspect", "--token", at});
      {
        INFO(describe(info));
        REQUIRE(info.exit_code == 0);
        json j = parse_object(info);
        CHECK(j["active"] == true);
        CHECK(j["client_id"] == kClient);
        CHECK(j["scope"] == "data:read openid");
      }
      Run user = f.run({"userinfo", "--token", at});
      {
        INFO(describe(user));
        REQUIRE(user.exit_code == 0);
        json j = parse_object(user);
        CHECK(j["sub"] == aps_mock::Server::kUserId);
        CHECK(j["email"] == "mock.user@example.com");
      }
      Run revoked = f.run({"revoke", "--token", at});
      {
        INFO(describe(revoked));
        CHECK(revoked.exit_code == 0);
        CHECK(revoked.out.empty());
        CHECK(!f.mock.is_active_access_token(at));
        auto req = f.requests_to("/authentication/v2/revoke");
        REQUIRE(req.size() == 1);
        CHECK(req[0].param("token_type_hint") == "access_token");
      }
      Run inactive = f.run({"introspect", "--token", at});
      {
        INFO(describe(inactive));
        REQUIRE(inactive.exit_code == 0);
        CHECK(parse_object(inactive)["active"] == false);
      }
      Run gone = f.run({"userinfo", "--token", at});
      {
        INFO(describe(gone));
        CHECK(gone.exit_code == 1);
        CHECK(contains(gone.err, "401"));
        CHECK(gone.out.empty());
      }
      Run revoked_rt = f.run({"revoke", "--token", rt, "--token-type-hint", "refresh_token"});
      {
        INFO(describe(revoked_rt));
        CHECK(revoked_rt.exit_code == 0);
        CHECK(!f.mock.is_valid_refresh_token(rt));
        auto req = f.requests_to("/authentication/v2/revoke");
        REQUIRE(req.size() == 2);
        CHECK(req[1].param("token_type_hint") == "refresh_token");
      }
      {  // a public client sends its client_id in the body
        json pub = f.mock.issue_tokens(kPublic, "data:read");
        Run r =
            f.run({"introspect", "--token", pub["access_token"].get<std::string>()}, f.env(false));
        INFO(describe(r));
        REQUIRE(r.exit_code == 0);
        CHECK(parse_object(r)["active"] == true);
        CHECK(f.requests_to("/authentication/v2/introspect").back().param("client_id") == kPublic);
      }
    }
  }

  TEST_CASE("cli: token file: login --token-file, access-token, refresh --token-file, logout") {
    require_cli();
    Fixture f;
    const std::string file = f.tmp.file("state/aps-auth/token.json");
    auto e = browser_env(f);

    Run login = f.run({"login", "--token-file", file, "--timeout", "20"}, e);
    INFO(describe(login));
    REQUIRE(login.exit_code == 0);
    json printed = parse_object(login);
    json saved = read_json_file(file);
    REQUIRE(saved.is_object());
    CHECK(saved["refresh_token"] == printed["refresh_token"]);
    CHECK(saved["access_token"] == printed["access_token"]);
    struct stat st {};
    REQUIRE(stat(file.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);

    // A fresh token: handed out as is, no refresh.
    const int tokens_before = f.mock.count("token");
    Run cached = f.run({"access-token", "--token-file", file}, e);
    {
      INFO(describe(cached));
      REQUIRE(cached.exit_code == 0);
      CHECK(cached.out == printed["access_token"].get<std::string>() + "\n");
      CHECK(f.mock.count("token") == tokens_before);
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
      INFO(describe(renewed));
      REQUIRE(renewed.exit_code == 0);
      CHECK(f.mock.count("token.refresh_token") == 1);
      json now = read_json_file(file);
      CHECK(renewed.out == now["access_token"].get<std::string>() + "\n");
      CHECK(now["refresh_token"] != saved["refresh_token"]);
      CHECK(now["refresh_token"] == f.mock.current_refresh_token_for(kClient));
    }

    // refresh --token-file: reads the refresh token from the file, saves the new one.
    const std::string before_rt = read_json_file(file)["refresh_token"];
    Run refreshed = f.run({"refresh", "--token-file", file}, e);
    {
      INFO(describe(refreshed));
      REQUIRE(refreshed.exit_code == 0);
      json j = parse_object(refreshed);
      CHECK(j["refresh_token"] != before_rt);
      CHECK(read_json_file(file)["refresh_token"] == j["refresh_token"]);
      CHECK(!f.mock.is_valid_refresh_token(before_rt));
      CHECK(stat(file.c_str(), &st) == 0);
      CHECK((st.st_mode & 0777) == 0600);
    }

    // logout: revokes and deletes.
    const json last = read_json_file(file);
    Run logout = f.run({"logout", "--token-file", file}, e);
    {
      INFO(describe(logout));
      CHECK(logout.exit_code == 0);
      CHECK(!fs::exists(file));
      CHECK(!f.mock.is_valid_refresh_token(last["refresh_token"]));
      CHECK(!f.mock.is_active_access_token(last["access_token"]));
    }

    // Without a token: exit 1 with the way out; a second logout has nothing to do.
    Run none = f.run({"access-token", "--token-file", file}, e);
    {
      INFO(describe(none));
      CHECK(none.exit_code == 1);
      CHECK(contains(none.err, "aps-auth login --token-file"));
    }
    Run again = f.run({"logout", "--token-file", file}, e);
    CHECK(again.exit_code == 0);
  }

  TEST_CASE("cli: a token that cannot be saved is printed, not lost") {
    require_cli();
    Fixture f;
    const std::string blocker = f.tmp.file("not-a-directory");
    std::ofstream(blocker) << "x";
    const std::string file = blocker + "/token.json";  // its parent is a regular file: saving fails
    Run r = f.run({"login", "--token-file", file, "--timeout", "20"}, browser_env(f));
    INFO(describe(r));
    CHECK(r.exit_code == 1);
    check_token_json(parse_object(r), true, false);  // the token, with its refresh token, on stdout
    CHECK(contains(r.err, "cannot save the token"));
    CHECK(contains(r.err, "printed on stdout"));
  }

  TEST_CASE("cli: access-token without a token file uses client credentials") {
    require_cli();
    Fixture f;
    Run r = f.run({"access-token"});
    INFO(describe(r));
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.size() > 16);
    CHECK(r.out.back() == '\n');
    CHECK(f.mock.is_active_access_token(r.out.substr(0, r.out.size() - 1)));
    CHECK(f.mock.count("token.client_credentials") == 1);

    Run pub = f.run({"access-token"}, f.env(false));
    CHECK(pub.exit_code == 2);  // neither a token file nor a secret
  }

  TEST_CASE("cli: two access-token processes sharing an expired token file refresh once") {
    require_cli();
    Fixture f;
    const std::string file = f.tmp.file("token.json");
    json issued = f.mock.issue_tokens(kClient, "data:read");
    json token = {{"access_token", issued["access_token"]},
                  {"token_type", "Bearer"},
                  {"expires_in", 3599},
                  {"expires_at", unix_now() - 60},
                  {"refresh_token", issued["refresh_token"]}};
    write_token_file(file, token);
    auto e = f.env();
    e["APS_TOKEN_FILE"] = file;
    std::vector<std::string> argv = {cli_path(), "access-token"};
    Run a, b;
    std::thread ta([&] { a = run_process(argv, e, std::chrono::seconds(30)); });
    std::thread tb([&] { b = run_process(argv, e, std::chrono::seconds(30)); });
    ta.join();
    tb.join();
    f.check_stderr_clean(a, e);
    f.check_stderr_clean(b, e);
    INFO(describe(a));
    INFO(describe(b));
    REQUIRE(a.exit_code == 0);
    REQUIRE(b.exit_code == 0);
    CHECK(f.mock.count("token.refresh_token") == 1);
    CHECK(a.out == b.out);
    json now = read_json_file(file);
    CHECK(a.out == now["access_token"].get<std::string>() + "\n");
    CHECK(now["refresh_token"] == f.mock.current_refresh_token_for(kClient));
    CHECK(f.mock.is_active_access_token(now["access_token"]));
  }

  TEST_CASE("cli: demo needs no account, no network, no arguments") {
    require_cli();
    TempDir tmp;
    std::map<std::string, std::string> e = {{"PATH", getenv_str("PATH")},
                                            {"HOME", tmp.path.string()},
                                            {"BROWSER", "aps-auth-test-no-such-browser"}};
    Run r = run_process({cli_path(), "demo"}, e, std::chrono::seconds(30));
    INFO(describe(r));
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
    // CMake builds them next to aps-auth as example_<name>; a build without examples skips this
    // case.
    const fs::path dir = fs::path(cli_path()).parent_path();
    auto example = [&](const char* name) {
      return (dir / (std::string("example_") + name)).string();
    };
    if (access(example("token_2legged").c_str(), X_OK) != 0) {
      MESSAGE("example programs not built next to " << cli_path() << "; skipped");
      return;
    }
    Fixture f(true);
    {
      Run r = run_process({example("token_2legged")}, f.env(), std::chrono::seconds(30));
      f.check_stderr_clean(r, f.env());
      INFO(describe(r));
      REQUIRE(r.exit_code == 0);
      check_token_json(parse_object(r), false, false);
    }
    {
      json issued = f.mock.issue_tokens(kClient, "data:read");
      auto e = f.env();
      e["APS_REFRESH_TOKEN"] = issued["refresh_token"];
      Run r = run_process({example("refresh_token")}, e, std::chrono::seconds(30));
      f.check_stderr_clean(r, e);
      INFO(describe(r));
      REQUIRE(r.exit_code == 0);
      json j = parse_object(r);
      check_token_json(j, true, false);
      CHECK(j["refresh_token"] != issued["refresh_token"]);
    }
    {
      auto e = browser_env(f);
      e["APS_SCOPES"] = "data:read openid";
      Run r = run_process({example("login_3legged")}, e, std::chrono::seconds(30));
      f.check_stderr_clean(r, e);
      INFO(describe(r));
      REQUIRE(r.exit_code == 0);
      check_token_json(parse_object(r), true, true);
      check_state_and_pkce(f);
    }
  }

}  // TEST_SUITE("cli")
