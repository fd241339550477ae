// Sockets of the tests: an owned TCP socket, free ports, a listener whose backlog is full, and a tiny blocking
// HTTP/1.1 client that sends exactly the bytes a test gives it (as a browser, or a hostile local process, would:
// IPv4 or IPv6, any bytes, silent connections). Built on platform.hpp. Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_NETWORK_HPP
#define APS_AUTH_TESTS_SUPPORT_NETWORK_HPP

#include "platform.hpp"

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>

namespace support {

// An owned TCP socket.
class Socket {
 public:
  Socket() = default;
  explicit Socket(platform::socket_t s) : s_(s) {}
  ~Socket() { reset(); }
  Socket(Socket&& o) noexcept : s_(o.s_) { o.s_ = platform::kNoSocket; }
  Socket& operator=(Socket&& o) noexcept {
    if (this != &o) {
      reset();
      s_ = o.s_;
      o.s_ = platform::kNoSocket;
    }
    return *this;
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  platform::socket_t native() const { return s_; }
  bool valid() const { return s_ != platform::kNoSocket; }
  void reset() {
    platform::close_socket(s_);
    s_ = platform::kNoSocket;
  }
  int local_port() const { return platform::local_port(s_); }

  bool send_all(const std::string& data) const {
    for (std::size_t off = 0; off < data.size();) {
      long n = platform::send_some(s_, data.data() + off, data.size() - off);
      if (n <= 0)
        return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  }
  // Sends what fits without blocking (the peer may have stopped reading); false once the peer is gone.
  bool send_without_blocking(const std::string& data) const {
    if (!valid())
      return false;
    return platform::send_some(s_, data.data(), data.size(), true) >= 0 ||
           platform::would_block(platform::last_socket_error());
  }
  // Half-closes: the peer reads end-of-file.
  void shutdown_write() const { platform::shutdown_write(s_); }

 private:
  platform::socket_t s_ = platform::kNoSocket;
};

// Connects (blocking) to a numeric address ("127.0.0.1", "::1", "[::1]"), with send and receive timeouts; an
// invalid Socket on failure, the system's error code in *err.
inline Socket connect_to(const std::string& host, int port, int* err = nullptr, int timeout_ms = 5000) {
  sockaddr_storage ss;
  platform::socklen_type len = 0;
  if (!platform::make_address(host, port, ss, len)) {
    if (err)
      *err = EINVAL;
    return Socket();
  }
  Socket s(platform::tcp_socket(ss.ss_family));
  if (!s.valid()) {
    if (err)
      *err = platform::last_socket_error();
    return s;
  }
  platform::set_io_timeouts(s.native(), timeout_ms);
  if (!platform::connect_to(s.native(), ss, len)) {
    if (err)
      *err = platform::last_socket_error();
    return Socket();
  }
  if (err)
    *err = 0;
  return s;
}

// A socket bound to host:port (port 0: any; IPv6: IPv6 only) and listening; throws when it cannot.
inline Socket listen_on(const std::string& host, int port = 0, int backlog = 4) {
  sockaddr_storage ss;
  platform::socklen_type len = 0;
  if (!platform::make_address(host, port, ss, len))
    throw std::runtime_error("not a numeric address: " + host);
  Socket s(platform::tcp_socket(ss.ss_family));
  if (!s.valid())
    throw std::runtime_error("socket: " + platform::socket_error_text(platform::last_socket_error()));
  if (ss.ss_family == AF_INET6)
    platform::set_v6only(s.native());
  if (!platform::bind_to(s.native(), ss, len) || !platform::listen_on(s.native(), backlog))
    throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " +
                             platform::socket_error_text(platform::last_socket_error()));
  return s;
}

// Tries to bind another socket to host:port with every port-sharing option set (platform::set_port_sharing);
// 0, or the system's error code (platform::is_address_in_use() when the port is taken).
inline int try_bind_shared(const std::string& host, int port) {
  sockaddr_storage ss;
  platform::socklen_type len = 0;
  if (!platform::make_address(host, port, ss, len))
    return EINVAL;
  Socket s(platform::tcp_socket(ss.ss_family));
  if (!s.valid())
    return platform::last_socket_error();
  platform::set_port_sharing(s.native());
  if (ss.ss_family == AF_INET6)
    platform::set_v6only(s.native());
  return platform::bind_to(s.native(), ss, len) ? 0 : platform::last_socket_error();
}

// A loopback port nothing listens on right now (bound, read, released); 0 when none could be had.
inline int free_port() {
  sockaddr_storage ss;
  platform::socklen_type len = 0;
  platform::make_address("127.0.0.1", 0, ss, len);
  Socket s(platform::tcp_socket(AF_INET));
  if (!s.valid() || !platform::bind_to(s.native(), ss, len))
    return 0;
  return s.local_port();
}

// True when something accepts TCP connections on 127.0.0.1:port.
inline bool accepts(int port) {
  return connect_to("127.0.0.1", port).valid();
}

// A listener with a backlog of 0 that never accepts, its one queue slot taken by a connection of its own: the
// kernel then drops every further SYN, so a client's connect() hangs until its connect timeout fires.
class FullBacklog {
 public:
  FullBacklog() : listener_(listen_on("127.0.0.1", 0, 0)), filler_(connect_to("127.0.0.1", listener_.local_port())) {
    if (!filler_.valid())
      throw std::runtime_error("FullBacklog: cannot fill the backlog");
  }
  int port() const { return listener_.local_port(); }

