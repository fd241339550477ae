// Keep a user signed in: a token file and an auto-refreshing TokenSource, the API most programs
// need. Sign in once (`aps-auth login --token-file PATH`); from then on access_token() hands out a
// valid access token, refreshing it when it expires within 5 minutes and saving the rotated refresh
// token before it returns. Threads and processes sharing the file refresh one at a time.
//   APS_CLIENT_ID=... [APS_CLIENT_SECRET=...] [APS_TOKEN_FILE=PATH] ./example_token_source
// Without APS_TOKEN_FILE: $XDG_STATE_HOME/aps-auth/token.json, else
// ~/.local/state/aps-auth/token.json. APS_BASE_URL points it at another server (a proxy, a mock);
// APS_CA_FILE adds a trusted CA.
#include "aps_auth.hpp"
#include "example_env.hpp"

#include <iostream>
#include <memory>

int main() try {
  const std::string path = example::env("APS_TOKEN_FILE", aps::auth::FileTokenStore::default_path());
  aps::auth::TokenSource source(example::config_from_env(), std::make_shared<aps::auth::FileTokenStore>(path));
  for (int call = 1; call <= 3; ++call) {
    // As an API client would, before each request: cheap while the token is valid.
    std::string access_token = source.access_token();
    std::cerr << "request " << call << ": Authorization: Bearer <" << access_token.size() << " characters>\n";
  }
  std::cout << source.access_token() << "\n";
} catch (const aps::auth::Error& e) {
  std::cerr << e.what() << "\n";  // usage: nothing in the file yet, sign in first
  return 1;
}
