// Every call the test support layer makes to the operating system, and nothing else: each helper has a POSIX
// implementation and a Windows implementation, side by side behind #ifdef _WIN32, so that porting the tests is
// this file. The rest of tests/support/ (process, files, network, environment, ...) and the tests build on these
// and make no system call of their own, except the tests of a POSIX-only mechanism (fork, setuid, mode bits),
// which say so. Where only Linux can answer (the kernel's tables under /proc) the POSIX side says "Linux" and
// answers nullopt elsewhere. Not part of the library.
#ifndef APS_AUTH_TESTS_SUPPORT_PLATFORM_HPP
#define APS_AUTH_TESTS_SUPPORT_PLATFORM_HPP

#ifdef _WIN32
#ifndef NOMINMAX
#define NOMINMAX
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <iphlpapi.h>
#include <windows.h>
#include <aclapi.h>
#include <sddl.h>
#include <tlhelp32.h>
#include <sys/stat.h>
#include <stdlib.h>
#else
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
extern char** environ;
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cwchar>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace support {

// A process environment: name -> value.
using EnvMap = std::map<std::string, std::string>;

namespace platform {

using Clock = std::chrono::steady_clock;

#ifdef _WIN32
// ---- Windows: UTF-8 <-> UTF-16 (every string of the support layer is UTF-8) --------------------------------

inline std::wstring widen(const std::string& s) {
  if (s.empty())
    return std::wstring();
  int n = ::MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0);
  std::wstring w(static_cast<std::size_t>(n), L'\0');
  ::MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), &w[0], n);
  return w;
}

inline std::string narrow(const std::wstring& w) {
  if (w.empty())
    return std::string();
  int n = ::WideCharToMultiByte(CP_UTF8, 0, w.data(), static_cast<int>(w.size()), nullptr, 0, nullptr, nullptr);
  std::string s(static_cast<std::size_t>(n), '\0');
  ::WideCharToMultiByte(CP_UTF8, 0, w.data(), static_cast<int>(w.size()), &s[0], n, nullptr, nullptr);
  return s;
}

inline std::string last_error_text(DWORD code = ::GetLastError()) {
  wchar_t* text = nullptr;
  ::FormatMessageW(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr,
                   code, 0, reinterpret_cast<wchar_t*>(&text), 0, nullptr);
  std::string out = text ? narrow(text) : "error " + std::to_string(code);
  if (text)
    ::LocalFree(text);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
    out.pop_back();
  return out;
}
#endif

// ---- environment --------------------------------------------------------------------------------------------

inline std::optional<std::string> get_env(const std::string& name) {
#ifdef _WIN32
  const wchar_t* v = ::_wgetenv(widen(name).c_str());
  if (!v)
    return std::nullopt;
  return narrow(v);
#else
  const char* v = std::getenv(name.c_str());
  if (!v)
    return std::nullopt;
  return std::string(v);
#endif
}

// Both the C runtime's copy (getenv, which the library reads) and the process's (CreateProcess) on Windows.
inline void set_env(const std::string& name, const std::string& value) {
#ifdef _WIN32
  // _wputenv_s with an empty value removes the variable: an empty value cannot be kept on Windows.
  ::_wputenv_s(widen(name).c_str(), widen(value).c_str());
  ::SetEnvironmentVariableW(widen(name).c_str(), widen(value).c_str());
#else
  ::setenv(name.c_str(), value.c_str(), 1);
#endif
}

inline void unset_env(const std::string& name) {
#ifdef _WIN32
  ::_wputenv_s(widen(name).c_str(), L"");
  ::SetEnvironmentVariableW(widen(name).c_str(), nullptr);
#else
  ::unsetenv(name.c_str());
#endif
}

