// Helpers shared by the aps_auth libFuzzer targets (fuzz/<name>.cpp). Not part of the library.
#ifndef APS_AUTH_FUZZ_UTIL_HPP
#define APS_AUTH_FUZZ_UTIL_HPP

#include "aps_auth.hpp"

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

namespace fuzz_util {

// An invariant of the library: a violation is a crash libFuzzer records (with the input).
[[noreturn]] inline void fail(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "INVARIANT VIOLATED: %s\n", what);
  if (!detail.empty())
    std::fprintf(stderr, "  detail: %.*s\n", static_cast<int>(detail.size() > 2000 ? 2000 : detail.size()),
                 detail.data());
  std::abort();
}

inline void require(bool ok, const char* what, std::string_view detail = {}) {
  if (!ok)
    fail(what, detail);
}

inline bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

inline bool contains_nocase(std::string_view haystack, std::string_view needle) {
  if (needle.empty())
    return true;
  if (haystack.size() < needle.size())
    return false;
  for (std::size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    std::size_t k = 0;
    while (k < needle.size() && std::tolower(static_cast<unsigned char>(haystack[i + k])) ==
                                    std::tolower(static_cast<unsigned char>(needle[k])))
      ++k;
    if (k == needle.size())
      return true;
  }
  return false;
}

// Exception messages go to logs and terminals: no control characters (log/terminal injection).
inline bool printable(std::string_view s) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f)
      return false;
  }
  return true;
}

// Every aps::auth::Error keeps the stable "[aps_auth.<kind>] " prefix and a printable message.
inline void check_error(const aps::auth::Error& e) {
  std::string_view w = e.what();
  require(w.rfind("[aps_auth.", 0) == 0, "Error::what() lacks the [aps_auth.<kind>] prefix", w);
  require(contains(w, std::string("[aps_auth.") + aps::auth::to_string(e.kind()) + "] "),
          "Error::what() prefix does not name its kind", w);
  require(printable(w), "Error::what() contains control characters", w);
}

// The fuzzer's input as text.
inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// The prelude of the targets that feed a JSON answer to a parser: the JSON object `body` holds, parsed as the
// library parses every answer (detail::parse_json_object); nullopt when it is not one. parse_json_object never
// throws: an exception is an invariant violation.
inline std::optional<aps::auth::detail::json> json_object(std::string_view body) {
  try {
    return aps::auth::detail::parse_json_object(body);
  } catch (const std::exception& e) {
    fail("parse_json_object threw", e.what());
  }
}

// The JSON a parser kept (Introspection::json, UserInfo::json, ...) parses back to the document it came from.
inline void require_kept_json(const std::string& kept, const aps::auth::detail::json& document) {
  auto back = aps::auth::detail::parse_json_object(kept);
  require(back.has_value() && *back == document, "the kept JSON is not the document", kept);
}

// Runs f; true when it returned. An aps::auth::Error is checked and gives false; any other exception is an
// invariant violation (the library promises one exception type).
template <class F>
bool only_error(F&& f, aps::auth::Error* caught = nullptr) {
  try {
    f();
    return true;
  } catch (const aps::auth::Error& e) {
    check_error(e);
    if (caught)
      *caught = e;
    return false;
  } catch (const std::exception& e) {
    fail("an exception other than aps::auth::Error escaped", e.what());
  } catch (...) {
    fail("a non-std exception escaped");
  }
}

}  // namespace fuzz_util

#endif
