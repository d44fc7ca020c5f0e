//! Offline lease verification: a lease is a compact JWT signed with the server's Ed25519 key
//! (`alg: "EdDSA"`, RFC 8037); a verifier built from the server's key set (`/.well-known/jwks.json`,
//! saved by the application) checks the signature and the expiry with no network, as the Rust
//! SDK does.

import { KeyObject, createPublicKey, verify } from "node:crypto";

import { LeaseholdError } from "./errors.js";

/** One key of `/.well-known/jwks.json`. */
export interface Jwk {
  kty: string;
  crv: string;
  x: string;
  kid: string;
  alg?: string;
  use?: string;
}

/** A key set, as `/.well-known/jwks.json` serves it. */
export interface Jwks {
  keys: Jwk[];
}

/** The claims of a verified lease. */
export interface LeaseClaims {
  /** Who signed it. */
  iss: string;
  /** The username holding the session. */
  sub: string;
  /** The session id. */
  sid: string;
  /** The license id. */
  lic: string;
  kind: "interactive" | "service";
  device_id: string;
  instance_id: string;
  /** Issued at, seconds since the Unix epoch. */
  iat: number;
  /** Expiry, seconds since the Unix epoch. */
  exp: number;
}

/** Leases longer than this are refused before any decoding. */
const MAX_LEASE_LEN = 8 * 1024;

function invalid(why: string): LeaseholdError {
  return new LeaseholdError("lease_invalid", `invalid lease: ${why}`);
}

function segment(text: string, what: string): Buffer {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw invalid(`the ${what} is not base64url`);
  return Buffer.from(text, "base64url");
}

function json(bytes: Buffer, what: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(bytes.toString("utf8"));
    if (value && typeof value === "object") return value as Record<string, unknown>;
  } catch {
    // below
  }
  throw invalid(`the ${what} is not a JSON object`);
}

/** Verifies leases against a set of Ed25519 public keys, offline. */
export class LeaseVerifier {
  private constructor(
    private readonly keys: Map<string, KeyObject>,
    private readonly leewaySecs: number,
  ) {}

  /** A verifier of the Ed25519 keys of `jwks` (other keys are skipped); `leewaySecs` accepts
   * leases that long past their expiry. Throws a `decode` error when no usable key is left. */
  static fromJwks(jwks: Jwks | string, leewaySecs = 0): LeaseVerifier {
    let set: Jwks;
    try {
      set = typeof jwks === "string" ? (JSON.parse(jwks) as Jwks) : jwks;
    } catch (err) {
      throw new LeaseholdError("decode", `the JWKS is not a key set: ${(err as Error).message}`);
    }
    if (!set || !Array.isArray(set.keys)) throw new LeaseholdError("decode", "the JWKS has no keys array");
    const keys = new Map<string, KeyObject>();
    for (const jwk of set.keys) {
      if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519") continue;
      try {
        keys.set(jwk.kid, createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: jwk.x }, format: "jwk" }));
      } catch (err) {
        throw new LeaseholdError("decode", `key ${jwk.kid} is not an Ed25519 key: ${(err as Error).message}`);
      }
    }
    if (keys.size === 0) throw new LeaseholdError("decode", "the JWKS holds no Ed25519 key");
    return new LeaseVerifier(keys, leewaySecs);
  }

  /** Checks `lease` (a compact JWT): its signature by a key of the set, and its expiry at
   * `nowUnixSecs` (default: this machine's clock). Throws a `lease_invalid` error that says
   * why; answers the claims. */
  verify(lease: string, nowUnixSecs: number = Math.floor(Date.now() / 1000)): LeaseClaims {
    if (lease.length > MAX_LEASE_LEN) throw invalid(`longer than ${MAX_LEASE_LEN} bytes`);
    const parts = lease.split(".");
    if (parts.length !== 3) throw invalid("not a compact JWT (three dot-separated segments)");
    const [headerText, payloadText, signatureText] = parts as [string, string, string];
    const header = json(segment(headerText, "header"), "header");
    if (header.alg !== "EdDSA") throw invalid(`algorithm ${JSON.stringify(header.alg)} is not EdDSA`);
    if (typeof header.typ === "string" && header.typ.toUpperCase() !== "JWT") {
      throw invalid(`type ${JSON.stringify(header.typ)} is not JWT`);
    }
    if (typeof header.kid !== "string") throw invalid("header has no kid");
    const key = this.keys.get(header.kid);
    if (!key) throw invalid(`unknown key id ${JSON.stringify(header.kid)}`);
    const signature = segment(signatureText, "signature");
    const signed = Buffer.from(`${headerText}.${payloadText}`, "ascii");
    if (signature.length !== 64 || !verify(null, signed, key, signature)) {
      throw invalid("bad signature");
    }
    const claims = json(segment(payloadText, "payload"), "payload") as unknown as LeaseClaims;
    for (const field of ["iss", "sub", "sid", "lic", "kind", "device_id", "instance_id"] as const) {
      if (typeof claims[field] !== "string") throw invalid(`claim ${field} is missing`);
    }
    if (typeof claims.exp !== "number" || typeof claims.iat !== "number") {
      throw invalid("claims iat and exp are missing");
    }
    if (nowUnixSecs >= claims.exp + this.leewaySecs) {
      throw invalid(`expired at ${claims.exp} (now ${nowUnixSecs})`);
    }
    return claims;
  }
}
