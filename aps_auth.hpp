// aps_auth.hpp - sign in to Autodesk Platform Services (APS) with OAuth 2.0, in one header.
// SPDX-License-Identifier: MIT
//
// USAGE
//   #include "aps_auth.hpp"
//   aps::auth::Config config;                           // APS endpoints by default
//   config.client_id = "...";                           // no secret: a public client (PKCE)
//   aps::auth::Token token = aps::auth::login(config);  // browser + loopback listener + code exchange
//
//   Header-only by default. For faster builds define APS_AUTH_HEADER_ONLY=0 for every file (the declarations then
//   need only standard headers) and compile the implementation once, in one .cpp:
//     #define APS_AUTH_IMPLEMENTATION
//     #include "aps_auth.hpp"
//   The implementation needs cpp-httplib (with CPPHTTPLIB_OPENSSL_SUPPORT), nlohmann/json and OpenSSL 3.
//
// PLATFORMS
//   Linux: tested. Windows: tested under Wine, built with mingw-w64; MSVC expected to work, not tested. macOS:
//   the POSIX code paths that differ there are written and reviewed, not tested. Link on Windows: ws2_32, crypt32,
//   advapi32, iphlpapi, shell32 (MSVC: named by #pragma comment).
//
// CONTENTS  The declarations come first, then the implementation in the same order; search for "[n]".
//   [1]  Errors                 ErrorKind, ErrorDetails, Error
//   [2]  Configuration          Endpoints, RetryPolicy, Config
//   [3]  Authorization request  AuthorizeOptions, AuthorizationRequest, authorization_request, pkce_challenge
//   [4]  Loopback listener      LoopbackListener, check_callback and html_escape (for web servers),
//                               open_browser
//   [5]  Token endpoint         exchange_code, refresh, client_credentials, revoke, introspect, userinfo,
//                               logout_url (and the HTTP client they share)
//   [6]  Token                  Token: expiry, JSON round trip
//   [7]  Token stores           TokenStore, MemoryTokenStore, FileTokenStore
//   [8]  Token source           TokenSource: a valid access token on demand, single-flight refresh
//   [9]  OpenID Connect         discover, verify_id_token
//   [10] Sign-in                LoginOptions, login: [3] + [4] + [5] + [9] in one call
//   Implementation only, before [1]:
//   [P]  Platform               every OS call: sockets, files and locks, processes, environment, clock
//   [H]  cpp-httplib adapter    what differs between cpp-httplib versions, and workarounds for old ones
//   [T]  Text                   URL, form and base64 encodings, JSON helpers, sanitizing for messages
#ifndef APS_AUTH_HPP
#define APS_AUTH_HPP

// <windows.h> included before this header without NOMINMAX defines min and max as macros: set them aside here,
// and back at the end.
#ifdef _WIN32
#pragma push_macro("min")
#pragma push_macro("max")
#undef min
#undef max
#endif

// The version: CMake and Meson read these three lines.
#define APS_AUTH_VERSION_MAJOR 0
#define APS_AUTH_VERSION_MINOR 1
#define APS_AUTH_VERSION_PATCH 0

// ---- configuration macros ------------------------------------------------------------------------------------

#ifndef APS_AUTH_HEADER_ONLY
#define APS_AUTH_HEADER_ONLY 1
#endif

// Largest answer body accepted from an HTTP endpoint; larger answers are a bad_response error.
#ifndef APS_AUTH_MAX_RESPONSE_BYTES
#define APS_AUTH_MAX_RESPONSE_BYTES (1024 * 1024)
#endif

// Largest request head (request line + headers) the loopback listener reads from one connection.
#ifndef APS_AUTH_MAX_CALLBACK_BYTES
#define APS_AUTH_MAX_CALLBACK_BYTES (16 * 1024)
#endif

#if APS_AUTH_HEADER_ONLY
#define APS_AUTH_FUNC inline
#else
#define APS_AUTH_FUNC
#endif

// Everything lives in an inline namespace named after the version and the mode, so a program that mixes
// header-only and compiled-mode files fails to link instead of mixing two definitions of one class.
#define APS_AUTH_ABI_NAME_(major, minor, mode) v##major##_##minor##_##mode
#define APS_AUTH_ABI_NAME(major, minor, mode) APS_AUTH_ABI_NAME_(major, minor, mode)
#if APS_AUTH_HEADER_ONLY
#define APS_AUTH_ABI APS_AUTH_ABI_NAME(APS_AUTH_VERSION_MAJOR, APS_AUTH_VERSION_MINOR, ho)
#else
#define APS_AUTH_ABI APS_AUTH_ABI_NAME(APS_AUTH_VERSION_MAJOR, APS_AUTH_VERSION_MINOR, cm)
#endif
#define APS_AUTH_NAMESPACE_BEGIN \
  namespace aps {                \
  namespace auth {               \
  inline namespace APS_AUTH_ABI {
#define APS_AUTH_NAMESPACE_END \
  }                            \
  }                            \
  }

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

APS_AUTH_NAMESPACE_BEGIN

// "0.1.0"
[[nodiscard]] std::string version();

// =================================================================================================================
// [1] Errors
// =================================================================================================================

enum class ErrorKind {
  network,          // could not connect, connection reset, proxy failure
  tls,              // certificate not trusted, hostname mismatch, handshake failure
  timeout,          // no answer in time, or no callback before the deadline
  http,             // an endpoint answered an HTTP error (APS errorCode/developerMessage kept)
  oauth,            // an endpoint or the callback answered an OAuth error (error/error_description kept)
  state_mismatch,   // check_callback(): the callback's state is not the request's (the listener ignores those)
  issuer_mismatch,  // the callback's iss is not the expected issuer, or missing when promised (RFC 9207)
  access_denied,    // the user (or policy) refused consent
  bad_response,     // an answer that is not what the protocol promises (HTML, truncated, too big, ...)
  io,               // files, sockets of the listener, randomness
  usage,            // the caller's mistake: bad URL, missing client id, plain http to a remote host
  cancelled,        // LoopbackListener::cancel() was called
};

[[nodiscard]] const char* to_string(ErrorKind kind) noexcept;

// What an endpoint said, every field kept (APS answers errors in two shapes).
struct ErrorDetails {
  int status = 0;                       // HTTP status, 0 when there was no answer
  std::string error;                    // RFC 6749 "error"
  std::string error_description;        // RFC 6749 "error_description"
  std::string error_code;               // APS "errorCode", e.g. "AUTH-001"
  std::string developer_message;        // APS "developerMessage"
  std::string user_message;             // APS "userMessage"
  std::string more_info;                // APS "more info" / "moreInfo"
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

// =================================================================================================================
// [2] Configuration
// =================================================================================================================

// Where the authorization server lives. Default-constructed: APS production.
struct Endpoints {
  Endpoints();  // APS production: https://developer.api.autodesk.com and api.userprofile.autodesk.com/userinfo

  std::string issuer;
  std::string authorize;
  std::string token;
  std::string revoke;
  std::string introspect;
  std::string jwks;
  std::string logout;
  std::string userinfo;
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
  int max_attempts = 3;                            // 1 = never retry
  std::chrono::milliseconds initial_backoff{500};  // doubled each attempt, with full jitter
  std::chrono::milliseconds max_delay{30000};      // cap for Retry-After and backoff
};

struct Config {
  std::string client_id;
  std::string client_secret;  // empty: a public client (client_id in the body, PKCE)
  std::string callback_url = "http://localhost:8080/api/auth/callback";  // must match the app's registration
  std::vector<std::string> scopes = {"data:read"};
  Endpoints endpoints;
  std::string ca_file;  // extra trusted CA certificates (PEM), on top of the system store and SSL_CERT_FILE
  // Proxy for the endpoint calls: "http://[user:pass@]host:port". Empty: from the environment, as curl reads
  // it: https_proxy or HTTPS_PROXY for https URLs, http_proxy (lower case only) for http URLs, NO_PROXY or
  // no_proxy for exceptions. "direct": never use a proxy. Loopback hosts (localhost, 127.0.0.0/8, ::1) are
  // never reached through a proxy, whatever this says (and plain http is allowed only to them, so http_proxy
  // is in effect never used).
  std::string proxy;
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds read_timeout{30000};
  RetryPolicy retry;
};

// =================================================================================================================
// [3] Authorization request
// =================================================================================================================

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
  std::chrono::system_clock::time_point created_at{};  // when authorization_request() made it

  // For a server's session store: every field, as a JSON object. It holds the PKCE verifier: keep it on the
  // server (a session store, not a cookie or a page).
  [[nodiscard]] std::string to_json() const;
  // Reads to_json() output; ErrorKind::usage when it is not that.
  [[nodiscard]] static AuthorizationRequest from_json(std::string_view json);
};

// A new request: fresh state, PKCE S256 and (with openid) nonce, and its authorize URL. redirect_uri
// defaults to config.callback_url.
[[nodiscard]] AuthorizationRequest authorization_request(const Config& config, const AuthorizeOptions& options = {},
                                                         const std::string& redirect_uri = "");
// PKCE S256: base64url(SHA-256(verifier)).
[[nodiscard]] std::string pkce_challenge(std::string_view code_verifier);
// `bytes` random octets from OpenSSL's CSPRNG, base64url without padding.
[[nodiscard]] std::string random_urlsafe(std::size_t bytes);

// =================================================================================================================
// [4] Loopback listener
// =================================================================================================================

// Receives the browser's redirect on the callback URL. Binds in the constructor, loopback only (127.0.0.1,
// [::1], or both for localhost; never a wildcard) and so that no other socket can share the port (never
// SO_REUSEPORT; SO_REUSEADDR only on Linux, where it merely allows binding over TIME_WAIT), so a port in use is an
// error before any browser opens. Port 0 in the callback URL picks a free port (see redirect_uri()).
class LoopbackListener {
 public:
  explicit LoopbackListener(const std::string& callback_url);
  ~LoopbackListener();
  LoopbackListener(const LoopbackListener&) = delete;
  LoopbackListener& operator=(const LoopbackListener&) = delete;

  [[nodiscard]] int port() const noexcept;
  [[nodiscard]] std::string redirect_uri() const;                  // the callback URL with the bound port
  [[nodiscard]] std::vector<std::string> bound_addresses() const;  // "127.0.0.1:8080", "[::1]:8080"

  // Waits for the callback that carries request.state and returns its code. Other paths get 404; callbacks
  // with a wrong or missing state (error= ones included) get an explanatory page and the wait goes on. An
  // error= callback with the right state throws (access_denied or oauth). One overall deadline: timeout.
  [[nodiscard]] std::string wait(const AuthorizationRequest& request, std::chrono::milliseconds timeout);
  // As wait(), but the browser's connection is kept open and not answered yet, so that the page can tell how the
  // sign-in ended: call answer_signed_in() or answer_failed() after the code exchange. A held connection still
  // unanswered when the listener is destroyed (or waits again) gets a page saying the sign-in was received.
  [[nodiscard]] std::string wait_and_hold(const AuthorizationRequest& request, std::chrono::milliseconds timeout);
  // Answers the held connection: "Signed in" (as `who`, when given; escaped), or a page that says in plain words
  // what failed (no secret, no code). No-ops when nothing is held.
  void answer_signed_in(const std::string& who = "");
  void answer_failed(const Error& error);
  // Ends a wait() in progress from another thread (it throws ErrorKind::cancelled).
  void cancel() noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// For a web server that receives the redirect itself (many users, each with a pending request in a session):
// checks the authorization response `callback` (the query string, the request target "/path?query" or the whole
// URL) against the request it belongs to and returns the code. The same checks as the listener, in the same
// order: state first, in constant time (ErrorKind::state_mismatch: another session's or a forged callback),
// then iss (issuer_mismatch), error= (access_denied or oauth), a missing code (bad_response). A request older
// than max_age is refused (timeout): APS codes live 5 minutes. Each request is for one callback: forget it
// (remove it from the session) before exchanging the code, so a replayed callback finds none.
[[nodiscard]] std::string check_callback(const AuthorizationRequest& request, std::string_view callback,
                                         std::chrono::seconds max_age = std::chrono::minutes(10));

// Text made safe for an HTML page (& < > " ' escaped), as the listener's own pages do it: a callback's
// error_description and an Error's what() carry text from the network, which a web server's pages must escape.
[[nodiscard]] std::string html_escape(std::string_view text);

// Opens the URL in the user's browser without a shell: $BROWSER (a "%s" in it is replaced by the URL,
// otherwise the URL is appended) or the platform opener. Does not wait for the browser. False when nothing
// could be started. The browser's environment is this process's without every variable whose value contains one
// of `secrets` (the client secret, tokens; those shorter than 4 characters are ignored), so that nothing the
// browser launches inherits them. Windows: the default browser is started from the command line it is registered
// with for https (the user's choice), so it gets the filtered environment too; only a browser registered without
// one (a packaged app) is opened through ShellExecuteW, which takes no environment.
bool open_browser(const std::string& url, const std::vector<std::string>& secrets = {});

// =================================================================================================================
// [5] Token endpoint
// =================================================================================================================

struct Token;  // [6]

// authorization_code grant; sends request.code_verifier and the identical request.redirect_uri.
[[nodiscard]] Token exchange_code(const Config& config, const AuthorizationRequest& request, const std::string& code);
// refresh_token grant; `scopes` may narrow the original ones. Keeps the old refresh token if none comes back.
[[nodiscard]] Token refresh(const Config& config, const std::string& refresh_token,
                            const std::vector<std::string>& scopes = {});
// client_credentials grant (2-legged) for config.scopes; needs a client secret.
[[nodiscard]] Token client_credentials(const Config& config);

enum class TokenTypeHint { access_token, refresh_token };
void revoke(const Config& config, const std::string& token, TokenTypeHint hint);

struct Introspection {
  bool active = false;
  std::string scope, client_id, userid;
  std::chrono::system_clock::time_point expires_at{};  // epoch 0 when not given
  std::string json;                                    // the whole answer
};
[[nodiscard]] Introspection introspect(const Config& config, const std::string& token);

struct UserInfo {
  std::string sub, name, email, preferred_username;
  std::string json;  // the whole answer (all OIDC claims)
};
[[nodiscard]] UserInfo userinfo(const Config& config, const std::string& access_token);

// The logout page to open in the browser (no request is made).
[[nodiscard]] std::string logout_url(const Config& config, const std::string& post_logout_redirect_uri = "");

// =================================================================================================================
// [6] Token
// =================================================================================================================

struct Token {
  std::string access_token;
  std::string token_type = "Bearer";
  std::string refresh_token;  // 3-legged only; rotates on every refresh
  std::string id_token;       // with the openid scope
  std::string scope;
  std::chrono::seconds expires_in{0};                  // as answered
  std::chrono::system_clock::time_point expires_at{};  // absolute, from the time the request was sent
  // When the refresh token was issued (APS refresh tokens live 15 days); epoch 0 when unknown. A refresh that
  // returns no new refresh token keeps the old one, and TokenSource keeps its time.
  std::chrono::system_clock::time_point refresh_token_obtained_at{};

  // True when the access token expires within `margin` from now (or has no access token).
  [[nodiscard]] bool expired(std::chrono::seconds margin = std::chrono::seconds(0)) const;
  // {"access_token","token_type","expires_in","expires_at"(epoch s),"refresh_token"?,"refresh_token_obtained_at"?
  // (epoch s),"id_token"?,"scope"?}
  [[nodiscard]] std::string to_json() const;
  // Reads to_json() output, or a token endpoint answer (expires_at then computed from now).
  [[nodiscard]] static Token from_json(std::string_view json);
};

// =================================================================================================================
// [7] Token stores
// =================================================================================================================

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
// mode 0600 from creation whatever the umask. Cross-process lock: flock() (Windows: LockFileEx) on "<path>.lock",
// waited for at most lock_timeout() (then ErrorKind::timeout). The token and lock files are never opened through
// a symbolic link and must be regular files owned by this process's user; anything else is an ErrorKind::io error
// naming the path.
class FileTokenStore : public TokenStore {
 public:
  enum class OpenPermissions {
    refuse,  // default: a token file readable or writable by group/others is an ErrorKind::io error
    warn,    // call `warn` and go on
  };
  explicit FileTokenStore(std::string path, OpenPermissions permissions = OpenPermissions::refuse,
                          std::function<void(const std::string& message)> warn = {});
  // $XDG_STATE_HOME/aps-auth/<name>.json, else ~/.local/state/aps-auth/<name>.json (macOS: ~/Library/Application
  // Support/aps-auth/<name>.json; Windows: %LOCALAPPDATA%\aps-auth\<name>.json).
  [[nodiscard]] static std::string default_path(const std::string& name = "token");

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  APS_AUTH_FUNC bool load(Token& token) override;  // APS_AUTH_FUNC: see MemoryTokenStore
  APS_AUTH_FUNC void save(const Token& token) override;
  APS_AUTH_FUNC void clear() override;
  [[nodiscard]] APS_AUTH_FUNC std::unique_ptr<StoreLock> lock() override;
  // How long lock() waits for a lock another process holds (default 30 s).
  void set_lock_timeout(std::chrono::milliseconds timeout) noexcept { lock_timeout_ = timeout; }
  [[nodiscard]] std::chrono::milliseconds lock_timeout() const noexcept { return lock_timeout_; }

 private:
  std::string path_;
  OpenPermissions permissions_;
  std::function<void(const std::string&)> warn_;
  std::chrono::milliseconds lock_timeout_{30000};
};

// =================================================================================================================
// [8] Token source
// =================================================================================================================

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

// =================================================================================================================
// [9] OpenID Connect
// =================================================================================================================

// OIDC discovery: <issuer>/.well-known/openid-configuration; the document's issuer must equal `issuer`.
[[nodiscard]] Endpoints discover(const Config& config, const std::string& issuer);

struct IdTokenClaims {
  std::string issuer, subject, audience, nonce, name, email;
  std::chrono::system_clock::time_point issued_at{}, expires_at{};
  std::string json;  // every claim
};

// Verifies an id_token and returns its claims: RS256 signature against the issuer's JWKS
// (config.endpoints.jwks, cached by kid for the answer's Cache-Control max-age, 1 h without one, 24 h at most;
// fetched again once on an unknown kid), no crit header, iss == config.endpoints.issuer, aud contains
// config.client_id, exp/iat/nbf within `leeway`, and nonce when `nonce` is not empty. Anything else
// (alg none, HS256, a wrong key, ...) is ErrorKind::bad_response. login() calls this when it got an id_token.
[[nodiscard]] IdTokenClaims verify_id_token(const Config& config, const std::string& id_token,
                                            const std::string& nonce = "",
                                            std::chrono::seconds leeway = std::chrono::seconds(60));

// =================================================================================================================
// [10] Sign-in
// =================================================================================================================

struct LoginOptions {
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  AuthorizeOptions authorize;
  bool open_browser = true;  // false: only show_url is called
  // Opens the URL; return false when it could not. Default: aps::auth::open_browser(url, {client_secret}).
  std::function<bool(const std::string& url)> browser;
  // Shows the URL to the person when no browser opened (or open_browser is false). The library prints
  // nothing itself: set this to print it.
  std::function<void(const std::string& url)> show_url;
  // Called once the listener is bound, before the browser opens. The listener lives until login() returns: a
  // cancel() from another thread must happen before that (the CLI instead ends its wait with an error= callback).
  std::function<void(LoopbackListener& listener)> on_listening;
};

// Binds the listener, opens the browser, waits for the callback (state checked), exchanges the code, and
// verifies the id_token (with the request's nonce) when one came back. The browser's page is answered after
// that: "Signed in as <name from the verified id_token>", or what failed.
[[nodiscard]] Token login(const Config& config, const LoginOptions& options = {});

APS_AUTH_NAMESPACE_END

// =================================================================================================================
// Implementation
// =================================================================================================================
#if APS_AUTH_HEADER_ONLY || defined(APS_AUTH_IMPLEMENTATION)

// <windows.h> included before this header without WIN32_LEAN_AND_MEAN brought the old <winsock.h>. mingw-w64's
// <winsock2.h> (which httplib.h includes) works after it, but warns "include winsock2.h before windows.h" when it
// finds _WINSOCKAPI_, <winsock.h>'s guard, defined: undefined here, <winsock2.h> defines it again. (MSVC's
// <winsock2.h> cannot follow <winsock.h>: there, define WIN32_LEAN_AND_MEAN or include <winsock2.h> first.)
#if defined(__MINGW32__) && defined(_WINSOCKAPI_) && !defined(_WINSOCK2API_)
#undef _WINSOCKAPI_
#endif
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <type_traits>
#include <utility>

#ifdef _WIN32
// <winsock2.h>, <ws2tcpip.h> and <wincrypt.h> come with httplib.h; X509_NAME & co. are #undef'd there.
#include <aclapi.h>
#include <iphlpapi.h>
#include <sddl.h>
#include <shellapi.h>
#include <climits>
#include <cwchar>
#ifdef _MSC_VER
#pragma comment(lib, "ws2_32.lib")
#pragma comment(lib, "crypt32.lib")
#pragma comment(lib, "advapi32.lib")
#pragma comment(lib, "iphlpapi.lib")
#pragma comment(lib, "shell32.lib")
#endif
#else
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __APPLE__
#include <crt_externs.h>  // _NSGetEnviron
#endif
#endif

APS_AUTH_NAMESPACE_BEGIN
namespace detail {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using Params = std::vector<std::pair<std::string, std::string>>;

// Milliseconds from now until `until`, as poll() takes them: 0 when past, at most an hour.
inline int ms_until(Clock::time_point until) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(ms, 0, 3600000));
}

// =================================================================================================================
// [P] Platform: every OS call of the library is in this section, behind the functions below. The rest of the
// header calls only these.
//
//   environment  env, trusted_env
//   sockets      Socket, last_socket_error, listen_loopback, local_port, accept_connection, receive_some, send_some,
//   shutdown_send,
//                poll_sockets, readable_now, connect_tcp, whole_tls_record_queued, Waker,
//                is_ipv4_loopback_literal, os_error_text, is_addr_in_use, is_no_ipv6,
//                peer_user (parse_proc_net_tcp_line on Linux)
//   trust        load_system_roots
//   files        parent_dir, path_join, make_private_dirs, open_own_file / check_own_file, read_file_if_exists,
//                replace_file, remove_file, open_lock_file, try_lock, lock_file, default_state_dir, private_file_hint
//   processes    spawn_detached, open_in_default_browser
//   clock        now_before
// =================================================================================================================

// Owns one OS handle (a socket, a file, a pipe end) and closes it on destruction. Traits name the handle type,
// its invalid value and how to close it.
template <class Traits>
class Handle {
 public:
  using native = typename Traits::native;
  Handle() = default;
  explicit Handle(native h) : h_(h) {}
  Handle(Handle&& other) noexcept : h_(std::exchange(other.h_, Traits::invalid())) {}
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      close();
      h_ = std::exchange(other.h_, Traits::invalid());
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { close(); }

