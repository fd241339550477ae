// libFuzzer target: the token file, FileTokenStore::load, on a file with arbitrary content (a crash, a full
// disk, another program or a person may leave anything there). The input is written to one temporary file,
// created once per run and reused.
//
// Invariants:
//   - load never crashes and throws only aps::auth::Error, of kind io ("not a valid token" for bad content);
//   - a load that succeeds gives the token Token::from_json gives for the same text (the parser is the same);
//   - a file readable by others is refused (OpenPermissions::refuse, kind io) or reported through the warn
//     callback (OpenPermissions::warn), and then loads exactly as before.
#include "aps_auth.hpp"
#include "fuzz_util.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using aps::auth::ErrorKind;
using aps::auth::FileTokenStore;
using aps::auth::Token;
using fuzz_util::require;

std::string dir, path;

void cleanup() {
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
}

void write_file(const std::uint8_t* data, std::size_t size, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    fuzz_util::fail("cannot write the temporary token file");
  std::size_t off = 0;
  while (off < size) {
    ssize_t n = ::write(fd, data + off, size - off);
    if (n <= 0)
      fuzz_util::fail("cannot write the temporary token file");
    off += static_cast<std::size_t>(n);
  }
  ::fchmod(fd, mode);
  ::close(fd);
}

// Loads with the given permission policy; true when a token came back. Errors must be io.
bool load(FileTokenStore::OpenPermissions perms, Token& t, bool* warned = nullptr) {
  FileTokenStore store(path, perms, [&](const std::string& msg) {
    require(fuzz_util::printable(msg), "warning with control characters", msg);
    if (warned)
      *warned = true;
  });
  aps::auth::Error err(ErrorKind::usage, "");
  bool loaded = false;
  bool ok = fuzz_util::only_error([&] { loaded = store.load(t); }, &err);
  if (!ok)
    require(err.kind() == ErrorKind::io, "load threw an error that is not io", err.what());
  if (ok)
    require(loaded, "load said there is no token although the file exists");
  return ok && loaded;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/aps_auth_fuzz_token_file.XXXXXX";
  if (!::mkdtemp(tmpl))
    fuzz_util::fail("mkdtemp failed");
  dir = tmpl;
  path = dir + "/token.json";
  std::atexit(cleanup);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  write_file(data, size, 0600);
  Token t;
  const bool loaded = load(FileTokenStore::OpenPermissions::refuse, t);

  const std::string text(fuzz_util::as_text(data, size));
  Token direct;
  const bool parsed = fuzz_util::only_error([&] { direct = Token::from_json(text); });
  require(loaded == parsed, loaded ? "load accepted what from_json refuses" : "load refused what from_json accepts");
  if (loaded) {
    require(!t.access_token.empty(), "loaded a token without access_token");
    require(t.access_token == direct.access_token && t.refresh_token == direct.refresh_token &&
                t.id_token == direct.id_token && t.scope == direct.scope && t.token_type == direct.token_type &&
                t.expires_in == direct.expires_in,
            "load and from_json disagree");
  }

  if (size % 5 == 0) {  // now readable by the group: refused, or loaded with a warning
    write_file(data, size, 0640);
    Token r;
    require(!load(FileTokenStore::OpenPermissions::refuse, r), "a group-readable token file was accepted");
    bool warned = false;
    Token w;
    bool wl = load(FileTokenStore::OpenPermissions::warn, w, &warned);
    require(warned, "a group-readable token file loaded without a warning");
    require(wl == loaded && w.access_token == t.access_token, "warn mode loads differently");
  }
  return 0;
}
