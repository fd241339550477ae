// aps-auth: sign in to Autodesk Platform Services from the command line.
//
//   aps-auth login          3-legged sign-in through the browser; prints the token JSON
//   aps-auth token          2-legged (client credentials) token
//   aps-auth demo           the whole sign-in against a built-in mock server (no account)
//
// stdout carries only JSON (or, for access-token, the bare token); everything for the person goes
// to stderr, and no secret, code or token is ever written there. Exit codes: 0 success, 1
// authentication, network or server failure, 2 usage. Run `aps-auth --help` for the rest.
// SPDX-License-Identifier: MIT
#include "aps_auth.hpp"
#include "mock_aps_server.hpp"

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifdef _WIN32
#include <fcntl.h>
#include <io.h>
#include <shellapi.h>
#include <windows.h>
#endif

namespace {

namespace auth = aps::auth;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// ---- commands -----------------------------------------------------------------------------------

struct Args;
struct CommandInfo;

// Runs a command; its exit code.
using CommandHandler = int (*)(const Args& a, const CommandInfo& cmd);

// One command: its line in the usage, its own help, the options it takes and what runs it.
struct CommandInfo {
  const char* name;
  const char* summary;  // its line (or lines) under "commands:" in the usage
  const char* synopsis;
  const char* details;
  std::vector<std::string> options;  // besides --help
  CommandHandler run;
};

int cmd_login(const Args& a, const CommandInfo& cmd);
int cmd_token(const Args& a, const CommandInfo& cmd);
int cmd_refresh(const Args& a, const CommandInfo& cmd);
int cmd_access_token(const Args& a, const CommandInfo& cmd);
int cmd_revoke(const Args& a, const CommandInfo& cmd);
int cmd_logout(const Args& a, const CommandInfo& cmd);
int cmd_introspect(const Args& a, const CommandInfo& cmd);
int cmd_userinfo(const Args& a, const CommandInfo& cmd);
int cmd_demo(const Args& a, const CommandInfo& cmd);

const std::vector<std::string> kCommon = {"client-id", "client-secret", "scopes",
                                          "base-url",  "issuer",        "ca-file"};

std::vector<std::string> with_common(std::vector<std::string> extra) {
  extra.insert(extra.begin(), kCommon.begin(), kCommon.end());
  return extra;
}

// Every command, in the order of the usage: this table drives both the dispatch and the usage text.
const std::vector<CommandInfo> kCommands = {
    {"login", "3-legged sign-in through the browser (state + PKCE); prints the token JSON",
     "aps-auth login [--no-browser] [--timeout SECONDS] [--token-file PATH]",
     "3-legged sign-in: listens on the callback URL (loopback only), opens the browser, waits\n"
     "for the redirect, checks its state, exchanges the code (with PKCE), prints the token "
     "JSON.\n"
     "\n"
     "  --callback-url URL  APS_CALLBACK_URL (default: "
     "http://localhost:8080/api/auth/callback);\n"
     "                      must match the callback URL registered for the app exactly\n"
     "  --no-browser        do not open a browser: print the URL on stderr and wait\n"
     "  --timeout SECONDS   give up when no callback arrived by then (default: 300)\n"
     "  --token-file PATH   APS_TOKEN_FILE: also save the token there (mode 0600)\n"
     "\n"
     "$BROWSER, when set, is the program that opens the URL (a %s in it is replaced by the URL,\n"
     "else the URL is appended).\n",
     with_common({"callback-url", "no-browser", "timeout", "token-file"}), cmd_login},
    {"token", "2-legged token (client credentials; needs a client secret)", "aps-auth token",
     "A 2-legged token (client credentials) for --scopes; needs a client secret.\n",
     with_common({}), cmd_token},
    {"refresh", "a new token for a refresh token (they rotate: keep the new one)",
     "aps-auth refresh (--refresh-token TOKEN | --token-file PATH)",
     "Exchanges a refresh token for a new token and prints it. Refresh tokens are single-use:\n"
     "the old one stops working, keep the new one.\n"
     "\n"
     "  --refresh-token TOKEN  the refresh token (saved to --token-file too, when given)\n"
     "  --token-file PATH      APS_TOKEN_FILE: read the refresh token from this file, save the\n"
     "                         new token there\n",
     with_common({"refresh-token", "token-file"}), cmd_refresh},
    {"access-token",
     "only a valid access token, refreshed as needed through a token file\n"
     "                (curl -H \"Authorization: Bearer $(aps-auth access-token)\" ...)",
     "aps-auth access-token [--token-file PATH]",
     "Prints only a valid access token (no JSON), refreshing it through the token file when it\n"
     "expires within 5 minutes; with a client secret and no token file, a 2-legged token.\n"
     "Processes sharing a token file refresh one at a time.\n"
     "\n"
     "  --token-file PATH   APS_TOKEN_FILE: the file written by `aps-auth login --token-file`\n",
     with_common({"token-file"}), cmd_access_token},
    {"revoke", "revoke an access or refresh token",
     "aps-auth revoke --token TOKEN [--token-type-hint access_token|refresh_token]",
     "Revokes a token. Prints nothing; exit 0 on success.\n"
     "\n"
     "  --token TOKEN            the token to revoke\n"
     "  --token-type-hint HINT   access_token (default) or refresh_token\n",
     with_common({"token", "token-type-hint"}), cmd_revoke},
    {"logout", "revoke the token held in a token file, then delete the file",
     "aps-auth logout --token-file PATH",
     "Revokes the tokens held in the token file, then deletes the file.\n"
     "\n"
     "  --token-file PATH   APS_TOKEN_FILE: the token file\n",
     with_common({"token-file"}), cmd_logout},
    {"introspect", "ask the server about a token; prints its JSON answer",
     "aps-auth introspect --token TOKEN",
     "Asks the server whether a token is active; prints its JSON answer\n"
     "({active, scope, client_id, exp, ...}).\n"
     "\n"
     "  --token TOKEN   the token\n",
     with_common({"token"}), cmd_introspect},
    {"userinfo", "the signed-in user's profile (OIDC claims) as JSON",
     "aps-auth userinfo --token ACCESS_TOKEN",
     "Prints the signed-in user's profile (OIDC claims) as JSON.\n"
     "\n"
     "  --token TOKEN   a 3-legged access token\n",
     with_common({"token"}), cmd_userinfo},
    {"demo",
     "the whole sign-in against a built-in mock APS server: no account, no network",
     "aps-auth demo [--browser] [--timeout SECONDS] [--scopes \"A B\"]",
     "Starts a mock APS server on this machine and runs the whole 3-legged sign-in against it,\n"
     "telling each step on stderr: the authorize URL, the callback with its state checked, the\n"
     "code exchange with PKCE, a refresh (the refresh token rotates) and a userinfo call.\n"
     "Prints the token JSON. Needs no account and no network.\n"
     "\n"
     "  --browser           open the authorize URL in your browser, to click \"Allow\" yourself\n"
     "  --no-browser        the demo plays the browser itself (the default)\n"
     "  --timeout SECONDS   how long to wait for the callback (default: 300)\n"
     "  --scopes \"A B\"      the scopes to ask for (default: \"data:read openid\")\n",
     {"browser", "no-browser", "timeout", "scopes"},
     cmd_demo},
};

const CommandInfo* find_command(const std::string& name) {
  for (const auto& c : kCommands)
    if (name == c.name)
      return &c;
  return nullptr;
}

// Options that take a value; the rest are switches.
bool takes_value(const std::string& name) {
  return name != "no-browser" && name != "browser" && name != "help";
}

bool known_option(const std::string& name) {
  if (name == "help")
    return true;
  for (const auto& c : kCommands)
    for (const auto& o : c.options)
      if (o == name)
        return true;
  return false;
}

// ---- usage --------------------------------------------------------------------------------------

// The usage: this text around the commands of kCommands.
std::string usage() {
  std::string out =
      "usage: aps-auth COMMAND [OPTIONS]\n"
      "\n"
      "Sign in to Autodesk Platform Services (APS) with OAuth 2.0.\n"
      "JSON goes to stdout, messages for you to stderr.\n"
      "\n"
      "commands:\n";
  for (const auto& c : kCommands) {
    const std::string name = c.name;
    out +=
        "  " + name + std::string(name.size() < 14 ? 14 - name.size() : 1, ' ') + c.summary + "\n";
  }
  return out +
         "\n"
         "common options (each falls back to its environment variable, then to the default):\n"
         "  --client-id ID          APS_CLIENT_ID\n"
         "  --client-secret SECRET  APS_CLIENT_SECRET; none: a public client (PKCE). Prefer the\n"
         "                          variable: command lines are visible to other users\n"
         "  --scopes \"A B\"          APS_SCOPES, space-separated (default: data:read)\n"
         "  --base-url URL          APS_BASE_URL (default: https://developer.api.autodesk.com)\n"
         "  --issuer URL            APS_ISSUER: the endpoints by OpenID Connect discovery instead\n"
         "  --ca-file PATH          APS_CA_FILE: extra trusted CA certificates (PEM);\n"
         "                          SSL_CERT_FILE is honoured too\n"
         "\n"
         "Run `aps-auth COMMAND --help` for the options of one command.\n"
         "Exit codes: 0 success, 1 authentication, network or server failure, 2 usage.\n";
}

void print_command_help(std::ostream& out, const CommandInfo& c) {
  out << "usage: " << c.synopsis << " [OPTIONS]\n\n" << c.details;
  bool common = false;
  for (const auto& o : c.options)
    common = common || o == "client-id";
  if (common)
    out << "\ncommon options: --client-id, --client-secret, --scopes, --base-url, --issuer,\n"
           "--ca-file (see `aps-auth --help`).\n";
}

// A usage error: message and usage on stderr, exit 2.
struct UsageError {
  std::string message;
  const CommandInfo* command = nullptr;
};

// A word from the command line, quoted for an error message, unless it may be a secret (a token or
// a secret put in the wrong place): those are long or use characters commands and options do not.
std::string shown(const std::string& word) {
  bool plain = word.size() <= 24;
  for (char c : word)
    plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ||
                      c == '.' || c == ':');
  return plain ? "'" + word + "'" : "(a value not shown: it may be a secret)";
}

