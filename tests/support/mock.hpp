// The one way the tests include and start the mock APS server (examples/mock_aps_server.hpp): a running mock
// with its private directory and CA file and Configs pointing at it, injected faults, a machine trust store
// replaced by an unrelated CA, a scripted browser for login(), codes issued for code exchanges, and the secrets
// the mock received. Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_MOCK_HPP
#define APS_AUTH_TESTS_SUPPORT_MOCK_HPP

#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "examples/mock_aps_server.hpp"
#include "environment.hpp"
#include "files.hpp"
#include "platform.hpp"

#include <chrono>
#include <filesystem>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace support {

// The mock's paths (those of APS).
inline const char* const kAuthorizePath = "/authentication/v2/authorize";
inline const char* const kTokenPath = "/authentication/v2/token";
inline const char* const kRevokePath = "/authentication/v2/revoke";
inline const char* const kIntrospectPath = "/authentication/v2/introspect";
inline const char* const kUserinfoPath = "/userinfo";
inline const char* const kDiscoveryPath = "/.well-known/openid-configuration";

// An answer the mock gives `count` times on `path` instead of its own.
inline aps_mock::Fault fault(const std::string& path, int status, const std::string& body, int count = 1,
                             const std::string& content_type = "application/json",
                             std::vector<std::pair<std::string, std::string>> headers = {}) {
  aps_mock::Fault f;
  f.path = path;
  f.count = count;
  f.status = status;
  f.body = body;
  f.content_type = content_type;
  f.headers = std::move(headers);
  return f;
}

// A Config for a server at `base_url` (the APS paths under it): the client, `ca_file` to trust (HTTPS), no proxy;
// everything else the library's default.
inline aps::auth::Config config_for(const std::string& base_url, const std::string& client_id,
                                    const std::string& client_secret = "", const std::string& ca_file = "") {
  aps::auth::Config c;
  c.client_id = client_id;
  c.client_secret = client_secret;
  c.endpoints = aps::auth::Endpoints::from_base_url(base_url);
  c.ca_file = ca_file;
  c.proxy = "direct";
  return c;
}

// The same for the mock.
inline aps::auth::Config config_for(const aps_mock::Server& server, const std::string& client_id,
                                    const std::string& client_secret = "", const std::string& ca_file = "") {
  return config_for(server.base_url(), client_id, client_secret, ca_file);
}

// A 3-legged token the mock issued to `client_id` for `scope`, as after a sign-in.
inline aps::auth::Token issued_token(aps_mock::Server& server, const std::string& client_id, const std::string& scope) {
  return aps::auth::Token::from_json(server.issue_tokens(client_id, scope).dump());
}

// The same token with an access token the library must consider expired (the mock may still accept it).
inline aps::auth::Token expired_token(aps::auth::Token t) {
  t.expires_at = std::chrono::system_clock::now() - std::chrono::seconds(10);
  return t;
}

// A token valid for an hour, with these access and refresh tokens.
inline aps::auth::Token valid_token(const std::string& access_token, const std::string& refresh_token) {
  aps::auth::Token t;
  t.access_token = access_token;
  t.refresh_token = refresh_token;
  t.expires_in = std::chrono::hours(1);
  t.expires_at = std::chrono::system_clock::now() + std::chrono::hours(1);
  return t;
}

// The refresh tests' mock (test_token_source, test_redis): its default confidential client, whose refresh tokens
// rotate on every refresh; access tokens that live `expires_in` seconds; a token endpoint that answers after
// `token_delay_ms` (to widen the window in which two refreshes could overlap).
inline const char* const kRefreshClient = "mock-client";
inline const char* const kRefreshSecret = "mock-secret";
inline const char* const kRefreshScope = "data:read";

inline aps_mock::Options refresh_mock_options(int expires_in, int token_delay_ms = 0) {
  aps_mock::Options o;
  o.expires_in = expires_in;
  o.token_delay_ms = token_delay_ms;
  return o;
}

// A Config for that client with these deadlines.
inline aps::auth::Config refresh_config(const aps_mock::Server& mock, std::chrono::milliseconds connect_timeout,
                                        std::chrono::milliseconds read_timeout) {
  aps::auth::Config c = config_for(mock, kRefreshClient, kRefreshSecret);
  c.scopes = {kRefreshScope};
  c.connect_timeout = connect_timeout;
  c.read_timeout = read_timeout;
  return c;
}

