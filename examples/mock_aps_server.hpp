// mock_aps_server.hpp — an in-process mock of Autodesk Platform Services (APS) Authentication v2.
//
// Used by the doctest suite and by `aps-auth demo`. It is an independent oracle: it never includes
// aps_auth.hpp and does its own SHA-256 / base64url / JWT signing with OpenSSL, so a bug in the
// library cannot hide itself by being mirrored here. Behaviour follows APS's documented Authentication
// v2 API: the endpoints under /authentication/v2/ (authorize, token, revoke, introspect, keys, logout)
// plus /userinfo and /.well-known/openid-configuration, their parameters, the token answers, and both
// error shapes APS uses (OAuth's {"error","error_description"} and APS's {"developerMessage",
// "errorCode","more info"}). Header-only; needs cpp-httplib (split or header-only build),
// nlohmann/json, OpenSSL 3 and std::thread. TLS needs CPPHTTPLIB_OPENSSL_SUPPORT. Runs on POSIX
// systems and on Windows (Winsock; link ws2_32): the OS calls are in the `sys` block below.
//
// Choices where APS is silent (documented so tests can rely on them):
//  * client_credentials without `scope` => 400 APS style AUTH-008 (APS shape, like other missing params).
//  * Any failed authorization_code attempt by the right client burns the code (as most servers do).
//  * A code_verifier sent for a code issued without code_challenge => invalid_grant (RFC 9700 §2.1.1).
//  * client_secret in the form body (client_secret_post) is accepted: APS accepts it (aps-toolkit uses it).
//  * Revoking a refresh token also kills the access tokens of that grant (RFC 7009 §2.1 SHOULD);
//    revoking a token issued to another client answers 200 and does nothing.
//  * One RSA-2048 signing key per process (generation costs ~200 ms); kid = RFC 7638 thumbprint.
//
// Notes for test writers:
//  * httplib::Client percent-decodes the Location header; to see the exact redirect use
//    detail::http_request (raw) or follow_like_browser.
//  * A `hang` fault is released by stop() and then answers 503 + Connection: close.
//  * stop() returns at once, except that an idle keep-alive connection held open by a client
//    still alive may delay it by up to 1 s (httplib's keep-alive wait; timeout set to 1 s here).
//  * Counter keys: authorize, authorize.decision, token, token.<grant_type>, revoke, introspect,
//    userinfo, keys, discovery, logout, other (unknown paths/methods).
#pragma once

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/core_names.h>
#endif

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace aps_mock {

// ----------------------------------------------------------------------------------------------
// Platform: every OS call of the mock. The raw server and the raw HTTP client use TCP sockets
// directly (httplib does the rest); POSIX sockets and Winsock differ in types, error codes, the
// non-blocking switch, poll() and close().
// ----------------------------------------------------------------------------------------------
namespace sys {

#ifdef _WIN32
using socket_t = SOCKET;
const socket_t bad_socket = INVALID_SOCKET;
using pollfd_t = WSAPOLLFD;

// Winsock counts WSAStartup calls; one per process, never undone (sockets may outlive any object).
inline void net_init() {
  static const bool ok = [] {
    WSADATA data;
    return ::WSAStartup(MAKEWORD(2, 2), &data) == 0;
  }();
  if (!ok)
    throw std::runtime_error("aps_mock: WSAStartup failed");
}
inline int last_error() {
  return ::WSAGetLastError();
}
inline bool retryable(int e) {
  return e == WSAEWOULDBLOCK;
}  // a non-blocking call to repeat later
inline bool in_progress(int e) {
  return e == WSAEWOULDBLOCK || e == WSAEINPROGRESS;
}
inline void close_socket(socket_t s) {
  ::closesocket(s);
}
// Not inherited by child processes (the CLI tests start some).
inline socket_t stream_socket(int family, bool nonblocking) {
  net_init();
  socket_t s =
      ::WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  u_long on = 1;
  if (s != bad_socket && nonblocking && ::ioctlsocket(s, FIONBIO, &on) != 0) {
    close_socket(s);
    return bad_socket;
  }
  return s;
}
inline socket_t accept_socket(socket_t listener) {
  return ::accept(listener, nullptr, nullptr);
}
inline int poll_once(pollfd_t* fds, size_t n, int timeout_ms) {
  return ::WSAPoll(fds, static_cast<ULONG>(n), timeout_ms);
}
inline long send_some(socket_t s, const char* data, size_t n) {
  return ::send(s, data, static_cast<int>(std::min<size_t>(n, INT_MAX)), 0);
}
inline long recv_some(socket_t s, char* data, size_t n) {
  return ::recv(s, data, static_cast<int>(std::min<size_t>(n, INT_MAX)), 0);
}
inline void shutdown_send(socket_t s) {
  ::shutdown(s, SD_SEND);
}
// Windows lets a second socket bind a port taken with SO_REUSEADDR; exclusive use prevents that.
const int listen_option = SO_EXCLUSIVEADDRUSE;
#else
using socket_t = int;
const socket_t bad_socket = -1;
using pollfd_t = ::pollfd;

inline void net_init() {}
inline int last_error() {
  return errno;
}
inline bool retryable(int e) {
  return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}
inline bool in_progress(int e) {
  return e == EINPROGRESS;
}
inline void close_socket(socket_t s) {
  ::close(s);
}
inline socket_t stream_socket(int family, bool nonblocking) {
  return ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
}
inline socket_t accept_socket(socket_t listener) {
  return ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
}
inline int poll_once(pollfd_t* fds, size_t n, int timeout_ms) {
  int r;
  while ((r = ::poll(fds, static_cast<nfds_t>(n), timeout_ms)) < 0 && errno == EINTR) {
  }
  return r;
}
inline long send_some(socket_t s, const char* data, size_t n) {
  return ::send(s, data, n, MSG_NOSIGNAL);
}
inline long recv_some(socket_t s, char* data, size_t n) {
  return ::recv(s, data, n, 0);
}
inline void shutdown_send(socket_t s) {
  ::shutdown(s, SHUT_WR);
}
// A port in TIME_WAIT from an earlier run can be bound again.
const int listen_option = SO_REUSEADDR;
#endif

template <class T>
inline int set_option(socket_t s, int level, int name, const T& value) {
  return ::setsockopt(s, level, name, reinterpret_cast<const char*>(&value), static_cast<socklen_t>(sizeof value));
}

// The pending error of a socket (a non-blocking connect's outcome); -1 when it cannot be read.
inline int socket_error(socket_t s) {
  int err = 0;
  socklen_t len = sizeof err;
  return ::getsockopt(s, SOL_SOCKET, SO_ERROR, reinterpret_cast<char*>(&err), &len) == 0 ? err : -1;
}

// Closes with an RST instead of a FIN (SO_LINGER with a zero timeout).
inline void reset_socket(socket_t s) {
  linger l{};
  l.l_onoff = 1;
  l.l_linger = 0;
  set_option(s, SOL_SOCKET, SO_LINGER, l);
  close_socket(s);
}

// A listening TCP socket on 127.0.0.1 and a free port; bad_socket on failure.
inline socket_t listen_loopback(int& port) {
  socket_t s = stream_socket(AF_INET, false);
  if (s == bad_socket)
    return s;
  set_option(s, SOL_SOCKET, listen_option, 1);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 64) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close_socket(s);
    return bad_socket;
  }
  port = ntohs(a.sin_port);
  return s;
}

// Two connected sockets: a byte sent into [1] makes [0] readable for every poll until closed.
inline bool socket_pair(socket_t (&pair)[2]) {
#ifdef _WIN32
  // No AF_UNIX pair that WSAPoll can wait on: connect to a one-shot loopback listener and check that
  // the accepted connection is ours (another local program could connect first).
  int port = 0;
  socket_t listener = listen_loopback(port);
  if (listener == bad_socket)
    return false;
  pair[0] = pair[1] = bad_socket;
  pair[1] = stream_socket(AF_INET, false);
  sockaddr_in to{}, mine{}, peer{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons(static_cast<u_short>(port));
  socklen_t mine_len = sizeof mine, peer_len = sizeof peer;
  bool ok = pair[1] != bad_socket && ::connect(pair[1], reinterpret_cast<sockaddr*>(&to), sizeof to) == 0 &&
            ::getsockname(pair[1], reinterpret_cast<sockaddr*>(&mine), &mine_len) == 0 &&
            (pair[0] = accept_socket(listener)) != bad_socket &&
            ::getpeername(pair[0], reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0 &&
            peer.sin_port == mine.sin_port && peer.sin_addr.s_addr == mine.sin_addr.s_addr;
  close_socket(listener);
  if (!ok) {
    for (socket_t s : pair)
      if (s != bad_socket)
        close_socket(s);
  }
  return ok;
#else
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    return false;
  pair[0] = fds[0];
  pair[1] = fds[1];
  return true;
#endif
}

}  // namespace sys

// ----------------------------------------------------------------------------------------------
// Small helpers (encoding, hashing, OpenSSL RAII). Public in `detail` so tests may reuse them.
// ----------------------------------------------------------------------------------------------
namespace detail {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free_all(p); }
};
struct PctxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct MdFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct BnFree {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

[[noreturn]] inline void fail(const std::string& what) {
  throw std::runtime_error("aps_mock: " + what);
}

inline std::string lower(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

inline std::string base64(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(&out[0]), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

inline std::string base64url(const std::string& in) {
  std::string s = base64(in);
  for (auto& c : s)
    c = c == '+' ? '-' : c == '/' ? '_' : c;
  while (!s.empty() && s.back() == '=')
    s.pop_back();
  return s;
}

// Strict standard base64 decode (for Basic auth); nullopt on malformed input.
inline std::optional<std::string> base64_decode(const std::string& in) {
  if (in.empty() || in.size() % 4 != 0)
    return std::nullopt;
  for (char c : in)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/' && c != '=')
      return std::nullopt;
  std::string out(in.size() / 4 * 3 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(&out[0]), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0)
    return std::nullopt;
  size_t pad = in.size() >= 2 && in[in.size() - 2] == '=' ? 2 : in.back() == '=' ? 1 : 0;
  out.resize(static_cast<size_t>(n) - pad);  // EVP_DecodeBlock counts padding as zero bytes
  return out;
}

inline std::string sha256(const std::string& in) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(in.data(), in.size(), md, &len, EVP_sha256(), nullptr) != 1)
    fail("SHA-256 failed");
  return std::string(reinterpret_cast<char*>(md), len);
}

inline std::string random_token(size_t bytes) {
  std::string buf(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&buf[0]), static_cast<int>(bytes)) != 1)
    fail("RAND_bytes failed");
  return base64url(buf);
}

