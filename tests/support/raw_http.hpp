// A tiny blocking HTTP/1.1 client on raw POSIX sockets, for driving the loopback listener in tests exactly as a
// browser (or a hostile local process) would: IPv4 or IPv6, any bytes, silent connections. Not part of the
// library.
#ifndef APS_AUTH_TESTS_SUPPORT_RAW_HTTP_HPP
#define APS_AUTH_TESTS_SUPPORT_RAW_HTTP_HPP

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

namespace raw_http {

struct Response {
  int status = 0;  // 0: no (complete) answer
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
  std::string raw;

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// An owned socket descriptor.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() { reset(); }
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Fills a sockaddr for a numeric IPv4 or IPv6 address ("127.0.0.1", "::1", "[::1]").
inline bool make_address(std::string host, int port, sockaddr_storage& ss, socklen_t& len) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  ss = sockaddr_storage{};
  auto* a4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(static_cast<std::uint16_t>(port));
    len = sizeof(sockaddr_in);
    return true;
  }
  if (inet_pton(AF_INET6, host.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<std::uint16_t>(port));
    len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

// Connects (blocking) to a numeric address; an invalid Socket on failure, errno kept in *err.
inline Socket connect_to(const std::string& host, int port, int* err = nullptr, int timeout_ms = 5000) {
  sockaddr_storage ss;
  socklen_t len = 0;
  if (!make_address(host, port, ss, len)) {
    if (err) *err = EINVAL;
    return Socket();
  }
  Socket s(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) {
    if (err) *err = errno;
    return s;
  }
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(s.fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(s.fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(s.fd(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    if (err) *err = errno;
    return Socket();
  }
  if (err) *err = 0;
  return s;
}

inline bool send_all(const Socket& s, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(s.fd(), data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

// Reads until the peer closes (or the receive timeout); parses status line, headers and body.
inline Response read_response(const Socket& s) {
  Response r;
  char buf[4096];
  while (true) {
    ssize_t n = ::recv(s.fd(), buf, sizeof buf, 0);
    if (n <= 0) break;
    r.raw.append(buf, static_cast<std::size_t>(n));
  }
  std::size_t head_end = r.raw.find("\r\n\r\n");
  if (head_end == std::string::npos || r.raw.compare(0, 5, "HTTP/") != 0) return r;
  std::size_t sp = r.raw.find(' ');
  r.status = std::atoi(r.raw.c_str() + sp + 1);
  std::size_t pos = r.raw.find("\r\n") + 2;
  while (pos < head_end) {
    std::size_t eol = r.raw.find("\r\n", pos);
    std::string line = r.raw.substr(pos, eol - pos);
    std::size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
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
  if (!s.valid() || !send_all(s, bytes)) return Response();
  return read_response(s);
}

// GET (or another method) of `target` with a browser-like request head.
inline Response request(const std::string& host, int port, const std::string& target,
                        const std::string& method = "GET", const std::string& body = "", int timeout_ms = 5000) {
  std::string host_header = host.find(':') != std::string::npos && host.front() != '[' ? "[" + host + "]" : host;
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: " + host_header + ":" + std::to_string(port) +
                    "\r\nUser-Agent: aps_auth-tests\r\nAccept: text/html\r\nConnection: close\r\n";
  if (!body.empty() || method == "POST")
    req += "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n";
  req += "\r\n" + body;
  return exchange(host, port, req, timeout_ms);
}

}  // namespace raw_http

#endif
