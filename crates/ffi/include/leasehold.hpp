/*
 * leasehold.hpp: C++17 RAII wrappers over leasehold.h (header-only; link with -lleasehold).
 *
 *   leasehold::Client client = leasehold::Client::with_token(url, token);
 *   leasehold::Seat seat = client.checkout(license_id, device_id, instance_id);
 *   seat.on_change([](leasehold::SeatState state, const std::string &reason) { ... });
 *   ... work while seat.state() == leasehold::SeatState::Active ...
 *   seat.release();   // or let `seat` go out of scope: its destructor returns the seat
 *
 * Ownership: each class owns its C handle and frees it in its destructor; they are movable,
 * not copyable. A Seat outlives its Client safely. Failures throw leasehold::Error, which
 * carries the result code, the server's error code and HTTP status, and the message.
 * Callbacks (Seat::on_change) run on a thread of the library; an exception thrown by one is
 * caught and dropped there (it cannot cross into C). Destroying a Seat waits for its callback
 * if it is running on another thread, so do not destroy a Seat while holding a lock its
 * callback takes.
 */
#ifndef LEASEHOLD_HPP
#define LEASEHOLD_HPP

#include "leasehold.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace leasehold {

/* The state of a seat: Active until it is Lost or Released (both final). */
enum class SeatState : std::int32_t {
  Active = LEASEHOLD_SEAT_STATE_ACTIVE,
  Lost = LEASEHOLD_SEAT_STATE_LOST,
  Released = LEASEHOLD_SEAT_STATE_RELEASED,
};

/* Why a seat was lost (None while it is not). */
enum class LostKind : std::int32_t {
  None = LEASEHOLD_LOST_KIND_NONE,
  Ended = LEASEHOLD_LOST_KIND_ENDED,
  Expired = LEASEHOLD_LOST_KIND_EXPIRED,
  Rejected = LEASEHOLD_LOST_KIND_REJECTED,
  LeaseInvalid = LEASEHOLD_LOST_KIND_LEASE_INVALID,
};

/* A failed call: what leasehold_last_error_*() said about it. */
class Error : public std::runtime_error {
 public:
  Error(leasehold_result result, const std::string &message, std::string code, int http_status)
      : std::runtime_error(message), result_(result), code_(std::move(code)),
        http_status_(http_status) {}

  /* The result code (LEASEHOLD_RESULT_*). */
  leasehold_result result() const noexcept { return result_; }
  /* The server's stable error code ("no_seat_available", "unauthorized"...), or "". */
  const std::string &code() const noexcept { return code_; }
  /* The HTTP status when the server answered, else 0. */
  int http_status() const noexcept { return http_status_; }
  /* Every seat of the license is taken. */
  bool no_seat_available() const noexcept {
    return result_ == LEASEHOLD_RESULT_NO_SEAT_AVAILABLE;
  }

 private:
  leasehold_result result_;
  std::string code_;
  int http_status_;
};

namespace detail {

inline Error last_error(leasehold_result result) {
  const char *message = leasehold_last_error_message();
  const char *code = leasehold_last_error_code();
  return Error(result, message ? message : leasehold_result_name(result), code ? code : "",
               leasehold_last_error_http_status());
}

inline void check(leasehold_result result) {
  if (result != LEASEHOLD_RESULT_OK) throw last_error(result);
}

/* Takes ownership of a string the library returned, frees it, and answers its text. */
inline std::string take(char *text) {
  if (text == nullptr) return std::string();
  std::string copy(text);
  leasehold_string_free(text);
  return copy;
}

inline const char *c_str_or_null(const std::string &text) {
  return text.empty() ? nullptr : text.c_str();
}

struct ClientFree {
  void operator()(leasehold_client *client) const noexcept { leasehold_client_free(client); }
};
struct SeatFree {
  void operator()(leasehold_seat *seat) const noexcept { leasehold_seat_free(seat); }
};
struct VerifierFree {
  void operator()(leasehold_verifier *verifier) const noexcept {
    leasehold_verifier_free(verifier);
  }
};

}  // namespace detail

