# aps_authHttplib.cmake -- locate cpp-httplib for aps_auth.
#
# Used by the aps_auth build AND installed next to aps_authConfig.cmake, so
# that a consumer's find_package(aps_auth) rebuilds the very same imported
# target the library was built against.
#
#   aps_auth_find_httplib(<provider>)
#
# <provider> is one of
#   auto      - try the CMake package first (upstream cpp-httplib installs
#               httplib::httplib), then pkg-config `cpp-httplib` (Debian and
#               Ubuntu split it into httplib.h + libcpp-httplib.so and ship no
#               CMake package);
#   cmake     - only the CMake package (or an existing httplib::httplib target);
#   pkgconfig - only pkg-config.
#
# On return (it is a macro: the variables land in the caller's scope):
#   APS_AUTH_HTTPLIB_FOUND     TRUE/FALSE
#   APS_AUTH_HTTPLIB_TARGET    the target to link (httplib::httplib or
#                              PkgConfig::APS_AUTH_PC_HTTPLIB)
#   APS_AUTH_HTTPLIB_PROVIDER  cmake | pkgconfig (what found it)
#   APS_AUTH_HTTPLIB_VERSION   version, when known
#
# With pkg-config the imported target carries the package's cflags
# (-DCPPHTTPLIB_OPENSSL_SUPPORT -DCPPHTTPLIB_ZLIB_SUPPORT
# -DCPPHTTPLIB_BROTLI_SUPPORT on Debian) as usage requirements, so they reach
# every translation unit that includes httplib.h: a TU compiled with other
# defines than libcpp-httplib.so was built with would see a different ABI.
# Nothing is added to CMAKE_CXX_FLAGS.

include_guard(GLOBAL)

macro(aps_auth_find_httplib _aps_auth_provider)
  set(APS_AUTH_HTTPLIB_FOUND FALSE)
  set(APS_AUTH_HTTPLIB_TARGET "")
  set(APS_AUTH_HTTPLIB_PROVIDER "")
  set(APS_AUTH_HTTPLIB_VERSION "")

  if(NOT "${_aps_auth_provider}" STREQUAL "pkgconfig")
    if(TARGET httplib::httplib)
      # A parent project already brought its own (add_subdirectory/FetchContent).
      set(APS_AUTH_HTTPLIB_FOUND TRUE)
    else()
      find_package(httplib CONFIG QUIET)
      if(httplib_FOUND AND TARGET httplib::httplib)
        set(APS_AUTH_HTTPLIB_FOUND TRUE)
        set(APS_AUTH_HTTPLIB_VERSION "${httplib_VERSION}")
      endif()
    endif()
    if(APS_AUTH_HTTPLIB_FOUND)
      set(APS_AUTH_HTTPLIB_TARGET httplib::httplib)
      set(APS_AUTH_HTTPLIB_PROVIDER cmake)
      # Upstream's package says whether it was configured with OpenSSL.
      if(DEFINED HTTPLIB_IS_USING_OPENSSL AND NOT HTTPLIB_IS_USING_OPENSSL)
        message(WARNING
          "aps_auth: the cpp-httplib CMake package was built without OpenSSL; "
          "aps_auth needs HTTPS (CPPHTTPLIB_OPENSSL_SUPPORT).")
      endif()
    endif()
  endif()

  if(NOT APS_AUTH_HTTPLIB_FOUND AND NOT "${_aps_auth_provider}" STREQUAL "cmake")
    find_package(PkgConfig QUIET)
    if(PKG_CONFIG_FOUND)
      pkg_check_modules(APS_AUTH_PC_HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
      if(APS_AUTH_PC_HTTPLIB_FOUND AND TARGET PkgConfig::APS_AUTH_PC_HTTPLIB)
        set(APS_AUTH_HTTPLIB_FOUND TRUE)
        set(APS_AUTH_HTTPLIB_TARGET PkgConfig::APS_AUTH_PC_HTTPLIB)
        set(APS_AUTH_HTTPLIB_PROVIDER pkgconfig)
        set(APS_AUTH_HTTPLIB_VERSION "${APS_AUTH_PC_HTTPLIB_VERSION}")
        if(NOT "${APS_AUTH_PC_HTTPLIB_CFLAGS}" MATCHES "CPPHTTPLIB_OPENSSL_SUPPORT")
          message(WARNING
            "aps_auth: pkg-config cpp-httplib does not define "
            "CPPHTTPLIB_OPENSSL_SUPPORT; aps_auth needs HTTPS.")
        endif()
      endif()
    endif()
  endif()
endmacro()
