//! The client of one Leasehold server: URL, credentials (a user token, or a service user's
//! client credentials whose access token is obtained and renewed here), an optional private CA,
//! and the seat protocol's calls. `checkout` (in seat.ts) builds on them.

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";

import { LeaseholdError, invalidArgument } from "./errors.js";
import { Answer, Transport, apiError, send, transport, withRetries } from "./http.js";
import { CheckoutOptions, Seat, checkoutWith } from "./seat.js";
import { Jwks, LeaseVerifier } from "./verify.js";

/** A session as the server describes it (`POST /v1/sessions`). */
export interface Session {
  id: string;
  license_id: string;
  username: string;
  kind: "interactive" | "service";
  device_id: string;
  instance_id: string;
  opened_at: string;
  expires_at: string;
  heartbeat_interval_secs: number;
  overdraft?: boolean;
  lease?: string;
}

/** The answer of a heartbeat. */
export interface Heartbeat {
  expires_at: string;
  lease?: string;
}

/** How the client authenticates. */
export type Credentials = { token: string } | { clientId: string; clientSecret: string };

export interface ClientOptions {
  /** PEM certificates trusted *instead of* the system's for `https://` (a private CA). */
  ca?: string | Buffer;
  /** A PEM file read for `ca`. */
  caFile?: string;
  /** Per-request timeout in milliseconds (default 30 s; a queued checkout adds its wait). */
  timeoutMs?: number;
}

interface CachedToken {
  accessToken: string;
  renewAt: number;
}

/** A client of one Leasehold server. Share one per process: it keeps connections alive. */
export class Client {
  readonly url: string;
  private readonly transport: Transport;
  private readonly credentials: Credentials;
  private token: Promise<CachedToken> | undefined;
  private verifier: Promise<LeaseVerifier> | undefined;

  constructor(url: string, credentials: Credentials, options: ClientOptions = {}) {
    if ("token" in credentials) {
      if (!credentials.token) throw invalidArgument("token is empty");
    } else if (!credentials.clientId || !credentials.clientSecret) {
      throw invalidArgument("clientId and clientSecret must both be given");
    }
    let ca = options.ca;
    if (options.caFile !== undefined) {
      try {
        ca = readFileSync(options.caFile);
      } catch (err) {
        throw new LeaseholdError("config", `cannot read the CA file ${options.caFile}: ${(err as Error).message}`);
      }
    }
    this.url = url;
    this.credentials = credentials;
    this.transport = transport(url, ca, options.timeoutMs ?? 30_000);
  }

  /** The bearer token to send: the user's, or a service user's access token (renewed a tenth
   * of its life early, at most a minute; `refused` forces a new one). */
  private async bearer(refused?: string): Promise<string> {
    if ("token" in this.credentials) return this.credentials.token;
    const cached = this.token;
    if (cached) {
      const token = await cached.catch(() => undefined);
      if (token && token.accessToken !== refused && Date.now() < token.renewAt) {
        return token.accessToken;
      }
    }
    const { clientId, clientSecret } = this.credentials;
    const fetching = (async () => {
      const fetchedAt = Date.now();
      const form = new URLSearchParams({
        grant_type: "client_credentials",
        client_id: clientId,
        client_secret: clientSecret,
      }).toString();
      const answer = await withRetries(
        () =>
          send(this.transport, "POST", "/v1/oauth/token", {
            "content-type": "application/x-www-form-urlencoded",
          }, form),
        true,
      );
      if (answer.status !== 200) throw apiError("POST /v1/oauth/token", answer);
      const body = answer.body as { access_token?: string; expires_in?: number; token_type?: string };
      if (typeof body?.access_token !== "string" || body.token_type?.toLowerCase() !== "bearer") {
        throw new LeaseholdError("decode", "POST /v1/oauth/token: not a bearer token answer");
      }
      const lifetimeMs = (body.expires_in ?? 0) * 1000;
      return {
        accessToken: body.access_token,
        renewAt: fetchedAt + lifetimeMs - Math.min(lifetimeMs / 10, 60_000),
      };
    })();
    this.token = fetching;
    return (await fetching).accessToken;
  }

