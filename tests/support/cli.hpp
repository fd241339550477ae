// Running the built `aps-auth` (the path ctest passes in $APS_AUTH_CLI) in the tests, and reading the tokens a
// run printed. Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_CLI_HPP
#define APS_AUTH_TESTS_SUPPORT_CLI_HPP

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "environment.hpp"
#include "platform.hpp"
#include "process.hpp"

#include <chrono>
#include <set>
#include <string>
#include <vector>

namespace support {

// The CLI's path; fails the test (it is not skipped: CI must not pass silently without the CLI under test) when
// $APS_AUTH_CLI is not set or not an executable.
inline std::string require_cli() {
  const std::string cli = cli_path();
  REQUIRE_MESSAGE(!cli.empty(),
                  "APS_AUTH_CLI is not set: run this test through ctest or meson test, or set APS_AUTH_CLI to the "
                  "path of the built aps-auth");
  REQUIRE_MESSAGE(platform::is_executable(cli), "APS_AUTH_CLI='" << cli << "' is not executable");
  return cli;
}

// tests/helper_program.cpp, built as aps_auth_test_helper: ctest and meson pass its path in $APS_AUTH_TEST_HELPER;
// fails the test when it is not there.
inline std::string test_helper() {
  const std::string helper = env_or("APS_AUTH_TEST_HELPER");
  REQUIRE_MESSAGE(!helper.empty(), "APS_AUTH_TEST_HELPER is not set: run this test through ctest or meson test");
  REQUIRE_MESSAGE(platform::is_executable(helper), "APS_AUTH_TEST_HELPER='" << helper << "' is not executable");
  return helper;
}

// The stand-in browser as a $BROWSER command: the helper's `browse`, which follows the authorize URL like a
// browser to the loopback callback (the mock's CA from $APS_TEST_CA_FILE, when set).
inline std::string stand_in_browser() {
  return "\"" + test_helper() + "\" browse";
}

// A $BROWSER command that records how the browser was started, in `out`: the helper's `record-environment`
// ({"argv": [...], "environment": ["K=V", ...]}).
inline std::string environment_recording_browser(const std::string& out) {
  return "\"" + test_helper() + "\" record-environment \"" + out + "\"";
}

// Runs `aps-auth args...` with exactly `env` (see run()).
inline RunResult run_cli(const std::vector<std::string>& args, const EnvMap& env, std::chrono::milliseconds timeout,
                         const StderrWatcher& on_stderr = {}) {
  std::vector<std::string> argv = {cli_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, env, timeout, on_stderr);
}

// The tokens (access, refresh, id) of a token JSON a run printed on stdout; none when it printed no JSON object.
inline std::set<std::string> printed_tokens(const std::string& out) {
  std::set<std::string> t;
  nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
  if (!j.is_object())
    return t;
  for (const char* k : {"access_token", "refresh_token", "id_token"})
    if (j.contains(k) && j[k].is_string())
      t.insert(j[k].get<std::string>());
  return t;
}

}  // namespace support

#endif
