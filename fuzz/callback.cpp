// libFuzzer target: the loopback listener's parser of outside input, detail::evaluate_callback (request line,
// target, query) on arbitrary request heads, and check_callback (a web server's check of the same callback) on
// the head's request target. Any process on the machine, or any browser of a web app, can send these bytes.
//
// Input: one flags byte, then the request head.
//   bit 0: request.require_iss     bit 1: request.state is empty (nothing may ever match)
//   bit 2: request.issuer is set   bit 3: callback path "/" instead of "/cb"
//
// Invariants:
//   - evaluate_callback never throws (a throw would end the wait: anyone could cancel a sign-in);
//   - status is one of 200, 400, 404, 405, 421 (a Host other than the callback's "127.0.0.1:8080");
//   - the page contains only the template's own tags: no '<script', no injected markup;
//   - a code, a failure, or a 200 happen only when the request is a GET on the callback path whose query holds
//     exactly one `state`, equal to request.state after one percent-decoding (checked by an independent decoder);
//   - a code or a failure happen only for a request naming the callback's host:port in a Host header;
//   - a code and a failure never come together; a code is never empty;
//   - check_callback on the target throws only aps::auth::Error, returns a code only when the target's query holds
//     exactly one `state` equal to request.state, and for a GET on the callback path (no fragment) agrees with
//     the listener: the same code, the same failure kind, state_mismatch where the listener ignored it.
#include "aps_auth.hpp"
#include "fuzz_util.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using fuzz_util::require;

constexpr const char* kState = "St4te_fuzz-Q9xZ2mK7vP1w";  // 22 base64url chars, like random_urlsafe(16)

// An independent decoder (not the library's): %XX once, '+' as space; nullopt on a broken escape.
std::optional<std::string> decode(std::string_view in) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%') {
      if (in.size() - i < 3 || hex(in[i + 1]) < 0 || hex(in[i + 2]) < 0)
        return std::nullopt;
      out += static_cast<char>(hex(in[i + 1]) * 16 + hex(in[i + 2]));
      i += 2;
    } else {
      out += in[i] == '+' ? ' ' : in[i];
    }
  }
  return out;
}

// True when the head is a GET of `path` whose query is well formed and has exactly one state == want.
bool state_matches(std::string_view head, std::string_view path, const std::string& want) {
  if (want.empty())
    return false;
  std::string_view line = head.substr(0, head.find("\r\n"));
  std::size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 <= sp1)
    return false;
  if (line.substr(0, sp1) != "GET")
    return false;
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::size_t q = target.find('?');
  if (target.substr(0, q) != path || q == std::string_view::npos)
    return false;
  std::string_view query = target.substr(q + 1);
  int states = 0;
  bool equal = false;
  while (true) {
    std::size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    if (!part.empty()) {
      std::size_t eq = part.find('=');
      auto name = decode(part.substr(0, eq));
      auto value = decode(eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1));
      if (!name || !value)
        return false;
      if (*name == "state") {
        ++states;
        equal = *value == want;
      }
    }
    if (amp == std::string_view::npos)
      break;
    query.remove_prefix(amp + 1);
  }
  return states == 1 && equal;
}

// Every '<' in the page opens one of the template's own tags.
bool only_template_tags(const std::string& html) {
  static const std::vector<std::string> tags = {"!DOCTYPE html", "html", "head", "meta", "title", "style",
                                                "body",          "main", "div",  "h1",   "p",     "code"};
  for (std::size_t p = html.find('<'); p != std::string::npos; p = html.find('<', p + 1)) {
    std::size_t s = p + 1;
    if (s < html.size() && html[s] == '/')
      ++s;
    bool ok = false;
    for (const auto& t : tags) {
      if (html.compare(s, t.size(), t) == 0 && s + t.size() < html.size() &&
          (html[s + t.size()] == '>' || html[s + t.size()] == ' ')) {
        ok = true;
        break;
      }
    }
    if (!ok)
      return false;
  }
  return true;
}

