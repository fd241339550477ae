// aps_auth_redis.hpp - a TokenStore in Redis, shared by many machines: one signed-in user, one refresh at a time.
// SPDX-License-Identifier: MIT
//
// USAGE
//   #include "aps_auth_redis.hpp"   // after or instead of aps_auth.hpp; needs hiredis (pkg-config hiredis)
//   auto store = std::make_shared<aps::auth::RedisTokenStore>("redis://cache.internal:6379/0", "app:token");
//   aps::auth::TokenSource source(config, store);    // on every machine: one refresh per expiry, in total
//
// WHY  APS refresh tokens are single-use: two machines refreshing the same token at once burn it and sign the user
// out. A file lock stops at the machine's edge; this store puts the token and the lock in Redis.
//
// HOW  The token lives in a hash under `key` (fields "token", the Token's JSON, and "generation", a counter raised
// by every save and clear). The cross-machine lock (TokenSource holds it around read-refresh-write) is
// `SET <key>:lock <owner> NX PX <lock_ttl>`, the owner a random 128-bit value from OpenSSL's CSPRNG, released by a
// script that deletes the key only while it still holds that owner. A holder that dies leaves the lock to expire
// after lock_ttl, which must be longer than a refresh's worst case (lock_ttl_for). A save made under the lock
// is a check-and-set in a script: it succeeds only if the generation is still the one read under that lock, so a
// holder whose lock expired (it stalled, another machine took over and saved) cannot overwrite the newer token.
// Every command is one atomic step: a token is written whole or not at all.
//
// THE ONE LOSS NO LOCK PREVENTS  The holder dies (power, SIGKILL) after APS rotated the refresh token and before
// the new one reached Redis: the stored refresh token is then spent. The next machine, after lock_ttl, gets
// invalid_grant, reads the store once more, finds nothing newer and throws ErrorKind::oauth with
// details().error == "invalid_grant": the user must sign in again. Redis must persist (appendonly yes,
// appendfsync always) or a restart loses the token in the same way.
//
// Every call has a deadline (options.timeout for connecting and for each command; lock() waits at most
// options.lock_wait), except the host name's lookup, which hiredis leaves to the system resolver: give an IP
// address where the resolver may hang. Errors are aps::auth::Error: network (Redis down, connection lost), timeout, io
// (Redis answered an error), usage (a bad URL). Messages name the server as redis://host:port/db, never the password.
// The connection is re-made on the next call after a failure. One connection per store, guarded by a mutex.
#ifndef APS_AUTH_REDIS_HPP
#define APS_AUTH_REDIS_HPP

#include "aps_auth.hpp"

// pkg-config hiredis gives -I<prefix>/include/hiredis (Debian's 0.14) or -I<prefix>/include (upstream 1.x).
#if __has_include(<hiredis/hiredis.h>)
#include <hiredis/hiredis.h>
#else
#include <hiredis.h>
#endif

#include <cctype>
#include <cerrno>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#ifndef _WIN32
#include <csignal>
#include <ctime>
#include <pthread.h>
#endif

APS_AUTH_NAMESPACE_BEGIN

struct RedisTokenStoreOptions {
  // Connecting, and each command: no answer within this time is ErrorKind::timeout.
  std::chrono::milliseconds timeout{2000};
  // How long the lock lives when its holder never releases it (it died). Longer than a refresh's worst case, or
  // a slow holder loses the lock mid-refresh: see RedisTokenStore::lock_ttl_for(config). The default is
  // lock_ttl_for(Config{}) (the default timeouts and retries).
  std::chrono::milliseconds lock_ttl{390000};  // 6.5 min
  // How long lock() waits for another holder: by default (0) lock_ttl + timeout, time for a dead holder's lock to
  // expire.
  std::chrono::milliseconds lock_wait{0};
};

namespace redis_detail {
class RedisLock;
}

class RedisTokenStore : public TokenStore {
 public:
  // url: redis://[[user]:password@]host[:port][/db] (port 6379, db 0 by default; user and password
  // percent-decoded; host a name, an IPv4 address or [IPv6]). rediss:// (TLS) is refused with ErrorKind::usage:
  // this store does not implement TLS (the hiredis it was written against, 0.14, has none). Nothing is connected
  // before the first call.
  RedisTokenStore(const std::string& url, std::string key, RedisTokenStoreOptions options = {});
  ~RedisTokenStore() override;
  RedisTokenStore(const RedisTokenStore&) = delete;
  RedisTokenStore& operator=(const RedisTokenStore&) = delete;

