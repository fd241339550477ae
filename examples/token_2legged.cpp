// 2-legged token (client credentials): for the app's own data, no user involved.
//   APS_CLIENT_ID=... APS_CLIENT_SECRET=... [APS_SCOPES="data:read bucket:read"]
//   ./example_token_2legged
// APS_BASE_URL points it at another server (a proxy, a mock); APS_CA_FILE adds a trusted CA.
#include "aps_auth.hpp"
#include "example_env.hpp"

#include <iostream>

int main() try {
  aps::auth::Token token = aps::auth::client_credentials(example::config_from_env());
  // Send it as "Authorization: Bearer <access_token>"; get a new one when
  // token.expired(std::chrono::minutes(5)).
  std::cout << token.to_json() << "\n";
} catch (const aps::auth::Error& e) {
  std::cerr << e.what() << "\n";
  return 1;
}
