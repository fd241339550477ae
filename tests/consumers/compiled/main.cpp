// Compiled mode: main.cpp, request.cpp and aps_auth_impl.cpp linked into one program.
#include "aps_auth.hpp"

#include <cstdio>
#include <string>

#if defined(CPPHTTPLIB_HTTPLIB_H) || defined(INCLUDE_NLOHMANN_JSON_HPP_) || defined(OPENSSL_VERSION_NUMBER)
#error "APS_AUTH_HEADER_ONLY=0: aps_auth.hpp must not include httplib.h, nlohmann/json or OpenSSL"
#endif
#if APS_AUTH_HEADER_ONLY
#error "this program must be compiled with APS_AUTH_HEADER_ONLY=0"
#endif

std::string consumer_authorize_url(const std::string& client_id);  // request.cpp
std::string consumer_pkce_challenge(const std::string& verifier);  // request.cpp

int main() {
  int failures = 0;
  const std::string challenge = consumer_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
  if (challenge != "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM") {
    std::fprintf(stderr, "FAIL pkce_challenge: %s\n", challenge.c_str());
    ++failures;
  }
  if (aps::auth::pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") != challenge) {
    std::fprintf(stderr, "FAIL pkce_challenge differs between main.cpp and request.cpp\n");
    ++failures;
  }
  const std::string url = consumer_authorize_url("consumer-test");
  if (url.rfind(aps::auth::Endpoints{}.authorize + "?", 0) != 0 || url.find("nonce=") == std::string::npos) {
    std::fprintf(stderr, "FAIL authorization URL: %s\n", url.c_str());
    ++failures;
  }
  if (failures != 0)
    return 1;
  std::printf("aps_auth %s (compiled mode): ok\n", aps::auth::version().c_str());
  return 0;
}