  [[nodiscard]] native get() const noexcept { return h_; }
  [[nodiscard]] bool valid() const noexcept { return h_ != Traits::invalid(); }
  void close() noexcept { (void)close_checked(); }
  // Closes now; false when the OS reports an error, which after a write may mean lost data.
  bool close_checked() noexcept {
    const bool ok = !valid() || Traits::close(h_);
    h_ = Traits::invalid();
    return ok;
  }

 private:
  native h_ = Traits::invalid();
};

// A file's text, and whether users other than its owner may read or write it ("mode 644" says how).
struct FileContent {
  std::string text;
  bool shared = false;
  std::string access;
};

// Who is at the other end of an accepted loopback connection, compared with this process's user.
enum class PeerUser { same, other, unknown };

#ifndef _WIN32  // ---- POSIX (Linux; macOS and the BSDs where noted) -------------------------------------------

// ---- environment

inline std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// An environment variable that must not steer a set-user-ID program (where the C library allows the check).
inline std::string trusted_env(const char* name) {
#if defined(__GLIBC__)
  const char* v = ::secure_getenv(name);
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
  const char* v = ::issetugid() ? nullptr : std::getenv(name);
#else
  const char* v = std::getenv(name);
#endif
  return v ? std::string(v) : std::string();
}

// ---- sockets

using socket_t = int;
constexpr socket_t kNoSocket = -1;
using PollFd = pollfd;

inline int last_socket_error() {
  return errno;
}
inline int last_os_error() {
  return errno;
}
inline std::string os_error_text(int err) {
  return std::strerror(err);
}
inline bool is_addr_in_use(int err) {
  return err == EADDRINUSE;
}
inline bool is_no_ipv6(int err) {
  return err == EADDRNOTAVAIL || err == EAFNOSUPPORT;
}

struct FdTraits {
  using native = int;
  static constexpr int invalid() noexcept { return -1; }
  static bool close(int fd) noexcept { return ::close(fd) == 0; }
};
using Fd = Handle<FdTraits>;  // a file descriptor: a socket, a file, a pipe end
using Socket = Fd;

// Close-on-exec and (optionally) non-blocking, for systems without SOCK_CLOEXEC/accept4/pipe2 (macOS).
inline bool set_fd_flags(int fd, bool nonblock) {
  return ::fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 &&
         (!nonblock || ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
}

#ifndef __linux__
// Where sockets are made without SOCK_CLOEXEC/SOCK_NONBLOCK (macOS, BSD): those flags set afterwards, and
// SO_NOSIGPIPE where it exists; invalid when the flags cannot be set.
inline Socket with_socket_flags(Socket s) {
  if (s.valid() && !set_fd_flags(s.get(), true))
    s.close();
#ifdef SO_NOSIGPIPE
  int one = 1;
  if (s.valid())
    ::setsockopt(s.get(), SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
  return s;
}
#endif

inline Socket stream_socket(int family) {
#ifdef __linux__
  return Socket(::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
#else
  return with_socket_flags(Socket(::socket(family, SOCK_STREAM, 0)));
#endif
}

// Options of a listening socket so that no other socket can share its port: never SO_REUSEPORT. SO_REUSEADDR is
// set: it lets the bind succeed over connections of an earlier sign-in still in TIME_WAIT (a second sign-in on
// the same port within a minute would fail otherwise), and a second socket on the same address and port is still
// refused. On BSD and macOS it also lets this listener bind its loopback address while another program holds the
// port's wildcard address; connections to the loopback address then come to the more specific socket, this one.
inline int set_listen_options(socket_t s) {
  int reuse = 1;
  if (::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof reuse) != 0)
    return last_socket_error();
  return 0;
}

// A new connection, non-blocking and close-on-exec; invalid when none is waiting.
inline Socket accept_connection(socket_t listener) {
#ifdef __linux__
  return Socket(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
#else
  return with_socket_flags(Socket(::accept(listener, nullptr, nullptr)));
#endif
}

#ifdef MSG_NOSIGNAL
constexpr int kSendFlags = MSG_NOSIGNAL;
#else
constexpr int kSendFlags = 0;  // SO_NOSIGPIPE is set on the socket instead
#endif

// Bytes received (> 0), 0 when the peer closed, -1 when nothing is there now, -2 on an error.
inline std::ptrdiff_t receive_some(socket_t s, char* buf, std::size_t n) {
  ssize_t r = ::recv(s, buf, n, 0);
  if (r >= 0)
    return r;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
}

// Bytes sent (>= 0), -1 when the socket cannot take more now, -2 on an error.
inline std::ptrdiff_t send_some(socket_t s, const char* data, std::size_t n) {
  ssize_t r = ::send(s, data, n, kSendFlags);
  if (r >= 0)
    return r;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
}

inline void shutdown_send(socket_t s) {
  ::shutdown(s, SHUT_WR);
}

// poll(): the number of ready entries, 0 on timeout or interruption, -1 on an error (errno set).
inline int poll_sockets(std::vector<PollFd>& fds, int timeout_ms) {
  int n = ::poll(fds.data(), static_cast<nfds_t>(fds.size()), timeout_ms);
  if (n < 0 && errno == EINTR) {
    for (auto& p : fds)
      p.revents = 0;
    return 0;
  }
  return n;
}

// Waits for a non-blocking connect() in progress; true when it succeeded.
inline bool wait_connected(socket_t s, Clock::time_point until) {
  PollFd p{s, POLLOUT, 0};
  int err = 0;
  socklen_t len = sizeof err;
  return ::poll(&p, 1, ms_until(until)) == 1 && ::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
}

inline bool connect_in_progress() {
  return errno == EINPROGRESS;
}

// True when the socket's receive queue already holds the whole next TLS record (peeked, not read).
inline bool whole_tls_record_queued(socket_t s) {
  unsigned char head[5];
  int queued = 0;
  if (s < 0 || ::ioctl(s, FIONREAD, &queued) != 0 || queued < 5 ||
      ::recv(s, head, sizeof head, MSG_PEEK | MSG_DONTWAIT) != 5)
    return false;
  const bool tls_record = head[0] >= 20 && head[0] <= 23 && head[1] == 3;
  return tls_record && queued >= 5 + (head[3] << 8 | head[4]);
}

// One line of Linux's /proc/net/tcp or /proc/net/tcp6: both endpoints (address bytes as in memory: the kernel
// prints each 32-bit word in host order, "0100007F" is 127.0.0.1 on little-endian machines), the TCP state and
// the owner's uid. nullopt for the header and anything that does not parse.
struct ProcTcpEntry {
  unsigned char local[16] = {}, remote[16] = {};
  std::size_t address_size = 0;  // 4 or 16
  int local_port = 0, remote_port = 0, state = 0;
  unsigned long uid = 0;
};

// The first `most` fields of a line separated by spaces or tabs.
inline std::vector<std::string_view> whitespace_fields(std::string_view line, std::size_t most) {
  std::vector<std::string_view> fields;
  for (std::size_t p = 0; p < line.size() && fields.size() < most;) {
    while (p < line.size() && (line[p] == ' ' || line[p] == '\t'))
      ++p;
    std::size_t e = p;
    while (e < line.size() && line[e] != ' ' && line[e] != '\t')
      ++e;
    if (e > p)
      fields.push_back(line.substr(p, e - p));
    p = e;
  }
  return fields;
}

inline int hex_value(char c);  // [T]

// 1 to 16 hex digits, either case.
inline bool parse_hex(std::string_view h, unsigned long long& v) {
  if (h.empty() || h.size() > 16)
    return false;
  v = 0;
  for (char c : h) {
    const int d = hex_value(c);
    if (d < 0)
      return false;
    v = v << 4 | static_cast<unsigned>(d);
  }
  return true;
}

// "0100007F:1F90" (IPv4) or 32 hex digits and a port (IPv6), of the same size as the entry's other endpoint.
inline bool parse_proc_endpoint(std::string_view f, ProcTcpEntry& e, unsigned char* address, int& port) {
  const std::size_t colon = f.find(':');
  if (colon == std::string_view::npos || (colon != 8 && colon != 32) || f.size() != colon + 5)
    return false;
  if (e.address_size != 0 && e.address_size != colon / 2)
    return false;
  e.address_size = colon / 2;
  for (std::size_t w = 0; w < colon / 8; ++w) {
    unsigned long long v = 0;
    if (!parse_hex(f.substr(w * 8, 8), v))
      return false;
    const std::uint32_t word = static_cast<std::uint32_t>(v);
    std::memcpy(address + 4 * w, &word, 4);
  }
  unsigned long long pv = 0;
  if (!parse_hex(f.substr(colon + 1), pv))
    return false;
  port = static_cast<int>(pv);
  return true;
}

inline std::optional<ProcTcpEntry> parse_proc_net_tcp_line(std::string_view line) {
  const std::vector<std::string_view> fields = whitespace_fields(line, 8);
  if (fields.size() < 8)
    return std::nullopt;
  ProcTcpEntry e;
  unsigned long long state = 0;
  if (!parse_proc_endpoint(fields[1], e, e.local, e.local_port) ||
      !parse_proc_endpoint(fields[2], e, e.remote, e.remote_port) || !parse_hex(fields[3], state) || state > 0xFF)
    return std::nullopt;
  e.state = static_cast<int>(state);
  const std::string_view uid = fields[7];
  if (uid.empty() || uid.size() > 10 || uid.find_first_not_of("0123456789") != std::string_view::npos)
    return std::nullopt;
  unsigned long long uid_value = 0;
  for (char c : uid)
    uid_value = uid_value * 10 + static_cast<unsigned>(c - '0');
  if (uid_value > 0xFFFFFFFFull)
    return std::nullopt;
  e.uid = static_cast<unsigned long>(uid_value);
  return e;
}

// The address bytes and port of a socket address (IPv4 or IPv6); false for other families.
inline bool address_bytes(const sockaddr_storage& ss, const unsigned char*& bytes, std::size_t& size, int& port) {
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    bytes = reinterpret_cast<const unsigned char*>(&a->sin_addr);
    size = 4;
    port = ntohs(a->sin_port);
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    bytes = reinterpret_cast<const unsigned char*>(&a->sin6_addr);
    size = 16;
    port = ntohs(a->sin6_port);
    return true;
  }
  return false;
}

// Linux: the connecting socket is found in /proc/net/tcp{,6} (its local end is our peer, its remote end us) and
// its owner's uid compared with our effective uid. Elsewhere, or when it cannot be found: unknown.
inline PeerUser peer_user(socket_t s) {
#ifdef __linux__
  sockaddr_storage peer{}, self{};
  socklen_t peer_len = sizeof peer, self_len = sizeof self;
  const unsigned char *peer_bytes = nullptr, *self_bytes = nullptr;
  std::size_t peer_size = 0, self_size = 0;
  int peer_port = 0, self_port = 0;
  if (::getpeername(s, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&self), &self_len) != 0 ||
      !address_bytes(peer, peer_bytes, peer_size, peer_port) || !address_bytes(self, self_bytes, self_size, self_port))
    return PeerUser::unknown;
  Fd table(::open(peer.ss_family == AF_INET6 ? "/proc/net/tcp6" : "/proc/net/tcp", O_RDONLY | O_CLOEXEC));
  if (!table.valid())
    return PeerUser::unknown;
  std::string text, line;
  char buf[16384];
  for (ssize_t n; (n = ::read(table.get(), buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR);) {
    text.append(buf, static_cast<std::size_t>(n > 0 ? n : 0));
    std::size_t start = 0;
    for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::optional<ProcTcpEntry> e = parse_proc_net_tcp_line(std::string_view(text).substr(start, nl - start));
      constexpr int kTimeWait = 6, kListen = 10;
      if (e && e->state != kTimeWait && e->state != kListen && e->address_size == peer_size &&
          e->local_port == peer_port && e->remote_port == self_port &&
          std::memcmp(e->local, peer_bytes, peer_size) == 0 && std::memcmp(e->remote, self_bytes, self_size) == 0)
        return e->uid == ::geteuid() ? PeerUser::same : PeerUser::other;
    }
    text.erase(0, start);
  }
  return PeerUser::unknown;
#else
  (void)s;
  return PeerUser::unknown;
#endif
}

// Lets another thread wake a poll() (LoopbackListener::cancel): a non-blocking self-pipe.
class Waker {
 public:
  Waker() {
    int fds[2];
#ifdef __linux__
    const bool made = ::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0;
#else
    const bool made = ::pipe(fds) == 0 && set_fd_flags(fds[0], true) && set_fd_flags(fds[1], true);
#endif
    if (!made)
      throw Error(ErrorKind::io, "could not create a pipe: " + os_error_text(errno));
    read_ = Fd(fds[0]);
    write_ = Fd(fds[1]);
  }
  [[nodiscard]] socket_t handle() const noexcept {
    return read_.get();
  }
  void notify() noexcept {
    char c = 1;
    ssize_t n = ::write(write_.get(), &c, 1);
    (void)n;  // a full pipe is already a wake-up
  }
  void drain() noexcept {
    char buf[64];
    while (::read(read_.get(), buf, sizeof buf) > 0) {
    }
  }

 private:
  Fd read_, write_;
};

// The system's trusted CA certificates into `store` through its file lookup: the default CA file (SSL_CERT_FILE
// honoured, as OpenSSL does). Called only when an issuer is missing ([5] the trust store).
inline void load_system_roots(X509_STORE*, X509_LOOKUP* file) {
  X509_LOOKUP_load_file(file, nullptr, X509_FILETYPE_DEFAULT);
  ERR_clear_error();  // a missing default file is no error (as in X509_STORE_set_default_paths)
}

// ---- files

inline std::string parent_dir(const std::string& path) {
  std::size_t slash = path.rfind('/');
  if (slash == std::string::npos)
    return ".";
  if (slash == 0)
    return "/";
  return path.substr(0, slash);
}

// mkdir -p with mode 0700 for the directories it creates.
inline void make_private_dirs(const std::string& dir) {
  if (dir.empty() || dir == "." || dir == "/")
    return;
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0)
    return;
  make_private_dirs(parent_dir(dir));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    throw Error(ErrorKind::io, "cannot create directory '" + dir + "': " + os_error_text(errno));
}

// Opens a token or lock file (`what` names it in errors) so that another local user can neither redirect nor
// block the open: O_NOFOLLOW (a symbolic link at `path` is refused, nothing is created where it points),
// O_NONBLOCK (a FIFO does not hang the open), then fstat: a regular file owned by the effective user, else an io
// error naming the path. Invalid, errno ENOENT, when the file does not exist and `flags` has no O_CREAT.
inline Fd open_own_file(const std::string& path, int flags, const char* what, struct stat& st) {
  Fd fd(::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600));
  if (!fd.valid()) {
    const int err = errno;
    if (err == ENOENT && !(flags & O_CREAT))
      return fd;
    if (err == ELOOP)
      throw Error(ErrorKind::io, std::string(what) + " '" + path + "' is a symbolic link; refused (remove it)");
    throw Error(ErrorKind::io, std::string("cannot open ") + what + " '" + path + "': " + os_error_text(err));
  }
  if (::fstat(fd.get(), &st) != 0)
    throw Error(ErrorKind::io, std::string("cannot read ") + what + " '" + path + "': " + os_error_text(errno));
  if (!S_ISREG(st.st_mode)) {
    const char* type = S_ISFIFO(st.st_mode)   ? "a FIFO"
                       : S_ISDIR(st.st_mode)  ? "a directory"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "a device";
    throw Error(ErrorKind::io, std::string(what) + " '" + path + "' is " + type + ", not a regular file; refused");
  }
  if (st.st_uid != ::geteuid())
    throw Error(ErrorKind::io, std::string(what) + " '" + path + "' belongs to another user (uid " +
                                   std::to_string(st.st_uid) + ", this process runs as uid " +
                                   std::to_string(::geteuid()) + "); refused");
  return fd;
}

// Reads a whole file (at most APS_AUTH_MAX_RESPONSE_BYTES and a little); false when it does not exist.
inline bool read_file_if_exists(const std::string& path, FileContent& out) {
  struct stat st {};
  Fd fd = open_own_file(path, O_RDONLY, "token file", st);
  if (!fd.valid())
    return false;
  if ((st.st_mode & 077) != 0) {
    out.shared = true;
    out.access = "mode " + std::to_string((st.st_mode >> 6) & 7) + std::to_string((st.st_mode >> 3) & 7) +
                 std::to_string(st.st_mode & 7);
  }
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd.get(), buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0)
      out.text.append(buf, static_cast<std::size_t>(n));
    if (out.text.size() > static_cast<std::size_t>(APS_AUTH_MAX_RESPONSE_BYTES))
      break;
  }
  if (n < 0)
    throw Error(ErrorKind::io, "cannot read token file '" + path + "': " + os_error_text(errno));
  return true;
}

inline std::string private_file_hint(const std::string& path) {
  return "run: chmod 600 '" + path + "'";
}

inline std::string path_join(const std::string& dir, const std::string& name) {
  return dir + "/" + name;
}

// fsync(); on macOS F_FULLFSYNC, since its fsync() leaves the data in the drive's cache (fsync() where the file
// system does not support F_FULLFSYNC).
inline bool sync_to_disk(int fd) {
#ifdef F_FULLFSYNC
  if (::fcntl(fd, F_FULLFSYNC) == 0)
    return true;
#endif
  return ::fsync(fd) == 0;
}

// Replaces the file atomically with `data`: a temp file in the same directory (mode 0600 from creation,
// whatever the umask), fsync, rename over the file, fsync of the directory.
inline void replace_file(const std::string& path, const std::string& data) {
  const std::string dir = parent_dir(path);
  make_private_dirs(dir);
  std::string tmp;
  Fd fd;
  for (int attempt = 0; !fd.valid() && attempt < 10; ++attempt) {
    tmp = path + ".tmp-" + random_urlsafe(6);
    fd = Fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.valid() && errno != EEXIST)
      break;
  }
  auto fail = [&](const char* step, int err) {
    fd.close();
    ::unlink(tmp.c_str());
    throw Error(ErrorKind::io, "cannot save the token to '" + path + "' (" + step + ": " + os_error_text(err) + ")");
  };
  if (!fd.valid())
    fail("create", errno);
  if (::fchmod(fd.get(), 0600) != 0)
    fail("chmod", errno);
  for (std::size_t off = 0; off < data.size();) {
    ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      fail("write", errno);
    off += static_cast<std::size_t>(n);
  }
  if (!sync_to_disk(fd.get()))
    fail("fsync", errno);
  if (!fd.close_checked())
    fail("close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    fail("rename", errno);
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_CLOEXEC));
  if (dfd.valid())
    sync_to_disk(dfd.get());  // make the rename itself durable
}

inline void remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    throw Error(ErrorKind::io, "cannot delete token file '" + path + "': " + os_error_text(errno));
}

struct FileLock : StoreLock {
  Fd fd;  // closing releases the flock
};

// `lock_path` opened as open_own_file() does (created 0600 when missing), not locked yet.
inline std::unique_ptr<FileLock> open_lock_file(const std::string& lock_path) {
  make_private_dirs(parent_dir(lock_path));
  auto l = std::make_unique<FileLock>();
  struct stat st {};
  l->fd = open_own_file(lock_path, O_RDWR | O_CREAT, "lock file", st);
  return l;
}

// One attempt at an exclusive flock() that does not wait: 1 taken, 0 held by someone else, -1 error (errno).
inline int try_lock(FileLock& l) {
  if (::flock(l.fd.get(), LOCK_EX | LOCK_NB) == 0)
    return 1;
  return errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
}

// $XDG_STATE_HOME, else ~/.local/state (macOS: ~/Library/Application Support, where its applications keep state).
inline std::string default_state_dir() {
  std::string base = env("XDG_STATE_HOME");
  if (!base.empty() && base.front() == '/')
    return base;
  std::string home = env("HOME");
  if (home.empty())
    throw Error(ErrorKind::usage, "neither XDG_STATE_HOME nor HOME is set; give a token file path");
#ifdef __APPLE__
  return home + "/Library/Application Support";
#else
  return home + "/.local/state";
#endif
}

// ---- processes

// Whether an environment entry's value (after the first '=') contains one of `secrets` (4 characters or more).
inline bool value_holds_secret(std::string_view entry, const std::vector<std::string>& secrets) {
  const std::size_t eq = entry.find('=', 1);
  const std::string_view value = eq == std::string_view::npos ? std::string_view() : entry.substr(eq + 1);
  return std::any_of(secrets.begin(), secrets.end(), [&](const std::string& secret) {
    return secret.size() >= 4 && value.find(secret) != std::string_view::npos;
  });
}

inline char** process_environment() {
#ifdef __APPLE__
  return *_NSGetEnviron();
#else
  return ::environ;
#endif
}

// Starts argv without a shell and without waiting for it: double fork, so no zombie is left, and a
// close-on-exec pipe tells whether exec succeeded. The child's stdin/stdout/stderr are /dev/null (the caller's
// stdout may be printing JSON); its environment is ours without the variables whose value holds a secret (built
// before fork: the child only swaps the pointer).
inline bool spawn_detached(const std::vector<std::string>& args, const std::vector<std::string>& secrets = {}) {
  if (args.empty())
    return false;
  std::vector<char*> argv;
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (char** e = process_environment(); e && *e; ++e)
    if (!value_holds_secret(*e, secrets))
      envp.push_back(*e);
  envp.push_back(nullptr);
  int fds[2];
#ifdef __linux__
  if (::pipe2(fds, O_CLOEXEC) != 0)
    return false;
#else
  if (::pipe(fds) != 0)
    return false;
  set_fd_flags(fds[0], false);
  set_fd_flags(fds[1], false);
#endif
  Fd exec_failed(fds[0]), report(fds[1]);
  pid_t child = ::fork();
  if (child < 0)
    return false;
  if (child == 0) {
    exec_failed.close();
    pid_t grandchild = ::fork();
    if (grandchild != 0)
      ::_exit(grandchild < 0 ? 1 : 0);
    ::setsid();
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
#ifdef __APPLE__
    *_NSGetEnviron() = envp.data();
#else
    ::environ = envp.data();
#endif
    ::execvp(argv[0], argv.data());
    int err = errno;
    ssize_t ignored = ::write(report.get(), &err, sizeof err);
    (void)ignored;
    ::_exit(127);
  }
  report.close();
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  int err = 0;
  ssize_t n;
  do {
    n = ::read(exec_failed.get(), &err, sizeof err);
  } while (n < 0 && errno == EINTR);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 && n == 0;
}

// Opens the URL with the desktop's opener, without a shell.
inline bool open_in_default_browser(const std::string& url, const std::vector<std::string>& secrets) {
#ifdef __APPLE__
  return spawn_detached({"open", url}, secrets);
#else
  return spawn_detached({"xdg-open", url}, secrets);
#endif
}

