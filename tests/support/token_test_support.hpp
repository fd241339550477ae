// Helpers for tests/test_token_source.cpp (not part of the library): scratch directories, a scoped umask, a
// start gate for threads, child processes (fork, and posix_spawn of the CLI) with their output on a pipe, and
// small file queries. POSIX only.
#ifndef APS_AUTH_TESTS_SUPPORT_TOKEN_TEST_SUPPORT_HPP
#define APS_AUTH_TESTS_SUPPORT_TOKEN_TEST_SUPPORT_HPP

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace token_test {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it (permissions restored first).
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/aps_auth_token_test.XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
    path_ = buf.data();
  }
  ~TempDir() { remove_tree(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

  static void remove_tree(const std::string& p) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
      ::chmod(p.c_str(), 0700);
      if (DIR* d = ::opendir(p.c_str())) {
        std::vector<std::string> names;
        while (dirent* e = ::readdir(d)) {
          std::string n = e->d_name;
          if (n != "." && n != "..") names.push_back(n);
        }
        ::closedir(d);
        for (const auto& n : names) remove_tree(p + "/" + n);
      }
      ::rmdir(p.c_str());
    } else {
      ::unlink(p.c_str());
    }
  }

 private:
  std::string path_;
};

// Sets the process umask for the lifetime of the object, then restores the previous one.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : old_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(old_); }
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t old_;
};

// A start line for threads (a std::latch, in C++17, that also hands out the start time): each worker calls
// arrive_and_wait(); the test waits until all of them are there (wait_all_arrived()), prepares what depends
// on the start time, then open()s the line, and every worker gets the same start time at once.
class StartLine {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  explicit StartLine(int parties) : parties_(parties) {}
  time_point arrive_and_wait() {
    std::unique_lock<std::mutex> lk(m_);
    ++arrived_;
    cv_.notify_all();
    cv_.wait(lk, [this] { return open_; });
    return start_;
  }
  void wait_all_arrived() {
    std::unique_lock<std::mutex> lk(m_);
    cv_.wait(lk, [this] { return arrived_ >= parties_; });
  }
  void open(time_point start) {
    std::lock_guard<std::mutex> lk(m_);
    start_ = start;
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int parties_, arrived_ = 0;
  bool open_ = false;
  time_point start_{};
};

// Permission bits of a path (-1 when it does not exist).
inline int mode_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

inline bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Names in a directory that start with `prefix`.
inline std::vector<std::string> list_dir(const std::string& dir, const std::string& prefix = "") {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != ".." && n.compare(0, prefix.size(), prefix) == 0) out.push_back(n);
    }
    ::closedir(d);
  }
  return out;
}

// The whole content of a file; nullopt when it cannot be opened.
inline std::optional<std::string> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

// Writes a file with exactly `mode` (whatever the umask), replacing it.
inline void write_file(const std::string& path, const std::string& text, mode_t mode) {
  ::unlink(path.c_str());
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  std::size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  ::fchmod(fd, mode);
  ::close(fd);
}

// Writes all of `s` to fd (in a child: async-signal-safe enough, no allocation).
inline void write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}
inline void write_all(int fd, const std::string& s) { write_all(fd, s.data(), s.size()); }

// Reads fd to its end.
inline std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

inline std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  std::size_t b = 0;
  while (b < s.size() && (s[b] == '\n' || s[b] == '\r' || s[b] == ' ')) ++b;
  return s.substr(b);
}

// A started child process whose stdout (and, for spawn(), stderr separately) is a pipe to us.
struct Child {
  pid_t pid = -1;
  int out_fd = -1;  // its stdout
  int err_fd = -1;  // its stderr (spawn() only)
};

struct Finished {
  int exit_code = -1;  // -1: killed by a signal (see signal)
  int signal = 0;
  std::string out, err;
};

inline Finished finish(Child& c) {
  Finished f;
  if (c.out_fd >= 0) {
    f.out = read_all(c.out_fd);
    ::close(c.out_fd);
    c.out_fd = -1;
  }
  if (c.err_fd >= 0) {
    f.err = read_all(c.err_fd);
    ::close(c.err_fd);
    c.err_fd = -1;
  }
  int status = 0;
  while (::waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) f.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) f.signal = WTERMSIG(status);
  return f;
}

// Starts argv[0] (a path) with argv, without a shell; stdout and stderr are read by finish().
// stderr is drained only after stdout ends, so keep the child's stderr small (a pipe holds 64 KiB).
inline Child spawn(const std::vector<std::string>& argv) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe failed: " + std::string(std::strerror(errno)));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  Child c;
  int rc = ::posix_spawn(&c.pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  ::close(err[1]);
  if (rc != 0) {
    ::close(out[0]);
    ::close(err[0]);
    throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  }
  c.out_fd = out[0];
  c.err_fd = err[0];
  return c;
}

// fork() while other threads run (the mock server's) can deadlock the child inside the ASan/TSan allocator
// (seen with clang 14: 1 run in ~24). The tests that fork with a mock running are therefore run by the plain
// g++/clang++ stages only; fork() without threads (the SIGKILL loop) runs everywhere.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// Forks a child that runs body(write_fd) and then _exit()s with its return value (1 if it throws). What the
// child writes to write_fd is read by finish(). The child must not start threads, and must not return into
// the test framework: body's return value is its exit code.
template <class Body>
Child fork_child(Body&& body) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed: " + std::string(std::strerror(errno)));
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed: " + std::string(std::strerror(errno)));
  if (pid == 0) {
    ::close(p[0]);
    int code = 1;
    try {
      code = body(p[1]);
    } catch (const std::exception& e) {
      write_all(p[1], std::string("EXCEPTION: ") + e.what());
    } catch (...) {
      write_all(p[1], "EXCEPTION: unknown");
    }
    ::_exit(code);
  }
  ::close(p[1]);
  Child c;
  c.pid = pid;
  c.out_fd = p[0];
  return c;
}

}  // namespace token_test

#endif