// RFC 3986 percent-encoding: everything but unreserved characters.
inline std::string pct_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// application/x-www-form-urlencoded decoding ('+' is a space); malformed escapes stay literal.
inline std::string form_decode(const std::string& s) {
  auto hexval = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

using Form = std::multimap<std::string, std::string>;

inline Form parse_form(const std::string& s) {
  Form f;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t amp = s.find('&', pos);
    if (amp == std::string::npos)
      amp = s.size();
    std::string part = s.substr(pos, amp - pos);
    if (!part.empty()) {
      size_t eq = part.find('=');
      if (eq == std::string::npos)
        f.emplace(form_decode(part), "");
      else
        f.emplace(form_decode(part.substr(0, eq)), form_decode(part.substr(eq + 1)));
    }
    pos = amp + 1;
  }
  return f;
}

inline std::string get(const Form& f, const std::string& k) {
  auto it = f.find(k);
  return it == f.end() ? std::string() : it->second;
}
inline bool has(const Form& f, const std::string& k) {
  return f.find(k) != f.end();
}

// The mock's own escaper, like its own encoders: it never includes aps_auth.hpp (see the top).
inline std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
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

inline std::vector<std::string> split_scopes(const std::string& s) {
  std::vector<std::string> v;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ')
      ++i;
    size_t j = s.find(' ', i);
    if (j == std::string::npos)
      j = s.size();
    if (j > i)
      v.push_back(s.substr(i, j - i));
    i = j;
  }
  return v;
}

inline bool has_scope(const std::string& scopes, const std::string& one) {
  auto v = split_scopes(scopes);
  return std::find(v.begin(), v.end(), one) != v.end();
}

inline bool is_unreserved_string(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' || c == '~';
  });
}

inline std::string bio_string(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

inline PkeyPtr generate_key(int type, int bits_or_nid) {
  std::unique_ptr<EVP_PKEY_CTX, PctxFree> ctx(EVP_PKEY_CTX_new_id(type, nullptr));
  EVP_PKEY* k = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) <= 0)
    fail("keygen init failed");
  int ok = type == EVP_PKEY_RSA ? EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), bits_or_nid)
                                : EVP_PKEY_CTX_set_ec_paramgen_curve_nid(ctx.get(), bits_or_nid);
  if (ok <= 0 || EVP_PKEY_keygen(ctx.get(), &k) <= 0)
    fail("key generation failed");
  return PkeyPtr(k);
}

inline std::string key_pem(EVP_PKEY* k, bool private_part) {
  BioPtr b(BIO_new(BIO_s_mem()));
  int ok = private_part ? PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr)
                        : PEM_write_bio_PUBKEY(b.get(), k);
  if (ok != 1)
    fail("PEM export failed");
  return bio_string(b.get());
}

inline std::string cert_pem(X509* x) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509(b.get(), x) != 1)
    fail("PEM export failed");
  return bio_string(b.get());
}

inline SSL_CTX* as_ssl_ctx(SSL_CTX& ctx) {
  return &ctx;
}
inline SSL_CTX* as_ssl_ctx(void* ctx) {
  return static_cast<SSL_CTX*>(ctx);
}