// ---- command line -------------------------------------------------------------------------------

struct Args {
  std::string command;
  std::map<std::string, std::string> values;  // options given, switches as "1"
  bool help = false;
  bool version = false;
};

// Takes the option argv[i] ("--name", "--name=value", or "--name" then the value in argv[i + 1],
// which then is skipped) into a.values; switches get "1".
void take_option(Args& a, int& i, int argc, char** argv) {
  std::string name = std::string(argv[i]).substr(2), value;
  std::size_t eq = name.find('=');
  bool inline_value = eq != std::string::npos;
  if (inline_value) {
    value = name.substr(eq + 1);
    name.erase(eq);
  }
  if (!known_option(name))
    throw UsageError{"unknown option --" + name, find_command(a.command)};
  if (takes_value(name)) {
    if (!inline_value) {
      if (i + 1 >= argc || std::string(argv[i + 1]).compare(0, 2, "--") == 0)
        throw UsageError{"option --" + name + " needs a value", find_command(a.command)};
      value = argv[++i];
    }
  } else {
    if (inline_value)
      throw UsageError{"option --" + name + " takes no value", find_command(a.command)};
    value = "1";
  }
  a.values[name] = value;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      a.help = true;
      continue;
    }
    if (arg == "--version") {
      a.version = true;
      continue;
    }
    if (arg.size() > 2 && arg.compare(0, 2, "--") == 0) {
      take_option(a, i, argc, argv);
      continue;
    }
    if (arg.size() > 1 && arg[0] == '-')
      throw UsageError{"unknown option " + arg, find_command(a.command)};
    if (a.command.empty()) {
      a.command = arg;
      if (!find_command(arg) && arg != "help")
        throw UsageError{"unknown command " + shown(arg), nullptr};
      continue;
    }
    if (a.command == "help" && find_command(arg)) {  // `aps-auth help login`
      a.command = arg;
      a.help = true;
      continue;
    }
    throw UsageError{"unexpected argument " + shown(arg) + " (values go after their option)",
                     find_command(a.command)};
  }
  if (a.command == "help") {
    a.command.clear();
    a.help = true;
  }
  return a;
}

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// The option's value, else its environment variable's (when not empty), else the default.
std::string option(const Args& a, const std::string& name, const char* env_name,
                   const std::string& fallback = "") {
  if (auto it = a.values.find(name); it != a.values.end())
    return it->second;
  if (env_name) {
    std::string v = env_or_empty(env_name);
    if (!v.empty())
      return v;
  }
  return fallback;
}

