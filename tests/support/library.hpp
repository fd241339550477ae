// Helpers over the library under test: the aps::auth::Error a call threw, the query of an authorize URL (decoded
// by the library's own parser). Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_LIBRARY_HPP
#define APS_AUTH_TESTS_SUPPORT_LIBRARY_HPP

#include "aps_auth.hpp"

#include <map>
#include <optional>
#include <string>

namespace support {

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

// True when two tokens hold the same values in every field.
inline bool same_token(const aps::auth::Token& a, const aps::auth::Token& b) {
  return a.access_token == b.access_token && a.token_type == b.token_type && a.refresh_token == b.refresh_token &&
         a.id_token == b.id_token && a.scope == b.scope && a.expires_in == b.expires_in && a.expires_at == b.expires_at;
}

}  // namespace support

#endif