/* Options of Client::checkout. */
struct CheckoutOptions {
  /* On a license that queues, wait up to this long for a seat (0: answer at once). */
  std::uint64_t wait_secs = 0;
  /* Heartbeat interval; 0: the server's advice. */
  std::chrono::milliseconds heartbeat_interval{0};
  /* Verify the session's signed leases against the server's keys. */
  bool verify_lease = false;
};

/* The claims of a verified lease. */
struct LeaseClaims {
  std::string issuer, subject, session_id, license_id, kind, device_id, instance_id;
  std::int64_t issued_at = 0;
  std::int64_t expires_at = 0;
};

/* A checked-out seat, kept alive in the background; returned when destroyed. */
class Seat {
 public:
  /* Called once, on a thread of the library, when the seat leaves Active; `reason` is empty
   * when it was released. */
  using Callback = std::function<void(SeatState state, const std::string &reason)>;

  Seat(Seat &&) noexcept = default;
  Seat &operator=(Seat &&other) noexcept {
    if (this != &other) {
      seat_.reset();  // free (and return) ours first: our callbacks are not called any more
      callbacks_ = std::move(other.callbacks_);
      seat_ = std::move(other.seat_);
    }
    return *this;
  }
  Seat(const Seat &) = delete;
  Seat &operator=(const Seat &) = delete;
  /* Returns the seat if still active (waiting at most 5 s for the server), then frees it. */
  ~Seat() { seat_.reset(); }

  SeatState state() const { return static_cast<SeatState>(leasehold_seat_get_state(seat_.get())); }
  bool active() const { return state() == SeatState::Active; }
  LostKind lost_kind() const {
    return static_cast<LostKind>(leasehold_seat_lost_kind(seat_.get()));
  }
  /* Why the seat was lost, in words; "" while it is not. */
  std::string lost_reason() const { return detail::take(leasehold_seat_lost_reason(seat_.get())); }
  /* The server's end reason ("revoked", "inactivity"...) when it ended the session; "" else. */
  std::string end_reason() const {
    const char *reason = leasehold_seat_end_reason(seat_.get());
    return reason ? reason : "";
  }
  std::string session_id() const {
    const char *id = leasehold_seat_session_id(seat_.get());
    return id ? id : "";
  }
  /* The latest signed lease (a JWT). */
  std::string lease() const { return detail::take(leasehold_seat_lease(seat_.get())); }
  /* Seconds since the Unix epoch. */
  std::int64_t expires_at() const { return leasehold_seat_expires_at(seat_.get()); }

  /* Waits until the seat leaves Active or `timeout` passes; answers the state. */
  SeatState wait(std::chrono::milliseconds timeout) const {
    leasehold_seat_state state = LEASEHOLD_SEAT_STATE_ACTIVE;
    auto ms = timeout.count() < 0 ? 0 : static_cast<std::uint64_t>(timeout.count());
    detail::check(leasehold_seat_wait(seat_.get(), ms, &state));
    return static_cast<SeatState>(state);
  }

  /* Registers `callback` (replacing an earlier one). */
  void on_change(Callback callback) {
    auto owned = std::make_unique<Callback>(std::move(callback));
    detail::check(leasehold_seat_set_callback(seat_.get(), &Seat::trampoline, owned.get()));
    // Earlier callbacks stay alive until the seat is freed: one may be running right now.
    callbacks_.push_back(std::move(owned));
  }

  /* Gives the seat back now, reporting errors (the destructor cannot). */
  void release() { detail::check(leasehold_seat_release(seat_.get())); }

  /* The C handle, still owned by this object. */
  leasehold_seat *get() const noexcept { return seat_.get(); }

 private:
  friend class Client;
  explicit Seat(leasehold_seat *seat) : seat_(seat) {}

  static void trampoline(void *user_data, leasehold_seat_state state,
                         const char *reason) noexcept {
    try {
      (*static_cast<Callback *>(user_data))(static_cast<SeatState>(state),
                                            reason ? reason : "");
    } catch (...) {
      // An exception must not unwind into C; the callback's failure stays its own.
    }
  }

  // Declared before seat_: destroyed after it, once no callback can run any more.
  std::vector<std::unique_ptr<Callback>> callbacks_;
  std::unique_ptr<leasehold_seat, detail::SeatFree> seat_;
};