inline X509Ptr load_cert(const std::string& pem) {
  BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr x(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
  if (!x)
    fail("cannot parse certificate PEM");
  return x;
}

inline PkeyPtr load_key(const std::string& pem) {
  BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr k(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
  if (!k)
    fail("cannot parse private key PEM");
  return k;
}

inline void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext)
    fail("bad X509 extension: " + value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// One X.509 v3 certificate; issuer == nullptr means self-signed.
inline X509Ptr make_cert(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key, bool ca,
                         const std::string& san) {
  X509Ptr x(X509_new());
  X509_set_version(x.get(), 2);
  std::unique_ptr<BIGNUM, BnFree> serial(BN_new());
  BN_rand(serial.get(), 64, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
  BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(x.get()));
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);  // tolerate small clock skew
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 30L * 24 * 3600);
  X509_set_pubkey(x.get(), key);
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("Mock APS"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509* iss = issuer ? issuer : x.get();
  add_ext(x.get(), iss, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  add_ext(x.get(), iss, NID_key_usage,
          ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature,keyEncipherment");
  add_ext(x.get(), iss, NID_subject_key_identifier, "hash");
  add_ext(x.get(), iss, NID_authority_key_identifier, "keyid:always");
  if (!ca)
    add_ext(x.get(), iss, NID_ext_key_usage, "serverAuth");
  if (!san.empty())
    add_ext(x.get(), iss, NID_subject_alt_name, san);
  if (X509_sign(x.get(), issuer_key, EVP_sha256()) <= 0)
    fail("X509_sign failed");
  return x;
}

inline std::string rs256(EVP_PKEY* key, const std::string& input) {
  std::unique_ptr<EVP_MD_CTX, MdFree> md(EVP_MD_CTX_new());
  size_t len = 0;
  if (!md || EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
    fail("RS256 sign init failed");
  std::string sig(len, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(&sig[0]), &len,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
    fail("RS256 sign failed");
  sig.resize(len);
  return sig;
}

inline std::string bn_bytes(const BIGNUM* bn) {
  std::string out(static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(&out[0]));
  return out;
}

// JWK {kty,n,e} of an RSA public key (values base64url, big-endian, no leading zero).
inline nlohmann::json rsa_jwk(EVP_PKEY* key) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  BIGNUM* n = nullptr;
  BIGNUM* e = nullptr;
  if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n) != 1 ||
      EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e) != 1) {
    BN_free(n);
    fail("not an RSA key");
  }
  std::unique_ptr<BIGNUM, BnFree> n_guard(n), e_guard(e);
#else
  const BIGNUM *n = nullptr, *e = nullptr;
  RSA_get0_key(EVP_PKEY_get0_RSA(key), &n, &e, nullptr);
  if (!n || !e)
    fail("not an RSA key");
#endif
  return {{"kty", "RSA"}, {"n", base64url(bn_bytes(n))}, {"e", base64url(bn_bytes(e))}};
}

// The process-wide signing key: RSA-2048 generation is slow, and tests start many servers.
inline std::shared_ptr<EVP_PKEY> shared_signing_key() {
  static std::shared_ptr<EVP_PKEY> key(generate_key(EVP_PKEY_RSA, 2048).release(), PkeyFree());
  return key;
}

inline std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------
// Test PKI: a self-signed CA and a server certificate it signs (EC P-256: fast to generate).
// ----------------------------------------------------------------------------------------------
struct Pki {
  std::string ca_cert_pem, ca_key_pem;
  std::string server_cert_pem, server_key_pem;

  // CN=common_name, SAN: DNS:common_name, IP:127.0.0.1, IP:::1.
  static Pki generate(const std::string& common_name = "localhost") {
    return make(common_name, "DNS:" + common_name + ",IP:127.0.0.1,IP:::1");
  }
  // SAN exactly from the lists (CN = first name); both empty => no SAN at all (CN-only certificate).
  static Pki generate_for(const std::vector<std::string>& dns_names, const std::vector<std::string>& ips) {
    std::string san;
    for (const auto& d : dns_names)
      san += (san.empty() ? "DNS:" : ",DNS:") + d;
    for (const auto& i : ips)
      san += (san.empty() ? "IP:" : ",IP:") + i;
    std::string cn = !dns_names.empty() ? dns_names[0] : !ips.empty() ? ips[0] : "mock-aps";
    return make(cn, san);
  }
  // Writes ca.pem, server.pem and server.key (mode 0600) into dir, creating it if needed.
  void write(const std::string& dir) const {
    namespace fs = std::filesystem;
    fs::create_directories(dir);
    auto put = [&](const char* name, const std::string& text) {
      std::ofstream f(fs::path(dir) / name, std::ios::binary | std::ios::trunc);
      f << text;
      if (!f)
        detail::fail(std::string("cannot write ") + name);
    };
    put("ca.pem", ca_cert_pem);
    put("server.pem", server_cert_pem);
    put("server.key", server_key_pem);
    fs::permissions(fs::path(dir) / "server.key", fs::perms::owner_read | fs::perms::owner_write);
  }

 private:
  static Pki make(const std::string& cn, const std::string& san) {
    auto ca_key = detail::generate_key(EVP_PKEY_EC, NID_X9_62_prime256v1);
    auto ca = detail::make_cert(ca_key.get(), "Mock APS Test CA", nullptr, ca_key.get(), true, "");
    auto srv_key = detail::generate_key(EVP_PKEY_EC, NID_X9_62_prime256v1);
    auto srv = detail::make_cert(srv_key.get(), cn, ca.get(), ca_key.get(), false, san);
    Pki p;
    p.ca_cert_pem = detail::cert_pem(ca.get());
    p.ca_key_pem = detail::key_pem(ca_key.get(), true);
    p.server_cert_pem = detail::cert_pem(srv.get());
    p.server_key_pem = detail::key_pem(srv_key.get(), true);
    return p;
  }
};

struct RegisteredClient {
  std::string id;
  std::string secret;                      // empty => public client (PKCE mandatory, client_id in body)
  std::vector<std::string> redirect_uris;  // exact match required
};

enum class Consent { auto_approve, page, auto_submit_page };

// A scripted answer for the next `count` requests on `path` ("" = any path).
// status == 0 means "only delay (delay_ms), then handle normally".
struct Fault {
  std::string path;
  int count = 1;
  int status = 500;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  int delay_ms = 0;
  bool hang = false;  // never answer until the server stops (then 503 + Connection: close)
};

struct Options {
  bool tls = false;
  std::vector<RegisteredClient> clients;  // empty => mock-client/mock-secret and public mock-public
  Consent consent = Consent::auto_approve;
  bool deny = false;
  std::string deny_description = "The user denied access.";
  int expires_in = 3599;
  int token_delay_ms = 0;
  bool revoke_endpoint_name_legacy = false;
  bool iss_in_callback = false;
  // Extensions beyond the brief:
  std::optional<Pki> pki;               // tls: serve this PKI instead of a fresh Pki::generate("localhost")
  int code_lifetime_s = 300;            // APS: authorization codes live 5 minutes
  int refresh_lifetime_s = 15 * 86400;  // APS: refresh tokens live 15 days
  bool strict_state = false;            // reject a state outside APS's [A-Za-z0-9,._-] (invalid_request)
};

struct RecordedRequest {
  std::string method, path, query /*raw*/, body;
  std::multimap<std::string, std::string> headers;     // names as sent
  std::multimap<std::string, std::string> form;        // parsed body (form posts) or parsed query
  std::string header(const std::string& name) const {  // case-insensitive, first value or ""
    for (const auto& h : headers)
      if (detail::lower(h.first) == detail::lower(name))
        return h.second;
    return "";
  }
  std::string param(const std::string& name) const { return detail::get(form, name); }
};

// ----------------------------------------------------------------------------------------------
// The mock APS server.
// ----------------------------------------------------------------------------------------------
class Server {
 public:
  static constexpr const char* kUserId = "MOCKAPSUSER1";
  static constexpr const char* kErrorInfo =
      "https://aps.autodesk.com/en/docs/oauth/v2/developers_guide/error_handling/";

  explicit Server(Options opts = {})
      : opts_(normalized(std::move(opts))), tls_(opts_.tls), key_(detail::shared_signing_key()) {
    nlohmann::json jwk = detail::rsa_jwk(key_.get());
    // RFC 7638 thumbprint: members in lexicographic order, no whitespace (nlohmann sorts keys).
    kid_ = detail::base64url(detail::sha256(jwk.dump()));
    jwk_ = jwk;
    jwk_["kid"] = kid_;
    jwk_["use"] = "sig";
    jwk_["alg"] = "RS256";
    if (tls_) {
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
      pki_ = opts_.pki ? *opts_.pki : Pki::generate("localhost");
      auto cert = detail::load_cert(pki_.server_cert_pem);
      auto pkey = detail::load_key(pki_.server_key_pem);
      // The set-up callback is the one SSLServer constructor every cpp-httplib has (0.53 dropped the
      // X509*/EVP_PKEY* one); 0.11 and 0.18 pass it an SSL_CTX&, 0.53 a void* that is the SSL_CTX*.
      svr_ = std::make_unique<httplib::SSLServer>([&](auto&& ctx) {
        SSL_CTX* c = detail::as_ssl_ctx(ctx);
        return SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) == 1 &&
               SSL_CTX_use_certificate(c, cert.get()) == 1 &&  // the SSL_CTX keeps its own references
               SSL_CTX_use_PrivateKey(c, pkey.get()) == 1;
      });
#else
      detail::fail("tls needs cpp-httplib built with CPPHTTPLIB_OPENSSL_SUPPORT");
#endif
    } else {
      svr_ = std::make_unique<httplib::Server>();
    }
    if (!svr_->is_valid())
      detail::fail("httplib server is not valid (TLS setup failed?)");
    // Hung requests and 8-thread tests must not starve each other: more workers than the default 8.
    svr_->new_task_queue = [] { return new httplib::ThreadPool(32); };
    // An idle keep-alive connection holds a worker until this timeout, which delays stop(); keep it short.
    svr_->set_keep_alive_timeout(1);
    routes();
    port_ = svr_->bind_to_any_port("127.0.0.1");
    if (port_ <= 0)
      detail::fail("cannot bind 127.0.0.1");
    thread_ = std::thread([this] {
      svr_->listen_after_bind();
      listen_returned_ = true;
    });
    // httplib's stop() is a no-op until listen has started, so wait for it: the ctor promises a
    // running server (the socket already listens, so early connections just queue).
    while (!svr_->is_running() && !listen_returned_)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (listen_returned_) {
      thread_.join();
      detail::fail("server did not start");
    }
  }
  ~Server() {
    stop();
  }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void stop() {
    std::lock_guard<std::mutex> stop_lock(stop_mu_);
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();  // releases hung and delayed handlers so the worker pool can be joined
    if (thread_.joinable()) {
      svr_->stop();  // once only: a second call asserts in some httplib versions
      thread_.join();
    }
  }

  int port() const {
    return port_;
  }
  std::string base_url() const {
    return (tls_ ? "https://localhost:" : "http://127.0.0.1:") + std::to_string(port_);
  }
  std::string issuer() const {
    return base_url();
  }
  const Pki& pki() const {
    return pki_;
  }

  void inject(Fault f) {
    std::lock_guard<std::mutex> lk(mu_);
    if (f.count > 0)
      faults_.push_back(std::move(f));
  }
  int count(const std::string& key) const {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = counters_.find(key);
    return it == counters_.end() ? 0 : it->second;
  }
  std::vector<RecordedRequest> requests() const {
    std::lock_guard<std::mutex> lk(mu_);
    return requests_;
  }
  void reset_stats() {
    std::lock_guard<std::mutex> lk(mu_);
    counters_.clear();
    requests_.clear();
  }
  void set_options(const Options& o) {
    std::lock_guard<std::mutex> lk(mu_);
    bool tls = opts_.tls;
    auto pki = opts_.pki;
    opts_ = normalized(o);
    opts_.tls = tls;  // the listener cannot change protocol at run time
    opts_.pki = pki;
  }
  Options options() const {
    std::lock_guard<std::mutex> lk(mu_);
    return opts_;
  }
  // Moves the mock's clock forward: codes and tokens expire without sleeping.
  void advance_time(std::int64_t seconds) {
    std::lock_guard<std::mutex> lk(mu_);
    clock_offset_ += seconds;
  }

  // ---- direct helpers (tests, and the demo playing the browser) ----
  std::string issue_code(const std::string& client_id, const std::string& redirect_uri, const std::string& scope,
                         const std::string& code_challenge = "", const std::string& nonce = "") {
    std::lock_guard<std::mutex> lk(mu_);
    return new_code_locked(client_id, redirect_uri, scope, code_challenge, nonce);
  }
  nlohmann::json issue_tokens(const std::string& client_id, const std::string& scope) {
    std::lock_guard<std::mutex> lk(mu_);
    return token_set_locked(client_id, scope, kUserId, "", detail::random_token(12), true);
  }
  bool is_valid_refresh_token(const std::string& t) const {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = refresh_.find(t);
    return it != refresh_.end() && !it->second.used && !it->second.revoked && it->second.expires_at > now_locked();
  }
  bool is_active_access_token(const std::string& t) const {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = access_.find(t);
    return it != access_.end() && !it->second.revoked && it->second.expires_at > now_locked();
  }
  // The newest still-valid refresh token issued to client_id, or "".
  std::string current_refresh_token_for(const std::string& client_id) const {
    std::lock_guard<std::mutex> lk(mu_);
    std::string best;
    std::uint64_t best_seq = 0;
    for (const auto& kv : refresh_) {
      const auto& r = kv.second;
      if (r.client_id == client_id && !r.used && !r.revoked && r.expires_at > now_locked() && r.seq >= best_seq) {
        best = kv.first;
        best_seq = r.seq;
      }
    }
    return best;
  }

  // ---- JWT helpers for id_token tests ----
  std::string key_id() const {
    return kid_;
  }
  std::string jwks_json() const {
    return nlohmann::json{{"keys", {jwk_}}}.dump();
  }
  std::string public_key_pem() const {
    return detail::key_pem(key_.get(), false);
  }
  // Signs with the server's key; adds "alg":"RS256" and "kid" when absent.
  std::string sign_rs256(const nlohmann::json& header, const nlohmann::json& claims) const {
    nlohmann::json h = header.is_object() ? header : nlohmann::json::object();
    if (!h.contains("kid"))
      h["kid"] = kid_;
    return sign_with_key_rs256(key_.get(), h, claims);
  }
  // Signs with any RSA key (e.g. a wrong one from generate_rsa_key()); adds "alg":"RS256" when absent.
  static std::string sign_with_key_rs256(EVP_PKEY* key, const nlohmann::json& header, const nlohmann::json& claims) {
    nlohmann::json h = header.is_object() ? header : nlohmann::json::object();
    if (!h.contains("alg"))
      h["alg"] = "RS256";
    std::string input = detail::base64url(h.dump()) + "." + detail::base64url(claims.dump());
    return input + "." + detail::base64url(detail::rs256(key, input));
  }
  // HMAC-SHA256 JWT (for "alg confusion" tests); adds "alg":"HS256" when absent.
  static std::string sign_hs256(const std::string& secret_bytes, const nlohmann::json& header,
                                const nlohmann::json& claims) {
    nlohmann::json h = header.is_object() ? header : nlohmann::json::object();
    if (!h.contains("alg"))
      h["alg"] = "HS256";
    std::string input = detail::base64url(h.dump()) + "." + detail::base64url(claims.dump());
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), secret_bytes.data(), static_cast<int>(secret_bytes.size()),
              reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len))
      detail::fail("HMAC failed");
    return input + "." + detail::base64url(std::string(reinterpret_cast<char*>(mac), len));
  }
  static std::shared_ptr<EVP_PKEY> generate_rsa_key(int bits = 2048) {
    return std::shared_ptr<EVP_PKEY>(detail::generate_key(EVP_PKEY_RSA, bits).release(), detail::PkeyFree());
  }

 private:
  struct CodeRec {
    std::string client_id, redirect_uri, scope, challenge, nonce;
    std::int64_t expires_at = 0;
    bool used = false;
  };
  struct AccessRec {
    std::string client_id, scope, user, grant;
    std::int64_t iat = 0, expires_at = 0;
    bool revoked = false;
  };
  struct RefreshRec {
    std::string client_id, scope /*as originally granted*/, user, grant;
    std::int64_t expires_at = 0;
    std::uint64_t seq = 0;
    bool used = false, revoked = false;
  };
  struct Pending {
    std::string client_id, redirect_uri, scope, state, challenge, nonce;
  };
  using Req = httplib::Request;
  using Res = httplib::Response;
  using Handler = void (Server::*)(const Req&, Res&);

  static Options normalized(Options o) {
    if (o.clients.empty()) {
      std::vector<std::string> cb{"http://localhost:8080/api/auth/callback"};
      o.clients = {{"mock-client", "mock-secret", cb}, {"mock-public", "", cb}};
    }
    return o;
  }
  std::int64_t now_locked() const {
    return detail::unix_now() + clock_offset_;
  }
  const RegisteredClient* find_client(const Options& o, const std::string& id) const {
    for (const auto& c : o.clients)
      if (c.id == id)
        return &c;
    return nullptr;
  }
  // Sleeps up to ms, returning early when the server stops.
  void interruptible_sleep(int ms) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, std::chrono::milliseconds(ms), [this] { return stopping_; });
  }

  // ---- routing ----
  httplib::Server::Handler wrap(const char* key, Handler h) {
    return [this, key, h](const Req& q, Res& r) {
      if (prologue(key, q, r))
        return;
      (this->*h)(q, r);
    };
  }
  // Patterns are string literals: old httplib takes const char*, new takes const std::string&.
  void routes() {
    svr_->Get("/authentication/v2/authorize", wrap("authorize", &Server::h_authorize));
    svr_->Get("/authentication/v2/authorize/decision", wrap("authorize.decision", &Server::h_decision));
    svr_->Post("/authentication/v2/authorize/decision", wrap("authorize.decision", &Server::h_decision));
    svr_->Post("/authentication/v2/token", wrap("token", &Server::h_token));
    svr_->Post("/authentication/v2/revoke", wrap("revoke", &Server::h_revoke));
    svr_->Post("/authentication/v2/introspect", wrap("introspect", &Server::h_introspect));
    svr_->Get("/authentication/v2/keys", wrap("keys", &Server::h_keys));
    svr_->Get("/authentication/v2/logout", wrap("logout", &Server::h_logout));
    svr_->Get("/userinfo", wrap("userinfo", &Server::h_userinfo));
    svr_->Get(R"(/\.well-known/openid-configuration)", wrap("discovery", &Server::h_discovery));
    // Everything else: still recorded and fault-able, then 404 (or 405 on a known path).
    svr_->Get(".*", wrap("other", &Server::h_other));
    svr_->Post(".*", wrap("other", &Server::h_other));
    svr_->Put(".*", wrap("other", &Server::h_other));
    svr_->Delete(".*", wrap("other", &Server::h_other));
    svr_->Patch(".*", wrap("other", &Server::h_other));
    svr_->Options(".*", wrap("other", &Server::h_other));
  }

  static bool is_form(const Req& q) {
    std::string ct = detail::lower(q.get_header_value("Content-Type"));
    ct = ct.substr(0, ct.find(';'));
    while (!ct.empty() && ct.back() == ' ')
      ct.pop_back();
    return ct == "application/x-www-form-urlencoded";
  }
  static std::string raw_query(const Req& q) {
    auto p = q.target.find('?');
    return p == std::string::npos ? std::string() : q.target.substr(p + 1);
  }

  // Records and counts every request, then applies a queued fault. Returns true when answered.
  bool prologue(const char* key, const Req& q, Res& r) {
    std::optional<Fault> fault;
    {
      std::lock_guard<std::mutex> lk(mu_);
      RecordedRequest rec;
      rec.method = q.method;
      rec.path = q.path;
      rec.query = raw_query(q);
      rec.body = q.body;
      for (const auto& h : q.headers)
        rec.headers.emplace(h.first, h.second);
      rec.form = detail::parse_form(is_form(q) ? q.body : rec.query);
      counters_[key]++;
      if (std::string(key) == "token" && is_form(q) && detail::has(rec.form, "grant_type"))
        counters_["token." + detail::get(rec.form, "grant_type")]++;
      requests_.push_back(std::move(rec));
      for (auto it = faults_.begin(); it != faults_.end(); ++it) {
        if (!it->path.empty() && it->path != q.path)
          continue;
        fault = *it;
        if (--it->count <= 0)
          faults_.erase(it);
        break;
      }
    }
    if (!fault)
      return false;
    if (fault->delay_ms > 0)
      interruptible_sleep(fault->delay_ms);
    if (fault->hang) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [this] { return stopping_; });
      r.status = 503;
      r.set_header("Connection", "close");
      return true;
    }
    if (fault->status == 0)
      return false;
    r.status = fault->status;
    for (const auto& h : fault->headers)
      r.set_header(h.first.c_str(), h.second);
    if (!fault->body.empty() || !fault->content_type.empty())
      r.set_content(fault->body, fault->content_type.c_str());
    return true;
  }

  // ---- answers ----
  static void send_json(Res& r, int status, const nlohmann::json& j) {
    r.status = status;
    r.set_header("Cache-Control", "no-store");
    r.set_header("Pragma", "no-cache");
    r.set_content(j.dump(), "application/json");
  }
  static void aps_error(Res& r, int status, const std::string& code, const std::string& msg) {
    send_json(r, status, {{"developerMessage", msg}, {"errorCode", code}, {"more info", kErrorInfo}});
  }
  static void oauth_error(Res& r, int status, const std::string& error, const std::string& desc) {
    nlohmann::json j{{"error", error}};
    if (!desc.empty())
      j["error_description"] = desc;
    send_json(r, status, j);
  }
  static std::string page(const std::string& title, const std::string& body_html, const std::string& body_attrs = "",
                          const std::string& script = "") {
    return "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
           "<title>" +
           detail::html_escape(title) +
           "</title><style>"
           "body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;"
           "background:#eef1f5;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2933}"
           ".card{background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.12);padding:32px 36px;"
           "max-width:420px;width:calc(100% - 48px)}"
           ".brand{font-weight:700;letter-spacing:.04em;color:#0696d7;margin-bottom:12px}"
           "h1{font-size:1.35rem;margin:0 0 12px}p{line-height:1.45}"
           "ul{padding-left:20px}li{margin:4px 0}code{background:#f1f3f5;padding:1px 5px;border-radius:4px}"
           ".actions{display:flex;gap:12px;justify-content:flex-end;margin-top:24px}"
           "button{font:inherit;padding:9px 22px;border-radius:6px;border:1px solid #0696d7;cursor:pointer}"
           ".allow{background:#0696d7;color:#fff}.deny{background:#fff;color:#0696d7}"
           ".note{font-size:.85rem;color:#66788a}"
           "</style></head><body" +
           body_attrs + ">\n<main class=\"card\">\n<div class=\"brand\">Mock APS</div>\n" + body_html + "\n</main>\n" +
           script + "</body></html>\n";
  }
  static void html(Res& r, int status, const std::string& title, const std::string& body_html) {
    r.status = status;
    r.set_header("Cache-Control", "no-store");
    r.set_content(page(title, body_html), "text/html; charset=utf-8");
  }
  static void redirect(Res& r, const std::string& url) {
    r.status = 302;
    r.set_header("Location", url);
    r.set_header("Cache-Control", "no-store");
  }

  // Builds the redirect back to the app: redirect_uri?<params>&state=...(&iss=...).
  std::string callback_url(const Pending& p, std::vector<std::pair<std::string, std::string>> params,
                           bool with_iss) const {
    std::string url = p.redirect_uri + (p.redirect_uri.find('?') == std::string::npos ? "?" : "&");
    if (!p.state.empty())
      params.emplace_back("state", p.state);
    if (with_iss)
      params.emplace_back("iss", issuer());
    for (size_t i = 0; i < params.size(); ++i)
      url += (i ? "&" : "") + params[i].first + "=" + detail::pct_encode(params[i].second);
    return url;
  }
  std::string new_code_locked(const std::string& client_id, const std::string& redirect_uri, const std::string& scope,
                              const std::string& challenge, const std::string& nonce) {
    std::string code = detail::random_token(24);
    codes_[code] =
        CodeRec{client_id, redirect_uri, scope, challenge, nonce, now_locked() + opts_.code_lifetime_s, false};
    return code;
  }
  // Finishes an authorization: a code on approval, access_denied otherwise.
  void finish_authorize(const Pending& p, bool approve, Res& r) {
    std::lock_guard<std::mutex> lk(mu_);
    if (approve) {
      std::string code = new_code_locked(p.client_id, p.redirect_uri, p.scope, p.challenge, p.nonce);
      redirect(r, callback_url(p, {{"code", code}}, opts_.iss_in_callback));
    } else {
      redirect(r, callback_url(p, {{"error", "access_denied"}, {"error_description", opts_.deny_description}},
                               opts_.iss_in_callback));
    }
  }

  void h_authorize(const Req& q, Res& r) {
    Options o = options();
    auto f = detail::parse_form(raw_query(q));
    auto dup = [&](const char* k) { return f.count(k) > 1; };
    std::string client_id = detail::get(f, "client_id"), redirect_uri = detail::get(f, "redirect_uri");
    // Without a trustworthy client_id + redirect_uri the server must not redirect anywhere (RFC 6749 §4.1.2.1).
    const RegisteredClient* c = dup("client_id") ? nullptr : find_client(o, client_id);
    if (!c) {
      html(r, 400, "Mock APS – Error",
           "<h1>Invalid client_id</h1><p>The client_id <code>" + detail::html_escape(client_id) +
               "</code> is not a registered application.</p>");
      return;
    }
    if (dup("redirect_uri") ||
        std::find(c->redirect_uris.begin(), c->redirect_uris.end(), redirect_uri) == c->redirect_uris.end()) {
      html(r, 400, "Mock APS – Error",
           "<h1>Invalid redirect_uri</h1><p>The redirect_uri <code>" + detail::html_escape(redirect_uri) +
               "</code> does not match any callback URL registered for <code>" + detail::html_escape(client_id) +
               "</code>. It must match exactly (scheme, host, port and path).</p>");
      return;
    }
    Pending p{client_id,
              redirect_uri,
              detail::get(f, "scope"),
              detail::get(f, "state"),
              detail::get(f, "code_challenge"),
              detail::get(f, "nonce")};
    auto err = [&](const std::string& e, const std::string& d) {
      redirect(r, callback_url(p, {{"error", e}, {"error_description", d}}, o.iss_in_callback));
    };
    for (const char* k : {"response_type", "scope", "state", "nonce", "code_challenge", "code_challenge_method"})
      if (dup(k))
        return err("invalid_request", std::string("parameter repeated: ") + k);
    std::string rt = detail::get(f, "response_type");
    if (rt.empty())
      return err("invalid_request", "response_type is required");
    if (rt != "code")
      return err("unsupported_response_type", "only response_type=code is supported");
    std::string mode = detail::get(f, "response_mode");
    if (!mode.empty() && mode != "query")
      return err("invalid_request", "only response_mode=query is supported");
    auto scopes = detail::split_scopes(p.scope);
    if (scopes.empty())
      return err("invalid_request", "scope is required");
    if (scopes.size() > 50 || p.scope.size() > 2000)
      return err("invalid_scope", "too many scopes");
    std::string method = detail::get(f, "code_challenge_method");
    if (!p.challenge.empty()) {
      if (method != "S256")
        return err("invalid_request", "code_challenge_method must be S256");
      if (p.challenge.size() < 43 || p.challenge.size() > 128 || !detail::is_unreserved_string(p.challenge))
        return err("invalid_request", "malformed code_challenge");
    } else if (!method.empty()) {
      return err("invalid_request", "code_challenge_method without code_challenge");
    } else if (c->secret.empty()) {
      return err("invalid_request", "code_challenge is required for public clients (PKCE)");
    }
    if (o.strict_state && !std::all_of(p.state.begin(), p.state.end(), [](char ch) {
          return std::isalnum(static_cast<unsigned char>(ch)) || ch == ',' || ch == '.' || ch == '_' || ch == '-';
        }))
      return err("invalid_request", "state may contain only letters, digits, comma, period, underscore, hyphen");

    if (o.consent == Consent::auto_approve)
      return finish_authorize(p, !o.deny, r);
    std::string id = detail::random_token(16);
    {
      std::lock_guard<std::mutex> lk(mu_);
      pending_[id] = p;
    }
    consent_page(r, o, p, id);
  }

  // The consent page. `data-mock-user-choice` tells a scripted browser which button the user presses.
  void consent_page(Res& r, const Options& o, const Pending& p, const std::string& id) const {
    const std::string action = "/authentication/v2/authorize/decision";
    auto form = [&](const char* decision, const char* label) {
      return std::string("<form id=\"") + decision + "\" method=\"post\" action=\"" + action + "\">" +
             "<input type=\"hidden\" name=\"request_id\" value=\"" + detail::html_escape(id) + "\">" +
             "<input type=\"hidden\" name=\"decision\" value=\"" + decision + "\">" +
             "<button type=\"submit\" class=\"" + decision + "\">" + label + "</button></form>";
    };
    std::string items;
    for (const auto& s : detail::split_scopes(p.scope))
      items += "<li><code>" + detail::html_escape(s) + "</code></li>";
    std::string body = "<h1>Allow access?</h1>\n<p><strong>" + detail::html_escape(p.client_id) +
                       "</strong> wants to access your Autodesk account (Mock User) with these permissions:</p>\n"
                       "<ul class=\"scopes\">" +
                       items + "</ul>\n" +
                       "<p class=\"note\">This is a local test server; nothing leaves this machine.</p>\n"
                       "<div class=\"actions\">" +
                       form("deny", "Deny") + form("allow", "Allow") + "</div>";
    const char* choice = o.deny ? "deny" : "allow";
    std::string script;
    if (o.consent == Consent::auto_submit_page)
      script = std::string("<script>document.getElementById('") + choice + "').submit();</script>\n";
    r.status = 200;
    r.set_header("Cache-Control", "no-store");
    r.set_header("X-Frame-Options", "DENY");
    r.set_header("Content-Security-Policy",
                 "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'");
    r.set_content(page("Mock APS – Authorize", body, std::string(" data-mock-user-choice=\"") + choice + "\"", script),
                  "text/html; charset=utf-8");
  }

  void h_decision(const Req& q, Res& r) {
    auto f = detail::parse_form(q.method == "POST" ? q.body : raw_query(q));
    std::string decision = detail::get(f, "decision");
    std::optional<Pending> p;
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = pending_.find(detail::get(f, "request_id"));
      if (it != pending_.end() && (decision == "allow" || decision == "deny")) {
        p = it->second;
        pending_.erase(it);  // one answer per consent page
      }
    }
    if (!p) {
      html(r, 400, "Mock APS – Error",
           "<h1>Request expired</h1><p>This authorization request is unknown or was already answered.</p>");
      return;
    }
    finish_authorize(*p, decision == "allow", r);
  }

  // Client authentication for token/revoke/introspect. Answers the error itself and returns nullopt.
  std::optional<RegisteredClient> authenticate(const Req& q, const detail::Form& f, const Options& o, Res& r) const {
    std::string auth = q.get_header_value("Authorization");
    bool body_id = detail::has(f, "client_id"), body_secret = detail::has(f, "client_secret");
    std::string id, secret;
    bool has_secret = false;
    if (!auth.empty()) {
      if (body_id || body_secret) {
        aps_error(r, 400, "AUTH-008",
                  "Client credentials must be sent either in the Authorization header or in the body, not both.");
        return std::nullopt;
      }
      std::optional<std::string> decoded;
      if (auth.size() > 6 && detail::lower(auth.substr(0, 6)) == "basic ")
        decoded = detail::base64_decode(auth.substr(6));
      size_t colon = decoded ? decoded->find(':') : std::string::npos;
      if (colon == std::string::npos) {
        aps_error(r, 401, "AUTH-012",
                  "The Authorization header is malformed; expected Basic base64(client_id:client_secret).");
        return std::nullopt;
      }
      // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
      id = detail::form_decode(decoded->substr(0, colon));
      secret = detail::form_decode(decoded->substr(colon + 1));
      has_secret = true;
    } else if (body_id) {
      if (f.count("client_id") > 1 || f.count("client_secret") > 1) {
        oauth_error(r, 400, "invalid_request", "client credentials repeated");
        return std::nullopt;
      }
      id = detail::get(f, "client_id");
      secret = detail::get(f, "client_secret");
      has_secret = body_secret;
    } else {
      r.set_header("WWW-Authenticate", "Basic realm=\"Mock APS\"");
      oauth_error(r, 401, "invalid_client", "Client authentication is missing.");
      return std::nullopt;
    }
    const RegisteredClient* c = find_client(o, id);
    if (!c) {
      oauth_error(r, 401, "invalid_client", "Unknown client_id.");
      return std::nullopt;
    }
    if (has_secret) {
      if (c->secret.empty() || secret.size() != c->secret.size() ||
          CRYPTO_memcmp(secret.data(), c->secret.data(), secret.size()) != 0) {
        aps_error(r, 401, "AUTH-003", "The client_id specified does not have access to the api product");
        return std::nullopt;
      }
    } else if (!c->secret.empty()) {
      oauth_error(r, 401, "invalid_client", "This client is confidential: authenticate with its secret.");
      return std::nullopt;
    }
    return *c;
  }

  // Mints access (+ refresh, + id_token with openid) tokens for one grant. Caller holds mu_.
  nlohmann::json token_set_locked(const std::string& client_id, const std::string& scope, const std::string& user,
                                  const std::string& nonce, const std::string& grant, bool with_refresh,
                                  const std::string& refresh_scope = "") {
    std::int64_t now = now_locked();
    std::string at = detail::random_token(48);
    access_[at] = AccessRec{client_id, scope, user, grant, now, now + opts_.expires_in, false};
    nlohmann::json j{{"access_token", at}, {"token_type", "Bearer"}, {"expires_in", opts_.expires_in}};
    if (with_refresh) {
      std::string rt = detail::random_token(32);
      refresh_[rt] = RefreshRec{client_id,
                                refresh_scope.empty() ? scope : refresh_scope,
                                user,
                                grant,
                                now + opts_.refresh_lifetime_s,
                                ++seq_,
                                false,
                                false};
      j["refresh_token"] = rt;
    }
    if (!user.empty() && detail::has_scope(scope, "openid")) {
      nlohmann::json claims{{"iss", issuer()},
                            {"sub", user},
                            {"aud", client_id},
                            {"iat", now},
                            {"exp", now + opts_.expires_in},
                            {"auth_time", now},
                            {"email", "mock.user@example.com"}};
      if (!nonce.empty())
        claims["nonce"] = nonce;
      j["id_token"] = sign_rs256({{"alg", "RS256"}, {"typ", "JWT"}, {"kid", kid_}}, claims);
    }
    return j;
  }

  void h_token(const Req& q, Res& r) {
    Options o = options();
    if (o.token_delay_ms > 0)
      interruptible_sleep(o.token_delay_ms);
    if (!is_form(q)) {
      aps_error(r, 415, "AUTH-007", "Content-Type must be application/x-www-form-urlencoded");
      return;
    }
    auto f = detail::parse_form(q.body);
    for (const char* k : {"grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "scope"})
      if (f.count(k) > 1)
        return oauth_error(r, 400, "invalid_request", std::string("parameter repeated: ") + k);
    auto client = authenticate(q, f, o, r);
    if (!client)
      return;
    std::string grant = detail::get(f, "grant_type");
    if (grant == "authorization_code")
      return code_grant(f, *client, r);
    if (grant == "refresh_token")
      return refresh_grant(f, *client, r);
    if (grant == "client_credentials")
      return client_grant(f, *client, r);
    oauth_error(r, 400, "unsupported_grant_type",
                grant.empty() ? "grant_type is required" : "grant_type " + grant + " is not supported");
  }

  void code_grant(const detail::Form& f, const RegisteredClient& c, Res& r) {
    std::string code = detail::get(f, "code"), verifier = detail::get(f, "code_verifier");
    if (code.empty())
      return oauth_error(r, 400, "invalid_request", "code is required");
    std::lock_guard<std::mutex> lk(mu_);
    auto it = codes_.find(code);
    if (it == codes_.end())
      return oauth_error(r, 400, "invalid_grant", "Invalid authorization code.");
    CodeRec& rec = it->second;
    if (rec.client_id != c.id)
      return oauth_error(r, 400, "invalid_grant", "The authorization code was issued to another client.");
    if (rec.used)
      return oauth_error(r, 400, "invalid_grant", "The authorization code was already used.");
    rec.used = true;  // single use: any attempt by its client burns it
    if (rec.expires_at <= now_locked())
      return oauth_error(r, 400, "invalid_grant", "The authorization code expired.");
    if (detail::get(f, "redirect_uri") != rec.redirect_uri)
      return oauth_error(r, 400, "invalid_grant", "redirect_uri does not match the one used at authorize.");
    if (!rec.challenge.empty()) {
      if (verifier.size() < 43 || verifier.size() > 128 || !detail::is_unreserved_string(verifier))
        return oauth_error(r, 400, "invalid_grant", "code_verifier missing or malformed (43-128 unreserved chars).");
      if (detail::base64url(detail::sha256(verifier)) != rec.challenge)
        return oauth_error(r, 400, "invalid_grant", "code_verifier does not match code_challenge.");
    } else if (!verifier.empty()) {
      return oauth_error(r, 400, "invalid_grant", "code_verifier sent but no code_challenge was given at authorize.");
    }
    send_json(r, 200, token_set_locked(c.id, rec.scope, kUserId, rec.nonce, detail::random_token(12), true));
  }

  void refresh_grant(const detail::Form& f, const RegisteredClient& c, Res& r) {
    std::string rt = detail::get(f, "refresh_token");
    if (rt.empty())
      return oauth_error(r, 400, "invalid_request", "refresh_token is required");
    std::lock_guard<std::mutex> lk(mu_);
    auto it = refresh_.find(rt);
    if (it == refresh_.end() || it->second.revoked || it->second.client_id != c.id)
      return oauth_error(r, 400, "invalid_grant", "Invalid refresh token.");
    if (it->second.used)
      return oauth_error(r, 400, "invalid_grant", "The refresh token was already used (refresh tokens rotate).");
    if (it->second.expires_at <= now_locked())
      return oauth_error(r, 400, "invalid_grant", "The refresh token expired.");
    RefreshRec old = it->second;
    std::string scope = old.scope;
    if (detail::has(f, "scope")) {
      auto granted = detail::split_scopes(old.scope);
      auto asked = detail::split_scopes(detail::get(f, "scope"));
      if (asked.empty())
        return oauth_error(r, 400, "invalid_scope", "scope is empty");
      for (const auto& s : asked)
        if (std::find(granted.begin(), granted.end(), s) == granted.end())
          return oauth_error(r, 400, "invalid_scope", "scope " + s + " was not originally granted");
      scope = detail::get(f, "scope");
    }
    it->second.used = true;  // rotation: the old refresh token dies now
    send_json(r, 200, token_set_locked(c.id, scope, old.user, "", old.grant, true, old.scope));
  }

  void client_grant(const detail::Form& f, const RegisteredClient& c, Res& r) {
    if (c.secret.empty())
      return oauth_error(r, 400, "unauthorized_client", "Public clients cannot use client_credentials.");
    std::string scope = detail::get(f, "scope");
    auto scopes = detail::split_scopes(scope);
    if (scopes.empty())
      return aps_error(r, 400, "AUTH-008", "The required parameter(s) scope not present in the request");
    if (scopes.size() > 50 || scope.size() > 2000)
      return aps_error(r, 400, "AUTH-004", "The requested scope is invalid");
    std::lock_guard<std::mutex> lk(mu_);
    send_json(r, 200, token_set_locked(c.id, scope, "", "", detail::random_token(12), false));
  }

  void h_revoke(const Req& q, Res& r) {
    Options o = options();
    if (!is_form(q))
      return aps_error(r, 415, "AUTH-007", "Content-Type must be application/x-www-form-urlencoded");
    auto f = detail::parse_form(q.body);
    std::string token = detail::get(f, "token"), hint = detail::get(f, "token_type_hint");
    if (token.empty() || hint.empty())
      return aps_error(r, 400, "AUTH-008",
                       "The required parameter(s) token, token_type_hint not present in the request");
    if (hint != "access_token" && hint != "refresh_token")
      return oauth_error(r, 400, "unsupported_token_type", "token_type_hint must be access_token or refresh_token");
    auto client = authenticate(q, f, o, r);
    if (!client)
      return;
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto a = access_.find(token);
      if (a != access_.end() && a->second.client_id == client->id)
        a->second.revoked = true;
      auto rt = refresh_.find(token);
      if (rt != refresh_.end() && rt->second.client_id == client->id) {
        rt->second.revoked = true;
        for (auto& kv : access_)  // RFC 7009 §2.1: revoke the grant's access tokens too
          if (kv.second.grant == rt->second.grant)
            kv.second.revoked = true;
      }
    }
    r.status = 200;
  }

  void h_introspect(const Req& q, Res& r) {
    Options o = options();
    if (!is_form(q))
      return aps_error(r, 415, "AUTH-007", "Content-Type must be application/x-www-form-urlencoded");
    auto f = detail::parse_form(q.body);
    std::string token = detail::get(f, "token");
    if (token.empty())
      return aps_error(r, 400, "AUTH-008", "The required parameter(s) token not present in the request");
    if (!authenticate(q, f, o, r))
      return;
    nlohmann::json j{{"active", false}};
    std::lock_guard<std::mutex> lk(mu_);
    auto a = access_.find(token);
    if (a != access_.end() && !a->second.revoked && a->second.expires_at > now_locked()) {
      j = {{"active", true},
           {"scope", a->second.scope},
           {"client_id", a->second.client_id},
           {"exp", a->second.expires_at},
           {"iat", a->second.iat},
           {"token_type", "Bearer"}};
      if (!a->second.user.empty())
        j["userid"] = a->second.user;
    }
    auto rt = refresh_.find(token);
    if (rt != refresh_.end() && !rt->second.revoked && !rt->second.used && rt->second.expires_at > now_locked()) {
      j = {{"active", true},
           {"scope", rt->second.scope},
           {"client_id", rt->second.client_id},
           {"exp", rt->second.expires_at},
           {"userid", rt->second.user},
           {"token_type", "refresh_token"}};
    }
    send_json(r, 200, j);
  }

  void h_userinfo(const Req& q, Res& r) {
    std::string auth = q.get_header_value("Authorization");
    std::string token = auth.size() > 7 && detail::lower(auth.substr(0, 7)) == "bearer " ? auth.substr(7) : "";
    bool ok = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto a = access_.find(token);
      ok = a != access_.end() && !a->second.revoked && a->second.expires_at > now_locked() && !a->second.user.empty();
    }
    if (!ok) {
      r.set_header("WWW-Authenticate", "Bearer error=\"invalid_token\"");
      return send_json(r, 401,
                       {{"developerMessage", "The access token is missing, invalid, expired or 2-legged."},
                        {"errorCode", "AUTH-006"},
                        {"more info", kErrorInfo}});
    }
    send_json(r, 200,
              {{"sub", kUserId},
               {"name", "Mock User"},
               {"given_name", "Mock"},
               {"family_name", "User"},
               {"preferred_username", "mockuser"},
               {"email", "mock.user@example.com"},
               {"email_verified", true},
               {"locale", "en-US"}});
  }

  void h_keys(const Req&, Res& r) {
    r.status = 200;
    r.set_content(jwks_json(), "application/json");
  }

  void h_discovery(const Req&, Res& r) {
    Options o = options();
    std::string v2 = base_url() + "/authentication/v2";
    nlohmann::json j{{"issuer", issuer()},
                     {"authorization_endpoint", v2 + "/authorize"},
                     {"token_endpoint", v2 + "/token"},
                     {o.revoke_endpoint_name_legacy ? "revoke_endpoint" : "revocation_endpoint", v2 + "/revoke"},
                     {"introspection_endpoint", v2 + "/introspect"},
                     {"userinfo_endpoint", base_url() + "/userinfo"},
                     {"jwks_uri", v2 + "/keys"},
                     {"end_session_endpoint", v2 + "/logout"},
                     {"scopes_supported",
                      {"user:read", "user:write", "user-profile:read", "viewables:read", "data:read", "data:write",
                       "data:create", "data:search", "bucket:create", "bucket:read", "bucket:update", "bucket:delete",
                       "code:all", "account:read", "account:write", "openid", "application:client:read",
                       "application:client:write", "application:client:rotate_secret"}},
                     {"response_types_supported", {"code"}},
                     {"response_modes_supported", {"query"}},
                     {"grant_types_supported", {"authorization_code", "refresh_token", "client_credentials"}},
                     {"subject_types_supported", {"public"}},
                     {"token_endpoint_auth_methods_supported", {"client_secret_basic", "client_secret_post", "none"}},
                     {"code_challenge_methods_supported", {"S256"}},
                     {"id_token_signing_alg_values_supported", {"RS256"}},
                     {"claims_supported", {"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "email"}}};
    if (o.iss_in_callback)
      j["authorization_response_iss_parameter_supported"] = true;
    r.status = 200;
    r.set_content(j.dump(), "application/json");
  }

  void h_logout(const Req& q, Res& r) {
    auto f = detail::parse_form(raw_query(q));
    std::string to = detail::get(f, "post_logout_redirect_uri");
    if (!to.empty())
      return redirect(r, to);
    html(r, 200, "Mock APS – Signed out", "<h1>You are signed out</h1><p>You can close this window.</p>");
  }

  void h_other(const Req& q, Res& r) {
    static const std::set<std::string> known = {"/authentication/v2/authorize",
                                                "/authentication/v2/token",
                                                "/authentication/v2/revoke",
                                                "/authentication/v2/introspect",
                                                "/authentication/v2/keys",
                                                "/authentication/v2/logout",
                                                "/userinfo",
                                                "/.well-known/openid-configuration",
                                                "/authentication/v2/authorize/decision"};
    if (known.count(q.path))
      return send_json(r, 405, {{"developerMessage", "Method not allowed: " + q.method}});
    send_json(r, 404, {{"developerMessage", "The requested resource does not exist: " + q.path}});
  }

  mutable std::mutex mu_;  // guards everything below it, and opts_
  Options opts_;
  const bool tls_;  // fixed at construction; read without the lock
  std::shared_ptr<EVP_PKEY> key_;
  std::string kid_;
  nlohmann::json jwk_;
  Pki pki_;
  std::unique_ptr<httplib::Server> svr_;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
  std::mutex stop_mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::deque<Fault> faults_;
  std::map<std::string, int> counters_;
  std::vector<RecordedRequest> requests_;
  std::map<std::string, CodeRec> codes_;
  std::map<std::string, AccessRec> access_;
  std::map<std::string, RefreshRec> refresh_;
  std::map<std::string, Pending> pending_;
  std::int64_t clock_offset_ = 0;
  std::uint64_t seq_ = 0;
};

// ----------------------------------------------------------------------------------------------
// RawServer: a tiny TCP server on 127.0.0.1 for transport faults httplib cannot script.
// ----------------------------------------------------------------------------------------------
enum class RawMode {
  close_immediately,   // accept, then close without reading
  reset,               // read the request, then close with SO_LINGER 0 (RST)
  never_answer,        // read the request, then stay silent until stop()
  partial_then_close,  // send half of a 200 JSON answer (Content-Length promises more), then close
  send_bytes           // send `payload` verbatim, then close
};

class RawServer {
 public:
  explicit RawServer(RawMode mode, std::string payload = "") : mode_(mode), payload_(std::move(payload)) {
    if (!sys::socket_pair(wake_))
      detail::fail("cannot make the RawServer's wake-up socket pair");
    listen_fd_ = sys::listen_loopback(port_);
    if (listen_fd_ == sys::bad_socket) {
      close_fds();
      detail::fail("RawServer cannot listen on 127.0.0.1");
    }
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~RawServer() { stop(); }
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;

  int port() const { return port_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int connections() const { return connections_.load(); }
  void stop() {
    std::lock_guard<std::mutex> stop_lock(stop_mu_);
    if (stopped_)
      return;
    stopped_ = true;
    sys::send_some(wake_[1], "x", 1);  // never drained: every poll() sees it from now on
    if (acceptor_.joinable())
      acceptor_.join();
    std::vector<std::thread> workers;
    {
      std::lock_guard<std::mutex> lk(mu_);
      workers.swap(workers_);
    }
    for (auto& t : workers)
      t.join();
    close_fds();
  }

 private:
  using socket_t = sys::socket_t;

  void close_fds() {
    for (socket_t* fd : {&listen_fd_, &wake_[0], &wake_[1]}) {
      if (*fd != sys::bad_socket)
        sys::close_socket(*fd);
      *fd = sys::bad_socket;
    }
  }
  // Waits until fd is readable; false on timeout or stop.
  bool wait_readable(socket_t fd, int timeout_ms) {
    sys::pollfd_t p[2] = {{fd, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    int n = sys::poll_once(p, 2, timeout_ms);
    return n > 0 && !(p[1].revents & POLLIN) && (p[0].revents & (POLLIN | POLLHUP | POLLERR));
  }
  void accept_loop() {
    for (;;) {
      if (!wait_readable(listen_fd_, -1))
        return;  // only stop() ends an infinite wait
      socket_t fd = sys::accept_socket(listen_fd_);
      if (fd == sys::bad_socket)
        continue;
      connections_++;
      std::lock_guard<std::mutex> lk(mu_);
      workers_.emplace_back([this, fd] { serve(fd); });
    }
  }
  // Reads one HTTP request (headers + Content-Length body), for at most 2 s.
  void read_request(socket_t fd) {
    std::string buf;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !wait_readable(fd, static_cast<int>(left.count())))
        return;
      char chunk[4096];
      long n = sys::recv_some(fd, chunk, sizeof chunk);
      if (n <= 0)
        return;
      buf.append(chunk, static_cast<size_t>(n));
      size_t end = buf.find("\r\n\r\n");
      if (end == std::string::npos)
        continue;
      std::string head = detail::lower(buf.substr(0, end));
      size_t cl = head.find("\r\ncontent-length:");
      size_t body_len = cl == std::string::npos ? 0 : std::strtoul(head.c_str() + cl + 17, nullptr, 10);
      if (buf.size() >= end + 4 + body_len)
        return;
    }
  }
  void send_all(socket_t fd, const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      long n = sys::send_some(fd, s.data() + off, s.size() - off);
      if (n <= 0)
        return;
      off += static_cast<size_t>(n);
    }
  }
  // Reads and drops input until the peer closes (or stop(), or no input for timeout_ms; -1: no limit).
  void drain(socket_t fd, int timeout_ms) {
    char sink[1024];
    while (wait_readable(fd, timeout_ms) && sys::recv_some(fd, sink, sizeof sink) > 0) {
    }
  }
  // Half-close, then wait briefly for the peer's FIN so unread input does not turn our data into an RST.
  void graceful_close(socket_t fd) {
    sys::shutdown_send(fd);
    drain(fd, 1000);
    sys::close_socket(fd);
  }
  void serve(socket_t fd) {
    switch (mode_) {
      case RawMode::close_immediately:
        break;
      case RawMode::reset:
        read_request(fd);
        sys::reset_socket(fd);
        return;
      case RawMode::never_answer:
        read_request(fd);
        drain(fd, -1);
        break;
      case RawMode::partial_then_close: {
        read_request(fd);
        std::string json =
            R"({"access_token":"partial-token-that-never-ends","token_type":"Bearer","expires_in":3599})";
        send_all(fd,
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(json.size()) +
                     "\r\nConnection: close\r\n\r\n" + json.substr(0, json.size() / 2));
        graceful_close(fd);
        return;
      }
      case RawMode::send_bytes:
        read_request(fd);
        send_all(fd, payload_);
        graceful_close(fd);
        return;
    }
    sys::close_socket(fd);
  }

  RawMode mode_;
  std::string payload_;
  socket_t listen_fd_ = sys::bad_socket;
  socket_t wake_[2] = {sys::bad_socket, sys::bad_socket};
  int port_ = 0;
  std::atomic<int> connections_{0};
  std::thread acceptor_;
  std::mutex mu_, stop_mu_;
  std::vector<std::thread> workers_;
  bool stopped_ = false;
};

// ----------------------------------------------------------------------------------------------
// follow_like_browser: drive the authorize flow without a browser.
// ----------------------------------------------------------------------------------------------
struct BrowseResult {
  int status = 0;  // 0 = transport error (body says which)
  std::string body;
  std::string final_url;  // the last URL fetched (the app's callback when the flow completed)
};

namespace detail {

struct Url {
  std::string scheme, host;  // host keeps IPv6 brackets
  int port = 0;
  std::string target;  // path?query, verbatim
  std::string origin() const { return scheme + "://" + host + ":" + std::to_string(port); }
};

inline std::optional<Url> parse_url(const std::string& s) {
  Url u;
  size_t p = s.find("://");
  if (p == std::string::npos)
    return std::nullopt;
  u.scheme = lower(s.substr(0, p));
  if (u.scheme != "http" && u.scheme != "https")
    return std::nullopt;
  size_t start = p + 3, end = s.find_first_of("/?#", start);
  std::string authority = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
  u.target = end == std::string::npos ? "/" : s.substr(end);
  if (u.target[0] != '/')
    u.target = "/" + u.target;
  u.target = u.target.substr(0, u.target.find('#'));  // fragments never go on the wire
  size_t colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']', colon) == std::string::npos) {
    u.host = authority.substr(0, colon);
    u.port = std::atoi(authority.c_str() + colon + 1);
  } else {
    u.host = authority;
    u.port = u.scheme == "https" ? 443 : 80;
  }
  if (u.host.empty() || u.port <= 0 || u.port > 65535)
    return std::nullopt;
  return u;
}

inline std::string resolve_url(const Url& base, const std::string& loc) {
  if (loc.find("://") != std::string::npos)
    return loc;
  if (loc.rfind("//", 0) == 0)
    return base.scheme + ":" + loc;
  if (!loc.empty() && loc[0] == '/')
    return base.origin() + loc;
  std::string path = base.target.substr(0, base.target.find('?'));
  return base.origin() + path.substr(0, path.rfind('/') + 1) + loc;
}

inline std::string html_unescape(std::string s) {
  const std::pair<const char*, const char*> ents[] = {
      {"&quot;", "\""}, {"&#39;", "'"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&amp;", "&"}};
  for (const auto& e : ents)
    for (size_t p = 0; (p = s.find(e.first, p)) != std::string::npos; p += std::strlen(e.second))
      s.replace(p, std::strlen(e.first), e.second);
  return s;
}

// Attributes of one tag (text between '<name' and '>'); names lower-cased, values unescaped.
inline std::map<std::string, std::string> tag_attrs(const std::string& tag) {
  std::map<std::string, std::string> a;
  size_t i = tag.find_first_of(" \t\r\n");
  while (i != std::string::npos && i < tag.size()) {
    while (i < tag.size() && std::isspace(static_cast<unsigned char>(tag[i])))
      ++i;
    size_t n = i;
    while (n < tag.size() && tag[n] != '=' && !std::isspace(static_cast<unsigned char>(tag[n])) && tag[n] != '/')
      ++n;
    if (n == i)
      break;
    std::string name = lower(tag.substr(i, n - i)), value;
    i = n;
    if (i < tag.size() && tag[i] == '=') {
      ++i;
      if (i < tag.size() && (tag[i] == '"' || tag[i] == '\'')) {
        size_t close = tag.find(tag[i], i + 1);
        if (close == std::string::npos)
          close = tag.size();
        value = tag.substr(i + 1, close - i - 1);
        i = close + 1;
      } else {
        size_t e = tag.find_first_of(" \t\r\n", i);
        if (e == std::string::npos)
          e = tag.size();
        value = tag.substr(i, e - i);
        i = e;
      }
    }
    a[name] = html_unescape(value);
  }
  return a;
}

struct HtmlForm {
  std::string action, method;
  std::vector<std::pair<std::string, std::string>> fields;  // hidden inputs (what a submit sends)
};

inline std::vector<HtmlForm> parse_forms(const std::string& html) {
  std::vector<HtmlForm> forms;
  std::string low = lower(html);
  for (size_t p = low.find("<form"); p != std::string::npos; p = low.find("<form", p + 1)) {
    size_t gt = low.find('>', p), end = low.find("</form", p);
    if (gt == std::string::npos)
      break;
    if (end == std::string::npos)
      end = low.size();
    auto fa = tag_attrs(html.substr(p + 1, gt - p - 1));
    HtmlForm f{fa["action"], lower(fa["method"].empty() ? "get" : fa["method"]), {}};
    for (size_t i = low.find("<input", gt); i != std::string::npos && i < end; i = low.find("<input", i + 1)) {
      size_t ie = low.find('>', i);
      auto ia = tag_attrs(html.substr(i + 1, ie - i - 1));
      std::string type = lower(ia["type"]);
      if (!ia["name"].empty() && (type == "hidden" || type == "text" || type.empty()))
        f.fields.emplace_back(ia["name"], ia["value"]);
    }
    forms.push_back(std::move(f));
  }
  return forms;
}

inline std::string form_encode(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string s;
  for (const auto& kv : fields)
    s += (s.empty() ? "" : "&") + pct_encode(kv.first) + "=" + pct_encode(kv.second);
  return s;
}

// A minimal HTTP/1.1 client (one request per connection, optional TLS) for follow_like_browser.
// httplib's client is not used here: it percent-decodes Location headers, which loses information
// (a state containing "%26" would come back as "&").
struct HttpAnswer {
  int status = 0;                                   // 0 = transport error
  std::multimap<std::string, std::string> headers;  // names lower-cased
  std::string body, error;
};

// One client connection, plain or TLS, whose every wait ends at the deadline.
class ClientConnection {
 public:
  using clock = std::chrono::steady_clock;
  explicit ClientConnection(clock::time_point deadline) : deadline_(deadline) {}
  ~ClientConnection() {
    ssl_.reset();
    if (fd_ != sys::bad_socket)
      sys::close_socket(fd_);
  }
  ClientConnection(const ClientConnection&) = delete;
  ClientConnection& operator=(const ClientConnection&) = delete;

  // Connects to the first address of host that answers (like browsers: ::1, then 127.0.0.1).
  // Returns "" or what failed.
  std::string connect(const std::string& host, int port) {
    sys::net_init();
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || !res)
      return "cannot resolve " + host;
    for (addrinfo* a = res; a && fd_ == sys::bad_socket; a = a->ai_next) {
      fd_ = sys::stream_socket(a->ai_family, true);
      if (fd_ == sys::bad_socket)
        continue;
      if (::connect(fd_, a->ai_addr, static_cast<socklen_t>(a->ai_addrlen)) != 0 &&
          (!sys::in_progress(sys::last_error()) || !wait(POLLOUT) || sys::socket_error(fd_) != 0)) {
        sys::close_socket(fd_);
        fd_ = sys::bad_socket;
      }
    }
    ::freeaddrinfo(res);
    return fd_ == sys::bad_socket ? "connection failed" : "";
  }

  // The TLS handshake over the connected socket. The server must present a certificate that chains
  // to ca_pem (or to the system's CAs when it is empty) and names host: as an IP address when host is
  // one, else as a DNS name (also sent as SNI). Returns "" or what failed.
  std::string start_tls(const std::string& host, const std::string& ca_pem) {
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    if (!ctx_)
      return "SSL_CTX_new failed";
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
    if (ca_pem.empty()) {
      SSL_CTX_set_default_verify_paths(ctx_.get());
    } else {
      BioPtr b(BIO_new_mem_buf(ca_pem.data(), static_cast<int>(ca_pem.size())));
      while (X509* c = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)) {
        X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx_.get()), c);
        X509_free(c);
      }
      ERR_clear_error();  // the loop ends on a "no start line" error
    }
    ssl_.reset(SSL_new(ctx_.get()));
    if (!ssl_)
      return "SSL_new failed";
    SSL_set_fd(ssl_.get(), static_cast<int>(fd_));  // OpenSSL's way on Windows too (a SOCKET fits)
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), host.c_str()) != 1) {
      ERR_clear_error();  // not an IP address
      SSL_set_tlsext_host_name(ssl_.get(), host.c_str());
      SSL_set1_host(ssl_.get(), host.c_str());
    }
    for (;;) {
      int r = SSL_connect(ssl_.get());
      if (r == 1)
        return "";
      if (!wait_for_tls(r)) {
        long v = SSL_get_verify_result(ssl_.get());
        return std::string("TLS handshake failed") +
               (v != X509_V_OK ? std::string(": ") + X509_verify_cert_error_string(v) : std::string());
      }
    }
  }

  bool write_all(std::string data) {
    for (size_t off = 0; off < data.size();) {
      long n = transfer(true, &data[off], data.size() - off);
      if (n <= 0)
        return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // Bytes read; 0 at the end of the stream (a TLS close_notify or an abrupt close alike); -1 on an
  // error or at the deadline.
  long read_some(char* buf, size_t n) { return transfer(false, buf, n); }

 private:
  int left_ms() const {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - clock::now()).count();
    return static_cast<int>(std::max<long long>(0, std::min<long long>(ms, 1 << 30)));
  }
  // Waits for the socket; false at the deadline.
  bool wait(short events) {
    sys::pollfd_t p{fd_, events, 0};
    return sys::poll_once(&p, 1, left_ms()) > 0;
  }
  // After a TLS call returned r: waits for what it needs; false when it failed instead, or at the deadline.
  bool wait_for_tls(int r) {
    int e = SSL_get_error(ssl_.get(), r);
    return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && wait(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT);
  }
  // One read or write, repeated until it moves data or fails.
  long transfer(bool writing, char* buf, size_t n) {
    for (;;) {
      if (ssl_) {
        int len = static_cast<int>(std::min<size_t>(n, INT_MAX));
        int r = writing ? SSL_write(ssl_.get(), buf, len) : SSL_read(ssl_.get(), buf, len);
        if (r > 0)
          return r;
        if (!wait_for_tls(r))
          return writing ? -1 : 0;
        continue;
      }
      long r = writing ? sys::send_some(fd_, buf, n) : sys::recv_some(fd_, buf, n);
      if (r >= 0)
        return r;
      if (!sys::retryable(sys::last_error()) || !wait(writing ? POLLOUT : POLLIN))
        return -1;
    }
  }

  sys::socket_t fd_ = sys::bad_socket;
  clock::time_point deadline_;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx_{nullptr, SSL_CTX_free};
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl_{nullptr, SSL_free};
};

