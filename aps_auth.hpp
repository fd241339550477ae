// aps_auth.hpp - sign in to Autodesk Platform Services (APS) with OAuth 2.0, in one header.
//
//   #include "aps_auth.hpp"
//   aps::auth::Config config;                      // APS endpoints by default
//   config.client_id = "...";                      // no secret: a public client (PKCE)
//   aps::auth::Token token = aps::auth::login(config);  // browser + loopback listener + code exchange
//
// Header-only by default. For faster builds define APS_AUTH_HEADER_ONLY=0 everywhere (the declarations then
// need only standard headers) and compile the implementation once, in one .cpp:
//   #define APS_AUTH_IMPLEMENTATION
//   #include "aps_auth.hpp"
// The implementation needs cpp-httplib (with CPPHTTPLIB_OPENSSL_SUPPORT), nlohmann/json and OpenSSL.
// SPDX-License-Identifier: MIT
#ifndef APS_AUTH_HPP
#define APS_AUTH_HPP

#define APS_AUTH_VERSION_MAJOR 0
#define APS_AUTH_VERSION_MINOR 1
#define APS_AUTH_VERSION_PATCH 0

// ---- configuration macros ----------------------------------------------------------------------------------

#ifndef APS_AUTH_HEADER_ONLY
#define APS_AUTH_HEADER_ONLY 1
#endif

#if APS_AUTH_HEADER_ONLY
#define APS_AUTH_FUNC inline
#else
#define APS_AUTH_FUNC
#endif

// Largest answer body accepted from an HTTP endpoint; larger answers are a bad_response error.
#ifndef APS_AUTH_MAX_RESPONSE_BYTES
#define APS_AUTH_MAX_RESPONSE_BYTES (1024 * 1024)
#endif

