//! Release on exit: the seats checked out with `releaseOnExit` (the default) are given back
//! when the process ends by itself or by a signal, instead of holding their seat until the
//! server's inactivity timeout.
//!
//! - The event loop empties (`beforeExit`): every held seat is released, then the process
//!   exits as it would have (a held seat's timers are unref'd and do not keep it alive).
//! - SIGINT, SIGTERM or SIGHUP arrives and the application has no listener of its own for it:
//!   the seats are released (at most `SIGNAL_RELEASE_MS`), then the signal is raised again
//!   with this module's listeners removed, so the process ends as the signal says. An
//!   application that listens for the signal itself owns its shutdown: release the seats
//!   there (`releaseAll()`).
//! - `process.exit()` and crashes cannot wait for the network: such a seat frees at the
//!   server's inactivity timeout, as for a killed process.
//!
//! The listeners are installed while at least one seat is held, and removed after.

import type { Seat } from "./seat.js";

/** How long a signal waits for the seats to be released before it takes effect. */
const SIGNAL_RELEASE_MS = 5_000;
const SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

const held = new Set<Seat>();
let installed = false;

/** Releases every seat held with `releaseOnExit`; never rejects. */
export async function releaseAll(): Promise<void> {
  await Promise.allSettled([...held].map((seat) => seat.release()));
}

function onBeforeExit(): void {
  if (held.size > 0) void releaseAll();
}

function onSignal(signal: NodeJS.Signals): void {
  // Another listener: the application handles this signal (and its shutdown) itself.
  if (process.listenerCount(signal) > 1) return;
  const timeout = new Promise<void>((resolve) => setTimeout(resolve, SIGNAL_RELEASE_MS).unref());
  void Promise.race([releaseAll(), timeout]).then(() => {
    uninstall();
    process.kill(process.pid, signal);
  });
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on("beforeExit", onBeforeExit);
  for (const signal of SIGNALS) process.on(signal, onSignal);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  process.off("beforeExit", onBeforeExit);
  for (const signal of SIGNALS) process.off(signal, onSignal);
}

/** A seat to release on exit. */
export function track(seat: Seat): void {
  held.add(seat);
  install();
}

/** A seat that is no longer held. */
export function untrack(seat: Seat): void {
  held.delete(seat);
  if (held.size === 0) uninstall();
}
