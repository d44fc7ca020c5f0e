/*
 * The C++ face of the C API (include/leasehold.hpp): RAII handles, exceptions, a lambda as
 * the seat's callback. Same behaviour and exit codes as checkout.c. Build (see docs/bindings/cpp.md):
 *
 *   cargo build --release -p leasehold-ffi
 *   c++ -std=c++17 -Wall -Icrates/ffi/include crates/ffi/examples/checkout.cpp \
 *       -Ltarget/release -lleasehold -Wl,-rpath,$PWD/target/release -o checkout-cpp
 *   LEASEHOLD_URL=http://127.0.0.1:8470 LEASEHOLD_TOKEN=... ./checkout-cpp LICENSE_ID [SECONDS]
 */
#include <leasehold.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>

namespace {

std::string env_or(const char *name, const std::string &fallback) {
  const char *value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? value : fallback;
}

// The seat's callback runs on the library's thread: each line is written whole, so that its
// output and the main thread's never interleave.
void say(const std::string &line) {
  static std::mutex out;
  std::lock_guard<std::mutex> lock(out);
  std::cout << line + "\n" << std::flush;
}

int exit_code(const leasehold::Error &error) {
  switch (error.result()) {
    case LEASEHOLD_RESULT_NO_SEAT_AVAILABLE: return 75;
    case LEASEHOLD_RESULT_API: return 77;
    case LEASEHOLD_RESULT_TRANSPORT: return 69;
    case LEASEHOLD_RESULT_CONFIG:
    case LEASEHOLD_RESULT_INVALID_ARGUMENT: return 78;
    default: return 1;
  }
}

}  // namespace

int main(int argc, char **argv) {
  std::cout << std::unitbuf;
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " LICENSE_ID [SECONDS]\n";
    return 78;
  }
  const std::string license_id = argv[1];
  const long seconds = argc > 2 ? std::strtol(argv[2], nullptr, 10) : 10;
  const std::string url = env_or("LEASEHOLD_URL", "http://127.0.0.1:8470");
  const std::string ca_file = env_or("LEASEHOLD_CA_FILE", "");
  const std::string jwks_file = env_or("LEASEHOLD_JWKS_FILE", "leasehold-jwks.json");

  try {
    leasehold::Client client =
        env_or("LEASEHOLD_CLIENT_ID", "").empty()
            ? leasehold::Client::with_token(url, env_or("LEASEHOLD_TOKEN", ""), ca_file)
            : leasehold::Client::with_client_credentials(url, env_or("LEASEHOLD_CLIENT_ID", ""),
                                                         env_or("LEASEHOLD_CLIENT_SECRET", ""),
                                                         ca_file);
    // Outlives the seat, whose destructor guarantees its callback no longer runs.
    std::atomic<bool> told{false};
    char host[256] = "cpp-example-host";
    gethostname(host, sizeof host - 1);
    leasehold::CheckoutOptions options;
    options.wait_secs = std::strtoull(env_or("LEASEHOLD_WAIT_SECS", "0").c_str(), nullptr, 10);
    leasehold::Seat seat =
        client.checkout(license_id, host, "cpp-example-" + std::to_string(getpid()), options);
    std::cout << "seat taken: session " << seat.session_id() << " until " << seat.expires_at()
              << "\n";

    // Save the keys, verify the lease against the saved copy (offline).
    std::ofstream(jwks_file) << client.fetch_jwks();
    leasehold::LeaseClaims claims = leasehold::Verifier::from_file(jwks_file).verify(
        seat.lease(), static_cast<std::int64_t>(std::time(nullptr)));
    std::cout << "lease verified offline: " << claims.subject << " on " << claims.device_id
              << ", session " << claims.session_id << ", valid until " << claims.expires_at
              << "\n";

    seat.on_change([&told](leasehold::SeatState state, const std::string &reason) {
      if (state == leasehold::SeatState::Lost) {
        say("callback (cpp-example): seat lost: " + reason);
      } else {
        say("callback (cpp-example): seat released");
      }
      told = true;
    });

    // "Work" until the time is up or the seat is lost.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (seat.active() && std::chrono::steady_clock::now() < until) {
      seat.wait(std::chrono::milliseconds(100));  // ... one slice of licensed work ...
    }
    if (seat.state() == leasehold::SeatState::Lost) {
      say("seat lost: " + seat.lost_reason() + " (end reason: " +
          (seat.end_reason().empty() ? "none" : seat.end_reason()) + ")");
      // The callback runs on the library's thread, a moment later; destroying the seat
      // cancels one not yet delivered.
      for (int i = 0; i < 50 && !told; i++) usleep(10000);
      return 76;
    }
    seat.release();
    say(std::string("seat returned: state ") +
        (seat.state() == leasehold::SeatState::Released ? "released" : "?"));
    // The callback runs on the library's thread: give it a moment to say "released".
    for (int i = 0; i < 50 && !told; i++) usleep(10000);
    return 0;
  } catch (const leasehold::Error &error) {
    std::cerr << "failed: " << error.what() << " (" << leasehold_result_name(error.result())
              << (error.code().empty() ? "" : ", " + error.code()) << ")\n";
    return exit_code(error);
  }
}
