// Text helpers of the tests: searching, counting, trimming, splitting. Portable C++ only. Not part of the
// library.
#ifndef APS_AUTH_TESTS_SUPPORT_TEXT_HPP
#define APS_AUTH_TESTS_SUPPORT_TEXT_HPP

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string>
#include <vector>

namespace support {

// True when `needle` occurs in `haystack` (an empty needle occurs everywhere).
inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// How many times `needle` (not empty) starts in `haystack`, overlaps included.
inline int count_of(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (std::size_t p = haystack.find(needle); !needle.empty() && p != std::string::npos;
       p = haystack.find(needle, p + 1))
    ++n;
  return n;
}

inline bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

inline std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Without the spaces and line ends at both ends.
inline std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
    s.pop_back();
  std::size_t b = 0;
  while (b < s.size() && (s[b] == '\n' || s[b] == '\r' || s[b] == ' '))
    ++b;
  return s.substr(b);
}

// The lines of `s`, without their '\n' (a last line without one counts too).
inline std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  for (std::size_t pos = 0; pos < s.size();) {
    std::size_t nl = s.find('\n', pos);
    if (nl == std::string::npos)
      nl = s.size();
    out.push_back(s.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

// The strings joined with `separator`.
inline std::string join(const std::vector<std::string>& parts, const std::string& separator) {
  std::string out;
  for (const auto& p : parts)
    out += (out.empty() ? "" : separator) + p;
  return out;
}

inline bool only_base64url_chars(const std::string& s) {
  for (char c : s)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
      return false;
  return true;
}

// A file mode as four octal digits ("0600").
inline std::string mode_text(int mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode));
  return buf;
}

}  // namespace support

#endif
