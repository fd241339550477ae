// Proxies: HTTPS_PROXY / https_proxy / NO_PROXY / http_proxy and Config::proxy, through a real proxy on loopback:
// Debian's tinyproxy, started by each test with a generated configuration (a free port, Listen/Allow 127.0.0.1,
// ConnectPort = the mock's port, BasicAuth for the credentials cases), in the foreground, its log read to count
// the CONNECT requests. The HTTPS mock APS server still sees every request that went through. Without tinyproxy
// these tests FAIL: run scripts/install-deps --test. On Windows the tests' own tunnelling proxy stands in for it
// (support::TunnelProxy: see TestProxy).
//
// Found and fixed with these tests (aps_auth.hpp, http_send): with cpp-httplib 0.11 a proxy refusing the CONNECT
// (wrong credentials: 401/407, port not allowed: 403, target down: 5xx) hung the call for ever; and the proxy
// credentials were also sent inside the tunnel, to the server.
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/cli.hpp"
#include "support/environment.hpp"
#include "support/files.hpp"
#include "support/library.hpp"
#include "support/mock.hpp"
#include "support/network.hpp"
#include "support/process.hpp"
#include "support/proxy.hpp"
#include "support/text.hpp"
#include "support/timing.hpp"

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

namespace auth = aps::auth;
using namespace std::chrono_literals;
using support::require_error, support::contains, support::ScopedEnv, support::seconds_since;

const char* const kClient = "proxy-client";
const char* const kSecret = "proxy-secret-0b7e";
const char* const kUser = "proxyuser";
const char* const kPassword = "proxy-pw-77a1";

// Where tinyproxy is, or "" when it is not installed.
std::string tinyproxy_path() {
  return support::find_program({"/usr/bin/tinyproxy", "/usr/sbin/tinyproxy", "/usr/local/bin/tinyproxy", "tinyproxy"});
}

void require_tinyproxy() {
#ifndef _WIN32
  REQUIRE_MESSAGE(!tinyproxy_path().empty(),
                  "tinyproxy is not installed; the proxy tests need it: run scripts/install-deps --test "
                  "(Debian/Ubuntu package tinyproxy)");
#endif
}

// A real HTTP proxy on 127.0.0.1, in the foreground, logging every request (CONNECT included) to a file.
// Tunnels (CONNECT) only to `connect_port`; with a user, it wants Basic credentials (BasicAuth).
class Tinyproxy {
 public:
  Tinyproxy(const support::TempDir& dir, int connect_port, const std::string& user = "",
            const std::string& password = "")
      : log_(dir.file("tinyproxy.log")) {
    const std::string exe = tinyproxy_path();
    if (exe.empty())
      throw std::runtime_error("tinyproxy is not installed: run scripts/install-deps --test");
    support::ProcessOptions output;
    output.stdout_file = output.stderr_file = log_;
    output.append = true;
    for (int attempt = 0; attempt < 5 && !process_; ++attempt) {
      port_ = support::free_port();  // tinyproxy has no "Port 0"
      std::string conf = "Port " + std::to_string(port_) +
                         "\nListen 127.0.0.1\nTimeout 10\nLogLevel Connect\nMaxClients 50\nAllow 127.0.0.1\n"
                         "ConnectPort " +
                         std::to_string(connect_port) + "\n";
      if (!user.empty())
        conf += "BasicAuth " + user + " " + password + "\n";
      const std::string conf_path = dir.write("tinyproxy.conf", conf);
      auto p = std::make_unique<support::Process>(std::vector<std::string>{exe, "-d", "-c", conf_path},
                                                  support::EnvMap{}, output);
      // Wait until it accepts (or gave up, e.g. the port was taken meanwhile: then try another port).
      for (auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
        if (!p->running())
          break;
        if (support::accepts(port_)) {
          process_ = std::move(p);
          break;
        }
        std::this_thread::sleep_for(20ms);
      }
    }
    if (!process_)
      throw std::runtime_error("tinyproxy did not start; its log:\n" + log());
  }
  ~Tinyproxy() {
    if (process_)
      process_->stop(3s);
  }
  Tinyproxy(const Tinyproxy&) = delete;
  Tinyproxy& operator=(const Tinyproxy&) = delete;

