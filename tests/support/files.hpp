// Files of the tests: a private temporary directory, reading and writing whole files, their permission bits,
// listing a directory. std::filesystem, and platform.hpp for the temporary directory itself. Not part of the
// library.
#ifndef APS_AUTH_TESTS_SUPPORT_FILES_HPP
#define APS_AUTH_TESTS_SUPPORT_FILES_HPP

#include "platform.hpp"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

namespace support {

// Removes a file or a directory with everything in it, whatever the permissions left on its directories.
inline void remove_tree(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(path, ec);
  if (ec || !fs::exists(st))
    return;
  if (fs::is_directory(st)) {
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    std::vector<fs::path> children;
    for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec))
      children.push_back(it->path());
    for (const auto& child : children)
      remove_tree(child);
  }
  fs::remove(path, ec);
}

// The whole content of a file; nullopt when it cannot be opened.
inline std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return std::nullopt;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Replaces the file by one holding `text`, with exactly the permission bits `mode` (whatever the umask; on
// Windows an access list made from them: platform::write_new_file). Throws std::runtime_error when it cannot be
// written.
inline void write_file(const std::string& path, const std::string& text, int mode = 0600) {
  std::error_code ec;
  // Windows does not delete a read-only file (a 0400 one written before).
  std::filesystem::permissions(path, std::filesystem::perms::owner_write, std::filesystem::perm_options::add, ec);
  std::filesystem::remove(path, ec);
  platform::write_new_file(path, text, mode);
}

// The permission bits of a path (following links), -1 when it does not exist.
inline int file_mode(const std::string& path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st))
    return -1;
  return static_cast<int>(st.permissions() & std::filesystem::perms::mask);
}

// Who other than its owner may read or write the file: "" when nobody (POSIX: no group or other bit; Windows: an
// access list for the user alone), else what lets others in; "missing" when it does not exist.
inline std::string others_access(const std::string& path) {
  return platform::access_by_others(path).value_or("missing");
}

// True when the path names anything, a dangling link included.
inline bool exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(std::filesystem::symlink_status(path, ec));
}

inline bool is_file(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

// The names in a directory that start with `prefix`.
inline std::vector<std::string> list_dir(const std::string& dir, const std::string& prefix = "") {
  std::vector<std::string> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.compare(0, prefix.size(), prefix) == 0)
      out.push_back(name);
  }
  return out;
}

// A private temporary directory, removed with everything in it.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "aps_auth_test_") : path_(platform::make_temp_dir(prefix)) {}
  ~TempDir() { remove_tree(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // The path of `name` (which may hold '/') inside the directory.
  std::string file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }
  // Writes `name` (mode as write_file) and returns its path.
  std::string write(const std::string& name, const std::string& text, int mode = 0600) const {
    write_file(file(name), text, mode);
    return file(name);
  }

 private:
  std::string path_;
};

}  // namespace support

#endif
