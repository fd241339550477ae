// aps-auth: sign in to Autodesk Platform Services from the command line.
//
//   aps-auth login          3-legged sign-in through the browser; prints the token JSON
//   aps-auth status         who is signed in, until when
//   aps-auth token          2-legged (client credentials) token
//   aps-auth demo           the whole sign-in against a built-in mock server (no account)
//
// stdout carries only JSON (or, for access-token, the bare token, and for completion, the script);
// everything for the person goes to stderr, and no secret, code or token is ever written there.
// Exit codes: 0 success, 1 authentication, network or server failure (status: not signed in), 2
// usage, 130 cancelled with Ctrl-C. Run `aps-auth --help` for the rest.
// SPDX-License-Identifier: MIT
#include "aps_auth.hpp"
#include "mock_aps_server.hpp"
#if APS_AUTH_CLI_REDIS
#include "aps_auth_redis.hpp"  // --token-store redis://... (built with hiredis)
#endif

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
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
#else
#include <unistd.h>
#endif

namespace {

namespace auth = aps::auth;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInterrupted = 130;  // Ctrl-C, as shells report a process ended by SIGINT

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
int cmd_status(const Args& a, const CommandInfo& cmd);
int cmd_token(const Args& a, const CommandInfo& cmd);
int cmd_refresh(const Args& a, const CommandInfo& cmd);
int cmd_access_token(const Args& a, const CommandInfo& cmd);
int cmd_revoke(const Args& a, const CommandInfo& cmd);
int cmd_logout(const Args& a, const CommandInfo& cmd);
int cmd_introspect(const Args& a, const CommandInfo& cmd);
int cmd_userinfo(const Args& a, const CommandInfo& cmd);
int cmd_demo(const Args& a, const CommandInfo& cmd);
int cmd_profile(const Args& a, const CommandInfo& cmd);
int cmd_completion(const Args& a, const CommandInfo& cmd);

const std::vector<std::string> kCommon = {
    "client-id", "client-secret", "client-secret-from", "scopes", "base-url", "issuer", "ca-file", "profile"};

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
     "  --token-file PATH   APS_TOKEN_FILE: save the token there (mode 0600) instead of in the\n"
     "                      profile's token file\n"
     "  --token-store URL   APS_TOKEN_STORE: redis://[:PASSWORD@]HOST:PORT/DB instead of a token\n"
     "                      file, shared by every machine using it (a password only in the\n"
     "                      variable); --token-key KEY (default: aps-auth:token:<client id>)\n"
     "  --save-profile      save the settings used (client id, scopes, callback URL, base URL,\n"
     "                      issuer; never the secret) as the profile's, after a sign-in succeeded\n"
     "\n"
     "$BROWSER, when set, is the program that opens the URL (a %s in it is replaced by the URL,\n"
     "else the URL is appended).\n",
     with_common({"callback-url", "no-browser", "timeout", "token-file", "token-store", "token-key", "save-profile"}),
     cmd_login},
    {"status", "who is signed in, with which scopes, until when; exit 1 when not signed in",
     "aps-auth status [--token-file PATH] [--json]",
     "Tells who is signed in (name, email, id: from the stored id_token once its signature\n"
     "is verified, else from one userinfo call when the scopes allow it), the scopes, when\n"
     "the access token expires, the age of the refresh token against APS's 15-day limit, and\n"
     "the token file with its permissions. Prints no token. Exit 0 when the token is usable\n"
     "(valid, or renewable with its refresh token), 1 when not signed in or expired beyond\n"
     "refresh.\n"
     "\n"
     "  --token-file PATH   APS_TOKEN_FILE: the token file\n"
     "  --json              the same as JSON on stdout (and nothing on stderr)\n",
     with_common({"token-file", "json"}), cmd_status},
    {"token", "2-legged token (client credentials; needs a client secret)", "aps-auth token",
     "A 2-legged token (client credentials) for --scopes; needs a client secret.\n", with_common({}), cmd_token},
    {"refresh", "a new token for a refresh token (they rotate: keep the new one)",
     "aps-auth refresh (--refresh-token-from FILE | --refresh-token - | --token-file PATH)",
     "Exchanges a refresh token for a new token and prints it. Refresh tokens are single-use:\n"
     "the old one stops working, keep the new one.\n"
     "\n"
     "  --refresh-token-from FILE  APS_REFRESH_TOKEN: the refresh token, read from FILE (- for\n"
     "                         stdin); --refresh-token TOKEN works too, but other users can read\n"
     "                         command lines. The new token is saved to --token-file too, when given\n"
     "  --token-file PATH      APS_TOKEN_FILE: read the refresh token from this file, save the\n"
     "                         new token there\n"
     "  --token-store URL   APS_TOKEN_STORE: redis://[:PASSWORD@]HOST:PORT/DB instead of a token\n"
     "                      file, shared by every machine using it (a password only in the\n"
     "                      variable); --token-key KEY (default: aps-auth:token:<client id>)\n",
     with_common({"refresh-token", "refresh-token-from", "token-file", "token-store", "token-key"}), cmd_refresh},
    {"access-token",
     "only a valid access token, refreshed as needed through a token file\n"
     "                (curl -H \"Authorization: Bearer $(aps-auth access-token)\" ...)",
     "aps-auth access-token [--token-file PATH]",
     "Prints only a valid access token (no JSON), refreshing it through the token file when it\n"
     "expires within 5 minutes; with a client secret and no token file, a 2-legged token.\n"
     "Processes sharing a token file refresh one at a time.\n"
     "\n"
     "  --token-file PATH   APS_TOKEN_FILE: the file written by `aps-auth login --token-file`\n"
     "  --token-store URL   APS_TOKEN_STORE: redis://[:PASSWORD@]HOST:PORT/DB instead of a token\n"
     "                      file, shared by every machine using it (a password only in the\n"
     "                      variable); --token-key KEY (default: aps-auth:token:<client id>)\n",
     with_common({"token-file", "token-store", "token-key"}), cmd_access_token},
    {"revoke", "revoke an access or refresh token",
     "aps-auth revoke (--token-from FILE | --token -) [--token-type-hint access_token|refresh_token]",
     "Revokes a token. Prints nothing; exit 0 on success.\n"
     "\n"
     "  --token-from FILE        APS_TOKEN: the token to revoke, read from FILE (- for stdin);\n"
     "                           --token TOKEN works too, but other users can read command lines\n"
     "  --token-type-hint HINT   access_token (default) or refresh_token\n",
     with_common({"token", "token-from", "token-type-hint"}), cmd_revoke},
    {"logout", "revoke the token held in a token file, then delete the file", "aps-auth logout --token-file PATH",
     "Revokes the tokens held in the token file, then deletes the file.\n"
     "\n"
     "  --token-file PATH   APS_TOKEN_FILE: the token file\n"
     "  --token-store URL   APS_TOKEN_STORE: redis://[:PASSWORD@]HOST:PORT/DB instead of a token\n"
     "                      file, shared by every machine using it (a password only in the\n"
     "                      variable); --token-key KEY (default: aps-auth:token:<client id>)\n",
     with_common({"token-file", "token-store", "token-key"}), cmd_logout},
    {"introspect", "ask the server about a token; prints its JSON answer",
     "aps-auth introspect (--token-from FILE | --token -)",
     "Asks the server whether a token is active; prints its JSON answer\n"
     "({active, scope, client_id, exp, ...}).\n"
     "\n"
     "  --token-from FILE   APS_TOKEN: the token, read from FILE (- for stdin); --token TOKEN\n"
     "                      works too, but other users can read command lines\n",
     with_common({"token", "token-from"}), cmd_introspect},
    {"userinfo", "the signed-in user's profile (OIDC claims) as JSON",
     "aps-auth userinfo (--token-from FILE | --token -)",
     "Prints the signed-in user's profile (OIDC claims) as JSON.\n"
     "\n"
     "  --token-from FILE   APS_TOKEN: a 3-legged access token, read from FILE (- for stdin);\n"
     "                      --token TOKEN works too, but other users can read command lines\n",
     with_common({"token", "token-from"}), cmd_userinfo},
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
    {"profile",
     "list the profiles, or save settings for one (profile list | profile set ...)",
     "aps-auth profile list|set [--profile NAME] [--client-id ID] [--scopes \"A B\"] ...",
     "A profile is a name (--profile NAME, else APS_PROFILE, else \"default\") for a token file\n"
     "and saved settings, so that two apps (a test one, a production one) need no flags:\n"
     "  token file  $XDG_STATE_HOME/aps-auth/NAME.json (else ~/.local/state/...); the profile\n"
     "              \"default\" keeps the library's default file, token.json\n"
     "  settings    $XDG_CONFIG_HOME/aps-auth/profiles.json (else ~/.config/...), mode 0600:\n"
     "              client id, scopes, callback URL, base URL, issuer; never the secret\n"
     "Options and environment variables win over the saved settings.\n"
     "\n"
     "  profile list        the profiles, their settings and whether they are signed in\n"
     "                      (--json: as JSON on stdout)\n"
     "  profile set         saves the settings given as options for --profile NAME:\n"
     "                      --client-id, --scopes, --callback-url, --base-url, --issuer\n"
     "                      (an empty value removes one)\n",
     {"profile", "client-id", "scopes", "callback-url", "base-url", "issuer", "json"},
     cmd_profile},
    {"completion",
     "a completion script for bash or zsh: source <(aps-auth completion bash)",
     "aps-auth completion bash|zsh",
     "Prints a script that completes commands, options and file names, made from this program's\n"
     "own command table. Load it in the shell's start-up file:\n"
     "  bash (~/.bashrc):  source <(aps-auth completion bash)\n"
     "  zsh (~/.zshrc):    source <(aps-auth completion zsh)\n",
     {},
     cmd_completion},
};

