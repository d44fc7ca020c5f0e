//! Checking out a seat: `checkoutWith` opens a session and returns a `Seat`, which keeps it
//! alive with background heartbeats and gives it back when released, disposed, or when the
//! process exits (exit.ts). The same life cycle as the Rust SDK's `LeaseGuard`:
//!
//! ```text
//!   checkout ──► active ──(heartbeat 200: new expires_at, maybe a new lease)──► active
//!                  ├──(410 session_ended: revoked, lifetime, inactivity...)──► lost { ended }
//!                  ├──(no answer / 503 until expires_at has passed)───────────► lost { expired }
//!                  ├──(other 4xx: token revoked, session unknown...)──────────► lost { rejected }
//!                  ├──(new lease fails verification)──────────────────────────► lost { lease_invalid }
//!                  └──(release(), dispose, process exit)──────────────────────► released
//! ```
//!
//! Heartbeats run every `heartbeat_interval_secs` (or the option), and at the latest when a
//! third of the time to the expiry has passed; a failure that may go away (transport, 503) is
//! retried with backoff until the expiry has passed. Once the lease is past half its life a
//! heartbeat asks for a re-signed one. Timers are unref'd: a held seat alone does not keep the
//! process running (it is released when the event loop empties).

import { EventEmitter } from "node:events";
import { performance } from "node:perf_hooks";

import type { Client, Heartbeat, Session } from "./client.js";
import { LeaseholdError, invalidArgument } from "./errors.js";
import { untrack, track } from "./exit.js";
import { backoff } from "./http.js";
import type { LeaseVerifier } from "./verify.js";

/** `active` until the seat is `lost` or `released`; both are final. */
export type SeatState = "active" | "lost" | "released";

/** Why a seat was lost. */
export type LostReason =
  /** The server ended the session: `reason` is `"revoked"`, `"inactivity"`, `"lifetime"`,
   * `"user_deactivated"`, `"device_deactivated"`, `"license_expired"`... */
  | { kind: "ended"; reason: string }
  /** The server could not be reached (or answered 503) until the session expired. */
  | { kind: "expired" }
  /** A heartbeat was refused with another error (the token was revoked, say). */
  | { kind: "rejected"; status: number; code?: string; message: string }
  /** The server sent a lease that does not verify (`verifyLease`). */
  | { kind: "lease_invalid"; message: string };

/** A lost reason in words, as the other bindings say it (`"session ended (revoked)"`). */
export function describeLostReason(reason: LostReason): string {
  switch (reason.kind) {
    case "ended":
      return `session ended (${reason.reason})`;
    case "expired":
      return "server unreachable until the session expired";
    case "rejected":
      return `heartbeat refused: ${reason.message}`;
    case "lease_invalid":
      return reason.message;
  }
}

export interface CheckoutOptions {
  /** The machine (default: the host name). */
  deviceId?: string;
  /** This run of the application (default: a new id per checkout). Checking out again with
   * the same license, device and instance answers the same live session. */
  instanceId?: string;
  /** On a license that queues, wait up to this many seconds for a seat. */
  waitSecs?: number;
  /** Heartbeat every this many milliseconds instead of the server's advice. */
  heartbeatIntervalMs?: number;
  /** Verify the session's leases (at checkout and on each renewal) with the server's keys. */
  verifyLease?: boolean;
  /** Release the seat when the process exits (default true): see exit.ts. */
  releaseOnExit?: boolean;
}

/** Past the expiry, the last heartbeat may take this long to answer (it only tells why). */
const LAST_TRY_GRACE_MS = 2_000;
/** Never heartbeat more often than this (unless the interval itself is shorter). */
const MIN_HEARTBEAT_SPACING_MS = 250;

/** The monotonic deadline matching the wall-clock `expiresAt`. */
function localDeadline(expiresAt: string, intervalMs: number): number {
  const remaining = Date.parse(expiresAt) - Date.now();
  return performance.now() + Math.max(remaining, Math.min(intervalMs, MIN_HEARTBEAT_SPACING_MS));
}

