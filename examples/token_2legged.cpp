// 2-legged token (client credentials): for the app's own data, no user involved.
//   APS_CLIENT_ID=... APS_CLIENT_SECRET=... [APS_SCOPES="data:read bucket:read"]
//   ./example_token_2legged
// APS_BASE_URL points it at another server (a proxy, a mock); APS_CA_FILE adds a trusted CA.
#include "aps_auth.hpp"

#include <cstdlib>
#include <iostream>
#include <sstream>

static std::string env(const char* name, const char* fallback = "") {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

int main() try {
  aps::auth::Config config;
  config.client_id = env("APS_CLIENT_ID");
  config.client_secret = env("APS_CLIENT_SECRET");
  if (!env("APS_BASE_URL").empty())
    config.endpoints = aps::auth::Endpoints::from_base_url(env("APS_BASE_URL"));
  std::istringstream scopes(env("APS_SCOPES", "data:read"));
  config.scopes.clear();
  for (std::string s; scopes >> s;)
    config.scopes.push_back(s);

  aps::auth::Token token = aps::auth::client_credentials(config);
  // Send it as "Authorization: Bearer <access_token>"; get a new one when
  // token.expired(std::chrono::minutes(5)).
  std::cout << token.to_json() << "\n";
} catch (const aps::auth::Error& e) {
  std::cerr << e.what() << "\n";
  return 1;
}
