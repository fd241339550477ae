// libFuzzer target: how long a JWKS answer is kept, detail::jwks_max_age, on arbitrary Cache-Control values (the
// JWKS endpoint, or anything between it and us, writes them).
//
// Invariants:
//   - jwks_max_age never throws and returns 0 s .. 24 h;
//   - a no-store directive added to any value gives 0 s;
//   - "max-age=N" alone gives min(N, 24 h) for any run of digits N, however long.
#include "aps_auth.hpp"
#include "fuzz_util.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace d = aps::auth::detail;
using fuzz_util::require;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fuzz_util::as_text(data, size);
  std::chrono::seconds age{};
  try {
    age = d::jwks_max_age(text);
  } catch (const std::exception& e) {
    fuzz_util::fail("jwks_max_age threw", e.what());
  }
  require(age.count() >= 0 && age <= std::chrono::hours(24), "max age out of 0 s .. 24 h", text);
  const std::string alone = "max-age=" + std::string(text);
  if (!text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos) {
    const std::chrono::seconds n = d::jwks_max_age(alone);
    const std::string digits(text.substr(
        text.find_first_not_of('0') == std::string_view::npos ? text.size() - 1 : text.find_first_not_of('0')));
    if (digits.size() <= 5 && std::stoll(digits) <= 86400)
      require(n.count() == std::stoll(digits), "max-age=N not taken", alone);
    else
      require(n == std::chrono::hours(24), "a max-age above a day not capped at 24 h", alone);
  }
  if (d::jwks_max_age(std::string(text) + ", no-store") != std::chrono::seconds(0))
    fuzz_util::fail("no-store appended did not give 0 s", text);
  return 0;
}
