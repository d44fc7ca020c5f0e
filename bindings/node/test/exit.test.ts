//! Release on exit, in child processes holding a seat: a program that ends by itself gives its
//! seat back, and so does one stopped by SIGTERM (which then dies of the signal, as it would
//! have).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Server, Tenant } from "./server.js";

let server: Server;
before(async () => {
  server = await Server.start();
});
after(async () => {
  await server.stop();
});

const HOLDER = join(dirname(fileURLToPath(import.meta.url)), "holder.js");

function hold(tenant: Tenant, token: string, ms: number) {
  const child = spawn(process.execPath, [HOLDER, String(ms)], {
    env: { ...process.env, LEASEHOLD_URL: server.url, LEASEHOLD_TOKEN: token, LEASEHOLD_LICENSE_ID: tenant.licenseId },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let output = "";
  const held = new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("held ")) resolve();
    });
    child.once("exit", () => reject(new Error(`exited before holding: ${output}`)));
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  return { child, held, exited, output: () => output };
}

test("a program that ends by itself gives its seat back", async () => {
  const tenant = await server.tenant();
  const run = hold(tenant, await tenant.userToken("bob"), 1_000);
  await run.held;
  assert.equal(await tenant.inUse(), 1);
  const { code } = await run.exited;
  assert.equal(code, 0);
  assert.match(run.output(), /done/);
  assert.equal(await tenant.inUse(), 0);
});

test("a program stopped by SIGTERM gives its seat back and dies of the signal", async () => {
  const tenant = await server.tenant();
  const run = hold(tenant, await tenant.userToken("bob"), 60_000);
  await run.held;
  assert.equal(await tenant.inUse(), 1);
  run.child.kill("SIGTERM");
  const { code, signal } = await run.exited;
  assert.deepEqual([code, signal], [null, "SIGTERM"]);
  assert.equal(await tenant.inUse(), 0);
});
