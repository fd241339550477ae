// A smoke test of the Windows side of tests/support alone, without the library (the suite itself runs under Wine
// in scripts/test's windows stage): environment, files, processes (CreateProcessW with a UTF-16 environment block and a
// quoted command line, stdin, a deadline, a job), sockets (Winsock) and the kernel's table of listening sockets. Not
// built by CMake; on Linux, with mingw-w64 and wine, from the source root:
//   x86_64-w64-mingw32-g++-posix -std=c++17 -I. tests/support/windows_smoke.cpp -o windows_smoke.exe
//       -static -lws2_32 -liphlpapi && wine windows_smoke.exe
// It runs itself as the child of the process checks (argument "--echo": prints its arguments and stdin).
#include "environment.hpp"
#include "files.hpp"
#include "network.hpp"
#include "platform.hpp"
#include "process.hpp"
#include "text.hpp"

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what);
  if (!ok)
    ++failures;
}

int echo(int argc, char** argv) {
  for (int i = 2; i < argc; ++i)
    std::printf("[%s]", argv[i]);
  std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  std::printf("stdin=[%s]", in.c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "%s", support::env_or("SMOKE_VAR").c_str());
  return argc;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--echo")
    return echo(argc, argv);
  namespace platform = support::platform;
  {
    support::ScopedEnv e("APS_SMOKE", "v1");
    expect(support::env_or("APS_SMOKE") == "v1", "ScopedEnv sets");
  }
  expect(!platform::get_env("APS_SMOKE").has_value(), "ScopedEnv restores");
  std::string dir;
  {
    support::TempDir d("smoke_");
    dir = d.path();
    const std::string f = d.write("a b.txt", "hello\r\nworld");
    expect(support::read_file(f).value_or("") == "hello\r\nworld", "write_file/read_file round trip");
    expect(support::list_dir(d.path()).size() == 1, "list_dir");
  }
  expect(!support::exists(dir), "TempDir removed");

  support::EnvMap env = platform::current_environment();
  env["SMOKE_VAR"] = "x y";
  const std::vector<std::string> args = {argv[0], "--echo", "a b", "say \"hi\"", "back\\slash\\", "", "q\\\\\"x"};
  support::RunResult r = support::run(args, env, std::chrono::seconds(20), {}, std::string("piped"));
  std::printf("  %s\n", r.describe().c_str());
  expect(r.out == "[a b][say \"hi\"][back\\slash\\][][q\\\\\"x]stdin=[piped]", "arguments and stdin round trip");
  expect(r.err == "x y", "the environment given");
  expect(r.exit_code == 7, "exit code");
  const std::string cmd = support::find_program({"cmd"});
  support::RunResult slow = support::run({cmd, "/c", "ping -n 30 127.0.0.1 >nul"}, env, std::chrono::milliseconds(500));
  expect(slow.timed_out, "killed at the deadline");
  support::ProcessOptions in_job;
  in_job.own_group = true;
  support::Process p({cmd, "/c", "ping -n 30 127.0.0.1 >nul"}, env, in_job);
  expect(p.running(), "a background process runs");
  p.kill();
  expect(!p.running(), "and is killed with its job");

  support::Socket l = support::listen_on("127.0.0.1");
  expect(l.local_port() > 0 && support::accepts(l.local_port()), "listen_on, accepts");
  expect(support::try_bind_shared("127.0.0.1", l.local_port()) != 0, "a bound port cannot be shared");
  auto listening = platform::listening_addresses(l.local_port());
  expect(listening && listening->count("127.0.0.1") == 1, "the kernel's table of listening sockets");
  std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
