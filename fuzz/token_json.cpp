// libFuzzer target: token endpoint answers and stored tokens, on arbitrary bodies.
//   detail::json_depth_ok, detail::parse_json_object, detail::parse_token, Token::from_json, Token::to_json.
//
// Input: a body (any bytes), or, when the first byte is 0xFF, the fields of a Token built in memory.
//
// Invariants:
//   - json_depth_ok and parse_json_object never throw or crash, however deep the nesting; parse_json_object
//     returns objects only, and nothing json_depth_ok refuses;
//   - parse_token and Token::from_json throw only aps::auth::Error; a token they return has an access token,
//     0 <= expires_in <= 366 days, and the fields the body holds;
//   - a token they return has RFC 6750 b64token access and refresh tokens and a Bearer token_type;
//   - from_json(to_json(t)) == t, field by field (expires_at to the second), for every t whose tokens are
//     b64tokens and whose token_type is Bearer; any other t is refused with bad_response;
//   - Token::to_json on any in-memory token returns or throws aps::auth::Error (nothing else).
#include "aps_auth.hpp"
#include "fuzz_util.hpp"

#include <fuzzer/FuzzedDataProvider.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

namespace d = aps::auth::detail;
using aps::auth::Token;
using fuzz_util::require;

std::int64_t epoch_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

void require_same(const Token& a, const Token& b, const std::string& text) {
  require(a.access_token == b.access_token, "round trip changed access_token", text);
  require(a.token_type == b.token_type, "round trip changed token_type", text);
  require(a.refresh_token == b.refresh_token, "round trip changed refresh_token", text);
  require(a.id_token == b.id_token, "round trip changed id_token", text);
  require(a.scope == b.scope, "round trip changed scope", text);
  require(a.expires_in == b.expires_in, "round trip changed expires_in", text);
  require(epoch_seconds(a.expires_at) == epoch_seconds(b.expires_at), "round trip changed expires_at", text);
}

void round_trip(const Token& t) {
  std::string text;
  if (!fuzz_util::only_error([&] { text = t.to_json(); }))
    return;
  require(d::parse_json_object(text).has_value(), "to_json output is not a JSON object", text);
  Token back;
  bool ok = fuzz_util::only_error([&] { back = Token::from_json(text); });
  const bool valid = d::is_b64token(t.access_token) && (t.refresh_token.empty() || d::is_b64token(t.refresh_token)) &&
                     (t.token_type.empty() || d::iequals(t.token_type, "Bearer"));
  if (!valid) {
    require(!ok, "from_json accepted a token with a bad access_token, refresh_token or token_type", text);
    return;
  }
  require(ok, "from_json refused to_json output", text);
  require_same(t, back, text);
}

void fuzz_body(std::string_view body) {
  bool depth_ok = false;
  std::optional<d::json> j;
  try {
    depth_ok = d::json_depth_ok(body);
    (void)d::json_depth_ok(body, 1);
    j = d::parse_json_object(body);
  } catch (const std::exception& e) {
    fuzz_util::fail("json_depth_ok/parse_json_object threw", e.what());
  }
  if (j) {
    require(depth_ok, "parse_json_object accepted a body json_depth_ok refuses");
    require(j->is_object(), "parse_json_object returned a non-object");

    const auto sent_at = std::chrono::system_clock::now();
    Token t;
    if (fuzz_util::only_error([&] { t = d::parse_token(*j, sent_at, "token endpoint"); })) {
      require(!t.access_token.empty(), "parse_token returned no access_token");
      require(d::is_b64token(t.access_token), "parse_token returned an access_token that is no b64token");
      require(t.refresh_token.empty() || d::is_b64token(t.refresh_token), "parse_token returned a bad refresh_token");
      require(d::iequals(t.token_type, "Bearer"), "parse_token returned a token_type other than Bearer");
      require(t.access_token == d::string_field(*j, "access_token"), "access_token not the body's");
      require(t.refresh_token == d::string_field(*j, "refresh_token"), "refresh_token not the body's");
      require(t.expires_in.count() >= 0 && t.expires_in.count() <= 366LL * 24 * 3600, "expires_in out of range");
      require(t.expires_at == sent_at + t.expires_in, "expires_at not taken from the time the request was sent");
      round_trip(t);
    }
  }

  Token t;
  if (fuzz_util::only_error([&] { t = Token::from_json(body); })) {
    require(j.has_value(), "from_json accepted what parse_json_object refuses");
    require(!t.access_token.empty(), "from_json returned no access_token");
    require(t.expires_in.count() >= 0 && t.expires_in.count() <= 366LL * 24 * 3600, "expires_in out of range");
    round_trip(t);
    (void)t.expired();
    (void)t.expired(std::chrono::seconds(300));
  }
}

void fuzz_fields(FuzzedDataProvider& fdp) {
  Token t;
  t.access_token = fdp.ConsumeRandomLengthString(200);
  t.token_type = fdp.ConsumeRandomLengthString(20);
  t.refresh_token = fdp.ConsumeRandomLengthString(200);
  t.id_token = fdp.ConsumeRandomLengthString(200);
  t.scope = fdp.ConsumeRandomLengthString(100);
  t.expires_in = std::chrono::seconds(fdp.ConsumeIntegralInRange<std::int64_t>(0, 366LL * 24 * 3600));
  t.expires_at = std::chrono::system_clock::time_point(
      std::chrono::seconds(fdp.ConsumeIntegralInRange<std::int64_t>(0, 4000000000LL)));
  if (t.token_type.empty())
    t.token_type = "Bearer";  // from_json's default for a missing/empty type
  round_trip(t);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 0 && data[0] == 0xFF) {
    FuzzedDataProvider fdp(data + 1, size - 1);
    fuzz_fields(fdp);
    return 0;
  }
  fuzz_body(fuzz_util::as_text(data, size));
  return 0;
}