// Largest request head (request line + headers) the loopback listener reads from one connection.
#ifndef APS_AUTH_MAX_CALLBACK_BYTES
#define APS_AUTH_MAX_CALLBACK_BYTES (16 * 1024)
#endif

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace aps {
namespace auth {

// ---- errors ------------------------------------------------------------------------------------------------

enum class ErrorKind {
  network,         // could not connect, connection reset, proxy failure
  tls,             // certificate not trusted, hostname mismatch, handshake failure
  timeout,         // no answer in time, or no callback before the deadline
  http,            // an endpoint answered an HTTP error (APS errorCode/developerMessage kept)
  oauth,           // an endpoint or the callback answered an OAuth error (error/error_description kept)
  state_mismatch,  // the callback's iss did not match (wrong-state callbacks never end the wait)
  access_denied,   // the user (or policy) refused consent
  bad_response,    // an answer that is not what the protocol promises (HTML, truncated, too big, ...)
  io,              // files, sockets of the listener, randomness
  usage,           // the caller's mistake: bad URL, missing client id, plain http to a remote host
  cancelled,       // LoopbackListener::cancel() was called
};

[[nodiscard]] const char* to_string(ErrorKind kind) noexcept;

// What an endpoint said, every field kept (APS answers errors in two shapes).
struct ErrorDetails {
  int status = 0;                 // HTTP status, 0 when there was no answer
  std::string error;              // RFC 6749 "error"
  std::string error_description;  // RFC 6749 "error_description"
  std::string error_code;         // APS "errorCode", e.g. "AUTH-001"
  std::string developer_message;  // APS "developerMessage"
  std::string user_message;       // APS "userMessage"
  std::string more_info;          // APS "more info" / "moreInfo"
  std::chrono::seconds retry_after{0};  // from a 429/503 answer
};

// The one exception type. what() starts with a stable "[aps_auth.<kind>] " prefix and never contains a
// secret, code or token.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message, ErrorDetails details = {});
  [[nodiscard]] ErrorKind kind() const noexcept { return kind_; }
  [[nodiscard]] const ErrorDetails& details() const noexcept { return details_; }
  [[nodiscard]] int status() const noexcept { return details_.status; }

 private:
  ErrorKind kind_;
  ErrorDetails details_;
};

// ---- configuration -----------------------------------------------------------------------------------------

// Where the authorization server lives. Default-constructed: APS production.
struct Endpoints {
  std::string issuer = "https://developer.api.autodesk.com";
  std::string authorize = "https://developer.api.autodesk.com/authentication/v2/authorize";
  std::string token = "https://developer.api.autodesk.com/authentication/v2/token";
  std::string revoke = "https://developer.api.autodesk.com/authentication/v2/revoke";
  std::string introspect = "https://developer.api.autodesk.com/authentication/v2/introspect";
  std::string jwks = "https://developer.api.autodesk.com/authentication/v2/keys";
  std::string logout = "https://developer.api.autodesk.com/authentication/v2/logout";
  std::string userinfo = "https://api.userprofile.autodesk.com/userinfo";
  // RFC 9207: the server promises an `iss` parameter on every authorization response.
  bool authorization_response_iss_parameter_supported = false;

  // APS path layout under another base URL (a proxy, a mock). userinfo becomes <base>/userinfo, except for
  // the APS production base, which keeps the real userinfo host.
  [[nodiscard]] static Endpoints from_base_url(std::string_view base_url);
};

// When a failed request is sent again. Only requests whose re-sending is safe are retried on 500/502/504 and
// lost answers (reset, closed, read timeout): client credentials, introspect, revoke, discovery, JWKS, userinfo.
// A code exchange or a refresh is re-sent only when it provably never reached the server (connection refused,
// connect timeout, a proxy refusing the tunnel with 429/5xx) or the server answered 429/503: a lost refresh
// answer is never re-sent, because the server already rotated the refresh token. TLS errors, 3xx, other 4xx and
// malformed answers are never retried. Wait before re-send n: Retry-After (seconds) when given, else uniform in
// [0, initial_backoff * 2^(n-1)]; both capped at max_delay.
struct RetryPolicy {
  int max_attempts = 3;                                 // 1 = never retry
  std::chrono::milliseconds initial_backoff{500};       // doubled each attempt, with full jitter
  std::chrono::milliseconds max_delay{30000};           // cap for Retry-After and backoff
};

struct Config {
  std::string client_id;
  std::string client_secret;  // empty: a public client (client_id in the body, PKCE)
  std::string callback_url = "http://localhost:8080/api/auth/callback";  // must match the app's registration
  std::vector<std::string> scopes = {"data:read"};
  Endpoints endpoints;
  std::string ca_file;  // extra trusted CA certificates (PEM), on top of the system store and SSL_CERT_FILE
  // Proxy for the token endpoint calls: "http://[user:pass@]host:port". Empty: HTTPS_PROXY / https_proxy /
  // HTTP_PROXY / http_proxy / NO_PROXY from the environment. "direct": never use a proxy.
  std::string proxy;
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds read_timeout{30000};
  RetryPolicy retry;
};

// ---- tokens ------------------------------------------------------------------------------------------------

struct Token {
  std::string access_token;
  std::string token_type = "Bearer";
  std::string refresh_token;  // 3-legged only; rotates on every refresh
  std::string id_token;       // with the openid scope
  std::string scope;
  std::chrono::seconds expires_in{0};                  // as answered
  std::chrono::system_clock::time_point expires_at{};  // absolute, from the time the request was sent

  // True when the access token expires within `margin` from now (or has no access token).
  [[nodiscard]] bool expired(std::chrono::seconds margin = std::chrono::seconds(0)) const;
  // {"access_token","token_type","expires_in","expires_at"(epoch s),"refresh_token"?,"id_token"?,"scope"?}
  [[nodiscard]] std::string to_json() const;
  // Reads to_json() output, or a token endpoint answer (expires_at then computed from now).
  [[nodiscard]] static Token from_json(std::string_view json);
};

enum class TokenTypeHint { access_token, refresh_token };

struct Introspection {
  bool active = false;
  std::string scope, client_id, userid;
  std::chrono::system_clock::time_point expires_at{};  // epoch 0 when not given
  std::string json;                                    // the whole answer
};

struct UserInfo {
  std::string sub, name, email, preferred_username;
  std::string json;  // the whole answer (all OIDC claims)
};

// ---- authorization request ---------------------------------------------------------------------------------

struct AuthorizeOptions {
  std::string prompt;         // "login" forces the sign-in page
  std::string response_mode;  // "" or "query" (the listener reads the query)
  std::string authoptions;    // APS JSON string, e.g. {"id":"..."}
};

// Everything one sign-in needs to remember between the browser and the code exchange.
struct AuthorizationRequest {
  std::string url;             // open this in the browser
  std::string state;           // 128 bits from RAND_bytes, base64url
  std::string code_verifier;   // 32 octets from RAND_bytes, base64url (43 chars)
  std::string code_challenge;  // S256
  std::string nonce;           // with the openid scope
  std::string redirect_uri;    // sent again, identical, to the token endpoint
  std::string issuer;          // expected `iss` on the callback (RFC 9207)
  bool require_iss = false;    // the issuer advertised authorization_response_iss_parameter_supported
};

// A new request: fresh state, PKCE S256 and (with openid) nonce, and its authorize URL. redirect_uri
// defaults to config.callback_url.
[[nodiscard]] AuthorizationRequest authorization_request(const Config& config, const AuthorizeOptions& options = {},
                                                         const std::string& redirect_uri = "");
// PKCE S256: base64url(SHA-256(verifier)).
[[nodiscard]] std::string pkce_challenge(std::string_view code_verifier);
// `bytes` random octets from OpenSSL's CSPRNG, base64url without padding.
[[nodiscard]] std::string random_urlsafe(std::size_t bytes);

// ---- the loopback listener ---------------------------------------------------------------------------------

// Receives the browser's redirect on the callback URL. Binds in the constructor (loopback only: 127.0.0.1,
// [::1], or both for localhost; never a wildcard; never SO_REUSEPORT), so a port in use is an error
// before any browser opens. Port 0 in the callback URL picks a free port (see redirect_uri()).
class LoopbackListener {
 public:
  explicit LoopbackListener(const std::string& callback_url);
  ~LoopbackListener();
  LoopbackListener(const LoopbackListener&) = delete;
  LoopbackListener& operator=(const LoopbackListener&) = delete;

  [[nodiscard]] int port() const noexcept;
  [[nodiscard]] std::string redirect_uri() const;                // the callback URL with the bound port
  [[nodiscard]] std::vector<std::string> bound_addresses() const;  // "127.0.0.1:8080", "[::1]:8080"

  // Waits for the callback that carries request.state and returns its code. Other paths get 404; callbacks
  // with a wrong or missing state (error= ones included) get an explanatory page and the wait goes on. An
  // error= callback with the right state throws (access_denied or oauth). One overall deadline: timeout.
  [[nodiscard]] std::string wait(const AuthorizationRequest& request, std::chrono::milliseconds timeout);
  // Ends a wait() in progress from another thread (it throws ErrorKind::cancelled).
  void cancel() noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Opens the URL in the user's browser without a shell: $BROWSER (a "%s" in it is replaced by the URL,
// otherwise the URL is appended) or the platform opener. Does not wait for the browser. False when nothing
// could be started.
bool open_browser(const std::string& url);

// ---- token endpoint and friends ----------------------------------------------------------------------------

// authorization_code grant; sends request.code_verifier and the identical request.redirect_uri.
[[nodiscard]] Token exchange_code(const Config& config, const AuthorizationRequest& request, const std::string& code);
// refresh_token grant; `scopes` may narrow the original ones. Keeps the old refresh token if none comes back.
[[nodiscard]] Token refresh(const Config& config, const std::string& refresh_token,
                            const std::vector<std::string>& scopes = {});
// client_credentials grant (2-legged) for config.scopes; needs a client secret.
[[nodiscard]] Token client_credentials(const Config& config);
void revoke(const Config& config, const std::string& token, TokenTypeHint hint);
[[nodiscard]] Introspection introspect(const Config& config, const std::string& token);
[[nodiscard]] UserInfo userinfo(const Config& config, const std::string& access_token);
[[nodiscard]] std::string logout_url(const Config& config, const std::string& post_logout_redirect_uri = "");
// OIDC discovery: <issuer>/.well-known/openid-configuration; the document's issuer must equal `issuer`.
[[nodiscard]] Endpoints discover(const Config& config, const std::string& issuer);

// ---- token persistence -------------------------------------------------------------------------------------

// Held while a TokenSource reads, refreshes and writes a store, so that processes sharing it refresh one at a
// time. Released by destruction.
class StoreLock {
 public:
  virtual ~StoreLock() = default;
};

class TokenStore {
 public:
  virtual ~TokenStore() = default;
  // The stored token; false when there is none.
  virtual bool load(Token& token) = 0;
  virtual void save(const Token& token) = 0;
  virtual void clear() = 0;
  // An exclusive lock shared with other processes using the same store; none (nullptr) by default.
  [[nodiscard]] virtual std::unique_ptr<StoreLock> lock() { return nullptr; }
};

class MemoryTokenStore : public TokenStore {
 public:
  MemoryTokenStore();
  // APS_AUTH_FUNC here, not only at the definitions: a virtual function not inline where the class is defined is
  // its key function, and header-only, every file including this header would then emit the vtable and every
  // function it reaches (JSON parsing included): ~2,100 functions, 280 KB of object code at -O0.
  APS_AUTH_FUNC bool load(Token& token) override;
  APS_AUTH_FUNC void save(const Token& token) override;
  APS_AUTH_FUNC void clear() override;

 private:
  std::shared_ptr<const Token> token_;
  std::shared_ptr<void> mutex_;  // keeps <mutex> out of the declarations
};

// A JSON file, written atomically (temp file in the same directory, fsync, rename, fsync of the directory),
// mode 0600 from creation whatever the umask. Cross-process lock: flock() on "<path>.lock".
class FileTokenStore : public TokenStore {
 public:
  enum class OpenPermissions {
    refuse,  // default: a token file readable or writable by group/others is an ErrorKind::io error
    warn,    // call `warn` and go on
  };
  explicit FileTokenStore(std::string path, OpenPermissions permissions = OpenPermissions::refuse,
                          std::function<void(const std::string& message)> warn = {});
  // $XDG_STATE_HOME/aps-auth/<name>.json, else ~/.local/state/aps-auth/<name>.json.
  [[nodiscard]] static std::string default_path(const std::string& name = "token");

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  APS_AUTH_FUNC bool load(Token& token) override;  // APS_AUTH_FUNC: see MemoryTokenStore
  APS_AUTH_FUNC void save(const Token& token) override;
  APS_AUTH_FUNC void clear() override;
  [[nodiscard]] APS_AUTH_FUNC std::unique_ptr<StoreLock> lock() override;

 private:
  std::string path_;
  OpenPermissions permissions_;
  std::function<void(const std::string&)> warn_;
};

// ---- auto-refreshing token source --------------------------------------------------------------------------

struct TokenSourceOptions {
  // Refresh when the access token expires within this time (at most half the token's lifetime).
  std::chrono::seconds refresh_lead = std::chrono::minutes(5);
  // 2-legged: get a new client-credentials token when the old one expires (no refresh token involved).
  bool client_credentials = false;
  // Told about every new token: after it was saved, or, when saving failed, before that error is thrown.
  std::function<void(const Token& token)> on_new_token;
};

// Hands out a valid access token, refreshing when needed. Refreshes are single-flight across threads (one in
// flight, the others wait and share its result) and across processes sharing the store (its lock is held
// around read-refresh-write, and a token another process already rotated is used without refreshing). The new
// token is saved before it is handed out; if saving fails, the error says so and the token stays in memory
// (token() returns it). On invalid_grant the store is read once more before giving up.
class TokenSource {
 public:
  TokenSource(Config config, std::shared_ptr<TokenStore> store, TokenSourceOptions options = {});
  ~TokenSource();
  TokenSource(const TokenSource&) = delete;
  TokenSource& operator=(const TokenSource&) = delete;

  // A valid access token (thread-safe).
  [[nodiscard]] std::string access_token();
  // The whole current token, refreshed first when needed (thread-safe).
  [[nodiscard]] Token token();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- OpenID Connect id_token -------------------------------------------------------------------------------

struct IdTokenClaims {
  std::string issuer, subject, audience, nonce, name, email;
  std::chrono::system_clock::time_point issued_at{}, expires_at{};
  std::string json;  // every claim
};

// Verifies an id_token and returns its claims: RS256 signature against the issuer's JWKS
// (config.endpoints.jwks, cached by kid, fetched again once on an unknown kid), iss == config.endpoints.issuer,
// aud contains config.client_id, exp/iat within `leeway`, and nonce when `nonce` is not empty. Anything else
// (alg none, HS256, a wrong key, ...) is ErrorKind::bad_response. login() calls this when it got an id_token.
[[nodiscard]] IdTokenClaims verify_id_token(const Config& config, const std::string& id_token,
                                            const std::string& nonce = "",
                                            std::chrono::seconds leeway = std::chrono::seconds(60));

// ---- the whole 3-legged flow -------------------------------------------------------------------------------

struct LoginOptions {
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  AuthorizeOptions authorize;
  bool open_browser = true;  // false: only show_url is called
  // Opens the URL; return false when it could not. Default: aps::auth::open_browser.
  std::function<bool(const std::string& url)> browser;
  // Shows the URL to the person when no browser opened (or open_browser is false). The library prints
  // nothing itself: set this to print it.
  std::function<void(const std::string& url)> show_url;
  // Called once the listener is bound, before the browser opens (e.g. to keep a handle for cancel()).
  std::function<void(LoopbackListener& listener)> on_listening;
};

// Binds the listener, opens the browser, waits for the callback (state checked), exchanges the code.
[[nodiscard]] Token login(const Config& config, const LoginOptions& options = {});

[[nodiscard]] std::string version();

}  // namespace auth
}  // namespace aps

// ================================================================================================================
// Implementation
// ================================================================================================================
#if APS_AUTH_HEADER_ONLY || defined(APS_AUTH_IMPLEMENTATION)

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#ifndef _WIN32
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace aps {
namespace auth {
namespace detail {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using Params = std::vector<std::pair<std::string, std::string>>;

// ---- encodings ---------------------------------------------------------------------------------------------

inline bool is_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

// RFC 3986 percent-encoding of everything but unreserved characters; a space is %20.
inline std::string url_encode(std::string_view in) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(in.size() * 3);
  for (char ch : in) {
    auto c = static_cast<unsigned char>(ch);
    if (is_unreserved(c)) {
      out += ch;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// application/x-www-form-urlencoded (RFC 6749 Appendix B): a space is '+', '~' is kept.
inline std::string form_encode(std::string_view in) {
  std::string out = url_encode(in);
  std::string res;
  res.reserve(out.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out.compare(i, 3, "%20") == 0) {
      res += '+';
      i += 2;
    } else {
      res += out[i];
    }
  }
  return res;
}

inline int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX once ('+' as a space in form/query data). nullopt on a broken escape.
inline std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return std::nullopt;
      int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

// Splits "a=1&b=2" and decodes each name and value exactly once. nullopt on a broken escape.
inline std::optional<Params> parse_query(std::string_view query) {
  Params out;
  std::size_t pos = 0;
  while (pos <= query.size()) {
    std::size_t amp = query.find('&', pos);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view part = query.substr(pos, amp - pos);
    if (!part.empty()) {
      std::size_t eq = part.find('=');
      auto name = percent_decode(part.substr(0, eq), true);
      auto value = percent_decode(eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1), true);
      if (!name || !value) return std::nullopt;
      out.emplace_back(std::move(*name), std::move(*value));
    }
    pos = amp + 1;
  }
  return out;
}

inline std::string encode_params(const Params& params, bool form) {
  std::string out;
  for (const auto& [name, value] : params) {
    if (!out.empty()) out += '&';
    out += form ? form_encode(name) : url_encode(name);
    out += '=';
    out += form ? form_encode(value) : url_encode(value);
  }
  return out;
}

inline std::string base64(std::string_view in, bool url) {
  static const char std_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  static const char url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const char* a = url ? url_alphabet : std_alphabet;
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    std::uint32_t n = (std::uint32_t(static_cast<unsigned char>(in[i])) << 16) |
                      (std::uint32_t(static_cast<unsigned char>(in[i + 1])) << 8) |
                      std::uint32_t(static_cast<unsigned char>(in[i + 2]));
    out += a[(n >> 18) & 63];
    out += a[(n >> 12) & 63];
    out += a[(n >> 6) & 63];
    out += a[n & 63];
  }
  if (i < in.size()) {
    std::uint32_t n = std::uint32_t(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) n |= std::uint32_t(static_cast<unsigned char>(in[i + 1])) << 8;
    out += a[(n >> 18) & 63];
    out += a[(n >> 12) & 63];
    if (i + 1 < in.size()) {
      out += a[(n >> 6) & 63];
      if (!url) out += '=';
    } else if (!url) {
      out += "==";
    }
  }
  return out;
}

// Decodes base64 or base64url, padding optional. nullopt on anything else.
inline std::optional<std::string> base64_decode(std::string_view in) {
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  std::string out;
  out.reserve(in.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  if (bits >= 6) return std::nullopt;  // a single dangling character cannot encode a byte
  return out;
}

inline std::string sha256(std::string_view in) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(in.data(), in.size(), md, &len, EVP_sha256(), nullptr) != 1)
    throw Error(ErrorKind::io, "SHA-256 failed in OpenSSL");
  return std::string(reinterpret_cast<const char*>(md), len);
}

inline bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;  // the length of a state is not a secret
  return a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

inline std::string html_escape(std::string_view in) {
  std::string out;
  out.reserve(in.size() + 16);
  for (char c : in) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Text from a server, made safe for an exception message: control characters replaced, length capped,
// and any secret we sent masked (a server may echo what it received).
inline std::string sanitize(std::string_view in, const std::vector<std::string_view>& secrets = {},
                            std::size_t max_len = 300) {
  // Control characters first (replacing them must not rebuild a secret), then mask, then cut (a secret
  // straddling the cap must not leave its first half behind). Both orders were found by fuzz/query.
  auto printable = [](std::string_view text) {
    std::string r(text);
    for (char& c : r)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    return r;
  };
  std::string out = printable(in);
  for (std::string_view secret : secrets) {
    if (secret.size() < 4) continue;
    const std::string s = printable(secret);
    for (std::size_t p = out.find(s); p != std::string::npos; p = out.find(s, p + 3)) out.replace(p, s.size(), "***");
  }
  if (out.size() > max_len) {
    out.resize(max_len);
    out += "...";
  }
  return out;
}

// Cheap pre-check before a JSON parse: nesting depth of a hostile body is bounded.
inline bool json_depth_ok(std::string_view body, int max_depth = 64) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

// A JSON object or nullopt (never throws).
inline std::optional<json> parse_json_object(std::string_view body) {
  if (!json_depth_ok(body)) return std::nullopt;
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

inline std::string string_field(const json& j, const char* name) {
  auto it = j.find(name);
  if (it != j.end() && it->is_string()) return it->get<std::string>();
  return {};
}

inline std::string join(const std::vector<std::string>& parts, char sep) {
  std::string out;
  for (const auto& p : parts) {
    if (p.empty()) continue;
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

inline bool has_scope(const std::vector<std::string>& scopes, std::string_view scope) {
  return std::find(scopes.begin(), scopes.end(), scope) != scopes.end();
}

// ---- URLs --------------------------------------------------------------------------------------------------

struct Url {
  std::string scheme;  // lower case
  std::string userinfo;
  std::string host;  // without brackets
  int port = 0;
  std::string path = "/";
  std::string query;

  bool ipv6() const { return host.find(':') != std::string::npos; }
  std::string host_for_url() const { return ipv6() ? "[" + host + "]" : host; }
  std::string origin() const { return scheme + "://" + host_for_url() + ":" + std::to_string(port); }
  std::string target() const { return query.empty() ? path : path + "?" + query; }
};

// Parses absolute http(s) URLs; no regex, no guessing. nullopt when it is not one.
inline std::optional<Url> parse_url(std::string_view s) {
  Url u;
  std::size_t colon = s.find("://");
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  for (char c : s.substr(0, colon)) u.scheme += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (u.scheme != "http" && u.scheme != "https") return std::nullopt;
  std::string_view rest = s.substr(colon + 3);
  std::size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  std::string_view tail = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  if (std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
    u.userinfo = std::string(authority.substr(0, at));
    authority = authority.substr(at + 1);
  }
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    u.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port_text = after.substr(1);
    }
    if (u.host.find(':') == std::string::npos ||  // "[abc]" is no IPv6 address (found by fuzz/url)
        u.host.find_first_not_of("0123456789abcdefABCDEF:.") != std::string::npos)
      return std::nullopt;
  } else {
    std::size_t pc = authority.rfind(':');
    if (pc != std::string_view::npos) {
      port_text = authority.substr(pc + 1);
      authority = authority.substr(0, pc);
    }
    u.host = std::string(authority);
    if (u.host.empty()) return std::nullopt;
    for (char& c : u.host) {
      auto uc = static_cast<unsigned char>(c);
      // ':' '[' ']' only in a bracketed IPv6 host: "h:x:80" would re-serialize as "[h:x]" (found by fuzz/url).
      if (uc <= 0x20 || uc >= 0x7f || c == '\\' || c == '%' || c == '"' || c == '<' || c == '>' || c == ':' ||
          c == '[' || c == ']')
        return std::nullopt;
      c = static_cast<char>(std::tolower(uc));
    }
  }
  if (!port_text.empty()) {
    if (port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string_view::npos)
      return std::nullopt;
    u.port = std::stoi(std::string(port_text));
    if (u.port > 65535) return std::nullopt;
  } else {
    u.port = u.scheme == "https" ? 443 : 80;
  }
  if (std::size_t hash = tail.find('#'); hash != std::string_view::npos) tail = tail.substr(0, hash);
  std::size_t q = tail.find('?');
  std::string_view path = tail.substr(0, q);
  u.path = path.empty() ? "/" : std::string(path);
  if (q != std::string_view::npos) u.query = std::string(tail.substr(q + 1));
  for (char c : u.path + u.query)
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) return std::nullopt;
  return u;
}

inline bool is_loopback_host(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr a{};
  return inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

inline Url require_url(const std::string& url, const char* what) {
  auto u = parse_url(url);
  if (!u) throw Error(ErrorKind::usage, std::string(what) + " is not an absolute http(s) URL: '" + sanitize(url) + "'");
  // Plain http only to this machine: tokens and secrets never cross a network unencrypted.
  if (u->scheme == "http" && !is_loopback_host(u->host))
    throw Error(ErrorKind::usage, std::string(what) + " uses plain http to a remote host (" + u->host +
                                      "); only https is allowed off this machine");
  return *u;
}

inline std::string trim_slash(std::string_view s) {
  while (!s.empty() && s.back() == '/') s.remove_suffix(1);
  return std::string(s);
}

// ---- HTTP client -------------------------------------------------------------------------------------------

enum class Resend { safe, only_if_unsent };

struct HttpAnswer {
  int status = 0;
  std::string body;
  std::string content_type;
  std::string retry_after;
  std::string location;
};

struct HttpCall {
  std::string method = "POST";
  std::string url;
  std::string what;  // "token endpoint", for messages
  std::string form;  // application/x-www-form-urlencoded body (POST)
  std::string authorization;
  Resend resend = Resend::safe;
  std::vector<std::string_view> secrets;  // masked in any message
};

struct Proxy {
  std::string host;
  int port = 0;
  std::string user, password;
};

inline std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// NO_PROXY: comma-separated host names or suffixes (".example.com" or "example.com"), "*" for all.
inline bool no_proxy_matches(const std::string& host, const std::string& list) {
  std::size_t pos = 0;
  while (pos <= list.size()) {
    std::size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    std::string item = list.substr(pos, comma - pos);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty() && item.front() == '[' && item.back() == ']') item = item.substr(1, item.size() - 2);
    if (std::size_t pc = item.rfind(':'); pc != std::string::npos && item.find(':') == pc) item.erase(pc);
    for (char& c : item) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (item == "*") return true;
    if (!item.empty()) {
      if (item.front() == '.') item.erase(0, 1);
      if (host == item) return true;
      // Suffixes match names only: "0.0.1" must not cover 127.0.0.1.
      const bool ip_literal =
          host.find_first_not_of("0123456789.") == std::string::npos || host.find(':') != std::string::npos;
      if (!ip_literal && host.size() > item.size() &&
          host.compare(host.size() - item.size(), item.size(), item) == 0 && host[host.size() - item.size() - 1] == '.')
        return true;
    }
    pos = comma + 1;
  }
  return false;
}

inline std::optional<Proxy> proxy_for(const Config& config, const Url& target) {
  std::string spec = config.proxy;
  if (spec == "direct") return std::nullopt;
  if (spec.empty()) {
    std::string no_proxy = env("NO_PROXY");
    if (no_proxy.empty()) no_proxy = env("no_proxy");
    if (no_proxy_matches(target.host, no_proxy)) return std::nullopt;
    if (target.scheme == "https") {
      spec = env("https_proxy");
      if (spec.empty()) spec = env("HTTPS_PROXY");
    } else {
      spec = env("http_proxy");  // lower case only for http, as curl does (httpoxy)
    }
    if (spec.empty()) return std::nullopt;
  }
  if (spec.find("://") == std::string::npos) spec = "http://" + spec;
  auto u = parse_url(spec);
  if (!u || u->scheme != "http")
    throw Error(ErrorKind::usage, "the proxy must be an http://host:port URL (got '" + sanitize(u ? u->host : "") + "')");
  Proxy p{u->host, u->port, {}, {}};
  if (!u->userinfo.empty()) {
    std::size_t c = u->userinfo.find(':');
    p.user = percent_decode(u->userinfo.substr(0, c), false).value_or("");
    if (c != std::string::npos) p.password = percent_decode(u->userinfo.substr(c + 1), false).value_or("");
  }
  return p;
}

// The trust store: the certificates X509_STORE_set_default_paths() trusts (the default CA file and directory,
// SSL_CERT_FILE / SSL_CERT_DIR honoured as OpenSSL does) plus ca_file, but the default CA file is parsed only
// when an issuer was found neither in ca_file nor in the hashed CA directory (searched by name, one small file
// per lookup). Parsing the whole bundle (~140 certificates) costs ~240M instructions with OpenSSL 3, 40 ms or
// more, and was most of the time of a one-shot token call; a certificate found in the directory is also in the
// bundle on the usual systems (update-ca-certificates writes both).
inline int default_bundle_index() {
  static const int index = X509_STORE_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// Loads the default CA file into the store, once; true when it was loaded by this call.
inline bool load_default_bundle(X509_STORE* store) {
  static std::mutex m;
  std::lock_guard<std::mutex> lk(m);
  auto* file = static_cast<X509_LOOKUP*>(X509_STORE_get_ex_data(store, default_bundle_index()));
  if (!file) return false;
  X509_STORE_set_ex_data(store, default_bundle_index(), nullptr);
  X509_LOOKUP_load_file(file, nullptr, X509_FILETYPE_DEFAULT);
  ERR_clear_error();  // a missing default file is no error (as in X509_STORE_set_default_paths)
  return true;
}

inline int get_issuer_then_bundle(X509** issuer, X509_STORE_CTX* ctx, X509* x) {
  int found = X509_STORE_CTX_get1_issuer(issuer, ctx, x);
  if (found == 0 && load_default_bundle(X509_STORE_CTX_get0_store(ctx))) found = X509_STORE_CTX_get1_issuer(issuer, ctx, x);
  return found;
}

inline STACK_OF(X509) * lookup_certs_then_bundle(X509_STORE_CTX* ctx, const X509_NAME* name) {
  STACK_OF(X509)* found = X509_STORE_CTX_get1_certs(ctx, name);
  if (!found && load_default_bundle(X509_STORE_CTX_get0_store(ctx))) found = X509_STORE_CTX_get1_certs(ctx, name);
  return found;
}

// The default CA directory, as OpenSSL chooses it (SSL_CERT_DIR, ignored in set-user-ID programs, else built in).
inline const char* default_cert_dir() {
#if defined(__GLIBC__)
  const char* dir = ::secure_getenv(X509_get_default_cert_dir_env());
#else
  const char* dir = std::getenv(X509_get_default_cert_dir_env());
#endif
  return dir ? dir : X509_get_default_cert_dir();
}

inline X509_STORE* make_trust_store(const std::string& ca_file) {
  X509_STORE* store = X509_STORE_new();
  if (!store) throw Error(ErrorKind::tls, "could not create an OpenSSL certificate store");
  // The lookups of X509_STORE_set_default_paths(), the file one left empty until an issuer is missing.
  X509_LOOKUP* file = X509_STORE_add_lookup(store, X509_LOOKUP_file());
  X509_LOOKUP* dir = X509_STORE_add_lookup(store, X509_LOOKUP_hash_dir());
  X509_LOOKUP* uri = X509_STORE_add_lookup(store, X509_LOOKUP_store());
  if (!file || !dir || !uri || X509_STORE_set_ex_data(store, default_bundle_index(), file) != 1) {
    X509_STORE_free(store);
    throw Error(ErrorKind::tls, "could not create an OpenSSL certificate store");
  }
  X509_LOOKUP_add_dir(dir, nullptr, X509_FILETYPE_DEFAULT);
  X509_LOOKUP_add_store(uri, nullptr);
  X509_STORE_set_get_issuer(store, get_issuer_then_bundle);
  X509_STORE_set_lookup_certs(store, lookup_certs_then_bundle);
  ERR_clear_error();
  if (!ca_file.empty() && X509_STORE_load_locations(store, ca_file.c_str(), nullptr) != 1) {
    X509_STORE_free(store);
    throw Error(ErrorKind::tls, "could not load CA certificates from '" + ca_file + "'");
  }
  return store;
}

inline std::string effective_ca_file(const Config& config) {
  if (!config.ca_file.empty()) return config.ca_file;
  return env("APS_CA_FILE");
}

// The wait before retry number `attempt` (1 = the first re-send): full jitter, uniform in
// [0, min(max_delay, initial_backoff * 2^(attempt-1))].
inline std::chrono::milliseconds backoff(const RetryPolicy& policy, int attempt) {
  static thread_local std::minstd_rand rng{std::random_device{}()};  // jitter only, not security
  auto cap = std::min<std::int64_t>(policy.max_delay.count(),
                                    policy.initial_backoff.count() << std::clamp(attempt - 1, 0, 20));
  std::uniform_int_distribution<std::int64_t> dist(0, std::max<std::int64_t>(cap, 0));
  return std::chrono::milliseconds(dist(rng));
}

inline std::optional<std::chrono::seconds> parse_retry_after(const std::string& v) {
  if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::chrono::seconds(std::stoll(v));
}

inline const char* httplib_error_text(httplib::Error e) {
  switch (e) {
    case httplib::Error::Connection: return "could not connect";
    case httplib::Error::ConnectionTimeout: return "connecting timed out";
    case httplib::Error::Read: return "the connection failed while reading the answer";
    case httplib::Error::Write: return "the connection failed while sending the request";
    case httplib::Error::SSLConnection: return "the TLS handshake failed";
    case httplib::Error::SSLLoadingCerts: return "the CA certificates could not be loaded";
    case httplib::Error::SSLServerVerification: return "the server's certificate is not trusted (or its name does not match)";
    default: return "the request failed";
  }
}

// One HTTP exchange with the policy of this library: TLS verified, no redirects followed, bounded answer,
// timeouts, proxy, retries as RetryPolicy documents.
// A kept-alive connection for a long-lived object (TokenSource): one TLS context, the trust store loaded
// once, no new handshake per refresh. Not thread-safe: its owner serialises calls.
struct HttpSession {
  std::string key;  // origin + proxy: a different one replaces the client
  std::unique_ptr<httplib::Client> client;
};

#ifndef _WIN32
// httplib 0.11 clears SSL_MODE_AUTO_RETRY on its TLS connections, and when SSL_read stops at a TLS 1.3
// post-handshake message it sleeps 1 ms before reading on. A server sends its NewSessionTickets (two, with
// OpenSSL) right after the handshake, before the answer: 2 ms more per connection, a fifth of a token call on
// loopback. This info callback runs when OpenSSL has handled such a message: if the whole next TLS record is
// already in the socket's receive queue, AUTO_RETRY lets SSL_read go on to it at once; otherwise it stays off,
// so no read ever blocks where httplib would not have waited (its read timeout stays what it was).
inline void read_on_when_buffered(const SSL* ssl, int where, int) {
  if (!(where & SSL_CB_EXIT) || !SSL_is_init_finished(ssl)) return;
  bool whole = false;
  unsigned char head[5];
  int fd = SSL_get_rfd(ssl), queued = 0;
  if (fd >= 0 && ::ioctl(fd, FIONREAD, &queued) == 0 && queued >= 5 &&
      ::recv(fd, head, sizeof head, MSG_PEEK | MSG_DONTWAIT) == 5 && head[0] >= 20 && head[0] <= 23 && head[1] == 3)
    whole = queued >= 5 + (head[3] << 8 | head[4]);
  if (whole) SSL_set_mode(const_cast<SSL*>(ssl), SSL_MODE_AUTO_RETRY);
  else SSL_clear_mode(const_cast<SSL*>(ssl), SSL_MODE_AUTO_RETRY);
}
#endif

inline std::unique_ptr<httplib::Client> make_client(const Config& config, const Url& url,
                                                    const std::optional<Proxy>& proxy, bool keep_alive) {
  auto client = std::make_unique<httplib::Client>(url.origin());
  client->set_connection_timeout(std::chrono::duration_cast<std::chrono::microseconds>(config.connect_timeout));
  client->set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(config.read_timeout));
  client->set_write_timeout(std::chrono::duration_cast<std::chrono::microseconds>(config.read_timeout));
  client->set_follow_location(false);
  client->set_keep_alive(keep_alive);
  // httplib writes a request's head and body separately: with Nagle's algorithm the body waits for the ACK of
  // the head, which a server delays (40 ms on Linux) while it waits for the body.
  client->set_tcp_nodelay(true);
  if (url.scheme == "https") {
    client->enable_server_certificate_verification(true);
    client->set_ca_cert_store(make_trust_store(effective_ca_file(config)));
#ifndef _WIN32
    // Without a CA path of its own, httplib loads the default paths into the store at the first handshake,
    // parsing the whole bundle again: give it the default CA directory, which the store already searches.
    client->set_ca_cert_path("", default_cert_dir());
    SSL_CTX_set_info_callback(client->ssl_context(), read_on_when_buffered);
#endif
  }
  if (proxy) {
    client->set_proxy(proxy->host, proxy->port);
    if (!proxy->user.empty()) client->set_proxy_basic_auth(proxy->user, proxy->password);
  }
  return client;
}

#ifndef _WIN32
// cpp-httplib 0.11 waits for ever when a proxy refuses a CONNECT (any answer but 200 that closes the connection:
// it locks a mutex it already holds), and that is how proxies refuse: 407 wrong credentials, 403 port not
// allowed, 502 target unreachable. So the tunnel is first asked for here, on a socket of our own under the
// connect and read timeouts, and httplib only goes through a proxy that said yes. Returns the proxy's status,
// or 0 when the proxy could not be asked (httplib then meets and reports the same failure).
inline int proxy_tunnel_status(const Config& config, const Proxy& proxy, const Url& url) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(proxy.host.c_str(), std::to_string(proxy.port).c_str(), &hints, &found) != 0) return 0;
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> owner(found, ::freeaddrinfo);
  auto left_ms = [](Clock::time_point until) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(ms, 0, 3600000));
  };
  int fd = -1;
  const auto connect_until = Clock::now() + config.connect_timeout;
  for (addrinfo* ai = found; ai && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0 || ::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) continue;
    pollfd p{fd, POLLOUT, 0};
    int err = errno == EINPROGRESS && ::poll(&p, 1, left_ms(connect_until)) == 1 ? 0 : -1;
    socklen_t len = sizeof err;
    if (err != 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  if (fd < 0) return 0;
  const std::string target = url.host_for_url() + ":" + std::to_string(url.port);
  std::string out = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n";
  if (!proxy.user.empty() && !proxy.password.empty())  // as httplib sends them
    out += "Proxy-Authorization: Basic " + base64(proxy.user + ":" + proxy.password, false) + "\r\n";
  out += "\r\n";
  const auto until = Clock::now() + config.read_timeout;
  std::string in;
  for (std::size_t sent = 0; sent < out.size();) {
    ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    pollfd p{fd, POLLOUT, 0};
    if (n > 0) sent += static_cast<std::size_t>(n);
    else if (n < 0 && (errno == EAGAIN || errno == EINTR) && ::poll(&p, 1, left_ms(until)) == 1) continue;
    else break;
  }
  while (in.find("\r\n") == std::string::npos && in.size() < 4096) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, left_ms(until)) != 1) break;
    char buf[1024];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  // "HTTP/1.x NNN reason"
  if (in.size() < 12 || in.compare(0, 5, "HTTP/") != 0 || in[8] != ' ') return 0;
  int status = 0;
  for (std::size_t i = 9; i < 12; ++i) {
    if (in[i] < '0' || in[i] > '9') return 0;
    status = status * 10 + (in[i] - '0');
  }
  return status;
}
#endif

