//! The one error class of the package: what kind of failure (as the C library's result codes
//! name them), and for a refusal by the server its stable code and HTTP status.

/** What kind of failure, as the C library and the other bindings name it. */
export type ErrorKind =
  /** An argument is unusable (empty id, negative wait...). */
  | "invalid_argument"
  /** The client is configured wrongly: a bad URL, an unreadable CA file. */
  | "config"
  /** The server could not be reached (after the retries). */
  | "transport"
  /** The server refused the request: `code` and `status` say how. */
  | "api"
  /** 409 `no_seat_available`: every seat of the license is taken. */
  | "no_seat_available"
  /** An answer of the server, or a key set, could not be read. */
  | "decode"
  /** A lease failed verification (malformed, unknown key, bad signature, expired). */
  | "lease_invalid";

/** A failed call. */
export class LeaseholdError extends Error {
  override readonly name = "LeaseholdError";

  constructor(
    /** What kind of failure. */
    readonly kind: ErrorKind,
    message: string,
    /** The server's stable error code (`"unauthorized"`, `"not_found"`...), if it answered. */
    readonly code?: string,
    /** The HTTP status when the server answered, else 0. */
    readonly status: number = 0,
    /** The server's end reason of a 410 `session_ended` (`"revoked"`...). */
    readonly reason?: string,
  ) {
    super(message);
  }

  /** True when every seat of the license is taken. */
  get noSeatAvailable(): boolean {
    return this.kind === "no_seat_available";
  }

  /** True for failures that may go away by themselves: transport errors and 503. */
  get retryable(): boolean {
    return this.kind === "transport" || this.status === 503;
  }
}

export function invalidArgument(message: string): LeaseholdError {
  return new LeaseholdError("invalid_argument", message);
}