// The words a command takes after its name (`aps-auth profile list`); the other commands take none.
const std::map<std::string, std::vector<std::string>> kOperands = {
    {"profile", {"list", "set"}},
    {"completion", {"bash", "zsh"}},
};

const CommandInfo* find_command(const std::string& name) {
  for (const auto& c : kCommands)
    if (name == c.name)
      return &c;
  return nullptr;
}

// Options that take a value; the rest are switches.
bool takes_value(const std::string& name) {
  return name != "no-browser" && name != "browser" && name != "help" && name != "json" && name != "save-profile";
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

// ---- completion ---------------------------------------------------------------------------------

// The words of the completion, from kCommands, kOperands and takes_value(), so that it cannot
// drift from them: the commands, the options that take a value ("--a|--b"), and one bash `case`
// branch per command setting its options and operands.
struct CompletionWords {
  std::string commands = "help", value_options, cases;
};

CompletionWords completion_words() {
  CompletionWords w;
  std::vector<std::string> with_value;
  for (const auto& c : kCommands) {
    w.commands += std::string(" ") + c.name;
    std::string opts = "--help", operands;
    for (const auto& o : c.options) {
      opts += " --" + o;
      if (takes_value(o) && std::find(with_value.begin(), with_value.end(), o) == with_value.end())
        with_value.push_back(o);
    }
    if (auto ops = kOperands.find(c.name); ops != kOperands.end())
      for (const auto& op : ops->second)
        operands += (operands.empty() ? "" : " ") + op;
    w.cases += std::string("    ") + c.name + ") opts=\"" + opts + "\"; operands=\"" + operands + "\" ;;\n";
  }
  for (const auto& o : with_value)
    w.value_options += (w.value_options.empty() ? "--" : "|--") + o;
  return w;
}

// The bash completion function.
std::string bash_completion() {
  const CompletionWords w = completion_words();
  const std::string& values = w.value_options;
  const std::string& commands = w.commands;
  const std::string& cases = w.cases;
  return "# bash completion for aps-auth, generated by `aps-auth completion bash`.\n"
         "_aps_auth() {\n"
         "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"\" cmd=\"\" operand=\"\" i opts=\"\" "
         "operands=\"\"\n"
         "  (( COMP_CWORD > 0 )) && prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
         "  # the command and its operand: the first words that are neither options nor their "
         "values\n"
         "  for (( i = 1; i < COMP_CWORD; i++ )); do\n"
         "    case \"${COMP_WORDS[i]}\" in\n"
         "      " +
         values +
         ") (( i++ )) ;;\n"
         "      -*) ;;\n"
         "      *) if [[ -z $cmd ]]; then cmd=\"${COMP_WORDS[i]}\"; elif [[ -z $operand ]]; then "
         "operand=\"${COMP_WORDS[i]}\"; fi ;;\n"
         "    esac\n"
         "  done\n"
         "  case \"$prev\" in\n"
         "    --token-file|--ca-file) COMPREPLY=( $(compgen -f -- \"$cur\") ); return ;;\n"
         // The profile names, from the CLI itself (as typed: the first word), out of `profile list --json`.
         R"sh(    --profile) COMPREPLY=( $(compgen -W "$("${COMP_WORDS[0]}" profile list --json 2>/dev/null |)sh"
         R"sh( grep -o '"name": *"[^"]*"' | sed 's/^"name": *"//; s/"$//')" -- "$cur") ); return ;;)sh"
         "\n"
         "    " +
         values +
         ") COMPREPLY=(); return ;;\n"
         "  esac\n"
         "  case \"$cmd\" in\n"
         "    \"\") COMPREPLY=( $(compgen -W \"" +
         commands +
         " --help --version\" -- \"$cur\") ); return ;;\n"
         "    help) COMPREPLY=( $(compgen -W \"" +
         commands.substr(5) + "\" -- \"$cur\") ); return ;;\n" + cases +
         "    *) return ;;\n"
         "  esac\n"
         "  if [[ -n $operands && -z $operand && $cur != -* ]]; then\n"
         "    COMPREPLY=( $(compgen -W \"$operands\" -- \"$cur\") )\n"
         "  else\n"
         "    COMPREPLY=( $(compgen -W \"$opts\" -- \"$cur\") )\n"
         "  fi\n"
         "}\n"
         "complete -F _aps_auth aps-auth\n";
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
    out += "  " + name + std::string(name.size() < 14 ? 14 - name.size() : 1, ' ') + c.summary + "\n";
  }
  return out +
         "\n"
         "common options (each falls back to its environment variable, then to the default):\n"
         "  --client-id ID          APS_CLIENT_ID\n"
         "  --client-secret-from FILE  APS_CLIENT_SECRET: the secret, read from FILE (- for stdin);\n"
         "                          none: a public client (PKCE). --client-secret SECRET works too,\n"
         "                          but command lines are visible to other users\n"
         "  --scopes \"A B\"          APS_SCOPES, space-separated (default: data:read)\n"
         "  --base-url URL          APS_BASE_URL (default: https://developer.api.autodesk.com)\n"
         "  --issuer URL            APS_ISSUER: the endpoints by OpenID Connect discovery instead\n"
         "  --ca-file PATH          APS_CA_FILE: extra trusted CA certificates (PEM);\n"
         "                          SSL_CERT_FILE is honoured too\n"
         "  --profile NAME          APS_PROFILE (default: default): the token file and the saved\n"
         "                          settings to use (see `aps-auth profile --help`); options and\n"
         "                          variables win over the saved settings\n"
         "APS_LOCK_TIMEOUT: seconds to wait for a token file another process has locked (default 30)\n"
         "\n"
         "Run `aps-auth COMMAND --help` for the options of one command.\n"
         "Exit codes: 0 success, 1 authentication, network or server failure (status: not\n"
         "signed in), 2 usage, 130 cancelled with Ctrl-C.\n";
}

void print_command_help(std::ostream& out, const CommandInfo& c) {
  out << "usage: " << c.synopsis << " [OPTIONS]\n\n" << c.details;
  bool common = false;
  for (const auto& o : c.options)
    common = common || o == "client-secret";
  if (common)
    out << "\ncommon options: --client-id, --client-secret-from, --scopes, --base-url, --issuer,\n"
           "--ca-file, --profile (see `aps-auth --help`).\n";
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
    plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':');
  return plain ? "'" + word + "'" : "(a value not shown: it may be a secret)";
}

