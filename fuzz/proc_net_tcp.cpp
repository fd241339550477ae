// libFuzzer target: the listener's peer check reads Linux's /proc/net/tcp and /proc/net/tcp6, a table the kernel
// writes but whose lines a test or a hostile environment (a bind-mounted /proc) could fill with anything:
// detail::parse_proc_net_tcp_line on arbitrary lines.
//
// Invariants:
//   - parse_proc_net_tcp_line never throws and never reads out of bounds (ASan);
//   - an entry it returns has 4- or 16-byte addresses, ports and state that fit their fields, a uid below 2^32;
//   - formatting the entry back as the kernel does (each 32-bit word %08X in host order, the port %04X, the state
//     %02X) gives the line's own fields, ignoring the case of hex digits: nothing invented, nothing dropped.
#include "aps_auth.hpp"
#include "fuzz_util.hpp"

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace d = aps::auth::detail;
using fuzz_util::require;

std::string endpoint_text(const unsigned char* address, std::size_t size, int port) {
  std::string out;
  char word_text[16];
  for (std::size_t w = 0; w < size / 4; ++w) {
    std::uint32_t word = 0;
    std::memcpy(&word, address + 4 * w, 4);
    std::snprintf(word_text, sizeof word_text, "%08X", static_cast<unsigned>(word));
    out += word_text;
  }
  std::snprintf(word_text, sizeof word_text, ":%04X", static_cast<unsigned>(port));
  return out + word_text;
}

std::vector<std::string> upper_fields(std::string_view line) {
  std::vector<std::string> fields;
  std::string cur;
  for (char c : line) {
    if (c == ' ' || c == '\t') {
      if (!cur.empty())
        fields.push_back(cur);
      cur.clear();
    } else {
      cur += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
  }
  if (!cur.empty())
    fields.push_back(cur);
  return fields;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view line = fuzz_util::as_text(data, size);
  std::optional<d::ProcTcpEntry> e;
  try {
    e = d::parse_proc_net_tcp_line(line);
  } catch (const std::exception& ex) {
    fuzz_util::fail("parse_proc_net_tcp_line threw", ex.what());
  }
  if (!e)
    return 0;
  require(e->address_size == 4 || e->address_size == 16, "address size not 4 or 16");
  require(e->local_port >= 0 && e->local_port <= 0xFFFF && e->remote_port >= 0 && e->remote_port <= 0xFFFF,
          "port out of range");
  require(e->state >= 0 && e->state <= 0xFF, "state out of range");
  require(e->uid <= 0xFFFFFFFFul, "uid out of range");
  const std::vector<std::string> f = upper_fields(line);
  require(f.size() >= 8, "an entry from a line of fewer than 8 fields", line);
  require(endpoint_text(e->local, e->address_size, e->local_port) == f[1], "local endpoint not the line's", line);
  require(endpoint_text(e->remote, e->address_size, e->remote_port) == f[2], "remote endpoint not the line's", line);
  unsigned long long state = 0;
  for (char c : f[3])
    state = state * 16 + static_cast<unsigned>(std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : c - 'A' + 10);
  require(state == static_cast<unsigned long long>(e->state), "state not the line's", line);
  require(
      std::to_string(e->uid) ==
          f[7].substr(f[7].find_first_not_of('0') == std::string::npos ? f[7].size() - 1 : f[7].find_first_not_of('0')),
      "uid not the line's", line);
  return 0;
}