bool flag(const Args& a, const std::string& name) {
  return a.values.count(name) != 0;
}

std::vector<std::string> split_scopes(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;)
    out.push_back(w);
  return out;
}

std::chrono::milliseconds parse_timeout(const Args& a, const CommandInfo& cmd) {
  std::string text = option(a, "timeout", nullptr, "300");
  char* end = nullptr;
  double seconds = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(seconds) || seconds <= 0 ||
      seconds > 7 * 24 * 3600.0)
    throw UsageError{"--timeout needs a positive number of seconds (got " + shown(text) + ")",
                     &cmd};
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000.0));
}

// Config from the options and the environment. Discovery (--issuer) talks to the network, so it can
// fail with aps::auth::Error.
auth::Config make_config(const Args& a, const CommandInfo& cmd, bool need_client_id) {
  auth::Config c;
  c.client_id = option(a, "client-id", "APS_CLIENT_ID");
  c.client_secret = option(a, "client-secret", "APS_CLIENT_SECRET");
  c.scopes = split_scopes(option(a, "scopes", "APS_SCOPES", "data:read"));
  if (c.scopes.empty())
    throw UsageError{"--scopes is empty", &cmd};
  c.callback_url = option(a, "callback-url", "APS_CALLBACK_URL", c.callback_url);
  c.ca_file = option(a, "ca-file", "APS_CA_FILE");
  if (need_client_id && c.client_id.empty())
    throw UsageError{"no client id: pass --client-id or set APS_CLIENT_ID", &cmd};
  std::string issuer = option(a, "issuer", "APS_ISSUER");
  std::string base_url = option(a, "base-url", "APS_BASE_URL");
  if (!issuer.empty())
    c.endpoints = auth::discover(c, issuer);
  else if (!base_url.empty())
    c.endpoints = auth::Endpoints::from_base_url(base_url);
  return c;
}

