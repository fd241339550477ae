// Tests of the pure parts of aps_auth: encodings, PKCE, Basic credentials, the authorize URL, URL parsing,
// endpoints, the Token JSON round trip and the typed error. No sockets here. The properties: state and PKCE
// verifier random, base64url, of 128 and 256 bits; PKCE is S256 (the RFC 7636 vector); every value is encoded
// once, decoded once; client credentials in a Basic header are form-encoded first (the RFC 6749 vectors).
#include <doctest/doctest.h>

#include "aps_auth.hpp"
#include "support/library.hpp"
#include "support/text.hpp"

#include <chrono>
#include <set>
#include <string>
#include <vector>

namespace auth = aps::auth;
namespace detail = aps::auth::detail;
using support::catch_error, support::require_error, support::contains, support::param, support::query_of;

namespace {

auth::Config test_config() {
  auth::Config c;
  c.client_id = "my-client_id.1";
  c.callback_url = "http://localhost:8080/api/auth/callback";
  c.scopes = {"data:read", "data:write"};
  return c;
}

}  // namespace

TEST_SUITE("pkce") {
  TEST_CASE("RFC 7636 Appendix B vector (S256)") {
    CHECK(auth::pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") ==
          "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
  }

  TEST_CASE("random_urlsafe is base64url without padding, of the right length, never repeating") {
    CHECK(auth::random_urlsafe(16).size() == 22);  // 128 bits
    CHECK(auth::random_urlsafe(32).size() == 43);  // 32 octets
    CHECK(auth::random_urlsafe(0).empty());
    std::set<std::string> seen;
    for (int i = 0; i < 200; ++i) {
      std::string s = auth::random_urlsafe(16);
      CHECK(support::only_base64url_chars(s));
      seen.insert(s);
    }
    CHECK(seen.size() == 200);
  }
}

TEST_SUITE("client authentication") {
  TEST_CASE("RFC 6749 §2.3.1 Basic vector (plain characters)") {
    CHECK(detail::basic_authorization("s6BhdRkqt3", "7Fjfp0ZBr1KtDRbnfVdmIw") ==
          "Basic czZCaGRSa3F0Mzo3RmpmcDBaQnIxS3REUmJuZlZkbUl3");
  }

  TEST_CASE("RFC 6749 §2.3.1 Basic vector (id and secret form-encoded before base64)") {
    CHECK(detail::basic_authorization("1PpG/Q 1", "z/tZ9VwFZqApmIQ+ZH1I5pLk/uB4ud:X2/8bL+wfFTt1rFw=") ==
          "Basic MVBwRyUyRlErMTp6JTJGdFo5VndGWnFBcG1JUSUyQlpIMUk1cExrJTJGdUI0dWQlM0FYMiUyRjhiTCUyQndmRlR0MXJGdyUzRA==");
  }
}

TEST_SUITE("encoding") {
  TEST_CASE("url_encode keeps only unreserved characters and encodes a space as %20") {
    CHECK(detail::url_encode("AZaz09-._~") == "AZaz09-._~");
    CHECK(detail::url_encode("data:read data:write") == "data%3Aread%20data%3Awrite");
    CHECK(detail::url_encode("http://localhost:8080/a?b=c&d") == "http%3A%2F%2Flocalhost%3A8080%2Fa%3Fb%3Dc%26d");
    CHECK(detail::url_encode("+%#") == "%2B%25%23");
    CHECK(detail::url_encode("\xc3\xa9") == "%C3%A9");  // UTF-8 bytes, upper-case hex
    CHECK(detail::url_encode(std::string("a\0b", 3)) == "a%00b");
    CHECK(detail::url_encode("") == "");
  }

  TEST_CASE("form_encode is application/x-www-form-urlencoded (space as '+', '+' escaped)") {
    CHECK(detail::form_encode("a b") == "a+b");
    CHECK(detail::form_encode("a+b") == "a%2Bb");
    CHECK(detail::form_encode("1PpG/Q 1") == "1PpG%2FQ+1");
    CHECK(detail::form_encode("x=y&z") == "x%3Dy%26z");
    CHECK(detail::form_encode("~") == "~");
    CHECK(detail::form_encode("%20") == "%2520");  // a literal "%20" is not mistaken for a space
  }

  TEST_CASE("percent_decode decodes exactly once and rejects broken escapes") {
    CHECK(detail::percent_decode("%2541", false) == std::optional<std::string>("%41"));
    CHECK(detail::percent_decode("%41%42c", false) == std::optional<std::string>("ABc"));
    CHECK(detail::percent_decode("%e9%C3%A9", false) == std::optional<std::string>("\xe9\xc3\xa9"));
    SUBCASE("'+' is a space only in form/query data") {
      CHECK(detail::percent_decode("a+b", true) == std::optional<std::string>("a b"));
      CHECK(detail::percent_decode("a+b", false) == std::optional<std::string>("a+b"));
      CHECK(detail::percent_decode("a%2Bb", true) == std::optional<std::string>("a+b"));
    }
    SUBCASE("broken escapes") {
      for (const char* broken : {"%", "%4", "abc%", "abc%4", "%zz", "%4g", "%g4", "%%41", "a%2"}) {
        CAPTURE(broken);
        CHECK_FALSE(detail::percent_decode(broken, true).has_value());
      }
    }
    SUBCASE("round trip of every byte") {
      std::string all;
      for (int c = 0; c < 256; ++c)
        all += static_cast<char>(c);
      CHECK(detail::percent_decode(detail::url_encode(all), false) == std::optional<std::string>(all));
      CHECK(detail::percent_decode(detail::form_encode(all), true) == std::optional<std::string>(all));
    }
  }

  TEST_CASE("parse_query splits and decodes each name and value once") {
    auto q = detail::parse_query("code=a%2Bb&state=x%2541&empty=&flag&&sp=a+b%20c");
    REQUIRE(q.has_value());
    REQUIRE(q->size() == 5);
    CHECK((*q)[0] == std::make_pair(std::string("code"), std::string("a+b")));
    CHECK((*q)[1] == std::make_pair(std::string("state"), std::string("x%41")));
    CHECK((*q)[2] == std::make_pair(std::string("empty"), std::string("")));
    CHECK((*q)[3] == std::make_pair(std::string("flag"), std::string("")));
    CHECK((*q)[4] == std::make_pair(std::string("sp"), std::string("a b c")));
    CHECK(detail::parse_query("")->empty());
    CHECK_FALSE(detail::parse_query("a=%zz").has_value());
    CHECK_FALSE(detail::parse_query("a%=1").has_value());
    SUBCASE("duplicates are kept (the listener rejects them)") {
      auto d = detail::parse_query("state=1&state=2");
      REQUIRE(d.has_value());
      CHECK(d->size() == 2);
    }
  }

  TEST_CASE("base64 and base64url encode and decode") {
    CHECK(detail::base64("", false) == "");
    CHECK(detail::base64("f", false) == "Zg==");
    CHECK(detail::base64("fo", false) == "Zm8=");
    CHECK(detail::base64("foo", false) == "Zm9v");
    CHECK(detail::base64("foob", true) == "Zm9vYg");
    CHECK(detail::base64("\xfb\xff", false) == "+/8=");
    CHECK(detail::base64("\xfb\xff", true) == "-_8");
    CHECK(detail::base64_decode("Zm9vYg==") == std::optional<std::string>("foob"));
    CHECK(detail::base64_decode("-_8") == std::optional<std::string>("\xfb\xff"));
    CHECK_FALSE(detail::base64_decode("Zm9v!").has_value());
    CHECK_FALSE(detail::base64_decode("Z").has_value());
  }

  TEST_CASE(
      "html_escape (public, for web servers' pages, and the listener's own) escapes the five HTML metacharacters") {
    CHECK(auth::html_escape("<script>alert('x\"&')</script>") ==
          "&lt;script&gt;alert(&#39;x&quot;&amp;&#39;)&lt;/script&gt;");
    CHECK(auth::html_escape("plain text, UTF-8: \xc3\xa9") == "plain text, UTF-8: \xc3\xa9");
    CHECK(auth::html_escape("&amp;") == "&amp;amp;");  // text, not markup: an entity is escaped again
    CHECK(detail::html_escape("<'>") == auth::html_escape("<'>"));
  }
}

TEST_SUITE("authorize URL") {
  TEST_CASE("the authorize URL carries every parameter, encoded, and parses back to the same values") {
    auth::Config config = test_config();
    config.scopes = {"data:read", "data:write", "openid"};
    auth::AuthorizeOptions options;
    options.prompt = "login";
    options.response_mode = "query";
    options.authoptions = R"({"id":"a b&c=d"})";
    auth::AuthorizationRequest r = auth::authorization_request(config, options);

    CHECK(r.redirect_uri == config.callback_url);
    CHECK(r.url.rfind("https://developer.api.autodesk.com/authentication/v2/authorize?", 0) == 0);

    auto q = query_of(r.url);
    CHECK(q.size() == 11);  // nothing else, nothing twice
    CHECK(param(q, "response_type") == "code");
    CHECK(param(q, "client_id") == "my-client_id.1");
    CHECK(param(q, "redirect_uri") == "http://localhost:8080/api/auth/callback");
    CHECK(param(q, "scope") == "data:read data:write openid");
    CHECK(param(q, "state") == r.state);
    CHECK(param(q, "code_challenge") == r.code_challenge);
    CHECK(param(q, "code_challenge_method") == "S256");
    CHECK(param(q, "nonce") == r.nonce);
    CHECK(param(q, "prompt") == "login");
    CHECK(param(q, "response_mode") == "query");
    CHECK(param(q, "authoptions") == R"({"id":"a b&c=d"})");

    SUBCASE("scope spaces are %20, never '+'; the redirect_uri and authoptions are percent-encoded") {
      CHECK(contains(r.url, "scope=data%3Aread%20data%3Awrite%20openid"));
      CHECK(contains(r.url, "redirect_uri=http%3A%2F%2Flocalhost%3A8080%2Fapi%2Fauth%2Fcallback"));
      CHECK(contains(r.url, "authoptions=%7B%22id%22%3A%22a%20b%26c%3Dd%22%7D"));
      CHECK_FALSE(contains(r.url, "+"));
      CHECK_FALSE(contains(r.url, " "));
    }
    SUBCASE("state has at least 128 bits, base64url (the characters APS allows)") {
      CHECK(r.state.size() >= 22);
      CHECK(support::only_base64url_chars(r.state));
    }
    SUBCASE("PKCE verifier of 32 octets (43 chars) and its S256 challenge") {
      CHECK(r.code_verifier.size() == 43);
      CHECK(support::only_base64url_chars(r.code_verifier));
      CHECK(r.code_challenge == auth::pkce_challenge(r.code_verifier));
      CHECK(r.code_challenge.size() == 43);
      CHECK_FALSE(contains(r.url, r.code_verifier));  // the verifier never travels through the browser
    }
    SUBCASE("nonce with openid") {
      CHECK(r.nonce.size() >= 22);
      CHECK(support::only_base64url_chars(r.nonce));
    }
  }

  TEST_CASE("nonce, prompt, response_mode and authoptions only when asked for") {
    auth::AuthorizationRequest r = auth::authorization_request(test_config());
    CHECK(r.nonce.empty());
    auto q = query_of(r.url);
    CHECK(q.size() == 7);
    for (const char* absent : {"nonce", "prompt", "response_mode", "authoptions"}) {
      CAPTURE(absent);
      CHECK(q.count(absent) == 0);
    }
    CHECK(param(q, "code_challenge_method") == "S256");  // PKCE always, for confidential clients too
  }

  TEST_CASE("PKCE S256 for a confidential client too, and the secret never in the URL") {
    auth::Config config = test_config();
    config.client_secret = "s3cr3t-value-xyz";
    auth::AuthorizationRequest r = auth::authorization_request(config);
    CHECK(param(query_of(r.url), "code_challenge_method") == "S256");
    CHECK_FALSE(contains(r.url, config.client_secret));
  }

  TEST_CASE("state, verifier and nonce differ between calls") {
    auth::Config config = test_config();
    config.scopes.push_back("openid");
    auth::AuthorizationRequest a = auth::authorization_request(config);
    auth::AuthorizationRequest b = auth::authorization_request(config);
    CHECK(a.state != b.state);
    CHECK(a.code_verifier != b.code_verifier);
    CHECK(a.code_challenge != b.code_challenge);
    CHECK(a.nonce != b.nonce);
    CHECK(a.url != b.url);
  }

  TEST_CASE("an explicit redirect_uri (the listener's) overrides the callback URL, unchanged") {
    auth::AuthorizationRequest r =
        auth::authorization_request(test_config(), {}, "http://127.0.0.1:54321/cb/path?x=1&y=a%20b");
    CHECK(r.redirect_uri == "http://127.0.0.1:54321/cb/path?x=1&y=a%20b");
    // decoded once, the parameter is the redirect_uri byte for byte (its own %20 intact)
    CHECK(param(query_of(r.url), "redirect_uri") == "http://127.0.0.1:54321/cb/path?x=1&y=a%20b");
    CHECK(contains(r.url, "redirect_uri=http%3A%2F%2F127.0.0.1%3A54321%2Fcb%2Fpath%3Fx%3D1%26y%3Da%2520b"));
  }

  TEST_CASE("an authorize endpoint with a query keeps it and appends with '&'") {
    auth::Config config = test_config();
    config.endpoints.authorize = "https://idp.example.com/authorize?tenant=a";
    auth::AuthorizationRequest r = auth::authorization_request(config);
    CHECK(r.url.rfind("https://idp.example.com/authorize?tenant=a&response_type=code&", 0) == 0);
  }

  TEST_CASE("usage errors: no client id, plain http to a remote host, not a URL") {
    SUBCASE("no client id") {
      auth::Config config = test_config();
      config.client_id.clear();
      auto e = require_error([&] { (void)auth::authorization_request(config); });
      CHECK(e.kind() == auth::ErrorKind::usage);
    }
    SUBCASE("plain http authorize endpoint on a remote host") {
      auth::Config config = test_config();
      config.endpoints.authorize = "http://developer.api.autodesk.com/authentication/v2/authorize";
      auto e = require_error([&] { (void)auth::authorization_request(config); });
      CHECK(e.kind() == auth::ErrorKind::usage);
      CHECK(contains(e.what(), "plain http"));
    }
    SUBCASE("plain http callback on a remote host") {
      auth::Config config = test_config();
      config.callback_url = "http://example.com/callback";
      auto e = require_error([&] { (void)auth::authorization_request(config); });
      CHECK(e.kind() == auth::ErrorKind::usage);
    }
    SUBCASE("a callback that is not an absolute URL") {
      auth::Config config = test_config();
      config.callback_url = "localhost:8080/callback";
      auto e = require_error([&] { (void)auth::authorization_request(config); });
      CHECK(e.kind() == auth::ErrorKind::usage);
    }
  }
}

TEST_SUITE("URLs") {
  TEST_CASE("parse_url: scheme, host, port, path, query") {
    auto u = detail::parse_url("HTTPS://Developer.API.Autodesk.com/authentication/v2/token?a=1#frag");
    REQUIRE(u);
    CHECK(u->scheme == "https");
    CHECK(u->host == "developer.api.autodesk.com");
    CHECK(u->port == 443);
    CHECK(u->path == "/authentication/v2/token");
    CHECK(u->query == "a=1");
    CHECK(u->origin() == "https://developer.api.autodesk.com:443");
    CHECK(u->target() == "/authentication/v2/token?a=1");

    SUBCASE("default ports and no path") {
      auto h = detail::parse_url("http://localhost");
      REQUIRE(h);
      CHECK(h->port == 80);
      CHECK(h->path == "/");
      CHECK(h->query.empty());
      auto q = detail::parse_url("http://localhost?x=y");
      REQUIRE(q);
      CHECK(q->path == "/");
      CHECK(q->query == "x=y");
    }
    SUBCASE("explicit ports") {
      CHECK(detail::parse_url("http://localhost:8080/cb")->port == 8080);
      CHECK(detail::parse_url("https://h:0/")->port == 0);
      CHECK(detail::parse_url("https://h:65535/")->port == 65535);
    }
    SUBCASE("IPv6 literals in brackets") {
      auto v6 = detail::parse_url("http://[::1]:8080/api/auth/callback");
      REQUIRE(v6);
      CHECK(v6->host == "::1");
      CHECK(v6->ipv6());
      CHECK(v6->port == 8080);
      CHECK(v6->path == "/api/auth/callback");
      CHECK(v6->host_for_url() == "[::1]");
      CHECK(v6->origin() == "http://[::1]:8080");
      auto v6b = detail::parse_url("https://[2001:db8::1]/x");
      REQUIRE(v6b);
      CHECK(v6b->host == "2001:db8::1");
      CHECK(v6b->port == 443);
    }
    SUBCASE("userinfo is split off, even with '@' in it") {
      auto ui = detail::parse_url("http://user:p%40ss@proxy.example:3128");
      REQUIRE(ui);
      CHECK(ui->userinfo == "user:p%40ss");
      CHECK(ui->host == "proxy.example");
      CHECK(ui->port == 3128);
      auto at = detail::parse_url("http://a@b@[::1]:1/");
      REQUIRE(at);
      CHECK(at->userinfo == "a@b");
      CHECK(at->host == "::1");
    }
  }

  TEST_CASE("parse_url rejects what is not an absolute http(s) URL") {
    for (const char* bad : {"",
                            "localhost:8080/cb",
                            "/relative",
                            "://host",
                            "ftp://host/",
                            "file:///etc/passwd",
                            "http://",
                            "http:///path",
                            "http://:80/",
                            "http://host:99999/",
                            "http://host:123456/",
                            "http://host:8o/",
                            "http://host:-1/",
                            "http://[::1/",
                            "http://[::1]x/",
                            "http://[]/",
                            "http://[zz::1]/",
                            "http://ho st/",
                            "http://host/pa th",
                            "http://host/\x7f",
                            "http://ho%73t/",
                            "http://host\\evil/"}) {
      CAPTURE(bad);
      CHECK_FALSE(detail::parse_url(bad).has_value());
    }
  }

  TEST_CASE("is_loopback_host: localhost, 127/8 and ::1 only") {
    CHECK(detail::is_loopback_host("localhost"));
    CHECK(detail::is_loopback_host("127.0.0.1"));
    CHECK(detail::is_loopback_host("127.1.2.3"));
    CHECK(detail::is_loopback_host("::1"));
    CHECK_FALSE(detail::is_loopback_host("0.0.0.0"));
    CHECK_FALSE(detail::is_loopback_host("::"));
    CHECK_FALSE(detail::is_loopback_host("10.0.0.1"));
    CHECK_FALSE(detail::is_loopback_host("localhost.example.com"));
    CHECK_FALSE(detail::is_loopback_host("127.0.0.1.nip.io"));
  }
}

TEST_SUITE("endpoints") {
  TEST_CASE("the defaults are APS production") {
    support::check_aps_layout(auth::Endpoints{}, "https://developer.api.autodesk.com",
                              "https://api.userprofile.autodesk.com/userinfo");
  }

  TEST_CASE("Endpoints::from_base_url lays out the APS paths under another base") {
    support::check_aps_layout(auth::Endpoints::from_base_url("http://127.0.0.1:9000/"), "http://127.0.0.1:9000",
                              "http://127.0.0.1:9000/userinfo");

    SUBCASE("a proxy prefix is kept") {
      auth::Endpoints p = auth::Endpoints::from_base_url("https://gw.example.com/aps");
      CHECK(p.token == "https://gw.example.com/aps/authentication/v2/token");
      CHECK(p.userinfo == "https://gw.example.com/aps/userinfo");
    }
    SUBCASE("the APS production base keeps the real userinfo host") {
      auth::Endpoints a = auth::Endpoints::from_base_url("https://developer.api.autodesk.com/");
      CHECK(a.userinfo == "https://api.userprofile.autodesk.com/userinfo");
      CHECK(a.token == auth::Endpoints{}.token);
    }
    SUBCASE("IPv6 loopback over http is allowed") {
      CHECK(auth::Endpoints::from_base_url("http://[::1]:1").token == "http://[::1]:1/authentication/v2/token");
    }
  }

  TEST_CASE("plain http to a non-loopback host is a usage error") {
    for (const char* remote : {"http://developer.api.autodesk.com", "http://10.0.0.5:8080", "http://0.0.0.0:80",
                               "http://[2001:db8::1]:80"}) {
      CAPTURE(remote);
      auto e = require_error([&] { (void)auth::Endpoints::from_base_url(remote); });
      CHECK(e.kind() == auth::ErrorKind::usage);
    }
    SUBCASE("and no request is sent: the token endpoint calls refuse before connecting") {
      auth::Config config = test_config();
      config.client_secret = "the-secret-1234";
      config.endpoints.token = "http://example.com/authentication/v2/token";
      auto e = require_error([&] { (void)auth::client_credentials(config); });
      CHECK(e.kind() == auth::ErrorKind::usage);
      CHECK_FALSE(contains(e.what(), "the-secret-1234"));
      auto r = catch_error([&] { (void)auth::refresh(config, "rt-abcdefgh"); });
      REQUIRE(r);
      CHECK(r->kind() == auth::ErrorKind::usage);
      CHECK_FALSE(contains(r->what(), "rt-abcdefgh"));
    }
    SUBCASE("not a URL at all") {
      auto e = require_error([&] { (void)auth::Endpoints::from_base_url("developer.api.autodesk.com"); });
      CHECK(e.kind() == auth::ErrorKind::usage);
    }
  }

  TEST_CASE("logout_url encodes the post-logout redirect") {
    auth::Config config = test_config();
    CHECK(auth::logout_url(config) == "https://developer.api.autodesk.com/authentication/v2/logout");
    CHECK(auth::logout_url(config, "https://app.example.com/bye?x=1") ==
          "https://developer.api.autodesk.com/authentication/v2/logout?post_logout_redirect_uri="
          "https%3A%2F%2Fapp.example.com%2Fbye%3Fx%3D1");
  }
}

TEST_SUITE("token") {
  TEST_CASE("Token JSON round trip keeps every field and the absolute expiry") {
    using namespace std::chrono;
    const auth::Token t = support::token_with_every_field();
    std::string j = t.to_json();
    support::check_same_token(auth::Token::from_json(j), t);
    CHECK(contains(j, "\"expires_at\":1893456000"));

    SUBCASE("optional fields are left out when empty") {
      auth::Token two_legged;
      two_legged.access_token = "a";
      two_legged.expires_at = system_clock::time_point(seconds(100));
      std::string s = two_legged.to_json();
      CHECK_FALSE(contains(s, "refresh_token"));
      CHECK_FALSE(contains(s, "id_token"));
      CHECK_FALSE(contains(s, "scope"));
      auth::Token b2 = auth::Token::from_json(s);
      CHECK(b2.refresh_token.empty());
      CHECK(b2.expires_at == two_legged.expires_at);
      CHECK(b2.expired());  // 1970 is in the past
    }
  }

  TEST_CASE("Token::from_json of a token endpoint answer computes expires_at from now") {
    using namespace std::chrono;
    auto before = system_clock::now();
    auth::Token t = auth::Token::from_json(R"({"access_token":"a","token_type":"Bearer","expires_in":3599})");
    auto after = system_clock::now();
    CHECK(t.expires_in == seconds(3599));
    CHECK(t.expires_at >= before + seconds(3599));
    CHECK(t.expires_at <= after + seconds(3599));
    CHECK_FALSE(t.expired());
    CHECK_FALSE(t.expired(seconds(3000)));
    CHECK(t.expired(seconds(3600)));
  }

  TEST_CASE("Token::from_json rejects what is not a token") {
    for (const char* bad :
         {"", "[]", "not json", R"({"token_type":"Bearer"})", R"({"access_token":"a","expires_in":-5})",
          R"({"access_token":"a","expires_in":"soon"})", R"({"access_token":"a","expires_at":"x"})"}) {
      CAPTURE(bad);
      auto e = require_error([&] { (void)auth::Token::from_json(bad); });
      CHECK(e.kind() == auth::ErrorKind::bad_response);
    }
  }

  TEST_CASE("an empty Token is expired") {
    CHECK(auth::Token{}.expired());
  }
}

TEST_SUITE("errors") {
  TEST_CASE("Error::what() has the stable \"[aps_auth.<kind>] \" prefix for every kind") {
    const std::pair<auth::ErrorKind, const char*> kinds[] = {
        {auth::ErrorKind::network, "network"},
        {auth::ErrorKind::tls, "tls"},
        {auth::ErrorKind::timeout, "timeout"},
        {auth::ErrorKind::http, "http"},
        {auth::ErrorKind::oauth, "oauth"},
        {auth::ErrorKind::state_mismatch, "state_mismatch"},
        {auth::ErrorKind::issuer_mismatch, "issuer_mismatch"},
        {auth::ErrorKind::access_denied, "access_denied"},
        {auth::ErrorKind::bad_response, "bad_response"},
        {auth::ErrorKind::io, "io"},
        {auth::ErrorKind::usage, "usage"},
        {auth::ErrorKind::cancelled, "cancelled"},
    };
    for (const auto& entry : kinds) {
      const auth::ErrorKind kind = entry.first;
      const char* const name = entry.second;
      CAPTURE(name);
      CHECK(std::string(auth::to_string(kind)) == name);
      auth::ErrorDetails d;
      d.status = 418;
      d.error = "invalid_grant";
      auth::Error e(kind, "something happened", d);
      CHECK(std::string(e.what()) == std::string("[aps_auth.") + name + "] something happened");
      CHECK(e.kind() == kind);
      CHECK(e.status() == 418);
      CHECK(e.details().error == "invalid_grant");
    }
  }

  TEST_CASE("Error is a std::runtime_error") {
    try {
      throw auth::Error(auth::ErrorKind::usage, "x");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()) == "[aps_auth.usage] x");
    }
  }

  TEST_CASE("sanitize masks secrets, control characters and caps the length") {
    CHECK(detail::sanitize("echo: the-secret-value\r\nX-Injected: 1", {"the-secret-value"}) ==
          "echo: ***  X-Injected: 1");
    CHECK(detail::sanitize(std::string(400, 'a')).size() == 303);
  }
}

TEST_CASE("version() matches the version macros") {
  CHECK(auth::version() == std::to_string(APS_AUTH_VERSION_MAJOR) + "." + std::to_string(APS_AUTH_VERSION_MINOR) + "." +
                               std::to_string(APS_AUTH_VERSION_PATCH));
}
