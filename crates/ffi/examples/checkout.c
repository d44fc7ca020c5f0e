/*
 * Takes a seat, verifies its lease offline, "works" while the seat is held, and gives it back:
 * the C API end to end. Build against the library (see docs/bindings/c.md):
 *
 *   cargo build --release -p leasehold-ffi
 *   cc -std=c11 -Wall -Icrates/ffi/include crates/ffi/examples/checkout.c \
 *      -Ltarget/release -lleasehold -Wl,-rpath,$PWD/target/release -o checkout
 *   LEASEHOLD_URL=http://127.0.0.1:8470 LEASEHOLD_TOKEN=... ./checkout LICENSE_ID [SECONDS]
 *
 * Optional: LEASEHOLD_CA_FILE (a PEM CA for https://), LEASEHOLD_CLIENT_ID and
 * LEASEHOLD_CLIENT_SECRET (a service user, instead of LEASEHOLD_TOKEN), LEASEHOLD_JWKS_FILE
 * (where the server's keys are saved for offline checks; default leasehold-jwks.json),
 * LEASEHOLD_WAIT_SECS (wait that long for a seat on a license that queues).
 *
 * Exit codes, as `leasehold run` has them: 0 released, 75 no seat free, 76 seat lost,
 * 77 refused by the server, 69 server unreachable, 78 misconfigured.
 */
/* gethostname() and getpid() under -std=c11. */
#define _POSIX_C_SOURCE 200809L

#include <leasehold.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *env_or(const char *name, const char *fallback) {
  const char *value = getenv(name);
  return (value != NULL && value[0] != '\0') ? value : fallback;
}

/* Prints a failed call's explanation and answers the exit code it deserves. */
static int fail(const char *what, leasehold_result result) {
  const char *message = leasehold_last_error_message();
  const char *code = leasehold_last_error_code();
  fprintf(stderr, "%s failed: %s (%s%s%s)\n", what, message ? message : "?",
          leasehold_result_name(result), code ? ", " : "", code ? code : "");
  switch (result) {
    case LEASEHOLD_RESULT_NO_SEAT_AVAILABLE: return 75;
    case LEASEHOLD_RESULT_API: return 77;
    case LEASEHOLD_RESULT_TRANSPORT: return 69;
    case LEASEHOLD_RESULT_CONFIG:
    case LEASEHOLD_RESULT_INVALID_ARGUMENT: return 78;
    default: return 1;
  }
}

/* What the callback is given: its name for the output, and a flag it sets once it ran. */
struct watcher {
  const char *name;
  atomic_bool told;
};

/* Runs on a thread of the library when the seat leaves the active state. */
static void on_seat_change(void *user_data, leasehold_seat_state state, const char *reason) {
  struct watcher *watcher = (struct watcher *)user_data;
  if (state == LEASEHOLD_SEAT_STATE_LOST) {
    printf("callback (%s): seat lost: %s\n", watcher->name, reason);
  } else {
    printf("callback (%s): seat released\n", watcher->name);
  }
  fflush(stdout);
  atomic_store(&watcher->told, true);
}

/* The callback runs on the library's thread, a moment after the state changed; freeing the
 * seat cancels a callback not yet delivered. Give it up to half a second. */
static void wait_for_callback(struct watcher *watcher) {
  struct timespec pause = {0, 10 * 1000 * 1000};
  for (int i = 0; i < 50 && !atomic_load(&watcher->told); i++) nanosleep(&pause, NULL);
}

/* Saves the server's keys, then checks the seat's lease against the saved file: what an
 * application does to keep working through a short outage. */