// This process's whole environment.
inline EnvMap current_environment() {
  EnvMap out;
#ifdef _WIN32
  wchar_t* block = ::GetEnvironmentStringsW();
  for (const wchar_t* p = block; p && *p; p += std::wcslen(p) + 1) {
    std::string kv = narrow(p);
    std::size_t eq = kv.find('=', 1);  // "=C:=C:\\dir" entries start with '='
    if (eq != std::string::npos)
      out[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (block)
    ::FreeEnvironmentStringsW(block);
#else
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    std::size_t eq = kv.find('=');
    if (eq != std::string::npos)
      out[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
#endif
  return out;
}

#ifdef _WIN32
// ---- Windows: the registry ---------------------------------------------------------------------------------

// Sets a string value (name nullptr: the key's default value) for the lifetime of the object, creating the key
// when needed, and puts back what was there before, or deletes the value when there was nothing. ok() false (and
// error() why) when it could not be set: nothing to put back then.
class ScopedRegistryString {
 public:
  ScopedRegistryString(HKEY root, const std::wstring& key, const wchar_t* name, const std::wstring& value)
      : name_(name ? name : L"") {
    LSTATUS rc =
        ::RegCreateKeyExW(root, key.c_str(), 0, nullptr, 0, KEY_QUERY_VALUE | KEY_SET_VALUE, nullptr, &key_, nullptr);
    if (rc != ERROR_SUCCESS) {
      key_ = nullptr;
      error_ = last_error_text(static_cast<DWORD>(rc));
      return;
    }
    DWORD type = 0, bytes = 0;
    if (::RegQueryValueExW(key_, name, nullptr, &type, nullptr, &bytes) == ERROR_SUCCESS) {
      old_.emplace(bytes / sizeof(wchar_t) + 1, L'\0');
      ::RegQueryValueExW(key_, name, nullptr, &type, reinterpret_cast<BYTE*>(&(*old_)[0]), &bytes);
      old_->resize(std::wcslen(old_->c_str()));
    }
    rc = set(value);
    if (rc != ERROR_SUCCESS) {
      error_ = last_error_text(static_cast<DWORD>(rc));
      ::RegCloseKey(key_);
      key_ = nullptr;
    }
  }
  ~ScopedRegistryString() {
    if (!key_)
      return;
    if (old_)
      set(*old_);
    else
      ::RegDeleteValueW(key_, name_.empty() ? nullptr : name_.c_str());
    ::RegCloseKey(key_);
  }
  ScopedRegistryString(const ScopedRegistryString&) = delete;
  ScopedRegistryString& operator=(const ScopedRegistryString&) = delete;
  bool ok() const { return key_ != nullptr; }
  const std::string& error() const { return error_; }

 private:
  LSTATUS set(const std::wstring& v) {
    return ::RegSetValueExW(key_, name_.empty() ? nullptr : name_.c_str(), 0, REG_SZ,
                            reinterpret_cast<const BYTE*>(v.c_str()),
                            static_cast<DWORD>((v.size() + 1) * sizeof(wchar_t)));
  }
  HKEY key_ = nullptr;
  std::wstring name_;
  std::optional<std::wstring> old_;
  std::string error_;
};

// A registry key that a test makes, removed with everything under it when the object goes.
class ScopedRegistryKey {
 public:
  ScopedRegistryKey(HKEY root, std::wstring key) : root_(root), key_(std::move(key)) {}
  ~ScopedRegistryKey() { ::RegDeleteTreeW(root_, key_.c_str()); }
  ScopedRegistryKey(const ScopedRegistryKey&) = delete;
  ScopedRegistryKey& operator=(const ScopedRegistryKey&) = delete;

 private:
  HKEY root_;
  std::wstring key_;
};
#endif

// ---- files ----------------------------------------------------------------------------------------------------

// The separator of the directories in $PATH, and of a directory and a name in a path (cmd.exe misreads a '/' in
// its own path as a switch).
#ifdef _WIN32
constexpr char kPathListSeparator = ';';
constexpr char kDirSeparator = '\\';
#else
constexpr char kPathListSeparator = ':';
constexpr char kDirSeparator = '/';
#endif

#ifdef _WIN32
// The string SID ("S-1-5-21-...") of the user this process runs as.
inline std::string current_user_sid() {
  HANDLE token = nullptr;
  if (!::OpenProcessToken(::GetCurrentProcess(), TOKEN_QUERY, &token))
    return "";
  std::vector<unsigned char> buf(512);
  DWORD needed = 0;
  const BOOL ok = ::GetTokenInformation(token, TokenUser, buf.data(), static_cast<DWORD>(buf.size()), &needed);
  ::CloseHandle(token);
  wchar_t* text = nullptr;
  if (!ok || !::ConvertSidToStringSidW(reinterpret_cast<TOKEN_USER*>(buf.data())->User.Sid, &text))
    return "";
  std::string sid = narrow(text);
  ::LocalFree(text);
  return sid;
}

// A security descriptor from SDDL, as CreateFileW and CreateDirectoryW take it.
class SecurityAttributes {
 public:
  explicit SecurityAttributes(const std::string& sddl) {
    if (!::ConvertStringSecurityDescriptorToSecurityDescriptorW(widen(sddl).c_str(), SDDL_REVISION_1, &sd_, nullptr))
      throw std::runtime_error("bad SDDL " + sddl + ": " + last_error_text());
    attributes_.nLength = sizeof attributes_;
    attributes_.lpSecurityDescriptor = sd_;
    attributes_.bInheritHandle = FALSE;
  }
  ~SecurityAttributes() { ::LocalFree(sd_); }
  SecurityAttributes(const SecurityAttributes&) = delete;
  SecurityAttributes& operator=(const SecurityAttributes&) = delete;
  SECURITY_ATTRIBUTES* attributes() { return &attributes_; }

 private:
  PSECURITY_DESCRIPTOR sd_ = nullptr;
  SECURITY_ATTRIBUTES attributes_{};
};

// An access list granting the current user everything and nobody else anything (POSIX 0600; a directory's is
// inherited by what is created in it, as far as the system implements inheritance: Wine does not).
inline std::string owner_only_sddl(bool directory) {
  return std::string("D:P(A;") + (directory ? "OICI" : "") + ";FA;;;" + current_user_sid() + ")";
}
#endif

// A new directory, private to this user, under the system's temporary directory ($TMPDIR or /tmp; GetTempPathW).
inline std::string make_temp_dir(const std::string& prefix) {
#ifdef _WIN32
  wchar_t base[MAX_PATH + 1];
  DWORD n = ::GetTempPathW(MAX_PATH + 1, base);
  if (n == 0 || n > MAX_PATH)
    throw std::runtime_error("GetTempPathW failed: " + last_error_text());
  SecurityAttributes owner_only(owner_only_sddl(true));  // what mkdtemp's 0700 is on POSIX
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    char suffix[16];
    std::snprintf(suffix, sizeof suffix, "%08x", static_cast<unsigned>(rd()));
    std::wstring path = std::wstring(base, n) + widen(prefix + suffix);
    if (::CreateDirectoryW(path.c_str(), owner_only.attributes()))
      return narrow(path);
    if (::GetLastError() != ERROR_ALREADY_EXISTS)
      break;
  }
  throw std::runtime_error("cannot create a temporary directory: " + last_error_text());
#else
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/" + prefix + "XXXXXX";
  if (!::mkdtemp(&tmpl[0]))
    throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
  return tmpl;
#endif
}

// Creates the file `path` (which must not exist) holding `text`, with exactly the permission bits `mode` whatever
// the umask. Windows: the bits become the access list given at creation (what FileTokenStore does): the user's
// full access, Builtin Users' read (and write) for the group bits and Everyone's for the others' bits (Wine keeps
// only the user's and Everyone's: it stores them as the Unix mode). Throws std::runtime_error when it cannot.
inline void write_new_file(const std::string& path, const std::string& text, int mode) {
#ifdef _WIN32
  auto grant = [](int bits, const char* sid) {
    if (!(bits & 6))
      return std::string();
    return std::string("(A;;") + ((bits & 2) ? "FRFW" : "FR") + ";;;" + sid + ")";
  };
  SecurityAttributes access(owner_only_sddl(false) + grant(mode >> 3, "BU") + grant(mode, "WD"));
  HANDLE h = ::CreateFileW(widen(path).c_str(), GENERIC_WRITE, 0, access.attributes(), CREATE_NEW,
                           (mode & 0200) ? FILE_ATTRIBUTE_NORMAL : FILE_ATTRIBUTE_READONLY, nullptr);
  if (h == INVALID_HANDLE_VALUE)
    throw std::runtime_error("cannot create " + path + ": " + last_error_text());
  DWORD written = 0;
  const bool ok = text.empty() || (::WriteFile(h, text.data(), static_cast<DWORD>(text.size()), &written, nullptr) &&
                                   written == text.size());
  ::CloseHandle(h);
  if (!ok)
    throw std::runtime_error("cannot write " + path + ": " + last_error_text());
#else
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  bool ok = ::fchmod(fd, static_cast<mode_t>(mode)) == 0;
  for (std::size_t off = 0; ok && off < text.size();) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR)
      continue;
    ok = n > 0;
    off += ok ? static_cast<std::size_t>(n) : 0;
  }
  const int err = errno;
  ok = ::close(fd) == 0 && ok;
  if (!ok)
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(err));
#endif
}

// A regular file this user may run.
inline bool is_executable(const std::string& path) {
#ifdef _WIN32
  DWORD attributes = ::GetFileAttributesW(widen(path).c_str());
  return attributes != INVALID_FILE_ATTRIBUTES && !(attributes & FILE_ATTRIBUTE_DIRECTORY);
#else
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
#endif
}

// The suffixes a program name may need to be found ("" on POSIX; PATHEXT's on Windows).
inline std::vector<std::string> program_suffixes() {
#ifdef _WIN32
  std::vector<std::string> out = {""};
  std::stringstream list(get_env("PATHEXT").value_or(".COM;.EXE;.BAT;.CMD"));
  for (std::string s; std::getline(list, s, ';');)
    if (!s.empty())
      out.push_back(s);
  return out;
#else
  return {""};
#endif
}

// Sets the process's file mode creation mask for the lifetime of the object (Windows: _umask, which knows only
// the write bit), then restores the previous one.
class ScopedUmask {
 public:
#ifdef _WIN32
  explicit ScopedUmask(int mask) : old_(::_umask(mask)) {}
  ~ScopedUmask() {
    ::_umask(old_);
  }
#else
  explicit ScopedUmask(int mask) : old_(::umask(static_cast<mode_t>(mask))) {}
  ~ScopedUmask() {
    ::umask(old_);
  }
#endif
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

