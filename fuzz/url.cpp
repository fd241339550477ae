// libFuzzer target: URL parsing, detail::parse_url, and Endpoints::from_base_url, on arbitrary text (callback
// URLs, base URLs, discovery endpoints and Location headers all come from outside).
//
// Invariants:
//   - parse_url never throws; what it accepts is http(s) with a non-empty host (lower case unless IPv6), a port
//     in 0..65535, a path starting with '/', no whitespace or control characters in path and query;
//   - origin() and origin() + target() parse again to the same scheme, host, port, path and query (stable);
//   - Endpoints::from_base_url throws only aps::auth::Error; when it returns, every endpoint is a URL the library
//     would call (require_url accepts it) and the APS paths sit in the URL's path, not in its query or fragment;
//   - is_loopback_host and no_proxy_matches never throw.
#include "aps_auth.hpp"
#include "fuzz_util.hpp"

#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

namespace d = aps::auth::detail;
using fuzz_util::require;

void check_url(const d::Url& u, std::string_view in) {
  require(u.scheme == "http" || u.scheme == "https", "scheme not http(s)", in);
  require(!u.host.empty(), "empty host", in);
  require(u.port >= 0 && u.port <= 65535, "port out of range", in);
  require(!u.path.empty() && u.path.front() == '/', "path does not start with '/'", in);
  if (!u.ipv6())
    for (char c : u.host)
      require(!std::isupper(static_cast<unsigned char>(c)), "host not lower case", in);
  for (char c : u.path + u.query)
    require(static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f,
            "whitespace or control character in path/query", in);
}

void same_place(const d::Url& a, const d::Url& b, std::string_view in, const char* what) {
  require(a.scheme == b.scheme && a.host == b.host && a.port == b.port, what, in);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in = fuzz_util::as_text(data, size);

  std::optional<d::Url> u;
  try {
    u = d::parse_url(in);
  } catch (const std::exception& e) {
    fuzz_util::fail("parse_url threw", e.what());
  }
  if (u) {
    check_url(*u, in);
    const std::string origin = u->origin();
    auto o = d::parse_url(origin);
    require(o.has_value(), "origin() does not parse again", origin);
    same_place(*u, *o, origin, "origin() parses to another place");
    require(o->path == "/" && o->query.empty() && o->userinfo.empty(), "origin() has a path, query or userinfo",
            origin);
    const std::string full = origin + u->target();
    auto f = d::parse_url(full);
    require(f.has_value(), "origin() + target() does not parse again", full);
    same_place(*u, *f, full, "origin() + target() parses to another place");
    require(f->path == u->path && f->query == u->query, "origin() + target() changes path or query", full);
    require(f->target() == u->target(), "target() not stable", full);

    (void)d::is_loopback_host(u->host);
    (void)d::no_proxy_matches(u->host, std::string(in));
    (void)d::no_proxy_matches(u->host, ".example.com, localhost:8080,[::1],*");
  }

  // Endpoints::from_base_url
  aps::auth::Endpoints e;
  bool ok = fuzz_util::only_error([&] { e = aps::auth::Endpoints::from_base_url(in); });
  if (ok) {
    const std::pair<const std::string*, const char*> endpoints[] = {{&e.authorize, "/authentication/v2/authorize"},
                                                                    {&e.token, "/authentication/v2/token"},
                                                                    {&e.revoke, "/authentication/v2/revoke"},
                                                                    {&e.introspect, "/authentication/v2/introspect"},
                                                                    {&e.jwks, "/authentication/v2/keys"},
                                                                    {&e.logout, "/authentication/v2/logout"},
                                                                    {&e.userinfo, "/userinfo"}};
    for (const auto& entry : endpoints) {
      const std::string* url = entry.first;
      const char* path = entry.second;
      bool accepted = fuzz_util::only_error([&] { (void)d::require_url(*url, "endpoint"); });
      require(accepted, "from_base_url produced an endpoint require_url refuses", *url);
      auto p = d::parse_url(*url);
      require(p.has_value(), "from_base_url produced an endpoint that does not parse", *url);
      std::string_view ppath = p->path;
      require(ppath.size() >= std::string_view(path).size() &&
                  ppath.substr(ppath.size() - std::string_view(path).size()) == path && p->query.empty(),
              "from_base_url put the APS path outside the URL's path (base had a query or fragment?)", *url);
    }
  }
  return 0;
}