// The newest refresh token is the one the mock still accepts, and the only one. (maybe_unused: the helper program
// includes this with doctest's checks compiled out.)
inline void check_is_the_live_refresh_token([[maybe_unused]] aps_mock::Server& mock,
                                            [[maybe_unused]] const std::string& refresh_token) {
  CHECK_FALSE(refresh_token.empty());
  CHECK(mock.is_valid_refresh_token(refresh_token));
  CHECK(mock.current_refresh_token_for(kRefreshClient) == refresh_token);
}

// A running mock APS server (HTTPS when options.tls, with a PKI generated for it) and what a test needs to talk
// to it: a private directory, the mock's CA certificate in it, Configs for it, the requests it saw.
struct Mock {
  TempDir dir;
  aps_mock::Server server;
  std::string ca_file;  // HTTPS: the mock's CA certificate (PEM); "" over HTTP

  explicit Mock(const aps_mock::Options& options) : server(options) {
    if (options.tls)
      ca_file = dir.write("ca.pem", server.pki().ca_cert_pem);
  }

  std::string base_url() const { return server.base_url(); }

  // A Config for the mock (config_for), trusting its CA.
  aps::auth::Config config(const std::string& client_id, const std::string& client_secret = "") const {
    return config_for(server, client_id, client_secret, ca_file);
  }

  // The requests the mock saw on `path`, in order.
  std::vector<aps_mock::RecordedRequest> requests_to(const std::string& path) const {
    std::vector<aps_mock::RecordedRequest> out;
    for (auto& r : server.requests())
      if (r.path == path)
        out.push_back(r);
    return out;
  }
};

// Replaces the machine's trust store, for the lifetime of the object, by one unrelated CA: OpenSSL's default
// paths (SSL_CERT_FILE, SSL_CERT_DIR) then trust nothing the tests serve, so only Config::ca_file (or APS_CA_FILE)
// can make the mock trusted, whatever the host has installed; and loading the default paths costs microseconds
// instead of the ~60 ms of a full system bundle on every HTTPS call.
class IsolatedTrust {
 public:
  explicit IsolatedTrust(const TempDir& dir)
      : system_file_(dir.write("system-ca.pem", aps_mock::Pki::generate("unrelated.example").ca_cert_pem)),
        system_dir_(make_empty_dir(dir)),
        cert_file_("SSL_CERT_FILE", system_file_.c_str()),
        cert_dir_("SSL_CERT_DIR", system_dir_.c_str()),
        aps_ca_file_("APS_CA_FILE", nullptr) {}
  const std::string& system_file() const { return system_file_; }  // the unrelated CA's certificate
  const std::string& system_dir() const { return system_dir_; }    // an empty certificate directory

 private:
  static std::string make_empty_dir(const TempDir& dir) {
    std::string path = dir.file("system-certs");
    std::filesystem::create_directories(path);
    return path;
  }
  std::string system_file_, system_dir_;
  ScopedEnv cert_file_, cert_dir_, aps_ca_file_;
};

// The mock of the token endpoint and TLS tests: two registered clients, a confidential one whose id and secret
// need form-encoding in the Basic header (RFC 6749 section 2.3.1) and a public one; the machine's trust store
// isolated (IsolatedTrust); Configs with short timeouts and a single attempt.
struct MockEnv : Mock {
  static inline const std::string kConfidentialId = "conf client/1";
  static inline const std::string kConfidentialSecret = "s3cr/t+Value:with=odd&chars%21 ~";
  static inline const std::string kPublicId = "public-client";
  static inline const std::string kRedirect = "http://localhost:8080/api/auth/callback";

  IsolatedTrust trust{dir};

  // `tweak` may change the options (clients, PKI, ...) before the server starts.
  explicit MockEnv(bool tls, const std::function<void(aps_mock::Options&)>& tweak = nullptr)
      : Mock(options(tls, tweak)) {}

  static aps_mock::Options options(bool tls, const std::function<void(aps_mock::Options&)>& tweak) {
    aps_mock::Options o;
    o.clients = {{kConfidentialId, kConfidentialSecret, {kRedirect}}, {kPublicId, "", {kRedirect}}};
    if (tweak)
      tweak(o);
    o.tls = tls;
    return o;
  }