inline HttpAnswer http_send(const Config& config, const HttpCall& call, HttpSession* session = nullptr) {
  Url url = require_url(call.url, call.what.c_str());
  std::optional<Proxy> proxy = proxy_for(config, url);
  const int attempts = std::max(1, config.retry.max_attempts);
  for (int attempt = 1;; ++attempt) {
    std::unique_ptr<httplib::Client> own;
    httplib::Client* client;
    if (session) {
      std::string key = url.origin() + (proxy ? " via " + proxy->host + ":" + std::to_string(proxy->port) : "");
      if (!session->client || session->key != key) {
        session->client = make_client(config, url, proxy, true);
        session->key = key;
      }
#ifndef _WIN32
      else if (session->client->is_socket_open()) {
        // Nothing may arrive on an idle kept-alive connection: anything readable means the server closed it
        // (over TLS its close_notify, which httplib 0.11 takes for a live socket). Drop it, so the request goes
        // out on a new connection instead of failing where it cannot be re-sent (a refresh).
        pollfd idle{session->client->socket(), POLLIN, 0};
        if (::poll(&idle, 1, 0) != 0) session->client->stop();
      }
#endif
      client = session->client.get();
    } else {
      own = make_client(config, url, proxy, false);
      client = own.get();
    }
    httplib::Request req;
    req.method = call.method;
    req.path = url.target();
    req.set_header("Accept", "application/json");
    req.set_header("User-Agent", "aps_auth/" + std::to_string(APS_AUTH_VERSION_MAJOR) + "." +
                                     std::to_string(APS_AUTH_VERSION_MINOR) + "." +
                                     std::to_string(APS_AUTH_VERSION_PATCH));
    if (!call.authorization.empty()) req.set_header("Authorization", call.authorization);
    if (call.method == "POST") {
      req.set_header("Content-Type", "application/x-www-form-urlencoded");
      req.body = call.form;
    }
    if (proxy && url.scheme == "https") {
      // httplib 0.11 also puts the proxy credentials on the request inside the tunnel, for the server to read;
      // a header of our own (empty) stops that. The CONNECT itself still carries them.
      req.set_header("Proxy-Authorization", "");
#ifndef _WIN32
      int refused = proxy_tunnel_status(config, *proxy, url);
      if (refused != 0 && refused != 200) {
        // The request never left: re-sending is safe for every call.
        if ((refused == 429 || refused >= 500) && attempt < attempts) {
          std::this_thread::sleep_for(backoff(config.retry, attempt));
          continue;
        }
        ErrorDetails d;
        d.status = refused;
        throw Error(ErrorKind::network,
                    call.what + " (" + url.host_for_url() + ":" + std::to_string(url.port) + "): the proxy " +
                        proxy->host + ":" + std::to_string(proxy->port) + " refused the tunnel with HTTP " +
                        std::to_string(refused) +
                        (refused == 407 || refused == 401
                             ? " (proxy authentication required or refused) [check the user and password in the "
                               "proxy URL, http://user:password@host:port]"
                             : ""),
                    d);
      }
#endif
    }
    HttpAnswer answer;
    bool too_big = false;
    req.response_handler = [&](const httplib::Response& r) {
      answer.status = r.status;
      answer.content_type = r.get_header_value("Content-Type");
      answer.retry_after = r.get_header_value("Retry-After");
      answer.location = r.get_header_value("Location");
      return true;
    };
    req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
      if (answer.body.size() + n > static_cast<std::size_t>(APS_AUTH_MAX_RESPONSE_BYTES)) {
        too_big = true;
        return false;
      }
      answer.body.append(data, n);
      return true;
    };
    auto started = Clock::now();
    httplib::Result res = client->send(req);
    if (res && answer.status == 0) {  // an answer httplib read itself (a proxy's to CONNECT): keep its status
      answer.status = res->status;
      answer.content_type = res->get_header_value("Content-Type");
    }
    const std::string where = call.what + " (" + url.host_for_url() + ":" + std::to_string(url.port) + ")";
    if (too_big)
      throw Error(ErrorKind::bad_response, where + " answered more than " +
                                               std::to_string(APS_AUTH_MAX_RESPONSE_BYTES) + " bytes; refused");
    bool retry = false;
    std::chrono::milliseconds delay{0};
    if (!res) {
      httplib::Error e = res.error();
      // Connection failures mean the request never left: safe to send again, even a refresh.
      bool unsent = e == httplib::Error::Connection || e == httplib::Error::ConnectionTimeout;
      bool tls = e == httplib::Error::SSLConnection || e == httplib::Error::SSLServerVerification ||
                 e == httplib::Error::SSLLoadingCerts;
      if (!tls && attempt < attempts && (unsent || call.resend == Resend::safe)) {
        retry = true;
        delay = backoff(config.retry, attempt);
      } else {
        ErrorKind kind = tls ? ErrorKind::tls : ErrorKind::network;
        if (e == httplib::Error::ConnectionTimeout ||
            (e == httplib::Error::Read && Clock::now() - started >= config.read_timeout))
          kind = ErrorKind::timeout;
        std::string msg = where + ": " + httplib_error_text(e);
        if (kind == ErrorKind::timeout && e == httplib::Error::Read)
          msg = where + ": no answer within " + std::to_string(config.read_timeout.count()) + " ms";
        if (proxy) msg += " (through proxy " + proxy->host + ":" + std::to_string(proxy->port) + ")";
        if (!unsent && call.resend == Resend::only_if_unsent)
          msg += "; not sent again because the server may already have acted on it";
        throw Error(kind, msg);
      }
    } else {
      int s = answer.status;
      bool busy = s == 429 || s == 503;
      bool server_error = s == 500 || s == 502 || s == 504;
      if (attempt < attempts && (busy || (server_error && call.resend == Resend::safe))) {
        retry = true;
        auto ra = parse_retry_after(answer.retry_after);
        delay = ra ? std::min<std::chrono::milliseconds>(*ra, config.retry.max_delay) : backoff(config.retry, attempt);
      }
    }
    if (!retry) return answer;
    std::this_thread::sleep_for(delay);
  }
}