// ---- clock

// system_clock::now() < t, cheaply when t is not near: CLOCK_REALTIME_COARSE is a vDSO read of the time at the
// last tick (~5 ns, against ~20-35 ns for system_clock::now()) and lags CLOCK_REALTIME by less than its
// resolution, so a coarse time further than a second (plus twice that resolution) before t decides it. Nearer,
// or where there is no coarse clock, system_clock::now() decides.
inline bool now_before(std::chrono::system_clock::time_point t) {
#if defined(__linux__) && defined(CLOCK_REALTIME_COARSE)
  static const std::chrono::nanoseconds margin = [] {
    timespec res{};
    if (::clock_getres(CLOCK_REALTIME_COARSE, &res) != 0)
      return std::chrono::nanoseconds::max();
    return std::chrono::seconds(1) + 2 * (std::chrono::seconds(res.tv_sec) + std::chrono::nanoseconds(res.tv_nsec));
  }();
  timespec ts{};
  if (margin != std::chrono::nanoseconds::max() && ::clock_gettime(CLOCK_REALTIME_COARSE, &ts) == 0) {
    const auto coarse = std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
    if (coarse + margin < t.time_since_epoch())
      return true;
  }
#endif
  return std::chrono::system_clock::now() < t;
}

#else  // ---- Windows: Winsock and the wide-character Win32 API, UTF-8 at the edges ----------------------------

// ---- text at the edges: the library speaks UTF-8, Windows UTF-16

inline std::wstring to_wide(std::string_view s) {
  if (s.empty())
    return {};
  int n = ::MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0);
  std::wstring w(static_cast<std::size_t>(n > 0 ? n : 0), L'\0');
  if (n > 0)
    ::MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), &w[0], n);
  return w;
}

inline std::string to_utf8(std::wstring_view w) {
  if (w.empty())
    return {};
  int n = ::WideCharToMultiByte(CP_UTF8, 0, w.data(), static_cast<int>(w.size()), nullptr, 0, nullptr, nullptr);
  std::string s(static_cast<std::size_t>(n > 0 ? n : 0), '\0');
  if (n > 0)
    ::WideCharToMultiByte(CP_UTF8, 0, w.data(), static_cast<int>(w.size()), &s[0], n, nullptr, nullptr);
  return s;
}

// ---- environment

inline std::string env(const char* name) {
  const std::wstring wname = to_wide(name);
  DWORD n = ::GetEnvironmentVariableW(wname.c_str(), nullptr, 0);
  if (n == 0)
    return {};
  std::wstring value(n, L'\0');
  n = ::GetEnvironmentVariableW(wname.c_str(), &value[0], n);
  value.resize(n);
  return to_utf8(value);
}

inline std::string trusted_env(const char* name) {
  return env(name);
}  // no set-user-ID programs on Windows

// ---- errors

inline int last_os_error() {
  return static_cast<int>(::GetLastError());
}
inline int last_socket_error() {
  return ::WSAGetLastError();
}

inline std::string os_error_text(int err) {
  wchar_t* buf = nullptr;
  DWORD n =
      ::FormatMessageW(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
                       nullptr, static_cast<DWORD>(err), 0, reinterpret_cast<wchar_t*>(&buf), 0, nullptr);
  std::string text = n ? to_utf8(std::wstring_view(buf, n)) : "error " + std::to_string(err);
  if (buf)
    ::LocalFree(buf);
  while (!text.empty() && std::string_view(" .\r\n").find(text.back()) != std::string_view::npos)
    text.pop_back();
  return text;
}

// WSAEACCES: the port is held with SO_EXCLUSIVEADDRUSE, or reserved by Windows (an excluded port range).
inline bool is_addr_in_use(int err) {
  return err == WSAEADDRINUSE || err == WSAEACCES;
}
inline bool is_no_ipv6(int err) {
  return err == WSAEADDRNOTAVAIL || err == WSAEAFNOSUPPORT;
}

// ---- sockets

using socket_t = SOCKET;
constexpr socket_t kNoSocket = INVALID_SOCKET;
using PollFd = WSAPOLLFD;

// Winsock is started once per process and left running (cpp-httplib starts it too).
inline bool winsock_ready() {
  static const bool ready = [] {
    WSADATA data;
    return ::WSAStartup(MAKEWORD(2, 2), &data) == 0;
  }();
  return ready;
}

struct SocketTraits {
  using native = SOCKET;
  static constexpr SOCKET invalid() noexcept { return INVALID_SOCKET; }
  static bool close(SOCKET s) noexcept { return ::closesocket(s) == 0; }
};
using Socket = Handle<SocketTraits>;

// Not inherited by child processes, non-blocking.
inline bool set_socket_flags(socket_t s) {
  u_long nonblocking = 1;
  return ::SetHandleInformation(reinterpret_cast<HANDLE>(s), HANDLE_FLAG_INHERIT, 0) &&
         ::ioctlsocket(s, FIONBIO, &nonblocking) == 0;
}

inline Socket stream_socket(int family) {
  if (!winsock_ready())
    return Socket();
  Socket s(::socket(family, SOCK_STREAM, IPPROTO_TCP));
  if (s.valid() && !set_socket_flags(s.get()))
    s.close();
  return s;
}

// SO_EXCLUSIVEADDRUSE: no other socket may bind the port, even with SO_REUSEADDR (which on Windows lets a
// second socket take over a port in use, and so receive the code). SO_REUSEADDR is never set.
inline int set_listen_options(socket_t s) {
  BOOL one = TRUE;
  if (::setsockopt(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, reinterpret_cast<const char*>(&one), sizeof one) != 0)
    return last_socket_error();
  return 0;
}

inline Socket accept_connection(socket_t listener) {
  Socket s(::accept(listener, nullptr, nullptr));
  if (s.valid() && !set_socket_flags(s.get()))
    s.close();
  return s;
}

inline bool would_block(int err) {
  return err == WSAEWOULDBLOCK || err == WSAEINTR || err == WSAEINPROGRESS;
}

inline std::ptrdiff_t receive_some(socket_t s, char* buf, std::size_t n) {
  int r = ::recv(s, buf, static_cast<int>(std::min<std::size_t>(n, INT_MAX)), 0);
  if (r >= 0)
    return r;
  return would_block(last_socket_error()) ? -1 : -2;
}

inline std::ptrdiff_t send_some(socket_t s, const char* data, std::size_t n) {
  int r = ::send(s, data, static_cast<int>(std::min<std::size_t>(n, INT_MAX)), 0);
  if (r >= 0)
    return r;
  return would_block(last_socket_error()) ? -1 : -2;
}

inline void shutdown_send(socket_t s) {
  ::shutdown(s, SD_SEND);
}

inline int poll_sockets(std::vector<PollFd>& fds, int timeout_ms) {
  int n = ::WSAPoll(fds.data(), static_cast<ULONG>(fds.size()), timeout_ms);
  return n == SOCKET_ERROR ? -1 : n;
}

// Waits for a non-blocking connect() in progress; true when it succeeded. select(), not WSAPoll(): before
// Windows 10 2004, WSAPoll() does not report a refused connection.
inline bool wait_connected(socket_t s, Clock::time_point until) {
  fd_set writable, failed;
  FD_ZERO(&writable);
  FD_ZERO(&failed);
  FD_SET(s, &writable);
  FD_SET(s, &failed);
  const int ms = ms_until(until);
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  return ::select(0, nullptr, &writable, &failed, &tv) == 1 && FD_ISSET(s, &writable);
}

inline bool connect_in_progress() {
  return would_block(last_socket_error());
}

inline bool whole_tls_record_queued(socket_t s) {
  unsigned char head[5];
  u_long queued = 0;
  if (s == kNoSocket || ::ioctlsocket(s, FIONREAD, &queued) != 0 || queued < 5 ||
      ::recv(s, reinterpret_cast<char*>(head), sizeof head, MSG_PEEK) != 5)
    return false;
  const bool tls_record = head[0] >= 20 && head[0] <= 23 && head[1] == 3;
  return tls_record && queued >= 5u + static_cast<u_long>(head[3] << 8 | head[4]);
}

inline Socket listen_loopback_socket(int family, int port, int& err);

// Lets another thread wake a WSAPoll() (LoopbackListener::cancel): a connected pair of loopback sockets, since
// WSAPoll() waits on sockets only.
class Waker {
 public:
  Waker() {
    int err = 0;
    Socket listener = listen_loopback_socket(AF_INET, 0, err);
    sockaddr_in a{};
    int len = sizeof a;
    if (listener.valid() && ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      write_ = stream_socket(AF_INET);
      if (write_.valid() && ::connect(write_.get(), reinterpret_cast<sockaddr*>(&a), len) != 0 &&
          !connect_in_progress())
        write_.close();
      for (int i = 0; i < 200 && write_.valid() && !read_.valid(); ++i) {
        read_ = accept_connection(listener.get());
        if (!read_.valid())
          ::Sleep(5);
      }
    }
    if (!read_.valid() || !write_.valid())
      throw Error(ErrorKind::io, "could not create a loopback socket pair: " + os_error_text(last_socket_error()));
  }
  [[nodiscard]] socket_t handle() const noexcept { return read_.get(); }
  void notify() noexcept {
    char c = 1;
    (void)::send(write_.get(), &c, 1, 0);  // a full buffer is already a wake-up
  }
  void drain() noexcept {
    char buf[64];
    while (::recv(read_.get(), buf, sizeof buf, 0) > 0) {
    }
  }

 private:
  Socket read_, write_;
};

// ---- trust

// The Windows ROOT store (OpenSSL cannot read it itself) and the default CA file (SSL_CERT_FILE) into `store`.
inline void load_system_roots(X509_STORE* store, X509_LOOKUP* file) {
  X509_LOOKUP_load_file(file, nullptr, X509_FILETYPE_DEFAULT);
  if (HCERTSTORE system = ::CertOpenSystemStoreW(0, L"ROOT")) {
    for (PCCERT_CONTEXT c = nullptr; (c = ::CertEnumCertificatesInStore(system, c)) != nullptr;) {
      const unsigned char* der = c->pbCertEncoded;
      if (X509* x = d2i_X509(nullptr, &der, static_cast<long>(c->cbCertEncoded))) {
        X509_STORE_add_cert(store, x);  // a duplicate is no error worth reporting
        X509_free(x);
      }
    }
    ::CertCloseStore(system, 0);
  }
  ERR_clear_error();
}

// ---- files

struct FileTraits {
  using native = HANDLE;
  static HANDLE invalid() noexcept { return INVALID_HANDLE_VALUE; }
  static bool close(HANDLE h) noexcept { return ::CloseHandle(h) != 0; }
};
using File = Handle<FileTraits>;

inline std::string parent_dir(const std::string& path) {
  std::size_t slash = path.find_last_of("/\\");
  if (slash == std::string::npos)
    return ".";
  if (slash == 0 || (slash == 2 && path[1] == ':'))
    return path.substr(0, slash + 1);  // "\" or "C:\"
  return path.substr(0, slash);
}

inline std::string path_join(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '\\' || dir.back() == '/' ? dir + name : dir + "\\" + name;
}

// The user SID of an access token as a string ("S-1-5-21-..."); closes the token. nullopt on failure (the error
// in GetLastError()).
inline std::optional<std::wstring> token_user_sid(HANDLE token) {
  std::vector<unsigned char> buf(256);
  DWORD needed = 0;
  BOOL ok = ::GetTokenInformation(token, TokenUser, buf.data(), static_cast<DWORD>(buf.size()), &needed);
  if (!ok && ::GetLastError() == ERROR_INSUFFICIENT_BUFFER) {
    buf.resize(needed);
    ok = ::GetTokenInformation(token, TokenUser, buf.data(), static_cast<DWORD>(buf.size()), &needed);
  }
  ::CloseHandle(token);
  wchar_t* text = nullptr;
  if (!ok || !::ConvertSidToStringSidW(reinterpret_cast<TOKEN_USER*>(buf.data())->User.Sid, &text))
    return std::nullopt;
  std::wstring sid(text);
  ::LocalFree(text);
  return sid;
}

// The SID of the user this process runs as, as a string ("S-1-5-21-...").
inline std::wstring current_user_sid() {
  HANDLE token = nullptr;
  if (!::OpenProcessToken(::GetCurrentProcess(), TOKEN_QUERY, &token))
    throw Error(ErrorKind::io, "cannot read this process's user: " + os_error_text(last_os_error()));
  std::optional<std::wstring> sid = token_user_sid(token);
  if (!sid)
    throw Error(ErrorKind::io, "cannot read this process's user: " + os_error_text(last_os_error()));
  return *sid;
}

// The user SID of process `pid` as a string; nullopt with `denied` set when we may not look (another user's
// process, for a user who is not an administrator).
inline std::optional<std::wstring> process_user_sid(DWORD pid, bool& denied) {
  denied = false;
  HANDLE process = ::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
  if (!process) {
    denied = ::GetLastError() == ERROR_ACCESS_DENIED;
    return std::nullopt;
  }
  HANDLE token = nullptr;
  const BOOL opened = ::OpenProcessToken(process, TOKEN_QUERY, &token);
  if (!opened)
    denied = ::GetLastError() == ERROR_ACCESS_DENIED;
  ::CloseHandle(process);
  if (!opened)
    return std::nullopt;
  return token_user_sid(token);
}

// The process owning the connecting end of an accepted loopback connection (GetExtendedTcpTable: the row whose
// local end is our peer and remote end us), then its user SID against ours. A process we may not open belongs to
// another user.
inline PeerUser peer_user(socket_t s) {
  sockaddr_storage peer{}, self{};
  int peer_len = sizeof peer, self_len = sizeof self;
  if (::getpeername(s, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&self), &self_len) != 0 || peer.ss_family != self.ss_family)
    return PeerUser::unknown;
  const ULONG family = peer.ss_family;
  std::vector<unsigned char> buf;
  DWORD size = 0;
  for (int attempt = 0; attempt < 4; ++attempt) {
    buf.resize(size);
    const DWORD r = ::GetExtendedTcpTable(buf.empty() ? nullptr : buf.data(), &size, FALSE, family,
                                          TCP_TABLE_OWNER_PID_CONNECTIONS, 0);
    if (r == NO_ERROR)
      break;
    if (r != ERROR_INSUFFICIENT_BUFFER)
      return PeerUser::unknown;
    size += 4096;  // the table may grow between the two calls
  }
  if (buf.empty())
    return PeerUser::unknown;
  DWORD pid = 0;
  bool found = false;
  if (family == AF_INET) {
    const auto* p = reinterpret_cast<const sockaddr_in*>(&peer);
    const auto* me = reinterpret_cast<const sockaddr_in*>(&self);
    const auto* table = reinterpret_cast<const MIB_TCPTABLE_OWNER_PID*>(buf.data());
    for (DWORD i = 0; i < table->dwNumEntries && !found; ++i) {
      const MIB_TCPROW_OWNER_PID& row = table->table[i];
      if (row.dwLocalAddr == p->sin_addr.s_addr && static_cast<u_short>(row.dwLocalPort) == p->sin_port &&
          row.dwRemoteAddr == me->sin_addr.s_addr && static_cast<u_short>(row.dwRemotePort) == me->sin_port) {
        pid = row.dwOwningPid;
        found = true;
      }
    }
  } else if (family == AF_INET6) {
    const auto* p = reinterpret_cast<const sockaddr_in6*>(&peer);
    const auto* me = reinterpret_cast<const sockaddr_in6*>(&self);
    const auto* table = reinterpret_cast<const MIB_TCP6TABLE_OWNER_PID*>(buf.data());
    for (DWORD i = 0; i < table->dwNumEntries && !found; ++i) {
      const MIB_TCP6ROW_OWNER_PID& row = table->table[i];
      if (std::memcmp(row.ucLocalAddr, &p->sin6_addr, 16) == 0 &&
          static_cast<u_short>(row.dwLocalPort) == p->sin6_port &&
          std::memcmp(row.ucRemoteAddr, &me->sin6_addr, 16) == 0 &&
          static_cast<u_short>(row.dwRemotePort) == me->sin6_port) {
        pid = row.dwOwningPid;
        found = true;
      }
    }
  }
  if (!found)
    return PeerUser::unknown;
  bool denied = false;
  const std::optional<std::wstring> sid = process_user_sid(pid, denied);
  if (!sid)
    return denied ? PeerUser::other : PeerUser::unknown;
  return *sid == current_user_sid() ? PeerUser::same : PeerUser::other;
}

// A security descriptor whose DACL grants the current user full access and nobody else anything (the 0600 /
// 0700 of POSIX), protected from inheriting the parent directory's entries.
class OwnerOnly {
 public:
  explicit OwnerOnly(bool directory) {
    const std::wstring sddl =
        std::wstring(L"D:P(A;") + (directory ? L"OICI" : L"") + L";FA;;;" + current_user_sid() + L")";
    if (!::ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl.c_str(), SDDL_REVISION_1, &sd_, nullptr))
      throw Error(ErrorKind::io, "cannot build an owner-only security descriptor: " + os_error_text(last_os_error()));
    attributes_.nLength = sizeof attributes_;
    attributes_.lpSecurityDescriptor = sd_;
    attributes_.bInheritHandle = FALSE;
  }
  OwnerOnly(const OwnerOnly&) = delete;
  OwnerOnly& operator=(const OwnerOnly&) = delete;
  ~OwnerOnly() { ::LocalFree(sd_); }
  SECURITY_ATTRIBUTES* attributes() { return &attributes_; }

 private:
  PSECURITY_DESCRIPTOR sd_ = nullptr;
  SECURITY_ATTRIBUTES attributes_{};
};

// mkdir -p; the directories it creates grant only the current user access.
inline void make_private_dirs(const std::string& dir) {
  if (dir.empty() || dir == "." || dir.back() == '\\' || dir.back() == '/' || dir.back() == ':')
    return;
  const std::wstring wdir = to_wide(dir);
  if (::GetFileAttributesW(wdir.c_str()) != INVALID_FILE_ATTRIBUTES)
    return;
  make_private_dirs(parent_dir(dir));
  OwnerOnly owner_only(true);
  if (!::CreateDirectoryW(wdir.c_str(), owner_only.attributes()) && ::GetLastError() != ERROR_ALREADY_EXISTS)
    throw Error(ErrorKind::io, "cannot create directory '" + dir + "': " + os_error_text(last_os_error()));
}

// Whether a SID may hold access to a private file: the current user, SYSTEM and the Administrators group (the
// root of Windows, who can take any file anyway).
inline bool trusted_sid(PSID sid, const std::wstring& user) {
  wchar_t* text = nullptr;
  if (!::ConvertSidToStringSidW(sid, &text))
    return false;
  const std::wstring s(text);
  ::LocalFree(text);
  return s == user || s == L"S-1-5-18" || s == L"S-1-5-32-544";
}

inline std::string account_name(PSID sid) {
  wchar_t name[256], domain[256];
  DWORD n = 256, d = 256;
  SID_NAME_USE use;
  if (::LookupAccountSidW(nullptr, sid, name, &n, domain, &d, &use))
    return to_utf8(d > 0 ? std::wstring(domain) + L"\\" + name : std::wstring(name));
  wchar_t* text = nullptr;
  if (!::ConvertSidToStringSidW(sid, &text))
    return "an unknown account";
  std::string s = to_utf8(text);
  ::LocalFree(text);
  return s;
}

// The accounts other than the trusted ones that the file's DACL lets read or write it ("" when none).
inline std::string others_with_access(HANDLE file) {
  PACL dacl = nullptr;
  PSECURITY_DESCRIPTOR sd = nullptr;
  if (::GetSecurityInfo(file, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, nullptr, nullptr, &dacl, nullptr, &sd) !=
      ERROR_SUCCESS)
    return "an unreadable access list";
  std::string others;
  if (!dacl)
    others = "everyone (no access list)";
  const std::wstring user = current_user_sid();
  constexpr ACCESS_MASK kReadOrWrite = FILE_READ_DATA | FILE_WRITE_DATA | FILE_APPEND_DATA | GENERIC_READ |
                                       GENERIC_WRITE | GENERIC_ALL | WRITE_DAC | WRITE_OWNER;
  for (DWORD i = 0; dacl && i < dacl->AceCount; ++i) {
    ACE_HEADER* ace = nullptr;
    if (!::GetAce(dacl, i, reinterpret_cast<void**>(&ace)) || ace->AceType != ACCESS_ALLOWED_ACE_TYPE)
      continue;
    auto* allowed = reinterpret_cast<ACCESS_ALLOWED_ACE*>(ace);
    PSID sid = &allowed->SidStart;
    if ((allowed->Mask & kReadOrWrite) && !trusted_sid(sid, user))
      others += (others.empty() ? "" : ", ") + account_name(sid);
  }
  ::LocalFree(sd);
  return others;
}

// The checks of the POSIX open_own_file() on a handle opened with FILE_FLAG_OPEN_REPARSE_POINT (a symbolic link
// or junction is opened itself, never followed): a plain disk file, not a directory, reparse point, pipe or
// device, owned by the current user (or SYSTEM or Administrators, see trusted_sid); else an io error.
inline void check_own_file(HANDLE h, const std::string& path, const char* what) {
  BY_HANDLE_FILE_INFORMATION info{};
  if (::GetFileType(h) != FILE_TYPE_DISK || !::GetFileInformationByHandle(h, &info) ||
      (info.dwFileAttributes & (FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_REPARSE_POINT)) != 0)
    throw Error(ErrorKind::io, std::string(what) + " '" + path +
                                   "' is not a regular file (a link, a directory, a pipe or a device); refused");
  PSID owner = nullptr;
  PSECURITY_DESCRIPTOR sd = nullptr;
  if (::GetSecurityInfo(h, SE_FILE_OBJECT, OWNER_SECURITY_INFORMATION, &owner, nullptr, nullptr, nullptr, &sd) !=
      ERROR_SUCCESS)
    throw Error(ErrorKind::io, std::string("cannot read the owner of ") + what + " '" + path + "'");
  const bool own = trusted_sid(owner, current_user_sid());
  const std::string who = own ? std::string() : account_name(owner);
  ::LocalFree(sd);
  if (!own)
    throw Error(ErrorKind::io, std::string(what) + " '" + path + "' belongs to another user (" + who + "); refused");
}