// check_callback on the head's request target: the same verdict as the listener's, where both see the same thing.
void check_web_server_view(std::string_view head, std::string_view path, const aps::auth::AuthorizationRequest& request,
                           const aps::auth::detail::CallbackOutcome& listener) {
  std::string_view line = head.substr(0, head.find("\r\n"));
  std::size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 <= sp1)
    return;
  const std::string target(line.substr(sp1 + 1, sp2 - sp1 - 1));
  std::string code;
  std::optional<aps::auth::Error> error;
  try {
    code = aps::auth::check_callback(request, target);
  } catch (const aps::auth::Error& e) {
    error = e;
  } catch (const std::exception& e) {
    fuzz_util::fail("check_callback threw something else than aps::auth::Error", e.what());
  }
  using aps::auth::ErrorKind;
  const std::string_view target_path = std::string_view(target).substr(0, target.find('?'));
  // What check_callback promises to read: the query of a target or URL, or the whole text when it is a bare query
  // string; the fragment never.
  std::string query = target.substr(0, target.find('#'));
  if (query.find('?') != std::string::npos)
    query = query.substr(query.find('?') + 1);
  else if (!query.empty() && (query[0] == '/' || query.rfind("http://", 0) == 0 || query.rfind("https://", 0) == 0))
    query.clear();
  const bool matched = state_matches("GET /q?" + query + " HTTP/1.1", "/q", request.state);
  if (error) {
    fuzz_util::check_error(*error);
  } else {
    require(!code.empty(), "check_callback returned an empty code");
    require(matched, "check_callback returned a code although the state did not match exactly", target);
  }
  const bool same_view = line.substr(0, sp1) == "GET" && target_path == path && target.find('#') == std::string::npos;
  if (!same_view || listener.status == 421)
    return;  // 421: a Host not the callback's, which a web server checks itself
  if (!listener.code.empty())
    require(!error && code == listener.code, "the listener and check_callback disagree on the code", target);
  if (listener.failure)
    require(error && error->kind() == listener.failure->kind(),
            "the listener and check_callback disagree on the failure", target);
  if (listener.code.empty() && !listener.failure)  // ignored by the listener: not ours, or malformed
    require(error && (error->kind() == ErrorKind::state_mismatch || error->kind() == ErrorKind::bad_response),
            "check_callback accepted what the listener ignored", target);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1)
    return 0;
  const std::uint8_t flags = data[0];
  std::string_view head = fuzz_util::as_text(data + 1, size - 1);

  aps::auth::AuthorizationRequest request;
  request.state = (flags & 2) ? "" : kState;
  request.require_iss = (flags & 1) != 0;
  if (flags & 4)
    request.issuer = "https://developer.api.autodesk.com";
  const std::string_view path = (flags & 8) ? "/" : "/cb";

  std::optional<aps::auth::detail::CallbackOutcome> out;
  try {
    out = aps::auth::detail::evaluate_callback(head, path, request, {"127.0.0.1:8080"});
  } catch (const std::exception& e) {
    fuzz_util::fail("evaluate_callback threw (a hostile request could end the wait)", e.what());
  }

  const int s = out->status;
  require(s == 200 || s == 400 || s == 404 || s == 405 || s == 421, "status not in {200,400,404,405,421}",
          std::to_string(s));
  require(!out->html.empty(), "empty page");
  require(!fuzz_util::contains_nocase(out->html, "<script"), "page contains <script", out->html);
  require(only_template_tags(out->html), "page contains markup that is not the template's", out->html);
  require(out->code.empty() || !out->failure, "both a code and a failure");

  const bool matched = state_matches(head, path, request.state);
  if (!out->code.empty()) {
    require(matched, "a code was returned although the state did not match exactly", head);
    require(fuzz_util::contains_nocase(head, "host:") && fuzz_util::contains(head, "127.0.0.1:8080"),
            "a code was returned for a request without the callback's Host", head);
    require(s == 200, "a code with a status other than 200");
    require(fuzz_util::contains(out->html, "signed in"), "success without the success page");
  }
  if (out->failure) {
    require(matched, "a failure ends the wait although the state did not match (anyone could cancel a sign-in)", head);
    require(fuzz_util::contains(head, "127.0.0.1:8080"), "a failure for a request without the callback's Host", head);
    fuzz_util::check_error(*out->failure);
    auto k = out->failure->kind();
    using aps::auth::ErrorKind;
    require(k == ErrorKind::access_denied || k == ErrorKind::oauth || k == ErrorKind::issuer_mismatch ||
                k == ErrorKind::bad_response,
            "unexpected failure kind", aps::auth::to_string(k));
  }
  if (s == 200)
    require(matched, "status 200 for a request whose state did not match", head);
  check_web_server_view(head, path, request, *out);
  return 0;
}