// Turns a non-2xx answer into the typed error, keeping every field of both APS error shapes.
[[noreturn]] inline void throw_http_error(const HttpCall& call, const HttpAnswer& a) {
  ErrorDetails d;
  d.status = a.status;
  if (auto ra = parse_retry_after(a.retry_after)) d.retry_after = *ra;
  std::string msg = call.what + " answered HTTP " + std::to_string(a.status);
  ErrorKind kind = ErrorKind::http;
  if (a.status >= 300 && a.status < 400) {
    msg += " (a redirect, not followed";
    if (auto loc = parse_url(a.location)) msg += ", to " + loc->host;
    msg += ")";
    throw Error(kind, msg, d);
  }
  if (auto j = parse_json_object(a.body)) {
    d.error = string_field(*j, "error");
    d.error_description = string_field(*j, "error_description");
    d.error_code = string_field(*j, "errorCode");
    d.developer_message = string_field(*j, "developerMessage");
    d.user_message = string_field(*j, "userMessage");
    d.more_info = string_field(*j, "more info");
    if (d.more_info.empty()) d.more_info = string_field(*j, "moreInfo");
    for (auto* f : {&d.error, &d.error_description, &d.error_code, &d.developer_message, &d.user_message, &d.more_info})
      *f = sanitize(*f, call.secrets, 1000);
    if (!d.error.empty()) {
      kind = d.error == "access_denied" ? ErrorKind::access_denied : ErrorKind::oauth;
      msg += " " + sanitize(d.error, {}, 80);
      if (!d.error_description.empty()) msg += ": " + sanitize(d.error_description);
    } else if (!d.error_code.empty() || !d.developer_message.empty()) {
      if (!d.error_code.empty()) msg += " " + sanitize(d.error_code, {}, 40);
      if (!d.developer_message.empty()) msg += ": " + sanitize(d.developer_message);
    }
  } else {
    msg += " with a non-JSON body";
    if (!a.content_type.empty()) msg += " (" + sanitize(a.content_type, {}, 60) + ")";
  }
  // Hints for the failures people hit most.
  if (d.error_code == "AUTH-001") msg += " [the app is not enabled for this API]";
  else if (d.error_code == "AUTH-003" || a.status == 401) msg += " [check the client id and secret]";
  else if (d.error_code == "AUTH-004") msg += " [invalid scopes for this app]";
  else if (d.error == "invalid_grant") msg += " [the code or refresh token is expired, used or revoked; sign in again]";
  else if (a.status == 429) msg += " [rate limited; retry later]";
  else if (a.status == 407) msg += " [the proxy wants credentials: http://user:password@host:port]";
  throw Error(kind, msg, d);
}

inline json json_answer(const HttpCall& call, const HttpAnswer& a) {
  if (a.status < 200 || a.status >= 300) throw_http_error(call, a);
  auto j = parse_json_object(a.body);
  if (!j) {
    std::string what = a.body.empty() ? "an empty body" : "a body that is not a JSON object";
    if (!a.content_type.empty()) what += " (" + sanitize(a.content_type, {}, 60) + ")";
    throw Error(ErrorKind::bad_response,
                call.what + " answered HTTP " + std::to_string(a.status) + " with " + what +
                    "; a proxy, captive portal or outage page?",
                ErrorDetails{a.status, {}, {}, {}, {}, {}, {}, {}});
  }
  return *j;
}

inline std::string basic_authorization(const std::string& id, const std::string& secret) {
  return "Basic " + base64(form_encode(id) + ":" + form_encode(secret), false);
}

inline void require_client_id(const Config& config) {
  if (config.client_id.empty()) throw Error(ErrorKind::usage, "no client id (Config::client_id)");
}

// Client authentication: Basic for confidential clients, client_id in the body for public ones. Never both.
inline void authenticate(const Config& config, HttpCall& call, Params& form) {
  require_client_id(config);
  if (!config.client_secret.empty()) {
    call.authorization = basic_authorization(config.client_id, config.client_secret);
    call.secrets.push_back(config.client_secret);
  } else {
    form.emplace_back("client_id", config.client_id);
  }
}

constexpr std::int64_t kMaxExpiresIn = 366LL * 24 * 3600;

// Epoch seconds from outside (token files, introspection, id_token claims) as a time_point, clamped to what a
// 64-bit nanosecond system_clock holds (~year 2262): seconds(x) -> ns overflows otherwise (found by fuzz/token_json).
constexpr std::int64_t kMaxEpochSeconds = 9000000000LL;
inline std::chrono::system_clock::time_point from_epoch_seconds(std::int64_t s) {
  return std::chrono::system_clock::time_point(std::chrono::seconds(std::clamp(s, -kMaxEpochSeconds, kMaxEpochSeconds)));
}
inline std::chrono::system_clock::time_point from_epoch_seconds(const json& integer) {
  bool huge = integer.is_number_unsigned() && integer.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX);
  return from_epoch_seconds(huge ? INT64_MAX : integer.get<std::int64_t>());
}

inline Token parse_token(const json& j, std::chrono::system_clock::time_point sent_at, const std::string& what) {
  Token t;
  t.access_token = string_field(j, "access_token");
  if (t.access_token.empty())
    throw Error(ErrorKind::bad_response, what + " answered without an access_token");
  std::string type = string_field(j, "token_type");
  if (!type.empty()) t.token_type = type;
  t.refresh_token = string_field(j, "refresh_token");
  t.id_token = string_field(j, "id_token");
  t.scope = string_field(j, "scope");
  std::int64_t expires_in = 3600;  // RFC 6749: optional; APS always sends it
  if (auto it = j.find("expires_in"); it != j.end()) {
    if (it->is_number_integer() || it->is_number_unsigned()) {
      if (it->is_number_unsigned() && it->get<std::uint64_t>() > static_cast<std::uint64_t>(kMaxExpiresIn))
        expires_in = kMaxExpiresIn;
      else
        expires_in = it->get<std::int64_t>();
    } else if (it->is_number_float()) {
      double d = it->get<double>();
      if (!(d == d)) throw Error(ErrorKind::bad_response, what + " answered an invalid expires_in");
      expires_in = d > static_cast<double>(kMaxExpiresIn) ? kMaxExpiresIn : d < 0 ? -1 : static_cast<std::int64_t>(d);
    } else if (it->is_string() && !it->get<std::string>().empty() && it->get<std::string>().size() <= 12 &&
               it->get<std::string>().find_first_not_of("0123456789") == std::string::npos) {
      expires_in = std::stoll(it->get<std::string>());  // some servers quote numbers
    } else {
      throw Error(ErrorKind::bad_response, what + " answered an expires_in that is not a number");
    }
    if (expires_in < 0) throw Error(ErrorKind::bad_response, what + " answered a negative expires_in");
    expires_in = std::min(expires_in, kMaxExpiresIn);  // a huge lifetime is capped, not trusted
  }
  t.expires_in = std::chrono::seconds(expires_in);
  t.expires_at = sent_at + t.expires_in;
  return t;
}

