// libFuzzer target: OIDC discovery documents, detail::parse_discovery (what discover() does with the body of
// <issuer>/.well-known/openid-configuration, after detail::parse_json_object).
//
// Input: a flags byte, then the body. Flags bit 0: expect the document's own "issuer" (so that the endpoint
// checks run), else expect "https://developer.api.autodesk.com".
//
// Invariants:
//   - parse_json_object never throws; parse_discovery throws only aps::auth::Error;
//   - a returned Endpoints has the expected issuer (trailing '/' aside), an authorize and a token endpoint, and
//     every endpoint it holds is a URL the library would call (require_url accepts it: https, or http to
//     loopback), so a hostile document cannot point the token request at plain http elsewhere;
//   - authorization_response_iss_parameter_supported is true only when the document says true.
#include "aps_auth.hpp"
#include "fuzz_util.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace d = aps::auth::detail;
using fuzz_util::require;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1)
    return 0;
  std::optional<d::json> j = fuzz_util::json_object(fuzz_util::as_text(data + 1, size - 1));
  if (!j)
    return 0;
  const std::string issuer =
      (data[0] & 1) ? d::string_field(*j, "issuer") : std::string("https://developer.api.autodesk.com");

  aps::auth::Endpoints e;
  if (!fuzz_util::only_error([&] { e = d::parse_discovery(*j, issuer); }))
    return 0;

  require(d::trim_slash(e.issuer) == d::trim_slash(issuer), "discovery accepted another issuer", e.issuer);
  require(!e.authorize.empty() && !e.token.empty(), "discovery returned no authorize/token endpoint");
  for (const std::string* url : {&e.authorize, &e.token, &e.revoke, &e.introspect, &e.jwks, &e.logout, &e.userinfo}) {
    if (url->empty())
      continue;
    bool ok = fuzz_util::only_error([&] { (void)d::require_url(*url, "endpoint"); });
    require(ok, "discovery returned an endpoint the library refuses to call", *url);
  }
  auto iss = j->find("authorization_response_iss_parameter_supported");
  if (e.authorization_response_iss_parameter_supported)
    require(iss != j->end() && *iss == true, "iss support without the document saying so");
  return 0;
}