// ---- command line -------------------------------------------------------------------------------

struct Args {
  std::string command;
  std::string operand;                        // the word after the command, for those of kOperands
  std::map<std::string, std::string> values;  // options given, switches as "1"
  bool help = false;
  bool version = false;
  std::string profile_name;                    // --profile, APS_PROFILE, else "default"
  std::map<std::string, std::string> profile;  // the settings saved for it, by option name
};

// The options whose value is a secret, and what to use instead of the command line.
bool is_secret_option(const std::string& name) {
  return name == "token" || name == "refresh-token" || name == "client-secret";
}

std::string secret_variable(const std::string& name) {
  return name == "token" ? "APS_TOKEN" : name == "refresh-token" ? "APS_REFRESH_TOKEN" : "APS_CLIENT_SECRET";
}

std::size_t argv_value_offset(const char* arg) {
  const char* eq = std::strchr(arg, '=');
  return eq ? static_cast<std::size_t>(eq - arg) + 1 : std::strlen(arg);
}

// A secret given on the command line: every local user can read it (ps, /proc/PID/cmdline) while we run. Its
// bytes in argv are overwritten at once (the kernel shows argv from our memory), and a one-line warning names
// the safer forms.
void blank_secret_argument(const std::string& name, char* value) {
  std::memset(value, 'x', std::strlen(value));
  std::cerr << "aps-auth: warning: --" << name << " on the command line is visible to other users; "
            << "it was blanked now, but use --" << name << "-from FILE, --" << name << " - (stdin) or "
            << secret_variable(name) << "\n";
}

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
    if (is_secret_option(name) && value != "-")
      blank_secret_argument(name, inline_value ? argv[i] + argv_value_offset(argv[i]) : argv[i]);
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
    if (auto ops = kOperands.find(a.command); ops != kOperands.end() && a.operand.empty()) {
      for (const auto& op : ops->second)
        if (arg == op)
          a.operand = arg;
      if (!a.operand.empty())
        continue;
    }
    if (a.command == "help" && find_command(arg)) {  // `aps-auth help login`
      a.command = arg;
      a.help = true;
      continue;
    }
    throw UsageError{"unexpected argument " + shown(arg) + " (values go after their option)", find_command(a.command)};
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

// The option's value, else its environment variable's (when not empty), else the profile's saved
// setting, else the default.
std::string option(const Args& a, const std::string& name, const char* env_name, const std::string& fallback = "") {
  if (auto it = a.values.find(name); it != a.values.end())
    return it->second;
  if (env_name) {
    std::string v = env_or_empty(env_name);
    if (!v.empty())
      return v;
  }
  if (auto it = a.profile.find(name); it != a.profile.end() && !it->second.empty())
    return it->second;
  return fallback;
}

// One line of a file or of stdin ("-"), without its line end.
std::string read_secret_line(const std::string& path, const std::string& what) {
  std::string line;
  if (path == "-") {
    std::getline(std::cin, line);
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in)
      throw auth::Error(auth::ErrorKind::io, "cannot read " + what + " from '" + path + "'");
    std::getline(in, line);
  }
  if (!line.empty() && line.back() == '\r')
    line.pop_back();
  return line;
}

// A secret option: --name VALUE (blanked in argv, see blank_secret_argument), --name - (stdin),
// --name-from FILE (- for stdin), else its environment variable.
std::string secret(const Args& a, const std::string& name) {
  auto it = a.values.find(name);
  if (it != a.values.end())
    return it->second == "-" ? read_secret_line("-", "--" + name) : it->second;
  if (auto from = a.values.find(name + "-from"); from != a.values.end())
    return read_secret_line(from->second, "--" + name);
  return env_or_empty(secret_variable(name).c_str());
}

// Removes the CLI's own secret variables from its environment, so that no program it starts (the browser)
// inherits them; they were read already.
void drop_secret_variables() {
  for (const char* name : {"APS_CLIENT_SECRET", "APS_TOKEN", "APS_REFRESH_TOKEN"}) {
#ifdef _WIN32
    ::_putenv_s(name, "");
#else
    ::unsetenv(name);
#endif
  }
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
  if (text.empty() || *end != '\0' || !std::isfinite(seconds) || seconds <= 0 || seconds > 7 * 24 * 3600.0)
    throw UsageError{"--timeout needs a positive number of seconds (got " + shown(text) + ")", &cmd};
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000.0));
}

// ---- profiles -----------------------------------------------------------------------------------

// The settings a profile saves, by option name, with their environment variables. Never the secret.
const std::vector<std::pair<std::string, const char*>> kProfileSettings = {{"client-id", "APS_CLIENT_ID"},
                                                                           {"scopes", "APS_SCOPES"},
                                                                           {"callback-url", "APS_CALLBACK_URL"},
                                                                           {"base-url", "APS_BASE_URL"},
                                                                           {"issuer", "APS_ISSUER"}};

// A name that is a plain file name: letters, digits, '.', '_', '-', not starting with '.'; not
// "token" (the default profile's file).
bool valid_profile_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64 && name.front() != '.' && name != "token";
  for (char c : name)
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  return ok;
}