  // "aps-auth:token:<client_id>": one key per application, the CLI's default.
  [[nodiscard]] static std::string default_key(const std::string& client_id);
  // The worst case of what TokenSource does under the lock: two refreshes (the second after an invalid_grant),
  // each with every attempt timing out and the longest waits between them, plus 30 s for the store's own calls.
  [[nodiscard]] static std::chrono::milliseconds lock_ttl_for(const Config& config);

  // The URL without its credentials: redis://host:port/db.
  [[nodiscard]] const std::string& where() const noexcept;
  [[nodiscard]] const std::string& key() const noexcept;

  bool load(Token& token) override;
  // Under this store's lock: refused (ErrorKind::io, nothing written) when another holder saved or cleared since
  // this lock's load(). Otherwise: written unconditionally (a sign-in).
  void save(const Token& token) override;
  void clear() override;
  // The cross-machine lock; waits up to options.lock_wait (then ErrorKind::timeout). Released by destruction.
  [[nodiscard]] std::unique_ptr<StoreLock> lock() override;

  // Sends PING: throws what a call would throw when Redis cannot be reached.
  void ping();

 private:
  friend class redis_detail::RedisLock;
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

APS_AUTH_NAMESPACE_END

// =================================================================================================================
// Implementation (header-only: every function inline)
// =================================================================================================================

APS_AUTH_NAMESPACE_BEGIN
namespace redis_detail {

struct Url {
  std::string host, user, password, where;
  int port = 6379;
  int db = 0;
};

// %XX decoded once; anything else kept as it is. (aps_auth.hpp's decoder is in its implementation half, which a
// file using the compiled mode does not see.)
inline std::string percent_decode(const std::string& s) {
  const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) && hex(s[i + 2])) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// A decimal number in [lo, hi], the whole string; -1 otherwise.
inline long number_in(const std::string& s, long lo, long hi) {
  if (s.empty() || s.size() > 9)
    return -1;
  long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9')
      return -1;
    v = v * 10 + (c - '0');
  }
  return v >= lo && v <= hi ? v : -1;
}

// The errors never repeat the URL: it may hold a password.
inline Error bad_url(const std::string& why) {
  return Error(ErrorKind::usage, "bad Redis URL (" + why + "); expected redis://[[user]:password@]host[:port][/db]");
}

// "host", "host:port", "[v6]" or "[v6]:port" into u.host and u.port.
inline void parse_host_port(const std::string& authority, Url& u) {
  std::string port;
  if (!authority.empty() && authority[0] == '[') {
    std::size_t close = authority.find(']');
    if (close == std::string::npos)
      throw bad_url("an unclosed [");
    u.host = authority.substr(1, close - 1);
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':')
        throw bad_url("junk after the IPv6 address");
      port = after.substr(1);
    }
  } else {
    std::size_t colon = authority.find(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos)
      port = authority.substr(colon + 1);
  }
  if (u.host.empty())
    throw bad_url("no host");
  if (u.host.find_first_of(" \t\r\n%/?#") != std::string::npos)
    throw bad_url("a host with invalid characters");
  if (!port.empty()) {
    long p = number_in(port, 1, 65535);
    if (p < 0)
      throw bad_url("the port is not a number in 1-65535");
    u.port = static_cast<int>(p);
  }
}

inline Url parse_url(const std::string& url) {
  const std::string scheme_end = "://";
  std::size_t s = url.find(scheme_end);
  if (s == std::string::npos)
    throw bad_url("no scheme");
  const std::string scheme = url.substr(0, s);
  if (scheme == "rediss")
    throw Error(ErrorKind::usage,
                "rediss:// (Redis over TLS) is not supported by this build of aps_auth_redis.hpp; "
                "use redis:// on a trusted network, or a TLS tunnel to Redis");
  if (scheme != "redis")
    throw bad_url("the scheme is not redis://");
  std::string rest = url.substr(s + scheme_end.size());
  Url u;
  std::size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos && slash + 1 < rest.size()) {
    long db = number_in(rest.substr(slash + 1), 0, 1000000);
    if (db < 0)
      throw bad_url("the database is not a number");
    u.db = static_cast<int>(db);
  }
  std::size_t at = authority.rfind('@');
  if (at != std::string::npos) {
    std::string userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    std::size_t colon = userinfo.find(':');
    if (colon == std::string::npos)
      throw bad_url("credentials without a ':' before the password");
    u.user = percent_decode(userinfo.substr(0, colon));
    u.password = percent_decode(userinfo.substr(colon + 1));
  }
  parse_host_port(authority, u);
  const bool v6 = u.host.find(':') != std::string::npos;
  u.where = "redis://" + (v6 ? "[" + u.host + "]" : u.host) + ":" + std::to_string(u.port) + "/" + std::to_string(u.db);
  return u;
}

