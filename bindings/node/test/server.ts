//! A real `leasehold serve` for the tests (the binary from `LEASEHOLD_BIN`, default the
//! workspace's debug build) and tenants made through its HTTP API.

import { ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

export const ROOT = "node-tests-root-token";
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");

function binary(): string {
  if (process.env.LEASEHOLD_BIN) return process.env.LEASEHOLD_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(REPO, "target");
  return join(target, "debug", "leasehold");
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => resolvePort(typeof address === "object" && address ? address.port : 0));
    });
  });
}

export class Server {
  private constructor(
    readonly url: string,
    private readonly process: ChildProcess,
    private readonly dataDir: string,
    private readonly ca?: Buffer,
  ) {}

  /** Starts a server; with `tls`, over HTTPS with that certificate and key (PEM files). */
  static async start(tls?: { cert: string; key: string; ca: string }): Promise<Server> {
    const bin = binary();
    if (!existsSync(bin)) {
      throw new Error(`no leasehold binary at ${bin}: build it (cargo build -p leasehold) or set LEASEHOLD_BIN`);
    }
    const port = await freePort();
    const dataDir = mkdtempSync(join(tmpdir(), "leasehold-node-"));
    const args = ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir];
    if (tls) args.push("--tls-cert", tls.cert, "--tls-key", tls.key);
    const child = spawn(bin, args, {
      env: { ...process.env, LEASEHOLD_ADMIN_TOKEN: ROOT, LEASEHOLD_LOG: "warn" },
      stdio: ["ignore", "ignore", "inherit"],
    });
    const url = `${tls ? "https" : "http"}://127.0.0.1:${port}`;
    const deadline = Date.now() + 30_000;
    for (;;) {
      const check = [bin, "healthcheck", "--url", url, ...(tls ? ["--ca-file", tls.ca] : [])];
      if (spawnSync(check[0]!, check.slice(1), { stdio: "ignore" }).status === 0) break;
      if (child.exitCode !== null || Date.now() > deadline) throw new Error("the leasehold server did not start");
      await sleep(50);
    }
    return new Server(url, child, dataDir, tls ? readFileSync(tls.ca) : undefined);
  }

  /** Kills the server at once (no graceful stop): clients see it unreachable. */
  kill(): void {
    this.process.kill("SIGKILL");
  }

  async stop(): Promise<void> {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      const exited = new Promise((done) => this.process.once("exit", done));
      this.process.kill("SIGTERM");
      await exited;
    }
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  async call(method: string, path: string, token: string, body?: unknown): Promise<{ status: number; body: any }> {
    const url = new URL(path, this.url);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    if (payload !== undefined) headers["content-type"] = "application/json";
    const lib = url.protocol === "https:" ? https : http;
    return new Promise((resolveAnswer, reject) => {
      const request = lib.request(url, { method, headers, ca: this.ca }, (response) => {
        let text = "";
        response.on("data", (chunk: Buffer) => (text += chunk.toString()));
        response.on("end", () => resolveAnswer({ status: response.statusCode ?? 0, body: text ? JSON.parse(text) : undefined }));
      });
      request.on("error", reject);
      request.end(payload);
    });
  }

  /** An account with a license of these terms (default: 1 seat). */
  async tenant(terms: Record<string, unknown> = {}): Promise<Tenant> {
    const account = await this.call("POST", "/v1/accounts", ROOT, { name: "Acme" });
    if (account.status !== 201) throw new Error(JSON.stringify(account));
    const license = await this.call("POST", "/v1/licenses", account.body.admin_token, {
      account_id: account.body.id,
      product: "cad",
      model: "concurrent_sessions",
      seats: 1,
      ...terms,
    });
    if (license.status !== 201) throw new Error(JSON.stringify(license));
    return new Tenant(this, account.body.id, account.body.admin_token, license.body.id);
  }
}

export class Tenant {
  constructor(
    readonly server: Server,
    readonly accountId: string,
    readonly adminToken: string,
    readonly licenseId: string,
  ) {}

  async userToken(username: string): Promise<string> {
    await this.server.call("PUT", `/v1/accounts/${this.accountId}/users/${username}`, this.adminToken, {
      kind: "interactive",
    });
    const token = await this.server.call("POST", `/v1/accounts/${this.accountId}/users/${username}/tokens`, this.adminToken);
    if (token.status !== 201) throw new Error(JSON.stringify(token));
    return token.body.token;
  }

  async serviceUser(username: string): Promise<{ clientId: string; clientSecret: string }> {
    const user = await this.server.call("PUT", `/v1/accounts/${this.accountId}/users/${username}`, this.adminToken, {
      kind: "service",
    });
    if (user.status !== 201) throw new Error(JSON.stringify(user));
    return { clientId: user.body.client_id, clientSecret: user.body.client_secret };
  }

  async inUse(): Promise<number> {
    const license = await this.server.call("GET", `/v1/licenses/${this.licenseId}`, this.adminToken);
    return license.body.usage.in_use;
  }

  async sessions(): Promise<any[]> {
    return (await this.server.call("GET", `/v1/licenses/${this.licenseId}/sessions`, this.adminToken)).body.sessions;
  }

  async revoke(sessionId: string): Promise<void> {
    const answer = await this.server.call("DELETE", `/v1/sessions/${sessionId}`, this.adminToken);
    if (answer.status !== 204) throw new Error(JSON.stringify(answer));
  }
}

/** Polls `check` until it holds or `timeoutMs` has passed. */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await sleep(50);
  }
  return check();
}