void print_json(const std::string& json) {
  std::cout << json << '\n';
  std::cout.flush();
}

// No token in the token file: the user has not signed in (exit 1, not a usage error).
struct NotSignedIn {
  std::string path;
};

// Saves the token when a token file is given, then prints it. A failed save still prints the token,
// so the new (rotated) refresh token is not lost, and then fails.
void save_then_print(const std::string& token_file, const auth::Token& token,
                     auth::TokenStore* store = nullptr) {
  if (!token_file.empty()) {
    try {
      if (store) {
        store->save(token);
      } else {
        auth::FileTokenStore file(token_file);
        file.save(token);
      }
    } catch (const auth::Error&) {
      print_json(token.to_json());
      std::cerr << "aps-auth: the token could not be saved to '" << token_file
                << "'; it is printed on stdout instead: keep it.\n";
      throw;
    }
    std::cerr << "Saved the token to " << token_file << ".\n";
  }
  print_json(token.to_json());
}

// ---- commands -----------------------------------------------------------------------------------

int cmd_login(const Args& a, const CommandInfo& cmd) {
  auth::Config config = make_config(a, cmd, true);
  auth::LoginOptions opts;
  opts.timeout = parse_timeout(a, cmd);
  opts.open_browser = !flag(a, "no-browser");
  opts.browser = [](const std::string& url) {
    bool ok = auth::open_browser(url);
    if (ok)
      std::cerr << "Opened the sign-in page in your browser (if none appeared, run again with "
                   "--no-browser).\n";
    else
      std::cerr << "Could not open a browser.\n";
    return ok;
  };
  opts.show_url = [](const std::string& url) {
    std::cerr << "Open this URL in a browser on this machine to sign in:\n\n  " << url << "\n\n";
  };
  const long long seconds = std::chrono::duration_cast<std::chrono::seconds>(opts.timeout).count();
  opts.on_listening = [seconds](auth::LoopbackListener& listener) {
    std::cerr << "Waiting up to " << seconds << " s for the sign-in callback on "
              << listener.redirect_uri() << " ...\n";
  };
  std::string token_file = option(a, "token-file", "APS_TOKEN_FILE");
  auth::Token token = auth::login(config, opts);
  std::cerr << "Signed in.\n";
  save_then_print(token_file, token);
  return kExitOk;
}

