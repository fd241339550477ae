// Helpers of the hardening suites (test_faults.cpp, test_proxy.cpp, test_secrets.cpp, test_iss.cpp): a private
// temporary directory, free ports, a listener whose backlog is full (connect() hangs there: the connect timeout
// fires), a child process with its own environment and captured stdout/stderr, and a real HTTP proxy
// (Debian's tinyproxy) started on loopback. Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_FAULTS_SUPPORT_HPP
#define APS_AUTH_TESTS_SUPPORT_FAULTS_SUPPORT_HPP

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace faults {

inline std::string getenv_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

inline bool contains(const std::string& hay, const std::string& needle) {
  return !needle.empty() && hay.find(needle) != std::string::npos;
}

inline int count_of(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (std::size_t p = hay.find(needle); !needle.empty() && p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

// A private temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string base = getenv_str("TMPDIR");
    if (base.empty()) base = "/tmp";
    std::string tmpl = base + "/aps_auth_faults_XXXXXX";
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
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::string write(const std::string& name, const std::string& text, mode_t mode = 0600) const {
    std::string p = file(name);
    {
      std::ofstream f(p, std::ios::binary | std::ios::trunc);
      f << text;
    }
    ::chmod(p.c_str(), mode);
    return p;
  }

 private:
  std::string path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A loopback port nothing listens on right now (bound, read, released).
inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) ::close(fd);
  return port;
}

// True when something accepts TCP connections on 127.0.0.1:port.
inline bool accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// A listener with a backlog of 0 that never accepts, its one queue slot taken by a connection of its own: the
// kernel then drops every further SYN, so a client's connect() hangs until its connect timeout fires.
class FullBacklog {
 public:
  FullBacklog() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_fd_, 0) != 0 || ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("FullBacklog: cannot listen");
    port_ = ntohs(a.sin_port);
    filler_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (filler_ < 0 || ::connect(filler_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error("FullBacklog: cannot fill the backlog");
  }
  ~FullBacklog() {
    if (filler_ >= 0) ::close(filler_);
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }
  FullBacklog(const FullBacklog&) = delete;
  FullBacklog& operator=(const FullBacklog&) = delete;
  int port() const { return port_; }

 private:
  int listen_fd_ = -1, filler_ = -1, port_ = 0;
};

// ---- child processes ---------------------------------------------------------------------------------------

struct Run {
  int exit_code = -1;  // -1: killed (timeout) or did not start
  bool timed_out = false;
  std::string out, err;
  std::vector<std::string> args;

  std::string describe() const {
    std::string cmd;
    for (const auto& a : args) cmd += (cmd.empty() ? "" : " ") + a;
    return cmd + "\n  exit " + std::to_string(exit_code) + (timed_out ? " (killed: timeout)" : "") +
           "\n  stdout: " + out + "\n  stderr: " + err;
  }
};

using EnvMap = std::map<std::string, std::string>;

// Runs argv with exactly `env` as its environment, stdin from /dev/null, stdout and stderr captured apart.
// Killed after `timeout`.
inline Run run_process(const std::vector<std::string>& argv, const EnvMap& env, std::chrono::milliseconds timeout) {
  Run r;
  r.args = argv;
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return r;
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return r;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  std::vector<std::string> env_strings;
  for (const auto& kv : env) env_strings.push_back(kv.first + "=" + kv.second);
  std::vector<char*> c_argv, c_env;
  for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  for (auto& e : env_strings) c_env.push_back(const_cast<char*>(e.c_str()));
  c_env.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, c_argv[0], &actions, nullptr, c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    r.err = std::string("posix_spawn failed: ") + std::strerror(rc);
    return r;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int fds[2] = {out_pipe[0], err_pipe[0]};
  bool open_fd[2] = {true, true};
  while (open_fd[0] || open_fd[1]) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      if (!r.timed_out) ::kill(pid, SIGKILL);
      r.timed_out = true;
      left = std::chrono::milliseconds(2000);
    }
    pollfd p[2];
    nfds_t n = 0;
    int which[2] = {0, 0};
    for (int i = 0; i < 2; ++i)
      if (open_fd[i]) {
        p[n] = {fds[i], POLLIN, 0};
        which[n++] = i;
      }
    int ready = ::poll(p, n, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (r.timed_out && ready == 0) break;
    for (nfds_t k = 0; k < n; ++k) {
      if (!p[k].revents) continue;
      char buf[8192];
      ssize_t got = ::read(p[k].fd, buf, sizeof buf);
      if (got > 0)
        (which[k] == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(got));
      else if (got == 0 || errno != EINTR)
        open_fd[which[k]] = false;
    }
  }
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!r.timed_out && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

// A minimal environment for a child: PATH, HOME and TMPDIR of this process, nothing else (no proxy variables,
// no APS_* settings, no SSL_CERT_* of the host).
inline EnvMap base_env(const std::string& home) {
  EnvMap e;
  e["PATH"] = getenv_str("PATH").empty() ? "/usr/bin:/bin" : getenv_str("PATH");
  e["HOME"] = home;
  e["XDG_STATE_HOME"] = home + "/state";
  if (!getenv_str("TMPDIR").empty()) e["TMPDIR"] = getenv_str("TMPDIR");
  return e;
}

// ---- tinyproxy ---------------------------------------------------------------------------------------------

// Where tinyproxy is, or "" when it is not installed.
inline std::string tinyproxy_path() {
  for (const char* p : {"/usr/bin/tinyproxy", "/usr/sbin/tinyproxy", "/usr/local/bin/tinyproxy"})
    if (::access(p, X_OK) == 0) return p;
  std::string path = getenv_str("PATH");
  std::stringstream ss(path);
  for (std::string dir; std::getline(ss, dir, ':');)
    if (!dir.empty() && ::access((dir + "/tinyproxy").c_str(), X_OK) == 0) return dir + "/tinyproxy";
  return "";
}

// A real HTTP proxy on 127.0.0.1, in the foreground, logging every request (CONNECT included) to a file.
// Tunnels (CONNECT) only to `connect_port`; with a user, it wants Basic credentials (BasicAuth).
class Tinyproxy {
 public:
  Tinyproxy(const TempDir& dir, int connect_port, const std::string& user = "", const std::string& password = "")
      : log_(dir.file("tinyproxy.log")) {
    const std::string exe = tinyproxy_path();
    if (exe.empty()) throw std::runtime_error("tinyproxy is not installed: run scripts/install-deps --test");
    for (int attempt = 0; attempt < 5 && pid_ < 0; ++attempt) {
      port_ = free_port();  // tinyproxy has no "Port 0"
      std::string conf = "Port " + std::to_string(port_) +
                         "\nListen 127.0.0.1\nTimeout 10\nLogLevel Connect\nMaxClients 50\nAllow 127.0.0.1\n"
                         "ConnectPort " + std::to_string(connect_port) + "\n";
      if (!user.empty()) conf += "BasicAuth " + user + " " + password + "\n";
      const std::string conf_path = dir.write("tinyproxy.conf", conf);
      posix_spawn_file_actions_t actions;
      posix_spawn_file_actions_init(&actions);
      posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
      posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      posix_spawn_file_actions_adddup2(&actions, 1, 2);
      std::vector<std::string> args = {exe, "-d", "-c", conf_path};
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      char* envp[] = {nullptr};
      pid_t pid = -1;
      int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), envp);
      posix_spawn_file_actions_destroy(&actions);
      if (rc != 0) throw std::runtime_error("cannot start tinyproxy: " + std::string(std::strerror(rc)));
      // Wait until it accepts (or gave up, e.g. the port was taken meanwhile: then try another port).
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      bool exited = false;
      while (std::chrono::steady_clock::now() < until) {
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid) {
          exited = true;
          break;
        }
        if (accepts(port_)) {
          pid_ = pid;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (pid_ < 0 && !exited) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
    if (pid_ < 0) throw std::runtime_error("tinyproxy did not start; its log:\n" + read_file(log_));
  }
  ~Tinyproxy() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
      while (::waitpid(pid_, nullptr, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > until) {
          ::kill(pid_, SIGKILL);
          ::waitpid(pid_, nullptr, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }
  Tinyproxy(const Tinyproxy&) = delete;
  Tinyproxy& operator=(const Tinyproxy&) = delete;

  int port() const { return port_; }
  std::string url(const std::string& credentials = "") const {
    return "http://" + (credentials.empty() ? "" : credentials + "@") + "127.0.0.1:" + std::to_string(port_);
  }
  std::string log() const { return read_file(log_); }
  // Requests the proxy logged whose request line starts with `method_and_target`, e.g. "CONNECT 127.0.0.1:443".
  int requests(const std::string& method_and_target) const { return count_of(log(), "): " + method_and_target); }

 private:
  std::string log_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace faults

#endif