inline Token token_call(const Config& config, Params form, Resend resend, std::vector<std::string_view> secrets,
                        HttpSession* session = nullptr) {
  HttpCall call;
  call.url = config.endpoints.token;
  call.what = "token endpoint";
  call.resend = resend;
  call.secrets = std::move(secrets);
  authenticate(config, call, form);
  call.form = encode_params(form, true);
  auto sent_at = std::chrono::system_clock::now();
  HttpAnswer a = http_send(config, call, session);
  return parse_token(json_answer(call, a), sent_at, call.what);
}

// ---- answers of the other endpoints (pure, so they can be fuzzed) ------------------------------------------

inline Introspection parse_introspection(const json& j) {
  Introspection r;
  auto active = j.find("active");
  if (active == j.end() || !active->is_boolean())
    throw Error(ErrorKind::bad_response, "introspect endpoint answered without a boolean 'active'");
  r.active = active->get<bool>();
  r.scope = string_field(j, "scope");
  r.client_id = string_field(j, "client_id");
  r.userid = string_field(j, "userid");
  if (auto exp = j.find("exp"); exp != j.end() && exp->is_number_integer())
    r.expires_at = from_epoch_seconds(*exp);
  r.json = j.dump();
  return r;
}

inline UserInfo parse_userinfo(const json& j) {
  UserInfo u;
  u.sub = string_field(j, "sub");
  u.name = string_field(j, "name");
  u.email = string_field(j, "email");
  u.preferred_username = string_field(j, "preferred_username");
  u.json = j.dump();
  return u;
}

// The document's issuer must equal the one asked for (OIDC Discovery §4.3), and every endpoint must be a URL
// this library would call (https, or http on loopback).
inline Endpoints parse_discovery(const json& j, const std::string& issuer) {
  const std::string base = trim_slash(issuer);
  std::string doc_issuer = string_field(j, "issuer");
  if (trim_slash(doc_issuer) != base)
    throw Error(ErrorKind::bad_response,
                "discovery document names issuer '" + sanitize(doc_issuer) + "', expected '" + sanitize(base) + "'");
  auto endpoint = [&](std::initializer_list<const char*> names, bool required) {
    for (const char* n : names) {
      std::string v = string_field(j, n);
      if (!v.empty()) {
        require_url(v, n);
        return v;
      }
    }
    if (required) throw Error(ErrorKind::bad_response, std::string("discovery document has no ") + *names.begin());
    return std::string();
  };
  Endpoints e;
  e.issuer = doc_issuer;
  e.authorize = endpoint({"authorization_endpoint"}, true);
  e.token = endpoint({"token_endpoint"}, true);
  e.revoke = endpoint({"revocation_endpoint", "revoke_endpoint"}, false);
  e.introspect = endpoint({"introspection_endpoint"}, false);
  e.jwks = endpoint({"jwks_uri"}, false);
  e.logout = endpoint({"end_session_endpoint"}, false);
  e.userinfo = endpoint({"userinfo_endpoint"}, false);
  auto iss = j.find("authorization_response_iss_parameter_supported");
  e.authorization_response_iss_parameter_supported = iss != j.end() && iss->is_boolean() && iss->get<bool>();
  return e;
}

// ---- browser pages -----------------------------------------------------------------------------------------

inline std::string page(const std::string& title, const std::string& message_html, bool ok) {
  return "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
         "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>" +
         html_escape(title) +
         " - aps_auth</title><style>"
         "body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;"
         "background:#f3f5f8;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1b1f24}"
         ".card{background:#fff;max-width:28rem;margin:1rem;padding:2.2rem 2.4rem;border-radius:14px;"
         "box-shadow:0 6px 28px rgba(20,30,50,.12);text-align:center}"
         ".mark{width:3.2rem;height:3.2rem;border-radius:50%;margin:0 auto 1rem;display:flex;align-items:center;"
         "justify-content:center;font-size:1.8rem;color:#fff;background:" +
         std::string(ok ? "#1f9d55" : "#c8372d") +
         "}h1{font-size:1.35rem;margin:0 0 .6rem}p{line-height:1.5;margin:.4rem 0;color:#3d4650;text-wrap:pretty}"
         ".product{margin-top:1.6rem;font-size:.8rem;color:#8a939d;letter-spacing:.04em}"
         "code{background:#f0f2f5;padding:.1rem .3rem;border-radius:4px;word-break:break-all}"
         "</style></head><body><main class=\"card\"><div class=\"mark\">" +
         std::string(ok ? "&#10003;" : "!") + "</div><h1>" + html_escape(title) + "</h1>" + message_html +
         "<div class=\"product\">aps_auth &middot; Autodesk Platform Services sign-in</div></main></body></html>";
}

#ifndef _WIN32
// Descriptor helpers that are atomic on Linux and portable elsewhere (macOS lacks pipe2/accept4/SOCK_CLOEXEC).
inline bool set_fd_flags(int fd, bool nonblock) {
  return ::fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 && (!nonblock || ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
}

inline bool make_pipe(int fds[2], bool nonblock) {
#ifdef __linux__
  return ::pipe2(fds, O_CLOEXEC | (nonblock ? O_NONBLOCK : 0)) == 0;
#else
  if (::pipe(fds) != 0) return false;
  return set_fd_flags(fds[0], nonblock) && set_fd_flags(fds[1], nonblock);
#endif
}

inline int make_socket(int family) {
#ifdef __linux__
  return ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
#else
  int fd = ::socket(family, SOCK_STREAM, 0);
  if (fd >= 0 && !set_fd_flags(fd, true)) {
    ::close(fd);
    return -1;
  }
  return fd;
#endif
}

inline int accept_connection(int listen_fd) {
#ifdef __linux__
  return ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
#else
  int fd = ::accept(listen_fd, nullptr, nullptr);
  if (fd >= 0) {
    set_fd_flags(fd, true);
#ifdef SO_NOSIGPIPE
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
  }
  return fd;
#endif
}

#ifndef MSG_NOSIGNAL
#define APS_AUTH_MSG_NOSIGNAL 0
#else
#define APS_AUTH_MSG_NOSIGNAL MSG_NOSIGNAL
#endif
#endif

// ---- browser launch ----------------------------------------------------------------------------------------

// Splits a command line on spaces, honouring '...' and "..." quotes (no shell is involved).
inline std::vector<std::string> split_command(const std::string& cmd) {
  std::vector<std::string> out;
  std::string cur;
  bool have = false;
  char quote = 0;
  for (char c : cmd) {
    if (quote) {
      if (c == quote) quote = 0;
      else cur += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      have = true;
    } else if (c == ' ' || c == '\t') {
      if (have || !cur.empty()) out.push_back(cur);
      cur.clear();
      have = false;
    } else {
      cur += c;
    }
  }
  if (have || !cur.empty()) out.push_back(cur);
  return out;
}

#ifndef _WIN32
// Starts argv without a shell and without waiting for it: double fork, so no zombie is left, and a
// close-on-exec pipe tells whether exec succeeded.
inline bool spawn_detached(const std::vector<std::string>& args) {
  if (args.empty()) return false;
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int fds[2];
  if (!make_pipe(fds, false)) return false;
  pid_t child = fork();
  if (child < 0) {
    close(fds[0]);
    close(fds[1]);
    return false;
  }
  if (child == 0) {
    close(fds[0]);
    pid_t grandchild = fork();
    if (grandchild != 0) _exit(grandchild < 0 ? 1 : 0);
    setsid();
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {  // keep the caller's stdout clean (it may be printing JSON)
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    execvp(argv[0], argv.data());
    int err = errno;
    ssize_t ignored = write(fds[1], &err, sizeof err);
    (void)ignored;
    _exit(127);
  }
  close(fds[1]);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  int err = 0;
  ssize_t n;
  do {
    n = read(fds[0], &err, sizeof err);
  } while (n < 0 && errno == EINTR);
  close(fds[0]);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 && n == 0;
}
#endif

// ---- the loopback listener ---------------------------------------------------------------------------------

// What the listener does with one request head: the status and page to answer, and whether the wait ends
// (with a code, or with an error). Pure, so it can be unit-tested and fuzzed without sockets.
struct CallbackOutcome {
  int status = 400;
  std::string html;
  std::string code;                    // non-empty: the callback we wait for
  std::optional<Error> failure;        // set: the wait ends with this error
};

inline CallbackOutcome evaluate_callback(std::string_view head, std::string_view callback_path,
                                         const AuthorizationRequest& request) {
  CallbackOutcome out;
  auto bad = [&](int status, const char* title, const char* words) {
    out.status = status;
    out.html = page(title, words, false);
    return out;
  };
  std::string_view line = head.substr(0, head.find("\r\n"));
  std::size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 <= sp1)
    return bad(400, "Bad request", "<p>The browser sent a request this page cannot read.</p>");
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  if (path != callback_path)
    return bad(404, "Not found", "<p>Nothing here. The sign-in is waiting on another address.</p>");
  if (method != "GET") return bad(405, "Not supported", "<p>The sign-in answer must arrive as a GET request.</p>");
  auto params = parse_query(query);
  // A parameter given twice is ambiguous (RFC 6749 §3.1): the request is malformed.
  auto single = [&](const char* name, std::string& value) {
    int n = 0;
    for (const auto& kv : *params)
      if (kv.first == name) {
        value = kv.second;
        ++n;
      }
    return n <= 1;
  };
  std::string state, code, error, description, iss;
  if (!params || !single("state", state) || !single("code", code) || !single("error", error) ||
      !single("error_description", description) || !single("iss", iss))
    return bad(400, "Bad request", "<p>The sign-in response was malformed and was ignored.</p>");
  // The state is checked before anything else: without it the response is not ours and cannot end the wait,
  // or anyone on this machine could cancel a sign-in.
  if (request.state.empty() || !constant_time_equal(state, request.state))
    return bad(400, "This sign-in response is not for this window",
               "<p>This response does not belong to the sign-in in progress, so it was ignored.</p>"
               "<p>If you started a sign-in, finish it in the window it opened, or start it again.</p>");
  if ((!iss.empty() || request.require_iss) && trim_slash(iss) != trim_slash(request.issuer)) {
    bad(400, "Sign-in failed", "<p>The response came from an unexpected server and was refused.</p>");
    out.failure = Error(ErrorKind::state_mismatch,
                        (iss.empty() ? "the authorization response has no iss, but the issuer '" + request.issuer +
                                           "' advertises authorization_response_iss_parameter_supported"
                                     : "the authorization response's iss '" + sanitize(iss, {}, 200) +
                                           "' is not the expected issuer '" + request.issuer + "'") +
                            " (RFC 9207 mix-up protection)");
    return out;
  }
  if (!error.empty()) {
    bool denied = error == "access_denied";
    std::string words = denied ? "<p>Access was not granted, so the application cannot sign in.</p>"
                               : "<p>The sign-in service reported a problem.</p>";
    words += "<p><code>" + html_escape(sanitize(error, {}, 100)) + "</code>";
    if (!description.empty()) words += " " + html_escape(sanitize(description, {}, 500));
    words += "</p><p>You can close this window and try again.</p>";
    out.status = 200;
    out.html = page(denied ? "Sign-in cancelled" : "Sign-in failed", words, false);
    ErrorDetails d;
    d.error = sanitize(error, {}, 100);
    d.error_description = sanitize(description, {}, 1000);
    out.failure = Error(denied ? ErrorKind::access_denied : ErrorKind::oauth,
                        "the authorization server answered " + d.error +
                            (d.error_description.empty() ? "" : ": " + sanitize(description)),
                        d);
    return out;
  }
  if (code.empty()) {
    bad(400, "Sign-in failed", "<p>The response carried no authorization code.</p>");
    out.failure = Error(ErrorKind::bad_response, "the callback carried the right state but no code");
    return out;
  }
  out.status = 200;
  out.html = page("Signed in", "<p>You are signed in. You can close this window and return to the application.</p>",
                  true);
  out.code = std::move(code);
  return out;
}

#ifndef _WIN32
struct Connection {
  int fd = -1;
  Clock::time_point deadline;
  std::string in;
};

inline void close_fd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

// Best effort: the page is small and the socket buffer empty, but a client that never reads must not
// stall the loop, so give up after a short while.
inline void send_all(int fd, const std::string& data) {
  std::size_t off = 0;
  auto until = Clock::now() + std::chrono::seconds(2);
  while (off < data.size() && Clock::now() < until) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, APS_AUTH_MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, 100);
    } else {
      break;
    }
  }
}

inline void respond(int fd, int status, const std::string& html) {
  const char* reason = status == 200 ? "OK" : status == 404 ? "Not Found" : status == 405 ? "Method Not Allowed"
                     : status == 431 ? "Request Header Fields Too Large" : "Bad Request";
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                    "\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nPragma: no-cache\r\n"
                    "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n"
                    "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n"
                    "Content-Length: " +
                    std::to_string(html.size()) + "\r\n\r\n" + html;
  send_all(fd, out);
  shutdown(fd, SHUT_WR);
}
#endif

}  // namespace detail

// ================================================================================================================
// Public functions
// ================================================================================================================

APS_AUTH_FUNC const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::network: return "network";
    case ErrorKind::tls: return "tls";
    case ErrorKind::timeout: return "timeout";
    case ErrorKind::http: return "http";
    case ErrorKind::oauth: return "oauth";
    case ErrorKind::state_mismatch: return "state_mismatch";
    case ErrorKind::access_denied: return "access_denied";
    case ErrorKind::bad_response: return "bad_response";
    case ErrorKind::io: return "io";
    case ErrorKind::usage: return "usage";
    case ErrorKind::cancelled: return "cancelled";
  }
  return "unknown";
}

APS_AUTH_FUNC Error::Error(ErrorKind kind, const std::string& message, ErrorDetails details)
    : std::runtime_error(std::string("[aps_auth.") + to_string(kind) + "] " + message),
      kind_(kind),
      details_(std::move(details)) {}