int cmd_token(const Args& a, const CommandInfo& cmd) {
  auth::Config config = make_config(a, cmd, true);
  if (config.client_secret.empty())
    throw UsageError{
        "a 2-legged token needs a client secret: pass --client-secret or set APS_CLIENT_SECRET",
        &cmd};
  print_json(auth::client_credentials(config).to_json());
  return kExitOk;
}

std::string required(const Args& a, const std::string& name, const CommandInfo& cmd) {
  std::string v = option(a, name, nullptr);
  if (v.empty())
    throw UsageError{"missing --" + name, &cmd};
  return v;
}

int cmd_refresh(const Args& a, const CommandInfo& cmd) {
  std::string refresh_token = option(a, "refresh-token", nullptr);
  std::string token_file = option(a, "token-file", "APS_TOKEN_FILE");
  if (refresh_token.empty() && token_file.empty())
    throw UsageError{"give --refresh-token TOKEN, or --token-file PATH (APS_TOKEN_FILE)", &cmd};
  auth::Config config = make_config(a, cmd, true);
  if (token_file.empty()) {
    print_json(auth::refresh(config, refresh_token).to_json());
    return kExitOk;
  }
  // Read, refresh and write under the file's lock, so that another process sharing the file never
  // refreshes the same (single-use) refresh token.
  auth::FileTokenStore store(token_file);
  std::unique_ptr<auth::StoreLock> lock = store.lock();
  if (refresh_token.empty()) {
    auth::Token stored;
    if (!store.load(stored))
      throw NotSignedIn{token_file};
    if (stored.refresh_token.empty())
      throw auth::Error(auth::ErrorKind::usage,
                        "the token in '" + token_file +
                            "' has no refresh token (a 2-legged "
                            "token?); sign in with `aps-auth login --token-file`");
    refresh_token = stored.refresh_token;
  }
  save_then_print(token_file, auth::refresh(config, refresh_token), &store);
  return kExitOk;
}

int cmd_access_token(const Args& a, const CommandInfo& cmd) {
  std::string token_file = option(a, "token-file", "APS_TOKEN_FILE");
  auth::Config config = make_config(a, cmd, true);
  if (token_file.empty()) {
    if (config.client_secret.empty())
      throw UsageError{
          "give --token-file PATH (APS_TOKEN_FILE) of a signed-in user, or a client secret for a "
          "2-legged token",
          &cmd};
    std::cout << auth::client_credentials(config).access_token << '\n';
    return kExitOk;
  }
  auto store = std::make_shared<auth::FileTokenStore>(token_file);
  auth::Token stored;
  if (!store->load(stored))
    throw NotSignedIn{token_file};
  auth::TokenSourceOptions opts;
  // A 2-legged token in the file is renewed with client credentials, not a refresh token.
  opts.client_credentials = stored.refresh_token.empty() && !config.client_secret.empty();
  auth::TokenSource source(config, store, opts);
  std::string access_token;
  try {
    access_token = source.access_token();
  } catch (const auth::Error& e) {
    // A new token that could not be saved is kept in memory: print it whole rather than lose the
    // rotated refresh token (stdout is the only place a token may go), then fail.
    if (e.kind() == auth::ErrorKind::io) {
      try {
        auth::Token kept = source.token();
        if (!kept.expired() && kept.access_token != stored.access_token) {
          print_json(kept.to_json());
          std::cerr << "aps-auth: the new token could not be saved to '" << token_file
                    << "'; it is printed on stdout, with its new refresh token: keep it.\n";
        }
      } catch (const auth::Error&) {
      }
    }
    throw;
  }
  std::cout << access_token << '\n';
  return kExitOk;
}