inline bool read_file_if_exists(const std::string& path, FileContent& out) {
  File f(::CreateFileW(to_wide(path).c_str(), GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                       nullptr, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OPEN_REPARSE_POINT, nullptr));
  if (!f.valid()) {
    const int err = last_os_error();
    if (err == ERROR_FILE_NOT_FOUND || err == ERROR_PATH_NOT_FOUND)
      return false;
    throw Error(ErrorKind::io, "cannot read token file '" + path + "': " + os_error_text(err));
  }
  check_own_file(f.get(), path, "token file");
  const std::string others = others_with_access(f.get());
  if (!others.empty()) {
    out.shared = true;
    out.access = "its access list lets " + others + " read or write it";
  }
  char buf[4096];
  DWORD n = 0;
  while (::ReadFile(f.get(), buf, sizeof buf, &n, nullptr) && n > 0) {
    out.text.append(buf, n);
    if (out.text.size() > static_cast<std::size_t>(APS_AUTH_MAX_RESPONSE_BYTES))
      return true;
  }
  if (const int err = last_os_error(); err != ERROR_SUCCESS && err != ERROR_HANDLE_EOF && n != 0)
    throw Error(ErrorKind::io, "cannot read token file '" + path + "': " + os_error_text(err));
  return true;
}

inline std::string private_file_hint(const std::string& path) {
  return "run: icacls \"" + path + "\" /inheritance:r /grant:r \"%USERNAME%:F\"";
}

// Replaces the file atomically with `data`: a temp file in the same directory, created with an owner-only access
// list, written, flushed (FlushFileBuffers), then moved over the file (MoveFileExW with REPLACE_EXISTING and
// WRITE_THROUGH).
inline void replace_file(const std::string& path, const std::string& data) {
  make_private_dirs(parent_dir(path));
  OwnerOnly owner_only(false);
  std::string tmp;
  File f;
  for (int attempt = 0; !f.valid() && attempt < 10; ++attempt) {
    tmp = path + ".tmp-" + random_urlsafe(6);
    f = File(::CreateFileW(to_wide(tmp).c_str(), GENERIC_WRITE, 0, owner_only.attributes(), CREATE_NEW,
                           FILE_ATTRIBUTE_NORMAL, nullptr));
    if (!f.valid() && ::GetLastError() != ERROR_FILE_EXISTS)
      break;
  }
  auto fail = [&](const char* step, int err) {
    f.close();
    ::DeleteFileW(to_wide(tmp).c_str());
    throw Error(ErrorKind::io, "cannot save the token to '" + path + "' (" + step + ": " + os_error_text(err) + ")");
  };
  if (!f.valid())
    fail("create", last_os_error());
  for (std::size_t off = 0; off < data.size();) {
    DWORD n = 0;
    if (!::WriteFile(f.get(), data.data() + off, static_cast<DWORD>(data.size() - off), &n, nullptr) || n == 0)
      fail("write", last_os_error());
    off += n;
  }
  if (!::FlushFileBuffers(f.get()))
    fail("flush", last_os_error());
  f.close();
  // A file another process has open (reading it, even with FILE_SHARE_DELETE) cannot be replaced: access denied
  // or a sharing violation until it closes it, which a reader does within milliseconds. Retried for 2 s. (Seen:
  // two aps-auth processes on one token file, one reading while the other saved.)
  const auto until = Clock::now() + std::chrono::seconds(2);
  const std::wstring from = to_wide(tmp), to = to_wide(path);
  while (!::MoveFileExW(from.c_str(), to.c_str(), MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)) {
    const int err = last_os_error();
    if ((err != ERROR_ACCESS_DENIED && err != ERROR_SHARING_VIOLATION) || Clock::now() >= until)
      fail("rename", err);
    ::Sleep(10);
  }
}

inline void remove_file(const std::string& path) {
  if (!::DeleteFileW(to_wide(path).c_str()) && ::GetLastError() != ERROR_FILE_NOT_FOUND &&
      ::GetLastError() != ERROR_PATH_NOT_FOUND)
    throw Error(ErrorKind::io, "cannot delete token file '" + path + "': " + os_error_text(last_os_error()));
}

struct FileLock : StoreLock {
  File file;  // closing the handle releases the lock
};

// `lock_path` (created owner-only when missing; a link is opened itself and refused), checked as check_own_file()
// does, not locked yet.
inline std::unique_ptr<FileLock> open_lock_file(const std::string& lock_path) {
  make_private_dirs(parent_dir(lock_path));
  OwnerOnly owner_only(false);
  auto l = std::make_unique<FileLock>();
  l->file = File(::CreateFileW(to_wide(lock_path).c_str(), GENERIC_READ | GENERIC_WRITE,
                               FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, owner_only.attributes(),
                               OPEN_ALWAYS, FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OPEN_REPARSE_POINT, nullptr));
  if (!l->file.valid())
    throw Error(ErrorKind::io, "cannot open lock file '" + lock_path + "': " + os_error_text(last_os_error()));
  check_own_file(l->file.get(), lock_path, "lock file");
  return l;
}

// One attempt at an exclusive LockFileEx() that does not wait: 1 taken, 0 held by someone else, -1 error.
inline int try_lock(FileLock& l) {
  OVERLAPPED at{};
  if (::LockFileEx(l.file.get(), LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &at))
    return 1;
  return ::GetLastError() == ERROR_LOCK_VIOLATION ? 0 : -1;
}

// %LOCALAPPDATA%, else %USERPROFILE%\AppData\Local.
inline std::string default_state_dir() {
  std::string base = env("LOCALAPPDATA");
  if (!base.empty())
    return base;
  std::string profile = env("USERPROFILE");
  if (profile.empty())
    throw Error(ErrorKind::usage, "neither LOCALAPPDATA nor USERPROFILE is set; give a token file path");
  return path_join(profile, "AppData\\Local");
}

// ---- processes

// One argument quoted so that CommandLineToArgvW and the C runtime read it back unchanged.
inline std::wstring quote_argument(const std::wstring& arg) {
  if (!arg.empty() && arg.find_first_of(L" \t\n\v\"") == std::wstring::npos)
    return arg;
  std::wstring out = L"\"";
  for (auto it = arg.begin();; ++it) {
    std::size_t backslashes = 0;
    for (; it != arg.end() && *it == L'\\'; ++it)
      ++backslashes;
    if (it == arg.end()) {
      out.append(backslashes * 2, L'\\');  // before the closing quote
      break;
    }
    out.append(*it == L'"' ? backslashes * 2 + 1 : backslashes, L'\\');
    out += *it;
  }
  return out + L"\"";
}

// Whether an environment entry's value (after the first '=') contains one of `secrets` (4 characters or more).
inline bool value_holds_secret(std::string_view entry, const std::vector<std::string>& secrets) {
  const std::size_t eq = entry.find('=', 1);  // "=C:=C:\dir" entries start with '='
  const std::string_view value = eq == std::string_view::npos ? std::string_view() : entry.substr(eq + 1);
  return std::any_of(secrets.begin(), secrets.end(), [&](const std::string& secret) {
    return secret.size() >= 4 && value.find(secret) != std::string_view::npos;
  });
}

// This process's environment block without the variables whose value holds a secret (CREATE_UNICODE_ENVIRONMENT).
inline std::wstring environment_without(const std::vector<std::string>& secrets) {
  std::wstring block;
  wchar_t* all = ::GetEnvironmentStringsW();
  for (const wchar_t* e = all; e && *e; e += std::wcslen(e) + 1)
    if (!value_holds_secret(to_utf8(e), secrets))
      block.append(e).push_back(L'\0');
  if (all)
    ::FreeEnvironmentStringsW(all);
  if (block.empty())
    block.push_back(L'\0');
  block.push_back(L'\0');
  return block;
}

// Starts argv with CreateProcessW, never through cmd.exe: a .bat or .cmd program would run in cmd.exe, where
// characters of the URL such as & become command separators, so they are refused. Nothing is inherited, and the
// environment is ours without the variables whose value holds a secret.
inline bool spawn_detached(const std::vector<std::string>& args, const std::vector<std::string>& secrets = {}) {
  if (args.empty())
    return false;
  std::string program = args[0];
  for (char& c : program)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const auto ends_with = [&](const char* ext) {
    return program.size() >= 4 && program.compare(program.size() - 4, 4, ext) == 0;
  };
  if (ends_with(".bat") || ends_with(".cmd"))
    return false;
  std::wstring command_line;
  for (const auto& a : args)
    command_line += (command_line.empty() ? L"" : L" ") + quote_argument(to_wide(a));
  STARTUPINFOW si{};
  si.cb = sizeof si;
  PROCESS_INFORMATION pi{};
  std::wstring environment = environment_without(secrets);
  if (!::CreateProcessW(nullptr, &command_line[0], nullptr, nullptr, FALSE,
                        CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP | CREATE_UNICODE_ENVIRONMENT, &environment[0],
                        nullptr, &si, &pi))
    return false;
  ::CloseHandle(pi.hThread);
  ::CloseHandle(pi.hProcess);
  return true;
}

// A registry string value, "" when there is none. (RRF_RT_REG_SZ takes a REG_EXPAND_SZ too, expanded; asking for
// RRF_RT_REG_EXPAND_SZ without RRF_NOEXPAND is an invalid parameter.)
inline std::wstring registry_string(HKEY root, const wchar_t* key, const wchar_t* name) {
  DWORD bytes = 0;
  const DWORD flags = RRF_RT_REG_SZ;
  if (::RegGetValueW(root, key, name, flags, nullptr, nullptr, &bytes) != ERROR_SUCCESS || bytes < sizeof(wchar_t))
    return L"";
  std::wstring value(bytes / sizeof(wchar_t), L'\0');
  if (::RegGetValueW(root, key, name, flags, nullptr, &value[0], &bytes) != ERROR_SUCCESS)
    return L"";
  value.resize(std::wcslen(value.c_str()));
  return value;
}

// The command line the user's default browser is registered with for https URLs, as Windows finds it: the
// ProgId the user chose (UrlAssociations\https\UserChoice), else the https class itself; e.g.
// "C:\...\msedge.exe" --single-argument %1. "" when there is none (a packaged app is registered without one).
inline std::wstring default_browser_command() {
  const std::wstring prog_id = registry_string(
      HKEY_CURRENT_USER, L"Software\\Microsoft\\Windows\\Shell\\Associations\\UrlAssociations\\https\\UserChoice",
      L"ProgId");
  for (const std::wstring& cls : {prog_id, std::wstring(L"https")}) {
    if (cls.empty())
      continue;
    std::wstring command = registry_string(HKEY_CLASSES_ROOT, (cls + L"\\shell\\open\\command").c_str(), nullptr);
    if (!command.empty())
      return command;
  }
  return L"";
}

// The browser's argv from its registered command line: split as Windows splits it, the URL in the place of each
// %1 or %L (appended when there is none), %* dropped. Each argument is quoted again when started, so the URL stays
// one argument whatever the registered quoting. nullopt when the command cannot be split.
inline std::optional<std::vector<std::string>> browser_argv(const std::wstring& command, const std::string& url) {
  if (command.empty())
    return std::nullopt;  // CommandLineToArgvW would answer with this program's own path
  int argc = 0;
  wchar_t** wargv = ::CommandLineToArgvW(command.c_str(), &argc);
  if (!wargv)
    return std::nullopt;
  std::vector<std::string> argv;
  bool placed = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = to_utf8(wargv[i]);
    if (i > 0 && arg == "%*")
      continue;
    for (std::size_t at = 0; i > 0 && (at = arg.find('%', at)) != std::string::npos;) {
      const char next = at + 1 < arg.size() ? arg[at + 1] : '\0';
      if (next == '1' || next == 'L' || next == 'l') {
        arg.replace(at, 2, url);
        at += url.size();
        placed = true;
      } else {
        ++at;
      }
    }
    argv.push_back(std::move(arg));
  }
  ::LocalFree(wargv);
  if (argv.empty() || argv[0].empty())
    return std::nullopt;
  if (!placed)
    argv.push_back(url);
  return argv;
}

// Opens the URL with the user's default browser, started from its registered command line with CreateProcessW
// (spawn_detached), so that it gets our environment without the variables that hold a secret. A browser
// registered without a command line (a packaged app) is opened with ShellExecuteW, which takes no environment:
// that browser gets this process's whole environment (the README says so).
inline bool open_in_default_browser(const std::string& url, const std::vector<std::string>& secrets) {
  if (auto argv = browser_argv(default_browser_command(), url))
    return spawn_detached(*argv, secrets);
  auto result = reinterpret_cast<INT_PTR>(
      ::ShellExecuteW(nullptr, L"open", to_wide(url).c_str(), nullptr, nullptr, SW_SHOWNORMAL));
  return result > 32;
}

// ---- clock

inline bool now_before(std::chrono::system_clock::time_point t) {
  return std::chrono::system_clock::now() < t;
}

#endif  // Windows

// ---- files, the same on both

// An exclusive lock on `lock_path`, held until the result is destroyed. Polled without blocking, so that a lock
// held forever (another user's process, a hung one) ends in an error after `timeout` instead of a hang.
inline std::unique_ptr<StoreLock> lock_file(const std::string& lock_path, std::chrono::milliseconds timeout) {
  std::unique_ptr<FileLock> l = open_lock_file(lock_path);
  const Clock::time_point until = Clock::now() + timeout;
  for (std::chrono::milliseconds nap(1);;
       nap = std::min<std::chrono::milliseconds>(nap * 2, std::chrono::milliseconds(100))) {
    const int got = try_lock(*l);
    if (got > 0)
      return l;
    if (got < 0)
      throw Error(ErrorKind::io, "cannot lock '" + lock_path + "': " + os_error_text(last_os_error()));
    const Clock::time_point now = Clock::now();
    if (now >= until)
      throw Error(ErrorKind::timeout, "lock file '" + lock_path + "' is held by another process; gave up after " +
                                          (timeout.count() % 1000 == 0 ? std::to_string(timeout.count() / 1000) + " s"
                                                                       : std::to_string(timeout.count()) + " ms") +
                                          " (FileTokenStore::set_lock_timeout)");
    std::this_thread::sleep_for(std::min<Clock::duration>(nap, until - now));
  }
}

// ---- sockets, the same on both: built on the calls above

inline int loopback_address(int family, int port, sockaddr_storage& ss) {
  ss = sockaddr_storage{};
  if (family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr.s6_addr[15] = 1;  // ::1
    a->sin6_port = htons(static_cast<std::uint16_t>(port));
    return static_cast<int>(sizeof(sockaddr_in6));
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&ss);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a->sin_port = htons(static_cast<std::uint16_t>(port));
  return static_cast<int>(sizeof(sockaddr_in));
}

// A listening socket on the loopback address of `family` (AF_INET or AF_INET6; IPv6 only), non-blocking, with
// set_listen_options(): no other socket can share the port. Invalid, with err set, when it cannot be had.
inline Socket listen_loopback_socket(int family, int port, int& err) {
  Socket s = stream_socket(family);
  if (!s.valid()) {
    err = last_socket_error();
    return s;
  }
  if ((err = set_listen_options(s.get())) != 0)
    return Socket();
  if (family == AF_INET6) {
    int one = 1;
    ::setsockopt(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, reinterpret_cast<const char*>(&one), sizeof one);
  }
  sockaddr_storage ss;
  const int len = loopback_address(family, port, ss);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len)) != 0 ||
      ::listen(s.get(), 64) != 0) {
    err = last_socket_error();
    return Socket();
  }
  err = 0;
  return s;
}

// 0 or the OS error.
inline int listen_loopback(int family, int port, Socket& out) {
  int err = 0;
  out = listen_loopback_socket(family, port, err);
  return err;
}

inline int local_port(socket_t s) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(s, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return 0;
  return ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

// poll() of one socket: 1 when ready, 0 on timeout, -1 on an error.
inline int wait_for(socket_t s, short events, int timeout_ms) {
  std::vector<PollFd> one{PollFd{s, events, 0}};
  return poll_sockets(one, timeout_ms);
}

inline bool readable_now(socket_t s) {
  return wait_for(s, POLLIN, 0) != 0;
}

// A connected TCP socket to host:port (non-blocking), or an invalid one when no address answered in time.
inline Socket connect_tcp(const std::string& host, int port, Clock::time_point until) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0)
    return Socket();
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> owner(found, ::freeaddrinfo);
  for (addrinfo* ai = found; ai; ai = ai->ai_next) {
    Socket s = stream_socket(ai->ai_family);
    if (!s.valid())
      continue;
    if (::connect(s.get(), ai->ai_addr, static_cast<socklen_t>(ai->ai_addrlen)) == 0)
      return s;
    if (connect_in_progress() && wait_connected(s.get(), until))
      return s;
  }
  return Socket();
}

inline bool is_ipv4_loopback_literal(const std::string& host) {
  in_addr a{};
  return ::inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

// =================================================================================================================
// [H] cpp-httplib adapter: the calls whose shape differs between cpp-httplib versions, and the workarounds for
// bugs of old versions, each saying which versions need it. Tested with Debian 12's 0.11.4, Debian 13's 0.18.7
// and upstream's 0.53.1; API differences are found by feature tests, old bugs by version number.
// =================================================================================================================

// CPPHTTPLIB_VERSION is a string in every version (0.53.1's CPPHTTPLIB_VERSION_NUM is a string too), so the
// preprocessor cannot compare it: it is read at compile time, as major * 1000000 + minor * 1000 + patch.
constexpr long httplib_version(long major, long minor, long patch) {
  return major * 1000000 + minor * 1000 + patch;
}
constexpr long parse_httplib_version(const char* v) {
  long part[3] = {0, 0, 0};
  for (int i = 0; *v && i < 3; ++v) {
    if (*v == '.')
      ++i;
    else if (*v >= '0' && *v <= '9')
      part[i] = part[i] * 10 + (*v - '0');
    else
      break;
  }
  return httplib_version(part[0], part[1], part[2]);
}
inline constexpr long kHttplibVersion = parse_httplib_version(CPPHTTPLIB_VERSION);

// The TLS context of a client (for callbacks on it): ssl_context() in 0.11 and 0.18; tls_context() in 0.53, a
// void* that is the SSL_CTX* with OpenSSL. Called as tls_context_of(client, 0): the int one wins where it exists.
template <class C>
auto tls_context_of(C& client, int) -> decltype(client.ssl_context()) {
  return client.ssl_context();
}
template <class C>
SSL_CTX* tls_context_of(C& client, long) {
  return static_cast<SSL_CTX*>(client.tls_context());
}

// httplib 0.11 takes a TLS close_notify on an idle kept-alive connection for a live socket (upstream #1481, fixed
// in March 2023 for 0.12.1/0.12.2; 0.18.7 checks with SSL_peek itself), so versions before 0.12.2 check here.
// Nothing may arrive on an idle kept-alive connection, so anything readable means the server closed it.
constexpr bool kMissesCloseNotify = kHttplibVersion < httplib_version(0, 12, 2);
inline bool idle_connection_closed(httplib::Client& client) {
  return kMissesCloseNotify && client.is_socket_open() && readable_now(client.socket());
}

// httplib 0.11 clears SSL_MODE_AUTO_RETRY on its TLS connections, and when SSL_read stops at a TLS 1.3
// post-handshake message it sleeps 1 ms before reading on (0.18.7 sleeps 10 us; the release in between that
// changed it is not known here, so versions before 0.18 get the callback, harmless where not needed). A server
// sends its NewSessionTickets (two, with OpenSSL) right after the handshake, before the answer: 2 ms more per
// connection, a fifth of a token call on loopback. This info callback runs when OpenSSL has handled such a
// message: if the whole next TLS record is already in the socket's receive queue, AUTO_RETRY lets SSL_read go on
// to it at once; otherwise it stays off, so no read ever blocks where httplib would not have waited.
constexpr bool kSleepsAfterTlsTicket = kHttplibVersion < httplib_version(0, 18, 0);
inline void read_on_when_buffered(const SSL* ssl, int where, int) {
  if (!(where & SSL_CB_EXIT) || !SSL_is_init_finished(ssl))
    return;
  if (whole_tls_record_queued(SSL_get_rfd(ssl)))
    SSL_set_mode(const_cast<SSL*>(ssl), SSL_MODE_AUTO_RETRY);
  else
    SSL_clear_mode(const_cast<SSL*>(ssl), SSL_MODE_AUTO_RETRY);
}

inline void skip_tls_ticket_sleeps(httplib::Client& client) {
  if constexpr (kSleepsAfterTlsTicket)
    SSL_CTX_set_info_callback(tls_context_of(client, 0), read_on_when_buffered);
}

// httplib before 0.31 loads the default CA paths into the client's store at the first handshake even when the
// program set a store of its own (upstream PR #2335), parsing the whole bundle again; a CA path of its own stops
// that: the default CA directory, which the store already searches.
constexpr bool kLoadsDefaultCasIntoOwnStore = kHttplibVersion < httplib_version(0, 31, 0);
inline std::string default_cert_dir();  // [5], with the trust store
inline void use_only_own_trust_store(httplib::Client& client) {
  if constexpr (kLoadsDefaultCasIntoOwnStore)
    client.set_ca_cert_path("", default_cert_dir().c_str());
}

// httplib before 0.13.2 waits for ever when a proxy refuses a CONNECT (any answer but 200 that closes the
// connection: it locks a mutex it already holds; upstream #1590), and that is how proxies refuse: 407 wrong
// credentials, 403 port not allowed, 502 target unreachable. So with those versions the tunnel is first asked for
// on a socket of our own ([5] proxy_tunnel_status); later ones report the refusal as Error::ProxyConnection.
constexpr bool kProxyRefusalHangs = kHttplibVersion < httplib_version(0, 13, 2);

// Error values that not every version has: SSLServerHostnameVerification, a certificate for another name (0.11
// says SSLServerVerification), and ProxyConnection (from 0.13.2).
template <class E, class = void>
struct HasHostnameError : std::false_type {};
template <class E>
struct HasHostnameError<E, std::void_t<decltype(E::SSLServerHostnameVerification)>> : std::true_type {};
template <class E, class = void>
struct HasProxyError : std::false_type {};
template <class E>
struct HasProxyError<E, std::void_t<decltype(E::ProxyConnection)>> : std::true_type {};

template <class E>
bool is_hostname_error(E e) {
  if constexpr (HasHostnameError<E>::value)
    return e == E::SSLServerHostnameVerification;
  return false;
}
template <class E>
bool is_proxy_refusal(E e) {
  if constexpr (HasProxyError<E>::value)
    return e == E::ProxyConnection;
  return false;
}

// What a failed httplib request means to this library.
struct TransportFailure {
  ErrorKind kind;     // network, tls or timeout
  const char* words;  // for the message
  bool unsent;        // the request provably never reached the server
  bool read_failed;   // the answer was being read (a timeout there is a read timeout)
};

inline TransportFailure classify(httplib::Error e) {
  if (is_hostname_error(e))
    return {ErrorKind::tls, "the server's certificate is for another name", false, false};
  switch (e) {
    case httplib::Error::Connection:
      return {ErrorKind::network, "could not connect", true, false};
    case httplib::Error::ConnectionTimeout:
      return {ErrorKind::timeout, "connecting timed out", true, false};
    case httplib::Error::Read:
      return {ErrorKind::network, "the connection failed while reading the answer", false, true};
    case httplib::Error::Write:
      return {ErrorKind::network, "the connection failed while sending the request", false, false};
    case httplib::Error::SSLConnection:
      return {ErrorKind::tls, "the TLS handshake failed", false, false};
    case httplib::Error::SSLLoadingCerts:
      return {ErrorKind::tls, "the CA certificates could not be loaded", false, false};
    case httplib::Error::SSLServerVerification:
      return {ErrorKind::tls, "the server's certificate is not trusted (or its name does not match)", false, false};
    default:
      return {ErrorKind::network, "the request failed", false, false};
  }
}

// =================================================================================================================
// [T] Text: encodings, URLs, JSON helpers, text made safe for messages and pages
// =================================================================================================================
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
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

// Decodes %XX once ('+' as a space in form/query data). nullopt on a broken escape.
inline std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size())
        return std::nullopt;
      int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0)
        return std::nullopt;
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
    if (amp == std::string_view::npos)
      amp = query.size();
    std::string_view part = query.substr(pos, amp - pos);
    if (!part.empty()) {
      std::size_t eq = part.find('=');
      auto name = percent_decode(part.substr(0, eq), true);
      auto value = percent_decode(eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1), true);
      if (!name || !value)
        return std::nullopt;
      out.emplace_back(std::move(*name), std::move(*value));
    }
    pos = amp + 1;
  }
  return out;
}