APS_AUTH_FUNC std::string version() {
  return std::to_string(APS_AUTH_VERSION_MAJOR) + "." + std::to_string(APS_AUTH_VERSION_MINOR) + "." +
         std::to_string(APS_AUTH_VERSION_PATCH);
}

APS_AUTH_FUNC Endpoints Endpoints::from_base_url(std::string_view base_url) {
  std::string base = detail::trim_slash(base_url);
  detail::require_url(base, "base URL");
  // The APS paths are appended: a query or fragment would swallow them (found by fuzz/url).
  if (base.find_first_of("?#") != std::string::npos)
    throw Error(ErrorKind::usage, "base URL '" + detail::sanitize(base) + "' has a query or fragment");
  Endpoints e;
  if (base == Endpoints{}.issuer) return e;
  e.issuer = base;
  e.authorize = base + "/authentication/v2/authorize";
  e.token = base + "/authentication/v2/token";
  e.revoke = base + "/authentication/v2/revoke";
  e.introspect = base + "/authentication/v2/introspect";
  e.jwks = base + "/authentication/v2/keys";
  e.logout = base + "/authentication/v2/logout";
  e.userinfo = base + "/userinfo";
  return e;
}

APS_AUTH_FUNC bool Token::expired(std::chrono::seconds margin) const {
  return access_token.empty() || std::chrono::system_clock::now() + margin >= expires_at;
}

APS_AUTH_FUNC std::string Token::to_json() const {
  using namespace std::chrono;
  detail::json j;
  j["access_token"] = access_token;
  j["token_type"] = token_type;
  j["expires_in"] = expires_in.count();
  j["expires_at"] = duration_cast<seconds>(expires_at.time_since_epoch()).count();
  if (!refresh_token.empty()) j["refresh_token"] = refresh_token;
  if (!id_token.empty()) j["id_token"] = id_token;
  if (!scope.empty()) j["scope"] = scope;
  try {
    return j.dump();
  } catch (const detail::json::exception&) {  // invalid UTF-8 (found by fuzz/token_json)
    throw Error(ErrorKind::usage, "the token has a field that is not valid UTF-8; it cannot be stored as JSON");
  }
}

APS_AUTH_FUNC Token Token::from_json(std::string_view text) {
  auto j = detail::parse_json_object(text);
  if (!j) throw Error(ErrorKind::bad_response, "token JSON is not a JSON object");
  auto now = std::chrono::system_clock::now();
  Token t = detail::parse_token(*j, now, "token JSON");
  if (auto it = j->find("expires_at"); it != j->end()) {
    if (!it->is_number_integer()) throw Error(ErrorKind::bad_response, "token JSON has a non-integer expires_at");
    t.expires_at = detail::from_epoch_seconds(*it);
  }
  return t;
}

APS_AUTH_FUNC std::string random_urlsafe(std::size_t bytes) {
  std::string raw(bytes, '\0');
  if (bytes > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(&raw[0]), static_cast<int>(bytes)) != 1)
    throw Error(ErrorKind::io, "OpenSSL RAND_bytes failed: no secure randomness");
  return detail::base64(raw, true);
}

APS_AUTH_FUNC std::string pkce_challenge(std::string_view code_verifier) {
  return detail::base64(detail::sha256(code_verifier), true);
}

APS_AUTH_FUNC AuthorizationRequest authorization_request(const Config& config, const AuthorizeOptions& options,
                                                         const std::string& redirect_uri) {
  detail::require_client_id(config);
  AuthorizationRequest r;
  r.redirect_uri = redirect_uri.empty() ? config.callback_url : redirect_uri;
  detail::require_url(r.redirect_uri, "callback URL");
  detail::Url endpoint = detail::require_url(config.endpoints.authorize, "authorize endpoint");
  r.state = random_urlsafe(16);
  r.code_verifier = random_urlsafe(32);
  r.code_challenge = pkce_challenge(r.code_verifier);
  if (detail::has_scope(config.scopes, "openid")) r.nonce = random_urlsafe(16);
  r.issuer = config.endpoints.issuer;
  r.require_iss = config.endpoints.authorization_response_iss_parameter_supported;
  detail::Params q = {{"response_type", "code"},
                      {"client_id", config.client_id},
                      {"redirect_uri", r.redirect_uri},
                      {"scope", detail::join(config.scopes, ' ')},
                      {"state", r.state},
                      {"code_challenge", r.code_challenge},
                      {"code_challenge_method", "S256"}};
  if (!r.nonce.empty()) q.emplace_back("nonce", r.nonce);
  if (!options.prompt.empty()) q.emplace_back("prompt", options.prompt);
  if (!options.response_mode.empty()) q.emplace_back("response_mode", options.response_mode);
  if (!options.authoptions.empty()) q.emplace_back("authoptions", options.authoptions);
  std::string base = config.endpoints.authorize;
  r.url = base + (endpoint.query.empty() ? "?" : "&") + detail::encode_params(q, false);
  return r;
}

APS_AUTH_FUNC Token exchange_code(const Config& config, const AuthorizationRequest& request, const std::string& code) {
  if (code.empty()) throw Error(ErrorKind::usage, "no authorization code to exchange");
  return detail::token_call(config,
                            {{"grant_type", "authorization_code"},
                             {"code", code},
                             {"redirect_uri", request.redirect_uri},
                             {"code_verifier", request.code_verifier}},
                            detail::Resend::only_if_unsent, {code, request.code_verifier});
}

namespace detail {
inline Token refresh_grant(const Config& config, const std::string& refresh_token,
                           const std::vector<std::string>& scopes, HttpSession* session) {
  if (refresh_token.empty()) throw Error(ErrorKind::usage, "no refresh token");
  Params form = {{"grant_type", "refresh_token"}, {"refresh_token", refresh_token}};
  if (!scopes.empty()) form.emplace_back("scope", join(scopes, ' '));
  Token t = token_call(config, std::move(form), Resend::only_if_unsent, {refresh_token}, session);
  if (t.refresh_token.empty()) t.refresh_token = refresh_token;  // a server that does not rotate
  return t;
}

inline Token client_credentials_grant(const Config& config, HttpSession* session) {
  if (config.client_secret.empty())
    throw Error(ErrorKind::usage, "client credentials (2-legged) need a client secret");
  return token_call(config, {{"grant_type", "client_credentials"}, {"scope", join(config.scopes, ' ')}},
                    Resend::safe, {}, session);
}
}  // namespace detail

APS_AUTH_FUNC Token refresh(const Config& config, const std::string& refresh_token,
                            const std::vector<std::string>& scopes) {
  return detail::refresh_grant(config, refresh_token, scopes, nullptr);
}

APS_AUTH_FUNC Token client_credentials(const Config& config) {
  return detail::client_credentials_grant(config, nullptr);
}

APS_AUTH_FUNC void revoke(const Config& config, const std::string& token, TokenTypeHint hint) {
  if (token.empty()) throw Error(ErrorKind::usage, "no token to revoke");
  detail::HttpCall call;
  call.url = config.endpoints.revoke;
  call.what = "revoke endpoint";
  call.secrets = {token};
  detail::Params form = {{"token", token},
                         {"token_type_hint", hint == TokenTypeHint::refresh_token ? "refresh_token" : "access_token"}};
  detail::authenticate(config, call, form);
  call.form = detail::encode_params(form, true);
  detail::HttpAnswer a = detail::http_send(config, call);
  if (a.status < 200 || a.status >= 300) detail::throw_http_error(call, a);
}

APS_AUTH_FUNC Introspection introspect(const Config& config, const std::string& token) {
  if (token.empty()) throw Error(ErrorKind::usage, "no token to introspect");
  detail::HttpCall call;
  call.url = config.endpoints.introspect;
  call.what = "introspect endpoint";
  call.secrets = {token};
  detail::Params form = {{"token", token}};
  detail::authenticate(config, call, form);
  call.form = detail::encode_params(form, true);
  return detail::parse_introspection(detail::json_answer(call, detail::http_send(config, call)));
}

APS_AUTH_FUNC UserInfo userinfo(const Config& config, const std::string& access_token) {
  if (access_token.empty()) throw Error(ErrorKind::usage, "no access token for userinfo");
  detail::HttpCall call;
  call.method = "GET";
  call.url = config.endpoints.userinfo;
  call.what = "userinfo endpoint";
  call.authorization = "Bearer " + access_token;
  call.secrets = {access_token};
  return detail::parse_userinfo(detail::json_answer(call, detail::http_send(config, call)));
}

APS_AUTH_FUNC std::string logout_url(const Config& config, const std::string& post_logout_redirect_uri) {
  detail::Url u = detail::require_url(config.endpoints.logout, "logout endpoint");
  if (post_logout_redirect_uri.empty()) return config.endpoints.logout;
  return config.endpoints.logout + (u.query.empty() ? "?" : "&") + "post_logout_redirect_uri=" +
         detail::url_encode(post_logout_redirect_uri);
}

APS_AUTH_FUNC Endpoints discover(const Config& config, const std::string& issuer) {
  detail::HttpCall call;
  call.method = "GET";
  call.url = detail::trim_slash(issuer) + "/.well-known/openid-configuration";
  call.what = "discovery document";
  return detail::parse_discovery(detail::json_answer(call, detail::http_send(config, call)), issuer);
}

// ---- LoopbackListener (POSIX) ------------------------------------------------------------------------------

#ifndef _WIN32
struct LoopbackListener::Impl {
  detail::Url callback;
  std::vector<int> listen_fds;
  std::vector<std::string> addresses;
  int port = 0;
  int wake[2] = {-1, -1};  // self-pipe: cancel() from another thread

  ~Impl() {
    for (int& fd : listen_fds) detail::close_fd(fd);
    detail::close_fd(wake[0]);
    detail::close_fd(wake[1]);
  }

  // Binds one loopback address. Never SO_REUSEPORT: another process must not be able to share the port and
  // receive the code. On Linux SO_REUSEADDR is set: there it only lets the bind succeed over connections of an
  // earlier sign-in still in TIME_WAIT (a second login within a minute would otherwise fail), and a listening
  // socket still cannot be shared. Elsewhere (BSD, macOS) SO_REUSEADDR means more, so it stays off.
  // Returns 0 or the errno of the failure.
  int bind_one(int family, int want_port) {
    int fd = detail::make_socket(family);
    if (fd < 0) return errno;
#ifdef __linux__
    int reuse = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof reuse);
#endif
    sockaddr_storage ss{};
    socklen_t len;
    if (family == AF_INET6) {
      int one = 1;
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      a->sin6_addr = in6addr_loopback;
      a->sin6_port = htons(static_cast<std::uint16_t>(want_port));
      len = sizeof(sockaddr_in6);
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a->sin_port = htons(static_cast<std::uint16_t>(want_port));
      len = sizeof(sockaddr_in);
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 64) != 0) {
      int err = errno;
      ::close(fd);
      return err;
    }
    len = sizeof ss;
    getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    port = ntohs(family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                    : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    listen_fds.push_back(fd);
    addresses.push_back(std::string(family == AF_INET6 ? "[::1]" : "127.0.0.1") + ":" + std::to_string(port));
    return 0;
  }

  [[noreturn]] static void bind_failed(const char* address, int want_port, int err) {
    std::string msg = std::string("cannot listen on ") + address + ":" + std::to_string(want_port) +
                      " for the sign-in callback (" + std::strerror(err) + ")";
    if (err == EADDRINUSE)
      msg += "; port " + std::to_string(want_port) + " is in use by another program: stop it, or register and use "
             "another callback port";
    throw Error(ErrorKind::io, msg);
  }
};

APS_AUTH_FUNC LoopbackListener::LoopbackListener(const std::string& callback_url) : impl_(new Impl) {
  auto u = detail::parse_url(callback_url);
  const bool v4 = u && (u->host == "localhost" || u->host == "127.0.0.1");
  const bool v6 = u && (u->host == "localhost" || u->host == "::1");
  if (!u || u->scheme != "http" || (!v4 && !v6))
    throw Error(ErrorKind::usage, "the callback URL must be http://localhost:PORT/path, http://127.0.0.1:PORT/path "
                                  "or http://[::1]:PORT/path (got '" + detail::sanitize(callback_url) +
                                  "'); the listener never binds other interfaces");
  impl_->callback = *u;
  if (!detail::make_pipe(impl_->wake, true))
    throw Error(ErrorKind::io, std::string("could not create a pipe: ") + std::strerror(errno));
  if (v4 && v6) {
    // localhost: both loopback addresses on the same port (RFC 8252 §8.3); the browser may pick either.
    for (int attempt = 0;; ++attempt) {
      if (int err = impl_->bind_one(AF_INET, u->port)) Impl::bind_failed("127.0.0.1", u->port, err);
      int err = impl_->bind_one(AF_INET6, impl_->port);
      if (err == 0 || err == EADDRNOTAVAIL || err == EAFNOSUPPORT) break;  // no IPv6 here: 127.0.0.1 alone
      if (err == EADDRINUSE && u->port == 0 && attempt < 20) {  // the free v4 port is taken on v6: try another
        detail::close_fd(impl_->listen_fds.back());
        impl_->listen_fds.clear();
        impl_->addresses.clear();
        continue;
      }
      Impl::bind_failed("[::1]", impl_->port, err);
    }
  } else if (int err = impl_->bind_one(v4 ? AF_INET : AF_INET6, u->port)) {
    Impl::bind_failed(v4 ? "127.0.0.1" : "[::1]", u->port, err);
  }
}

APS_AUTH_FUNC LoopbackListener::~LoopbackListener() = default;

APS_AUTH_FUNC int LoopbackListener::port() const noexcept { return impl_->port; }