  int port() const { return port_; }
  std::string url(const std::string& credentials = "") const {
    return "http://" + (credentials.empty() ? "" : credentials + "@") + "127.0.0.1:" + std::to_string(port_);
  }
  std::string log() const { return support::read_file(log_).value_or(""); }
  // Requests the proxy logged whose request line starts with `method_and_target`, e.g. "CONNECT 127.0.0.1:443".
  int requests(const std::string& method_and_target) const {
    return support::count_of(log(), "): " + method_and_target);
  }

 private:
  std::string log_;
  int port_ = 0;
  std::unique_ptr<support::Process> process_;
};

// The proxy of these tests: tinyproxy, a real one. tinyproxy is a Linux program, which a Windows test under Wine
// can start but can neither hand its configuration's path nor see end: on Windows the tests' own tunnelling
// proxy (support::TunnelProxy) stands in, with the same refusals and the same log lines.
#ifdef _WIN32
struct TestProxy : support::TunnelProxy {
  TestProxy(const support::TempDir&, int connect_port, const std::string& user = "", const std::string& password = "")
      : TunnelProxy(connect_port, user, password) {}
};
#else
using TestProxy = Tinyproxy;
#endif

// Every proxy variable unset for the lifetime of the object, then restored.
struct NoProxyEnv {
  ScopedEnv a{"HTTPS_PROXY", nullptr}, b{"https_proxy", nullptr}, c{"HTTP_PROXY", nullptr}, d{"http_proxy", nullptr},
      e{"NO_PROXY", nullptr}, f{"no_proxy", nullptr}, g{"ALL_PROXY", nullptr}, h{"all_proxy", nullptr};
};

// The name the mock is reached by: the machine's host name, which resolves to 127.0.0.1 but is not spelled as
// loopback (the library never sends a loopback host through a proxy).
std::string mock_host() {
  static const std::optional<std::string> name = support::platform::loopback_host_name();
  REQUIRE_MESSAGE(name.has_value(),
                  "the proxy tests need this machine's host name to resolve to 127.0.0.1 only "
                  "(a line '127.0.0.1 <hostname>' in /etc/hosts)");
  return *name;
}

// The mock APS server (HTTPS by default, reached as mock_host(), its certificate for that name) and a Config that
// takes the proxy from the environment.
struct Mock : support::Mock {
  bool tls;
  std::string host = mock_host();

  explicit Mock(bool use_tls = true) : support::Mock(options(use_tls)), tls(use_tls) {}
  static aps_mock::Options options(bool use_tls) {
    aps_mock::Options o;
    o.tls = use_tls;
    o.pki = aps_mock::Pki::generate(mock_host());
    o.clients = {{kClient, kSecret, {"http://127.0.0.1:8080/api/auth/callback"}}};
    return o;
  }
  std::string base_url() const {
    return std::string(tls ? "https" : "http") + "://" + host + ":" + std::to_string(server.port());
  }
  std::string connect_line() const { return "CONNECT " + host + ":" + std::to_string(server.port()); }
  auth::Config config() const {
    auth::Config c = support::Mock::config(kClient, kSecret);
    c.endpoints = auth::Endpoints::from_base_url(base_url());
    c.proxy = "";  // from the environment
    c.connect_timeout = 3s;
    c.read_timeout = 5s;
    c.retry = {2, 10ms, 50ms};
    return c;
  }
};

std::string credentials() {
  return std::string(kUser) + ":" + kPassword;
}

// The world of most proxy tests: no proxy variable of the host's, the mock (HTTPS unless told), and tinyproxy in
// front of it, wanting the test's credentials.
struct Proxied {
  NoProxyEnv clean;
  Mock m;
  TestProxy proxy;

  explicit Proxied(bool tls = true) : m((require_tinyproxy(), tls)), proxy(m.dir, m.server.port(), kUser, kPassword) {}
};

