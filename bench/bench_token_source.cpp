// Cost of a cached TokenSource::access_token() (the fast path every API call of an application takes), at 1
// and 2 threads, beside a baseline measured in the same run: a std::string of the same length copied out
// under a std::mutex (what a hand-written "token + mutex" cache costs). No network: the source holds a token
// valid for an hour in a MemoryTokenStore, and its endpoints point at a closed port that is never called.
//
//   g++ -std=c++17 -O2 -I. bench/bench_token_source.cpp -o bench_token_source $(pkg-config --cflags --libs
//       cpp-httplib) -lssl -lcrypto -lbenchmark -lpthread && ./bench_token_source
// (CMake: -DAPS_AUTH_BUILD_BENCH=ON builds it as bench_token_source.)
//
// Argument: the length of the access token (APS access tokens are JWTs of about a kilobyte; 64 for an opaque
// token).
#include <benchmark/benchmark.h>

#include "aps_auth.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace {

namespace auth = aps::auth;

std::string token_of_length(std::int64_t length) {
  std::string s(static_cast<std::size_t>(length), 'x');
  for (std::size_t i = 0; i < s.size(); ++i)
    s[i] = "abcdefghijklmnopqrstuvwxyz0123456789-_."[i % 39];
  return s;
}

// One source per token length, shared by the benchmark's threads, warmed up (the store read) before timing.
auth::TokenSource& source(std::int64_t length) {
  static std::mutex m;
  static std::map<std::int64_t, std::unique_ptr<auth::TokenSource>> sources;
  std::lock_guard<std::mutex> lk(m);
  auto& s = sources[length];
  if (!s) {
    auth::Config config;
    config.client_id = "bench-client";
    config.endpoints = auth::Endpoints::from_base_url("http://127.0.0.1:9");  // never called
    auth::Token t;
    t.access_token = token_of_length(length);
    t.refresh_token = "bench-refresh";
    t.expires_in = std::chrono::seconds(3600);
    t.expires_at = std::chrono::system_clock::now() + std::chrono::hours(1);
    auto store = std::make_shared<auth::MemoryTokenStore>();
    store->save(t);
    s = std::make_unique<auth::TokenSource>(config, store);
    if (s->access_token() != t.access_token)
      std::abort();
  }
  return *s;
}

// The baseline: a string of the same length, read (copied out) under a mutex.
class LockedString {
 public:
  explicit LockedString(std::string s) : s_(std::move(s)) {}
  std::string get() {
    std::lock_guard<std::mutex> lk(m_);
    return s_;
  }

 private:
  std::mutex m_;
  std::string s_;
};

LockedString& baseline(std::int64_t length) {
  static std::mutex m;
  static std::map<std::int64_t, std::unique_ptr<LockedString>> strings;
  std::lock_guard<std::mutex> lk(m);
  auto& s = strings[length];
  if (!s)
    s = std::make_unique<LockedString>(token_of_length(length));
  return *s;
}

void BM_TokenSource_access_token_cached(benchmark::State& state) {
  auth::TokenSource& src = source(state.range(0));
  for (auto _ : state) {
    std::string t = src.access_token();
    benchmark::DoNotOptimize(t);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Baseline_string_under_mutex(benchmark::State& state) {
  LockedString& b = baseline(state.range(0));
  for (auto _ : state) {
    std::string t = b.get();
    benchmark::DoNotOptimize(t);
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(BM_TokenSource_access_token_cached)->Arg(1024)->Arg(64)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_Baseline_string_under_mutex)->Arg(1024)->Arg(64)->Threads(1)->Threads(2)->UseRealTime();

BENCHMARK_MAIN();
