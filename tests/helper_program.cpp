// aps_auth_test_helper: the second process some tests need, on every platform (ctest passes its path in
// $APS_AUTH_TEST_HELPER). Not part of the library.
//
//   aps_auth_test_helper browse [ARG...] URL
//       A stand-in browser, run by `aps-auth login` as $BROWSER: follows URL like a browser (the mock's
//       follow_like_browser: redirects, the consent page's "Allow") to the CLI's loopback callback.
//       $APS_TEST_CA_FILE, when set, is the CA of the mock's HTTPS certificate. $APS_TEST_BROWSER_ARGS, when
//       set, is a file that first receives the arguments it was given, as a JSON array (a test checks that a
//       URL with '&' arrived whole). Exit 0 when the last page came with status 200.
//   aps_auth_test_helper save-loop PATH FIRST.json SECOND.json DELAY_US
//       A FileTokenStore on PATH saves the token of FIRST.json once, then SECOND.json's, FIRST's, ... until the
//       helper kills itself (platform::kill_self: TerminateProcess on Windows, SIGKILL on POSIX) DELAY_US
//       microseconds after the first save, wherever a save is then.
//   aps_auth_test_helper bind-shared HOST PORT
//       Tries to bind HOST:PORT with every port-sharing option (SO_REUSEADDR, and SO_REUSEPORT where it
//       exists: support::try_bind_shared), as another program on the machine could. Prints "bound" (exit 0)
//       or "refused: <the system's error>" (exit 3).
//   aps_auth_test_helper record-environment OUT [ARG...]
//       A stand-in browser that records how it was started: writes {"argv": [ARG...], "environment": ["K=V",
//       ...]} to OUT (beside it first, then renamed into place, so a reader never sees half of it).
// A program of its own, not a test: the support headers' doctest checks compile to nothing here.
#define DOCTEST_CONFIG_DISABLE
#include "support/files.hpp"
#include "support/mock.hpp"
#include "support/network.hpp"
#include "support/platform.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

int usage() {
  std::fputs(
      "usage: aps_auth_test_helper browse [ARG...] URL | save-loop PATH FIRST.json SECOND.json DELAY_US | "
      "bind-shared HOST PORT | record-environment OUT [ARG...]\n",
      stderr);
  return 2;
}

int browse(const std::vector<std::string>& args) {
  if (args.empty())
    return usage();
  const std::string record = support::env_or("APS_TEST_BROWSER_ARGS");
  if (!record.empty()) {
    std::ofstream out(record, std::ios::binary | std::ios::trunc);
    out << nlohmann::json(args).dump() << "\n";
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", record.c_str());
      return 1;
    }
  }
  std::string ca_pem;
  if (const std::string ca = support::env_or("APS_TEST_CA_FILE"); !ca.empty())
    ca_pem = support::read_file(ca).value_or("");
  aps_mock::BrowseResult r = aps_mock::follow_like_browser(args.back(), ca_pem, 20000);
  if (r.status == 200)
    return 0;
  std::fprintf(stderr, "browse: status %d at %s: %s\n", r.status, r.final_url.c_str(), r.body.c_str());
  return 1;
}

int save_loop(const std::vector<std::string>& args) {
  if (args.size() != 4)
    return usage();
  const aps::auth::Token first = aps::auth::Token::from_json(support::read_file(args[1]).value_or(""));
  const aps::auth::Token second = aps::auth::Token::from_json(support::read_file(args[2]).value_or(""));
  const auto delay = std::chrono::microseconds(std::atol(args[3].c_str()));
  aps::auth::FileTokenStore store(args[0]);
  store.save(first);
  std::thread([delay] {
    std::this_thread::sleep_for(delay);
    support::platform::kill_self();
  }).detach();
  for (;;) {
    store.save(second);
    store.save(first);
  }
}

int bind_shared(const std::vector<std::string>& args) {
  if (args.size() != 2)
    return usage();
  const int err = support::try_bind_shared(args[0], std::atoi(args[1].c_str()));
  if (err == 0) {
    std::puts("bound");
    return 0;
  }
  std::printf("refused: %s\n", support::platform::socket_error_text(err).c_str());
  return 3;
}

int record_environment(const std::vector<std::string>& args) {
  if (args.empty())
    return usage();
  nlohmann::json environment = nlohmann::json::array();
  for (const auto& [name, value] : support::platform::current_environment())
    environment.push_back(name + "=" + value);
  const nlohmann::json record = {{"argv", std::vector<std::string>(args.begin() + 1, args.end())},
                                 {"environment", environment}};
  const std::string partial = args[0] + ".partial";
  try {
    support::write_file(partial, record.dump(1) + "\n");
    std::filesystem::rename(partial, args[0]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "record-environment: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2)
    return usage();
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "browse")
    return browse(args);
  if (command == "save-loop")
    return save_loop(args);
  if (command == "bind-shared")
    return bind_shared(args);
  if (command == "record-environment")
    return record_environment(args);
  return usage();
}