/** When to send the next heartbeat: after the interval, but before a third of the time left. */
function nextHeartbeat(now: number, deadline: number, intervalMs: number): number {
  const thirdLeft = Math.max(0, deadline - now) / 3;
  const floor = Math.min(intervalMs, MIN_HEARTBEAT_SPACING_MS);
  return Math.min(now + Math.min(intervalMs, Math.max(thirdLeft, floor)), deadline);
}

/** A checked-out seat: an open session kept alive in the background.
 *
 * Events: `"lost"` (with the `LostReason`) and `"released"`, each at most once. `signal` is an
 * AbortSignal aborted when the seat leaves `active` (hand it to the licensed work). */
export class Seat extends EventEmitter {
  private current: Session;
  private status: SeatState = "active";
  private reason: LostReason | undefined;
  private timer: NodeJS.Timeout | undefined;
  private releasing: Promise<void> | undefined;
  private readonly abort = new AbortController();
  private deadline: number;
  private renewLeaseAt: number;
  private failures = 0;

  /** @internal Use `Client.checkout` / `checkout`. */
  constructor(
    private readonly client: Client,
    session: Session,
    private readonly intervalMs: number,
    private readonly verifier: LeaseVerifier | undefined,
    releaseOnExit: boolean,
  ) {
    super();
    this.current = { ...session };
    this.deadline = localDeadline(session.expires_at, intervalMs);
    const now = performance.now();
    this.renewLeaseAt = now + (this.deadline - now) / 2;
    this.schedule(nextHeartbeat(now, this.deadline, intervalMs));
    if (releaseOnExit) track(this);
  }

  /** The session id. */
  get id(): string {
    return this.current.id;
  }

  /** The session, with the latest `expires_at` and `lease`. */
  get session(): Session {
    return { ...this.current };
  }

  /** The latest signed lease (a compact JWT), renewed by the heartbeats. */
  get lease(): string | undefined {
    return this.current.lease;
  }

  /** When the session expires unless kept alive, as of the latest heartbeat. */
  get expiresAt(): Date {
    return new Date(this.current.expires_at);
  }

  get state(): SeatState {
    return this.status;
  }

  get active(): boolean {
    return this.status === "active";
  }

  /** Why the seat was lost; undefined while it is not. */
  get lostReason(): LostReason | undefined {
    return this.reason;
  }

  /** Aborted when the seat leaves `active` (the reason is the `LostReason`, or "released"). */
  get signal(): AbortSignal {
    return this.abort.signal;
  }

  /** Resolves when the seat is lost, with the reason (never, while it stays active; at once
   * if it was already lost). */
  lost(): Promise<LostReason> {
    if (this.reason) return Promise.resolve(this.reason);
    return new Promise((resolve) => this.once("lost", resolve));
  }

  /** Gives the seat back: stops the heartbeats and closes the session. A seat already
   * released, or ended by the server, releases without error; a lost seat stays lost. */
  release(): Promise<void> {
    if (!this.releasing) {
      this.stop();
      const wasActive = this.status === "active";
      this.releasing = (async () => {
        try {
          if (wasActive || this.reason?.kind !== "ended") {
            await this.client.closeSession(this.current.id);
          }
        } catch (err) {
          const gone = err instanceof LeaseholdError && (err.status === 410 || err.status === 404);
          if (!gone) throw err;
        } finally {
          this.finish("released");
        }
      })();
    }
    return this.releasing;
  }

