// Refresh: trade a refresh token for a new access token. APS refresh tokens are single-use and
// rotate: the old one dies, so store the new token.refresh_token before you use the access token.
//   APS_CLIENT_ID=... [APS_CLIENT_SECRET=...] APS_REFRESH_TOKEN=... ./example_refresh_token
// APS_BASE_URL points it at another server (a proxy, a mock); APS_CA_FILE adds a trusted CA.
#include "aps_auth.hpp"
#include "example_env.hpp"

#include <iostream>

int main() try {
  aps::auth::Config config = example::config_from_env();  // no secret: a public client
  std::string refresh_token = example::env("APS_REFRESH_TOKEN");
  if (config.client_id.empty() || refresh_token.empty()) {
    std::cerr << "set APS_CLIENT_ID and APS_REFRESH_TOKEN (and APS_CLIENT_SECRET for a "
                 "confidential app)\n";
    return 2;
  }
  aps::auth::Token token = aps::auth::refresh(config, refresh_token);
  std::cout << token.to_json() << "\n";  // save it now: it holds the new refresh token
} catch (const aps::auth::Error& e) {
  std::cerr << e.what() << "\n";  // invalid_grant: the refresh token was used, revoked or expired
  return 1;
}
