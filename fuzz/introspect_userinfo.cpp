// libFuzzer target: token introspection answers (RFC 7662), detail::parse_introspection (what introspect() does
// with the body, after detail::parse_json_object).
//
// Invariants:
//   - parse_introspection throws only aps::auth::Error, and it throws exactly when "active" is not a boolean;
//   - active, scope, client_id and userid are the document's; the kept JSON parses back to the same document;
//   - an integer "exp" of any size gives an expires_at without overflow (UBSan watches the chrono conversion).
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
  auto active = j->find("active");
  const bool well_formed = active != j->end() && active->is_boolean();

  aps::auth::Introspection r;
  bool ok = fuzz_util::only_error([&] { r = d::parse_introspection(*j); });
  require(ok == well_formed, ok ? "accepted an answer without a boolean 'active'" : "refused a well-formed answer");
  if (!ok)
    return 0;
  require(r.active == active->get<bool>(), "active not the document's");
  require(r.scope == d::string_field(*j, "scope") && r.client_id == d::string_field(*j, "client_id") &&
              r.userid == d::string_field(*j, "userid"),
          "fields not the document's");
  fuzz_util::require_kept_json(r.json, *j);
  (void)std::chrono::duration_cast<std::chrono::seconds>(r.expires_at.time_since_epoch()).count();
  return 0;
}