  // The mask in force now.
  static int current() {
#ifdef _WIN32
    int now = ::_umask(0);
    ::_umask(now);
    return now;
#else
    mode_t now = ::umask(022);
    ::umask(now);
    return static_cast<int>(now);
#endif
  }

 private:
#ifdef _WIN32
  int old_;
#else
  mode_t old_;
#endif
};

// Who other than its owner may read or write a file or directory: "" when nobody (POSIX: no group or other
// permission bit; Windows: every entry of its access list that allows reading or writing names the current
// user, SYSTEM or the Administrators), else what lets others in ("mode 0644"; "allowed: S-1-1-0"). The tests'
// own reading, independent of the library's. nullopt when the file does not exist or cannot be examined.
inline std::optional<std::string> access_by_others(const std::string& path) {
#ifdef _WIN32
  PACL dacl = nullptr;
  PSECURITY_DESCRIPTOR sd = nullptr;
  if (::GetNamedSecurityInfoW(widen(path).c_str(), SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, nullptr, nullptr, &dacl,
                              nullptr, &sd) != ERROR_SUCCESS)
    return std::nullopt;
  std::string others = dacl ? "" : "no access list: everyone";
  const std::string user = current_user_sid();
  constexpr ACCESS_MASK kReadOrWrite = FILE_READ_DATA | FILE_WRITE_DATA | FILE_APPEND_DATA | GENERIC_READ |
                                       GENERIC_WRITE | GENERIC_ALL | WRITE_DAC | WRITE_OWNER;
  for (DWORD i = 0; dacl && i < dacl->AceCount; ++i) {
    ACE_HEADER* ace = nullptr;
    if (!::GetAce(dacl, i, reinterpret_cast<void**>(&ace)) || ace->AceType != ACCESS_ALLOWED_ACE_TYPE)
      continue;
    auto* allowed = reinterpret_cast<ACCESS_ALLOWED_ACE*>(ace);
    wchar_t* text = nullptr;
    if (!(allowed->Mask & kReadOrWrite) || !::ConvertSidToStringSidW(&allowed->SidStart, &text))
      continue;
    const std::string sid = narrow(text);
    ::LocalFree(text);
    if (sid != user && sid != "S-1-5-18" && sid != "S-1-5-32-544")
      others += (others.empty() ? "allowed: " : ", ") + sid;
  }
  ::LocalFree(sd);
  return others;
#else
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return std::nullopt;
  if ((st.st_mode & 077) == 0)
    return std::string();
  char text[16];
  std::snprintf(text, sizeof text, "mode %04o", static_cast<unsigned>(st.st_mode & 07777));
  return std::string(text);
#endif
}

// ---- processes ------------------------------------------------------------------------------------------------

inline long current_process_id() {
#ifdef _WIN32
  return static_cast<long>(::GetCurrentProcessId());
#else
  return static_cast<long>(::getpid());
#endif
}

// What to start and how to connect it.
struct SpawnRequest {
  std::vector<std::string> argv;  // argv[0]: the program's path (no $PATH search)
  const EnvMap* env = nullptr;    // exactly this environment; nullptr: this process's
  bool stdin_pipe = false;        // false: stdin is the null device
  std::string stdout_path;        // "": a pipe to us; else this file
  std::string stderr_path;        // "": a pipe to us; else this file (the same path as stdout: one file)
  bool append = false;            // to the files (else they are truncated)
  bool own_group = false;         // a process group (POSIX) / job (Windows) of its own, killed as a whole
};

// A started child, as the OS knows it.
struct ChildProcess {
#ifdef _WIN32
  HANDLE process = nullptr, job = nullptr;
  HANDLE in = nullptr, out = nullptr, err = nullptr;  // our ends of its pipes
  DWORD pid = 0;
#else
  pid_t pid = -1;
  int in = -1, out = -1, err = -1;  // our ends of its pipes
  bool own_group = false;
#endif
  bool killed = false;  // terminate() was called
};

struct ExitStatus {
  int code = -1;   // the exit code; -1 when killed by a signal
  int signal = 0;  // POSIX: the signal that ended it
};

enum class Stream { out, err };

#ifndef _WIN32
inline bool make_pipe(int fds[2]) {
#ifdef __linux__
  return ::pipe2(fds, O_CLOEXEC) == 0;
#else
  if (::pipe(fds) != 0)
    return false;
  ::fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  ::fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  return true;
#endif
}

inline void close_fd(int& fd) {
  if (fd >= 0)
    ::close(fd);
  fd = -1;
}
#endif

#ifdef _WIN32
// One argument quoted so that CommandLineToArgvW (and the C runtime) give it back unchanged.
inline std::wstring quote_argument(const std::wstring& arg) {
  if (!arg.empty() && arg.find_first_of(L" \t\n\v\"") == std::wstring::npos)
    return arg;
  std::wstring out = L"\"";
  for (std::size_t i = 0;; ++i) {
    std::size_t backslashes = 0;
    while (i < arg.size() && arg[i] == L'\\') {
      ++backslashes;
      ++i;
    }
    if (i == arg.size()) {
      out.append(backslashes * 2, L'\\');  // before the closing quote
      break;
    }
    if (arg[i] == L'"') {
      out.append(backslashes * 2 + 1, L'\\');
      out.push_back(L'"');
    } else {
      out.append(backslashes, L'\\');
      out.push_back(arg[i]);
    }
  }
  out.push_back(L'"');
  return out;
}

inline std::wstring command_line(const std::vector<std::string>& argv) {
  std::wstring out;
  for (const auto& a : argv)
    out += (out.empty() ? L"" : L" ") + quote_argument(widen(a));
  return out;
}

// "NAME=value\0...\0\0", sorted by name without regard to case, as CreateProcessW wants it.
inline std::vector<wchar_t> environment_block(const EnvMap& env) {
  std::vector<std::pair<std::wstring, std::wstring>> vars;
  for (const auto& kv : env)
    vars.emplace_back(widen(kv.first), widen(kv.second));
  std::sort(vars.begin(), vars.end(), [](const auto& a, const auto& b) {
    return ::CompareStringOrdinal(a.first.c_str(), -1, b.first.c_str(), -1, TRUE) == CSTR_LESS_THAN;
  });
  std::vector<wchar_t> block;
  for (const auto& v : vars) {
    block.insert(block.end(), v.first.begin(), v.first.end());
    block.push_back(L'=');
    block.insert(block.end(), v.second.begin(), v.second.end());
    block.push_back(L'\0');
  }
  if (block.empty())
    block.push_back(L'\0');
  block.push_back(L'\0');
  return block;
}

inline void close_handle(HANDLE& h) {
  if (h && h != INVALID_HANDLE_VALUE)
    ::CloseHandle(h);
  h = nullptr;
}

inline HANDLE open_output_file(const std::string& path, bool append) {
  SECURITY_ATTRIBUTES sa{sizeof sa, nullptr, TRUE};
  HANDLE h =
      ::CreateFileW(widen(path).c_str(), append ? FILE_APPEND_DATA : GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                    &sa, append ? OPEN_ALWAYS : CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, nullptr);
  return h == INVALID_HANDLE_VALUE ? nullptr : h;
}