  /** One call of the API, authenticated, retried as the policy says; a 401 with a service
   * user's cached access token gets one more try with a fresh token. */
  async call(
    method: string,
    path: string,
    body?: unknown,
    options: { timeoutMs?: number; retry?: boolean } = {},
  ): Promise<Answer> {
    const { timeoutMs, retry = true } = options;
    const idempotent = method !== "POST" || path.includes("/heartbeat");
    const attempt = async (refused?: string): Promise<[Answer, string]> => {
      const token = await this.bearer(refused);
      const headers: Record<string, string> = { authorization: `Bearer ${token}` };
      let text: string | undefined;
      if (body !== undefined) {
        headers["content-type"] = "application/json";
        text = JSON.stringify(body);
      }
      const t = timeoutMs ? { ...this.transport, timeoutMs } : this.transport;
      const answer = await send(t, method, path, headers, text);
      if (answer.status === 503) throw apiError(`${method} ${path}`, answer);
      return [answer, token];
    };
    const once = async (): Promise<Answer> => {
      const [answer, token] = await attempt();
      if (answer.status === 401 && !("token" in this.credentials)) {
        return (await attempt(token))[0];
      }
      return answer;
    };
    return retry ? withRetries(once, idempotent) : once();
  }

  /** Takes a seat of `licenseId` and keeps it alive in the background until it is released
   * or lost. Rejects with a `LeaseholdError` (`noSeatAvailable` when the license is full). */
  checkout(licenseId: string, options: CheckoutOptions = {}): Promise<Seat> {
    return checkoutWith(
      this,
      licenseId,
      options.deviceId || hostname() || "node",
      options.instanceId || `node-${process.pid}-${randomUUID().slice(0, 8)}`,
      options,
    );
  }

  /** `POST /v1/sessions`: opens a session (or answers this instance's live one). */
  async openSession(request: {
    license_id: string;
    device_id: string;
    instance_id: string;
    wait_secs?: number;
  }): Promise<Session> {
    // A queued open holds the request for up to `wait_secs`.
    const timeout = request.wait_secs ? this.transport.timeoutMs + request.wait_secs * 1000 : undefined;
    const answer = await this.call("POST", "/v1/sessions", request, { timeoutMs: timeout });
    if (answer.status !== 200 && answer.status !== 201) throw apiError("POST /v1/sessions", answer);
    return answer.body as Session;
  }

  /** `POST /v1/sessions/{id}/heartbeat`, with a re-signed lease when `lease` is true. Tried
   * once (a seat's heartbeat loop retries on its own schedule) within `timeoutMs`. */
  async heartbeat(sessionId: string, lease: boolean, timeoutMs?: number): Promise<Heartbeat> {
    const path = `/v1/sessions/${encodeURIComponent(sessionId)}/heartbeat${lease ? "?lease=true" : ""}`;
    const answer = await this.call("POST", path, undefined, { timeoutMs, retry: false });
    if (answer.status !== 200) throw apiError(`POST /v1/sessions/{id}/heartbeat`, answer);
    return answer.body as Heartbeat;
  }

  /** `DELETE /v1/sessions/{id}`: closes a session (204). */
  async closeSession(sessionId: string): Promise<void> {
    const answer = await this.call("DELETE", `/v1/sessions/${encodeURIComponent(sessionId)}`);
    if (answer.status !== 204) throw apiError("DELETE /v1/sessions/{id}", answer);
  }

  /** The server's lease-signing keys (`/.well-known/jwks.json`): save them to verify leases
   * offline with `LeaseVerifier.fromJwks`. */
  async jwks(): Promise<Jwks> {
    const answer = await withRetries(() => send(this.transport, "GET", "/.well-known/jwks.json", {}), true);
    if (answer.status !== 200) throw apiError("GET /.well-known/jwks.json", answer);
    return answer.body as Jwks;
  }

  /** A verifier of the server's key set, fetched once and cached. */
  leaseVerifier(): Promise<LeaseVerifier> {
    if (!this.verifier) {
      this.verifier = this.jwks().then((jwks) => LeaseVerifier.fromJwks(jwks));
      this.verifier.catch(() => (this.verifier = undefined));
    }
    return this.verifier;
  }

  /** Closes idle connections (open seats keep working; they reconnect). */
  close(): void {
    this.transport.agent.destroy();
  }
}
