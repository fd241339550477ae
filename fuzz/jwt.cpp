// libFuzzer target: id_tokens and JWKS documents.
//   detail::decode_jwt, detail::check_id_token (RS256 signature, iss, aud/azp, exp, iat, nonce),
//   detail::parse_jwks / detail::rsa_key_from_jwk.
//
// Input: a mode byte, then
//   mode 0 (raw):     a compact JWS, arbitrary bytes, checked against the harness's key;
//   mode 1 (signed):  a JOSE header and a claims text (FuzzedDataProvider strings); the harness signs them with
//                     its own RSA key (RS256), so the claim checks are reached; also re-checked with a flipped
//                     signature bit and as an unsigned "alg":"none" token;
//   mode 2 (jwks):    a JWKS document.
//
// Invariants:
//   - nothing throws but aps::auth::Error; decode_jwt throws nothing;
//   - raw input is never accepted (it cannot carry a valid signature of the harness's key);
//   - a signed token is accepted only if alg is RS256 and iss, aud (and azp for several audiences), exp, iat
//     and nonce all hold (checked here independently); a flipped signature bit or "alg":"none" is refused;
//   - issued_at/expires_at convert back without overflow (UBSan), whatever integers the claims hold;
//   - parse_jwks returns only usable keys.
#include "aps_auth.hpp"
#include "fuzz_util.hpp"

#include <fuzzer/FuzzedDataProvider.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

namespace d = aps::auth::detail;
using fuzz_util::require;

EVP_PKEY* g_private = nullptr;
d::Pkey g_public;  // built from the JWK (n, e) of g_private, through the library
constexpr std::int64_t kNow = 1764000000;
const char* const kIssuer = "https://developer.api.autodesk.com";
const char* const kAudience = "client-123";
const char* const kNonce = "n-0S6_WzA2Mj";

std::string bn_b64(const char* name) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(g_private, name, &bn) != 1)
    fuzz_util::fail("EVP_PKEY_get_bn_param");
  std::string bytes(static_cast<std::size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(&bytes[0]));
  BN_free(bn);
  return d::base64(bytes, true);
}

std::string sign(const std::string& input) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  std::size_t len = 0;
  std::string sig;
  if (EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, g_private) == 1 &&
      EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1) {
    sig.resize(len);
    if (EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(&sig[0]), &len,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
      fuzz_util::fail("EVP_DigestSign");
    sig.resize(len);
  }
  EVP_MD_CTX_free(ctx);
  return sig;
}

d::IdTokenExpectation expectation(bool with_nonce) {
  d::IdTokenExpectation want;
  want.issuer = kIssuer;
  want.audience = kAudience;
  want.nonce = with_nonce ? kNonce : "";
  want.now = std::chrono::system_clock::time_point(std::chrono::seconds(kNow));
  return want;
}

d::Pkey find_key(const std::string& kid) {
  return kid == "k1" ? g_public : nullptr;
}

// Runs check_id_token; true when it accepted the token.
bool check(std::string_view token, const d::IdTokenExpectation& want, aps::auth::IdTokenClaims* out = nullptr) {
  aps::auth::IdTokenClaims c;
  bool ok = fuzz_util::only_error([&] { c = d::check_id_token(token, want, find_key); });
  if (ok) {
    (void)std::chrono::duration_cast<std::chrono::seconds>(c.issued_at.time_since_epoch()).count();
    (void)std::chrono::duration_cast<std::chrono::seconds>(c.expires_at.time_since_epoch()).count();
    if (out)
      *out = c;
  }
  return ok;
}

