// Real headless Chromium in the tests: where Chromium, Node.js and the DevTools driver
// (tests/browser/headless_browser.mjs) are, where screenshots go (<build>/screenshots), and the size of a PNG.
// A missing tool fails the test (it is not skipped): CI must not pass without the browser. APS_AUTH_CHROMIUM
// overrides the Chromium binary, APS_AUTH_NODE the node binary. Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_BROWSER_HPP
#define APS_AUTH_TESTS_SUPPORT_BROWSER_HPP

#include <doctest/doctest.h>

#include "environment.hpp"
#include "files.hpp"
#include "platform.hpp"
#include "process.hpp"

#include <chrono>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace support {

struct BrowserTools {
  std::string chromium, node, driver, out_dir;
};

// Opens one page with the driver, once per test process, before any sign-in is timed. In CI the first sign-in of
// a test process twice missed its deadline with no driver result at all, while the sign-ins after it took about
// 1 s each (a cold start: binaries not yet in the page cache, a slow disk, loaded cores): that start now belongs
// to no sign-in's budget. How long it took is reported; whether it worked is not checked here (a browser that
// cannot start fails the sign-in that follows, with the driver's steps).
inline void warm_up_browser(const BrowserTools& t) {
  static bool done = false;
  if (done)
    return;
  done = true;
  TempDir profile("aps-auth-browser-warm-up-");
  RunResult r = run({t.node, t.driver, "--out", t.out_dir, "--name", "warm-up", "--profile", profile.path(),
                     "--chromium", t.chromium, "--timeout", "110", "data:text/html,<title>warm-up</title>"},
                    platform::current_environment(), std::chrono::seconds(120));
  MESSAGE("browser warm-up (first Chromium start of this process): " << r.seconds << " s, driver exit " << r.exit_code);
}

// Everything a browser test needs, or a clear failure saying what to install. An override that is set must work;
// the first call also warms the browser up (warm_up_browser).
inline BrowserTools find_browser_tools() {
  BrowserTools t;
  const std::string chromium = env_or("APS_AUTH_CHROMIUM", ""), node = env_or("APS_AUTH_NODE", "");
  if (!chromium.empty() && !platform::is_executable(chromium))
    FAIL("APS_AUTH_CHROMIUM=" << chromium << " is not an executable file");
  t.chromium = find_program(
      {chromium, "chromium", "chromium-browser", "/usr/bin/chromium", "google-chrome", "google-chrome-stable"});
  if (t.chromium.empty())
    FAIL(
        "Chromium not found: install Debian's chromium package (apt-get install chromium), or set "
        "APS_AUTH_CHROMIUM to a Chromium/Chrome binary");
  if (!node.empty() && !platform::is_executable(node))
    FAIL("APS_AUTH_NODE=" << node << " is not an executable file");
  t.node = find_program({node, "node", "nodejs"});
  if (t.node.empty())
    FAIL("Node.js not found: install Debian's nodejs package (apt-get install nodejs)");
  t.driver = source_dir() + "/tests/browser/headless_browser.mjs";
  if (!is_file(t.driver))
    FAIL("missing " << t.driver << " (set APS_AUTH_SOURCE_DIR)");
  t.out_dir = binary_dir() + "/screenshots";
  std::error_code ec;
  std::filesystem::create_directories(t.out_dir, ec);
  warm_up_browser(t);
  return t;
}

// Width and height of a PNG file (0, 0 when it is not one).
inline std::pair<unsigned, unsigned> png_size(const std::string& path) {
  std::string b = read_file(path).value_or("");
  if (b.size() < 24 || b.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0 || b.compare(12, 4, "IHDR") != 0)
    return {0, 0};
  auto be32 = [&](std::size_t i) {
    return (static_cast<unsigned>(static_cast<unsigned char>(b[i])) << 24) |
           (static_cast<unsigned>(static_cast<unsigned char>(b[i + 1])) << 16) |
           (static_cast<unsigned>(static_cast<unsigned char>(b[i + 2])) << 8) |
           static_cast<unsigned>(static_cast<unsigned char>(b[i + 3]));
  };
  return {be32(16), be32(20)};
}

// There is no Windows Chromium here: under Wine the browser would be the Linux one, which the Linux stages test
// already. What is Windows's own, the CLI starting $BROWSER with CreateProcessW, test_cli tests there with its
// stand-in browser. Says so by name on Windows.
inline bool browser_tests_run_here() {
#ifdef _WIN32
  MESSAGE(
      "skipped on Windows: no Windows Chromium here (under Wine it would be the Linux one, tested by the Linux "
      "stages); the CLI starting $BROWSER with CreateProcessW is tested by test_cli");
  return false;
#else
  return true;
#endif
}

}  // namespace support

#endif