inline std::string request_text(const Url& u, const std::string& method, const std::string& body) {
  bool default_port = (u.scheme == "http" && u.port == 80) || (u.scheme == "https" && u.port == 443);
  std::string req = method + " " + u.target + " HTTP/1.1\r\nHost: " + u.host +
                    (default_port ? "" : ":" + std::to_string(u.port)) +
                    "\r\nUser-Agent: aps-mock-browser/1.0\r\nAccept: text/html,*/*\r\nConnection: close\r\n";
  if (method == "POST")
    req += "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  return req + "\r\n" + body;
}

// Reads until the blank line that ends the head; raw holds all bytes read, head_end where the blank
// line starts. Returns "" or what failed.
inline std::string read_head(ClientConnection& c, std::string& raw, size_t& head_end) {
  char buf[8192];
  while ((head_end = raw.find("\r\n\r\n")) == std::string::npos) {
    long n = c.read_some(buf, sizeof buf);
    if (n < 0)
      return "read failed or timed out";
    if (n == 0)
      return "incomplete answer";
    raw.append(buf, static_cast<size_t>(n));
  }
  return "";
}

// The status line and the header fields; false when the head is not HTTP.
inline bool parse_head(const std::string& head, HttpAnswer& out) {
  if (head.compare(0, 5, "HTTP/") != 0 || head.find(' ') == std::string::npos)
    return false;
  out.status = std::atoi(head.c_str() + head.find(' ') + 1);
  for (size_t p = head.find("\r\n"); p != std::string::npos;) {
    size_t e = head.find("\r\n", p + 2), colon = head.find(':', p + 2);
    std::string line = head.substr(p + 2, e == std::string::npos ? std::string::npos : e - p - 2);
    if (colon != std::string::npos && colon < p + 2 + line.size()) {
      std::string v = line.substr(colon - p - 1);
      v.erase(0, v.find_first_not_of(" \t"));
      out.headers.emplace(lower(line.substr(0, colon - p - 2)), v);
    }
    p = e;
  }
  return true;
}