// The profile's token file: "default" keeps the library's default (FileTokenStore::default_path(),
// the file programs using the library read), the others $XDG_STATE_HOME/aps-auth/NAME.json.
std::string profile_token_file(const std::string& name) {
  return name == "default" ? auth::FileTokenStore::default_path() : auth::FileTokenStore::default_path(name);
}

// The token file: --token-file, else APS_TOKEN_FILE, else the profile's.
std::string token_file_of(const Args& a) {
  return option(a, "token-file", "APS_TOKEN_FILE", profile_token_file(a.profile_name));
}

// $XDG_CONFIG_HOME/aps-auth/profiles.json, else ~/.config/aps-auth/profiles.json (%APPDATA% on
// Windows); "" when there is no such directory: then no profile is loaded, and saving one fails.
std::string profiles_path() {
  std::string base = env_or_empty("XDG_CONFIG_HOME");
  if (base.empty() || !std::filesystem::path(base).is_absolute()) {
#ifdef _WIN32
    base = env_or_empty("APPDATA");
#else
    const std::string home = env_or_empty("HOME");
    base = home.empty() ? "" : home + "/.config";
#endif
  }
  return base.empty() ? "" : base + "/aps-auth/profiles.json";
}

// profiles.json: {"profiles": {"NAME": {"client-id": "...", "scopes": "...", ...}}}; empty when
// missing. Read and written with the library's owner-only file helpers (atomic replace, mode 0600
// from creation).
nlohmann::json load_profiles(const std::string& path) {
  auth::detail::FileContent file;
  if (path.empty() || !auth::detail::read_file_if_exists(path, file))
    return {{"profiles", nlohmann::json::object()}};
  if (file.shared)  // no secret in it, but the file is meant to be the owner's only
    std::cerr << "aps-auth: '" << path << "' is accessible by other users (" << file.access << "); run: chmod 600 '"
              << path << "'\n";
  nlohmann::json j = nlohmann::json::parse(file.text, nullptr, false);
  if (!j.is_object() || !j.contains("profiles") || !j["profiles"].is_object())
    throw auth::Error(auth::ErrorKind::io,
                      "'" + path + "' is not a profiles file ({\"profiles\": {...}}); fix or delete it");
  return j;
}

void save_profiles(const std::string& path, const nlohmann::json& profiles) {
  if (path.empty())
    throw auth::Error(auth::ErrorKind::usage,
                      "neither XDG_CONFIG_HOME nor HOME is set: no place for the profiles' settings");
  auth::detail::replace_file(path, profiles.dump(2) + "\n");
}

// Selects the profile (--profile, APS_PROFILE, "default") and reads its saved settings into
// a.profile.
void load_profile(Args& a, const CommandInfo& cmd) {
  a.profile_name = option(a, "profile", "APS_PROFILE", "default");
  if (!valid_profile_name(a.profile_name))
    throw UsageError{
        "--profile needs a name of letters, digits, '.', '_', '-' (not \"token\"); got " + shown(a.profile_name), &cmd};
  const nlohmann::json all = load_profiles(profiles_path());
  auto it = all["profiles"].find(a.profile_name);
  if (it == all["profiles"].end() || !it->is_object())
    return;
  for (const auto& [name, env_name] : kProfileSettings) {
    (void)env_name;
    if (auto v = it->find(name); v != it->end() && v->is_string())
      a.profile[name] = v->get<std::string>();
  }
}

// Saves `settings` (option name -> value; an empty value removes the setting) for the profile.
void save_profile_settings(const Args& a, const std::map<std::string, std::string>& settings) {
  const std::string path = profiles_path();
  nlohmann::json all = load_profiles(path);
  nlohmann::json& p = all["profiles"][a.profile_name];
  if (!p.is_object())
    p = nlohmann::json::object();
  for (const auto& [name, value] : settings) {
    if (value.empty())
      p.erase(name);
    else
      p[name] = value;
  }
  save_profiles(path, all);
  std::cerr << "Saved the settings of profile '" << a.profile_name << "' to " << path << ".\n";
}

// The token file store, waiting APS_LOCK_TIMEOUT seconds (default 30) for a lock another process holds.
auth::FileTokenStore token_store(const std::string& path) {
  auth::FileTokenStore store(path);
  const std::string text = env_or_empty("APS_LOCK_TIMEOUT");
  if (!text.empty()) {
    char* end = nullptr;
    const double seconds = std::strtod(text.c_str(), &end);
    if (*end != '\0' || !std::isfinite(seconds) || seconds < 0 || seconds > 24 * 3600.0)
      throw UsageError{"APS_LOCK_TIMEOUT needs a number of seconds (got " + shown(text) + ")", nullptr};
    store.set_lock_timeout(std::chrono::milliseconds(static_cast<long long>(seconds * 1000.0)));
  }
  return store;
}