inline std::string encode_params(const Params& params, bool form) {
  std::string out;
  for (const auto& [name, value] : params) {
    if (!out.empty())
      out += '&';
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
    if (i + 1 < in.size())
      n |= std::uint32_t(static_cast<unsigned char>(in[i + 1])) << 8;
    out += a[(n >> 18) & 63];
    out += a[(n >> 12) & 63];
    if (i + 1 < in.size()) {
      out += a[(n >> 6) & 63];
      if (!url)
        out += '=';
    } else if (!url) {
      out += "==";
    }
  }
  return out;
}

// Decodes base64 or base64url, padding optional. nullopt on anything else.
inline std::optional<std::string> base64_decode(std::string_view in) {
  while (!in.empty() && in.back() == '=')
    in.remove_suffix(1);
  std::string out;
  out.reserve(in.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '+' || c == '-')
      v = 62;
    else if (c == '/' || c == '_')
      v = 63;
    else
      return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  if (bits >= 6)
    return std::nullopt;  // a single dangling character cannot encode a byte
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
  if (a.size() != b.size())
    return false;  // the length of a state is not a secret
  return a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

inline std::string html_escape(std::string_view in) {
  std::string out;
  out.reserve(in.size() + 16);
  for (char c : in) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
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
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
        c = ' ';
    return r;
  };
  std::string out = printable(in);
  for (std::string_view secret : secrets) {
    if (secret.size() < 4)
      continue;
    const std::string s = printable(secret);
    for (std::size_t p = out.find(s); p != std::string::npos; p = out.find(s, p + 3))
      out.replace(p, s.size(), "***");
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
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth)
        return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

// A JSON object or nullopt (never throws).
inline std::optional<json> parse_json_object(std::string_view body) {
  if (!json_depth_ok(body))
    return std::nullopt;
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return std::nullopt;
  return j;
}

inline std::string string_field(const json& j, const char* name) {
  auto it = j.find(name);
  if (it != j.end() && it->is_string())
    return it->get<std::string>();
  return {};
}

// Epoch seconds from outside (token files, introspection, id_token claims) as a time_point, clamped to what a
// 64-bit nanosecond system_clock holds (~year 2262): seconds(x) -> ns overflows otherwise (found by fuzz/token_json).
constexpr std::int64_t kMaxEpochSeconds = 9000000000LL;
inline std::chrono::system_clock::time_point from_epoch_seconds(std::int64_t s) {
  return std::chrono::system_clock::time_point(
      std::chrono::seconds(std::clamp(s, -kMaxEpochSeconds, kMaxEpochSeconds)));
}
inline std::chrono::system_clock::time_point from_epoch_seconds(const json& integer) {
  bool huge = integer.is_number_unsigned() && integer.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX);
  return from_epoch_seconds(huge ? INT64_MAX : integer.get<std::int64_t>());
}

// RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=". What a bearer token may hold,
// so that one put into an Authorization header (or a shell's "Bearer $(...)") cannot add headers or arguments.
inline bool is_b64token(std::string_view s) {
  std::size_t n = 0;
  while (n < s.size() && (is_unreserved(static_cast<unsigned char>(s[n])) || s[n] == '+' || s[n] == '/'))
    ++n;
  if (n == 0)
    return false;
  while (n < s.size() && s[n] == '=')
    ++n;
  return n == s.size();
}

inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

inline std::string join(const std::vector<std::string>& parts, char sep) {
  std::string out;
  for (const auto& p : parts) {
    if (p.empty())
      continue;
    if (!out.empty())
      out += sep;
    out += p;
  }
  return out;
}

inline bool has_scope(const std::vector<std::string>& scopes, std::string_view scope) {
  return std::find(scopes.begin(), scopes.end(), scope) != scopes.end();
}

// ---- URLs

struct Url {
  std::string scheme;  // lower case
  std::string userinfo;
  std::string host;  // without brackets
  int port = 0;
  std::string path = "/";
  std::string query;

  bool ipv6() const { return host.find(':') != std::string::npos; }
  std::string host_for_url() const { return ipv6() ? "[" + host + "]" : host; }
  std::string authority() const { return host_for_url() + ":" + std::to_string(port); }  // "host:443", "[::1]:80"
  std::string origin() const { return scheme + "://" + authority(); }
  std::string target() const { return query.empty() ? path : path + "?" + query; }
};

// Host and port of an authority ("h", "h:80", "[::1]:80", userinfo removed) into u; false when malformed.
inline bool parse_host_port(std::string_view authority, Url& u) {
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    std::size_t close = authority.find(']');
    if (close == std::string_view::npos)
      return false;
    u.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':')
        return false;
      port_text = after.substr(1);
    }
    if (u.host.find(':') == std::string::npos ||  // "[abc]" is no IPv6 address (found by fuzz/url)
        u.host.find_first_not_of("0123456789abcdefABCDEF:.") != std::string::npos)
      return false;
  } else {
    std::size_t pc = authority.rfind(':');
    if (pc != std::string_view::npos) {
      port_text = authority.substr(pc + 1);
      authority = authority.substr(0, pc);
    }
    u.host = std::string(authority);
    if (u.host.empty())
      return false;
    for (char& c : u.host) {
      auto uc = static_cast<unsigned char>(c);
      // ':' '[' ']' only in a bracketed IPv6 host: "h:x:80" would re-serialize as "[h:x]" (found by fuzz/url).
      if (uc <= 0x20 || uc >= 0x7f || std::string_view("\\%\"<>:[]").find(c) != std::string_view::npos)
        return false;
      c = static_cast<char>(std::tolower(uc));
    }
  }
  if (port_text.empty()) {
    u.port = u.scheme == "https" ? 443 : 80;
    return true;
  }
  if (port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string_view::npos)
    return false;
  u.port = std::stoi(std::string(port_text));
  return u.port <= 65535;
}

// Parses absolute http(s) URLs; no regex, no guessing. nullopt when it is not one.
inline std::optional<Url> parse_url(std::string_view s) {
  Url u;
  std::size_t colon = s.find("://");
  if (colon == std::string_view::npos || colon == 0)
    return std::nullopt;
  for (char c : s.substr(0, colon))
    u.scheme += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (u.scheme != "http" && u.scheme != "https")
    return std::nullopt;
  std::string_view rest = s.substr(colon + 3);
  std::size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  std::string_view tail = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  if (std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
    u.userinfo = std::string(authority.substr(0, at));
    authority = authority.substr(at + 1);
  }
  if (!parse_host_port(authority, u))
    return std::nullopt;
  if (std::size_t hash = tail.find('#'); hash != std::string_view::npos)
    tail = tail.substr(0, hash);
  std::size_t q = tail.find('?');
  std::string_view path = tail.substr(0, q);
  u.path = path.empty() ? "/" : std::string(path);
  if (q != std::string_view::npos)
    u.query = std::string(tail.substr(q + 1));
  for (char c : u.path + u.query)
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f)
      return std::nullopt;
  return u;
}

inline bool is_loopback_host(const std::string& host) {
  return host == "localhost" || host == "::1" || is_ipv4_loopback_literal(host);
}

inline Url require_url(const std::string& url, const char* what) {
  auto u = parse_url(url);
  if (!u)
    throw Error(ErrorKind::usage, std::string(what) + " is not an absolute http(s) URL: '" + sanitize(url) + "'");
  // Plain http only to this machine: tokens and secrets never cross a network unencrypted.
  if (u->scheme == "http" && !is_loopback_host(u->host))
    throw Error(ErrorKind::usage, std::string(what) + " uses plain http to a remote host (" + u->host +
                                      "); only https is allowed off this machine");
  return *u;
}

inline std::string trim_slash(std::string_view s) {
  while (!s.empty() && s.back() == '/')
    s.remove_suffix(1);
  return std::string(s);
}

}  // namespace detail

// =================================================================================================================
// [1] Errors
// =================================================================================================================

APS_AUTH_FUNC std::string version() {
  return std::to_string(APS_AUTH_VERSION_MAJOR) + "." + std::to_string(APS_AUTH_VERSION_MINOR) + "." +
         std::to_string(APS_AUTH_VERSION_PATCH);
}

APS_AUTH_FUNC const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::network:
      return "network";
    case ErrorKind::tls:
      return "tls";
    case ErrorKind::timeout:
      return "timeout";
    case ErrorKind::http:
      return "http";
    case ErrorKind::oauth:
      return "oauth";
    case ErrorKind::state_mismatch:
      return "state_mismatch";
    case ErrorKind::issuer_mismatch:
      return "issuer_mismatch";
    case ErrorKind::access_denied:
      return "access_denied";
    case ErrorKind::bad_response:
      return "bad_response";
    case ErrorKind::io:
      return "io";
    case ErrorKind::usage:
      return "usage";
    case ErrorKind::cancelled:
      return "cancelled";
  }
  return "unknown";
}

APS_AUTH_FUNC Error::Error(ErrorKind kind, const std::string& message, ErrorDetails details)
    : std::runtime_error(std::string("[aps_auth.") + to_string(kind) + "] " + message),
      kind_(kind),
      details_(std::move(details)) {}

// =================================================================================================================
// [2] Configuration
// =================================================================================================================

namespace detail {

constexpr const char* kApsBaseUrl = "https://developer.api.autodesk.com";
constexpr const char* kApsUserinfoUrl = "https://api.userprofile.autodesk.com/userinfo";

// The one table of APS endpoint paths: every endpoint of `e` under `base`, userinfo given whole.
inline void set_aps_paths(Endpoints& e, const std::string& base, const std::string& userinfo) {
  e.issuer = base;
  e.authorize = base + "/authentication/v2/authorize";
  e.token = base + "/authentication/v2/token";
  e.revoke = base + "/authentication/v2/revoke";
  e.introspect = base + "/authentication/v2/introspect";
  e.jwks = base + "/authentication/v2/keys";
  e.logout = base + "/authentication/v2/logout";
  e.userinfo = userinfo;
}

}  // namespace detail

APS_AUTH_FUNC Endpoints::Endpoints() {
  detail::set_aps_paths(*this, detail::kApsBaseUrl, detail::kApsUserinfoUrl);
}

APS_AUTH_FUNC Endpoints Endpoints::from_base_url(std::string_view base_url) {
  std::string base = detail::trim_slash(base_url);
  detail::require_url(base, "base URL");
  // The APS paths are appended: a query or fragment would swallow them (found by fuzz/url).
  if (base.find_first_of("?#") != std::string::npos)
    throw Error(ErrorKind::usage, "base URL '" + detail::sanitize(base) + "' has a query or fragment");
  Endpoints e;
  if (base != detail::kApsBaseUrl)
    detail::set_aps_paths(e, base, base + "/userinfo");
  return e;
}

// =================================================================================================================
// [3] Authorization request
// =================================================================================================================

APS_AUTH_FUNC std::string random_urlsafe(std::size_t bytes) {
  std::string raw(bytes, '\0');
  if (bytes > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(&raw[0]), static_cast<int>(bytes)) != 1)
    throw Error(ErrorKind::io, "OpenSSL RAND_bytes failed: no secure randomness");
  return detail::base64(raw, true);
}

APS_AUTH_FUNC std::string pkce_challenge(std::string_view code_verifier) {
  return detail::base64(detail::sha256(code_verifier), true);
}

namespace detail {

inline void require_client_id(const Config& config) {
  if (config.client_id.empty())
    throw Error(ErrorKind::usage, "no client id (Config::client_id)");
}

// The authorize URL's query parameters for request r.
inline Params authorize_params(const Config& config, const AuthorizeOptions& options, const AuthorizationRequest& r) {
  Params q = {{"response_type", "code"},
              {"client_id", config.client_id},
              {"redirect_uri", r.redirect_uri},
              {"scope", join(config.scopes, ' ')},
              {"state", r.state},
              {"code_challenge", r.code_challenge},
              {"code_challenge_method", "S256"}};
  if (!r.nonce.empty())
    q.emplace_back("nonce", r.nonce);
  if (!options.prompt.empty())
    q.emplace_back("prompt", options.prompt);
  if (!options.response_mode.empty())
    q.emplace_back("response_mode", options.response_mode);
  if (!options.authoptions.empty())
    q.emplace_back("authoptions", options.authoptions);
  return q;
}

}  // namespace detail

APS_AUTH_FUNC std::string AuthorizationRequest::to_json() const {
  detail::json j = {
      {"url", url},
      {"state", state},
      {"code_verifier", code_verifier},
      {"code_challenge", code_challenge},
      {"nonce", nonce},
      {"redirect_uri", redirect_uri},
      {"issuer", issuer},
      {"require_iss", require_iss},
      {"created_at", std::chrono::duration_cast<std::chrono::seconds>(created_at.time_since_epoch()).count()}};
  return j.dump(-1, ' ', false, detail::json::error_handler_t::replace);
}

APS_AUTH_FUNC AuthorizationRequest AuthorizationRequest::from_json(std::string_view text) {
  auto j = detail::parse_json_object(text);
  auto wrong = [] {
    return Error(ErrorKind::usage, "not a stored authorization request (AuthorizationRequest::to_json)");
  };
  if (!j)
    throw wrong();
  AuthorizationRequest r;
  for (auto [name, field] : {std::pair{"url", &r.url},
                             {"state", &r.state},
                             {"code_verifier", &r.code_verifier},
                             {"code_challenge", &r.code_challenge},
                             {"nonce", &r.nonce},
                             {"redirect_uri", &r.redirect_uri},
                             {"issuer", &r.issuer}}) {
    auto it = j->find(name);
    if (it == j->end() || !it->is_string())
      throw wrong();
    *field = it->get<std::string>();
  }
  auto iss = j->find("require_iss");
  auto created = j->find("created_at");
  if (iss == j->end() || !iss->is_boolean() || created == j->end() || !created->is_number_integer())
    throw wrong();
  r.require_iss = iss->get<bool>();
  r.created_at = detail::from_epoch_seconds(*created);
  if (r.state.empty() || r.code_verifier.empty() || r.redirect_uri.empty())
    throw wrong();
  return r;
}

APS_AUTH_FUNC AuthorizationRequest authorization_request(const Config& config, const AuthorizeOptions& options,
                                                         const std::string& redirect_uri) {
  detail::require_client_id(config);
  AuthorizationRequest r;
  r.redirect_uri = redirect_uri.empty() ? config.callback_url : redirect_uri;
  detail::require_url(r.redirect_uri, "callback URL");
  detail::Url endpoint = detail::require_url(config.endpoints.authorize, "authorize endpoint");
  r.created_at = std::chrono::system_clock::now();
  r.state = random_urlsafe(16);
  r.code_verifier = random_urlsafe(32);
  r.code_challenge = pkce_challenge(r.code_verifier);
  if (detail::has_scope(config.scopes, "openid"))
    r.nonce = random_urlsafe(16);
  r.issuer = config.endpoints.issuer;
  r.require_iss = config.endpoints.authorization_response_iss_parameter_supported;
  r.url = config.endpoints.authorize + (endpoint.query.empty() ? "?" : "&") +
          detail::encode_params(detail::authorize_params(config, options, r), false);
  return r;
}

// =================================================================================================================
// [4] Loopback listener
// =================================================================================================================

namespace detail {

// ---- pages for the browser

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

// ---- what to do with one request (pure, so it can be unit-tested and fuzzed without sockets)

// What the listener does with one request head: the status and page to answer, and whether the wait ends
// (with a code, or with an error).
struct CallbackOutcome {
  int status = 400;
  std::string html;
  std::string code;              // non-empty: the callback we wait for
  std::optional<Error> failure;  // set: the wait ends with this error
};

inline CallbackOutcome answer(int status, const char* title, const std::string& words, bool ok = false) {
  CallbackOutcome out;
  out.status = status;
  out.html = page(title, words, ok);
  return out;
}

inline CallbackOutcome ending(int status, const char* title, const std::string& words, Error failure) {
  CallbackOutcome out = answer(status, title, words);
  out.failure = std::move(failure);
  return out;
}

// The parameters of an authorization response (RFC 6749 4.1.2, RFC 9207).
struct CallbackParams {
  std::string state, code, error, error_description, iss;
};

// nullopt when the query is malformed or names a parameter twice (ambiguous, RFC 6749 3.1).
inline std::optional<CallbackParams> read_callback_params(std::string_view query) {
  auto params = parse_query(query);
  if (!params)
    return std::nullopt;
  CallbackParams p;
  const std::pair<const char*, std::string*> fields[] = {{"state", &p.state},
                                                         {"code", &p.code},
                                                         {"error", &p.error},
                                                         {"error_description", &p.error_description},
                                                         {"iss", &p.iss}};
  for (const auto& [name, value] : fields) {
    int n = 0;
    for (const auto& kv : *params)
      if (kv.first == name && n++ == 0)
        *value = kv.second;
    if (n > 1)
      return std::nullopt;
  }
  return p;
}

// RFC 9207 mix-up protection: the iss the response carries (or should carry) against the expected issuer.
inline std::optional<Error> issuer_problem(const CallbackParams& p, const AuthorizationRequest& request) {
  if (p.iss.empty() && !request.require_iss)
    return std::nullopt;
  if (!p.iss.empty() && trim_slash(p.iss) == trim_slash(request.issuer))
    return std::nullopt;
  return Error(ErrorKind::issuer_mismatch,
               (p.iss.empty() ? "the authorization response has no iss, but the issuer '" + request.issuer +
                                    "' advertises authorization_response_iss_parameter_supported"
                              : "the authorization response's iss '" + sanitize(p.iss, {}, 200) +
                                    "' is not the expected issuer '" + request.issuer + "'") +
                   " (RFC 9207 mix-up protection)");
}

// An error= response with the right state: the sign-in ends with access_denied or oauth.
inline Error authorization_error(const CallbackParams& p) {
  ErrorDetails d;
  d.error = sanitize(p.error, {}, 100);
  d.error_description = sanitize(p.error_description, {}, 1000);
  return Error(p.error == "access_denied" ? ErrorKind::access_denied : ErrorKind::oauth,
               "the authorization server answered " + d.error +
                   (d.error_description.empty() ? "" : ": " + sanitize(p.error_description)),
               d);
}

// The verdict on the parameters of an authorization response, for the listener and check_callback() alike.
struct CallbackVerdict {
  enum class Is { not_ours, wrong_issuer, refused, no_code, code } is;
  std::optional<Error> failure;  // set for wrong_issuer, refused and no_code
};

inline CallbackVerdict judge_callback(const CallbackParams& p, const AuthorizationRequest& request) {
  using Is = CallbackVerdict::Is;
  // The state is checked before anything else: without it the response is not ours and cannot end a wait,
  // or anyone on this machine could cancel a sign-in.
  if (request.state.empty() || !constant_time_equal(p.state, request.state))
    return {Is::not_ours, std::nullopt};
  if (auto wrong_issuer = issuer_problem(p, request))
    return {Is::wrong_issuer, std::move(wrong_issuer)};
  if (!p.error.empty())
    return {Is::refused, authorization_error(p)};
  if (p.code.empty())
    return {Is::no_code, Error(ErrorKind::bad_response, "the callback carried the right state but no code")};
  return {Is::code, std::nullopt};
}

// The page for an error= response: what the server said, escaped.
inline std::string refusal_words(const CallbackParams& p) {
  std::string words = p.error == "access_denied" ? "<p>Access was not granted, so the application cannot sign in.</p>"
                                                 : "<p>The sign-in service reported a problem.</p>";
  words += "<p><code>" + html_escape(sanitize(p.error, {}, 100)) + "</code>";
  if (!p.error_description.empty())
    words += " " + html_escape(sanitize(p.error_description, {}, 500));
  return words + "</p><p>You can close this window and try again.</p>";
}

// The value of the request head's one Host header; nullopt when there is none or more than one.
inline std::optional<std::string_view> host_header(std::string_view head) {
  std::optional<std::string_view> found;
  std::size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos && pos + 2 < head.size()) {
    pos += 2;
    std::size_t eol = head.find("\r\n", pos);
    std::string_view line = head.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    if (line.empty())
      break;
    if (line.size() >= 5 && iequals(line.substr(0, 5), "host:")) {
      if (found)
        return std::nullopt;
      std::string_view v = line.substr(5);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
        v.remove_prefix(1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
        v.remove_suffix(1);
      found = v;
    }
    pos = eol;
  }
  return found;
}

// `hosts`: the Host header values the callback can arrive with (its host:port, the bound loopback addresses). A
// request naming another host (a DNS-rebinding page: evil.example resolved to 127.0.0.1) gets a refusal page and
// does not count.
inline CallbackOutcome evaluate_callback(std::string_view head, std::string_view callback_path,
                                         const AuthorizationRequest& request, const std::vector<std::string>& hosts) {
  using Is = CallbackVerdict::Is;
  std::string_view line = head.substr(0, head.find("\r\n"));
  std::size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 <= sp1)
    return answer(400, "Bad request", "<p>The browser sent a request this page cannot read.</p>");
  const std::optional<std::string_view> host = host_header(head);
  if (!host || std::none_of(hosts.begin(), hosts.end(), [&](const std::string& h) { return iequals(*host, h); }))
    return answer(421, "Wrong address",
                  "<p>This request was not addressed to the sign-in's own address, so it was ignored.</p>");
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::size_t q = target.find('?');
  if (target.substr(0, q) != callback_path)
    return answer(404, "Not found", "<p>Nothing here. The sign-in is waiting on another address.</p>");
  if (method != "GET")
    return answer(405, "Not supported", "<p>The sign-in answer must arrive as a GET request.</p>");
  auto p = read_callback_params(q == std::string_view::npos ? std::string_view() : target.substr(q + 1));
  if (!p)
    return answer(400, "Bad request", "<p>The sign-in response was malformed and was ignored.</p>");
  CallbackVerdict v = judge_callback(*p, request);
  switch (v.is) {
    case Is::not_ours:
      return answer(400, "This sign-in response is not for this window",
                    "<p>This response does not belong to the sign-in in progress, so it was ignored.</p>"
                    "<p>If you started a sign-in, finish it in the window it opened, or start it again.</p>");
    case Is::wrong_issuer:
      return ending(400, "Sign-in failed", "<p>The response came from an unexpected server and was refused.</p>",
                    std::move(*v.failure));
    case Is::refused:
      return ending(200, p->error == "access_denied" ? "Sign-in cancelled" : "Sign-in failed", refusal_words(*p),
                    std::move(*v.failure));
    case Is::no_code:
      return ending(400, "Sign-in failed", "<p>The response carried no authorization code.</p>", std::move(*v.failure));
    case Is::code:
      break;
  }
  CallbackOutcome out = answer(
      200, "Signed in", "<p>You are signed in. You can close this window and return to the application.</p>", true);
  out.code = std::move(p->code);
  return out;
}

