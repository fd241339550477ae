// libFuzzer target: the encodings, on arbitrary bytes.
//   detail::parse_query, detail::percent_decode, detail::url_encode / form_encode / encode_params,
//   detail::base64 / base64_decode, detail::html_escape, detail::sanitize.
//
// Invariants:
//   - decode(encode(x)) == x for url_encode and form_encode (with and without '+' as space);
//   - url_encode emits only unreserved characters and %XX (upper case); form_encode never emits a space;
//   - parse_query(encode_params(p)) == p for every p parse_query produced (decoded exactly once);
//   - percent_decode never grows its input; '+' handling is the only difference between the two modes;
//   - base64_decode(base64(x)) == x (standard and url alphabets), and a successful decode re-encodes to the
//     same bytes;
//   - html_escape output has no '<', '>', '"', '\'' and every '&' starts an entity;
//   - sanitize: no control characters, bounded length, and a secret (>= 4 chars) in the input never survives.
#include "aps_auth.hpp"
#include "fuzz_util.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace d = aps::auth::detail;
using fuzz_util::require;

void check_encodings(std::string_view x) {
  const std::string u = d::url_encode(x);
  for (std::size_t i = 0; i < u.size(); ++i) {
    char c = u[i];
    if (c == '%') {
      require(i + 2 < u.size() && std::isxdigit(static_cast<unsigned char>(u[i + 1])) &&
                  std::isxdigit(static_cast<unsigned char>(u[i + 2])) &&
                  !std::islower(static_cast<unsigned char>(u[i + 1])) &&
                  !std::islower(static_cast<unsigned char>(u[i + 2])),
              "url_encode emitted a bad escape", u);
      i += 2;
    } else {
      require(d::is_unreserved(static_cast<unsigned char>(c)), "url_encode emitted a reserved character", u);
    }
  }
  auto back = d::percent_decode(u, false);
  require(back && *back == x, "percent_decode(url_encode(x), false) != x");
  back = d::percent_decode(u, true);
  require(back && *back == x, "percent_decode(url_encode(x), true) != x");

  const std::string f = d::form_encode(x);
  require(f.find(' ') == std::string::npos, "form_encode emitted a space", f);
  back = d::percent_decode(f, true);
  require(back && *back == x, "percent_decode(form_encode(x), true) != x");

  // base64, both alphabets.
  for (bool url : {false, true}) {
    std::string b = d::base64(x, url);
    if (url)
      require(b.find_first_of("+/=") == std::string::npos, "base64url emitted + / or =", b);
    auto dec = d::base64_decode(b);
    require(dec && *dec == x, "base64_decode(base64(x)) != x");
  }

  // html_escape
  const std::string h = d::html_escape(x);
  require(h.find_first_of("<>\"'") == std::string::npos, "html_escape left a special character", h);
  for (std::size_t p = h.find('&'); p != std::string::npos; p = h.find('&', p + 1)) {
    std::string_view rest = std::string_view(h).substr(p);
    require(rest.rfind("&amp;", 0) == 0 || rest.rfind("&lt;", 0) == 0 || rest.rfind("&gt;", 0) == 0 ||
                rest.rfind("&quot;", 0) == 0 || rest.rfind("&#39;", 0) == 0,
            "html_escape left a bare '&'", h);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in = fuzz_util::as_text(data, size);

  check_encodings(in);

  // percent_decode on arbitrary input.
  auto plain = d::percent_decode(in, false);
  auto plus = d::percent_decode(in, true);
  require(plain.has_value() == plus.has_value(), "percent_decode modes disagree on validity");
  if (plain) {
    require(plain->size() <= in.size(), "percent_decode grew its input");
    require(plain->size() == plus->size(), "percent_decode modes disagree on length");
    for (std::size_t i = 0; i < plain->size(); ++i)
      require((*plain)[i] == (*plus)[i] || ((*plain)[i] == '+' && (*plus)[i] == ' '),
              "percent_decode modes differ beyond '+'");
    // Decoded exactly once: decoding the encoding of the result gives the result, not a second decoding.
    auto again = d::percent_decode(d::url_encode(*plain), false);
    require(again && *again == *plain, "decode(encode(decode(x))) != decode(x)");
  }

  // parse_query and its round trip through encode_params (form and URL flavours).
  auto params = d::parse_query(in);
  if (params) {
    for (bool form : {true, false}) {
      std::string enc = d::encode_params(*params, form);
      auto re = d::parse_query(enc);
      require(re.has_value(), "parse_query(encode_params(p)) failed", enc);
      // Pairs with an empty name and value encode as "=" and come back; nothing is dropped or merged.
      require(*re == *params, "parse_query(encode_params(p)) != p", enc);
    }
  }

  // base64_decode of arbitrary text: what decodes re-encodes to an equivalent text.
  if (auto dec = d::base64_decode(in)) {
    auto again = d::base64_decode(d::base64(*dec, true));
    require(again && *again == *dec, "base64 re-encoding of a decoded value changed it");
  }

  // sanitize on raw input: the first bytes (4..24) are a secret, the rest the text.
  if (size >= 6) {
    std::size_t n = 4 + data[0] % 21;
    if (n + 1 < size) {
      std::string_view secret = in.substr(1, n);
      std::string_view text = in.substr(1 + n);
      for (std::size_t max_len : {std::size_t(40), std::size_t(300)}) {
        std::string s = d::sanitize(text, {secret}, max_len);
        require(fuzz_util::printable(s), "sanitize left a control character", s);
        require(s.size() <= max_len + 3, "sanitize output longer than max_len + '...'", s);
        // (A '*' or '.' in a secret can be rebuilt by the "***" mask or the "..." of a cut text itself, e.g. a
        // secret "........"; real secrets hold neither.)
        if (fuzz_util::printable(secret) && secret.find_first_of("*.") == std::string_view::npos &&
            fuzz_util::contains(text, secret))
          require(!fuzz_util::contains(s, secret), "sanitize let a secret through", s);
      }
    }
  }

  // sanitize, structured: an alphanumeric secret placed (1-3 times, anywhere, also across the length cap) in
  // filler made of punctuation. No letter or digit may reach the output: not the whole secret, not a part.
  if (size >= 4) {
    static const char filler_chars[] = " .,;:!-()[]{}/|#@";
    std::string secret;
    std::size_t n = 8 + data[0] % 25;
    for (std::size_t i = 0; i < n; ++i)
      secret += "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[(data[i % size] + i * 7) % 62];
    std::string text;
    for (std::size_t i = 3; i < size; ++i)
      text += filler_chars[data[i] % (sizeof filler_chars - 1)];
    // Insertion points in the filler, back to front, so that no copy splits another.
    const std::size_t filler_size = text.size();
    std::vector<std::size_t> at;
    for (std::size_t c = 0; c < 1u + data[1] % 3u; ++c)
      at.push_back((static_cast<std::size_t>(data[2]) * 7 + c * 131) % (filler_size + 1));
    std::sort(at.rbegin(), at.rend());
    for (std::size_t pos : at)
      text.insert(pos, secret);
    for (std::size_t max_len : {std::size_t(40), std::size_t(300), std::size_t(1000)}) {
      std::string s = d::sanitize(text, {secret}, max_len);
      for (char c : s)
        require(!std::isalnum(static_cast<unsigned char>(c)),
                "sanitize let (part of) a secret through (e.g. one straddling the length cap)", s);
    }
  }
  return 0;
}
