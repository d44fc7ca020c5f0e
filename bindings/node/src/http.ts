//! One HTTP exchange with the server over node:http / node:https (no dependency; a private CA
//! is trusted through the `ca` option, which the global fetch cannot take), and the retry
//! policy: transport errors and 503 are retried with backoff and jitter, a 4xx never.

import * as http from "node:http";
import * as https from "node:https";
import { setTimeout as sleep } from "node:timers/promises";

import { LeaseholdError } from "./errors.js";

/** An answer of the server. */
export interface Answer {
  status: number;
  body: unknown;
}

export interface Transport {
  base: URL;
  agent: http.Agent;
  /** Per-request timeout. */
  timeoutMs: number;
}

export function transport(url: string, ca: string | Buffer | undefined, timeoutMs: number): Transport {
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    throw new LeaseholdError("config", `${url} is not an http(s) URL`);
  }
  if (base.protocol !== "http:" && base.protocol !== "https:") {
    throw new LeaseholdError("config", `${url} is not an http(s) URL`);
  }
  if (ca !== undefined && base.protocol !== "https:") {
    throw new LeaseholdError("config", "a CA is only used with an https:// URL");
  }
  const agent =
    base.protocol === "https:"
      ? new https.Agent({ keepAlive: true, ca })
      : new http.Agent({ keepAlive: true });
  return { base, agent, timeoutMs };
}

/** Sends one request; rejects with a `transport` error when no answer came. */
export function send(
  t: Transport,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<Answer> {
  const url = new URL(path, t.base);
  const lib = url.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const request = lib.request(
      url,
      { method, headers, agent: t.agent, timeout: t.timeoutMs },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("error", (err) =>
          reject(new LeaseholdError("transport", `${method} ${url.pathname}: ${err.message}`)),
        );
        response.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown = undefined;
          if (text.length > 0) {
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = text;
            }
          }
          resolve({ status: response.statusCode ?? 0, body: parsed });
        });
      },
    );
    request.on("timeout", () => request.destroy(new Error("no answer in time")));
    request.on("error", (err) =>
      reject(new LeaseholdError("transport", `${method} ${url.pathname}: ${err.message}`)),
    );
    request.end(body);
  });
}

/** The error an answer that is not a success stands for, from the server's error body. */
export function apiError(what: string, answer: Answer): LeaseholdError {
  const body = answer.body as
    | { error?: { code?: string; message?: string; reason?: string } | string; error_description?: string }
    | undefined;
  let code: string | undefined;
  let message: string | undefined;
  let reason: string | undefined;
  if (body && typeof body.error === "object") {
    code = body.error.code;
    message = body.error.message;
    reason = body.error.reason;
  } else if (body && typeof body.error === "string") {
    // RFC 6749 5.2, from the token endpoint.
    code = body.error;
    message = body.error_description;
  }
  const kind = code === "no_seat_available" ? "no_seat_available" : "api";
  const text = `${what}: ${answer.status} ${code ?? "error"}: ${message ?? "no message"}`;
  return new LeaseholdError(kind, text, code, answer.status, reason);
}

/** How requests are retried: 4 tries, waits of about 200 ms, 400 ms, 800 ms (at most 5 s). */
export const RETRY = { attempts: 4, initialMs: 200, maxMs: 5000 };

/** The wait before retry number `retry` (1 for the first): exponential, "equal jitter". */
export function backoff(retry: number): number {
  const full = Math.min(RETRY.initialMs * 2 ** Math.max(0, retry - 1), RETRY.maxMs);
  return full / 2 + Math.random() * (full / 2);
}

/** Runs `attempt` until it succeeds, fails with an error that is not retryable, or the tries
 * run out. `idempotent: false` retries only errors that happened before anything was sent
 * (connection refused), so a request that may have reached the server is never sent twice. */
export async function withRetries<T>(attempt: () => Promise<T>, idempotent: boolean): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (err) {
      const retry =
        err instanceof LeaseholdError &&
        err.retryable &&
        tries < RETRY.attempts &&
        (idempotent || /ECONNREFUSED/.test(err.message));
      if (!retry) throw err;
      await sleep(backoff(tries));
    }
  }
}
