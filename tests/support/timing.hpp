// Measuring and lining up in time: seconds since a moment, the Unix time, and a start line for threads. Portable C++
// only. Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_TIMING_HPP
#define APS_AUTH_TESTS_SUPPORT_TIMING_HPP

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace support {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Now, in seconds since 1970 (as JWT claims and token files count).
inline std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A start line for threads (a std::latch, in C++17, that also hands out the start time): each worker calls
// arrive_and_wait(); the test waits until all of them are there (wait_all_arrived()), prepares what depends on
// the start time, then open()s the line, and every worker gets the same start time at once.
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

}  // namespace support

#endif