APS_AUTH_FUNC std::string LoopbackListener::redirect_uri() const {
  const detail::Url& u = impl_->callback;
  return "http://" + u.host_for_url() + ":" + std::to_string(impl_->port) + u.target();
}

APS_AUTH_FUNC std::vector<std::string> LoopbackListener::bound_addresses() const { return impl_->addresses; }

APS_AUTH_FUNC void LoopbackListener::cancel() noexcept {
  char c = 1;
  ssize_t n = ::write(impl_->wake[1], &c, 1);
  (void)n;
}

APS_AUTH_FUNC std::string LoopbackListener::wait(const AuthorizationRequest& request, std::chrono::milliseconds timeout) {
  using namespace detail;
  constexpr auto kPerConnection = std::chrono::seconds(10);  // a silent or slow client is dropped after this
  constexpr std::size_t kMaxConnections = 128;               // beyond this the oldest is dropped
  const auto deadline = Clock::now() + timeout;
  const Url& callback = impl_->callback;
  std::vector<Connection> conns;
  struct Closer {
    std::vector<Connection>& c;
    ~Closer() {
      for (auto& x : c) close_fd(x.fd);
    }
  } closer{conns};

  // Handles one complete request head; returns the code when this is the callback we wait for.
  auto handle = [&](Connection& c) -> std::optional<std::string> {
    CallbackOutcome out = evaluate_callback(c.in, callback.path, request);
    respond(c.fd, out.status, out.html);
    if (out.failure) throw *out.failure;
    if (!out.code.empty()) return out.code;
    return std::nullopt;
  };
  while (true) {
    auto now = Clock::now();
    if (now >= deadline)
      throw Error(ErrorKind::timeout,
                  "no sign-in callback arrived on " + redirect_uri() + " within " +
                      std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count()) +
                      " s. The usual cause: the callback URL does not match the one registered for the app exactly "
                      "(Autodesk then shows \"Invalid redirect_uri\" and never redirects here)");
    // Drop connections past their own deadline.
    for (auto& c : conns)
      if (now >= c.deadline) close_fd(c.fd);
    conns.erase(std::remove_if(conns.begin(), conns.end(), [](const Connection& c) { return c.fd < 0; }), conns.end());

    std::vector<pollfd> fds;
    fds.push_back({impl_->wake[0], POLLIN, 0});
    for (int fd : impl_->listen_fds) fds.push_back({fd, POLLIN, 0});
    for (auto& c : conns) fds.push_back({c.fd, POLLIN, 0});
    auto next = deadline;
    for (auto& c : conns) next = std::min(next, c.deadline);
    auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
    int n = ::poll(fds.data(), static_cast<nfds_t>(fds.size()), static_cast<int>(std::min<long long>(wait_ms, 60000)));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(ErrorKind::io, std::string("poll failed: ") + std::strerror(errno));
    }
    if (fds[0].revents) {
      char buf[64];
      while (::read(impl_->wake[0], buf, sizeof buf) > 0) {
      }
      throw Error(ErrorKind::cancelled, "the wait for the sign-in callback was cancelled");
    }
    std::size_t nl = impl_->listen_fds.size();
    std::size_t open = conns.size();
    for (std::size_t i = 0; i < nl; ++i) {
      if (!fds[1 + i].revents) continue;
      // A bounded batch per round, so that a flood of connections cannot starve the reads below; an evicted
      // connection is closed here and erased next round, so conns[i] stays aligned with fds[1 + nl + i]
      // (found flooding the listener for tests/test_listener_abuse.cpp).
      for (int batch = 0; batch < 64; ++batch) {
        int fd = accept_connection(impl_->listen_fds[i]);
        if (fd < 0) break;
        for (auto it = conns.begin(); open >= kMaxConnections && it != conns.end(); ++it)
          if (it->fd >= 0) {
            close_fd(it->fd);
            --open;
          }
        conns.push_back({fd, Clock::now() + kPerConnection, {}});
        ++open;
      }
    }
    // Read what arrived. The connections accepted just now were not polled: try them at once (a browser sends
    // its request right after connecting), so that a flood of new connections cannot evict it unread.
    for (std::size_t i = 0; i < conns.size(); ++i) {
      if (i + 1 + nl < fds.size() && !fds[1 + nl + i].revents) continue;
      Connection& c = conns[i];
      if (c.fd < 0) continue;
      char buf[4096];
      bool closed = false;
      while (true) {
        ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
        if (r > 0) {
          c.in.append(buf, static_cast<std::size_t>(r));
          if (c.in.size() > APS_AUTH_MAX_CALLBACK_BYTES) break;
        } else {
          closed = r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
          break;
        }
      }
      if (c.in.find("\r\n\r\n") != std::string::npos) {
        auto code = handle(c);
        close_fd(c.fd);
        if (code) return *code;
      } else if (c.in.size() > APS_AUTH_MAX_CALLBACK_BYTES) {
        respond(c.fd, 431, page("Request too large", "<p>The request was too large and was ignored.</p>", false));
        close_fd(c.fd);
      } else if (closed) {
        close_fd(c.fd);
      }
    }
  }
}

APS_AUTH_FUNC bool open_browser(const std::string& url) {
  auto u = detail::parse_url(url);
  if (!u) return false;  // never hand a browser anything but an absolute http(s) URL
  std::string browser = detail::env("BROWSER");
  if (!browser.empty()) {
    std::vector<std::string> args = detail::split_command(browser);
    bool replaced = false;
    for (auto& a : args)
      for (std::size_t p = a.find("%s"); p != std::string::npos; p = a.find("%s", p + url.size())) {
        a.replace(p, 2, url);
        replaced = true;
      }
    if (!replaced) args.push_back(url);
    return detail::spawn_detached(args);
  }
#ifdef __APPLE__
  return detail::spawn_detached({"open", url});
#else
  return detail::spawn_detached({"xdg-open", url});
#endif
}
#endif  // !_WIN32

APS_AUTH_FUNC Token login(const Config& config, const LoginOptions& options) {
  LoopbackListener listener(config.callback_url);  // bound before the browser opens
  AuthorizationRequest request = authorization_request(config, options.authorize, listener.redirect_uri());
  if (options.on_listening) options.on_listening(listener);
  bool opened = false;
  if (options.open_browser) opened = options.browser ? options.browser(request.url) : open_browser(request.url);
  if (!opened && options.show_url) options.show_url(request.url);
  std::string code = listener.wait(request, options.timeout);
  Token token = exchange_code(config, request, code);
  if (!token.id_token.empty()) (void)verify_id_token(config, token.id_token, request.nonce);
  return token;
}

// ---- id_token ---------------------------------------------------------------------------------------------

namespace detail {

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::shared_ptr<EVP_PKEY>;

// An RSA public key from a JWK's base64url n and e.
inline Pkey rsa_key_from_jwk(const std::string& n_b64, const std::string& e_b64) {
  auto n = base64_decode(n_b64), e = base64_decode(e_b64);
  if (!n || !e || n->empty() || e->empty() || n->size() > 2048) return nullptr;
  BIGNUM* bn_n = BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()), static_cast<int>(n->size()), nullptr);
  BIGNUM* bn_e = BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()), static_cast<int>(e->size()), nullptr);
  EVP_PKEY* pkey = nullptr;
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM* params = nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr);
  if (bn_n && bn_e && bld && ctx && OSSL_PARAM_BLD_push_BN(bld, "n", bn_n) == 1 &&
      OSSL_PARAM_BLD_push_BN(bld, "e", bn_e) == 1 && (params = OSSL_PARAM_BLD_to_param(bld)) != nullptr &&
      EVP_PKEY_fromdata_init(ctx) == 1) {
    if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) pkey = nullptr;
  }
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  BN_free(bn_n);
  BN_free(bn_e);
  return Pkey(pkey, PkeyFree());
}

// kid -> key for the RS256 signing keys of a JWKS document ("" for a key without kid).
inline std::vector<std::pair<std::string, Pkey>> parse_jwks(const json& j) {
  std::vector<std::pair<std::string, Pkey>> keys;
  auto arr = j.find("keys");
  if (arr == j.end() || !arr->is_array()) throw Error(ErrorKind::bad_response, "JWKS has no 'keys' array");
  for (const auto& k : *arr) {
    if (!k.is_object() || string_field(k, "kty") != "RSA") continue;
    std::string use = string_field(k, "use"), alg = string_field(k, "alg");
    if ((!use.empty() && use != "sig") || (!alg.empty() && alg != "RS256")) continue;
    if (Pkey key = rsa_key_from_jwk(string_field(k, "n"), string_field(k, "e")))
      keys.emplace_back(string_field(k, "kid"), std::move(key));
  }
  return keys;
}

struct Jwt {
  json header, claims;
  std::string signing_input, signature;
};

// Splits and decodes a compact JWS; nullopt when it is not one.
inline std::optional<Jwt> decode_jwt(std::string_view token) {
  std::size_t d1 = token.find('.');
  if (d1 == std::string_view::npos) return std::nullopt;
  std::size_t d2 = token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos) return std::nullopt;
  auto h = base64_decode(token.substr(0, d1));
  auto c = base64_decode(token.substr(d1 + 1, d2 - d1 - 1));
  auto sig = base64_decode(token.substr(d2 + 1));
  if (!h || !c || !sig) return std::nullopt;
  auto hj = parse_json_object(*h), cj = parse_json_object(*c);
  if (!hj || !cj) return std::nullopt;
  return Jwt{std::move(*hj), std::move(*cj), std::string(token.substr(0, d2)), std::move(*sig)};
}

inline bool rs256_verify(EVP_PKEY* key, const std::string& input, const std::string& signature) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
            EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA &&
            EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                             reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

struct IdTokenExpectation {
  std::string issuer, audience, nonce;
  std::chrono::seconds leeway{60};
  std::chrono::system_clock::time_point now = std::chrono::system_clock::now();
};

inline std::int64_t int_claim(const json& c, const char* name) {
  auto it = c.find(name);
  if (it == c.end() || !(it->is_number_integer() || it->is_number_unsigned()))
    throw Error(ErrorKind::bad_response, std::string("id_token has no integer '") + name + "' claim");
  if (it->is_number_unsigned() && it->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX / 2))
    return INT64_MAX / 2;
  return it->get<std::int64_t>();
}

// Verifies the signature with the key `find_key(kid)` gives, then the claims. Pure but for the key lookup.
inline IdTokenClaims check_id_token(std::string_view token, const IdTokenExpectation& want,
                                    const std::function<Pkey(const std::string& kid)>& find_key) {
  auto jwt = decode_jwt(token);
  if (!jwt) throw Error(ErrorKind::bad_response, "the id_token is not a well-formed JWT");
  // Only RS256: "none", HS256 (a public key used as an HMAC secret) and anything else are refused.
  std::string alg = string_field(jwt->header, "alg");
  if (alg != "RS256")
    throw Error(ErrorKind::bad_response, "id_token alg '" + sanitize(alg, {}, 20) + "' refused; only RS256 is accepted");
  std::string kid = string_field(jwt->header, "kid");
  Pkey key = find_key(kid);
  if (!key) throw Error(ErrorKind::bad_response, "no JWKS key for the id_token's kid '" + sanitize(kid, {}, 80) + "'");
  if (!rs256_verify(key.get(), jwt->signing_input, jwt->signature))
    throw Error(ErrorKind::bad_response, "the id_token signature does not verify");
  const json& c = jwt->claims;
  IdTokenClaims out;
  out.issuer = string_field(c, "iss");
  if (trim_slash(out.issuer) != trim_slash(want.issuer))
    throw Error(ErrorKind::bad_response,
                "id_token issuer '" + sanitize(out.issuer, {}, 200) + "' is not '" + sanitize(want.issuer, {}, 200) + "'");
  auto aud = c.find("aud");
  bool aud_ok = false;
  if (aud != c.end() && aud->is_string()) {
    out.audience = aud->get<std::string>();
    aud_ok = out.audience == want.audience;
  } else if (aud != c.end() && aud->is_array()) {
    for (const auto& a : *aud)
      if (a.is_string() && a.get<std::string>() == want.audience) aud_ok = true;
    out.audience = want.audience;
    if (aud_ok && aud->size() > 1 && string_field(c, "azp") != want.audience) aud_ok = false;
  }
  if (!aud_ok) throw Error(ErrorKind::bad_response, "the id_token was not issued for this client (aud)");
  using namespace std::chrono;
  const std::int64_t now = duration_cast<seconds>(want.now.time_since_epoch()).count();
  const std::int64_t exp = int_claim(c, "exp"), iat = int_claim(c, "iat");
  if (now - want.leeway.count() >= exp) throw Error(ErrorKind::bad_response, "the id_token has expired");
  if (iat > now + want.leeway.count()) throw Error(ErrorKind::bad_response, "the id_token was issued in the future");
  out.nonce = string_field(c, "nonce");
  if (!want.nonce.empty() && !constant_time_equal(out.nonce, want.nonce))
    throw Error(ErrorKind::bad_response, "the id_token nonce does not match this sign-in");
  out.subject = string_field(c, "sub");
  out.name = string_field(c, "name");
  out.email = string_field(c, "email");
  out.issued_at = from_epoch_seconds(iat);  // clamped: seconds -> ns overflows (found by fuzz/jwt)
  out.expires_at = from_epoch_seconds(exp);
  out.json = c.dump();
  return out;
}

// Process-wide JWKS cache: jwks URL -> keys.
struct JwksCache {
  std::mutex mutex;
  std::vector<std::pair<std::string, std::vector<std::pair<std::string, Pkey>>>> entries;

  static JwksCache& instance() {
    static JwksCache cache;  // built on first use, not at static initialisation
    return cache;
  }
  std::vector<std::pair<std::string, Pkey>>* find(const std::string& url) {
    for (auto& e : entries)
      if (e.first == url) return &e.second;
    return nullptr;
  }
};

