// libFuzzer target: the two answers about a user, as JSON objects: token introspection (RFC 7662),
// detail::parse_introspection, and OIDC userinfo, detail::parse_userinfo (what introspect() and userinfo() do
// with the body, after detail::parse_json_object). Each input is fed to both.
//
// Invariants:
//   - parse_introspection throws only aps::auth::Error, and it throws exactly when "active" is not a boolean;
//   - active, scope, client_id and userid are the document's; an integer "exp" of any size gives an expires_at
//     without overflow (UBSan watches the chrono conversion);
//   - parse_userinfo throws nothing for a JSON object (claims are optional); sub, name, email and
//     preferred_username are the document's strings ("" when absent or not strings);
//   - the JSON each keeps parses back to the same document, whatever Unicode it holds.
#include "aps_auth.hpp"
#include "fuzz_util.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace d = aps::auth::detail;
using fuzz_util::require;

namespace {

void check_introspection(const d::json& j) {
  auto active = j.find("active");
  const bool well_formed = active != j.end() && active->is_boolean();
  aps::auth::Introspection r;
  bool ok = fuzz_util::only_error([&] { r = d::parse_introspection(j); });
  require(ok == well_formed, ok ? "accepted an answer without a boolean 'active'" : "refused a well-formed answer");
  if (!ok)
    return;
  require(r.active == active->get<bool>(), "active not the document's");
  require(r.scope == d::string_field(j, "scope") && r.client_id == d::string_field(j, "client_id") &&
              r.userid == d::string_field(j, "userid"),
          "fields not the document's");
  fuzz_util::require_kept_json(r.json, j);
  (void)std::chrono::duration_cast<std::chrono::seconds>(r.expires_at.time_since_epoch()).count();
}

void check_userinfo(const d::json& j) {
  aps::auth::UserInfo u;
  bool ok = fuzz_util::only_error([&] { u = d::parse_userinfo(j); });
  require(ok, "parse_userinfo refused a JSON object");
  require(u.sub == d::string_field(j, "sub") && u.name == d::string_field(j, "name") &&
              u.email == d::string_field(j, "email") &&
              u.preferred_username == d::string_field(j, "preferred_username"),
          "claims not the document's");
  fuzz_util::require_kept_json(u.json, j);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::optional<d::json> j = fuzz_util::json_object(fuzz_util::as_text(data, size));
  if (!j)
    return 0;
  check_introspection(*j);
  check_userinfo(*j);
  return 0;
}