// An inheritable child end and a non-inheritable end of ours.
inline bool make_pipe(HANDLE& ours, HANDLE& theirs, bool theirs_reads) {
  SECURITY_ATTRIBUTES sa{sizeof sa, nullptr, TRUE};
  HANDLE r = nullptr, w = nullptr;
  if (!::CreatePipe(&r, &w, &sa, 0))
    return false;
  ours = theirs_reads ? w : r;
  theirs = theirs_reads ? r : w;
  ::SetHandleInformation(ours, HANDLE_FLAG_INHERIT, 0);
  return true;
}
#endif

#ifdef _WIN32
// Opens the child's standard handles (inheritable) into `theirs` (stdin, stdout, stderr; stderr may be stdout's),
// and our ends of its pipes into `child`; "" or what went wrong.
inline std::string open_child_handles(const SpawnRequest& req, ChildProcess& child, HANDLE (&theirs)[3]) {
  SECURITY_ATTRIBUTES sa{sizeof sa, nullptr, TRUE};
  if (req.stdin_pipe) {
    if (!make_pipe(child.in, theirs[0], true))
      return "CreatePipe: " + last_error_text();
  } else {
    theirs[0] = ::CreateFileW(L"NUL", GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE, &sa, OPEN_EXISTING, 0, nullptr);
    if (theirs[0] == INVALID_HANDLE_VALUE) {
      theirs[0] = nullptr;
      return "open NUL: " + last_error_text();
    }
  }
  if (req.stdout_path.empty()) {
    if (!make_pipe(child.out, theirs[1], false))
      return "CreatePipe: " + last_error_text();
  } else if (!(theirs[1] = open_output_file(req.stdout_path, req.append))) {
    return "open " + req.stdout_path + ": " + last_error_text();
  }
  if (!req.stderr_path.empty() && req.stderr_path == req.stdout_path) {
    theirs[2] = theirs[1];
  } else if (req.stderr_path.empty()) {
    if (!make_pipe(child.err, theirs[2], false))
      return "CreatePipe: " + last_error_text();
  } else if (!(theirs[2] = open_output_file(req.stderr_path, req.append))) {
    return "open " + req.stderr_path + ": " + last_error_text();
  }
  return "";
}

// Starts the process with exactly `theirs` inherited (not the pipes of another child started meanwhile), in a
// job of its own when asked (terminate() then ends everything it started); "" or what went wrong.
inline std::string create_process(const SpawnRequest& req, HANDLE (&theirs)[3], ChildProcess& child) {
  std::vector<HANDLE> inherit = {theirs[0], theirs[1]};
  if (theirs[2] != theirs[1])
    inherit.push_back(theirs[2]);
  SIZE_T size = 0;
  ::InitializeProcThreadAttributeList(nullptr, 1, 0, &size);
  std::vector<unsigned char> list_buf(size);
  auto* list = reinterpret_cast<LPPROC_THREAD_ATTRIBUTE_LIST>(list_buf.data());
  if (!::InitializeProcThreadAttributeList(list, 1, 0, &size))
    return "InitializeProcThreadAttributeList: " + last_error_text();
  ::UpdateProcThreadAttribute(list, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, inherit.data(),
                              inherit.size() * sizeof(HANDLE), nullptr, nullptr);
  STARTUPINFOEXW si{};
  si.StartupInfo.cb = sizeof si;
  si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
  si.StartupInfo.hStdInput = theirs[0];
  si.StartupInfo.hStdOutput = theirs[1];
  si.StartupInfo.hStdError = theirs[2];
  si.lpAttributeList = list;
  std::wstring cmd = command_line(req.argv);
  std::vector<wchar_t> env_block;
  if (req.env)
    env_block = environment_block(*req.env);
  PROCESS_INFORMATION pi{};
  BOOL ok =
      ::CreateProcessW(widen(req.argv[0]).c_str(), &cmd[0], nullptr, nullptr, TRUE,
                       CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT | EXTENDED_STARTUPINFO_PRESENT | CREATE_NO_WINDOW,
                       req.env ? env_block.data() : nullptr, nullptr, &si.StartupInfo, &pi);
  ::DeleteProcThreadAttributeList(list);
  if (!ok)
    return "CreateProcessW " + req.argv[0] + ": " + last_error_text();
  if (req.own_group) {
    child.job = ::CreateJobObjectW(nullptr, nullptr);
    if (child.job)
      ::AssignProcessToJobObject(child.job, pi.hProcess);
  }
  ::ResumeThread(pi.hThread);
  ::CloseHandle(pi.hThread);
  child.process = pi.hProcess;
  child.pid = pi.dwProcessId;
  return "";
}
#else
// Connects the child's standard streams as `req` asks: the null device or a pipe for stdin, a pipe or a file for
// stdout and stderr (one file when both name it). `pipes`: stdin, stdout, stderr, each {read, write} or -1.
inline void connect_std_streams(const SpawnRequest& req, posix_spawn_file_actions_t& actions, int (&pipes)[3][2]) {
  const int out_flags = O_WRONLY | O_CREAT | (req.append ? O_APPEND : O_TRUNC);
  if (req.stdin_pipe)
    posix_spawn_file_actions_adddup2(&actions, pipes[0][0], 0);
  else
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (req.stdout_path.empty())
    posix_spawn_file_actions_adddup2(&actions, pipes[1][1], 1);
  else
    posix_spawn_file_actions_addopen(&actions, 1, req.stdout_path.c_str(), out_flags, 0600);
  if (req.stderr_path.empty())
    posix_spawn_file_actions_adddup2(&actions, pipes[2][1], 2);
  else if (req.stderr_path == req.stdout_path)
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  else
    posix_spawn_file_actions_addopen(&actions, 2, req.stderr_path.c_str(), out_flags, 0600);
}
#endif

