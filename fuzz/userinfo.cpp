// libFuzzer target: OIDC userinfo answers, detail::parse_userinfo (what userinfo() does with the body, after
// detail::parse_json_object).
//
// Invariants:
//   - parse_userinfo throws nothing for a JSON object (claims are optional);
//   - sub, name, email and preferred_username are the document's strings ("" when absent or not strings);
//   - the kept JSON parses back to the same document, whatever Unicode it holds.
#include "aps_auth.hpp"
#include "fuzz_util.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace d = aps::auth::detail;
using fuzz_util::require;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::optional<d::json> j = fuzz_util::json_object(fuzz_util::as_text(data, size));
  if (!j)
    return 0;
  aps::auth::UserInfo u;
  bool ok = fuzz_util::only_error([&] { u = d::parse_userinfo(*j); });
  require(ok, "parse_userinfo refused a JSON object");
  require(u.sub == d::string_field(*j, "sub") && u.name == d::string_field(*j, "name") &&
              u.email == d::string_field(*j, "email") &&
              u.preferred_username == d::string_field(*j, "preferred_username"),
          "claims not the document's");
  fuzz_util::require_kept_json(u.json, *j);
  return 0;
}