// The page for a sign-in that ended after the callback arrived: signed in (as `who`), or what failed, in words a
// user can act on (the error's kind and status, never its text: no secret or code can reach the page).
inline std::string signed_in_page(const std::string& who) {
  return page("Signed in",
              (who.empty() ? std::string("<p>You are signed in.")
                           : "<p>You are signed in as <strong>" + html_escape(who) + "</strong>.") +
                  " You can close this window and return to the application.</p>",
              true);
}

inline std::string failure_words(const Error& e) {
  const ErrorDetails& d = e.details();
  switch (e.kind()) {
    case ErrorKind::network:
    case ErrorKind::timeout:
      return "The application could not reach the sign-in service to finish. Check the network (or proxy) and "
             "sign in again.";
    case ErrorKind::tls:
      return "The application could not verify the sign-in service's certificate (a network that inspects "
             "encrypted traffic?), so it did not finish.";
    case ErrorKind::bad_response:
      return "The sign-in service's answer could not be verified, so the sign-in was refused.";
    case ErrorKind::http:
    case ErrorKind::oauth:
      if (d.error == "invalid_grant")
        return "The sign-in code was refused: it expired or was used already. Sign in again.";
      if (d.status == 401 || d.error_code == "AUTH-003" || d.error == "invalid_client")
        return "The application's client ID or secret was refused. The application's configuration must be fixed "
               "before anyone can sign in.";
      if (d.error_code == "AUTH-004" || d.error == "invalid_scope")
        return "The application asked for permissions (scopes) it may not have.";
      return "The sign-in service refused to finish the sign-in.";
    default:
      return "The sign-in could not be finished.";
  }
}

inline std::string failed_page(const Error& e) {
  std::string details = to_string(e.kind());
  if (e.details().status)
    details += ", HTTP " + std::to_string(e.details().status);
  if (!e.details().error.empty())
    details += ", " + sanitize(e.details().error, {}, 60);
  else if (!e.details().error_code.empty())
    details += ", " + sanitize(e.details().error_code, {}, 40);
  return page("Sign-in failed",
              "<p>" + failure_words(e) + "</p><p><code>" + html_escape(details) +
                  "</code></p><p>The application's output says more.</p>",
              false);
}

// ---- the connections of one wait

inline const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 404:
      return "Not Found";
    case 403:
      return "Forbidden";
    case 405:
      return "Method Not Allowed";
    case 421:
      return "Misdirected Request";
    case 431:
      return "Request Header Fields Too Large";
    default:
      return "Bad Request";
  }
}

// Sends the page and closes our side. Best effort: the page is small and the socket buffer empty, but a client
// that never reads must not stall the listener, so it gives up after a short while.
inline void respond(socket_t s, int status, const std::string& html) {
  const std::string out =
      "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) +
      "\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nPragma: no-cache\r\n"
      "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
      "frame-ancestors 'none'\r\nX-Frame-Options: DENY\r\n"
      "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n"
      "Content-Length: " +
      std::to_string(html.size()) + "\r\n\r\n" + html;
  const auto until = Clock::now() + std::chrono::seconds(2);
  for (std::size_t off = 0; off < out.size() && Clock::now() < until;) {
    std::ptrdiff_t n = send_some(s, out.data() + off, out.size() - off);
    if (n == -2)
      break;
    if (n > 0)
      off += static_cast<std::size_t>(n);
    else
      wait_for(s, POLLOUT, 100);
  }
  shutdown_send(s);
}

struct Connection {
  Socket socket;
  Clock::time_point deadline;
  std::string in;  // the request head so far
};

// The connections a wait() has accepted and not yet answered. An evicted or finished connection is closed at
// once but erased only by the next prune(), so that entries stay aligned with the poll set of the round.
class Connections {
 public:
  static constexpr auto kPerConnection = std::chrono::seconds(10);  // a silent or slow client is dropped then
  static constexpr std::size_t kMaxOpen = 128;                      // beyond this the oldest is dropped

  // Closes what is past its own deadline and forgets what is closed.
  void prune(Clock::time_point now) {
    for (auto& c : list_)
      if (now >= c.deadline)
        c.socket.close();
    list_.erase(std::remove_if(list_.begin(), list_.end(), [](const Connection& c) { return !c.socket.valid(); }),
                list_.end());
    open_ = list_.size();
  }

  void add_to_poll_set(std::vector<PollFd>& fds) const {
    for (const auto& c : list_)
      fds.push_back({c.socket.get(), POLLIN, 0});
  }

  Clock::time_point next_deadline(Clock::time_point deadline) const {
    for (const auto& c : list_)
      deadline = std::min(deadline, c.deadline);
    return deadline;
  }

  // Accepts a bounded batch, so that a flood of connections cannot starve the reads.
  void accept_from(socket_t listener) {
    for (int batch = 0; batch < 64; ++batch) {
      Socket s = accept_connection(listener);
      if (!s.valid())
        return;
      for (auto it = list_.begin(); open_ >= kMaxOpen && it != list_.end(); ++it)
        if (it->socket.valid()) {
          it->socket.close();
          --open_;
        }
      list_.push_back({std::move(s), Clock::now() + kPerConnection, {}});
      ++open_;
    }
  }

  // Reads what arrived and answers each complete request; the code once the awaited callback came. `polled`
  // holds the poll results of the connections as they were before accept_from(): the ones accepted since are
  // tried at once (a browser sends its request right after connecting), so that a flood of new connections
  // cannot evict it unread.
  // With `held`, the awaited callback's connection is moved there unanswered.
  std::optional<std::string> serve(const PollFd* polled, std::size_t polled_count, std::string_view callback_path,
                                   const std::vector<std::string>& hosts, const AuthorizationRequest& request,
                                   Socket* held) {
    for (std::size_t i = 0; i < list_.size(); ++i) {
      if (i < polled_count && !polled[i].revents)
        continue;
      if (auto code = serve_one(list_[i], callback_path, hosts, request, held))
        return code;
    }
    return std::nullopt;
  }

 private:
  static std::optional<std::string> serve_one(Connection& c, std::string_view callback_path,
                                              const std::vector<std::string>& hosts,
                                              const AuthorizationRequest& request, Socket* held) {
    if (!c.socket.valid())
      return std::nullopt;
    char buf[4096];
    std::ptrdiff_t r;
    while ((r = receive_some(c.socket.get(), buf, sizeof buf)) > 0) {
      c.in.append(buf, static_cast<std::size_t>(r));
      if (c.in.size() > APS_AUTH_MAX_CALLBACK_BYTES)
        break;
    }
    if (c.in.find("\r\n\r\n") != std::string::npos) {
      CallbackOutcome out = evaluate_callback(c.in, callback_path, request, hosts);
      // A request that would end the wait (the right state) must come from a process of our own user: another
      // user who read the authorize URL could otherwise sign us in to their account, or cancel the sign-in.
      // Looked up only then (the kernel's socket table is large); the client is still connected, awaiting the page.
      if ((!out.code.empty() || out.failure) && peer_user(c.socket.get()) == PeerUser::other)
        out = answer(403, "Not your sign-in",
                     "<p>This sign-in belongs to another user of this computer, so the request was refused.</p>");
      if (held && !out.code.empty()) {
        *held = std::move(c.socket);
        return out.code;
      }
      respond(c.socket.get(), out.status, out.html);
      c.socket.close();
      if (out.failure)
        throw *out.failure;
      if (!out.code.empty())
        return out.code;
    } else if (c.in.size() > APS_AUTH_MAX_CALLBACK_BYTES) {
      respond(c.socket.get(), 431,
              page("Request too large", "<p>The request was too large and was ignored.</p>", false));
      c.socket.close();
    } else if (r == 0 || r == -2) {
      c.socket.close();
    }
    return std::nullopt;
  }

  std::vector<Connection> list_;
  std::size_t open_ = 0;  // valid sockets in list_
};

// ---- browser launch

// Splits a command line on spaces, honouring '...' and "..." quotes (no shell is involved).
inline std::vector<std::string> split_command(const std::string& cmd) {
  std::vector<std::string> out;
  std::string cur;
  bool have = false;
  char quote = 0;
  for (char c : cmd) {
    if (quote) {
      if (c == quote)
        quote = 0;
      else
        cur += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      have = true;
    } else if (c == ' ' || c == '\t') {
      if (have || !cur.empty())
        out.push_back(cur);
      cur.clear();
      have = false;
    } else {
      cur += c;
    }
  }
  if (have || !cur.empty())
    out.push_back(cur);
  return out;
}

}  // namespace detail

struct LoopbackListener::Impl {
  detail::Url callback;
  std::vector<detail::Socket> listeners;
  std::vector<std::string> addresses;
  int port = 0;
  detail::Waker waker;  // cancel() from another thread
  detail::Socket held;  // the browser's connection of wait_and_hold(), until answered

  ~Impl() { answer_held(page_received()); }

  static std::string page_received() {
    return detail::page("Sign-in received", "<p>The application received your sign-in. You can close this window.</p>",
                        true);
  }

  void answer_held(const std::string& html) {
    if (!held.valid())
      return;
    detail::respond(held.get(), 200, html);
    held.close();
  }

  // Binds one loopback address; 0 or the OS error.
  int bind_one(int family, int want_port) {
    detail::Socket s;
    if (int err = detail::listen_loopback(family, want_port, s))
      return err;
    port = detail::local_port(s.get());
    listeners.push_back(std::move(s));
    addresses.push_back(std::string(family == AF_INET6 ? "[::1]" : "127.0.0.1") + ":" + std::to_string(port));
    return 0;
  }

  [[noreturn]] static void bind_failed(const char* address, int want_port, int err) {
    std::string msg = std::string("cannot listen on ") + address + ":" + std::to_string(want_port) +
                      " for the sign-in callback (" + detail::os_error_text(err) + ")";
    if (detail::is_addr_in_use(err))
      msg += "; port " + std::to_string(want_port) +
             " is in use by another program: stop it, or register and use "
             "another callback port";
    throw Error(ErrorKind::io, msg);
  }

  // localhost: both loopback addresses on the same port (RFC 8252 8.3); the browser may pick either.
  void bind_both(int want_port) {
    for (int attempt = 0;; ++attempt) {
      if (int err = bind_one(AF_INET, want_port))
        bind_failed("127.0.0.1", want_port, err);
      int err = bind_one(AF_INET6, port);
      if (err == 0 || detail::is_no_ipv6(err))
        return;                                                             // no IPv6 here: 127.0.0.1 alone
      if (detail::is_addr_in_use(err) && want_port == 0 && attempt < 20) {  // the free v4 port is taken on v6
        listeners.clear();
        addresses.clear();
        continue;
      }
      bind_failed("[::1]", port, err);
    }
  }

  Error no_callback(std::chrono::milliseconds timeout) const {
    return Error(ErrorKind::timeout,
                 "no sign-in callback arrived on " + callback_with_port() + " within " +
                     std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count()) +
                     " s. The usual cause: the callback URL does not match the one registered for the app exactly "
                     "(Autodesk then shows \"Invalid redirect_uri\" and never redirects here)");
  }

  // The Host header values a request for the callback may carry: the callback's host, or one of the loopback
  // addresses bound, with the bound port (left out when it is 80, HTTP's default). Never a name a DNS-rebinding
  // page could own.
  std::vector<std::string> hosts() const {
    std::vector<std::string> out{callback.host_for_url() + ":" + std::to_string(port)};
    out.insert(out.end(), addresses.begin(), addresses.end());
    if (port == 80)
      for (std::size_t i = 0, n = out.size(); i < n; ++i)
        out.push_back(out[i].substr(0, out[i].rfind(':')));
    return out;
  }

  std::string callback_with_port() const {
    return "http://" + callback.host_for_url() + ":" + std::to_string(port) + callback.target();
  }

  // One wait for the callback; with `keep`, the callback's connection is moved there unanswered.
  std::string receive(const AuthorizationRequest& request, std::chrono::milliseconds timeout, detail::Socket* keep) {
    using detail::Clock;
    const auto deadline = Clock::now() + timeout;
    detail::Connections conns;  // all closed when the wait ends, however it ends
    while (true) {
      const auto now = Clock::now();
      if (now >= deadline)
        throw no_callback(timeout);
      conns.prune(now);
      // The poll set: the waker, the listening sockets, then the connections.
      std::vector<detail::PollFd> fds{{waker.handle(), POLLIN, 0}};
      for (const auto& l : listeners)
        fds.push_back({l.get(), POLLIN, 0});
      conns.add_to_poll_set(fds);
      if (detail::poll_sockets(fds, detail::ms_until(conns.next_deadline(deadline)) + 1) < 0)
        throw Error(ErrorKind::io, "poll failed: " + detail::os_error_text(detail::last_socket_error()));
      if (fds[0].revents) {
        waker.drain();
        throw Error(ErrorKind::cancelled, "the wait for the sign-in callback was cancelled");
      }
      const std::size_t first_conn = 1 + listeners.size();
      for (std::size_t i = 1; i < first_conn; ++i)
        if (fds[i].revents)
          conns.accept_from(fds[i].fd);
      if (auto code =
              conns.serve(fds.data() + first_conn, fds.size() - first_conn, callback.path, hosts(), request, keep))
        return *code;
    }
  }
};

APS_AUTH_FUNC LoopbackListener::LoopbackListener(const std::string& callback_url) : impl_(new Impl) {
  auto u = detail::parse_url(callback_url);
  const bool v4 = u && (u->host == "localhost" || u->host == "127.0.0.1");
  const bool v6 = u && (u->host == "localhost" || u->host == "::1");
  if (!u || u->scheme != "http" || (!v4 && !v6))
    throw Error(ErrorKind::usage,
                "the callback URL must be http://localhost:PORT/path, http://127.0.0.1:PORT/path "
                "or http://[::1]:PORT/path (got '" +
                    detail::sanitize(callback_url) + "'); the listener never binds other interfaces");
  impl_->callback = *u;
  if (v4 && v6)
    impl_->bind_both(u->port);
  else if (int err = impl_->bind_one(v4 ? AF_INET : AF_INET6, u->port))
    Impl::bind_failed(v4 ? "127.0.0.1" : "[::1]", u->port, err);
}

APS_AUTH_FUNC LoopbackListener::~LoopbackListener() = default;

APS_AUTH_FUNC int LoopbackListener::port() const noexcept {
  return impl_->port;
}

APS_AUTH_FUNC std::string LoopbackListener::redirect_uri() const {
  return impl_->callback_with_port();
}

APS_AUTH_FUNC std::vector<std::string> LoopbackListener::bound_addresses() const {
  return impl_->addresses;
}

APS_AUTH_FUNC void LoopbackListener::cancel() noexcept {
  impl_->waker.notify();
}

APS_AUTH_FUNC std::string LoopbackListener::wait(const AuthorizationRequest& request,
                                                 std::chrono::milliseconds timeout) {
  return impl_->receive(request, timeout, nullptr);
}

APS_AUTH_FUNC std::string LoopbackListener::wait_and_hold(const AuthorizationRequest& request,
                                                          std::chrono::milliseconds timeout) {
  impl_->answer_held(Impl::page_received());
  return impl_->receive(request, timeout, &impl_->held);
}

APS_AUTH_FUNC void LoopbackListener::answer_signed_in(const std::string& who) {
  impl_->answer_held(detail::signed_in_page(who));
}

APS_AUTH_FUNC void LoopbackListener::answer_failed(const Error& error) {
  impl_->answer_held(detail::failed_page(error));
}

APS_AUTH_FUNC std::string check_callback(const AuthorizationRequest& request, std::string_view callback,
                                         std::chrono::seconds max_age) {
  using Is = detail::CallbackVerdict::Is;
  if (request.created_at != std::chrono::system_clock::time_point{} &&
      std::chrono::system_clock::now() > request.created_at + max_age)
    throw Error(ErrorKind::timeout,
                "the sign-in request is older than " + std::to_string(max_age.count()) + " s; start the sign-in again");
  // The fragment first: a '?' inside it is not a query.
  if (std::size_t hash = callback.find('#'); hash != std::string_view::npos)
    callback = callback.substr(0, hash);
  if (std::size_t q = callback.find('?'); q != std::string_view::npos)
    callback = callback.substr(q + 1);
  else if (!callback.empty() &&
           (callback.front() == '/' || callback.substr(0, 7) == "http://" || callback.substr(0, 8) == "https://"))
    callback = {};  // a target or URL without a query
  auto p = detail::read_callback_params(callback);
  if (!p)
    throw Error(ErrorKind::bad_response, "the callback is malformed (a broken escape or a parameter given twice)");
  detail::CallbackVerdict v = detail::judge_callback(*p, request);
  if (v.is == Is::not_ours)
    throw Error(ErrorKind::state_mismatch,
                "the callback's state is not the one of this sign-in request (a forged "
                "callback, or one of another session)");
  if (v.failure)
    throw std::move(*v.failure);
  return std::move(p->code);
}

APS_AUTH_FUNC std::string html_escape(std::string_view text) {
  return detail::html_escape(text);
}

APS_AUTH_FUNC bool open_browser(const std::string& url, const std::vector<std::string>& secrets) {
  if (!detail::parse_url(url))
    return false;  // never hand a browser anything but an absolute http(s) URL
  std::string browser = detail::env("BROWSER");
  if (browser.empty())
    return detail::open_in_default_browser(url, secrets);
  std::vector<std::string> args = detail::split_command(browser);
  bool replaced = false;
  for (auto& a : args)
    for (std::size_t p = a.find("%s"); p != std::string::npos; p = a.find("%s", p + url.size())) {
      a.replace(p, 2, url);
      replaced = true;
    }
  if (!replaced)
    args.push_back(url);
  return detail::spawn_detached(args, secrets);
}

// =================================================================================================================
// [5] Token endpoint, and the HTTP client every endpoint call goes through
// =================================================================================================================

namespace detail {

// ---- proxies

struct Proxy {
  Url url;  // http://host:port
  std::string user, password;
};

// NO_PROXY: comma-separated host names or suffixes (".example.com" or "example.com"), "*" for all.
inline bool no_proxy_matches(const std::string& host, const std::string& list) {
  std::size_t pos = 0;
  while (pos <= list.size()) {
    std::size_t comma = list.find(',', pos);
    if (comma == std::string::npos)
      comma = list.size();
    std::string item = list.substr(pos, comma - pos);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty() && item.front() == '[' && item.back() == ']')
      item = item.substr(1, item.size() - 2);
    if (std::size_t pc = item.rfind(':'); pc != std::string::npos && item.find(':') == pc)
      item.erase(pc);
    for (char& c : item)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (item == "*")
      return true;
    if (!item.empty()) {
      if (item.front() == '.')
        item.erase(0, 1);
      if (host == item)
        return true;
      // Suffixes match names only: "0.0.1" must not cover 127.0.0.1.
      const bool ip_literal =
          host.find_first_not_of("0123456789.") == std::string::npos || host.find(':') != std::string::npos;
      if (!ip_literal && host.size() > item.size() && host.compare(host.size() - item.size(), item.size(), item) == 0 &&
          host[host.size() - item.size() - 1] == '.')
        return true;
    }
    pos = comma + 1;
  }
  return false;
}

// The proxy for a request to `target`: Config::proxy, else the environment as curl reads it. Never one for a
// loopback host (as Go's net/http): a proxy would see the Basic-encoded secret of a plain-http call to this machine
// (a mock, a forwarded port), and could not reach our loopback anyway.
inline std::optional<Proxy> proxy_for(const Config& config, const Url& target) {
  std::string spec = config.proxy;
  if (spec == "direct" || is_loopback_host(target.host))
    return std::nullopt;
  if (spec.empty()) {
    std::string no_proxy = env("NO_PROXY");
    if (no_proxy.empty())
      no_proxy = env("no_proxy");
    if (no_proxy_matches(target.host, no_proxy))
      return std::nullopt;
    if (target.scheme == "https") {
      spec = env("https_proxy");
      if (spec.empty())
        spec = env("HTTPS_PROXY");
    } else {
      spec = env("http_proxy");  // lower case only for http, as curl does (httpoxy)
    }
    if (spec.empty())
      return std::nullopt;
  }
  if (spec.find("://") == std::string::npos)
    spec = "http://" + spec;
  auto u = parse_url(spec);
  if (!u || u->scheme != "http")
    throw Error(ErrorKind::usage,
                "the proxy must be an http://host:port URL (got '" + sanitize(u ? u->host : "") + "')");
  Proxy p{*u, {}, {}};
  if (!u->userinfo.empty()) {
    std::size_t c = u->userinfo.find(':');
    p.user = percent_decode(u->userinfo.substr(0, c), false).value_or("");
    if (c != std::string::npos)
      p.password = percent_decode(u->userinfo.substr(c + 1), false).value_or("");
  }
  return p;
}

// ---- the trust store

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

// Loads the system's CA certificates into the store, once; true when they were loaded by this call.
inline bool load_default_bundle(X509_STORE* store) {
  static std::mutex m;
  std::lock_guard<std::mutex> lk(m);
  auto* file = static_cast<X509_LOOKUP*>(X509_STORE_get_ex_data(store, default_bundle_index()));
  if (!file)
    return false;
  X509_STORE_set_ex_data(store, default_bundle_index(), nullptr);
  load_system_roots(store, file);
  return true;
}

inline int get_issuer_then_bundle(X509** issuer, X509_STORE_CTX* ctx, X509* x) {
  int found = X509_STORE_CTX_get1_issuer(issuer, ctx, x);
  if (found == 0 && load_default_bundle(X509_STORE_CTX_get0_store(ctx)))
    found = X509_STORE_CTX_get1_issuer(issuer, ctx, x);
  return found;
}