inline std::string dechunk(const std::string& content) {
  std::string plain;
  for (size_t p = 0;;) {
    size_t eol = content.find("\r\n", p);
    if (eol == std::string::npos)
      break;
    size_t len = std::strtoul(content.c_str() + p, nullptr, 16);
    if (len == 0 || eol + 2 + len > content.size())
      break;
    plain += content.substr(eol + 2, len);
    p = eol + 2 + len + 2;
  }
  return plain;
}

// Reads the rest of the body (body holds what came with the head): Content-Length bytes, chunks up
// to the last one, or everything until the server closes. Returns "" or what failed.
inline std::string read_body(ClientConnection& c, const HttpAnswer& head, std::string& body) {
  auto te = head.headers.find("transfer-encoding");
  auto cl = head.headers.find("content-length");
  const bool chunked = te != head.headers.end() && lower(te->second) == "chunked";
  const size_t length =
      cl != head.headers.end() && !chunked ? std::strtoul(cl->second.c_str(), nullptr, 10) : std::string::npos;
  char buf[8192];
  for (;;) {
    if (length != std::string::npos && body.size() >= length)
      break;
    if (chunked && body.size() >= 5 && body.compare(body.size() - 5, 5, "0\r\n\r\n") == 0)
      break;
    long n = c.read_some(buf, sizeof buf);
    if (n < 0)
      return "read failed or timed out";
    if (n == 0)
      break;
    body.append(buf, static_cast<size_t>(n));
  }
  if (chunked)
    body = dechunk(body);
  if (length != std::string::npos && body.size() > length)
    body.resize(length);
  return "";
}

