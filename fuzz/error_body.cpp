// libFuzzer target: error answers of the token endpoint (and friends), detail::throw_http_error, with arbitrary
// status, body, Content-Type, Retry-After and Location. Servers, proxies and captive portals write these bytes,
// and some echo what they received, the client secret included.
//
// Input: a mode byte, then
//   mode even (raw):        status, Content-Type, Retry-After, Location, a secret, then the body as is;
//   mode odd (structured):  a status and a JSON error body in both APS shapes whose text fields are punctuation
//                           with an alphanumeric secret placed anywhere in them (also across the length caps).
//
// Invariants:
//   - throw_http_error always throws, and only aps::auth::Error (kind http, oauth or access_denied), with the
//     status in details() and the Retry-After it understood;
//   - raw: a secret (>= 4 printable characters) that appears in the body appears neither in what() nor in any
//     ErrorDetails field;
//   - structured: not even a 6-character piece of the secret appears in what() or in ErrorDetails.
#include "aps_auth.hpp"
#include "fuzz_util.hpp"

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

namespace d = aps::auth::detail;
using aps::auth::ErrorKind;
using fuzz_util::contains;
using fuzz_util::require;

aps::auth::Error run(const d::HttpCall& call, const d::HttpAnswer& a) {
  try {
    d::throw_http_error(call, a);
  } catch (const aps::auth::Error& e) {
    fuzz_util::check_error(e);
    if (std::getenv("APS_FUZZ_VERBOSE"))
      std::fprintf(stderr, "%s\n", e.what());
    ErrorKind k = e.kind();
    require(k == ErrorKind::http || k == ErrorKind::oauth || k == ErrorKind::access_denied, "unexpected kind",
            aps::auth::to_string(k));
    require(e.status() == a.status, "details().status is not the answer's status");
    if (auto ra = d::parse_retry_after(a.retry_after))
      require(e.details().retry_after == *ra, "Retry-After lost");
    return e;
  } catch (const std::exception& e) {
    fuzz_util::fail("throw_http_error threw something other than aps::auth::Error", e.what());
  }
  fuzz_util::fail("throw_http_error returned");
}

std::vector<std::string> texts(const aps::auth::Error& e) {
  const auto& dd = e.details();
  return {e.what(), dd.error, dd.error_description, dd.error_code, dd.developer_message, dd.user_message, dd.more_info};
}

void raw(FuzzedDataProvider& fdp) {
  d::HttpCall call;
  call.what = "token endpoint";
  d::HttpAnswer a;
  a.status = fdp.ConsumeIntegralInRange<int>(0, 999);
  a.content_type = fdp.ConsumeRandomLengthString(80);
  a.retry_after = fdp.ConsumeRandomLengthString(16);
  a.location = fdp.ConsumeRandomLengthString(120);
  const std::string secret = fdp.ConsumeRandomLengthString(40);
  a.body = fdp.ConsumeRemainingBytesAsString();
  call.secrets.push_back(secret);
  aps::auth::Error e = run(call, a);
  // Headers are not secret-masked (the library never sends a secret in a way a header could echo), and a '*'
  // or '.' in a secret can be rebuilt by the "***" mask or the "..." of a cut text: neither is a real case.
  if (secret.size() >= 4 && fuzz_util::printable(secret) && secret.find_first_of("*.") == std::string::npos &&
      contains(a.body, secret) && !contains(a.content_type, secret) && !contains(a.location, secret)) {
    for (const std::string& t : texts(e))
      require(!contains(t, secret), "the secret reached the error", t);
  }
}

void structured(FuzzedDataProvider& fdp) {
  d::HttpCall call;
  call.what = "token endpoint";
  d::HttpAnswer a;
  a.status = fdp.ConsumeIntegralInRange<int>(100, 599);
  a.content_type = "application/json";
  // Letters that no fixed message of the library holds in this pattern, alternating with digits.
  std::string secret;
  const std::size_t n = fdp.ConsumeIntegralInRange<std::size_t>(8, 40);
  for (std::size_t i = 0; i < n; ++i)
    secret += i % 2 ? "0123456789"[fdp.ConsumeIntegral<std::uint8_t>() % 10]
                    : "QXZJKVW"[fdp.ConsumeIntegral<std::uint8_t>() % 7];
  call.secrets.push_back(secret);
  static const char* const fields[] = {"error",       "error_description", "errorCode", "developerMessage",
                                       "userMessage", "more info"};
  d::json body = d::json::object();
  for (const char* f : fields) {
    if (!fdp.ConsumeBool())
      continue;
    std::string filler;
    std::size_t len = fdp.ConsumeIntegralInRange<std::size_t>(0, 1300);
    std::uint8_t seed = fdp.ConsumeIntegral<std::uint8_t>();
    for (std::size_t i = 0; i < len; ++i)
      filler += " .,;:!-()/|#"[(seed + i * 5) % 12];
    std::vector<std::size_t> at;
    for (int c = fdp.ConsumeIntegralInRange<int>(0, 3); c > 0; --c)
      at.push_back(fdp.ConsumeIntegralInRange<std::size_t>(0, filler.size()));
    std::sort(at.rbegin(), at.rend());
    for (std::size_t p : at)
      filler.insert(p, secret);
    body[f] = filler;
  }
  if (fdp.ConsumeBool())
    body["error"] = fdp.PickValueInArray({"invalid_grant", "access_denied", "invalid_client"});
  a.body = body.dump();
  aps::auth::Error e = run(call, a);
  for (const std::string& t : texts(e))
    for (std::size_t i = 0; i + 6 <= secret.size(); ++i)
      require(!contains(t, secret.substr(i, 6)), "a piece of the secret reached the error", t);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1)
    return 0;
  FuzzedDataProvider fdp(data + 1, size - 1);
  if (data[0] % 2)
    structured(fdp);
  else
    raw(fdp);
  return 0;
}