  // A Config for the mock as the confidential or the public client: its endpoints, its CA, no proxy, a single
  // attempt and short timeouts.
  aps::auth::Config config(bool confidential = true) const {
    aps::auth::Config c =
        Mock::config(confidential ? kConfidentialId : kPublicId, confidential ? kConfidentialSecret : "");
    c.callback_url = kRedirect;
    c.scopes = {"data:read", "data:write"};
    c.connect_timeout = std::chrono::seconds(3);
    c.read_timeout = std::chrono::seconds(5);
    c.retry = {1, std::chrono::milliseconds(1), std::chrono::milliseconds(50)};
    return c;
  }
};

// Plays the user's browser for login(): registers the listener's redirect URI with the mock (as a developer
// registers the callback URL of the app) and follows the authorize URL like a browser, on a thread of its own,
// trusting `ca_pem` (the mock's CA, over HTTPS). Joined by result() or when destroyed.
class ScriptedBrowser {
 public:
  explicit ScriptedBrowser(aps_mock::Server& server, std::string ca_pem = "", int timeout_ms = 10000)
      : server_(server), ca_pem_(std::move(ca_pem)), timeout_ms_(timeout_ms) {}
  ~ScriptedBrowser() { join(); }
  ScriptedBrowser(const ScriptedBrowser&) = delete;
  ScriptedBrowser& operator=(const ScriptedBrowser&) = delete;

  // LoginOptions with on_listening (the registration) and browser (the scripted one) set; the rest default.
  aps::auth::LoginOptions login_options() {
    aps::auth::LoginOptions o;
    o.on_listening = [this](aps::auth::LoopbackListener& l) { register_redirect_uri(l.redirect_uri()); };
    o.browser = [this](const std::string& url) {
      thread_ = std::thread([this, url] { result_ = aps_mock::follow_like_browser(url, ca_pem_, timeout_ms_); });
      return true;
    };
    return o;
  }

  // Adds the URI to every client's registered redirect URIs.
  void register_redirect_uri(const std::string& uri) {
    aps_mock::Options o = server_.options();
    for (auto& c : o.clients)
      c.redirect_uris.push_back(uri);
    server_.set_options(o);
  }

  // What the browser saw last (once it is done).
  const aps_mock::BrowseResult& result() {
    join();
    return result_;
  }

  void join() {
    if (thread_.joinable())
      thread_.join();
  }

 private:
  aps_mock::Server& server_;
  std::string ca_pem_;
  int timeout_ms_;
  std::thread thread_;
  aps_mock::BrowseResult result_;
};

// An authorization request (with PKCE) and a code the mock issued for it: a code exchange without a browser.
struct IssuedCode {
  aps::auth::AuthorizationRequest request;
  std::string code;
};

inline IssuedCode issue_code(aps_mock::Server& server, const std::string& client_id, const std::string& redirect_uri,
                             const std::string& scope) {
  IssuedCode g;
  g.request.redirect_uri = redirect_uri;
  g.request.code_verifier = aps::auth::random_urlsafe(32);
  g.request.code_challenge = aps::auth::pkce_challenge(g.request.code_verifier);
  g.code = server.issue_code(client_id, redirect_uri, scope, g.request.code_challenge);
  return g;
}

// Every secret the mock received: each value of a code, code_verifier, refresh_token, token or client_secret
// parameter, and the credentials of each Authorization header (Basic or Bearer).
inline std::set<std::string> secrets_received_by(const aps_mock::Server& server) {
  std::set<std::string> s;
  for (const auto& r : server.requests()) {
    for (const char* k : {"code", "code_verifier", "refresh_token", "token", "client_secret"})
      for (auto it = r.form.lower_bound(k); it != r.form.upper_bound(k); ++it)
        s.insert(it->second);
    const std::string authz = r.header("Authorization");
    if (authz.find(' ') != std::string::npos)
      s.insert(authz.substr(authz.find(' ') + 1));
  }
  s.erase("");
  return s;
}

#ifndef _WIN32
// A test whose forked child makes HTTP calls (to the mock, which runs in the parent) runs only where that can
// work; otherwise it says why it did not.
inline bool fork_with_mock_runs_here() {
  if (platform::kSanitized) {
    MESSAGE("not run under a sanitizer: fork() with the mock's threads running can deadlock there");
    return false;
  }
  if (platform::kForkedChildCannotResolve) {
    MESSAGE(platform::kForkedChildCannotResolveWhy);
    return false;
  }
  return true;
}
#endif

}  // namespace support

#endif
