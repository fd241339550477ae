// Small helpers shared by the aps_auth doctest suites (not part of the library).
#ifndef APS_AUTH_TESTS_SUPPORT_TEST_UTIL_HPP
#define APS_AUTH_TESTS_SUPPORT_TEST_UTIL_HPP

#include "aps_auth.hpp"

#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace test_util {

// Runs f and returns the aps::auth::Error it threw, or nullopt when it threw nothing. Other exceptions escape
// (doctest then reports them).
template <class F>
std::optional<aps::auth::Error> catch_error(F&& f) {
  try {
    f();
  } catch (const aps::auth::Error& e) {
    return e;
  }
  return std::nullopt;
}

// Multimap of the decoded query parameters of an absolute URL (decoded once, by the library's own parser).
inline std::multimap<std::string, std::string> query_of(const std::string& url) {
  std::multimap<std::string, std::string> out;
  auto u = aps::auth::detail::parse_url(url);
  if (!u) return out;
  auto params = aps::auth::detail::parse_query(u->query);
  if (!params) return out;
  for (auto& [k, v] : *params) out.emplace(k, v);
  return out;
}

// The single value of a query parameter; "<missing>" / "<duplicate>" otherwise.
inline std::string param(const std::multimap<std::string, std::string>& q, const std::string& name) {
  auto n = q.count(name);
  if (n == 0) return "<missing>";
  if (n > 1) return "<duplicate>";
  return q.find(name)->second;
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

inline bool only_base64url_chars(const std::string& s) {
  for (char c : s)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
      return false;
  return true;
}

// Sets (or with nullptr unsets) an environment variable for the lifetime of the object, then restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = std::string(old);
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_.c_str(), old_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace test_util

#endif