// The same over plain HTTP.
struct ProxiedHttp : Proxied {
  ProxiedHttp() : Proxied(false) {}
};

}  // namespace

TEST_SUITE("proxy") {
  TEST_CASE("tinyproxy is installed (scripts/install-deps --test)") {
#ifdef _WIN32
    MESSAGE("on Windows the proxy is the tests' own (support::TunnelProxy): tinyproxy is a Linux program");
#endif
    require_tinyproxy();
  }

  TEST_CASE_FIXTURE(Proxied,
                    "HTTPS_PROXY with credentials: the calls go through the proxy, the server never sees the "
                    "credentials") {
    ScopedEnv env("HTTPS_PROXY", proxy.url(credentials()).c_str());
    const auth::Config config = m.config();

    auth::Token t = auth::client_credentials(config);
    CHECK_FALSE(t.access_token.empty());
    CHECK(proxy.requests(m.connect_line()) >= 1);
    CHECK(m.server.count("token") == 1);
    auto reqs = m.server.requests();
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].header("Proxy-Authorization").empty());  // the proxy's credentials stay with the proxy
    CHECK(contains(reqs[0].header("Authorization"), "Basic "));

    const std::string rt = m.server.issue_tokens(kClient, "data:read")["refresh_token"].get<std::string>();
    auth::Token r = auth::refresh(config, rt);
    CHECK(r.refresh_token != rt);
    auth::Introspection i = auth::introspect(config, r.access_token);
    CHECK(i.active);
    CHECK(m.server.count("token") == 2);
    CHECK(m.server.count("introspect") == 1);
    INFO(proxy.log());
    CHECK(proxy.requests(m.connect_line()) >= 3);
  }

  TEST_CASE_FIXTURE(Proxied, "lower-case https_proxy works, and wins over HTTPS_PROXY") {
#ifdef _WIN32
    MESSAGE(
        "skipped on Windows: its environment names are case-insensitive, https_proxy and HTTPS_PROXY are one "
        "variable");
    return;
#endif
    ScopedEnv lower("https_proxy", proxy.url(credentials()).c_str());
    ScopedEnv upper("HTTPS_PROXY", ("http://127.0.0.1:" + std::to_string(support::free_port())).c_str());
    auth::Token t = auth::client_credentials(m.config());
    CHECK_FALSE(t.access_token.empty());
    CHECK(proxy.requests(m.connect_line()) >= 1);
    CHECK(m.server.count("token") == 1);
  }

  TEST_CASE_FIXTURE(Proxied, "NO_PROXY / no_proxy naming the host bypasses the proxy") {
    ScopedEnv env("HTTPS_PROXY", proxy.url(credentials()).c_str());
    std::unique_ptr<ScopedEnv> no_proxy;
    SUBCASE("NO_PROXY=<host>") {
      no_proxy = std::make_unique<ScopedEnv>("NO_PROXY", m.host.c_str());
    }
    SUBCASE("no_proxy=example.com, <host>:port") {
      const std::string list = "example.com, " + m.host + ":" + std::to_string(m.server.port());
      no_proxy = std::make_unique<ScopedEnv>("no_proxy", list.c_str());
    }
    SUBCASE("NO_PROXY=*") {
      no_proxy = std::make_unique<ScopedEnv>("NO_PROXY", "*");
    }
    auth::Token t = auth::client_credentials(m.config());
    CHECK_FALSE(t.access_token.empty());
    CHECK(m.server.count("token") == 1);
    CHECK(proxy.requests("CONNECT") == 0);
  }

  TEST_CASE_FIXTURE(Proxied,
                    "NO_PROXY naming other hosts (or a suffix that is not a domain boundary) does not bypass the "
                    "proxy") {
    ScopedEnv env("HTTPS_PROXY", proxy.url(credentials()).c_str());
    ScopedEnv no_proxy("NO_PROXY", "example.com,.example.org,0.0.1");
    CHECK_FALSE(auth::client_credentials(m.config()).access_token.empty());
    CHECK(proxy.requests(m.connect_line()) >= 1);
    CHECK(m.server.count("token") == 1);
  }

  TEST_CASE_FIXTURE(Proxied,
                    "wrong proxy credentials: ErrorKind::network naming the proxy, at once (no hang), nothing sent") {
    std::string url;
    SUBCASE("a wrong password") {
      url = proxy.url(std::string(kUser) + ":pw-WRONG-91c2");
    }
    SUBCASE("no credentials at all") {
      url = proxy.url();
    }
    CAPTURE(url);
    ScopedEnv env("HTTPS_PROXY", url.c_str());
    const std::string rt = m.server.issue_tokens(kClient, "data:read")["refresh_token"].get<std::string>();
    auto t0 = std::chrono::steady_clock::now();
    auto e = require_error([&] { (void)auth::refresh(m.config(), rt); });
    CHECK(seconds_since(t0) < 5.0);
    CHECK(e.kind() == auth::ErrorKind::network);
    CHECK((e.status() == 407 || e.status() == 401));
    CHECK(contains(e.what(), "proxy 127.0.0.1:" + std::to_string(proxy.port())));
    CHECK(contains(e.what(), "check the user and password"));
    CHECK_FALSE(contains(e.what(), "pw-WRONG-91c2"));
    CHECK_FALSE(contains(e.what(), rt));
    CHECK(m.server.count("token") == 0);
    CHECK(m.server.is_valid_refresh_token(rt));  // nothing reached the server: the refresh token is intact
  }

  TEST_CASE("a proxy that refuses the target port (403): ErrorKind::network, at once, nothing sent") {
    require_tinyproxy();
    NoProxyEnv clean;
    Mock m;
    TestProxy proxy(m.dir, support::free_port());  // tunnels to another port only
    ScopedEnv env("HTTPS_PROXY", proxy.url().c_str());
    auto t0 = std::chrono::steady_clock::now();
    auto e = require_error([&] { (void)auth::client_credentials(m.config()); });
    CHECK(seconds_since(t0) < 5.0);
    CHECK(e.kind() == auth::ErrorKind::network);
    CHECK(e.status() == 403);
    CHECK(contains(e.what(), "refused the tunnel"));
    CHECK(m.server.count("token") == 0);
  }

  TEST_CASE_FIXTURE(Proxied,
                    "through the proxy TLS is still verified end to end: an untrusted server is ErrorKind::tls") {
    ScopedEnv env("HTTPS_PROXY", proxy.url(credentials()).c_str());
    support::IsolatedTrust trust(m.dir);
    auth::Config config = m.config();
    config.ca_file.clear();
    auto e = require_error([&] { (void)auth::client_credentials(config); });
    CHECK(e.kind() == auth::ErrorKind::tls);
    CHECK(contains(e.what(), "through proxy 127.0.0.1:" + std::to_string(proxy.port())));
    CHECK(proxy.requests(m.connect_line()) >= 1);
    CHECK(m.server.count("token") == 0);
  }

  TEST_CASE("a proxy that is down: ErrorKind::network naming the proxy") {
    NoProxyEnv clean;
    Mock m;
    const int dead = support::free_port();
    ScopedEnv env("HTTPS_PROXY", ("http://" + credentials() + "@127.0.0.1:" + std::to_string(dead)).c_str());
    auto e = require_error([&] { (void)auth::client_credentials(m.config()); });
    CHECK(e.kind() == auth::ErrorKind::network);
    CHECK(contains(e.what(), "through proxy 127.0.0.1:" + std::to_string(dead)));
    CHECK_FALSE(contains(e.what(), kPassword));
    CHECK(m.server.count("token") == 0);
  }

  TEST_CASE_FIXTURE(Proxied, "Config::proxy = \"direct\" ignores the environment") {
    auth::Config config = m.config();
    config.proxy = "direct";
    SUBCASE("HTTPS_PROXY names a working proxy: not used") {
      ScopedEnv env("HTTPS_PROXY", proxy.url(credentials()).c_str());
      CHECK_FALSE(auth::client_credentials(config).access_token.empty());
    }
    SUBCASE("https_proxy names a dead one: no failure") {
      ScopedEnv env("https_proxy", ("http://127.0.0.1:" + std::to_string(support::free_port())).c_str());
      CHECK_FALSE(auth::client_credentials(config).access_token.empty());
    }
    CHECK(m.server.count("token") == 1);
    CHECK(proxy.requests("CONNECT") == 0);
  }

  TEST_CASE_FIXTURE(Proxied, "Config::proxy naming a proxy overrides the environment, NO_PROXY included") {
    ScopedEnv no_proxy("NO_PROXY", "*");
    ScopedEnv env("HTTPS_PROXY", ("http://127.0.0.1:" + std::to_string(support::free_port())).c_str());
    auth::Config config = m.config();
    config.proxy = proxy.url(credentials());
    CHECK_FALSE(auth::client_credentials(config).access_token.empty());
    CHECK(proxy.requests(m.connect_line()) >= 1);
    CHECK(m.server.count("token") == 1);

    SUBCASE("a proxy URL that is not http:// is a usage error") {
      config.proxy = "socks5://127.0.0.1:1080";
      auto e = require_error([&] { (void)auth::client_credentials(config); });
      CHECK(e.kind() == auth::ErrorKind::usage);
    }
  }

  TEST_CASE_FIXTURE(ProxiedHttp,
                    "loopback endpoints (localhost, 127.0.0.0/8, ::1) never go through a proxy "
                    "(security row 7: the Basic-encoded secret would cross to the proxy in clear)") {
    const std::string port = std::to_string(m.server.port());
    for (const char* variable : {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"}) {
      ScopedEnv env(variable, proxy.url(credentials()).c_str());
      for (const std::string& base : {"http://127.0.0.1:" + port, "http://localhost:" + port}) {
        CAPTURE(variable);
        CAPTURE(base);
        auth::Config config = support::config_for(base, kClient, kSecret);
        config.proxy = "";  // from the environment
        CHECK_FALSE(auth::client_credentials(config).access_token.empty());
        config.proxy = proxy.url(credentials());  // not even an explicit one
        CHECK_FALSE(auth::client_credentials(config).access_token.empty());
      }
    }
    INFO(proxy.log());
    CHECK(proxy.requests("POST") == 0);
    CHECK(proxy.requests("CONNECT") == 0);
    CHECK(m.server.count("token") == 16);
  }

  TEST_CASE_FIXTURE(Proxied, "the CLI honours HTTPS_PROXY (and its credentials) too") {
    const std::string cli = support::require_cli();
    support::EnvMap env = support::base_env(m.dir.path());
    env["HTTPS_PROXY"] = proxy.url(credentials());
    env["APS_CLIENT_ID"] = kClient;
    env["APS_CLIENT_SECRET"] = kSecret;
    env["SSL_CERT_FILE"] = m.dir.write("unrelated.pem", aps_mock::Pki::generate("unrelated.example").ca_cert_pem);
    support::RunResult r = support::run({cli, "token", "--base-url", m.base_url(), "--ca-file", m.ca_file}, env, 20s);
    INFO(r.describe());
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "\"access_token\""));
    CHECK(proxy.requests(m.connect_line()) >= 1);
    CHECK(m.server.count("token") == 1);
    CHECK_FALSE(contains(r.err, kPassword));

    env["HTTPS_PROXY"] = proxy.url(std::string(kUser) + ":pw-WRONG-91c2");
    support::RunResult bad = support::run({cli, "token", "--base-url", m.base_url(), "--ca-file", m.ca_file}, env, 20s);
    INFO(bad.describe());
    CHECK(bad.exit_code == 1);
    CHECK(contains(bad.err, "[aps_auth.network]"));
    CHECK(contains(bad.err, "proxy"));
    CHECK_FALSE(contains(bad.err, "pw-WRONG-91c2"));
    CHECK(bad.out.empty());
  }
}