// Starts the child; "" or what went wrong.
inline std::string spawn(const SpawnRequest& req, ChildProcess& child) {
  if (req.argv.empty())
    return "nothing to run";
#ifdef _WIN32
  HANDLE theirs[3] = {nullptr, nullptr, nullptr};
  std::string error = open_child_handles(req, child, theirs);
  if (error.empty())
    error = create_process(req, theirs, child);
  close_handle(theirs[0]);
  if (theirs[2] != theirs[1])
    close_handle(theirs[2]);
  close_handle(theirs[1]);
  if (!error.empty()) {
    close_handle(child.in);
    close_handle(child.out);
    close_handle(child.err);
  }
  return error;
#else
  int pipes[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};  // stdin, stdout, stderr
  auto close_all = [&pipes] {
    for (auto& p : pipes) {
      close_fd(p[0]);
      close_fd(p[1]);
    }
  };
  if ((req.stdin_pipe && !make_pipe(pipes[0])) || (req.stdout_path.empty() && !make_pipe(pipes[1])) ||
      (req.stderr_path.empty() && !make_pipe(pipes[2]))) {
    std::string text = std::string("pipe failed: ") + std::strerror(errno);
    close_all();
    return text;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  connect_std_streams(req, actions, pipes);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  if (req.own_group) {  // a process group: terminate() then ends everything it started
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
  }
  std::vector<std::string> env_strings;
  if (req.env)
    for (const auto& kv : *req.env)
      env_strings.push_back(kv.first + "=" + kv.second);
  std::vector<char*> c_argv, c_env;
  for (const auto& a : req.argv)
    c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  for (auto& e : env_strings)
    c_env.push_back(&e[0]);
  c_env.push_back(nullptr);
  int rc = ::posix_spawn(&child.pid, c_argv[0], &actions, &attr, c_argv.data(), req.env ? c_env.data() : environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    close_all();
    child.pid = -1;
    return std::string("posix_spawn failed: ") + std::strerror(rc);
  }
  close_fd(pipes[0][0]);
  close_fd(pipes[1][1]);
  close_fd(pipes[2][1]);
  child.in = pipes[0][1];
  child.out = pipes[1][0];
  child.err = pipes[2][0];
  child.own_group = req.own_group;
  return "";
#endif
}

// Writes `text` to the child's stdin pipe, then closes it (the child then reads end-of-file). Runs on a thread of
// its own, which on POSIX it leaves with SIGPIPE blocked: a child that exits early fails the write, not the tests.
inline void write_stdin_and_close(ChildProcess& child, const std::string& text) {
#ifdef _WIN32
  std::size_t off = 0;
  while (child.in && off < text.size()) {
    DWORD n = 0;
    DWORD chunk = static_cast<DWORD>(std::min<std::size_t>(text.size() - off, 1 << 20));
    if (!::WriteFile(child.in, text.data() + off, chunk, &n, nullptr) || n == 0)
      break;
    off += n;
  }
  close_handle(child.in);
#else
  sigset_t pipe_signal;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
  std::size_t off = 0;
  while (child.in >= 0 && off < text.size()) {
    ssize_t n = ::write(child.in, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    off += static_cast<std::size_t>(n);
  }
  close_fd(child.in);
#endif
}

// Hands what the child writes on its stdout and stderr pipes to `sink`, chunk by chunk, until both are closed
// (true) or `until` passes (false). The pipes are closed once they end.
inline bool drain(ChildProcess& child, Clock::time_point until,
                  const std::function<void(Stream, const char*, std::size_t)>& sink) {
#ifdef _WIN32
  HANDLE* pipes[2] = {&child.out, &child.err};
  while (child.out || child.err) {
    bool got_any = false;
    for (int i = 0; i < 2; ++i) {
      HANDLE& h = *pipes[i];
      if (!h)
        continue;
      DWORD available = 0;
      if (!::PeekNamedPipe(h, nullptr, 0, nullptr, &available, nullptr)) {
        close_handle(h);  // ERROR_BROKEN_PIPE: the child's end is closed
        continue;
      }
      if (available == 0)
        continue;
      char buf[8192];
      DWORD n = 0;
      if (!::ReadFile(h, buf, std::min<DWORD>(available, sizeof buf), &n, nullptr) || n == 0) {
        close_handle(h);
        continue;
      }
      got_any = true;
      sink(i == 0 ? Stream::out : Stream::err, buf, n);
    }
    if (Clock::now() >= until)
      return !(child.out || child.err);
    if (!got_any)
      ::Sleep(5);
  }
  return true;
#else
  int* fds[2] = {&child.out, &child.err};
  while (child.out >= 0 || child.err >= 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    if (left <= 0)
      return false;
    pollfd p[2];
    nfds_t n = 0;
    int which[2] = {0, 0};
    for (int i = 0; i < 2; ++i)
      if (*fds[i] >= 0) {
        p[n] = {*fds[i], POLLIN, 0};
        which[n++] = i;
      }
    int ready = ::poll(p, n, static_cast<int>(std::min<long long>(left, 1000)));
    if (ready < 0 && errno != EINTR)
      return false;
    for (nfds_t k = 0; k < n && ready > 0; ++k) {
      if (!p[k].revents)
        continue;
      char buf[8192];
      ssize_t got = ::read(p[k].fd, buf, sizeof buf);
      if (got > 0)
        sink(which[k] == 0 ? Stream::out : Stream::err, buf, static_cast<std::size_t>(got));
      else if (got == 0 || errno != EINTR)
        close_fd(*fds[which[k]]);
    }
  }
  return true;
#endif
}

// Kills the child at once (its whole group or job when it has one).
inline void terminate(ChildProcess& child) {
  child.killed = true;
#ifdef _WIN32
  if (child.job)
    ::TerminateJobObject(child.job, 1);
  else if (child.process)
    ::TerminateProcess(child.process, 1);
#else
  if (child.pid <= 0)
    return;
  if (child.own_group)
    ::kill(-child.pid, SIGKILL);
  ::kill(child.pid, SIGKILL);
#endif
}

// Asks the child to stop (POSIX: SIGTERM; Windows has no such request for a console program: it is terminated).
inline void request_stop(ChildProcess& child) {
#ifdef _WIN32
  terminate(child);
#else
  if (child.pid > 0)
    ::kill(child.pid, SIGTERM);
#endif
}

// The child's exit status once it has ended: at once (block = false: nullopt while it runs) or when it ends.
// Releases the OS's record of the child and closes its stdout and stderr pipes (stdin is write_stdin_and_close's).
inline std::optional<ExitStatus> reap(ChildProcess& child, bool block) {
  ExitStatus s;
#ifdef _WIN32
  if (!child.process)
    return std::nullopt;
  if (::WaitForSingleObject(child.process, block ? INFINITE : 0) != WAIT_OBJECT_0)
    return std::nullopt;
  DWORD code = 0;
  ::GetExitCodeProcess(child.process, &code);
  s.code = child.killed ? -1 : static_cast<int>(code);
  close_handle(child.process);
  close_handle(child.job);
  close_handle(child.out);
  close_handle(child.err);
#else
  if (child.pid <= 0)
    return std::nullopt;
  int status = 0;
  pid_t r;
  while ((r = ::waitpid(child.pid, &status, block ? 0 : WNOHANG)) < 0 && errno == EINTR) {
  }
  if (r == 0)
    return std::nullopt;
  if (r == child.pid && WIFEXITED(status))
    s.code = WEXITSTATUS(status);
  if (r == child.pid && WIFSIGNALED(status))
    s.signal = WTERMSIG(status);
  child.pid = -1;
  close_fd(child.out);
  close_fd(child.err);
#endif
  return s;
}

// ---- sockets --------------------------------------------------------------------------------------------------

#ifdef _WIN32
using socket_t = SOCKET;
const socket_t kNoSocket = INVALID_SOCKET;
using socklen_type = int;
// Winsock needs starting once per process, before the first socket.
inline const bool winsock_started = [] {
  WSADATA data;
  return ::WSAStartup(MAKEWORD(2, 2), &data) == 0;
}();
#else
using socket_t = int;
constexpr socket_t kNoSocket = -1;
using socklen_type = socklen_t;
#endif

// True for the error of a bind to a port another socket holds: EADDRINUSE; on Windows also WSAEACCES, the answer
// to a SO_REUSEADDR bind next to a socket with SO_EXCLUSIVEADDRUSE.
inline bool is_address_in_use(int code) {
#ifdef _WIN32
  return code == WSAEADDRINUSE || code == WSAEACCES;
#else
  return code == EADDRINUSE;
#endif
}

inline int last_socket_error() {
#ifdef _WIN32
  return ::WSAGetLastError();
#else
  return errno;
#endif
}

inline std::string socket_error_text(int code) {
#ifdef _WIN32
  return last_error_text(static_cast<DWORD>(code));
#else
  return std::strerror(code);
#endif
}

inline void close_socket(socket_t s) {
  if (s == kNoSocket)
    return;
#ifdef _WIN32
  ::closesocket(s);
#else
  ::close(s);
#endif
}

// A TCP socket not inherited by child processes.
inline socket_t tcp_socket(int family) {
#ifdef _WIN32
  SOCKET s = ::WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_NO_HANDLE_INHERIT);
  return s;
#elif defined(SOCK_CLOEXEC)
  return ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
#else
  int s = ::socket(family, SOCK_STREAM, 0);
  if (s >= 0)
    ::fcntl(s, F_SETFD, FD_CLOEXEC);
  return s;
#endif
}

// Send and receive timeouts, in milliseconds.
inline void set_io_timeouts(socket_t s, int timeout_ms) {
#ifdef _WIN32
  DWORD ms = static_cast<DWORD>(timeout_ms);
  ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, reinterpret_cast<const char*>(&ms), sizeof ms);
  ::setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, reinterpret_cast<const char*>(&ms), sizeof ms);
