// 3-legged sign-in: opens the browser, waits for the callback, prints the token JSON.
//   APS_CLIENT_ID=... [APS_CLIENT_SECRET=...] [APS_SCOPES="data:read openid"]
//   ./example_login_3legged
// APS_CALLBACK_URL (default http://localhost:8080/api/auth/callback) must be registered for the app
// exactly. No secret: a public client (PKCE). APS_BASE_URL points it at another server, APS_CA_FILE
// adds a trusted CA.
#include "aps_auth.hpp"
#include "example_env.hpp"

#include <iostream>

int main() try {
  aps::auth::Config config = example::config_from_env();
  aps::auth::LoginOptions options;  // opens $BROWSER, else the system browser
  options.show_url = [](const std::string& url) { std::cerr << "Open this URL to sign in:\n" << url << "\n"; };
  aps::auth::Token token = aps::auth::login(config, options);
  std::cerr << "Signed in; the access token expires in " << token.expires_in.count() << " s.\n";
  std::cout << token.to_json() << "\n";  // keep token.refresh_token: it spares the next sign-in
} catch (const aps::auth::Error& e) {
  std::cerr << e.what() << "\n";
  return 1;
}