 private:
  Socket listener_, filler_;
};

namespace raw_http {

struct Response {
  int status = 0;                              // 0: no (complete) answer
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
  std::string raw;

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// Reads until the peer closes, for at most timeout_ms; parses status line, headers and body.
inline Response read_response(const Socket& s, int timeout_ms = 5000) {
  Response r;
  char buf[4096];
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
    if (left <= 0 || !platform::wait_readable(s.native(), static_cast<int>(left)))
      break;
    const long n = platform::receive_some(s.native(), buf, sizeof buf);
    if (n <= 0)
      break;
    r.raw.append(buf, static_cast<std::size_t>(n));
  }
  std::size_t head_end = r.raw.find("\r\n\r\n");
  if (head_end == std::string::npos || r.raw.compare(0, 5, "HTTP/") != 0)
    return r;
  std::size_t sp = r.raw.find(' ');
  r.status = std::atoi(r.raw.c_str() + sp + 1);
  std::size_t pos = r.raw.find("\r\n") + 2;
  while (pos < head_end) {
    std::size_t eol = r.raw.find("\r\n", pos);
    std::string line = r.raw.substr(pos, eol - pos);
    std::size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (char& c : name)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::size_t v = line.find_first_not_of(' ', colon + 1);
      r.headers[name] = v == std::string::npos ? std::string() : line.substr(v);
    }
    pos = eol + 2;
  }
  r.body = r.raw.substr(head_end + 4);
  return r;
}

// Sends `bytes` as they are and reads the answer.
inline Response exchange(const std::string& host, int port, const std::string& bytes, int timeout_ms = 5000) {
  Socket s = connect_to(host, port, nullptr, timeout_ms);
  if (!s.valid() || !s.send_all(bytes))
    return Response();
  return read_response(s, timeout_ms);
}

// GET (or another method) of `target` with a browser-like request head.
inline Response request(const std::string& host, int port, const std::string& target, const std::string& method = "GET",
                        const std::string& body = "", int timeout_ms = 5000) {
  std::string host_header = host.find(':') != std::string::npos && host.front() != '[' ? "[" + host + "]" : host;
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: " + host_header + ":" + std::to_string(port) +
                    "\r\nUser-Agent: aps_auth-tests\r\nAccept: text/html\r\nConnection: close\r\n";
  if (!body.empty() || method == "POST")
    req += "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  return exchange(host, port, req, timeout_ms);
}

}  // namespace raw_http
}  // namespace support

#endif