// A write to a connection Redis closed raises SIGPIPE, whose default action ends the process; hiredis writes with
// write(). The signal is blocked in this thread for the call, and one it raised is consumed before unblocking.
class NoSigpipe {
 public:
#ifndef _WIN32
  NoSigpipe() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    was_pending_ = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
    blocked_ = pthread_sigmask(SIG_BLOCK, &pipe_, &old_) == 0;
  }
  ~NoSigpipe() {
    if (!blocked_)
      return;
    sigset_t pending;
    sigemptyset(&pending);
    if (!was_pending_ && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
      const struct timespec zero = {0, 0};
      while (sigtimedwait(&pipe_, nullptr, &zero) == -1 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t pipe_, old_;
  bool was_pending_ = false, blocked_ = false;
#endif
};

struct ReplyDeleter {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

inline timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(ms.count() / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>((ms.count() % 1000) * 1000);
  return tv;
}

// Saves the token if the generation is still ARGV[2] ("" = unconditionally): {1, new generation} or
// {0, current generation}.
inline const char* const kSaveScript =
    "local g = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0') "
    "if ARGV[2] ~= '' and g ~= tonumber(ARGV[2]) then return {0, g} end "
    "redis.call('HSET', KEYS[1], 'token', ARGV[1], 'generation', g + 1) "
    "return {1, g + 1}";
// Deletes the token and raises the generation, so a stale holder's save cannot bring it back.
inline const char* const kClearScript =
    "redis.call('HDEL', KEYS[1], 'token') "
    "return redis.call('HINCRBY', KEYS[1], 'generation', 1)";
// Releases the lock only while it is still this owner's.
inline const char* const kReleaseScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
    "return 0";

}  // namespace redis_detail

struct RedisTokenStore::Impl {
  redis_detail::Url url;
  std::string key, lock_key;
  RedisTokenStoreOptions options;

  std::mutex mutex;  // guards everything below
  redisContext* context = nullptr;
  // The lock this store holds, taken by `holder` (the thread that calls save() under it), and the generation its
  // load() saw (-1: none yet).
  std::string owner;
  std::thread::id holder;
  long long generation = -1;
  std::mutex held;  // one lock at a time per store object: TokenSources sharing it queue here

  ~Impl() { disconnect(); }

  void disconnect() {
    if (context)
      redisFree(context);
    context = nullptr;
  }

  // `os_error`: errno right after the failed call (hiredis keeps only its text).
  [[noreturn]] void fail(const char* doing, int os_error) {
    const int err = context ? context->err : REDIS_ERR_OTHER;
    const std::string text = context ? context->errstr : "out of memory";
    const bool timed_out = err == REDIS_ERR_IO && (os_error == EAGAIN || os_error == EWOULDBLOCK ||
                                                   os_error == ETIMEDOUT || os_error == EINPROGRESS);
    disconnect();  // the next call connects again
    if (timed_out)
      throw Error(ErrorKind::timeout, std::string("Redis at ") + url.where + ": no answer " + doing + " within " +
                                          std::to_string(options.timeout.count()) + " ms");
    throw Error(ErrorKind::network, std::string("Redis at ") + url.where + ": " + doing + " failed: " + text);
  }

  // A reply that is not an error: the connection is made first when there is none.
  redis_detail::Reply command(const std::vector<std::string>& args, const char* doing) {
    if (!context)
      connect();
    return send(args, doing);
  }

  redis_detail::Reply send(const std::vector<std::string>& args, const char* doing) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    redis_detail::NoSigpipe no_sigpipe;
    redis_detail::Reply r(
        static_cast<redisReply*>(redisCommandArgv(context, static_cast<int>(argv.size()), argv.data(), lens.data())));
    if (!r)
      fail(doing, errno);
    if (r->type == REDIS_REPLY_ERROR)  // Redis's own words (they never echo a password)
      throw Error(ErrorKind::io,
                  std::string("Redis at ") + url.where + " refused " + doing + ": " + std::string(r->str, r->len));
    return r;
  }

  void connect() {
    const timeval tv = redis_detail::to_timeval(options.timeout);
    errno = 0;
    context = redisConnectWithTimeout(url.host.c_str(), url.port, tv);
    if (!context || context->err)
      fail("connecting", errno);
    if (redisSetTimeout(context, tv) != REDIS_OK)
      fail("connecting", errno);
    try {
      if (!url.password.empty()) {
        if (url.user.empty())
          send({"AUTH", url.password}, "the password (AUTH)");
        else
          send({"AUTH", url.user, url.password}, "the user name and password (AUTH)");
      }
      if (url.db != 0)
        send({"SELECT", std::to_string(url.db)}, "the database (SELECT)");
    } catch (...) {
      disconnect();
      throw;
    }
  }

  bool holding_here() const { return !owner.empty() && holder == std::this_thread::get_id(); }
};

inline RedisTokenStore::RedisTokenStore(const std::string& url, std::string key, RedisTokenStoreOptions options)
    : impl_(std::make_shared<Impl>()) {
  impl_->url = redis_detail::parse_url(url);
  if (key.empty())
    throw Error(ErrorKind::usage, "empty Redis key for the token");
  if (options.timeout.count() <= 0 || options.lock_ttl.count() <= 0)
    throw Error(ErrorKind::usage, "RedisTokenStoreOptions: timeout and lock_ttl must be positive");
  if (options.lock_wait.count() <= 0)
    options.lock_wait = options.lock_ttl + options.timeout;
  impl_->key = std::move(key);
  impl_->lock_key = impl_->key + ":lock";
  impl_->options = options;
}

inline RedisTokenStore::~RedisTokenStore() = default;

inline std::string RedisTokenStore::default_key(const std::string& client_id) {
  return "aps-auth:token:" + client_id;
}

inline std::chrono::milliseconds RedisTokenStore::lock_ttl_for(const Config& config) {
  using std::chrono::milliseconds;
  const long long attempts = std::max(1, config.retry.max_attempts);
  const milliseconds one_refresh =
      (config.connect_timeout + config.read_timeout) * attempts + config.retry.max_delay * (attempts - 1);
  return one_refresh * 2 + milliseconds(30000);
}

inline const std::string& RedisTokenStore::where() const noexcept {
  return impl_->url.where;
}
inline const std::string& RedisTokenStore::key() const noexcept {
  return impl_->key;
}

inline bool RedisTokenStore::load(Token& token) {
  std::lock_guard<std::mutex> lk(impl_->mutex);
  redis_detail::Reply r = impl_->command({"HMGET", impl_->key, "token", "generation"}, "reading the token (HMGET)");
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
    throw Error(ErrorKind::bad_response, "Redis at " + impl_->url.where + ": unexpected answer to HMGET");
  const redisReply* json = r->element[0];
  const redisReply* gen = r->element[1];
  const long long generation = gen->type == REDIS_REPLY_STRING ? std::atoll(gen->str) : 0;
  if (impl_->holding_here())
    impl_->generation = generation;
  if (json->type != REDIS_REPLY_STRING)
    return false;
  try {
    token = Token::from_json(std::string(json->str, json->len));
  } catch (const Error& e) {
    throw Error(ErrorKind::io, "Redis key '" + impl_->key + "' at " + impl_->url.where +
                                   " does not hold a valid token (" + e.what() + ")");
  }
  return true;
}

inline void RedisTokenStore::save(const Token& token) {
  std::lock_guard<std::mutex> lk(impl_->mutex);
  const bool checked = impl_->holding_here() && impl_->generation >= 0;
  const std::string expected = checked ? std::to_string(impl_->generation) : "";
  redis_detail::Reply r = impl_->command(
      {"EVAL", redis_detail::kSaveScript, "1", impl_->key, token.to_json(), expected}, "saving the token (EVAL)");
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER ||
      r->element[1]->type != REDIS_REPLY_INTEGER)
    throw Error(ErrorKind::bad_response, "Redis at " + impl_->url.where + ": unexpected answer to the save script");
  if (r->element[0]->integer == 0)
    throw Error(ErrorKind::io, "the token under Redis key '" + impl_->key + "' at " + impl_->url.where +
                                   " was replaced by another process after this one's lock expired (generation " +
                                   std::to_string(impl_->generation) + " -> " + std::to_string(r->element[1]->integer) +
                                   "); the newer one is kept");
  if (impl_->holding_here())
    impl_->generation = r->element[1]->integer;
}

