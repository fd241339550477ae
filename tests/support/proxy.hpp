// A small tunnelling HTTP proxy inside the test process, for the platforms where the proxy tests cannot run
// tinyproxy (a Linux program; a Windows test under Wine cannot hand it its configuration's path nor see it end).
// It does what those tests ask of tinyproxy: CONNECT host:port tunnels, to one allowed port only (403 for any
// other, as tinyproxy's ConnectPort), Basic credentials wanted when it has a user (407 without them, as its
// BasicAuth), and a log with one line per request, "request (N): <request line>", whose "): METHOD TARGET" is what
// the tests count, as in tinyproxy's log. Anything but CONNECT gets 501. Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_PROXY_HPP
#define APS_AUTH_TESTS_SUPPORT_PROXY_HPP

#include "aps_auth.hpp"
#include "network.hpp"
#include "platform.hpp"
#include "text.hpp"

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace support {

class TunnelProxy {
 public:
  TunnelProxy(int connect_port, const std::string& user = "", const std::string& password = "")
      : listener_(listen_on("127.0.0.1", 0, 16)),
        connect_port_(connect_port),
        credentials_(user.empty() ? "" : "Basic " + aps::auth::detail::base64(user + ":" + password, /*url=*/false)) {
    accepting_ = std::thread([this] { accept_loop(); });
  }
  ~TunnelProxy() {
    stopping_ = true;
    accepting_.join();
    std::vector<std::thread> connections;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      connections.swap(connections_);
    }
    for (auto& t : connections)
      t.join();
  }
  TunnelProxy(const TunnelProxy&) = delete;
  TunnelProxy& operator=(const TunnelProxy&) = delete;

  int port() const { return listener_.local_port(); }
  std::string url(const std::string& credentials = "") const {
    return "http://" + (credentials.empty() ? "" : credentials + "@") + "127.0.0.1:" + std::to_string(port());
  }
  std::string log() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return log_;
  }
  // Requests whose request line starts with `method_and_target`, e.g. "CONNECT host:443".
  int requests(const std::string& method_and_target) const { return count_of(log(), "): " + method_and_target); }

 private:
  void accept_loop() {
    while (!stopping_) {
      if (!platform::wait_readable(listener_.native(), 100))
        continue;
      auto client = std::make_shared<Socket>(platform::accept_connection(listener_.native()));
      if (!client->valid())
        continue;
      std::lock_guard<std::mutex> lock(mutex_);
      connections_.emplace_back([this, client] { serve(*client); });
    }
  }

  // One connection: its request head, then a tunnel or a refusal.
  void serve(const Socket& client) {
    std::string head;
    if (!read_head(client, head))
      return;
    const std::string request_line = head.substr(0, head.find("\r\n"));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      log_ += "request (" + std::to_string(++count_) + "): " + request_line + "\n";
    }
    const std::size_t sp1 = request_line.find(' '), sp2 = request_line.find(' ', sp1 + 1);
    const std::string method = request_line.substr(0, sp1);
    const std::string target = sp1 == std::string::npos ? "" : request_line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (method != "CONNECT")
      return refuse(client, "501 Not Implemented");
    if (!credentials_.empty() && header_value(head, "proxy-authorization") != credentials_)
      return refuse(client, "407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test proxy\"");
    const std::size_t colon = target.rfind(':');
    const int port = colon == std::string::npos ? 0 : std::atoi(target.c_str() + colon + 1);
    if (port != connect_port_)
      return refuse(client, "403 Forbidden");
    sockaddr_storage ss;
    platform::socklen_type len = 0;
    if (!platform::resolve_address(target.substr(0, colon), port, ss, len))
      return refuse(client, "502 Bad Gateway");
    Socket server(platform::tcp_socket(ss.ss_family));
    if (!server.valid() || !platform::connect_to(server.native(), ss, len))
      return refuse(client, "502 Bad Gateway");
    if (client.send_all("HTTP/1.1 200 Connection established\r\n\r\n"))
      pump(client, server);
  }

  // Up to the blank line (16 KiB at most); false when the client closed or sent too much first.
  bool read_head(const Socket& client, std::string& head) const {
    char buf[1024];
    while (head.find("\r\n\r\n") == std::string::npos) {
      if (stopping_ || head.size() > 16 * 1024)
        return false;
      if (!platform::wait_readable(client.native(), 100))
        continue;
      const long n = platform::receive_some(client.native(), buf, sizeof buf);
      if (n <= 0)
        return false;
      head.append(buf, static_cast<std::size_t>(n));
    }
    return true;  // a CONNECT has no body: what follows the head is the client's first tunnelled bytes, if any
  }

  static std::string header_value(const std::string& head, const std::string& lower_name) {
    for (const std::string& line : split_lines(head)) {
      std::string name = line.substr(0, line.find(':'));
      for (char& c : name)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (name == lower_name && name.size() < line.size())
        return trim(line.substr(name.size() + 1));
    }
    return "";
  }

  static void refuse(const Socket& client, const std::string& status_and_headers) {
    client.send_all("HTTP/1.1 " + status_and_headers + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  }

  // Bytes both ways until either side closes (or the proxy stops).
  void pump(const Socket& client, const Socket& server) const {
    char buf[16 * 1024];
    while (!stopping_) {
      const int ready = platform::wait_readable_either(client.native(), server.native(), 100);
      for (const auto& [from, to, bit] : {std::make_tuple(&client, &server, 1), std::make_tuple(&server, &client, 2)}) {
        if (!(ready & bit))
          continue;
        const long n = platform::receive_some(from->native(), buf, sizeof buf);
        if (n <= 0 || !to->send_all(std::string(buf, static_cast<std::size_t>(n))))
          return;
      }
    }
  }

  Socket listener_;
  int connect_port_;
  std::string credentials_;  // the Proxy-Authorization value wanted; "" when none is
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::string log_;
  int count_ = 0;
  std::vector<std::thread> connections_;
  std::thread accepting_;
};

}  // namespace support

#endif
