// Link test: aps_auth.hpp included in three translation units of one program.
//   test_link_header_only  default mode: every definition inline, no duplicate symbols
//   test_link_compiled     APS_AUTH_HEADER_ONLY=0, link_a.cpp defines APS_AUTH_IMPLEMENTATION
//   test_cxx20             header-only mode compiled as C++20
// Exit status 0 when both translation units compute the RFC 7636 Appendix B
// challenge and the version matches the APS_AUTH_VERSION_* macros.
#include "aps_auth.hpp"

#include <cstdio>
#include <string>

#if defined(APS_AUTH_LINK_COMPILED) && defined(CPPHTTPLIB_HTTPLIB_H)
#error "aps_auth.hpp with APS_AUTH_HEADER_ONLY=0 must not include httplib.h outside the implementation"
#endif

namespace link_test {
std::string a_pkce_challenge();
std::string a_version();
std::string b_pkce_challenge();
std::string b_version();
}  // namespace link_test

namespace {

int failures = 0;

void expect_equal(const char* what, const std::string& got, const std::string& want) {
  if (got != want) {
    std::fprintf(stderr, "FAIL %s: got \"%s\", want \"%s\"\n", what, got.c_str(), want.c_str());
    ++failures;
  }
}

}  // namespace

int main() {
  const std::string challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
  expect_equal("pkce_challenge (link_a.cpp)", link_test::a_pkce_challenge(), challenge);
  expect_equal("pkce_challenge (link_b.cpp)", link_test::b_pkce_challenge(), challenge);

  const std::string macros = std::to_string(APS_AUTH_VERSION_MAJOR) + "." + std::to_string(APS_AUTH_VERSION_MINOR) +
                             "." + std::to_string(APS_AUTH_VERSION_PATCH);
  const std::string version = link_test::a_version();
  // version() may carry a suffix ("1.2.3-dev"); it must start with the macros.
  expect_equal("version() prefix (link_a.cpp)", version.substr(0, macros.size()), macros);
  expect_equal("version() (link_b.cpp)", link_test::b_version(), version);

  if (failures == 0) {
    std::printf("ok: %s, version %s, C++ %ld\n",
#if defined(APS_AUTH_LINK_COMPILED)
                "compiled mode",
#else
                "header-only mode",
#endif
                version.c_str(), static_cast<long>(__cplusplus));
  }
  return failures == 0 ? 0 : 1;
}