inline Pkey pick_key(const std::vector<std::pair<std::string, Pkey>>& keys, const std::string& kid) {
  for (const auto& k : keys)
    if (k.first == kid) return k.second;
  if (kid.empty() && keys.size() == 1) return keys.front().second;
  return nullptr;
}

}  // namespace detail

APS_AUTH_FUNC IdTokenClaims verify_id_token(const Config& config, const std::string& id_token,
                                            const std::string& nonce, std::chrono::seconds leeway) {
  if (id_token.empty()) throw Error(ErrorKind::usage, "no id_token to verify");
  if (config.endpoints.jwks.empty()) throw Error(ErrorKind::usage, "no JWKS endpoint (Endpoints::jwks)");
  detail::IdTokenExpectation want;
  want.issuer = config.endpoints.issuer;
  want.audience = config.client_id;
  want.nonce = nonce;
  want.leeway = leeway;
  const std::string url = config.endpoints.jwks;
  auto fetch = [&] {
    detail::HttpCall call;
    call.method = "GET";
    call.url = url;
    call.what = "JWKS endpoint";
    auto keys = detail::parse_jwks(detail::json_answer(call, detail::http_send(config, call)));
    auto& cache = detail::JwksCache::instance();
    std::lock_guard<std::mutex> lk(cache.mutex);
    if (auto* e = cache.find(url)) *e = keys;
    else cache.entries.emplace_back(url, keys);
    return keys;
  };
  bool fetched = false;
  return detail::check_id_token(id_token, want, [&](const std::string& kid) -> detail::Pkey {
    {
      auto& cache = detail::JwksCache::instance();
      std::lock_guard<std::mutex> lk(cache.mutex);
      if (auto* keys = cache.find(url))
        if (auto key = detail::pick_key(*keys, kid)) return key;
    }
    if (fetched) return nullptr;
    fetched = true;  // an unknown kid: the keys may have rotated, fetch once
    return detail::pick_key(fetch(), kid);
  });
}

// ---- token stores -----------------------------------------------------------------------------------------

APS_AUTH_FUNC MemoryTokenStore::MemoryTokenStore() : mutex_(std::make_shared<std::mutex>()) {}

APS_AUTH_FUNC bool MemoryTokenStore::load(Token& token) {
  std::lock_guard<std::mutex> lk(*static_cast<std::mutex*>(mutex_.get()));
  if (!token_) return false;
  token = *token_;
  return true;
}

APS_AUTH_FUNC void MemoryTokenStore::save(const Token& token) {
  std::lock_guard<std::mutex> lk(*static_cast<std::mutex*>(mutex_.get()));
  token_ = std::make_shared<const Token>(token);
}

APS_AUTH_FUNC void MemoryTokenStore::clear() {
  std::lock_guard<std::mutex> lk(*static_cast<std::mutex*>(mutex_.get()));
  token_.reset();
}

#ifndef _WIN32
namespace detail {

inline std::string errno_text(int err) { return std::strerror(err); }

inline std::string parent_dir(const std::string& path) {
  std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// mkdir -p with mode 0700 for the directories it creates.
inline void make_dirs(const std::string& dir) {
  if (dir.empty() || dir == "." || dir == "/") return;
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) return;
  make_dirs(parent_dir(dir));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    throw Error(ErrorKind::io, "cannot create directory '" + dir + "': " + errno_text(errno));
}

struct FileLock : StoreLock {
  int fd = -1;
  ~FileLock() override {
    if (fd >= 0) ::close(fd);  // closing releases the flock
  }
};

}  // namespace detail

APS_AUTH_FUNC FileTokenStore::FileTokenStore(std::string path, OpenPermissions permissions,
                                             std::function<void(const std::string&)> warn)
    : path_(std::move(path)), permissions_(permissions), warn_(std::move(warn)) {
  if (path_.empty()) throw Error(ErrorKind::usage, "empty token file path");
}

APS_AUTH_FUNC std::string FileTokenStore::default_path(const std::string& name) {
  std::string base = detail::env("XDG_STATE_HOME");
  if (base.empty() || base.front() != '/') {
    std::string home = detail::env("HOME");
    if (home.empty()) throw Error(ErrorKind::usage, "neither XDG_STATE_HOME nor HOME is set; give a token file path");
    base = home + "/.local/state";
  }
  return base + "/aps-auth/" + name + ".json";
}

APS_AUTH_FUNC bool FileTokenStore::load(Token& token) {
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return false;
    throw Error(ErrorKind::io, "cannot read token file '" + path_ + "': " + detail::errno_text(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) == 0 && (st.st_mode & 077) != 0) {
    std::string msg = "token file '" + path_ + "' is accessible by other users (mode " +
                      std::to_string((st.st_mode >> 6) & 7) + std::to_string((st.st_mode >> 3) & 7) +
                      std::to_string(st.st_mode & 7) + "); run: chmod 600 '" + path_ + "'";
    if (permissions_ == OpenPermissions::refuse) {
      ::close(fd);
      throw Error(ErrorKind::io, msg);
    }
    if (warn_) warn_(msg);
  }
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > static_cast<std::size_t>(APS_AUTH_MAX_RESPONSE_BYTES)) break;
  }
  int err = errno;
  ::close(fd);
  if (n < 0) throw Error(ErrorKind::io, "cannot read token file '" + path_ + "': " + detail::errno_text(err));
  try {
    token = Token::from_json(text);
  } catch (const Error& e) {
    throw Error(ErrorKind::io, "token file '" + path_ + "' is not a valid token (" + e.what() + ")");
  }
  return true;
}

APS_AUTH_FUNC void FileTokenStore::save(const Token& token) {
  const std::string dir = detail::parent_dir(path_);
  detail::make_dirs(dir);
  const std::string data = token.to_json() + "\n";
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0 && attempt < 10; ++attempt) {
    tmp = path_ + ".tmp-" + random_urlsafe(6);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST) break;
  }
  auto fail = [&](const char* step, int err) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(ErrorKind::io, std::string("cannot save the token to '") + path_ + "' (" + step + ": " +
                                   detail::errno_text(err) + ")");
  };
  if (fd < 0) fail("create", errno);
  if (::fchmod(fd, 0600) != 0) fail("chmod", errno);  // 0600 whatever the umask
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("write", errno);
    off += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("fsync", errno);
  if (::close(fd) != 0) {
    fd = -1;
    fail("close", errno);
  }
  fd = -1;
  if (::rename(tmp.c_str(), path_.c_str()) != 0) fail("rename", errno);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC);
  if (dfd >= 0) {  // make the rename itself durable
    ::fsync(dfd);
    ::close(dfd);
  }
}

APS_AUTH_FUNC void FileTokenStore::clear() {
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
    throw Error(ErrorKind::io, "cannot delete token file '" + path_ + "': " + detail::errno_text(errno));
}

APS_AUTH_FUNC std::unique_ptr<StoreLock> FileTokenStore::lock() {
  detail::make_dirs(detail::parent_dir(path_));
  // A separate lock file: the token file itself is replaced by rename, so a lock on it would not hold.
  const std::string lock_path = path_ + ".lock";
  auto l = std::make_unique<detail::FileLock>();
  l->fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (l->fd < 0) throw Error(ErrorKind::io, "cannot open lock file '" + lock_path + "': " + detail::errno_text(errno));
  while (::flock(l->fd, LOCK_EX) != 0) {
    if (errno != EINTR)
      throw Error(ErrorKind::io, "cannot lock '" + lock_path + "': " + detail::errno_text(errno));
  }
  return l;
}
#endif  // !_WIN32

// ---- TokenSource -------------------------------------------------------------------------------------------

namespace detail {

// system_clock::now() < t, cheaply when t is not near: CLOCK_REALTIME_COARSE is a vDSO read of the time at the
// last tick (~5 ns, against ~20-35 ns for system_clock::now()) and lags CLOCK_REALTIME by less than its
// resolution, so a coarse time further than a second (plus twice that resolution) before t decides it. Nearer,
// or where there is no coarse clock, system_clock::now() decides, as before.
inline bool now_before(std::chrono::system_clock::time_point t) {
#if defined(__linux__) && defined(CLOCK_REALTIME_COARSE)
  static const std::chrono::nanoseconds margin = [] {
    timespec res{};
    if (::clock_getres(CLOCK_REALTIME_COARSE, &res) != 0) return std::chrono::nanoseconds::max();
    return std::chrono::seconds(1) + 2 * (std::chrono::seconds(res.tv_sec) + std::chrono::nanoseconds(res.tv_nsec));
  }();
  timespec ts{};
  if (margin != std::chrono::nanoseconds::max() && ::clock_gettime(CLOCK_REALTIME_COARSE, &ts) == 0) {
    const auto coarse = std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
    if (coarse + margin < t.time_since_epoch()) return true;
  }
#endif
  return std::chrono::system_clock::now() < t;
}

}  // namespace detail

struct TokenSource::Impl {
  Config config;
  std::shared_ptr<TokenStore> store;
  TokenSourceOptions options;

  std::mutex mutex;          // guards the fields below; held briefly
  Token current;
  bool loaded = false;
  std::chrono::system_clock::time_point refresh_at{};  // hand out `current` until then
  std::mutex refresh_mutex;  // one refresh in flight per TokenSource; also guards `session`
  detail::HttpSession session;
  bool unsaved = false;  // the last new token could not be saved: ours is newer than the store's (refresh_mutex)

  // When `t` is due for a refresh: the lead time before expiry, at most half its lifetime; at once without one.
  std::chrono::system_clock::time_point refresh_point(const Token& t) const {
    if (t.access_token.empty()) return {};
    return t.expires_at - std::min<std::chrono::seconds>(options.refresh_lead, t.expires_in / 2);
  }

  void adopt(const Token& t) {  // caller holds `mutex`
    current = t;
    loaded = true;
    refresh_at = refresh_point(t);
  }

  bool fresh(const Token& t) const { return std::chrono::system_clock::now() < refresh_point(t); }

  // Runs with refresh_mutex held: the single flight.
  void renew() {
    std::unique_ptr<StoreLock> cross_process = store ? store->lock() : nullptr;
    Token stored;
    bool have_stored = store && store->load(stored);
    Token mine;
    {
      std::lock_guard<std::mutex> lk(mutex);
      mine = current;
    }
    // Another process (or an earlier run) already rotated: use its token, refresh nothing.
    if (have_stored && fresh(stored)) {
      std::lock_guard<std::mutex> lk(mutex);
      adopt(stored);
      unsaved = false;
      return;
    }
    Token next;
    if (options.client_credentials) {
      next = detail::client_credentials_grant(config, &session);
    } else {
      // After a failed save the stored refresh token was rotated away: ours is the live one.
      bool use_stored = have_stored && !stored.refresh_token.empty() && !(unsaved && !mine.refresh_token.empty());
      std::string rt = use_stored ? stored.refresh_token : mine.refresh_token;
      if (rt.empty())
        throw Error(ErrorKind::usage, "no refresh token to renew the access token with; sign in first");
      try {
        next = detail::refresh_grant(config, rt, {}, &session);
      } catch (const Error& e) {
        if (e.details().error != "invalid_grant" || !store) throw;
        // Someone else may have rotated it between our read and our refresh: read once more.
        Token again;
        if (!store->load(again) || again.refresh_token == rt) throw;
        if (fresh(again)) {
          std::lock_guard<std::mutex> lk(mutex);
          adopt(again);
          unsaved = false;
          return;
        }
        next = detail::refresh_grant(config, again.refresh_token, {}, &session);
      }
    }
    {
      std::lock_guard<std::mutex> lk(mutex);
      adopt(next);  // in memory first: if saving fails below, nothing is lost
    }
    if (store) {
      try {
        store->save(next);
        unsaved = false;
      } catch (const Error& e) {
        unsaved = true;
        if (options.on_new_token) options.on_new_token(next);  // the application may keep it elsewhere
        throw Error(ErrorKind::io, std::string("got a new token but could not save it; it is kept in memory "
                                               "(TokenSource::token() returns it): ") + e.what());
      }
    }
    if (options.on_new_token) options.on_new_token(next);
  }

  Token get() {
    {
      std::lock_guard<std::mutex> lk(mutex);
      if (loaded && std::chrono::system_clock::now() < refresh_at) return current;
    }
    std::lock_guard<std::mutex> flight(refresh_mutex);
    {
      std::lock_guard<std::mutex> lk(mutex);
      if (!loaded) {
        Token t;
        if (store && store->load(t)) adopt(t);
        loaded = true;
      }
      if (std::chrono::system_clock::now() < refresh_at) return current;  // refreshed while we waited
    }
    renew();
    std::lock_guard<std::mutex> lk(mutex);
    return current;
  }
};

APS_AUTH_FUNC TokenSource::TokenSource(Config config, std::shared_ptr<TokenStore> store, TokenSourceOptions options)
    : impl_(new Impl) {
  impl_->config = std::move(config);
  impl_->store = std::move(store);
  impl_->options = std::move(options);
}

APS_AUTH_FUNC TokenSource::~TokenSource() = default;

APS_AUTH_FUNC std::string TokenSource::access_token() {
  {
    std::lock_guard<std::mutex> lk(impl_->mutex);  // fast path: a copy under a short lock
    if (impl_->loaded && detail::now_before(impl_->refresh_at)) return impl_->current.access_token;
  }
  return impl_->get().access_token;
}

APS_AUTH_FUNC Token TokenSource::token() { return impl_->get(); }

}  // namespace auth
}  // namespace aps

#endif  // implementation
#endif  // APS_AUTH_HPP
