// Compile test (Windows only): aps_auth.hpp after <windows.h>, as a plug-in's precompiled header often has it.
// tests/CMakeLists.txt compiles this file (-fsyntax-only, warnings as errors) four times: with and without
// NOMINMAX and WIN32_LEAN_AND_MEAN, each defined here on the command line before <windows.h> sees it.
// Without NOMINMAX <windows.h> defines min and max as macros; without WIN32_LEAN_AND_MEAN it includes the old
// <winsock.h>, which must not collide with the <winsock2.h> of cpp-httplib. The functions below use std::min
// and std::max after the header, so the macros must be back as the user had them.
#include <windows.h>

#include "aps_auth.hpp"

#include <algorithm>
#include <string>

#ifndef NOMINMAX
#if !defined(min) || !defined(max)
#error "aps_auth.hpp must give back the min and max macros of <windows.h>"
#endif
#endif

std::string windows_h_first_challenge() {
  return aps::auth::pkce_challenge("verifier");
}

#ifdef NOMINMAX
int windows_h_first_min_max(int a, int b) {
  return std::min(a, b) + std::max(a, b);
}
#else
int windows_h_first_min_max(int a, int b) {
  return min(a, b) + max(a, b);
}  // the user's macros still work
#endif