#else
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
#endif
}

inline void set_flag(socket_t s, int level, int name) {
  int one = 1;
  ::setsockopt(s, level, name, reinterpret_cast<const char*>(&one), sizeof one);
}

// Waits until the socket has something to read (or its peer closed), at most timeout_ms: false on timeout. The
// tests' clients wait with this rather than SO_RCVTIMEO alone, which Wine 8 does not always honour (seen: a
// blocking recv() waiting for minutes).
inline bool wait_readable(socket_t s, int timeout_ms) {
#ifdef _WIN32
  WSAPOLLFD p{s, POLLRDNORM, 0};
  return ::WSAPoll(&p, 1, timeout_ms) > 0;
#else
  pollfd p{s, POLLIN, 0};
  int n;
  while ((n = ::poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
  }
  return n > 0;
#endif
}

// IPv6 sockets for IPv6 only (no IPv4-mapped addresses).
inline void set_v6only(socket_t s) {
  set_flag(s, IPPROTO_IPV6, IPV6_V6ONLY);
}

// Every option that lets a second socket bind a port in use: SO_REUSEADDR and SO_REUSEPORT (POSIX);
// SO_REUSEADDR, which on Windows lets a socket take over a bound port.
inline void set_port_sharing(socket_t s) {
  set_flag(s, SOL_SOCKET, SO_REUSEADDR);
#ifdef SO_REUSEPORT
  set_flag(s, SOL_SOCKET, SO_REUSEPORT);
#endif
}

// Fills a sockaddr for a numeric IPv4 or IPv6 address ("127.0.0.1", "::1", "[::1]").
inline bool make_address(std::string host, int port, sockaddr_storage& ss, socklen_type& len) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  ss = sockaddr_storage{};
  auto* a4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET, host.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(static_cast<std::uint16_t>(port));
    len = sizeof(sockaddr_in);
    return true;
  }
  if (::inet_pton(AF_INET6, host.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<std::uint16_t>(port));
    len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

inline std::string address_text(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET)
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
  else
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof buf);
  return buf;
}

inline int port_of(const sockaddr_storage& ss) {
  return ntohs(ss.ss_family == AF_INET ? reinterpret_cast<const sockaddr_in*>(&ss)->sin_port
                                       : reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
}

inline bool bind_to(socket_t s, const sockaddr_storage& ss, socklen_type len) {
  return ::bind(s, reinterpret_cast<const sockaddr*>(&ss), len) == 0;
}

inline bool listen_on(socket_t s, int backlog) {
  return ::listen(s, backlog) == 0;
}

inline bool connect_to(socket_t s, const sockaddr_storage& ss, socklen_type len) {
  return ::connect(s, reinterpret_cast<const sockaddr*>(&ss), len) == 0;
}

// The first address a host name (or a numeric address) resolves to, as make_address() gives it.
inline bool resolve_address(const std::string& host, int port, sockaddr_storage& ss, socklen_type& len) {
  if (make_address(host, port, ss, len))
    return true;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || !found)
    return false;
  ss = sockaddr_storage{};
  std::memcpy(&ss, found->ai_addr, std::min<std::size_t>(found->ai_addrlen, sizeof ss));
  len = static_cast<socklen_type>(found->ai_addrlen);
  ::freeaddrinfo(found);
  return true;
}

// A connection accepted on a listening socket (kNoSocket on failure), not inherited by child processes.
inline socket_t accept_connection(socket_t listener) {
  socket_t s = ::accept(listener, nullptr, nullptr);
#ifdef _WIN32
  if (s != kNoSocket)
    ::SetHandleInformation(reinterpret_cast<HANDLE>(s), HANDLE_FLAG_INHERIT, 0);
#else
  if (s >= 0)
    ::fcntl(s, F_SETFD, FD_CLOEXEC);
#endif
  return s;
}

// Waits until a or b is readable (or closed): 1 for a, 2 for b, 3 for both, 0 when the time ran out.
inline int wait_readable_either(socket_t a, socket_t b, int timeout_ms) {
#ifdef _WIN32
  WSAPOLLFD p[2] = {{a, POLLRDNORM, 0}, {b, POLLRDNORM, 0}};
  if (::WSAPoll(p, 2, timeout_ms) <= 0)
    return 0;
#else
  pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
  int n;
  while ((n = ::poll(p, 2, timeout_ms)) < 0 && errno == EINTR) {
  }
  if (n <= 0)
    return 0;
#endif
  return (p[0].revents ? 1 : 0) | (p[1].revents ? 2 : 0);
}