inline void RedisTokenStore::clear() {
  std::lock_guard<std::mutex> lk(impl_->mutex);
  redis_detail::Reply r =
      impl_->command({"EVAL", redis_detail::kClearScript, "1", impl_->key}, "deleting the token (EVAL)");
  if (impl_->holding_here() && r->type == REDIS_REPLY_INTEGER)
    impl_->generation = r->integer;
}

inline void RedisTokenStore::ping() {
  std::lock_guard<std::mutex> lk(impl_->mutex);
  impl_->command({"PING"}, "PING");
}

namespace redis_detail {

// The held lock: released (compare-and-delete) when destroyed. If Redis cannot be reached then, the lock expires
// by itself after lock_ttl.
class RedisLock : public StoreLock {
 public:
  RedisLock(std::shared_ptr<RedisTokenStore::Impl> impl, std::unique_lock<std::mutex> held)
      : impl_(std::move(impl)), held_(std::move(held)) {}
  ~RedisLock() override;

 private:
  std::shared_ptr<RedisTokenStore::Impl> impl_;
  std::unique_lock<std::mutex> held_;
};

}  // namespace redis_detail

inline std::unique_ptr<StoreLock> RedisTokenStore::lock() {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + impl_->options.lock_wait;
  std::unique_lock<std::mutex> held(impl_->held, std::defer_lock);
  while (!held.try_lock()) {
    if (Clock::now() >= deadline)
      throw Error(ErrorKind::timeout, "the token lock '" + impl_->lock_key +
                                          "' is held by another TokenSource of "
                                          "this process");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const std::string owner = random_urlsafe(16);
  std::minstd_rand jitter(static_cast<unsigned>(std::hash<std::string>{}(owner)));
  long long pause_ms = 10;
  for (;;) {
    {
      std::lock_guard<std::mutex> lk(impl_->mutex);
      redis_detail::Reply r =
          impl_->command({"SET", impl_->lock_key, owner, "NX", "PX", std::to_string(impl_->options.lock_ttl.count())},
                         "taking the token lock (SET NX PX)");
      if (r->type == REDIS_REPLY_STATUS) {  // OK; a nil reply when another holder has it
        impl_->owner = owner;
        impl_->holder = std::this_thread::get_id();
        impl_->generation = -1;
        return std::unique_ptr<StoreLock>(new redis_detail::RedisLock(impl_, std::move(held)));
      }
    }
    const auto left = deadline - Clock::now();
    if (left <= Clock::duration::zero())
      throw Error(ErrorKind::timeout, "the token lock '" + impl_->lock_key + "' at " + impl_->url.where +
                                          " was held by another process for longer than " +
                                          std::to_string(impl_->options.lock_wait.count()) + " ms");
    // Polling with jitter, so that waiters spread out; at most 250 ms between tries.
    const std::chrono::milliseconds nap(std::uniform_int_distribution<long long>(pause_ms / 2, pause_ms)(jitter));
    std::this_thread::sleep_for(std::min<Clock::duration>(nap, left));
    pause_ms = std::min(pause_ms * 2, 250LL);
  }
}

inline redis_detail::RedisLock::~RedisLock() {
  std::lock_guard<std::mutex> lk(impl_->mutex);
  const std::string owner = impl_->owner;
  impl_->owner.clear();
  impl_->holder = std::thread::id();
  impl_->generation = -1;
  try {
    impl_->command({"EVAL", kReleaseScript, "1", impl_->lock_key, owner}, "releasing the token lock (EVAL)");
  } catch (...) {
    // Unreachable now: the lock expires by itself after lock_ttl.
  }
}

APS_AUTH_NAMESPACE_END

#endif
