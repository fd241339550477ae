// The environment of the tests: reading and changing this process's variables (scoped), what ctest tells the
// tests (APS_AUTH_SOURCE_DIR, APS_AUTH_BINARY_DIR, APS_AUTH_CLI), and a minimal environment for a child process.
// Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_ENVIRONMENT_HPP
#define APS_AUTH_TESTS_SUPPORT_ENVIRONMENT_HPP

#include "platform.hpp"

#include <optional>
#include <string>

namespace support {

// The variable's value when it is set and not empty, else `fallback`.
inline std::string env_or(const std::string& name, const std::string& fallback = "") {
  std::optional<std::string> v = platform::get_env(name);
  return v && !v->empty() ? *v : fallback;
}

// Sets (or with nullptr unsets) an environment variable for the lifetime of the object, then restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name), old_(platform::get_env(name)) {
    if (value)
      platform::set_env(name_, value);
    else
      platform::unset_env(name_);
  }
  ~ScopedEnv() {
    if (old_)
      platform::set_env(name_, *old_);
    else
      platform::unset_env(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// The source tree: $APS_AUTH_SOURCE_DIR (ctest and meson set it), else found from this file's own path.
inline std::string source_dir() {
  std::string dir = env_or("APS_AUTH_SOURCE_DIR");
  if (!dir.empty())
    return dir;
  std::string here = __FILE__;  // <source>/tests/support/environment.hpp, absolute or relative
  std::string root = here.substr(0, here.rfind("tests/support/"));
  return root.empty() ? "." : root;
}

// The build tree: $APS_AUTH_BINARY_DIR, else the working directory.
inline std::string binary_dir() {
  return env_or("APS_AUTH_BINARY_DIR", ".");
}

// The built aps-auth: $APS_AUTH_CLI ("" when not set).
inline std::string cli_path() {
  return env_or("APS_AUTH_CLI");
}

// A minimal environment for a child: PATH, HOME (and XDG_STATE_HOME under it), and TMPDIR and the sanitizers'
// options of this process; on Windows also SystemRoot, TEMP and TMP of this process, and USERPROFILE and
// LOCALAPPDATA under HOME; nothing else (no proxy variables, no APS_* settings, no SSL_CERT_* of the host).
inline EnvMap base_env(const std::string& home) {
  EnvMap e;
  e["PATH"] = env_or("PATH", "/usr/bin:/bin");
  e["HOME"] = home;
  e["XDG_STATE_HOME"] = home + "/state";
  for (const char* name : {"TMPDIR", "ASAN_OPTIONS", "TSAN_OPTIONS"})
    if (!env_or(name).empty())
      e[name] = env_or(name);
#ifdef _WIN32
  for (const char* name : {"SystemRoot", "TEMP", "TMP"})
    if (!env_or(name).empty())
      e[name] = env_or(name);
  e["USERPROFILE"] = home;
  e["LOCALAPPDATA"] = home + "\\AppData\\Local";
#endif
  return e;
}

}  // namespace support

#endif
