// A mock APS server (HTTP or HTTPS with a PKI generated at test time, its CA written to a temporary file) and
// Configs pointing at it, for test_token_endpoint.cpp and test_tls.cpp. Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_MOCK_ENV_HPP
#define APS_AUTH_TESTS_SUPPORT_MOCK_ENV_HPP

#include "aps_auth.hpp"
#include "examples/mock_aps_server.hpp"
#include "test_util.hpp"

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <memory>
#include <string>
#include <vector>

namespace mock_env {

// Client registrations used throughout: a confidential client whose id and secret need form-encoding in the
// Basic header (RFC 6749 §2.3.1), and a public client.
inline const std::string kConfidentialId = "conf client/1";
inline const std::string kConfidentialSecret = "s3cr/t+Value:with=odd&chars%21 ~";
inline const std::string kPublicId = "public-client";
inline const std::string kRedirect = "http://localhost:8080/api/auth/callback";

// A private temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "aps_auth_test_XXXXXX").string();
    if (!::mkdtemp(&tmpl[0])) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }

 private:
  std::string path_;
};

inline aps_mock::Options default_options(bool tls) {
  aps_mock::Options o;
  o.tls = tls;
  o.clients = {{kConfidentialId, kConfidentialSecret, {kRedirect}}, {kPublicId, "", {kRedirect}}};
  return o;
}

// Replaces the machine's trust store, for the lifetime of the object, by one unrelated CA: OpenSSL's default
// paths (SSL_CERT_FILE, SSL_CERT_DIR) then trust nothing the tests serve, so only Config::ca_file (or
// APS_CA_FILE) can make the mock trusted, whatever the host has installed; and loading the default paths costs
// microseconds instead of the ~60 ms of a full system bundle on every HTTPS call.
class IsolatedTrust {
 public:
  explicit IsolatedTrust(const TempDir& dir)
      : system_file_(write_unrelated_ca(dir)),
        system_dir_(make_empty_dir(dir)),
        cert_file_("SSL_CERT_FILE", system_file_.c_str()),
        cert_dir_("SSL_CERT_DIR", system_dir_.c_str()),
        aps_ca_file_("APS_CA_FILE", nullptr) {}
  const std::string& system_file() const { return system_file_; }

 private:
  static std::string write_unrelated_ca(const TempDir& dir) {
    std::string path = dir.file("system-ca.pem");
    std::ofstream(path) << aps_mock::Pki::generate("unrelated.example").ca_cert_pem;
    return path;
  }
  static std::string make_empty_dir(const TempDir& dir) {
    std::string path = dir.file("system-certs");
    std::filesystem::create_directories(path);
    return path;
  }
  std::string system_file_, system_dir_;
  test_util::ScopedEnv cert_file_, cert_dir_, aps_ca_file_;
};

// One mock server and what a test needs to talk to it.
struct Env {
  TempDir dir;
  IsolatedTrust trust{dir};
  std::unique_ptr<aps_mock::Server> server;
  std::string ca_file;  // the mock's CA (HTTPS only)

  // `tweak` may change the default options (clients, PKI, ...) before the server starts.
  explicit Env(bool tls, const std::function<void(aps_mock::Options&)>& tweak = nullptr) {
    aps_mock::Options options = default_options(tls);
    if (tweak) tweak(options);
    options.tls = tls;
    server = std::make_unique<aps_mock::Server>(options);
    if (tls) {
      server->pki().write(dir.path());
      ca_file = dir.file("ca.pem");
    }
  }

  std::string base_url() const { return server->base_url(); }

  // A Config for the mock: its endpoints, its CA, no proxy, fast retries and short timeouts.
  aps::auth::Config config(bool confidential = true) const {
    aps::auth::Config c;
    c.client_id = confidential ? kConfidentialId : kPublicId;
    c.client_secret = confidential ? kConfidentialSecret : "";
    c.callback_url = kRedirect;
    c.scopes = {"data:read", "data:write"};
    c.endpoints = aps::auth::Endpoints::from_base_url(base_url());
    c.ca_file = ca_file;
    c.proxy = "direct";
    c.connect_timeout = std::chrono::seconds(3);
    c.read_timeout = std::chrono::seconds(5);
    c.retry.max_attempts = 1;
    c.retry.initial_backoff = std::chrono::milliseconds(1);
    c.retry.max_delay = std::chrono::milliseconds(50);
    return c;
  }

  // The requests the mock saw on `path`, in order.
  std::vector<aps_mock::RecordedRequest> requests_to(const std::string& path) const {
    std::vector<aps_mock::RecordedRequest> out;
    for (auto& r : server->requests())
      if (r.path == path) out.push_back(r);
    return out;
  }
};

inline const char* const kTokenPath = "/authentication/v2/token";
inline const char* const kRevokePath = "/authentication/v2/revoke";
inline const char* const kIntrospectPath = "/authentication/v2/introspect";
inline const char* const kUserinfoPath = "/userinfo";
inline const char* const kDiscoveryPath = "/.well-known/openid-configuration";

}  // namespace mock_env

#endif