inline STACK_OF(X509) * lookup_certs_then_bundle(X509_STORE_CTX* ctx, const X509_NAME* name) {
  STACK_OF(X509)* found = X509_STORE_CTX_get1_certs(ctx, name);
  if (!found && load_default_bundle(X509_STORE_CTX_get0_store(ctx)))
    found = X509_STORE_CTX_get1_certs(ctx, name);
  return found;
}

// The default CA directory, as OpenSSL chooses it (SSL_CERT_DIR, ignored in set-user-ID programs, else built in).
inline std::string default_cert_dir() {
  std::string dir = trusted_env(X509_get_default_cert_dir_env());
  return dir.empty() ? X509_get_default_cert_dir() : dir;
}

inline X509_STORE* make_trust_store(const std::string& ca_file) {
  X509_STORE* store = X509_STORE_new();
  if (!store)
    throw Error(ErrorKind::tls, "could not create an OpenSSL certificate store");
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
  if (!config.ca_file.empty())
    return config.ca_file;
  return env("APS_CA_FILE");
}

// ---- one HTTP exchange, with retries

enum class Resend { safe, only_if_unsent };

struct HttpAnswer {
  int status = 0;
  std::string body;
  std::string content_type;
  std::string retry_after;
  std::string location;
  std::string cache_control;
};

struct HttpCall {
  std::string method = "POST";
  std::string url;
  std::string what;  // "token endpoint", for messages
  std::string form;  // application/x-www-form-urlencoded body (POST)
  std::string authorization;
  Resend resend = Resend::safe;
  std::vector<std::string> secrets;  // masked in any message, in every form they were sent in (add_secret)

  // A secret as given, form- and URL-encoded (as in a body), and so masked however a server echoes it.
  void add_secret(std::string_view secret) {
    if (secret.empty())
      return;
    for (std::string spelling : {std::string(secret), form_encode(secret), url_encode(secret)})
      if (std::find(secrets.begin(), secrets.end(), spelling) == secrets.end())
        secrets.push_back(std::move(spelling));
  }
};

// A kept-alive connection for a long-lived object (TokenSource): one TLS context, the trust store loaded
// once, no new handshake per refresh. Not thread-safe: its owner serialises calls.
struct HttpSession {
  std::string key;  // origin + proxy: a different one replaces the client
  std::unique_ptr<httplib::Client> client;
};

// The wait before retry number `attempt` (1 = the first re-send): full jitter, uniform in
// [0, min(max_delay, initial_backoff * 2^(attempt-1))].
inline std::chrono::milliseconds backoff(const RetryPolicy& policy, int attempt) {
  static thread_local std::minstd_rand rng{std::random_device{}()};  // jitter only, not security
  auto cap = std::min<std::int64_t>(policy.max_delay.count(), policy.initial_backoff.count()
                                                                  << std::clamp(attempt - 1, 0, 20));
  std::uniform_int_distribution<std::int64_t> dist(0, std::max<std::int64_t>(cap, 0));
  return std::chrono::milliseconds(dist(rng));
}

inline std::optional<std::chrono::seconds> parse_retry_after(const std::string& v) {
  if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::chrono::seconds(std::stoll(v));
}

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
    use_only_own_trust_store(*client);
    skip_tls_ticket_sleeps(*client);
  }
  if (proxy) {
    client->set_proxy(proxy->url.host, proxy->url.port);
    if (!proxy->user.empty())
      client->set_proxy_basic_auth(proxy->user, proxy->password);
  }
  return client;
}

// The client for this attempt: the session's kept-alive one (replaced when the origin or proxy changed, or the
// server closed it meanwhile, so the request goes out on a new connection instead of failing where it cannot be
// re-sent), else a new one in `own`.
inline httplib::Client& client_for(const Config& config, const Url& url, const std::optional<Proxy>& proxy,
                                   HttpSession* session, std::unique_ptr<httplib::Client>& own) {
  if (!session) {
    own = make_client(config, url, proxy, false);
    return *own;
  }
  std::string key = url.origin() + (proxy ? " via " + proxy->url.authority() : "");
  if (!session->client || session->key != key) {
    session->client = make_client(config, url, proxy, true);
    session->key = key;
  } else if (idle_connection_closed(*session->client)) {
    session->client->stop();
  }
  return *session->client;
}

// Asks the proxy for a tunnel to `url` on a socket of our own, under the connect and read timeouts, so that a
// refusal is seen (see kProxyRefusalHangs). The proxy's status, or 0 when it could not be asked (httplib then
// meets and reports the same failure).
inline int proxy_tunnel_status(const Config& config, const Proxy& proxy, const Url& url) {
  Socket s = connect_tcp(proxy.url.host, proxy.url.port, Clock::now() + config.connect_timeout);
  if (!s.valid())
    return 0;
  std::string out = "CONNECT " + url.authority() + " HTTP/1.1\r\nHost: " + url.authority() + "\r\n";
  if (!proxy.user.empty() && !proxy.password.empty())  // as httplib sends them
    out += "Proxy-Authorization: Basic " + base64(proxy.user + ":" + proxy.password, false) + "\r\n";
  out += "\r\n";
  const auto until = Clock::now() + config.read_timeout;
  for (std::size_t sent = 0; sent < out.size();) {
    std::ptrdiff_t n = send_some(s.get(), out.data() + sent, out.size() - sent);
    if (n > 0)
      sent += static_cast<std::size_t>(n);
    else if (n == -2 || wait_for(s.get(), POLLOUT, ms_until(until)) != 1)
      return 0;
  }
  std::string in;
  while (in.find("\r\n") == std::string::npos && in.size() < 4096) {
    if (wait_for(s.get(), POLLIN, ms_until(until)) != 1)
      break;
    char buf[1024];
    std::ptrdiff_t n = receive_some(s.get(), buf, sizeof buf);
    if (n == 0 || n == -2)
      break;
    if (n > 0)
      in.append(buf, static_cast<std::size_t>(n));
  }
  // "HTTP/1.x NNN reason"
  if (in.size() < 12 || in.compare(0, 5, "HTTP/") != 0 || in[8] != ' ')
    return 0;
  int status = 0;
  for (std::size_t i = 9; i < 12; ++i) {
    if (in[i] < '0' || in[i] > '9')
      return 0;
    status = status * 10 + (in[i] - '0');
  }
  return status;
}

// The proxy refused the tunnel with HTTP `status`: the request never left, so re-sending is safe for every call
// and a busy or failing proxy is asked again. Returns the wait before the next attempt, or throws.
inline std::chrono::milliseconds tunnel_refused(const Config& config, const HttpCall& call, const Url& url,
                                                const Proxy& proxy, int status, int attempt) {
  if ((status == 429 || status >= 500) && attempt < std::max(1, config.retry.max_attempts))
    return backoff(config.retry, attempt);
  ErrorDetails d;
  d.status = status;
  throw Error(ErrorKind::network,
              call.what + " (" + url.authority() + "): the proxy " + proxy.url.authority() +
                  " refused the tunnel with HTTP " + std::to_string(status) +
                  (status == 407 || status == 401 ? " (proxy authentication required or refused) [check the user and "
                                                    "password in the proxy URL, http://user:password@host:port]"
                                                  : ""),
              d);
}

// One attempt's result: an answer, or the transport error httplib reported.
struct Attempt {
  HttpAnswer answer;
  bool answered = false;
  bool tunnel_refused = false;  // answer.status is the proxy's answer to CONNECT (httplib 0.13.2 and later)
  httplib::Error error = httplib::Error::Success;
  bool too_big = false;
  Clock::duration took{};
};

inline Attempt send_once(httplib::Client& client, const HttpCall& call, const Url& url, bool tunnelled) {
  Attempt a;
  httplib::Request req;
  req.method = call.method;
  req.path = url.target();
  req.set_header("Accept", "application/json");
  req.set_header("User-Agent", "aps_auth/" + version());
  if (!call.authorization.empty())
    req.set_header("Authorization", call.authorization);
  if (call.method == "POST") {
    req.set_header("Content-Type", "application/x-www-form-urlencoded");
    req.body = call.form;
  }
  // httplib (0.11.4, 0.18.7 and 0.53.1 alike) also puts the proxy credentials on the request inside the tunnel,
  // for the server to read; a header of our own (empty) stops that. The CONNECT itself still carries them.
  if (tunnelled)
    req.set_header("Proxy-Authorization", "");
  req.response_handler = [&](const httplib::Response& r) {
    a.answer.status = r.status;
    a.answer.content_type = r.get_header_value("Content-Type");
    a.answer.retry_after = r.get_header_value("Retry-After");
    a.answer.location = r.get_header_value("Location");
    a.answer.cache_control = r.get_header_value("Cache-Control");
    return true;
  };
  req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
    a.too_big = a.answer.body.size() + n > static_cast<std::size_t>(APS_AUTH_MAX_RESPONSE_BYTES);
    if (!a.too_big)
      a.answer.body.append(data, n);
    return !a.too_big;
  };
  const auto started = Clock::now();
  httplib::Result res = client.send(req);
  a.took = Clock::now() - started;
  a.answered = static_cast<bool>(res);
  if (!res)
    a.error = res.error();
  a.tunnel_refused = res && is_proxy_refusal(res.error());
  if (res && a.answer.status == 0) {  // an answer httplib read without the response handler: keep its status
    a.answer.status = res->status;
    a.answer.content_type = res->get_header_value("Content-Type");
  }
  return a;
}

// How long to wait before sending again, or nullopt: the rule RetryPolicy documents.
inline std::optional<std::chrono::milliseconds> retry_delay(const Config& config, const HttpCall& call,
                                                            const Attempt& a, int attempt) {
  if (attempt >= std::max(1, config.retry.max_attempts))
    return std::nullopt;
  if (!a.answered) {
    const TransportFailure f = classify(a.error);
    if (f.kind == ErrorKind::tls || !(f.unsent || call.resend == Resend::safe))
      return std::nullopt;
    return backoff(config.retry, attempt);
  }
  const int s = a.answer.status;
  const bool busy = s == 429 || s == 503;
  const bool server_error = s == 500 || s == 502 || s == 504;
  if (!busy && !(server_error && call.resend == Resend::safe))
    return std::nullopt;
  if (auto after = parse_retry_after(a.answer.retry_after))
    return std::min<std::chrono::milliseconds>(*after, config.retry.max_delay);
  return backoff(config.retry, attempt);
}

[[noreturn]] inline void throw_transport_error(const Config& config, const HttpCall& call, const Url& url,
                                               const std::optional<Proxy>& proxy, const Attempt& a) {
  const TransportFailure f = classify(a.error);
  const std::string where = call.what + " (" + url.authority() + ")";
  std::string msg = where + ": " + f.words;
  ErrorKind kind = f.kind;
  if (f.read_failed && a.took >= config.read_timeout) {
    kind = ErrorKind::timeout;
    msg = where + ": no answer within " + std::to_string(config.read_timeout.count()) + " ms";
  }
  if (proxy)
    msg += " (through proxy " + proxy->url.authority() + ")";
  if (!f.unsent && call.resend == Resend::only_if_unsent)
    msg += "; not sent again because the server may already have acted on it";
  throw Error(kind, msg);
}

// One HTTP exchange with the policy of this library: TLS verified, no redirects followed, a bounded answer,
// timeouts, the proxy, and retries as RetryPolicy documents.
inline HttpAnswer http_send(const Config& config, const HttpCall& call, HttpSession* session = nullptr) {
  const Url url = require_url(call.url, call.what.c_str());
  const std::optional<Proxy> proxy = proxy_for(config, url);
  const bool tunnelled = proxy && url.scheme == "https";
  for (int attempt = 1;; ++attempt) {
    std::unique_ptr<httplib::Client> own;
    httplib::Client& client = client_for(config, url, proxy, session, own);
    if (kProxyRefusalHangs && tunnelled) {
      const int status = proxy_tunnel_status(config, *proxy, url);
      if (status != 0 && status != 200) {
        std::this_thread::sleep_for(tunnel_refused(config, call, url, *proxy, status, attempt));
        continue;
      }
    }
    const Attempt a = send_once(client, call, url, tunnelled);
    if (a.tunnel_refused && proxy) {
      std::this_thread::sleep_for(tunnel_refused(config, call, url, *proxy, a.answer.status, attempt));
      continue;
    }
    if (a.too_big)
      throw Error(ErrorKind::bad_response, call.what + " (" + url.authority() + ") answered more than " +
                                               std::to_string(APS_AUTH_MAX_RESPONSE_BYTES) + " bytes; refused");
    const auto delay = retry_delay(config, call, a, attempt);
    if (!delay) {
      if (a.answered)
        return a.answer;
      throw_transport_error(config, call, url, proxy, a);
    }
    std::this_thread::sleep_for(*delay);
  }
}

// ---- answers

// The fields of both APS error shapes in a JSON error body, sanitized.
inline void read_error_body(const json& j, const HttpCall& call, ErrorDetails& d) {
  d.error = string_field(j, "error");
  d.error_description = string_field(j, "error_description");
  d.error_code = string_field(j, "errorCode");
  d.developer_message = string_field(j, "developerMessage");
  d.user_message = string_field(j, "userMessage");
  d.more_info = string_field(j, "more info");
  if (d.more_info.empty())
    d.more_info = string_field(j, "moreInfo");
  for (auto* f : {&d.error, &d.error_description, &d.error_code, &d.developer_message, &d.user_message, &d.more_info})
    *f = sanitize(*f, std::vector<std::string_view>(call.secrets.begin(), call.secrets.end()), 1000);
}

// A hint for the failures people hit most ("" when none).
inline const char* error_hint(const ErrorDetails& d) {
  if (d.error_code == "AUTH-001")
    return " [the app is not enabled for this API]";
  if (d.error_code == "AUTH-003" || d.status == 401)
    return " [check the client id and secret]";
  if (d.error_code == "AUTH-004")
    return " [invalid scopes for this app]";
  if (d.error == "invalid_grant")
    return " [the code or refresh token is expired, used or revoked; sign in again]";
  if (d.status == 429)
    return " [rate limited; retry later]";
  if (d.status == 407)
    return " [the proxy wants credentials: http://user:password@host:port]";
  return "";
}

// Turns a non-2xx answer into the typed error, keeping every field of both APS error shapes.
[[noreturn]] inline void throw_http_error(const HttpCall& call, const HttpAnswer& a) {
  ErrorDetails d;
  d.status = a.status;
  if (auto ra = parse_retry_after(a.retry_after))
    d.retry_after = *ra;
  std::string msg = call.what + " answered HTTP " + std::to_string(a.status);
  ErrorKind kind = ErrorKind::http;
  if (a.status >= 300 && a.status < 400) {
    msg += " (a redirect, not followed";
    if (auto loc = parse_url(a.location))
      msg += ", to " + loc->host;
    throw Error(kind, msg + ")", d);
  }
  if (auto j = parse_json_object(a.body)) {
    read_error_body(*j, call, d);
    if (!d.error.empty()) {
      kind = d.error == "access_denied" ? ErrorKind::access_denied : ErrorKind::oauth;
      msg += " " + sanitize(d.error, {}, 80);
      if (!d.error_description.empty())
        msg += ": " + sanitize(d.error_description);
    } else if (!d.error_code.empty() || !d.developer_message.empty()) {
      if (!d.error_code.empty())
        msg += " " + sanitize(d.error_code, {}, 40);
      if (!d.developer_message.empty())
        msg += ": " + sanitize(d.developer_message);
    }
  } else {
    msg += " with a non-JSON body";
    if (!a.content_type.empty())
      msg += " (" + sanitize(a.content_type, {}, 60) + ")";
  }
  throw Error(kind, msg + error_hint(d), d);
}

// The JSON object of a 2xx answer; the typed error otherwise.
inline json json_answer(const HttpCall& call, const HttpAnswer& a) {
  if (a.status < 200 || a.status >= 300)
    throw_http_error(call, a);
  auto j = parse_json_object(a.body);
  if (!j) {
    std::string what = a.body.empty() ? "an empty body" : "a body that is not a JSON object";
    if (!a.content_type.empty())
      what += " (" + sanitize(a.content_type, {}, 60) + ")";
    throw Error(ErrorKind::bad_response,
                call.what + " answered HTTP " + std::to_string(a.status) + " with " + what +
                    "; a proxy, captive portal or outage page?",
                ErrorDetails{a.status, {}, {}, {}, {}, {}, {}, {}});
  }
  return *j;
}

// ---- endpoint calls: every call of [5] and [9] is built by one of these two

inline std::string basic_authorization(const std::string& id, const std::string& secret) {
  return "Basic " + base64(form_encode(id) + ":" + form_encode(secret), false);
}

// A form POST with client authentication: Basic for confidential clients (RFC 6749 2.3.1), client_id in the
// body for public ones. Never both (APS answers 400).
inline HttpCall form_post(const Config& config, const char* what, const std::string& url, Params form, Resend resend,
                          std::vector<std::string_view> secrets) {
  require_client_id(config);
  HttpCall call;
  call.url = url;
  call.what = what;
  call.resend = resend;
  for (std::string_view secret : secrets)
    call.add_secret(secret);
  if (!config.client_secret.empty()) {
    call.authorization = basic_authorization(config.client_id, config.client_secret);
    call.add_secret(config.client_secret);
    call.secrets.push_back(call.authorization.substr(6));  // the Basic credentials, base64 of "id:secret"
  } else {
    form.emplace_back("client_id", config.client_id);
  }
  call.form = encode_params(form, true);
  return call;
}

// A GET, with a bearer token when given.
inline HttpCall get_call(const char* what, const std::string& url, const std::string& bearer = "") {
  HttpCall call;
  call.method = "GET";
  call.url = url;
  call.what = what;
  if (!bearer.empty()) {
    call.authorization = "Bearer " + bearer;
    call.secrets = {bearer};
  }
  return call;
}

inline json call_for_json(const Config& config, const HttpCall& call, HttpSession* session = nullptr) {
  return json_answer(call, http_send(config, call, session));
}

// ---- token answers

constexpr std::int64_t kMaxExpiresIn = 366LL * 24 * 3600;

// expires_in of a token answer in seconds: integer, float or a quoted integer; capped, never negative.
inline std::int64_t expires_in_seconds(const json& j, const std::string& what) {
  auto it = j.find("expires_in");
  if (it == j.end())
    return 3600;  // RFC 6749: optional; APS always sends it
  std::int64_t s;
  if (it->is_number_unsigned() && it->get<std::uint64_t>() > static_cast<std::uint64_t>(kMaxExpiresIn)) {
    s = kMaxExpiresIn;
  } else if (it->is_number_integer()) {
    s = it->get<std::int64_t>();
  } else if (it->is_number_float()) {
    double d = it->get<double>();
    if (!(d == d))
      throw Error(ErrorKind::bad_response, what + " answered an invalid expires_in");
    s = d > static_cast<double>(kMaxExpiresIn) ? kMaxExpiresIn : d < 0 ? -1 : static_cast<std::int64_t>(d);
  } else if (it->is_string() && !it->get<std::string>().empty() && it->get<std::string>().size() <= 12 &&
             it->get<std::string>().find_first_not_of("0123456789") == std::string::npos) {
    s = std::stoll(it->get<std::string>());  // some servers quote numbers
  } else {
    throw Error(ErrorKind::bad_response, what + " answered an expires_in that is not a number");
  }
  if (s < 0)
    throw Error(ErrorKind::bad_response, what + " answered a negative expires_in");
  return std::min(s, kMaxExpiresIn);  // a huge lifetime is capped, not trusted
}

inline Token parse_token(const json& j, std::chrono::system_clock::time_point sent_at, const std::string& what) {
  Token t;
  t.access_token = string_field(j, "access_token");
  if (t.access_token.empty())
    throw Error(ErrorKind::bad_response, what + " answered without an access_token");
  // Tokens end up in Authorization headers and shell command lines: only RFC 6750's characters are taken.
  if (!is_b64token(t.access_token))
    throw Error(ErrorKind::bad_response, what + " answered an access_token with characters a bearer token cannot have");
  std::string type = string_field(j, "token_type");
  if (!type.empty() && !iequals(type, "Bearer"))
    throw Error(ErrorKind::bad_response,
                what + " answered token_type '" + sanitize(type.substr(0, 40)) + "'; only Bearer tokens are supported");
  if (!type.empty())
    t.token_type = type;
  t.refresh_token = string_field(j, "refresh_token");
  if (!t.refresh_token.empty() && !is_b64token(t.refresh_token))
    throw Error(ErrorKind::bad_response, what + " answered a refresh_token with characters a bearer token cannot have");
  t.id_token = string_field(j, "id_token");
  t.scope = string_field(j, "scope");
  t.expires_in = std::chrono::seconds(expires_in_seconds(j, what));
  t.expires_at = sent_at + t.expires_in;
  if (!t.refresh_token.empty())
    t.refresh_token_obtained_at = sent_at;
  return t;
}

inline Token token_call(const Config& config, Params form, Resend resend, std::vector<std::string_view> secrets,
                        HttpSession* session = nullptr) {
  HttpCall call =
      form_post(config, "token endpoint", config.endpoints.token, std::move(form), resend, std::move(secrets));
  auto sent_at = std::chrono::system_clock::now();
  return parse_token(call_for_json(config, call, session), sent_at, call.what);
}

inline Token refresh_grant(const Config& config, const std::string& refresh_token,
                           const std::vector<std::string>& scopes, HttpSession* session) {
  if (refresh_token.empty())
    throw Error(ErrorKind::usage, "no refresh token");
  Params form = {{"grant_type", "refresh_token"}, {"refresh_token", refresh_token}};
  if (!scopes.empty())
    form.emplace_back("scope", join(scopes, ' '));
  Token t = token_call(config, std::move(form), Resend::only_if_unsent, {refresh_token}, session);
  if (t.refresh_token.empty())
    t.refresh_token = refresh_token;  // a server that does not rotate (its age: unknown)
  return t;
}

// A refresh that kept the refresh token (the server does not rotate) keeps the time it was obtained.
inline void keep_refresh_token_age(Token& next, const Token& previous) {
  if (next.refresh_token == previous.refresh_token)
    next.refresh_token_obtained_at = previous.refresh_token_obtained_at;
}

inline Token client_credentials_grant(const Config& config, HttpSession* session) {
  if (config.client_secret.empty())
    throw Error(ErrorKind::usage, "client credentials (2-legged) need a client secret");
  return token_call(config, {{"grant_type", "client_credentials"}, {"scope", join(config.scopes, ' ')}}, Resend::safe,
                    {}, session);
}

// ---- answers of the other endpoints (pure, so they can be fuzzed)

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

}  // namespace detail

APS_AUTH_FUNC Token exchange_code(const Config& config, const AuthorizationRequest& request, const std::string& code) {
  if (code.empty())
    throw Error(ErrorKind::usage, "no authorization code to exchange");
  return detail::token_call(config,
                            {{"grant_type", "authorization_code"},
                             {"code", code},
                             {"redirect_uri", request.redirect_uri},
                             {"code_verifier", request.code_verifier}},
                            detail::Resend::only_if_unsent, {code, request.code_verifier});
}

