// A small multi-user web app that signs its users in to APS: the callback arrives at this server
// (not at a loopback listener), each browser has a session, and each session its own token.
//
//   ./example_web_app --demo        # against a mock APS in this process: no account, no network
//   export APS_CLIENT_ID=... APS_CLIENT_SECRET=...
//   ./example_web_app --public-url https://app.example.com --port 8080
//
// Routes: / (a sign-in link) · /login (a new sign-in: the pending AuthorizationRequest is kept in
// the session, server side, and the browser is sent to APS) · /api/auth/callback (check_callback
// against the session's pending request, which is used up first, then exchange_code) · /me
// (userinfo, escaped) · POST /logout (revokes the refresh token, ends the session).
//
// The rules a multi-user server must keep (see check_callback):
//   - one pending request per session, kept server side (it holds the PKCE verifier), used once:
//     it is taken out of the session before the code is exchanged, so a replayed callback finds
//     none;
//   - a callback whose state is not the session's (another session's, or forged) is refused and
//     leaves the session's own sign-in in progress untouched;
//   - requests expire (check_callback's max_age; APS codes live 5 minutes);
//   - after the sign-in the session gets a new id (no session fixation);
//   - the session cookie is random (256 bits), HttpOnly, SameSite=Lax (the callback is a top-level
//     GET coming from APS: Strict would drop the cookie there), Secure and __Host- prefixed when
//     served over HTTPS.
// Prints "listening on <public url> (bound to <host>:<port>...)" on stdout once it accepts
// connections. SPDX-License-Identifier: MIT
#include "aps_auth.hpp"
#include "example_env.hpp"
#include "mock_aps_server.hpp"

#include <httplib.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace {

namespace auth = aps::auth;

// Every page: no script, no external resource, not cached, never framed, and no Referer (a callback
// URL carries a code).
void send_page(httplib::Response& res, int status, const std::string& title, const std::string& body) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_header("Content-Security-Policy",
                 "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'");
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_content("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + auth::html_escape(title) +
                      " - APS web app</title><style>body{font-family:sans-serif;max-width:40em;margin:3em auto}"
                      "code{background:#eee;padding:0 .3em}</style></head><body><h1>" +
                      auth::html_escape(title) + "</h1>" + body + "</body></html>",
                  "text/html; charset=utf-8");
}

void redirect(httplib::Response& res, const std::string& to) {
  res.set_header("Cache-Control", "no-store");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_redirect(to, 303);
}

struct Session {
  std::string pending;                        // AuthorizationRequest::to_json() of the sign-in in progress
  std::shared_ptr<auth::TokenSource> tokens;  // once signed in: a valid access token on demand
};

// The sessions, by cookie value. A real service would keep them in its session store (Redis, a
// database): AuthorizationRequest::to_json()/from_json() are for that.
class Sessions {
 public:
  std::pair<std::string, std::shared_ptr<Session>> create() {
    std::lock_guard<std::mutex> lk(mutex_);
    std::string id = auth::random_urlsafe(32);
    return {id, by_id_[id] = std::make_shared<Session>()};
  }
  std::shared_ptr<Session> find(const std::string& id) {
    std::lock_guard<std::mutex> lk(mutex_);
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : it->second;
  }
  // The same session under a new id; the old one no longer works.
  std::string rotate(const std::string& old_id, std::shared_ptr<Session> s) {
    std::lock_guard<std::mutex> lk(mutex_);
    by_id_.erase(old_id);
    std::string id = auth::random_urlsafe(32);
    by_id_[id] = std::move(s);
    return id;
  }
  void erase(const std::string& id) {
    std::lock_guard<std::mutex> lk(mutex_);
    by_id_.erase(id);
  }
  // Takes the pending request out of the session (one callback per request); "" when there is none.
  std::string take_pending(Session& s) {
    std::lock_guard<std::mutex> lk(mutex_);
    return std::exchange(s.pending, std::string());
  }
  // Puts it back, unless a newer sign-in started meanwhile.
  void restore_pending(Session& s, std::string pending) {
    std::lock_guard<std::mutex> lk(mutex_);
    if (s.pending.empty())
      s.pending = std::move(pending);
  }
  void set_pending(Session& s, std::string pending) {
    std::lock_guard<std::mutex> lk(mutex_);
    s.pending = std::move(pending);
  }
  void set_tokens(Session& s, std::shared_ptr<auth::TokenSource> tokens) {
    std::lock_guard<std::mutex> lk(mutex_);
    s.tokens = std::move(tokens);
  }
  std::shared_ptr<auth::TokenSource> tokens(Session& s) {
    std::lock_guard<std::mutex> lk(mutex_);
    return s.tokens;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Session>> by_id_;
};

class WebApp {
 public:
  WebApp(auth::Config config, bool secure) : config_(std::move(config)), secure_(secure) {}

