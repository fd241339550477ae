// The program every consumer route (a)-(e) builds and runs (tests/consumers/run copies it into
// each project). No network: the RFC 7636 Appendix B PKCE vector, an authorization request URL,
// and the version.
#include "aps_auth.hpp"

#include <cstdio>
#include <string>

namespace {

int failures = 0;

void expect(bool ok, const char* what, const std::string& got) {
  if (!ok) {
    std::fprintf(stderr, "FAIL %s: %s\n", what, got.c_str());
    ++failures;
  }
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

int main() {
  const std::string challenge = aps::auth::pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
  expect(challenge == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "pkce_challenge", challenge);

  aps::auth::Config config;
  config.client_id = "consumer-test";
  const aps::auth::AuthorizationRequest request = aps::auth::authorization_request(config);
  expect(request.url.rfind(config.endpoints.authorize + "?", 0) == 0, "authorize URL prefix", request.url);
  expect(contains(request.url, "client_id=consumer-test"), "authorize URL client_id", request.url);
  expect(contains(request.url, "code_challenge=" + request.code_challenge), "authorize URL PKCE", request.url);
  expect(contains(request.url, "code_challenge_method=S256"), "authorize URL PKCE method", request.url);
  expect(contains(request.url, "state=" + request.state), "authorize URL state", request.url);
  expect(aps::auth::pkce_challenge(request.code_verifier) == request.code_challenge, "code_challenge",
         request.code_challenge);

  const std::string version = aps::auth::version();
  const std::string macros = std::to_string(APS_AUTH_VERSION_MAJOR) + "." + std::to_string(APS_AUTH_VERSION_MINOR) +
                             "." + std::to_string(APS_AUTH_VERSION_PATCH);
  expect(version.rfind(macros, 0) == 0, "version() starts with the APS_AUTH_VERSION_* macros", version);
#ifdef CONSUMER_EXPECTED_VERSION
  // The version the package metadata reports (CMake package, pkg-config, Meson dependency).
  expect(version == CONSUMER_EXPECTED_VERSION, "version() == the package version " CONSUMER_EXPECTED_VERSION, version);
#endif

  if (failures != 0)
    return 1;
  std::printf("aps_auth %s: ok\n", version.c_str());
  return 0;
}
