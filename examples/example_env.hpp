// The set-up the example programs share: their settings from APS_* environment variables.
#ifndef APS_AUTH_EXAMPLES_EXAMPLE_ENV_HPP
#define APS_AUTH_EXAMPLES_EXAMPLE_ENV_HPP

#include "aps_auth.hpp"

#include <cstdlib>
#include <sstream>
#include <string>

namespace example {

// The variable's value; `fallback` when it is unset or empty.
inline std::string env(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// A Config from APS_CLIENT_ID, APS_CLIENT_SECRET (none: a public client, PKCE), APS_CALLBACK_URL
// (default http://localhost:8080/api/auth/callback), APS_SCOPES (space-separated, default
// data:read) and APS_BASE_URL (another server: a proxy, a mock). The library itself reads
// APS_CA_FILE (an extra trusted CA) and the proxy variables.
inline aps::auth::Config config_from_env() {
  aps::auth::Config config;
  config.client_id = env("APS_CLIENT_ID");
  config.client_secret = env("APS_CLIENT_SECRET");
  config.callback_url = env("APS_CALLBACK_URL", config.callback_url);
  if (!env("APS_BASE_URL").empty())
    config.endpoints = aps::auth::Endpoints::from_base_url(env("APS_BASE_URL"));
  std::istringstream scopes(env("APS_SCOPES", "data:read"));
  config.scopes.clear();
  for (std::string s; scopes >> s;)
    config.scopes.push_back(s);
  return config;
}

}  // namespace example

#endif
