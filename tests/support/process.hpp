// Child processes of the tests: run a program (argv, exactly the environment given, optional stdin) and capture
// its stdout, stderr and exit status, with a deadline; or start one in the background, then wait for it or kill
// it. Built on platform.hpp. Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_PROCESS_HPP
#define APS_AUTH_TESTS_SUPPORT_PROCESS_HPP

#include "environment.hpp"
#include "platform.hpp"
#include "text.hpp"

#include <chrono>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace support {

using ExitStatus = platform::ExitStatus;

// How a run ended, and what it wrote.
struct RunResult {
  int exit_code = -1;  // -1: killed (timeout), ended by a signal, or did not start
  int signal = 0;      // POSIX: the signal that ended it
  bool timed_out = false;
  std::string out, err;
  double seconds = 0;  // from start to exit
  std::vector<std::string> argv;

  // The command and its outcome, for a failing check's message.
  std::string describe() const {
    return join(argv, " ") + "\n  exit " + std::to_string(exit_code) + (timed_out ? " (killed: timeout)" : "") +
           (signal ? " (signal " + std::to_string(signal) + ")" : "") + "\n  stdout: " + out + "\n  stderr: " + err;
  }
};

// Sees the stderr written so far, after every chunk (e.g. to act on a URL the program printed).
using StderrWatcher = std::function<void(const std::string& err_so_far)>;

// The first of `names` that is an executable: a name with a directory is taken as it is, a bare name is looked
// for in $PATH.
inline std::string find_program(const std::vector<std::string>& names) {
  for (const auto& n : names) {
    if (n.empty())
      continue;
    if (n.find('/') != std::string::npos || n.find('\\') != std::string::npos) {
      if (platform::is_executable(n))
        return n;
      continue;
    }
    std::stringstream path(env_or("PATH", "/usr/local/bin:/usr/bin:/bin"));
    for (std::string dir; std::getline(path, dir, platform::kPathListSeparator);)
      for (const auto& suffix : platform::program_suffixes()) {
        std::string candidate = (dir.empty() ? "." : dir) + platform::kDirSeparator + n + suffix;
        if (platform::is_executable(candidate))
          return candidate;
      }
  }
  return "";
}

// How a Process is connected.
struct ProcessOptions {
  std::optional<std::string> stdin_text;  // nullopt: stdin is the null device
  std::string stdout_file, stderr_file;   // "": a pipe (read by finish()); the same file twice: one file
  bool append = false;                    // to those files, else they are truncated
  bool own_group = false;                 // killed with everything it started (process group / job)
};

// A child process, started when constructed, killed (if still running) when destroyed.
class Process {
 public:
  // Starts argv[0] (a path) with exactly `env`; throws std::runtime_error when it cannot.
  Process(std::vector<std::string> argv, const EnvMap& env, const ProcessOptions& options = ProcessOptions())
      : argv_(std::move(argv)), started_(std::chrono::steady_clock::now()) {
    platform::SpawnRequest req;
    req.argv = argv_;
    req.env = &env;
    req.stdin_pipe = options.stdin_text.has_value();
    req.stdout_path = options.stdout_file;
    req.stderr_path = options.stderr_file;
    req.append = options.append;
    req.own_group = options.own_group;
    std::string error = platform::spawn(req, child_);
    if (!error.empty())
      throw std::runtime_error(error);
    if (options.stdin_text) {
      const std::string text = *options.stdin_text;
      stdin_writer_ = std::thread([this, text] { platform::write_stdin_and_close(child_, text); });
    }
  }
  // Adopts a child started otherwise (platform::fork_child).
  explicit Process(const platform::ChildProcess& child) : started_(std::chrono::steady_clock::now()), child_(child) {}
  ~Process() { kill(); }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // The exit status once the process has ended; nullopt while it runs.
  std::optional<ExitStatus> poll() {
    if (!status_)
      status_ = platform::reap(child_, false);
    return status_;
  }
  bool running() { return !poll(); }

  // Waits up to `timeout` for the process to end.
  std::optional<ExitStatus> wait_for(std::chrono::milliseconds timeout) {
    for (auto until = std::chrono::steady_clock::now() + timeout; !poll();) {
      if (std::chrono::steady_clock::now() >= until)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return status_;
  }

  // Reads its stdout and stderr pipes until they close, and its exit status. At the deadline the process is
  // killed (the result says timed_out) and its pipes get 2 s more to close.
  RunResult finish(std::chrono::milliseconds timeout, const StderrWatcher& on_stderr = {}) {
    RunResult r;
    r.argv = argv_;
    auto sink = [&](platform::Stream s, const char* data, std::size_t n) {
      (s == platform::Stream::out ? r.out : r.err).append(data, n);
      if (s == platform::Stream::err && on_stderr)
        on_stderr(r.err);
    };
    if (!platform::drain(child_, started_ + timeout, sink)) {
      r.timed_out = true;
      platform::terminate(child_);
      platform::drain(child_, std::chrono::steady_clock::now() + std::chrono::seconds(2), sink);
    }
    join_stdin_writer();
    if (!status_)
      status_ = platform::reap(child_, true);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    if (status_ && !r.timed_out) {
      r.exit_code = status_->code;
      r.signal = status_->signal;
    }
    return r;
  }

  // Asks it to stop; kills it when it has not after `grace`.
  void stop(std::chrono::milliseconds grace) {
    if (!running())
      return;
    platform::request_stop(child_);
    if (!wait_for(grace))
      kill();
  }

  // Kills it (with its group, when it has one) and reaps it.
  void kill() {
    if (running()) {
      platform::terminate(child_);
      join_stdin_writer();
      status_ = platform::reap(child_, true);
    }
    join_stdin_writer();
  }

 private:
  void join_stdin_writer() {
    if (stdin_writer_.joinable())
      stdin_writer_.join();
  }

  std::vector<std::string> argv_;
  std::chrono::steady_clock::time_point started_;
  platform::ChildProcess child_;
  std::optional<ExitStatus> status_;
  std::thread stdin_writer_;
};

// Runs argv with exactly `env` as its environment, stdin from `stdin_text` (else the null device), stdout and
// stderr captured apart; killed after `timeout`. A program that cannot start gives exit_code -1 and the reason
// in err.
inline RunResult run(const std::vector<std::string>& argv, const EnvMap& env, std::chrono::milliseconds timeout,
                     const StderrWatcher& on_stderr = {}, const std::optional<std::string>& stdin_text = {}) {
  try {
    ProcessOptions options;
    options.stdin_text = stdin_text;
    Process p(argv, env, options);
    return p.finish(timeout, on_stderr);
  } catch (const std::runtime_error& e) {
    RunResult r;
    r.argv = argv;
    r.err = e.what();
    return r;
  }
}

}  // namespace support

#endif
