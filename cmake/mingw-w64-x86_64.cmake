# CMake toolchain file: cross-compile for 64-bit Windows with Debian/Ubuntu's mingw-w64 (posix thread
# model: the win32 variant of g++ has no std::thread/std::mutex), and run the results with Wine.
#
#   cmake -S . -B build/windows -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake \
#     -DAPS_AUTH_MINGW_PREFIX_PATH="<openssl prefix>;<headers prefix>" \
#     -DAPS_AUTH_HTTPLIB_INCLUDE_DIR=<dir of httplib.h> [-DAPS_AUTH_WINEPREFIX=<wine prefix>]
#
# scripts/build-windows builds those prefixes and passes them.
#
#   APS_AUTH_MINGW_PREFIX_PATH  install prefixes of Windows builds of the dependencies (OpenSSL with
#                               lib/libssl.a, header-only libraries under include/); searched like the
#                               mingw-w64 sysroot, and nothing else is (no Linux headers or libraries)
#   APS_AUTH_WINEPREFIX         the Wine prefix tests run in (default: Wine's, ~/.wine)
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

set(_aps_auth_mingw x86_64-w64-mingw32)
set(CMAKE_C_COMPILER ${_aps_auth_mingw}-gcc-posix)
set(CMAKE_CXX_COMPILER ${_aps_auth_mingw}-g++-posix)
set(CMAKE_RC_COMPILER ${_aps_auth_mingw}-windres)

# try_compile() projects read this file again: hand them the variables it reads.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES APS_AUTH_MINGW_PREFIX_PATH APS_AUTH_WINEPREFIX)

set(CMAKE_FIND_ROOT_PATH /usr/${_aps_auth_mingw} ${APS_AUTH_MINGW_PREFIX_PATH})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# pkg-config sees only the target's .pc files, never the build machine's (a Linux hiredis would be linked).
set(ENV{PKG_CONFIG_LIBDIR} "/usr/${_aps_auth_mingw}/lib/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# The dependencies are static libraries: link them, libstdc++, libgcc and winpthread into each .exe,
# which then runs without any DLL next to it.
set(OPENSSL_USE_STATIC_LIBS TRUE)
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")

# ctest and add_test(COMMAND <target>) run the programs through Wine with cmake/wine-run: quietly, without a
# display, and without leaving ctest waiting for Wine's own processes. (In Debian 12 the package `wine` puts a
# `wine` on PATH that runs 64-bit programs.)
find_program(APS_AUTH_WINE NAMES wine wine64)
if(APS_AUTH_WINE)
  set(CMAKE_CROSSCOMPILING_EMULATOR env "APS_AUTH_WINE=${APS_AUTH_WINE}")
  if(APS_AUTH_WINEPREFIX)
    list(APPEND CMAKE_CROSSCOMPILING_EMULATOR "WINEPREFIX=${APS_AUTH_WINEPREFIX}")
  endif()
  list(APPEND CMAKE_CROSSCOMPILING_EMULATOR sh "${CMAKE_CURRENT_LIST_DIR}/wine-run")
endif()