std::optional<std::int64_t> integer(const d::json& c, const char* name) {
  auto it = c.find(name);
  if (it == c.end() || !it->is_number_integer())
    return std::nullopt;
  if (it->is_number_unsigned() && it->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
    return INT64_MAX;
  return it->get<std::int64_t>();
}

// What check_id_token must have verified when it accepted `claims` (an independent reading of the rules).
void require_claims_hold(const d::json& header, const d::json& claims, bool with_nonce) {
  require(d::string_field(header, "alg") == "RS256", "accepted a token whose alg is not RS256");
  require(d::trim_slash(d::string_field(claims, "iss")) == d::trim_slash(kIssuer), "accepted a wrong iss");
  auto aud = claims.find("aud");
  require(aud != claims.end(), "accepted a token without aud");
  if (aud->is_string()) {
    require(*aud == kAudience, "accepted a wrong aud");
  } else {
    require(aud->is_array(), "accepted an aud that is neither string nor array");
    bool found = false;
    for (const auto& a : *aud)
      found = found || (a.is_string() && a == kAudience);
    require(found, "accepted an aud array without our client");
    if (aud->size() > 1)
      require(d::string_field(claims, "azp") == kAudience, "several audiences, azp not ours");
  }
  auto exp = integer(claims, "exp"), iat = integer(claims, "iat");
  require(exp && iat, "accepted a token without integer exp/iat");
  require(*exp > kNow - 60, "accepted an expired token");
  require(*iat <= kNow + 60, "accepted a token issued in the future");
  if (with_nonce)
    require(d::string_field(claims, "nonce") == kNonce, "accepted a wrong nonce");
}

void signed_mode(FuzzedDataProvider& fdp) {
  const bool with_nonce = fdp.ConsumeBool();
  const std::string header = fdp.ConsumeRandomLengthString(300);
  const std::string claims = fdp.ConsumeRemainingBytesAsString();
  const std::string input = d::base64(header, true) + "." + d::base64(claims, true);
  const std::string sig = sign(input);
  const std::string token = input + "." + d::base64(sig, true);
  const auto want = expectation(with_nonce);

  aps::auth::IdTokenClaims out;
  static const bool verbose = std::getenv("APS_FUZZ_VERBOSE") != nullptr;
  if (check(token, want, &out)) {
    if (verbose)
      std::fprintf(stderr, "accepted: sub=%s\n", out.subject.c_str());
    auto h = d::parse_json_object(header), c = d::parse_json_object(claims);
    require(h && c, "accepted a token whose header or claims are not JSON objects");
    require_claims_hold(*h, *c, with_nonce);
    require(out.issuer == d::string_field(*c, "iss") && out.subject == d::string_field(*c, "sub"),
            "claims not the token's");
    // The same token with one signature bit flipped, and unsigned, must be refused.
    std::string bad = sig;
    bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x10);
    require(!check(input + "." + d::base64(bad, true), want), "accepted a token with a flipped signature bit");
    require(!check(input + ".", want), "accepted a token without signature");
  }
  // "alg":"none" with the same claims, unsigned: never.
  const std::string none = d::base64(R"({"alg":"none","kid":"k1"})", true) + "." + d::base64(claims, true) + ".";
  require(!check(none, want), "accepted an alg none token");
}

void raw_mode(std::string_view token) {
  try {
    if (auto jwt = d::decode_jwt(token)) {
      require(jwt->header.is_object() && jwt->claims.is_object(), "decode_jwt returned non-objects");
      require(jwt->signing_input == token.substr(0, token.rfind('.')), "signing input is not header.claims");
    }
  } catch (const std::exception& e) {
    fuzz_util::fail("decode_jwt threw", e.what());
  }
  require(!check(token, expectation(false)), "accepted a token the harness never signed", token);
}

void jwks_mode(std::string_view body) {
  auto j = d::parse_json_object(body);
  if (!j)
    return;
  std::vector<std::pair<std::string, d::Pkey>> keys;
  if (!fuzz_util::only_error([&] { keys = d::parse_jwks(*j); }))
    return;
  for (const auto& k : keys)
    require(k.second != nullptr, "parse_jwks returned a null key");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_private = EVP_RSA_gen(1024);  // small: signing runs once per input
  if (!g_private)
    fuzz_util::fail("EVP_RSA_gen");
  g_public = d::rsa_key_from_jwk(bn_b64(OSSL_PKEY_PARAM_RSA_N), bn_b64(OSSL_PKEY_PARAM_RSA_E));
  if (!g_public)
    fuzz_util::fail("rsa_key_from_jwk refused the harness's own key");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1)
    return 0;
  std::string_view rest = fuzz_util::as_text(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      raw_mode(rest);
      break;
    case 1: {
      FuzzedDataProvider fdp(data + 1, size - 1);
      signed_mode(fdp);
      break;
    }
    default:
      jwks_mode(rest);
      break;
  }
  return 0;
}