static int verify_offline(leasehold_client *client, leasehold_seat *seat, const char *jwks_file) {
  char *jwks = NULL;
  leasehold_result result = leasehold_client_fetch_jwks(client, &jwks);
  if (result != LEASEHOLD_RESULT_OK) return fail("fetching the keys", result);
  FILE *file = fopen(jwks_file, "w");
  if (file == NULL || fputs(jwks, file) < 0 || fclose(file) != 0) {
    fprintf(stderr, "cannot write %s\n", jwks_file);
    leasehold_string_free(jwks);
    return 78;
  }
  leasehold_string_free(jwks);

  leasehold_verifier *verifier = NULL;
  result = leasehold_verifier_from_file(jwks_file, 0, &verifier);
  if (result != LEASEHOLD_RESULT_OK) return fail("loading the saved keys", result);
  char *lease = leasehold_seat_lease(seat);
  leasehold_lease_claims *claims = NULL;
  result = leasehold_verifier_verify(verifier, lease, (int64_t)time(NULL), &claims);
  leasehold_string_free(lease);
  leasehold_verifier_free(verifier);
  if (result != LEASEHOLD_RESULT_OK) return fail("verifying the lease", result);
  printf("lease verified offline: %s on %s, session %s, valid until %lld\n", claims->subject,
         claims->device_id, claims->session_id, (long long)claims->expires_at);
  leasehold_lease_claims_free(claims);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: %s LICENSE_ID [SECONDS]\n", argv[0]);
    return 78;
  }
  const char *license_id = argv[1];
  long seconds = argc > 2 ? strtol(argv[2], NULL, 10) : 10;
  const char *url = env_or("LEASEHOLD_URL", "http://127.0.0.1:8470");
  const char *ca_file = env_or("LEASEHOLD_CA_FILE", NULL);
  const char *token = env_or("LEASEHOLD_TOKEN", NULL);
  const char *client_id = env_or("LEASEHOLD_CLIENT_ID", NULL);

  leasehold_client *client = NULL;
  leasehold_result result;
  if (client_id != NULL) {
    result = leasehold_client_new_with_client_credentials(
        url, client_id, env_or("LEASEHOLD_CLIENT_SECRET", ""), ca_file, &client);
  } else if (token != NULL) {
    result = leasehold_client_new(url, token, ca_file, &client);
  } else {
    fprintf(stderr, "set LEASEHOLD_TOKEN (or LEASEHOLD_CLIENT_ID and LEASEHOLD_CLIENT_SECRET)\n");
    return 78;
  }
  if (result != LEASEHOLD_RESULT_OK) return fail("creating the client", result);

  char device_id[256] = "c-example-host";
  gethostname(device_id, sizeof device_id - 1);
  char instance_id[64];
  snprintf(instance_id, sizeof instance_id, "c-example-%ld", (long)getpid());

  leasehold_checkout_options options = {0};
  options.wait_secs = strtoull(env_or("LEASEHOLD_WAIT_SECS", "0"), NULL, 10);
  leasehold_seat *seat = NULL;
  result = leasehold_checkout(client, license_id, device_id, instance_id, &options, &seat);
  if (result != LEASEHOLD_RESULT_OK) {
    int code = fail("checkout", result);
    leasehold_client_free(client);
    return code;
  }
  printf("seat taken: session %s until %lld\n", leasehold_seat_session_id(seat),
         (long long)leasehold_seat_expires_at(seat));

  int code = verify_offline(client, seat, env_or("LEASEHOLD_JWKS_FILE", "leasehold-jwks.json"));
  if (code != 0) {
    leasehold_seat_free(seat);
    leasehold_client_free(client);
    return code;
  }

  /* Told by callback, and by waiting: the loop below "works" until the time is up or the
   * seat is lost. */
  struct watcher watcher = {"c-example", false};
  leasehold_seat_set_callback(seat, on_seat_change, &watcher);
  leasehold_seat_state state = LEASEHOLD_SEAT_STATE_ACTIVE;
  for (long tick = 0; tick < seconds * 10 && state == LEASEHOLD_SEAT_STATE_ACTIVE; tick++) {
    /* ... one slice of licensed work ... */
    result = leasehold_seat_wait(seat, 100, &state);
    if (result != LEASEHOLD_RESULT_OK) {
      code = fail("waiting", result);
      break;
    }
  }
  if (code == 0 && state == LEASEHOLD_SEAT_STATE_LOST) {
    char *reason = leasehold_seat_lost_reason(seat);
    const char *end = leasehold_seat_end_reason(seat);
    printf("seat lost: %s (end reason: %s)\n", reason, end ? end : "none");
    leasehold_string_free(reason);
    code = 76;
  } else if (code == 0) {
    result = leasehold_seat_release(seat);
    if (result != LEASEHOLD_RESULT_OK) {
      code = fail("release", result);
    } else {
      printf("seat returned: state %s\n",
             leasehold_seat_get_state(seat) == LEASEHOLD_SEAT_STATE_RELEASED ? "released" : "?");
    }
  }
  wait_for_callback(&watcher);
  leasehold_seat_free(seat);
  leasehold_client_free(client);
  return code;
}