/* A client of one Leasehold server. */
class Client {
 public:
  /* A user token (or an admin token); `ca_file`: "" for the system's trust store. */
  static Client with_token(const std::string &url, const std::string &token,
                           const std::string &ca_file = "") {
    leasehold_client *client = nullptr;
    detail::check(leasehold_client_new(url.c_str(), token.c_str(),
                                       detail::c_str_or_null(ca_file), &client));
    return Client(client);
  }

  /* A service user's OAuth2 client credentials. */
  static Client with_client_credentials(const std::string &url, const std::string &client_id,
                                        const std::string &client_secret,
                                        const std::string &ca_file = "") {
    leasehold_client *client = nullptr;
    detail::check(leasehold_client_new_with_client_credentials(
        url.c_str(), client_id.c_str(), client_secret.c_str(), detail::c_str_or_null(ca_file),
        &client));
    return Client(client);
  }

  /* Takes a seat; throws Error (no_seat_available() when the license is full). */
  Seat checkout(const std::string &license_id, const std::string &device_id,
                const std::string &instance_id, const CheckoutOptions &options = {}) const {
    leasehold_checkout_options c_options = {};
    c_options.wait_secs = options.wait_secs;
    c_options.heartbeat_interval_ms =
        options.heartbeat_interval.count() < 0
            ? 0
            : static_cast<std::uint64_t>(options.heartbeat_interval.count());
    c_options.flags = options.verify_lease ? LEASEHOLD_CHECKOUT_VERIFY_LEASE : 0u;
    leasehold_seat *seat = nullptr;
    detail::check(leasehold_checkout(client_.get(), license_id.c_str(), device_id.c_str(),
                                     instance_id.c_str(), &c_options, &seat));
    return Seat(seat);
  }

  /* The server's lease-signing keys as JSON, to save for offline verification. */
  std::string fetch_jwks() const {
    char *jwks = nullptr;
    detail::check(leasehold_client_fetch_jwks(client_.get(), &jwks));
    return detail::take(jwks);
  }

  leasehold_client *get() const noexcept { return client_.get(); }

 private:
  explicit Client(leasehold_client *client) : client_(client) {}
  std::unique_ptr<leasehold_client, detail::ClientFree> client_;
};

/* Verifies leases offline against a saved key set. */
class Verifier {
 public:
  static Verifier from_jwks(const std::string &jwks_json, std::uint64_t leeway_secs = 0) {
    leasehold_verifier *verifier = nullptr;
    detail::check(leasehold_verifier_new(jwks_json.c_str(), leeway_secs, &verifier));
    return Verifier(verifier);
  }

  static Verifier from_file(const std::string &path, std::uint64_t leeway_secs = 0) {
    leasehold_verifier *verifier = nullptr;
    detail::check(leasehold_verifier_from_file(path.c_str(), leeway_secs, &verifier));
    return Verifier(verifier);
  }

  /* Throws Error (LEASEHOLD_RESULT_LEASE_INVALID) unless `lease` verifies at `now_unix_secs`. */
  LeaseClaims verify(const std::string &lease, std::int64_t now_unix_secs) const {
    leasehold_lease_claims *claims = nullptr;
    detail::check(leasehold_verifier_verify(verifier_.get(), lease.c_str(), now_unix_secs,
                                            &claims));
    std::unique_ptr<leasehold_lease_claims, void (*)(leasehold_lease_claims *)> owned(
        claims, &leasehold_lease_claims_free);
    LeaseClaims out;
    out.issuer = claims->issuer;
    out.subject = claims->subject;
    out.session_id = claims->session_id;
    out.license_id = claims->license_id;
    out.kind = claims->kind;
    out.device_id = claims->device_id;
    out.instance_id = claims->instance_id;
    out.issued_at = claims->issued_at;
    out.expires_at = claims->expires_at;
    return out;
  }

 private:
  explicit Verifier(leasehold_verifier *verifier) : verifier_(verifier) {}
  std::unique_ptr<leasehold_verifier, detail::VerifierFree> verifier_;
};

}  // namespace leasehold

#endif /* LEASEHOLD_HPP */
