// Link test, translation unit A (see link_main.cpp).
// In the compiled variant (APS_AUTH_HEADER_ONLY=0 + APS_AUTH_LINK_COMPILED) this
// is the one translation unit of the program that compiles the implementation.
#if defined(APS_AUTH_LINK_COMPILED)
#define APS_AUTH_IMPLEMENTATION
#endif
#include "aps_auth.hpp"

#include <string>

namespace link_test {

std::string a_pkce_challenge() {
  return aps::auth::pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
}

std::string a_version() {
  return aps::auth::version();
}

}  // namespace link_test