// The port a socket is bound to (0: none).
inline int local_port(socket_t s) {
  sockaddr_storage ss{};
  socklen_type len = sizeof ss;
  if (::getsockname(s, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return 0;
  return port_of(ss);
}

// Sends what it can of data (never raising SIGPIPE); with dont_wait, without blocking. The bytes sent, or -1.
inline long send_some(socket_t s, const char* data, std::size_t size, bool dont_wait = false) {
#ifdef _WIN32
  u_long on = 1, off = 0;
  if (dont_wait)
    ::ioctlsocket(s, FIONBIO, &on);
  int n = ::send(s, data, static_cast<int>(std::min<std::size_t>(size, 1 << 30)), 0);
  if (dont_wait)
    ::ioctlsocket(s, FIONBIO, &off);
  return n;
#else
  int flags = dont_wait ? MSG_DONTWAIT : 0;
#ifdef MSG_NOSIGNAL
  flags |= MSG_NOSIGNAL;
#endif
  return static_cast<long>(::send(s, data, size, flags));
#endif
}

// True for the error of a send that would have blocked.
inline bool would_block(int code) {
#ifdef _WIN32
  return code == WSAEWOULDBLOCK;
#else
  return code == EAGAIN || code == EWOULDBLOCK;
#endif
}

// Reads what has arrived (blocking up to the receive timeout): the bytes read, 0 at the end, -1 on error.
inline long receive_some(socket_t s, char* buf, std::size_t size) {
#ifdef _WIN32
  return ::recv(s, buf, static_cast<int>(std::min<std::size_t>(size, 1 << 30)), 0);
#else
  return static_cast<long>(::recv(s, buf, size, 0));
#endif
}

// Half-closes: the peer reads end-of-file, the socket can still receive.
inline void shutdown_write(socket_t s) {
#ifdef _WIN32
  ::shutdown(s, SD_SEND);
#else
  ::shutdown(s, SHUT_WR);
#endif
}

// The machine's IPv4/IPv6 addresses other than loopback (and IPv6 link-local, which needs a scope to reach).
inline std::vector<std::string> non_loopback_addresses() {
  std::vector<std::string> out;
  auto keep = [&out](const sockaddr* a) {
    if (!a || (a->sa_family != AF_INET && a->sa_family != AF_INET6))
      return;
    sockaddr_storage ss{};
    std::memcpy(&ss, a, a->sa_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
    if (ss.ss_family == AF_INET6 && IN6_IS_ADDR_LINKLOCAL(&reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr))
      return;
    std::string text = address_text(ss);
    if (text.rfind("127.", 0) == 0 || text == "::1")
      return;
    out.push_back(text);
  };
#ifdef _WIN32
  ULONG size = 16384;
  std::vector<unsigned char> buf(size);
  auto* list = reinterpret_cast<IP_ADAPTER_ADDRESSES*>(buf.data());
  if (::GetAdaptersAddresses(AF_UNSPEC, GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST, nullptr, list, &size) ==
      ERROR_BUFFER_OVERFLOW) {
    buf.resize(size);
    list = reinterpret_cast<IP_ADAPTER_ADDRESSES*>(buf.data());
    if (::GetAdaptersAddresses(AF_UNSPEC, GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST, nullptr, list, &size) !=
        NO_ERROR)
      return out;
  }
  for (auto* adapter = list; adapter; adapter = adapter->Next)
    for (auto* u = adapter->FirstUnicastAddress; u; u = u->Next)
      keep(u->Address.lpSockaddr);
#else
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0)
    return out;
  for (ifaddrs* i = list; i; i = i->ifa_next)
    keep(i->ifa_addr);
  ::freeifaddrs(list);
#endif
  return out;
}

// This machine's host name when every address it resolves to is 127.0.0.1 (/etc/hosts maps it so on most
// systems): a name for a loopback server that is not spelled as loopback, as a proxy test needs (the library
// never proxies localhost, 127.0.0.0/8 or ::1). nullopt otherwise.
inline std::optional<std::string> loopback_host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0')
    return std::nullopt;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(name, nullptr, &hints, &found) != 0)
    return std::nullopt;
  bool all_loopback = found != nullptr;
  for (addrinfo* ai = found; ai; ai = ai->ai_next) {
    sockaddr_storage ss{};
    std::memcpy(&ss, ai->ai_addr, std::min<std::size_t>(ai->ai_addrlen, sizeof ss));
    if (ai->ai_family != AF_INET || address_text(ss) != "127.0.0.1")
      all_loopback = false;
  }
  ::freeaddrinfo(found);
  if (!all_loopback)
    return std::nullopt;
  return std::string(name);
}

// ---- what the kernel knows about sockets, descriptors and processes -------------------------------------------

// The addresses of every listening TCP socket on `port`, of every process, as text ("127.0.0.1", "::1",
// "0.0.0.0", "::"): Linux from /proc/net/tcp{,6}, Windows from GetExtendedTcpTable; nullopt elsewhere.
inline std::optional<std::multiset<std::string>> listening_addresses(int port) {
  std::multiset<std::string> out;
#ifdef _WIN32
  for (ULONG family : {static_cast<ULONG>(AF_INET), static_cast<ULONG>(AF_INET6)}) {
    DWORD size = 0;
    ::GetExtendedTcpTable(nullptr, &size, FALSE, family, TCP_TABLE_OWNER_PID_LISTENER, 0);
    std::vector<unsigned char> buf(size);
    if (::GetExtendedTcpTable(buf.data(), &size, FALSE, family, TCP_TABLE_OWNER_PID_LISTENER, 0) != NO_ERROR)
      return std::nullopt;
    sockaddr_storage ss{};
    if (family == AF_INET) {
      const auto* table = reinterpret_cast<const MIB_TCPTABLE_OWNER_PID*>(buf.data());
      for (DWORD i = 0; i < table->dwNumEntries; ++i) {
        if (ntohs(static_cast<u_short>(table->table[i].dwLocalPort)) != port)
          continue;
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = table->table[i].dwLocalAddr;
        out.insert(address_text(ss));
      }
    } else {
      const auto* table = reinterpret_cast<const MIB_TCP6TABLE_OWNER_PID*>(buf.data());
      for (DWORD i = 0; i < table->dwNumEntries; ++i) {
        if (ntohs(static_cast<u_short>(table->table[i].dwLocalPort)) != port)
          continue;
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        std::memcpy(&a->sin6_addr, table->table[i].ucLocalAddr, 16);
        out.insert(address_text(ss));
      }
    }
  }
  return out;
#elif defined(__linux__)
  char port_hex[8];
  std::snprintf(port_hex, sizeof port_hex, "%04X", port);
  for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, st;
      fields >> slot >> local >> remote >> st;
      std::size_t colon = local.find(':');
      if (st != "0A" || colon == std::string::npos || local.substr(colon + 1) != port_hex)
        continue;  // 0A: LISTEN
      // The address: 32-bit words in hexadecimal, each in the kernel's (host) byte order.
      const std::string hex = local.substr(0, colon);
      sockaddr_storage ss{};
      ss.ss_family = hex.size() == 8 ? AF_INET : AF_INET6;
      auto* bytes = ss.ss_family == AF_INET
                        ? reinterpret_cast<unsigned char*>(&reinterpret_cast<sockaddr_in*>(&ss)->sin_addr)
                        : reinterpret_cast<unsigned char*>(&reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr);
      for (std::size_t w = 0; w + 8 <= hex.size() && w < 32; w += 8) {
        auto word = static_cast<std::uint32_t>(std::stoul(hex.substr(w, 8), nullptr, 16));
        std::memcpy(bytes + w / 2, &word, 4);
      }
      out.insert(address_text(ss));
    }
  }
  return out;
#else
  (void)port;
  return std::nullopt;
#endif
}

// One listening socket of this process, with the port-sharing options it has set.
struct OwnListeningSocket {
  std::string address;  // "127.0.0.1", "::1", ...
  int reuseaddr = -1, reuseport = -1;
};

// This process's listening sockets on `port`, with their SO_REUSEADDR and SO_REUSEPORT: Linux, through
// /proc/self/fd; nullopt elsewhere (Windows has no SO_REUSEPORT, nor a list of a process's sockets).
inline std::optional<std::vector<OwnListeningSocket>> own_listening_sockets(int port) {
#ifdef __linux__
  std::vector<OwnListeningSocket> out;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d)
    return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.')
      continue;
    int fd = std::atoi(e->d_name);
    if (fd == ::dirfd(d))
      continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
      continue;
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
      continue;
    int listening = 0;
    socklen_t olen = sizeof listening;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &olen) != 0 || !listening)
      continue;
    if (port_of(ss) != port)
      continue;
    OwnListeningSocket l;
    l.address = address_text(ss);
    olen = sizeof l.reuseaddr;
    ::getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &l.reuseaddr, &olen);
    olen = sizeof l.reuseport;
    ::getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &l.reuseport, &olen);
    out.push_back(l);
  }
  ::closedir(d);
  return out;
