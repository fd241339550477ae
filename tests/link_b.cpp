// Link test, translation unit B (see link_main.cpp): the same header, the same
// functions, a second translation unit.
#include "aps_auth.hpp"

#include <string>

#if defined(APS_AUTH_LINK_COMPILED)
// In compiled mode the declaration part needs only standard headers.
#if defined(CPPHTTPLIB_HTTPLIB_H)
#error "aps_auth.hpp with APS_AUTH_HEADER_ONLY=0 must not include httplib.h outside the implementation"
#endif
#if defined(INCLUDE_NLOHMANN_JSON_HPP_) || defined(NLOHMANN_JSON_HPP)
#error "aps_auth.hpp with APS_AUTH_HEADER_ONLY=0 must not include nlohmann/json.hpp outside the implementation"
#endif
#endif

namespace link_test {

std::string b_pkce_challenge() {
  return aps::auth::pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
}

std::string b_version() {
  return aps::auth::version();
}

}  // namespace link_test