APS_AUTH_FUNC Token refresh(const Config& config, const std::string& refresh_token,
                            const std::vector<std::string>& scopes) {
  return detail::refresh_grant(config, refresh_token, scopes, nullptr);
}

APS_AUTH_FUNC Token client_credentials(const Config& config) {
  return detail::client_credentials_grant(config, nullptr);
}

APS_AUTH_FUNC void revoke(const Config& config, const std::string& token, TokenTypeHint hint) {
  if (token.empty())
    throw Error(ErrorKind::usage, "no token to revoke");
  const char* hint_text = hint == TokenTypeHint::refresh_token ? "refresh_token" : "access_token";
  detail::HttpCall call =
      detail::form_post(config, "revoke endpoint", config.endpoints.revoke,
                        {{"token", token}, {"token_type_hint", hint_text}}, detail::Resend::safe, {token});
  detail::HttpAnswer a = detail::http_send(config, call);
  if (a.status < 200 || a.status >= 300)
    detail::throw_http_error(call, a);
}

APS_AUTH_FUNC Introspection introspect(const Config& config, const std::string& token) {
  if (token.empty())
    throw Error(ErrorKind::usage, "no token to introspect");
  return detail::parse_introspection(
      detail::call_for_json(config, detail::form_post(config, "introspect endpoint", config.endpoints.introspect,
                                                      {{"token", token}}, detail::Resend::safe, {token})));
}

APS_AUTH_FUNC UserInfo userinfo(const Config& config, const std::string& access_token) {
  if (access_token.empty())
    throw Error(ErrorKind::usage, "no access token for userinfo");
  return detail::parse_userinfo(
      detail::call_for_json(config, detail::get_call("userinfo endpoint", config.endpoints.userinfo, access_token)));
}

APS_AUTH_FUNC std::string logout_url(const Config& config, const std::string& post_logout_redirect_uri) {
  detail::Url u = detail::require_url(config.endpoints.logout, "logout endpoint");
  if (post_logout_redirect_uri.empty())
    return config.endpoints.logout;
  return config.endpoints.logout + (u.query.empty() ? "?" : "&") +
         "post_logout_redirect_uri=" + detail::url_encode(post_logout_redirect_uri);
}

// =================================================================================================================
// [6] Token
// =================================================================================================================

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
  if (!refresh_token.empty())
    j["refresh_token"] = refresh_token;
  if (!refresh_token.empty() && refresh_token_obtained_at != std::chrono::system_clock::time_point{})
    j["refresh_token_obtained_at"] = duration_cast<seconds>(refresh_token_obtained_at.time_since_epoch()).count();
  if (!id_token.empty())
    j["id_token"] = id_token;
  if (!scope.empty())
    j["scope"] = scope;
  try {
    return j.dump();
  } catch (const detail::json::exception&) {  // invalid UTF-8 (found by fuzz/token_json)
    throw Error(ErrorKind::usage, "the token has a field that is not valid UTF-8; it cannot be stored as JSON");
  }
}

APS_AUTH_FUNC Token Token::from_json(std::string_view text) {
  auto j = detail::parse_json_object(text);
  if (!j)
    throw Error(ErrorKind::bad_response, "token JSON is not a JSON object");
  Token t = detail::parse_token(*j, std::chrono::system_clock::now(), "token JSON");
  if (auto it = j->find("expires_at"); it != j->end()) {
    if (!it->is_number_integer())
      throw Error(ErrorKind::bad_response, "token JSON has a non-integer expires_at");
    t.expires_at = detail::from_epoch_seconds(*it);
  }
  // Not "now": a stored token without the field (written before it existed) has a refresh token of unknown age.
  t.refresh_token_obtained_at = {};
  if (auto it = j->find("refresh_token_obtained_at"); it != j->end() && !t.refresh_token.empty()) {
    if (!it->is_number_integer())
      throw Error(ErrorKind::bad_response, "token JSON has a non-integer refresh_token_obtained_at");
    t.refresh_token_obtained_at = detail::from_epoch_seconds(*it);
  } else if (j->find("expires_at") == j->end() && !t.refresh_token.empty()) {
    t.refresh_token_obtained_at = std::chrono::system_clock::now();  // a token endpoint answer: issued now
  }
  return t;
}

// =================================================================================================================
// [7] Token stores
// =================================================================================================================

APS_AUTH_FUNC MemoryTokenStore::MemoryTokenStore() : mutex_(std::make_shared<std::mutex>()) {}

APS_AUTH_FUNC bool MemoryTokenStore::load(Token& token) {
  std::lock_guard<std::mutex> lk(*static_cast<std::mutex*>(mutex_.get()));
  if (!token_)
    return false;
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

APS_AUTH_FUNC FileTokenStore::FileTokenStore(std::string path, OpenPermissions permissions,
                                             std::function<void(const std::string&)> warn)
    : path_(std::move(path)), permissions_(permissions), warn_(std::move(warn)) {
  if (path_.empty())
    throw Error(ErrorKind::usage, "empty token file path");
}

APS_AUTH_FUNC std::string FileTokenStore::default_path(const std::string& name) {
  return detail::path_join(detail::path_join(detail::default_state_dir(), "aps-auth"), name + ".json");
}

APS_AUTH_FUNC bool FileTokenStore::load(Token& token) {
  detail::FileContent file;
  if (!detail::read_file_if_exists(path_, file))
    return false;
  if (file.shared) {
    std::string msg = "token file '" + path_ + "' is accessible by other users (" + file.access + "); " +
                      detail::private_file_hint(path_);
    if (permissions_ == OpenPermissions::refuse)
      throw Error(ErrorKind::io, msg);
    if (warn_)
      warn_(msg);
  }
  try {
    token = Token::from_json(file.text);
  } catch (const Error& e) {
    throw Error(ErrorKind::io, "token file '" + path_ + "' is not a valid token (" + e.what() + ")");
  }
  return true;
}

APS_AUTH_FUNC void FileTokenStore::save(const Token& token) {
  detail::replace_file(path_, token.to_json() + "\n");
}

APS_AUTH_FUNC void FileTokenStore::clear() {
  detail::remove_file(path_);
}

// A separate lock file: the token file itself is replaced by rename, so a lock on it would not hold.
APS_AUTH_FUNC std::unique_ptr<StoreLock> FileTokenStore::lock() {
  return detail::lock_file(path_ + ".lock", lock_timeout_);
}

// =================================================================================================================
// [8] Token source
// =================================================================================================================

struct TokenSource::Impl {
  Config config;
  std::shared_ptr<TokenStore> store;
  TokenSourceOptions options;

  std::mutex mutex;  // guards the fields below; held briefly
  Token current;
  bool loaded = false;
  std::chrono::system_clock::time_point refresh_at{};  // hand out `current` until then
  std::mutex refresh_mutex;  // one refresh in flight per TokenSource; also guards `session` and `unsaved`
  detail::HttpSession session;
  bool unsaved = false;  // the last new token could not be saved: ours is newer than the store's

  // When `t` is due for a refresh: the lead time before expiry, at most half its lifetime; at once without one.
  std::chrono::system_clock::time_point refresh_point(const Token& t) const {
    if (t.access_token.empty())
      return {};
    return t.expires_at - std::min<std::chrono::seconds>(options.refresh_lead, t.expires_in / 2);
  }

  bool fresh(const Token& t) const { return std::chrono::system_clock::now() < refresh_point(t); }

  // Makes `t` the current token (the store holds it already).
  void adopt(const Token& t) {
    std::lock_guard<std::mutex> lk(mutex);
    current = t;
    loaded = true;
    refresh_at = refresh_point(t);
    unsaved = false;
  }

  Token current_token() {
    std::lock_guard<std::mutex> lk(mutex);
    return current;
  }

  // A new token from the token endpoint: client credentials, or a refresh with the live refresh token. nullopt
  // when, after an invalid_grant, the store turned out to hold a fresh token another process got meanwhile.
  std::optional<Token> fetch(const Token* stored) {
    if (options.client_credentials)
      return detail::client_credentials_grant(config, &session);
    const Token mine = current_token();
    // After a failed save the stored refresh token was rotated away: ours is the live one.
    const bool use_stored = stored && !stored->refresh_token.empty() && !(unsaved && !mine.refresh_token.empty());
    const std::string rt = use_stored ? stored->refresh_token : mine.refresh_token;
    if (rt.empty())
      throw Error(ErrorKind::usage, "no refresh token to renew the access token with; sign in first");
    try {
      return detail::refresh_grant(config, rt, {}, &session);
    } catch (const Error& e) {
      if (e.details().error != "invalid_grant" || !store)
        throw;
      // Someone else may have rotated it between our read and our refresh: read once more.
      Token again;
      if (!store->load(again) || again.refresh_token == rt)
        throw;
      if (fresh(again)) {
        adopt(again);
        return std::nullopt;
      }
      return detail::refresh_grant(config, again.refresh_token, {}, &session);
    }
  }

  // Keeps the new token in memory first (if saving fails, nothing is lost), then saves it.
  void take_new(const Token& next) {
    {
      std::lock_guard<std::mutex> lk(mutex);
      current = next;
      refresh_at = refresh_point(next);
    }
    if (store) {
      try {
        store->save(next);
        unsaved = false;
      } catch (const Error& e) {
        unsaved = true;
        if (options.on_new_token)
          options.on_new_token(next);  // the application may keep it elsewhere
        throw Error(ErrorKind::io, std::string("got a new token but could not save it; it is kept in memory "
                                               "(TokenSource::token() returns it): ") +
                                       e.what());
      }
    }
    if (options.on_new_token)
      options.on_new_token(next);
  }

  // Runs with refresh_mutex held: the single flight, under the store's cross-process lock.
  void renew() {
    std::unique_ptr<StoreLock> cross_process = store ? store->lock() : nullptr;
    Token stored;
    const bool have_stored = store && store->load(stored);
    if (have_stored && fresh(stored)) {  // another process (or an earlier run) already rotated: use its token
      adopt(stored);
      return;
    }
    if (std::optional<Token> next = fetch(have_stored ? &stored : nullptr)) {
      detail::keep_refresh_token_age(*next, have_stored ? stored : current_token());
      take_new(*next);
    }
  }

  Token get() {
    {
      std::lock_guard<std::mutex> lk(mutex);
      if (loaded && std::chrono::system_clock::now() < refresh_at)
        return current;
    }
    std::lock_guard<std::mutex> flight(refresh_mutex);
    {
      std::lock_guard<std::mutex> lk(mutex);
      if (!loaded) {
        Token t;
        if (store && store->load(t)) {
          current = t;
          refresh_at = refresh_point(t);
        }
        loaded = true;
      }
      if (std::chrono::system_clock::now() < refresh_at)
        return current;  // refreshed while we waited
    }
    renew();
    return current_token();
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
    if (impl_->loaded && detail::now_before(impl_->refresh_at))
      return impl_->current.access_token;
  }
  return impl_->get().access_token;
}

APS_AUTH_FUNC Token TokenSource::token() {
  return impl_->get();
}

// =================================================================================================================
// [9] OpenID Connect
// =================================================================================================================

namespace detail {

// The document's issuer must equal the one asked for (OIDC Discovery 4.3), and every endpoint must be a URL
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
    if (required)
      throw Error(ErrorKind::bad_response, std::string("discovery document has no ") + *names.begin());
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

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::shared_ptr<EVP_PKEY>;

// An RSA public key from a JWK's base64url n and e.
inline Pkey rsa_key_from_jwk(const std::string& n_b64, const std::string& e_b64) {
  auto n = base64_decode(n_b64), e = base64_decode(e_b64);
  if (!n || !e || n->empty() || e->empty() || n->size() > 2048)
    return nullptr;
  BIGNUM* bn_n = BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()), static_cast<int>(n->size()), nullptr);
  BIGNUM* bn_e = BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()), static_cast<int>(e->size()), nullptr);
  EVP_PKEY* pkey = nullptr;
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM* params = nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr);
  if (bn_n && bn_e && bld && ctx && OSSL_PARAM_BLD_push_BN(bld, "n", bn_n) == 1 &&
      OSSL_PARAM_BLD_push_BN(bld, "e", bn_e) == 1 && (params = OSSL_PARAM_BLD_to_param(bld)) != nullptr &&
      EVP_PKEY_fromdata_init(ctx) == 1) {
    if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
      pkey = nullptr;
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
  if (arr == j.end() || !arr->is_array())
    throw Error(ErrorKind::bad_response, "JWKS has no 'keys' array");
  for (const auto& k : *arr) {
    if (!k.is_object() || string_field(k, "kty") != "RSA")
      continue;
    std::string use = string_field(k, "use"), alg = string_field(k, "alg");
    if ((!use.empty() && use != "sig") || (!alg.empty() && alg != "RS256"))
      continue;
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
  if (d1 == std::string_view::npos)
    return std::nullopt;
  std::size_t d2 = token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos)
    return std::nullopt;
  auto h = base64_decode(token.substr(0, d1));
  auto c = base64_decode(token.substr(d1 + 1, d2 - d1 - 1));
  auto sig = base64_decode(token.substr(d2 + 1));
  if (!h || !c || !sig)
    return std::nullopt;
  auto hj = parse_json_object(*h), cj = parse_json_object(*c);
  if (!hj || !cj)
    return std::nullopt;
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
// Whether the id_token was issued for this client: aud is the client id, or a list holding it (then, with more
// than one audience, azp must be the client id too).
inline bool audience_ok(const json& c, const std::string& client_id, std::string& audience) {
  auto aud = c.find("aud");
  if (aud == c.end())
    return false;
  if (aud->is_string()) {
    audience = aud->get<std::string>();
    return audience == client_id;
  }
  if (!aud->is_array())
    return false;
  audience = client_id;
  const bool listed = std::any_of(aud->begin(), aud->end(),
                                  [&](const json& a) { return a.is_string() && a.get<std::string>() == client_id; });
  return listed && (aud->size() == 1 || string_field(c, "azp") == client_id);
}

// Verifies the signature with the key `find_key(kid)` gives, then the claims. Pure but for the key lookup.
inline IdTokenClaims check_id_token(std::string_view token, const IdTokenExpectation& want,
                                    const std::function<Pkey(const std::string& kid)>& find_key) {
  auto jwt = decode_jwt(token);
  if (!jwt)
    throw Error(ErrorKind::bad_response, "the id_token is not a well-formed JWT");
  // Only RS256: "none", HS256 (a public key used as an HMAC secret) and anything else are refused.
  std::string alg = string_field(jwt->header, "alg");
  if (alg != "RS256")
    throw Error(ErrorKind::bad_response,
                "id_token alg '" + sanitize(alg, {}, 20) + "' refused; only RS256 is accepted");
  // RFC 7515 4.1.11: extensions named in crit must be understood; this library understands none.
  if (jwt->header.contains("crit"))
    throw Error(ErrorKind::bad_response,
                "the id_token's header lists critical extensions (crit) that are not supported");
  std::string kid = string_field(jwt->header, "kid");
  Pkey key = find_key(kid);
  if (!key)
    throw Error(ErrorKind::bad_response, "no JWKS key for the id_token's kid '" + sanitize(kid, {}, 80) + "'");
  if (!rs256_verify(key.get(), jwt->signing_input, jwt->signature))
    throw Error(ErrorKind::bad_response, "the id_token signature does not verify");
  const json& c = jwt->claims;
  IdTokenClaims out;
  out.issuer = string_field(c, "iss");
  if (trim_slash(out.issuer) != trim_slash(want.issuer))
    throw Error(ErrorKind::bad_response, "id_token issuer '" + sanitize(out.issuer, {}, 200) + "' is not '" +
                                             sanitize(want.issuer, {}, 200) + "'");
  if (!audience_ok(c, want.audience, out.audience))
    throw Error(ErrorKind::bad_response, "the id_token was not issued for this client (aud)");
  using namespace std::chrono;
  const std::int64_t now = duration_cast<seconds>(want.now.time_since_epoch()).count();
  const std::int64_t exp = int_claim(c, "exp"), iat = int_claim(c, "iat");
  if (now - want.leeway.count() >= exp)
    throw Error(ErrorKind::bad_response, "the id_token has expired");
  if (iat > now + want.leeway.count())
    throw Error(ErrorKind::bad_response, "the id_token was issued in the future");
  if (c.contains("nbf") && int_claim(c, "nbf") > now + want.leeway.count())
    throw Error(ErrorKind::bad_response, "the id_token is not valid yet (nbf)");
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

using Jwks = std::vector<std::pair<std::string, Pkey>>;  // kid -> key

constexpr std::chrono::seconds kJwksDefaultMaxAge{3600};   // when the answer says nothing
constexpr std::chrono::seconds kJwksLongestMaxAge{86400};  // whatever it says

// How long a JWKS answer may be kept: Cache-Control max-age (0 for no-store or no-cache), else an hour; at most
// a day, so that a long-running process sees rotated or withdrawn keys.
inline std::chrono::seconds jwks_max_age(std::string_view cache_control) {
  std::optional<std::int64_t> max_age;
  bool no_cache = false;
  for (std::size_t p = 0; p <= cache_control.size();) {
    std::size_t comma = cache_control.find(',', p);
    if (comma == std::string_view::npos)
      comma = cache_control.size();
    std::string_view d = cache_control.substr(p, comma - p);
    while (!d.empty() && (d.front() == ' ' || d.front() == '\t'))
      d.remove_prefix(1);
    while (!d.empty() && (d.back() == ' ' || d.back() == '\t'))
      d.remove_suffix(1);
    if (iequals(d, "no-store") || iequals(d, "no-cache"))
      no_cache = true;
    if (d.size() > 8 && iequals(d.substr(0, 8), "max-age=")) {
      std::string_view v = d.substr(8);
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"')
        v = v.substr(1, v.size() - 2);
      if (!v.empty() && v.find_first_not_of("0123456789") == std::string_view::npos) {
        while (v.size() > 1 && v.front() == '0')
          v.remove_prefix(1);  // "0000000001" is 1 (found by fuzz/cache_control)
        max_age = v.size() > 9 ? kJwksLongestMaxAge.count() : std::stoll(std::string(v));
      }
    }
    p = comma + 1;
  }
  if (no_cache)
    return std::chrono::seconds(0);
  if (!max_age)
    return kJwksDefaultMaxAge;
  return std::chrono::seconds(std::min<std::int64_t>(*max_age, kJwksLongestMaxAge.count()));
}

// Process-wide JWKS cache: jwks URL -> keys, each answer kept for its max age (jwks_max_age).
class JwksCache {
 public:
  static JwksCache& instance() {
    static JwksCache cache;  // built on first use, not at static initialisation
    return cache;
  }
  Pkey find(const std::string& url, const std::string& kid) {
    std::lock_guard<std::mutex> lk(mutex_);
    for (const auto& e : entries_)
      if (e.url == url && Clock::now() < e.expires)
        return pick_key(e.keys, kid);
    return nullptr;
  }
  void put(const std::string& url, const Jwks& keys, std::chrono::seconds max_age) {
    std::lock_guard<std::mutex> lk(mutex_);
    const Clock::time_point expires = Clock::now() + max_age;
    for (auto& e : entries_)
      if (e.url == url) {
        e.keys = keys;
        e.expires = expires;
        return;
      }
    entries_.push_back({url, keys, expires});
  }
  // The key for kid; a key without kid when it is the only one.
  static Pkey pick_key(const Jwks& keys, const std::string& kid) {
    for (const auto& k : keys)
      if (k.first == kid)
        return k.second;
    if (kid.empty() && keys.size() == 1)
      return keys.front().second;
    return nullptr;
  }

 private:
  struct Entry {
    std::string url;
    Jwks keys;
    Clock::time_point expires;
  };
  std::mutex mutex_;
  std::vector<Entry> entries_;
};

}  // namespace detail

APS_AUTH_FUNC Endpoints discover(const Config& config, const std::string& issuer) {
  const std::string url = detail::trim_slash(issuer) + "/.well-known/openid-configuration";
  return detail::parse_discovery(detail::call_for_json(config, detail::get_call("discovery document", url)), issuer);
}

APS_AUTH_FUNC IdTokenClaims verify_id_token(const Config& config, const std::string& id_token, const std::string& nonce,
                                            std::chrono::seconds leeway) {
  if (id_token.empty())
    throw Error(ErrorKind::usage, "no id_token to verify");
  if (config.endpoints.jwks.empty())
    throw Error(ErrorKind::usage, "no JWKS endpoint (Endpoints::jwks)");
  detail::IdTokenExpectation want;
  want.issuer = config.endpoints.issuer;
  want.audience = config.client_id;
  want.nonce = nonce;
  want.leeway = leeway;
  const std::string& url = config.endpoints.jwks;
  auto& cache = detail::JwksCache::instance();
  bool fetched = false;
  return detail::check_id_token(id_token, want, [&](const std::string& kid) -> detail::Pkey {
    if (auto key = cache.find(url, kid))
      return key;
    if (fetched)
      return nullptr;
    fetched = true;  // an unknown kid (the keys may have rotated) or an expired answer: fetch once
    const detail::HttpCall call = detail::get_call("JWKS endpoint", url);
    const detail::HttpAnswer answer = detail::http_send(config, call);
    auto keys = detail::parse_jwks(detail::json_answer(call, answer));
    cache.put(url, keys, detail::jwks_max_age(answer.cache_control));
    return detail::JwksCache::pick_key(keys, kid);
  });
}

// =================================================================================================================
// [10] Sign-in
// =================================================================================================================

APS_AUTH_FUNC Token login(const Config& config, const LoginOptions& options) {
  LoopbackListener listener(config.callback_url);  // bound before the browser opens
  AuthorizationRequest request = authorization_request(config, options.authorize, listener.redirect_uri());
  if (options.on_listening)
    options.on_listening(listener);
  bool opened = false;
  if (options.open_browser)
    opened = options.browser ? options.browser(request.url) : open_browser(request.url, {config.client_secret});
  if (!opened && options.show_url)
    options.show_url(request.url);
  const std::string code = listener.wait_and_hold(request, options.timeout);
  try {  // the browser's page waits for the outcome, so that it tells the truth
    Token token = exchange_code(config, request, code);
    std::string who;
    if (!token.id_token.empty()) {
      IdTokenClaims claims = verify_id_token(config, token.id_token, request.nonce);
      who = !claims.name.empty() ? claims.name : !claims.email.empty() ? claims.email : claims.subject;
    }
    listener.answer_signed_in(who);
    return token;
  } catch (const Error& e) {
    listener.answer_failed(e);
    throw;
  }
}

APS_AUTH_NAMESPACE_END

#endif  // implementation

#ifdef _WIN32
#pragma pop_macro("min")
#pragma pop_macro("max")
#endif
#endif  // APS_AUTH_HPP
