//! The package against a real server: a seat kept past the inactivity timeout and returned, a
//! revoke and an unreachable server seen as lost, refusals with the server's codes, a queued
//! checkout, concurrent checkouts through one client, service users, offline leases.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { Client, LeaseVerifier, LeaseholdError, Seat, checkout, describeLostReason, withSeat } from "../src/index.js";
import { Server, eventually, freePort } from "./server.js";

let server: Server;
before(async () => {
  server = await Server.start();
});
after(async () => {
  await server.stop();
});

async function refusal(promise: Promise<unknown>): Promise<LeaseholdError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof LeaseholdError, `not a LeaseholdError: ${err}`);
    return err;
  }
  assert.fail("expected a LeaseholdError");
}

test("a seat is kept past the inactivity timeout by the heartbeats and released", async () => {
  // Arrange: sessions end after 3 s without a heartbeat.
  const tenant = await server.tenant({ inactivity_timeout_secs: 3 });
  const token = await tenant.userToken("bob");

  // Act
  const seat = await checkout(tenant.licenseId, { url: server.url, token, deviceId: "pc-1", instanceId: "node-1" });
  const events: string[] = [];
  seat.on("released", () => events.push("released"));
  await sleep(4_000);

  // Assert: still held, by this session...
  assert.equal(seat.state, "active");
  assert.equal(await tenant.inUse(), 1);
  const [live] = await tenant.sessions();
  assert.equal(live.id, seat.id);
  assert.deepEqual([live.device_id, live.instance_id], ["pc-1", "node-1"]);
  assert.ok(seat.expiresAt.getTime() > Date.now());
  // ...and returned.
  await seat.release();
  assert.equal(seat.state, "released");
  assert.deepEqual(events, ["released"]);
  assert.ok(seat.signal.aborted);
  assert.equal(await tenant.inUse(), 0);
  await seat.release(); // again: no error
});

test("a revoke is told by the lost event, lost() and the signal", async () => {
  const tenant = await server.tenant({ inactivity_timeout_secs: 3 });
  const seat = await checkout(tenant.licenseId, { url: server.url, token: await tenant.userToken("bob") });
  const told = new Promise((resolve) => seat.once("lost", resolve));

  await tenant.revoke(seat.id);

  const reason = await seat.lost();
  assert.deepEqual(reason, { kind: "ended", reason: "revoked" });
  assert.deepEqual(await told, reason);
  assert.equal(describeLostReason(reason), "session ended (revoked)");
  assert.equal(seat.state, "lost");
  assert.ok(seat.signal.aborted);
  assert.deepEqual(seat.signal.reason, reason);
  // Releasing a lost seat succeeds; it stays lost.
  await seat.release();
  assert.equal(seat.state, "lost");
});

test("a server that stays unreachable until the expiry loses the seat as expired", async () => {
  // Arrange: a server of its own, killed while the seat is held.
  const own = await Server.start();
  try {
    const tenant = await own.tenant({ inactivity_timeout_secs: 2 });
    const seat = await checkout(tenant.licenseId, { url: own.url, token: await tenant.userToken("bob") });

    // Act
    own.kill();

    // Assert
    const started = Date.now();
    assert.deepEqual(await seat.lost(), { kind: "expired" });
    assert.ok(Date.now() - started < 5_000);
  } finally {
    await own.stop();
  }
});

