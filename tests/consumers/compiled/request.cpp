// A second file using the API in compiled mode: declarations only.
#include "aps_auth.hpp"

#include <string>

#if defined(CPPHTTPLIB_HTTPLIB_H) || defined(INCLUDE_NLOHMANN_JSON_HPP_) || defined(OPENSSL_VERSION_NUMBER)
#error "APS_AUTH_HEADER_ONLY=0: aps_auth.hpp must not include httplib.h, nlohmann/json or OpenSSL"
#endif

std::string consumer_authorize_url(const std::string& client_id) {
  aps::auth::Config config;
  config.client_id = client_id;
  config.scopes = {"data:read", "openid"};
  const aps::auth::AuthorizationRequest request = aps::auth::authorization_request(config);
  return request.nonce.empty() ? std::string() : request.url;
}

std::string consumer_pkce_challenge(const std::string& verifier) {
  return aps::auth::pkce_challenge(verifier);
}