#else
  (void)port;
  return std::nullopt;
#endif
}

// How many descriptors (Windows: handles) this process has open: Linux /proc/self/fd, Windows
// GetProcessHandleCount; -1 elsewhere.
inline int open_descriptor_count() {
#ifdef _WIN32
  DWORD n = 0;
  return ::GetProcessHandleCount(::GetCurrentProcess(), &n) ? static_cast<int>(n) : -1;
#elif defined(__linux__)
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d)
    return -1;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.')
      ++n;
  ::closedir(d);
  return n - 1;  // the directory's own descriptor
#else
  return -1;
#endif
}

#ifdef _WIN32
// The command line of another process (PEB via NtQueryInformationProcess, class 60: ProcessCommandLineInformation).
inline std::string command_line_of(DWORD pid) {
  using Query = LONG(WINAPI*)(HANDLE, int, PVOID, ULONG, PULONG);
  static const auto query = reinterpret_cast<Query>(
      reinterpret_cast<void*>(::GetProcAddress(::GetModuleHandleW(L"ntdll.dll"), "NtQueryInformationProcess")));
  HANDLE h = ::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
  if (!h || !query)
    return "";
  std::vector<unsigned char> buf(65536);
  ULONG len = 0;
  std::string out;
  if (query(h, 60, buf.data(), static_cast<ULONG>(buf.size()), &len) >= 0) {
    struct Unicode {
      USHORT length, maximum_length;
      PWSTR buffer;
    };
    const auto* u = reinterpret_cast<const Unicode*>(buf.data());
    if (u->buffer)
      out = narrow(std::wstring(u->buffer, u->length / sizeof(wchar_t)));
  }
  ::CloseHandle(h);
  return out;
}
#endif

// Processes (other than this one) whose command line contains `marker`: Linux /proc/<pid>/cmdline, Windows the
// process list and each one's command line; nullopt elsewhere.
inline std::optional<std::vector<long>> processes_mentioning(const std::string& marker) {
  std::vector<long> out;
#ifdef _WIN32
  HANDLE snap = ::CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
  if (snap == INVALID_HANDLE_VALUE)
    return out;
  PROCESSENTRY32W e{};
  e.dwSize = sizeof e;
  for (BOOL more = ::Process32FirstW(snap, &e); more; more = ::Process32NextW(snap, &e))
    if (static_cast<long>(e.th32ProcessID) != current_process_id() &&
        command_line_of(e.th32ProcessID).find(marker) != std::string::npos)
      out.push_back(static_cast<long>(e.th32ProcessID));
  ::CloseHandle(snap);
  return out;
#elif defined(__linux__)
  DIR* d = ::opendir("/proc");
  if (!d)
    return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (!end || *end || pid <= 0 || pid == current_process_id())
      continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(marker) != std::string::npos)
      out.push_back(pid);
  }
  ::closedir(d);
  return out;
#else
  (void)marker;
  return std::nullopt;
#endif
}

// The exit code of a process that kill_self() ended on Windows (POSIX: it ends by SIGKILL).
constexpr int kKilledSelfExitCode = 137;

// Ends this process at once, as a kill from outside would: no destructor, no flush (Windows: TerminateProcess
// with kKilledSelfExitCode; POSIX: SIGKILL).
[[noreturn]] inline void kill_self() {
#ifdef _WIN32
  ::TerminateProcess(::GetCurrentProcess(), kKilledSelfExitCode);
#else
  ::kill(::getpid(), SIGKILL);
#endif
  std::abort();  // not reached
}

// Kills a process by its id, at once.
inline void kill_process(long pid) {
#ifdef _WIN32
  HANDLE h = ::OpenProcess(PROCESS_TERMINATE, FALSE, static_cast<DWORD>(pid));
  if (h) {
    ::TerminateProcess(h, 1);
    ::CloseHandle(h);
  }
#else
  ::kill(static_cast<pid_t>(pid), SIGKILL);
#endif
}

#ifndef _WIN32
// ---- POSIX only: fork() -----------------------------------------------------------------------------------------
// Windows has no fork(): the tests that fork (and those that SIGKILL a child mid-write or drop to another uid in
// one) are POSIX-only, and marked so where they stand.

// fork() while other threads run (the mock server's) can deadlock the child inside the ASan/TSan allocator (seen
// with clang 14: 1 run in ~24). The tests that fork with a mock running are therefore run by the plain g++/clang++
// stages only; fork() without threads runs everywhere.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// cpp-httplib built with CPPHTTPLIB_USE_NON_BLOCKING_GETADDRINFO (upstream's CMake default in 0.53.1) resolves
// names with glibc's getaddrinfo_a, whose helper thread does not survive fork(): a child's first lookup can wait
// for a thread that only the parent has. Tests whose forked child makes HTTP calls do not run with it.
#ifdef CPPHTTPLIB_USE_NON_BLOCKING_GETADDRINFO
constexpr bool kForkedChildCannotResolve = true;
#else
constexpr bool kForkedChildCannotResolve = false;
#endif
constexpr const char* kForkedChildCannotResolveWhy =
    "not run: cpp-httplib resolves names with getaddrinfo_a (CPPHTTPLIB_USE_NON_BLOCKING_GETADDRINFO), which a "
    "forked child cannot use";

// Writes all of data to fd (in a forked child too: no allocation).
inline void write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}
inline void write_all(int fd, const std::string& s) {
  write_all(fd, s.data(), s.size());
}

// One byte from fd; false at its end.
inline bool read_byte(int fd, char& c) {
  ssize_t n;
  while ((n = ::read(fd, &c, 1)) < 0 && errno == EINTR) {
  }
  return n == 1;
}

// A pipe whose ends close with it; for lining forked children up: each reads one byte before it starts.
class Pipe {
 public:
  Pipe() {
    if (!make_pipe(fds_))
      throw std::runtime_error("pipe failed: " + std::string(std::strerror(errno)));
  }
  ~Pipe() {
    close_read();
    close_write();
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  int read_fd() const { return fds_[0]; }
  int write_fd() const { return fds_[1]; }
  void close_read() { close_fd(fds_[0]); }
  void close_write() { close_fd(fds_[1]); }

 private:
  int fds_[2] = {-1, -1};
};

// Forks a child that runs body(write_fd) and then _exit()s with its return value (1 if it throws). What the child
// writes to write_fd comes out of the returned ChildProcess's stdout pipe. The child must not start threads, and
// must not return into the test framework: body's return value is its exit code.
template <class Body>
ChildProcess fork_child(Body&& body) {
  int p[2];
  if (!make_pipe(p))
    throw std::runtime_error("pipe failed: " + std::string(std::strerror(errno)));
  pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error("fork failed: " + std::string(std::strerror(errno)));
  if (pid == 0) {
    ::close(p[0]);
    int code = 1;
    try {
      code = body(p[1]);
    } catch (const std::exception& e) {
      write_all(p[1], std::string("EXCEPTION: ") + e.what());
    } catch (...) {
      write_all(p[1], "EXCEPTION: unknown");
    }
    ::_exit(code);
  }
  ::close(p[1]);
  ChildProcess c;
  c.pid = pid;
  c.out = p[0];
  return c;
}
#endif

}  // namespace platform
}  // namespace support

#endif
