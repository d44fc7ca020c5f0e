//! Leasehold for Node.js: hold a seat of a license while your application runs. TypeScript over
//! the HTTP seat protocol, with the Rust SDK's guard semantics: background heartbeats, a notice
//! when the seat is lost, the seat given back on release, on `await using`, at the end of
//! `withSeat`, and when the process exits. No runtime dependency.
//!
//! Borrowing (a seat taken offline for days) is not offered here yet: the server, the Rust SDK,
//! the C library and the `leasehold` CLI have it (`leasehold run --lease seat.lease -- node app.js`).

import { Client, ClientOptions, Credentials } from "./client.js";
import { invalidArgument } from "./errors.js";
import type { CheckoutOptions, Seat } from "./seat.js";

export { Client } from "./client.js";
export type { ClientOptions, Credentials, Heartbeat, Session } from "./client.js";
export { LeaseholdError } from "./errors.js";
export type { ErrorKind } from "./errors.js";
export { releaseAll } from "./exit.js";
export { Seat, describeLostReason } from "./seat.js";
export type { CheckoutOptions, LostReason, SeatState } from "./seat.js";
export { LeaseVerifier } from "./verify.js";
export type { Jwk, Jwks, LeaseClaims } from "./verify.js";

/** Connection settings of `checkout` and `withSeat`; unset ones come from the environment as
 * for `leasehold run`: `LEASEHOLD_URL` (default `http://127.0.0.1:8470`), `LEASEHOLD_TOKEN`, or
 * `LEASEHOLD_CLIENT_ID` and `LEASEHOLD_CLIENT_SECRET`, and `LEASEHOLD_CA_FILE`. */
export interface ConnectOptions extends ClientOptions {
  url?: string;
  token?: string;
  clientId?: string;
  clientSecret?: string;
}

/** A client from `options`, completed from the environment. */
export function connect(options: ConnectOptions = {}): Client {
  const env = process.env;
  const url = options.url || env.LEASEHOLD_URL || "http://127.0.0.1:8470";
  let credentials: Credentials;
  if (options.token) {
    credentials = { token: options.token };
  } else if (options.clientId) {
    credentials = { clientId: options.clientId, clientSecret: options.clientSecret ?? "" };
  } else if (env.LEASEHOLD_CLIENT_ID) {
    credentials = { clientId: env.LEASEHOLD_CLIENT_ID, clientSecret: env.LEASEHOLD_CLIENT_SECRET ?? "" };
  } else if (env.LEASEHOLD_TOKEN) {
    credentials = { token: env.LEASEHOLD_TOKEN };
  } else {
    throw invalidArgument(
      "no credentials: pass token (or clientId and clientSecret), or set LEASEHOLD_TOKEN " +
        "(or LEASEHOLD_CLIENT_ID and LEASEHOLD_CLIENT_SECRET)",
    );
  }
  const caFile = options.caFile ?? (options.ca === undefined ? env.LEASEHOLD_CA_FILE || undefined : undefined);
  return new Client(url, credentials, { ...options, caFile });
}

/** Takes a seat with a client of its own (see `connect` for the settings). */
export async function checkout(licenseId: string, options: ConnectOptions & CheckoutOptions = {}): Promise<Seat> {
  return connect(options).checkout(licenseId, options);
}

/** Runs `work` while holding a seat and gives the seat back when it settles, even on an
 * exception. `work` gets the seat; its `signal` aborts when the seat is lost. */
export async function withSeat<T>(
  licenseId: string,
  options: ConnectOptions & CheckoutOptions,
  work: (seat: Seat) => Promise<T> | T,
): Promise<T> {
  const seat = await checkout(licenseId, options);
  let result: T;
  try {
    result = await work(seat);
  } catch (err) {
    // The work's failure matters more than the release's.
    await seat.release().catch(() => undefined);
    throw err;
  }
  await seat.release();
  return result;
}