  /** `await using seat = await client.checkout(...)` releases it at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  private stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(at: number): void {
    this.stop();
    this.timer = setTimeout(() => void this.beat(), Math.max(0, at - performance.now()));
    this.timer.unref();
  }

  private finish(state: "lost" | "released", reason?: LostReason): void {
    this.stop();
    untrack(this);
    if (this.status !== "active") return;
    this.status = state;
    if (state === "lost" && reason) {
      this.reason = reason;
      this.abort.abort(reason);
      this.emit("lost", reason);
    } else {
      this.abort.abort("released");
      this.emit("released");
    }
  }

  private async beat(): Promise<void> {
    if (this.status !== "active" || this.releasing) return;
    const renewLease = performance.now() >= this.renewLeaseAt;
    const limit = Math.max(this.deadline, performance.now() + LAST_TRY_GRACE_MS) - performance.now();
    let answer: Heartbeat;
    try {
      answer = await this.client.heartbeat(this.current.id, renewLease, limit);
    } catch (err) {
      if (this.releasing || this.status !== "active") return;
      this.failed(err);
      return;
    }
    if (this.releasing || this.status !== "active") return;
    this.accept(answer);
  }

  private accept(answer: Heartbeat): void {
    const now = performance.now();
    if (answer.lease !== undefined && this.verifier) {
      try {
        const claims = this.verifier.verify(answer.lease);
        if (claims.sid !== this.current.id) throw new Error(`the lease is for session ${claims.sid}`);
      } catch (err) {
        this.finish("lost", { kind: "lease_invalid", message: (err as Error).message });
        return;
      }
    }
    this.current.expires_at = answer.expires_at;
    if (answer.lease !== undefined) {
      this.current.lease = answer.lease;
    }
    this.failures = 0;
    this.deadline = localDeadline(answer.expires_at, this.intervalMs);
    if (answer.lease !== undefined) this.renewLeaseAt = now + (this.deadline - now) / 2;
    this.schedule(nextHeartbeat(now, this.deadline, this.intervalMs));
  }

  private failed(err: unknown): void {
    const now = performance.now();
    if (err instanceof LeaseholdError && err.status === 410) {
      this.finish("lost", { kind: "ended", reason: err.reason ?? "unknown" });
    } else if (err instanceof LeaseholdError && (err.retryable || err.kind === "decode")) {
      if (now >= this.deadline) {
        this.finish("lost", { kind: "expired" });
        return;
      }
      this.failures += 1;
      this.schedule(Math.min(now + backoff(this.failures), this.deadline));
    } else if (err instanceof LeaseholdError) {
      this.finish("lost", { kind: "rejected", status: err.status, code: err.code, message: err.message });
    } else {
      this.finish("lost", { kind: "rejected", status: 0, message: String(err) });
    }
  }
}

/** Checks out a seat of `licenseId` through `client`: see `Client.checkout`. */
export async function checkoutWith(
  client: Client,
  licenseId: string,
  deviceId: string,
  instanceId: string,
  options: CheckoutOptions,
): Promise<Seat> {
  if (!licenseId) throw invalidArgument("licenseId is empty");
  if (options.waitSecs !== undefined && !(options.waitSecs >= 0)) throw invalidArgument("waitSecs is negative");
  if (options.heartbeatIntervalMs !== undefined && !(options.heartbeatIntervalMs > 0)) {
    throw invalidArgument("heartbeatIntervalMs must be positive");
  }
  // The keys first, so that a failure leaves no session behind.
  const verifier = options.verifyLease ? await client.leaseVerifier() : undefined;
  const session = await client.openSession({
    license_id: licenseId,
    device_id: deviceId,
    instance_id: instanceId,
    ...(options.waitSecs ? { wait_secs: options.waitSecs } : {}),
  });
  if (verifier) {
    try {
      if (!session.lease) throw new LeaseholdError("lease_invalid", "invalid lease: the server sent no lease");
      const claims = verifier.verify(session.lease);
      if (claims.sid !== session.id || claims.lic !== session.license_id) {
        throw new LeaseholdError("lease_invalid", `invalid lease: it is for session ${claims.sid}`);
      }
    } catch (err) {
      await client.closeSession(session.id).catch(() => undefined);
      throw err;
    }
  }
  const intervalMs = options.heartbeatIntervalMs ?? Math.max(1, session.heartbeat_interval_secs) * 1000;
  return new Seat(client, session, intervalMs, verifier, options.releaseOnExit ?? true);
}
