// Helpers over the library under test: the aps::auth::Error a call threw, the query of an authorize URL (decoded
// by the library's own parser), checks of Endpoints and Token values. Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_LIBRARY_HPP
#define APS_AUTH_TESTS_SUPPORT_LIBRARY_HPP

#include <doctest/doctest.h>

#include "aps_auth.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <utility>

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

// Runs f, which must throw an aps::auth::Error (the test stops here when it does not), and returns that Error.
template <class F>
aps::auth::Error require_error(F&& f) {
  std::optional<aps::auth::Error> e = catch_error(std::forward<F>(f));
  REQUIRE_MESSAGE(e.has_value(), "no aps::auth::Error was thrown");
  return *e;
}

// Multimap of the decoded query parameters of an absolute URL (decoded once, by the library's own parser).
inline std::multimap<std::string, std::string> query_of(const std::string& url) {
  std::multimap<std::string, std::string> out;
  auto u = aps::auth::detail::parse_url(url);
  if (!u)
    return out;
  auto params = aps::auth::detail::parse_query(u->query);
  if (!params)
    return out;
  for (auto& [k, v] : *params)
    out.emplace(k, v);
  return out;
}

// The single value of a query parameter; "<missing>" / "<duplicate>" otherwise.
inline std::string param(const std::multimap<std::string, std::string>& q, const std::string& name) {
  auto n = q.count(name);
  if (n == 0)
    return "<missing>";
  if (n > 1)
    return "<duplicate>";
  return q.find(name)->second;
}

// The issuer is `base`, every endpoint but userinfo its APS path under `base`.
inline void check_aps_layout(const aps::auth::Endpoints& e, const std::string& base, const std::string& userinfo) {
  CHECK(e.issuer == base);
  CHECK(e.authorize == base + "/authentication/v2/authorize");
  CHECK(e.token == base + "/authentication/v2/token");
  CHECK(e.revoke == base + "/authentication/v2/revoke");
  CHECK(e.introspect == base + "/authentication/v2/introspect");
  CHECK(e.jwks == base + "/authentication/v2/keys");
  CHECK(e.logout == base + "/authentication/v2/logout");
  CHECK(e.userinfo == userinfo);
}

// A token with every field set, the expiry an absolute time far from now (2030-01-01).
inline aps::auth::Token token_with_every_field() {
  aps::auth::Token t;
  t.access_token = "at.ABC-123";
  t.token_type = "Bearer";
  t.refresh_token = "rt.XYZ";
  t.id_token = "eyJ.id.token";
  t.scope = "data:read openid";
  t.expires_in = std::chrono::seconds(3599);
  t.expires_at = std::chrono::system_clock::time_point(std::chrono::seconds(1893456000));
  t.refresh_token_obtained_at = std::chrono::system_clock::time_point(std::chrono::seconds(1893450000));
  return t;
}

// `actual` holds `expected`'s value in every field (the expiry absolute: not recomputed from expires_in).
inline void check_same_token(const aps::auth::Token& actual, const aps::auth::Token& expected) {
  CHECK(actual.access_token == expected.access_token);
  CHECK(actual.token_type == expected.token_type);
  CHECK(actual.refresh_token == expected.refresh_token);
  CHECK(actual.id_token == expected.id_token);
  CHECK(actual.scope == expected.scope);
  CHECK(actual.expires_in == expected.expires_in);
  CHECK(actual.expires_at == expected.expires_at);
  CHECK(actual.refresh_token_obtained_at == expected.refresh_token_obtained_at);
}

}  // namespace support

#endif
