// bench_mock_server: the mock APS server (examples/mock_aps_server.hpp) as a process of its own, for bench/run
// to time `aps-auth` and `curl` against it over HTTPS on loopback. Not a Google Benchmark program: the CMake glob
// of bench/*.cpp builds it as bench_mock_server, and the benchmark library it links goes unused.
//
//   bench_mock_server DIR REFRESH_TOKENS
//
// Writes into DIR, then creates DIR/ready and serves until SIGTERM or SIGINT:
//   ca.pem          the run-time test CA (EC P-256) that signed the server's certificate for localhost
//   base_url        https://localhost:PORT
//   callback_port   a free loopback port, registered as http://127.0.0.1:PORT/callback for `aps-auth login`
//   floor_port      the port of http://127.0.0.1:PORT/callback, served here (plain HTTP) for the curl-only
//                   floor of a login: it answers the code as a short text body
//   refresh_tokens  REFRESH_TOKENS valid refresh tokens, one a line. Refresh tokens rotate (each one works
//                   once), so every timed refresh, aps-auth's or curl's, takes a new one from this pool.
// The client is bench-client / bench-secret. Consent is approved at once (the authorize request redirects
// straight to the callback, as APS does for an app the user already allowed).
// On exit it writes DIR/requests.json: the headers and form parameter names of every token request, so that
// bench/run can show that aps-auth and curl sent the same request.
#include "examples/mock_aps_server.hpp"

#include <dirent.h>
#include <netinet/tcp.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

namespace {

// TCP_NODELAY on the mock's listening socket (Linux: accepted sockets inherit it). httplib's server leaves
// Nagle's algorithm on (CPPHTTPLIB_TCP_NODELAY is false by default) and writes an answer in pieces, so a client
// that sent its request in one segment and delays its ACK (curl does) waited ~40 ms for the rest of the answer:
// the floor measured with curl was that stall. A real token endpoint answers without it. The mock does not
// expose its socket: find it among this process's descriptors by its port.
bool set_nodelay_on_listener(int port) {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d)
    return false;
  bool done = false;
  while (dirent* e = ::readdir(d)) {
    int fd = std::atoi(e->d_name);
    sockaddr_in a{};
    socklen_t len = sizeof a;
    int listening = 0;
    socklen_t ilen = sizeof listening;
    if (fd > 2 && ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0 && a.sin_family == AF_INET &&
        ntohs(a.sin_port) == port && ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ilen) == 0 && listening) {
      int one = 1;
      done = ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0;
    }
  }
  ::closedir(d);
  return done;
}

// A loopback port that is free now (the kernel picks it; aps-auth login binds it later).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    ::close(fd);
  return port;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text << '\n';
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DIR REFRESH_TOKENS\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const int pool = std::atoi(argv[2]);

  // The signals are taken by sigwait below; blocked before any thread starts, so that no other thread gets them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  httplib::Server floor_callback;  // the floor's stand-in for aps-auth's loopback listener
  floor_callback.set_tcp_nodelay(true);
  floor_callback.Get("/callback", [](const httplib::Request& q, httplib::Response& r) {
    r.set_header("Cache-Control", "no-store");
    r.set_content(q.get_param_value("code"), "text/plain");
  });
  const int floor_port = floor_callback.bind_to_any_port("127.0.0.1");
  const int callback_port = free_port();
  if (floor_port <= 0 || callback_port <= 0) {
    std::fprintf(stderr, "bench_mock_server: no free loopback port\n");
    return 1;
  }

  aps_mock::Options o;
  o.tls = true;
  o.pki = aps_mock::Pki::generate("localhost");
  o.clients = {{"bench-client",
                "bench-secret",
                {"http://127.0.0.1:" + std::to_string(callback_port) + "/callback",
                 "http://127.0.0.1:" + std::to_string(floor_port) + "/callback"}}};
  o.consent = aps_mock::Consent::auto_approve;
  o.pki->write(dir);
  aps_mock::Server server(o);
  if (!set_nodelay_on_listener(server.port())) {
    std::fprintf(stderr, "bench_mock_server: cannot set TCP_NODELAY on the mock's listening socket\n");
    return 1;
  }
  std::thread floor_thread([&] { floor_callback.listen_after_bind(); });

  write_file(dir + "/base_url", server.base_url());
  write_file(dir + "/callback_port", std::to_string(callback_port));
  write_file(dir + "/floor_port", std::to_string(floor_port));
  {
    std::ofstream tokens(dir + "/refresh_tokens");
    for (int i = 0; i < pool; ++i)
      tokens << server.issue_tokens("bench-client", "data:read")["refresh_token"].get<std::string>() << '\n';
  }
  while (!floor_callback.is_running())
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  write_file(dir + "/ready", "ready");

  int sig = 0;
  sigwait(&signals, &sig);

  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : server.requests()) {
    if (r.path != "/authentication/v2/token")
      continue;
    nlohmann::json headers = nlohmann::json::object(), params = nlohmann::json::array();
    for (const auto& h : r.headers)
      if (h.first != "REMOTE_ADDR" && h.first != "REMOTE_PORT" && h.first != "LOCAL_ADDR" && h.first != "LOCAL_PORT")
        headers[aps_mock::detail::lower(h.first)] = h.second;
    for (const auto& p : r.form)
      params.push_back(p.first);
    out.push_back({{"grant_type", r.param("grant_type")}, {"headers", headers}, {"params", params}});
  }
  write_file(dir + "/requests.json", out.dump());
  floor_callback.stop();
  floor_thread.join();
  server.stop();
  return 0;
}