test("a full license refuses with no_seat_available and the server's message", async () => {
  const tenant = await server.tenant();
  const client = new Client(server.url, { token: await tenant.userToken("bob") });
  const seat = await client.checkout(tenant.licenseId);
  const err = await refusal(client.checkout(tenant.licenseId));
  assert.equal(err.kind, "no_seat_available");
  assert.ok(err.noSeatAvailable);
  assert.deepEqual([err.code, err.status], ["no_seat_available", 409]);
  assert.match(err.message, /the license's only seat is in use/);
  await seat.release();
  client.close();
});

test("refusals and mistakes carry a stable kind and the server's code", async () => {
  const tenant = await server.tenant();
  const token = await tenant.userToken("bob");
  let err = await refusal(checkout("lic_unknown", { url: server.url, token }));
  assert.deepEqual([err.kind, err.code, err.status], ["api", "not_found", 404]);
  err = await refusal(checkout(tenant.licenseId, { url: server.url, token: "not-a-token" }));
  assert.deepEqual([err.kind, err.code, err.status], ["api", "unauthorized", 401]);
  err = await refusal(checkout(tenant.licenseId, { url: `http://127.0.0.1:${await freePort()}`, token }));
  assert.deepEqual([err.kind, err.code, err.status], ["transport", undefined, 0]);
  assert.throws(() => new Client("ftp://x", { token }), { kind: "config", message: /not an http\(s\) URL/ });
  assert.throws(() => new Client("https://localhost", { token }, { caFile: "/nonexistent/ca.pem" }), {
    kind: "config",
    message: /\/nonexistent\/ca.pem/,
  });
  assert.throws(() => new Client(server.url, { token: "" }), { kind: "invalid_argument" });
  const saved = { ...process.env };
  try {
    delete process.env.LEASEHOLD_TOKEN;
    delete process.env.LEASEHOLD_CLIENT_ID;
    await assert.rejects(checkout(tenant.licenseId, { url: server.url }), { kind: "invalid_argument", message: /no credentials/ });
    // ...and from the environment.
    process.env.LEASEHOLD_URL = server.url;
    process.env.LEASEHOLD_TOKEN = token;
    const seat = await checkout(tenant.licenseId);
    await seat.release();
  } finally {
    process.env = saved;
  }
  await assert.rejects(checkout(tenant.licenseId, { url: server.url, token, waitSecs: -1 }), { kind: "invalid_argument" });
  await assert.rejects(checkout(tenant.licenseId, { url: server.url, token, heartbeatIntervalMs: 0 }), {
    kind: "invalid_argument",
  });
});

test("withSeat and await using give the seat back, even when the work throws", async () => {
  const tenant = await server.tenant();
  const token = await tenant.userToken("bob");
  const answer = await withSeat(tenant.licenseId, { url: server.url, token }, async (seat) => {
    assert.equal(await tenant.inUse(), 1);
    return seat.state;
  });
  assert.equal(answer, "active");
  assert.equal(await tenant.inUse(), 0);
  await assert.rejects(
    withSeat(tenant.licenseId, { url: server.url, token }, async () => {
      throw new Error("boom");
    }),
    /boom/,
  );
  assert.equal(await tenant.inUse(), 0);
  {
    await using seat = await checkout(tenant.licenseId, { url: server.url, token });
    assert.equal(seat.state, "active");
    assert.equal(await tenant.inUse(), 1);
  }
  assert.equal(await tenant.inUse(), 0);
});

test("concurrent checkouts through one client take exactly the free seats", async () => {
  const tenant = await server.tenant({ seats: 3 });
  const client = new Client(server.url, { token: await tenant.userToken("bob") });
  const outcomes = await Promise.allSettled(
    Array.from({ length: 8 }, (_, i) => client.checkout(tenant.licenseId, { instanceId: `app-${i}` })),
  );
  const seats = outcomes.filter((o): o is PromiseFulfilledResult<Seat> => o.status === "fulfilled").map((o) => o.value);
  const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === "rejected").map((o) => o.reason);
  assert.equal(seats.length, 3);
  assert.equal(refused.length, 5);
  for (const err of refused) assert.equal((err as LeaseholdError).kind, "no_seat_available");
  assert.equal(await tenant.inUse(), 3);
  await Promise.all(seats.map((seat) => seat.release()));
  assert.equal(await tenant.inUse(), 0);
  client.close();
});

test("a queued checkout waits for the seat", async () => {
  const tenant = await server.tenant({ on_full: "queue" });
  const client = new Client(server.url, { token: await tenant.userToken("bob") });
  const first = await client.checkout(tenant.licenseId, { instanceId: "first" });
  setTimeout(() => void first.release(), 1_000);
  const started = Date.now();
  const second = await client.checkout(tenant.licenseId, { instanceId: "second", waitSecs: 20 });
  assert.ok(Date.now() - started >= 900);
  assert.equal(second.state, "active");
  // Without a wait a full queueing license refuses at once.
  const err = await refusal(client.checkout(tenant.licenseId, { instanceId: "third" }));
  assert.equal(err.kind, "no_seat_available");
  await second.release();
  client.close();
});

