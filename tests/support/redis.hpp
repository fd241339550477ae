// A real redis-server of the test's own: started on a free loopback port with its data in a temporary directory
// (append-only file, fsync on every write, so a restart keeps what was written), stopped when destroyed; and a
// plain hiredis connection to look at it and change it behind the store's back. Nothing is started globally:
// a test without redis-server installed is skipped by name (redis_runs_here). Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_REDIS_HPP
#define APS_AUTH_TESTS_SUPPORT_REDIS_HPP

#include <doctest/doctest.h>

#include "environment.hpp"
#include "files.hpp"
#include "network.hpp"
#include "process.hpp"

// pkg-config hiredis gives -I<prefix>/include/hiredis (Debian's 0.14) or -I<prefix>/include (upstream 1.x).
#if __has_include(<hiredis/hiredis.h>)
#include <hiredis/hiredis.h>
#else
#include <hiredis.h>
#endif

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace support {

// redis-server: $APS_AUTH_REDIS_SERVER, else the one in $PATH; "" when there is none.
inline std::string redis_server_program() {
  return find_program({env_or("APS_AUTH_REDIS_SERVER"), "redis-server"});
}

// True when a test can start a redis-server; otherwise says (in the test's output) why it does not run.
inline bool redis_runs_here() {
  if (redis_server_program().empty()) {
    MESSAGE("not run: redis-server is not installed (Debian/Ubuntu: redis-server; scripts/install-deps --test)");
    return false;
  }
  return true;
}

// One reply, flattened: its type, its text (string, status or error) and integer, its elements.
struct RedisReply {
  int type = 0;  // REDIS_REPLY_*
  std::string text;
  long long integer = 0;
  std::vector<RedisReply> elements;
  bool nil() const { return type == REDIS_REPLY_NIL; }
};

// A blocking hiredis connection for checks; throws std::runtime_error when Redis cannot be reached.
class RedisClient {
 public:
  RedisClient(int port, const std::string& password = "") {
    timeval tv{2, 0};
    c_ = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c_ || c_->err) {
      if (c_)
        redisFree(c_);  // the destructor does not run when the constructor throws
      throw std::runtime_error("cannot connect to Redis on port " + std::to_string(port));
    }
    redisSetTimeout(c_, tv);
    if (!password.empty())
      command({"AUTH", password});
  }
  ~RedisClient() {
    if (c_)
      redisFree(c_);
  }
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  RedisReply command(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(redisCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lens.data()));
    if (!r)
      throw std::runtime_error("Redis connection failed: " + std::string(c_->errstr));
    RedisReply out = flatten(r);
    freeReplyObject(r);
    return out;
  }

 private:
  static RedisReply flatten(const redisReply* r) {
    RedisReply out;
    out.type = r->type;
    if (r->str)
      out.text.assign(r->str, r->len);
    out.integer = r->integer;
    for (std::size_t i = 0; i < r->elements; ++i)
      out.elements.push_back(flatten(r->element[i]));
    return out;
  }
  redisContext* c_ = nullptr;
};

// A redis-server on 127.0.0.1:<a free port>, running from construction (or start()) until destruction (or stop()).
class RedisServer {
 public:
  explicit RedisServer(std::string password = "") : password_(std::move(password)), port_(free_port()) {
    if (port_ == 0)
      throw std::runtime_error("no free loopback port for redis-server");
    start();
  }
  ~RedisServer() { stop(); }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  // redis://[:password@]127.0.0.1:<port>/<db>
  std::string url(int db = 0) const {
    return "redis://" + (password_.empty() ? "" : ":" + password_ + "@") + "127.0.0.1:" + std::to_string(port_) + "/" +
           std::to_string(db);
  }
  const std::string& log_file() const { return log_; }

  // Starts it (again, on the same port and data) and waits until it answers PING.
  void start() {
    if (process_)
      return;
    std::vector<std::string> argv = {redis_server_program(),
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--dir",
                                     dir_.path(),
                                     "--appendonly",
                                     "yes",
                                     "--appendfsync",
                                     "always",
                                     "--save",
                                     "",
                                     "--daemonize",
                                     "no"};
    if (!password_.empty()) {
      argv.push_back("--requirepass");
      argv.push_back(password_);
    }
    ProcessOptions options;
    options.stdout_file = options.stderr_file = log_;
    options.append = true;
    process_ = std::make_unique<Process>(argv, base_env(dir_.path()), options);
    for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);;) {
      try {
        RedisClient c(port_, password_);
        if (c.command({"PING"}).text == "PONG")
          return;
      } catch (const std::runtime_error&) {
      }
      if (!process_->running() || std::chrono::steady_clock::now() > until)
        throw std::runtime_error("redis-server did not start; its log: " + read_file(log_).value_or(""));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  // Stops it (SIGTERM, then SIGKILL after 10 s) and waits until it has ended.
  void stop() {
    if (!process_)
      return;
    process_->stop(std::chrono::seconds(10));
    process_.reset();
  }

  // A connection of the test's own.
  std::unique_ptr<RedisClient> client() const { return std::make_unique<RedisClient>(port_, password_); }

 private:
  TempDir dir_{"aps_auth_redis_"};
  std::string password_;
  int port_;
  std::string log_ = dir_.file("redis.log");
  std::unique_ptr<Process> process_;
};

}  // namespace support

#endif