  void routes(httplib::Server& server) {
    server.Get("/", [this](const httplib::Request& req, httplib::Response& res) { home(req, res); });
    server.Get("/login", [this](const httplib::Request& req, httplib::Response& res) { login(req, res); });
    server.Get("/api/auth/callback",
               [this](const httplib::Request& req, httplib::Response& res) { callback(req, res); });
    server.Get("/me", [this](const httplib::Request& req, httplib::Response& res) { me(req, res); });
    server.Post("/logout", [this](const httplib::Request& req, httplib::Response& res) { logout(req, res); });
  }

 private:
  // __Host-: the browser then takes the cookie only from a secure origin, for the whole host.
  std::string cookie_name() const { return secure_ ? "__Host-aps_session" : "aps_session"; }

  void set_cookie(httplib::Response& res, const std::string& id) const {
    res.set_header("Set-Cookie", cookie_name() + "=" + id + "; Path=/; HttpOnly; SameSite=Lax" +
                                     (secure_ ? "; Secure" : "") + (id.empty() ? "; Max-Age=0" : ""));
  }

  std::string session_id(const httplib::Request& req) const {
    const std::string cookies = req.get_header_value("Cookie");
    const std::string prefix = cookie_name() + "=";
    for (std::size_t pos = 0; pos < cookies.size();) {
      std::size_t end = cookies.find(';', pos);
      std::string part = cookies.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
      part.erase(0, part.find_first_not_of(' '));
      if (part.compare(0, prefix.size(), prefix) == 0)
        return part.substr(prefix.size());
      if (end == std::string::npos)
        break;
      pos = end + 1;
    }
    return "";
  }

  std::shared_ptr<Session> session(const httplib::Request& req) {
    const std::string id = session_id(req);
    return id.empty() ? nullptr : sessions_.find(id);
  }

  void home(const httplib::Request& req, httplib::Response& res) {
    auto s = session(req);
    if (s && sessions_.tokens(*s))
      return redirect(res, "/me");
    send_page(res, 200, "Welcome", "<p><a href=\"/login\">Sign in with Autodesk</a></p>");
  }

  void login(const httplib::Request& req, httplib::Response& res) {
    std::string id = session_id(req);
    std::shared_ptr<Session> s = id.empty() ? nullptr : sessions_.find(id);
    if (!s) {
      std::tie(id, s) = sessions_.create();
      set_cookie(res, id);
    }
    const auth::AuthorizationRequest request = auth::authorization_request(config_);
    // One per session: a new sign-in replaces an unfinished one.
    sessions_.set_pending(*s, request.to_json());
    redirect(res, request.url);
  }

  void callback(const httplib::Request& req, httplib::Response& res) {
    const std::string id = session_id(req);
    std::shared_ptr<Session> s = id.empty() ? nullptr : sessions_.find(id);
    std::string pending = s ? sessions_.take_pending(*s) : "";
    if (pending.empty())
      return send_page(res, 400, "No sign-in in progress",
                       "<p>This browser has no sign-in in progress: it finished already, or never started here."
                       "</p><p><a href=\"/login\">Sign in again</a></p>");
    const auth::AuthorizationRequest request = auth::AuthorizationRequest::from_json(pending);
    std::string code;
    try {
      code = auth::check_callback(request, req.target);
    } catch (const auth::Error& e) {
      // Not this browser's sign-in (another session's, or forged): its own one goes on.
      if (e.kind() == auth::ErrorKind::state_mismatch) {
        sessions_.restore_pending(*s, std::move(pending));
        return send_page(res, 400, "Not your sign-in",
                         "<p>This sign-in response does not belong to the sign-in started in this "
                         "browser, so it was refused.</p><p><a href=\"/login\">Start a sign-in</a></p>");
      }
      return failed(res, e);
    }
    try {
      auth::Token token = auth::exchange_code(config_, request, code);
      auto store = std::make_shared<auth::MemoryTokenStore>();
      store->save(token);
      sessions_.set_tokens(*s, std::make_shared<auth::TokenSource>(config_, store));
    } catch (const auth::Error& e) {
      return failed(res, e);
    }
    set_cookie(res, sessions_.rotate(id, s));
    redirect(res, "/me");
  }