test("a service user checks out with client credentials and verified leases", async () => {
  const tenant = await server.tenant();
  const { clientId, clientSecret } = await tenant.serviceUser("erp");
  const seat = await checkout(tenant.licenseId, {
    url: server.url,
    clientId,
    clientSecret,
    heartbeatIntervalMs: 200,
    verifyLease: true,
  });
  const first = seat.expiresAt.getTime();
  assert.ok(await eventually(() => seat.expiresAt.getTime() > first, 5_000));
  const [live] = await tenant.sessions();
  assert.equal(live.kind, "service");
  await seat.release();
  const err = await refusal(checkout(tenant.licenseId, { url: server.url, clientId, clientSecret: "wrong" }));
  assert.deepEqual([err.kind, err.status], ["api", 401]);
});

test("leases verify offline against a saved key set, and tampering is caught", async () => {
  const tenant = await server.tenant();
  const client = new Client(server.url, { token: await tenant.userToken("bob") });
  const file = join(mkdtempSync(join(tmpdir(), "jwks-")), "jwks.json");
  writeFileSync(file, JSON.stringify(await client.jwks()));
  const seat = await client.checkout(tenant.licenseId, { deviceId: "pc-9", instanceId: "verify" });

  const { readFileSync } = await import("node:fs");
  const verifier = LeaseVerifier.fromJwks(readFileSync(file, "utf8"));
  const lease = seat.lease!;
  const claims = verifier.verify(lease);
  assert.deepEqual(
    [claims.sub, claims.sid, claims.lic, claims.kind, claims.device_id, claims.instance_id],
    ["bob", seat.id, tenant.licenseId, "interactive", "pc-9", "verify"],
  );
  const dot = lease.indexOf(".") + 5;
  const tampered = lease.slice(0, dot) + (lease[dot] === "A" ? "B" : "A") + lease.slice(dot + 1);
  assert.throws(() => verifier.verify(tampered), { kind: "lease_invalid" });
  assert.throws(() => verifier.verify(lease, claims.exp + 3600), { kind: "lease_invalid", message: /expired/ });
  assert.equal(LeaseVerifier.fromJwks(readFileSync(file, "utf8"), 7200).verify(lease, claims.exp + 3600).sid, seat.id);
  assert.throws(() => LeaseVerifier.fromJwks('{"keys": []}'), { kind: "decode" });
  assert.throws(() => LeaseVerifier.fromJwks("nope"), { kind: "decode" });
  await seat.release();
  client.close();
});

test("over HTTPS the client trusts only the given CA", async () => {
  // Arrange: a CA and a server certificate for 127.0.0.1, made with openssl.
  const dir = mkdtempSync(join(tmpdir(), "tls-"));
  const run = (args: string[]) => {
    const result = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
    assert.equal(result.status, 0, `openssl ${args.join(" ")}: ${result.error ?? result.stderr}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  run(["req", "-x509", ...ec, "-days", "1", "-subj", "/CN=leasehold test CA", "-keyout", "ca.key", "-out", "ca.pem"]);
  run(["req", ...ec, "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "cert.csr"]);
  writeFileSync(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1\n");
  run(["x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
    "-extfile", "san.ext", "-out", "cert.pem"]);
  const ca = join(dir, "ca.pem");
  const tls = await Server.start({ cert: join(dir, "cert.pem"), key: join(dir, "key.pem"), ca });
  try {
    const tenant = await tls.tenant();
    const token = await tenant.userToken("bob");

    // Act + Assert: with the CA the seat is taken; with the system's roots, a transport error.
    const seat = await checkout(tenant.licenseId, { url: tls.url, token, caFile: ca });
    assert.equal(seat.state, "active");
    await seat.release();
    const err = await refusal(checkout(tenant.licenseId, { url: tls.url, token }));
    assert.equal(err.kind, "transport");
  } finally {
    await tls.stop();
  }
});