inline HttpAnswer http_request(const Url& u, const std::string& method, const std::string& body,
                               const std::string& ca_pem, std::chrono::steady_clock::time_point deadline) {
  auto failed = [](std::string error) {
    HttpAnswer a;
    a.error = std::move(error);
    return a;
  };
  const std::string host = u.host.size() > 1 && u.host[0] == '[' ? u.host.substr(1, u.host.size() - 2) : u.host;
  ClientConnection c(deadline);
  std::string error = c.connect(host, u.port);
  if (error.empty() && u.scheme == "https")
    error = c.start_tls(host, ca_pem);
  if (!error.empty())
    return failed(error);
  if (!c.write_all(request_text(u, method, body)))
    return failed("write failed");
  std::string raw;
  size_t head_end = 0;
  if (!(error = read_head(c, raw, head_end)).empty())
    return failed(error);
  HttpAnswer out;
  if (!parse_head(raw.substr(0, head_end), out))
    return failed("not HTTP");
  out.body = raw.substr(head_end + 4);
  if (!(error = read_body(c, out, out.body)).empty())
    return failed(error);
  return out;
}

}  // namespace detail

// GETs url and walks the authorize flow like a browser: follows the mock's redirects, submits its
// consent form (Allow, or Deny when the page says the scripted user denies), and finally GETs the
// first URL outside the mock (the app's loopback callback), returning that answer. A page that is
// neither a redirect nor a consent form (e.g. "Invalid redirect_uri") ends the walk and is returned.
inline BrowseResult follow_like_browser(const std::string& url, const std::string& ca_pem = "",
                                        int timeout_ms = 10000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto start = detail::parse_url(url);
  if (!start)
    return {0, "bad URL", url};
  const std::string mock_origin = start->origin();
  std::string cur = url, method = "GET", body;
  for (int hop = 0; hop < 20; ++hop) {
    auto here = detail::parse_url(cur);
    if (!here)
      return {0, "bad URL", cur};
    auto a = detail::http_request(*here, method, body, ca_pem, deadline);
    if (a.status == 0)
      return {0, a.error, cur};
    auto loc = a.headers.find("location");
    if (a.status >= 300 && a.status < 400 && loc != a.headers.end()) {
      cur = detail::resolve_url(*here, loc->second);
      method = "GET";  // 302/303 after a POST become GET, as in browsers
      body.clear();
      auto next = detail::parse_url(cur);
      if (!next || next->origin() == mock_origin)
        continue;
      auto app = detail::http_request(*next, "GET", "", ca_pem, deadline);  // the app's callback
      return {app.status, app.status ? app.body : app.error, cur};
    }
    // A consent page: press the button the scripted user presses.
    bool consent = a.body.find("data-mock-user-choice=") != std::string::npos;
    std::string choice = a.body.find("data-mock-user-choice=\"deny\"") != std::string::npos ? "deny" : "allow";
    const detail::HtmlForm* pick = nullptr;
    auto forms = detail::parse_forms(a.body);
    for (const auto& f : forms)
      for (const auto& kv : f.fields)
        if (kv.first == "decision" && kv.second == choice)
          pick = &f;
    if (a.status != 200 || !consent || !pick)
      return {a.status, a.body, cur};
    std::string action = detail::resolve_url(*here, pick->action.empty() ? cur : pick->action);
    std::string encoded = detail::form_encode(pick->fields);
    method = pick->method == "post" ? "POST" : "GET";
    body = method == "POST" ? encoded : "";
    cur = method == "POST" ? action : action.substr(0, action.find('?')) + "?" + encoded;
  }
  return {0, "too many redirects", cur};
}

}  // namespace aps_mock