int cmd_logout(const Args& a, const CommandInfo& cmd) {
  std::string token_file = option(a, "token-file", "APS_TOKEN_FILE");
  if (token_file.empty())
    throw UsageError{"missing --token-file PATH (or APS_TOKEN_FILE)", &cmd};
  auth::Config config = make_config(a, cmd, true);
  auth::FileTokenStore store(token_file);
  std::unique_ptr<auth::StoreLock> lock = store.lock();
  auth::Token stored;
  if (!store.load(stored)) {
    std::cerr << "No token file at '" << token_file << "': nothing to sign out.\n";
    return kExitOk;
  }
  try {
    // Revoking the refresh token ends the grant; the access token is revoked too while it is still
    // valid.
    if (!stored.refresh_token.empty())
      auth::revoke(config, stored.refresh_token, auth::TokenTypeHint::refresh_token);
    if (!stored.expired())
      auth::revoke(config, stored.access_token, auth::TokenTypeHint::access_token);
  } catch (const auth::Error&) {
    std::cerr << "aps-auth: the token could not be revoked, so '" << token_file
              << "' was kept; run logout again, or delete the file to forget the token on this "
                 "machine only.\n";
    throw;
  }
  store.clear();
  std::cerr << "Signed out: the token was revoked and '" << token_file << "' deleted.\n";
  return kExitOk;
}

int cmd_revoke(const Args& a, const CommandInfo& cmd) {
  std::string token = required(a, "token", cmd);
  std::string hint = option(a, "token-type-hint", nullptr, "access_token");
  if (hint != "access_token" && hint != "refresh_token")
    throw UsageError{"--token-type-hint is access_token or refresh_token (got " + shown(hint) + ")",
                     &cmd};
  auth::Config config = make_config(a, cmd, true);
  auth::revoke(config, token,
               hint == "refresh_token" ? auth::TokenTypeHint::refresh_token
                                       : auth::TokenTypeHint::access_token);
  std::cerr << "Revoked.\n";
  return kExitOk;
}

int cmd_introspect(const Args& a, const CommandInfo& cmd) {
  std::string token = required(a, "token", cmd);
  auth::Config config = make_config(a, cmd, true);
  print_json(auth::introspect(config, token).json);
  return kExitOk;
}

int cmd_userinfo(const Args& a, const CommandInfo& cmd) {
  std::string token = required(a, "token", cmd);
  auth::Config config = make_config(a, cmd, false);  // a bearer token is all userinfo needs
  print_json(auth::userinfo(config, token).json);
  return kExitOk;
}

int run(int argc, char** argv) {
  Args a = parse_args(argc, argv);
  if (a.version) {
    std::cout << "aps-auth " << auth::version() << '\n';
    return kExitOk;
  }
  const CommandInfo* cmd = find_command(a.command);
  if (a.help) {
    if (cmd)
      print_command_help(std::cout, *cmd);
    else
      std::cout << usage();
    return kExitOk;
  }
  if (!cmd)
    throw UsageError{"no command given", nullptr};
  for (const auto& [name, value] : a.values) {
    bool allowed = false;
    for (const auto& o : cmd->options)
      allowed = allowed || o == name;
    if (!allowed)
      throw UsageError{"option --" + name + " does not apply to `" + a.command + "`", cmd};
  }
  return cmd->run(a, *cmd);
}

// ---- demo ---------------------------------------------------------------------------------------

// Everything the demo tells the person, on stderr, one step at a time.
void say(const std::string& words) {
  std::cerr << "demo: " << words << '\n';
}

// The demo: a mock of APS Authentication v2 on 127.0.0.1 (plain HTTP is allowed to this machine
// only) and the whole 3-legged sign-in against it, told step by step.
class Demo {
 public:
  Demo(std::vector<std::string> scopes, bool real_browser)
      : real_browser_(real_browser), mock_(mock_options()) {
    say("started a mock APS server on " + mock_.base_url() +
        " (this machine only; no account, no network)");
    config_.client_id = kClientId;  // no secret: a public (desktop) app, so PKCE carries the proof
    config_.scopes = std::move(scopes);
    config_.callback_url = "http://127.0.0.1:0/api/auth/callback";  // port 0: any free port
    config_.endpoints = auth::Endpoints::from_base_url(mock_.base_url());
    config_.proxy = "direct";  // the mock is on this machine, whatever the proxy settings say
  }
  ~Demo() { join_browser(); }
  Demo(const Demo&) = delete;
  Demo& operator=(const Demo&) = delete;