// Config from the options and the environment. Discovery (--issuer) talks to the network, so it can
// fail with aps::auth::Error.
auth::Config make_config(const Args& a, const CommandInfo& cmd, bool need_client_id) {
  auth::Config c;
  c.client_id = option(a, "client-id", "APS_CLIENT_ID");
  c.client_secret = secret(a, "client-secret");
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

// ---- the wait for the browser ------------------------------------------------------------------

// Ends a wait of the listener at `callback` (its redirect_uri) the way an authorization server ends
// it when it refuses: an error= callback carrying the sign-in's state, taken from the authorize
// URL. login() then returns through its own error path and closes the listener itself. Nothing
// happens once the wait is over.
void end_wait_with_error(const std::string& callback, const std::string& authorize_url, const std::string& error) {
  std::size_t at = authorize_url.find("&state=");
  const std::string state =
      at == std::string::npos ? "" : authorize_url.substr(at + 7, authorize_url.find('&', at + 7) - at - 7);
  const auto path = callback.find('/', callback.find("://") + 3);
  httplib::Client client(callback.substr(0, path));
  client.set_connection_timeout(std::chrono::seconds(5));
  client.set_read_timeout(std::chrono::seconds(5));
  (void)client.Get(callback.substr(path) + "?error=" + error + "&state=" + state);
}

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_interrupt(int) {
  g_interrupted = 1;
}

bool stderr_is_terminal() {
#ifdef _WIN32
  return _isatty(_fileno(stderr)) != 0;
#else
  return isatty(STDERR_FILENO) == 1;
#endif
}

// While login() waits for the browser: on a terminal, one line counting down ("... 4:31 left ·
// Ctrl-C to cancel"); on Ctrl-C (SIGINT, caught while this lives), the wait is ended
// (end_wait_with_error) so that login() closes its listener and nothing is saved. The messages of
// the sign-in go through say(), which keeps the counting line below them.
class WaitWatcher {
 public:
  WaitWatcher(bool live, std::chrono::milliseconds timeout)
      : live_(live), deadline_(std::chrono::steady_clock::now() + timeout) {
    g_interrupted = 0;
    previous_ = std::signal(SIGINT, on_interrupt);
    thread_ = std::thread([this] { watch(); });
  }
  ~WaitWatcher() {
    stop();
    std::signal(SIGINT, previous_ == SIG_ERR ? SIG_DFL : previous_);
  }
  WaitWatcher(const WaitWatcher&) = delete;
  WaitWatcher& operator=(const WaitWatcher&) = delete;

  bool live() const { return live_; }
  bool interrupted() const { return g_interrupted != 0; }
  void listening(const std::string& callback) {
    std::lock_guard<std::mutex> lk(mutex_);
    callback_ = callback;
  }
  void authorize_url(const std::string& url) {
    std::lock_guard<std::mutex> lk(mutex_);
    url_ = url;
    waiting_ = true;  // the browser has the URL: from now on the line counts down
  }
  void say(const std::string& text) {
    std::lock_guard<std::mutex> lk(mutex_);
    std::cerr << (drawn_ ? "\r\x1b[2K" : "") << text;
    drawn_ = false;
    draw_locked();
  }
  // Ends the watch and clears the counting line.
  void stop() {
    {
      std::lock_guard<std::mutex> lk(mutex_);
      if (stopped_)
        return;
      stopped_ = true;
      if (drawn_)
        std::cerr << "\r\x1b[2K" << std::flush;
      drawn_ = false;
    }
    wake_.notify_all();
    if (thread_.joinable())
      thread_.join();
  }

 private:
  void draw_locked() {
    if (!live_ || !waiting_ || stopped_)
      return;
    const auto left = std::chrono::duration_cast<std::chrono::seconds>(deadline_ - std::chrono::steady_clock::now());
    const long long s = left.count() < 0 ? 0 : left.count();
    char countdown[32];
    std::snprintf(countdown, sizeof countdown, "%lld:%02lld", s / 60, s % 60);
    std::cerr << "\r\x1b[2KWaiting for the sign-in in your browser\u2026 " << countdown
              << " left \u00b7 Ctrl-C to cancel" << std::flush;
    drawn_ = true;
  }

  void watch() {
    std::unique_lock<std::mutex> lk(mutex_);
    bool ended = false;
    int ticks = 0;
    while (!stopped_) {
      if (g_interrupted && !ended && !url_.empty() && !callback_.empty()) {
        ended = true;
        const std::string callback = callback_, url = url_;
        lk.unlock();
        end_wait_with_error(callback, url, "cancelled_with_ctrl_c");
        lk.lock();
        continue;
      }
      if (ticks++ % 10 == 0)
        draw_locked();
      wake_.wait_for(lk, std::chrono::milliseconds(100));
    }
  }

  const bool live_;
  const std::chrono::steady_clock::time_point deadline_;
  void (*previous_)(int) = SIG_DFL;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::string callback_, url_;  // guarded by mutex_
  bool waiting_ = false, drawn_ = false, stopped_ = false;
  std::thread thread_;
};

// No token in the token file: the user has not signed in (exit 1, not a usage error).
struct NotSignedIn {
  std::string path;
  std::string login_hint;  // "": aps-auth login --token-file '<path>'
};

// Where the token is kept: a token file, or (built with hiredis) a key in Redis.
struct TokenPlace {
  std::string name;                         // for messages: the path, or "redis://host:port/db key 'K'"
  std::shared_ptr<auth::TokenStore> store;  // nullptr: neither was given
  std::string login_hint;                   // how to sign in into it (for NotSignedIn)
  std::function<void()> check_reachable;    // Redis: fails now when it cannot be reached
};

// The token file at `path`.
TokenPlace file_place(const std::string& path) {
  TokenPlace place;
  place.name = path;
  place.store = std::make_shared<auth::FileTokenStore>(token_store(path));
  return place;
}

// --token-file (APS_TOKEN_FILE) or --token-store (APS_TOKEN_STORE) with --token-key; one given on the command
// line wins over the other's variable; neither: the profile's token file, or nothing when `profile_default` is
// false. A Redis password is taken from the variable only: command lines are visible to other users.
TokenPlace token_place(const Args& a, const CommandInfo& cmd, const auth::Config& config, bool profile_default = true) {
  const bool file_arg = a.values.count("token-file") != 0, store_arg = a.values.count("token-store") != 0;
  if (file_arg && store_arg)
    throw UsageError{"give --token-file or --token-store, not both", &cmd};
  std::string file = store_arg ? "" : option(a, "token-file", "APS_TOKEN_FILE");
  std::string url = file_arg ? "" : option(a, "token-store", "APS_TOKEN_STORE");
  if (!file.empty() && !url.empty())
    throw UsageError{
        "both APS_TOKEN_FILE and APS_TOKEN_STORE are set: choose one with --token-file or "
        "--token-store",
        &cmd};
  if (file.empty() && url.empty() && profile_default)
    file = profile_token_file(a.profile_name);
  if (!file.empty())
    return file_place(file);
  TokenPlace place;
  if (url.empty())
    return place;
  if (store_arg) {
    const std::size_t start = url.find("://") == std::string::npos ? 0 : url.find("://") + 3;
    if (url.substr(start, url.find('/', start) - start).find('@') != std::string::npos)
      throw UsageError{
          "--token-store with a password: put the URL in APS_TOKEN_STORE instead (command lines "
          "are visible to other users)",
          &cmd};
  }
#if APS_AUTH_CLI_REDIS
  auth::RedisTokenStoreOptions opts;
  opts.lock_ttl = auth::RedisTokenStore::lock_ttl_for(config);
  const std::string key = option(a, "token-key", nullptr, auth::RedisTokenStore::default_key(config.client_id));
  auto redis = std::make_shared<auth::RedisTokenStore>(url, key, opts);
  place.name = redis->where() + " key '" + key + "'";
  place.login_hint = "aps-auth login --token-store URL --token-key '" + key + "'";
  place.check_reachable = [redis] { redis->ping(); };
  place.store = std::move(redis);
  return place;
#else
  (void)config;
  throw UsageError{"this aps-auth was built without Redis support (hiredis): --token-store is not available", &cmd};
#endif
}

// Saves the token in the place's store when there is one (under the store's lock, unless the caller already holds
// it), then prints it. A failed save still prints the token, so the new (rotated) refresh token is not lost, and
// then fails.
void save_then_print(const TokenPlace& place, const auth::Token& token, bool caller_holds_lock) {
  if (place.store) {
    try {
      std::unique_ptr<auth::StoreLock> lock;
      if (!caller_holds_lock)
        lock = place.store->lock();  // never under another process's feet
      place.store->save(token);
    } catch (const auth::Error&) {
      print_json(token.to_json());
      std::cerr << "aps-auth: the token could not be saved to " << place.name
                << "; it is printed on stdout instead: keep it.\n";
      throw;
    }
    std::cerr << "Saved the token to " << place.name << ".\n";
  }
  print_json(token.to_json());
}

// ---- commands -----------------------------------------------------------------------------------

int cmd_login(const Args& a, const CommandInfo& cmd) {
  auth::Config config = make_config(a, cmd, true);
  auth::LoginOptions opts;
  opts.timeout = parse_timeout(a, cmd);
  opts.open_browser = !flag(a, "no-browser");
  WaitWatcher watch(stderr_is_terminal(), opts.timeout);
  opts.browser = [&watch, secret_value = config.client_secret](const std::string& url) {
    watch.authorize_url(url);
    drop_secret_variables();
    bool ok = auth::open_browser(url, {secret_value});
    watch.say(ok ? "Opened the sign-in page in your browser (if none appeared, run again with "
                   "--no-browser).\n"
                 : "Could not open a browser.\n");
    return ok;
  };
  opts.show_url = [&watch](const std::string& url) {
    watch.authorize_url(url);
    watch.say("Open this URL in a browser on this machine to sign in:\n\n  " + url + "\n\n");
  };
  const long long seconds = std::chrono::duration_cast<std::chrono::seconds>(opts.timeout).count();
  opts.on_listening = [seconds, &watch](auth::LoopbackListener& listener) {
    watch.listening(listener.redirect_uri());
    // On a terminal the counting line tells the time left; elsewhere (a log) one plain line.
    watch.say(watch.live() ? "Listening for the sign-in callback on " + listener.redirect_uri() + "\n"
                           : "Waiting up to " + std::to_string(seconds) + " s for the sign-in callback on " +
                                 listener.redirect_uri() + " ...\n");
  };
  TokenPlace place = token_place(a, cmd, config);  // a bad or unreachable --token-store fails before the sign-in
  if (place.check_reachable)
    place.check_reachable();
  auth::Token token;
  try {
    token = auth::login(config, opts);
  } catch (const auth::Error&) {
    watch.stop();
    if (!watch.interrupted())
      throw;
  }
  watch.stop();
  if (watch.interrupted()) {  // Ctrl-C: the listener is closed (login() returned); save nothing
    std::cerr << "Cancelled: nothing was saved.\n";
    return kExitInterrupted;
  }
  if (token.scope.empty()) {  // APS grants the scopes asked for and its answer may not repeat them:
                              // keep them
    for (const auto& s : config.scopes)
      token.scope += (token.scope.empty() ? "" : " ") + s;
  }
  std::cerr << "Signed in.\n";
  save_then_print(place, token, false);
  if (flag(a, "save-profile")) {
    std::map<std::string, std::string> used;
    for (const auto& [name, env_name] : kProfileSettings)
      used[name] = option(a, name, env_name);
    save_profile_settings(a, used);
  }
  return kExitOk;
}

int cmd_token(const Args& a, const CommandInfo& cmd) {
  auth::Config config = make_config(a, cmd, true);
  if (config.client_secret.empty())
    throw UsageError{"a 2-legged token needs a client secret: pass --client-secret or set APS_CLIENT_SECRET", &cmd};
  print_json(auth::client_credentials(config).to_json());
  return kExitOk;
}

// A secret option that must be given (see secret()).
std::string required_secret(const Args& a, const std::string& name, const CommandInfo& cmd) {
  std::string v = secret(a, name);
  if (v.empty())
    throw UsageError{"missing --" + name + "-from FILE (or --" + name + " -, or " + secret_variable(name) + ")", &cmd};
  return v;
}

int cmd_refresh(const Args& a, const CommandInfo& cmd) {
  std::string refresh_token = secret(a, "refresh-token");
  auth::Config config = make_config(a, cmd, true);
  // A refresh token given alone is only printed (as before profiles); else the profile's file is used.
  TokenPlace place = token_place(a, cmd, config, refresh_token.empty());
  const std::string& token_file = place.name;
  if (refresh_token.empty() && !place.store)
    throw UsageError{"give --refresh-token-from FILE (APS_REFRESH_TOKEN), or --token-file PATH (APS_TOKEN_FILE)", &cmd};
  if (!place.store) {
    print_json(auth::refresh(config, refresh_token).to_json());
    return kExitOk;
  }
  // Read, refresh and write under the file's lock, so that another process sharing the file never
  // refreshes the same (single-use) refresh token.
  auth::TokenStore& store = *place.store;
  std::unique_ptr<auth::StoreLock> lock = store.lock();
  auth::Token stored;
  if (refresh_token.empty()) {
    if (!store.load(stored))
      throw NotSignedIn{token_file, place.login_hint};
    if (stored.refresh_token.empty())
      throw auth::Error(auth::ErrorKind::usage, "the token in '" + token_file +
                                                    "' has no refresh token (a 2-legged "
                                                    "token?); sign in with `aps-auth login --token-file`");
    refresh_token = stored.refresh_token;
  }
  auth::Token next = auth::refresh(config, refresh_token);
  auth::detail::keep_refresh_token_age(next, stored);  // not rotated: as old as it was
  save_then_print(place, next, true);
  return kExitOk;
}

int cmd_access_token(const Args& a, const CommandInfo& cmd) {
  auth::Config config = make_config(a, cmd, true);
  // Neither a file nor a store named: the profile's token file, unless it holds nothing and a client secret
  // asks for a 2-legged token.
  TokenPlace place = token_place(a, cmd, config, false);
  if (!place.store) {
    const std::string profile_file = profile_token_file(a.profile_name);
    std::error_code ec;
    if (config.client_secret.empty() ||
        std::filesystem::symlink_status(profile_file, ec).type() != std::filesystem::file_type::not_found)
      place = file_place(profile_file);
  }
  const std::string& token_file = place.name;
  if (!place.store) {
    if (config.client_secret.empty())
      throw UsageError{
          "give --token-file PATH (APS_TOKEN_FILE) of a signed-in user, or a client secret for a "
          "2-legged token",
          &cmd};
    std::cout << auth::client_credentials(config).access_token << '\n';
    return kExitOk;
  }
  std::shared_ptr<auth::TokenStore> store = place.store;
  auth::Token stored;
  if (!store->load(stored))
    throw NotSignedIn{token_file, place.login_hint};
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
  auth::Config config = make_config(a, cmd, true);
  TokenPlace place = token_place(a, cmd, config);
  const std::string& token_file = place.name;
  if (!place.store)
    throw UsageError{"missing --token-file PATH (or APS_TOKEN_FILE)", &cmd};
  auth::TokenStore& store = *place.store;
  std::unique_ptr<auth::StoreLock> lock = store.lock();
  auth::Token stored;
  if (!store.load(stored)) {
    std::cerr << "No token at '" << token_file << "': nothing to sign out.\n";
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

// ---- status -------------------------------------------------------------------------------------

// APS refresh tokens live 15 days.
constexpr std::chrono::hours kRefreshTokenLifetime(15 * 24);

// "3 d 4 h", "2 h 5 min", "4 min 10 s": a duration for people, two units at most.
std::string human_duration(std::chrono::seconds d) {
  long long s = d.count() < 0 ? -d.count() : d.count();
  const long long days = s / 86400, hours = s % 86400 / 3600, minutes = s % 3600 / 60, secs = s % 60;
  if (days > 0)
    return std::to_string(days) + " d " + std::to_string(hours) + " h";
  if (hours > 0)
    return std::to_string(hours) + " h " + std::to_string(minutes) + " min";
  if (minutes > 0)
    return std::to_string(minutes) + " min " + std::to_string(secs) + " s";
  return std::to_string(secs) + " s";
}

// "2026-12-02 08:10:00 UTC", in the local time zone.
std::string local_time(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  char buf[64] = "";
  if (const std::tm* tm = std::localtime(&tt))
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", tm);
  return buf;
}

long long epoch_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// Who a token belongs to, and where that was read.
struct SignedInUser {
  std::string name, email, sub;
  std::string source;  // "id_token" (verified) or "userinfo"; empty when unknown
  std::string note;    // why it is unknown
};

bool has_scope(const std::string& scopes, const std::string& wanted) {
  for (const auto& s : split_scopes(scopes))
    if (s == wanted)
      return true;
  return false;
}

// The stored id_token's claims once verified (signature, issuer, audience; an old id_token is
// accepted: the claims only name the user), else one userinfo call when the token's scopes allow
// it.
SignedInUser signed_in_user(const Args& a, const CommandInfo& cmd, const auth::Token& token) {
  SignedInUser u;
  try {
    auth::Config config = make_config(a, cmd, false);
    if (!token.id_token.empty() && !config.client_id.empty()) {
      try {
        auth::IdTokenClaims c = auth::verify_id_token(config, token.id_token, "", std::chrono::hours(24 * 366));
        u = {c.name, c.email, c.subject, "id_token", ""};
        return u;
      } catch (const auth::Error& e) {
        u.note = std::string("the id_token could not be verified: ") + e.what();
      }
    }
    const bool allowed = has_scope(token.scope, "user-profile:read") || has_scope(token.scope, "openid");
    if (!allowed || token.expired()) {
      if (u.note.empty())
        u.note = !allowed ? "no id_token, and the scopes do not allow userinfo (user-profile:read)"
                          : "no id_token, and the access token has expired (userinfo needs a valid one)";
      return u;
    }
    auth::UserInfo info = auth::userinfo(config, token.access_token);
    return {info.name, info.email, info.sub, "userinfo", ""};
  } catch (const auth::Error& e) {
    u.note = e.what();
  }
  return u;
}

// Who can use the token file. POSIX: its mode ("0600"), owner-only when no group or other bit is set. Windows:
// no mode (std::filesystem shows only the read-only attribute there), its access list decides, and the library's
// own check of that list (`permission_problem` from loading it) says whether others can use it.
struct FileAccess {
  std::string mode;  // POSIX: octal; empty on Windows or when it could not be read
  bool owner_only = false;

  // The parenthesis after the file's name in status's text; "" when nothing is known.
  std::string describe() const {
#ifdef _WIN32
    return owner_only ? " (access list: owner only)" : " (access list: OTHERS CAN READ IT)";
#else
    return mode.empty() ? "" : " (mode " + mode + (owner_only ? ", owner only)" : ", OTHERS CAN READ IT)");
#endif
  }
};

FileAccess file_access([[maybe_unused]] const std::string& path,
                       [[maybe_unused]] const std::string& permission_problem) {
  FileAccess f;
#ifdef _WIN32
  f.owner_only = permission_problem.empty();
#else
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::symlink_status(path, ec);
  if (ec)
    return f;
  const auto p = static_cast<unsigned>(st.permissions()) & 0777u;
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", p);
  f.mode = buf;
  f.owner_only = (p & 077u) == 0;
#endif
  return f;
}

// What status tells about a stored token.
struct TokenStatus {
  std::string profile, token_file, permission_problem;
  FileAccess access;
  auth::Token token;
  SignedInUser user;
  std::chrono::system_clock::time_point now, refresh_ends;
  bool access_valid = false, has_refresh = false, age_known = false, refresh_usable = false;
  bool usable = false;
};

TokenStatus token_status(const Args& a, const CommandInfo& cmd, const std::string& token_file, const auth::Token& token,
                         const std::string& permission_problem) {
  TokenStatus st;
  st.profile = a.profile_name;
  st.token_file = token_file;
  st.permission_problem = permission_problem;
  st.access = file_access(token_file, permission_problem);
  st.token = token;
  st.now = std::chrono::system_clock::now();
  st.access_valid = !token.expired();
  st.has_refresh = !token.refresh_token.empty();
  st.age_known = token.refresh_token_obtained_at != std::chrono::system_clock::time_point{};
  st.refresh_ends = token.refresh_token_obtained_at + kRefreshTokenLifetime;
  st.refresh_usable = st.has_refresh && (!st.age_known || st.now < st.refresh_ends);
  st.usable = permission_problem.empty() && (st.access_valid || st.refresh_usable);
  st.user = signed_in_user(a, cmd, token);
  return st;
}

nlohmann::ordered_json status_json(const TokenStatus& st) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  nlohmann::ordered_json j = {{"profile", st.profile},
                              {"token_file", st.token_file},
                              {"signed_in", true},
                              {"usable", st.usable},
                              {"user", nullptr}};
  const SignedInUser& u = st.user;
  if (!u.source.empty())
    j["user"] = {{"name", u.name}, {"email", u.email}, {"sub", u.sub}, {"source", u.source}};
  if (!u.note.empty())
    j["user_note"] = u.note;
  j["scopes"] = split_scopes(st.token.scope);
  j["access_token"] = {{"expires_at", epoch_seconds(st.token.expires_at)},
                       {"expires_in", duration_cast<seconds>(st.token.expires_at - st.now).count()},
                       {"expired", !st.access_valid}};
  nlohmann::ordered_json rt = {{"present", st.has_refresh}};
  if (st.has_refresh && st.age_known) {
    rt["obtained_at"] = epoch_seconds(st.token.refresh_token_obtained_at);
    rt["age"] = duration_cast<seconds>(st.now - st.token.refresh_token_obtained_at).count();
    rt["expires_at"] = epoch_seconds(st.refresh_ends);
  }
  j["refresh_token"] = rt;
  j["file_mode"] = st.access.mode.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(st.access.mode);
  j["file_owner_only"] = st.access.owner_only;
  if (!st.permission_problem.empty())
    j["problem"] = st.permission_problem;
  return j;
}

std::string status_text(const TokenStatus& st) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  std::ostringstream out;
  out << "Profile:        " << st.profile << "\nToken file:     " << st.token_file;
  out << st.access.describe();
  const SignedInUser& u = st.user;
  out << "\nSigned in as:   ";
  if (u.source.empty())
    out << "unknown (" << u.note << ")";
  else
    out << (!u.name.empty() ? u.name + (u.email.empty() ? "" : " <" + u.email + ">")
                            : (u.email.empty() ? u.sub : u.email))
        << " (id " << u.sub << "; from " << (u.source == "id_token" ? "the verified id_token" : "userinfo") << ")";
  const auth::Token& t = st.token;
  out << "\nScopes:         " << (t.scope.empty() ? "(not recorded)" : t.scope);
  const std::string left = human_duration(duration_cast<seconds>(t.expires_at - st.now));
  out << "\nAccess token:   " << (st.access_valid ? "valid for " + left + " (until " : "expired " + left + " ago (at ")
      << local_time(t.expires_at) << ")\nRefresh token:  ";
  if (!st.has_refresh)
    out << "none" << (t.id_token.empty() ? " (a 2-legged token?)" : "");
  else if (!st.age_known)
    out << "present, age unknown (saved without its time); APS refresh tokens live 15 days";
  else if (st.refresh_usable)
    out << "present, obtained " << human_duration(duration_cast<seconds>(st.now - t.refresh_token_obtained_at))
        << " ago; usable for " << human_duration(duration_cast<seconds>(st.refresh_ends - st.now))
        << " more (APS: 15 days)";
  else
    out << "older than APS's 15 days (obtained " << local_time(t.refresh_token_obtained_at) << ")";
  out << '\n';
  if (!st.permission_problem.empty())
    out << "Problem:        " << st.permission_problem << '\n';
  if (!st.usable)
    out << "Not usable: sign in again (aps-auth login).\n";
  return out.str();
}

int cmd_status(const Args& a, const CommandInfo& cmd) {
  const std::string token_file = token_file_of(a);
  const bool as_json = flag(a, "json");
  nlohmann::ordered_json none = {
      {"profile", a.profile_name}, {"token_file", token_file}, {"signed_in", false}, {"usable", false}};
  std::string permission_problem;
  auth::Token token;
  bool stored = false;
  try {
    auth::FileTokenStore store(token_file, auth::FileTokenStore::OpenPermissions::warn,
                               [&](const std::string& m) { permission_problem = m; });
    stored = store.load(token);
  } catch (const auth::Error& e) {  // not a token file (or not readable): said on stderr too
    none["problem"] = e.what();
    if (as_json)
      print_json(none.dump());
    throw;
  }
  if (!stored) {
    if (as_json) {
      print_json(none.dump());
      return kExitFailure;
    }
    std::cerr << "Not signed in: no token in '" << token_file << "'. Sign in: aps-auth login"
              << (a.profile_name == "default" ? "" : " --profile " + a.profile_name) << '\n';
    return kExitFailure;
  }
  const TokenStatus st = token_status(a, cmd, token_file, token, permission_problem);
  if (as_json)
    print_json(status_json(st).dump());
  else
    std::cerr << status_text(st);
  return st.usable ? kExitOk : kExitFailure;
}

int cmd_profile(const Args& a, const CommandInfo& cmd) {
  if (a.operand == "set") {
    std::map<std::string, std::string> given;
    for (const auto& [name, env_name] : kProfileSettings) {
      (void)env_name;
      if (auto it = a.values.find(name); it != a.values.end())
        given[name] = it->second;
    }
    if (given.empty())
      throw UsageError{"`profile set` needs one of --client-id, --scopes, --callback-url, --base-url, --issuer", &cmd};
    save_profile_settings(a, given);
    return kExitOk;
  }
  // list: the profiles saved, and "default" and the selected one even when nothing is saved for
  // them.
  const std::string path = profiles_path();
  const nlohmann::json all = load_profiles(path);
  std::map<std::string, nlohmann::json> profiles = {{"default", nlohmann::json::object()},
                                                    {a.profile_name, nlohmann::json::object()}};
  for (const auto& [name, settings] : all["profiles"].items())
    if (valid_profile_name(name) && settings.is_object())
      profiles[name] = settings;
  nlohmann::ordered_json j = nlohmann::ordered_json::array();
  std::ostringstream out;
  out << "Profiles (settings in " << path << "; * selected):\n";
  for (const auto& [name, settings] : profiles) {
    const std::string file = profile_token_file(name);
    std::error_code ec;
    const bool has_token = std::filesystem::symlink_status(file, ec).type() != std::filesystem::file_type::not_found;
    nlohmann::ordered_json p = {
        {"name", name}, {"selected", name == a.profile_name}, {"token_file", file}, {"has_token", has_token}};
    out << (name == a.profile_name ? "* " : "  ") << name << "\n      token file: " << file
        << (has_token ? "" : " (none: not signed in)") << '\n';
    for (const auto& [setting, env_name] : kProfileSettings) {
      (void)env_name;
      if (auto v = settings.find(setting); v != settings.end() && v->is_string()) {
        p[setting] = v->get<std::string>();
        out << "      " << setting << ": " << v->get<std::string>() << '\n';
      }
    }
    j.push_back(p);
  }
  if (flag(a, "json"))
    print_json(j.dump());
  std::cerr << out.str();
  return kExitOk;
}

int cmd_completion(const Args& a, const CommandInfo&) {
  if (a.operand == "zsh")  // zsh runs the bash function through its bash-compatible completion layer
    std::cout << "# zsh completion for aps-auth, generated by `aps-auth completion zsh`.\n"
                 "autoload -U +X compinit && compinit\n"
                 "autoload -U +X bashcompinit && bashcompinit\n";
  std::cout << bash_completion();
  return kExitOk;
}

int cmd_revoke(const Args& a, const CommandInfo& cmd) {
  std::string token = required_secret(a, "token", cmd);
  std::string hint = option(a, "token-type-hint", nullptr, "access_token");
  if (hint != "access_token" && hint != "refresh_token")
    throw UsageError{"--token-type-hint is access_token or refresh_token (got " + shown(hint) + ")", &cmd};
  auth::Config config = make_config(a, cmd, true);
  auth::revoke(config, token,
               hint == "refresh_token" ? auth::TokenTypeHint::refresh_token : auth::TokenTypeHint::access_token);
  std::cerr << "Revoked.\n";
  return kExitOk;
}

int cmd_introspect(const Args& a, const CommandInfo& cmd) {
  std::string token = required_secret(a, "token", cmd);
  auth::Config config = make_config(a, cmd, true);
  print_json(auth::introspect(config, token).json);
  return kExitOk;
}

int cmd_userinfo(const Args& a, const CommandInfo& cmd) {
  std::string token = required_secret(a, "token", cmd);
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
  if (auto ops = kOperands.find(a.command); ops != kOperands.end() && a.operand.empty()) {
    std::string words;
    for (const auto& op : ops->second)
      words += (words.empty() ? "" : "|") + op;
    throw UsageError{"`" + a.command + "` needs one of " + words, cmd};
  }
  for (const auto& o : cmd->options)
    if (o == "profile")
      load_profile(a, *cmd);
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
  Demo(std::vector<std::string> scopes, bool real_browser) : real_browser_(real_browser), mock_(mock_options()) {
    say("started a mock APS server on " + mock_.base_url() + " (this machine only; no account, no network)");
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
        (token.id_token.empty() ? "" : ", and an id_token whose signature, issuer, audience and nonce were verified"));
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
    say("the mock served " + std::to_string(authorizes) + " authorize and " + std::to_string(tokens) +
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
      browser_failure_ = "the played browser stopped at " + r.final_url.substr(0, r.final_url.find('?')) +
                         (r.status ? " (HTTP " + std::to_string(r.status) + ")" : " (" + r.body + ")");
    }
    end_wait_with_error(callback_, url, "demo_browser_failed");
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
  std::string callback_;         // the listener's redirect_uri, set before the browser thread starts
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
      if (n > 0)
        ::WideCharToMultiByte(CP_UTF8, 0, wide[i], -1, &arg[0], n, nullptr, nullptr);
      arg.resize(std::char_traits<char>::length(arg.c_str()));
      utf8.push_back(arg);
    }
    ::LocalFree(wide);
  }
  std::vector<char*> utf8_argv;
  for (auto& a : utf8)
    utf8_argv.push_back(&a[0]);
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
    std::cerr << "aps-auth: no token in '" << e.path << "'; sign in first: "
              << (e.login_hint.empty() ? "aps-auth login --token-file '" + e.path + "'" : e.login_hint) << "\n";
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