  void failed(httplib::Response& res, const auth::Error& e) {
    const bool denied = e.kind() == auth::ErrorKind::access_denied;
    send_page(res, denied ? 403 : 400, denied ? "Access not granted" : "Sign-in failed",
              "<p><code>" + auth::html_escape(e.what()) + "</code></p><p><a href=\"/login\">Try again</a></p>");
  }

  void me(const httplib::Request& req, httplib::Response& res) {
    auto s = session(req);
    auto tokens = s ? sessions_.tokens(*s) : nullptr;
    if (!tokens)
      return redirect(res, "/");
    try {
      const std::string access_token = tokens->access_token();
      const auth::UserInfo user = auth::userinfo(config_, access_token);
      // A fingerprint tells sessions apart without showing the token: base64url(SHA-256), as in
      // PKCE S256.
      send_page(res, 200, "Signed in",
                "<p>Signed in as <b id=\"name\">" + auth::html_escape(user.name) + "</b> (<span id=\"email\">" +
                    auth::html_escape(user.email) + "</span>).</p><p>This session's token: <code id=\"token\">" +
                    auth::pkce_challenge(access_token).substr(0, 16) +
                    "</code> (a fingerprint; the token stays on the server).</p>"
                    "<form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign "
                    "out</button></form>");
    } catch (const auth::Error& e) {
      failed(res, e);
    }
  }

  // POST only, and the cookie is SameSite=Lax: another site cannot sign a user out.
  void logout(const httplib::Request& req, httplib::Response& res) {
    const std::string id = session_id(req);
    auto s = id.empty() ? nullptr : sessions_.find(id);
    auto tokens = s ? sessions_.tokens(*s) : nullptr;
    if (tokens) {
      try {
        const auth::Token token = tokens->token();
        if (!token.refresh_token.empty())  // ends the grant
          auth::revoke(config_, token.refresh_token, auth::TokenTypeHint::refresh_token);
        auth::revoke(config_, token.access_token, auth::TokenTypeHint::access_token);
      } catch (const auth::Error& e) {
        return failed(res, e);  // still signed in: the user can try again
      }
    }
    if (!id.empty())
      sessions_.erase(id);
    set_cookie(res, "");
    send_page(res, 200, "Signed out", "<p>You are signed out.</p><p><a href=\"/login\">Sign in again</a></p>");
  }

  auth::Config config_;
  bool secure_;
  Sessions sessions_;
};

struct Options {
  bool demo = false;
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port
  std::string public_url;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--demo")
      o.demo = true;
    else if (a == "--host")
      o.host = value();
    else if (a == "--port")
      o.port = std::atoi(value().c_str());
    else if (a == "--public-url")
      o.public_url = value();
    else
      throw std::runtime_error("unknown argument " + a + " (--demo, --host H, --port N, --public-url URL)");
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options options = parse(argc, argv);
  httplib::Server server;
  const int port = options.port == 0 ? server.bind_to_any_port(options.host)
                                     : (server.bind_to_port(options.host, options.port) ? options.port : -1);
  if (port <= 0)
    throw std::runtime_error("cannot listen on " + options.host + ":" + std::to_string(options.port));
  const std::string public_url =
      options.public_url.empty() ? "http://" + options.host + ":" + std::to_string(port) : options.public_url;

  auth::Config config = example::config_from_env();
  config.callback_url = public_url + "/api/auth/callback";
  std::unique_ptr<aps_mock::Server> mock;
  if (options.demo) {  // the mock APS, with this app registered under its callback URL
    aps_mock::Options mo;
    mo.clients = {{"web-app-demo", "web-app-demo-secret", {config.callback_url}}};
    mock = std::make_unique<aps_mock::Server>(mo);
    config.client_id = "web-app-demo";
    config.client_secret = "web-app-demo-secret";
    config.endpoints = auth::Endpoints::from_base_url(mock->base_url());
    config.proxy = "direct";
  }
  if (config.client_id.empty())
    throw std::runtime_error("set APS_CLIENT_ID (and APS_CLIENT_SECRET), or use --demo");

  WebApp app(config, public_url.compare(0, 8, "https://") == 0);
  app.routes(server);
  std::cout << "listening on " << public_url << " (bound to " << options.host << ":" << port
            << (options.demo ? "; demo: mock APS at " + mock->base_url() : "") << ")" << std::endl;
  return server.listen_after_bind() ? 0 : 1;
} catch (const std::exception& e) {
  std::cerr << "web_app: " << e.what() << "\n";
  return 1;
}