  // The sign-in: listener, authorize URL, browser, callback with its state checked, code exchange.
  auth::Token sign_in(std::chrono::milliseconds timeout) {
    auth::LoginOptions opts;
    opts.timeout = timeout;
    opts.on_listening = [this](auth::LoopbackListener& listener) { register_callback(listener); };
    opts.browser = [this](const std::string& url) { return open_authorize_url(url); };
    auth::Token token;
    try {
      token = auth::login(config_, opts);
    } catch (const auth::Error&) {
      join_browser();
      std::lock_guard<std::mutex> lk(browser_mutex_);
      if (!browser_failure_.empty())
        throw auth::Error(auth::ErrorKind::bad_response, "demo: " + browser_failure_);
      throw;
    }
    join_browser();
    say("callback received: its state matched, the listener answered the browser with a \"Signed "
        "in\" page");
    say("exchanged the code for a token (code_verifier sent; the mock checked it against the "
        "code_challenge): access token valid for " +
        std::to_string(token.expires_in.count()) + " s" +
        (token.refresh_token.empty() ? "" : ", with a refresh token") +
        (token.id_token.empty()
             ? ""
             : ", and an id_token whose signature, issuer, audience and nonce were verified"));
    return token;
  }

  // A refresh: APS refresh tokens are single-use and rotate, the old one is then refused.
  auth::Token rotate(const auth::Token& token) {
    const std::string first_refresh_token = token.refresh_token;
    if (first_refresh_token.empty())
      return token;
    auth::Token next = auth::refresh(config_, first_refresh_token);
    say(std::string("refreshed: a new access token and a new refresh token (") +
        (next.refresh_token != first_refresh_token ? "rotated" : "NOT rotated") + ")");
    try {
      (void)auth::refresh(config_, first_refresh_token);
      say("the old refresh token still works: this server does not rotate");
    } catch (const auth::Error& e) {
      say(std::string("the old refresh token is now refused (") +
          (e.details().error.empty() ? auth::to_string(e.kind()) : e.details().error) +
          "): always keep the newest one");
    }
    return next;
  }

  // userinfo with the access token.
  void show_user(const auth::Token& token) {
    auth::UserInfo user = auth::userinfo(config_, token.access_token);
    say("userinfo: signed in as " + (user.name.empty() ? user.sub : user.name) +
        (user.email.empty() ? "" : " <" + user.email + ">") + " (sub " + user.sub + ")");
  }

  // What the mock served.
  void tell_requests() const {
    const int authorizes = mock_.count("authorize"), tokens = mock_.count("token");
    say("the mock served " + std::to_string(authorizes) + " authorize and " +
        std::to_string(tokens) +
        " token requests; the token JSON (the newest token) follows on stdout");
  }

 private:
  static constexpr const char* kClientId = "aps-auth-demo";

  // The demo app is registered once the listener has a port (register_callback).
  static aps_mock::Options mock_options() {
    aps_mock::Options o;
    o.consent = aps_mock::Consent::page;
    o.clients = {{kClientId, "", {}}};
    return o;
  }

  void register_callback(auth::LoopbackListener& listener) {
    callback_ = listener.redirect_uri();
    aps_mock::Options o = mock_.options();
    o.clients = {{kClientId, "", {callback_}}};  // the app's registered callback, exactly
    mock_.set_options(o);
    std::string where;
    for (const auto& addr : listener.bound_addresses())
      where += (where.empty() ? "" : ", ") + addr;
    say("listening for the sign-in callback on " + callback_ + " (bound to " + where +
        " only: loopback, no other interface)");
  }

  bool open_authorize_url(const std::string& url) {
    say("authorize URL (state: 128 random bits; PKCE: code_challenge = "
        "BASE64URL(SHA-256(verifier)), S256):\n\n  " +
        url + "\n");
    bool opened = real_browser_ && auth::open_browser(url);
    if (opened)
      say("opened it in your browser: press \"Allow\" on the mock consent page");
    else if (real_browser_)
      say("could not open a browser");
    if (!opened)
      play_browser(url);
    say("waiting for the browser to come back with a code (its state is checked before anything "
        "else)...");
    return true;
  }

  // The mock user, clicking "Allow" on the consent page: the demo plays the browser on a thread.
  void play_browser(const std::string& url) {
    say("no browser needed: the demo plays the browser and the user, who presses \"Allow\" on the "
        "consent page");
    browser_ = std::thread([this, url] { browse(url); });
  }

  // If the played browser does not get back to the callback, it ends the wait the way a server
  // would, with an error= callback carrying the right state (the listener belongs to login(), so
  // the thread must not touch it).
  void browse(const std::string& url) {
    aps_mock::BrowseResult r = aps_mock::follow_like_browser(url, "", 30000);
    if (r.status == 200 && r.final_url.rfind(callback_ + "?", 0) == 0)
      return;
    {
      std::lock_guard<std::mutex> lk(browser_mutex_);
      browser_failure_ =
          "the played browser stopped at " + r.final_url.substr(0, r.final_url.find('?')) +
          (r.status ? " (HTTP " + std::to_string(r.status) + ")" : " (" + r.body + ")");
    }
    std::size_t at = url.find("&state=");
    std::string state =
        at == std::string::npos ? "" : url.substr(at + 7, url.find('&', at + 7) - at - 7);
    auto u = callback_.find("/", callback_.find("://") + 3);
    httplib::Client client(callback_.substr(0, u));
    client.set_connection_timeout(std::chrono::seconds(5));
    (void)client.Get(callback_.substr(u) + "?error=demo_browser_failed&state=" + state);
  }

  void join_browser() {
    if (browser_.joinable())
      browser_.join();
  }

  const bool real_browser_;
  aps_mock::Server mock_;
  auth::Config config_;
  std::mutex browser_mutex_;
  std::thread browser_;
  std::string browser_failure_;  // guarded by browser_mutex_
  std::string callback_;  // the listener's redirect_uri, set before the browser thread starts
};

int cmd_demo(const Args& a, const CommandInfo& cmd) {
  const bool real_browser = flag(a, "browser") && !flag(a, "no-browser");
  const std::chrono::milliseconds timeout = parse_timeout(a, cmd);
  std::vector<std::string> scopes = split_scopes(option(a, "scopes", nullptr, "data:read openid"));
  if (scopes.empty())
    throw UsageError{"--scopes is empty", &cmd};
  Demo demo(std::move(scopes), real_browser);
  auth::Token token = demo.sign_in(timeout);
  token = demo.rotate(token);
  demo.show_user(token);
  demo.tell_requests();
  print_json(token.to_json());
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
#ifdef _WIN32
  // stdout in binary mode: a token or JSON ends in "\n" as on POSIX (a "\r" would stick to a token read with a
  // shell's $(...)). The arguments as UTF-8, from the wide command line: argv is in the ANSI code page, which
  // cannot hold every user name or path.
  _setmode(_fileno(stdout), _O_BINARY);
  std::vector<std::string> utf8;
  int wide_count = 0;
  if (wchar_t** wide = ::CommandLineToArgvW(::GetCommandLineW(), &wide_count)) {
    for (int i = 0; i < wide_count; ++i) {
      const int n = ::WideCharToMultiByte(CP_UTF8, 0, wide[i], -1, nullptr, 0, nullptr, nullptr);
      std::string arg(static_cast<std::size_t>(n > 0 ? n : 1), '\0');
      if (n > 0) ::WideCharToMultiByte(CP_UTF8, 0, wide[i], -1, &arg[0], n, nullptr, nullptr);
      arg.resize(std::char_traits<char>::length(arg.c_str()));
      utf8.push_back(arg);
    }
    ::LocalFree(wide);
  }
  std::vector<char*> utf8_argv;
  for (auto& a : utf8) utf8_argv.push_back(&a[0]);
  utf8_argv.push_back(nullptr);
  if (!utf8.empty()) {
    argc = static_cast<int>(utf8.size());
    argv = utf8_argv.data();
  }
#endif
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "aps-auth: " << e.message << "\n\n";
    if (e.command)
      print_command_help(std::cerr, *e.command);
    else
      std::cerr << usage();
    return kExitUsage;
  } catch (const NotSignedIn& e) {
    std::cerr << "aps-auth: no token in '" << e.path
              << "'; sign in first: aps-auth login --token-file '" << e.path << "'\n";
    return kExitFailure;
  } catch (const auth::Error& e) {
    std::cerr << "aps-auth: " << e.what() << '\n';
    if (e.kind() != auth::ErrorKind::usage)
      return kExitFailure;
    std::cerr << "Run `aps-auth --help` for the usage.\n";
    return kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "aps-auth: unexpected error: " << e.what() << '\n';
    return kExitFailure;
  }
}
