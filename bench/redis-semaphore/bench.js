// Peer reference of the Leasehold benchmark: what a vendor would build by hand, a counting
// semaphore in Redis 7 (AOF, appendfsync everysec) through the npm library redis-semaphore.
//
//   node bench.js --scenario checkout|refresh|contended --concurrency 64 --duration 10 \
//       [--warmup 2] [--seats 4] [--redis-url redis://127.0.0.1:6390] [--procs 1] [--rate R]
//
// checkout:  each holder loops acquire + release on a semaphore with free slots (a cycle = 2 ops)
// refresh:   each holder acquires once, then refreshes its slot as fast as it can (the heartbeat)
// contended: holders race for --seats slots with one attempt each; a refusal is an answer
//
// Prints one JSON line with the same figures as `leasehold bench`: ops/s, requests/s, latency
// quantiles (per Redis round trip of the library call), errors, denials, CPU per op.
'use strict';

const { fork } = require('node:child_process');
const Redis = require('ioredis');
const { Semaphore } = require('redis-semaphore');

function parseArgs(argv) {
  const out = {
    scenario: 'checkout', concurrency: 64, duration: 10, warmup: 2, seats: 4,
    redisUrl: 'redis://127.0.0.1:6390', procs: 1, rate: 0,
  };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in out)) throw new Error(`unknown option ${argv[i]}`);
    out[key] = typeof out[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return out;
}

// Log-linear histogram over nanoseconds, 64 buckets per power of two (as the Rust bench).
const SUB_BITS = 6;
const SUB = 1 << SUB_BITS;
class Hist {
  constructor() { this.counts = new Float64Array(64 * SUB); this.count = 0; this.max = 0; }
  static index(v) {
    if (v < SUB) return v;
    const msb = Math.floor(Math.log2(v));
    const shift = msb - SUB_BITS;
    const sub = Math.floor(v / 2 ** shift) - SUB;
    return ((msb - SUB_BITS + 1) * SUB) + sub;
  }
  static value(idx) {
    const bucket = Math.floor(idx / SUB);
    const sub = idx % SUB;
    if (bucket === 0) return sub;
    const msb = bucket - 1 + SUB_BITS;
    const shift = msb - SUB_BITS;
    return 2 ** msb + sub * 2 ** shift + 2 ** shift / 2;
  }
  record(ns) {
    const v = Math.max(0, Math.round(ns));
    this.counts[Math.min(Hist.index(v), this.counts.length - 1)] += 1;
    this.count += 1;
    if (v > this.max) this.max = v;
  }
  merge(o) {
    for (let i = 0; i < this.counts.length; i++) this.counts[i] += o.counts[i];
    this.count += o.count;
    this.max = Math.max(this.max, o.max);
  }
  quantileMs(q) {
    if (this.count === 0) return 0;
    const rank = Math.min(this.count, Math.max(1, Math.ceil(q * this.count)));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(Hist.value(i), this.max) / 1e6;
    }
    return this.max / 1e6;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function worker(opts) {
  const redis = new Redis(opts.redisUrl, { enableAutoPipelining: false, maxRetriesPerRequest: 1 });
  const key = `bench-${opts.scenario}-${opts.runId}`;
  const limit = opts.scenario === 'contended' ? opts.seats : opts.concurrency * 4;
  const lockOpts = {
    lockTimeout: 60_000,
    refreshInterval: 0, // the loops refresh explicitly
    acquireAttemptsLimit: opts.scenario === 'contended' ? 1 : Number.POSITIVE_INFINITY,
    retryInterval: 1,
    acquireTimeout: 10_000,
  };
  const hist = new Hist();
  let ops = 0; let requests = 0; let errors = 0; let denials = 0; let firstError = null;
  const t0 = Date.now();
  const measureFrom = t0 + opts.warmup * 1000;
  const until = measureFrom + opts.duration * 1000;
  const interval = opts.rate > 0 ? (opts.holders / opts.rate) * 1000 : 0;

  async function timed(fn) {
    const s = process.hrtime.bigint();
    const r = await fn();
    const took = Number(process.hrtime.bigint() - s);
    return [r, took];
  }

  async function holder(h) {
    let next = t0 + (interval * h) / opts.holders;
    let held = null;
    if (opts.scenario === 'refresh') {
      held = new Semaphore(redis, key, limit, lockOpts);
      await held.acquire();
    }
    for (;;) {
      if (interval > 0) {
        const wait = next - Date.now();
        if (wait > 0) await sleep(wait);
        next += interval;
      }
      const began = Date.now();
      if (began >= until) break;
      const record = began >= measureFrom;
      try {
        if (opts.scenario === 'refresh') {
          // The library's own refresh (what its refresh timer calls).
          const [ok, took] = await timed(() => held._refresh());
          if (!ok) throw new Error('refresh lost the slot');
          if (record) { hist.record(took); requests += 1; ops += 1; }
        } else {
          const sem = new Semaphore(redis, key, limit, lockOpts);
          const [got, t1] = await timed(() => sem.tryAcquire());
          if (record) { hist.record(t1); requests += 1; }
          if (!got) {
            if (opts.scenario !== 'contended') throw new Error('no slot on a free semaphore');
            if (record) { denials += 1; ops += 1; }
            continue;
          }
          const [, t2] = await timed(() => sem.release());
          if (record) { hist.record(t2); requests += 1; ops += 1; }
        }
      } catch (e) {
        if (record) { errors += 1; if (!firstError) firstError = String(e); }
        await sleep(5);
      }
    }
    if (held) await held.release();
  }

  const cpu0 = process.cpuUsage();
  await Promise.all(Array.from({ length: opts.holders }, (_, h) => holder(h)));
  const cpu = process.cpuUsage(cpu0);
  await redis.quit();
  return {
    ops, requests, errors, denials, firstError,
    hist: { counts: Array.from(hist.counts), count: hist.count, max: hist.max },
    cpuSecs: (cpu.user + cpu.system) / 1e6,
  };
}

function report(opts, parts) {
  const hist = new Hist();
  let ops = 0; let requests = 0; let errors = 0; let denials = 0; let cpu = 0; let firstError = null;
  for (const p of parts) {
    const h = new Hist();
    h.counts = Float64Array.from(p.hist.counts); h.count = p.hist.count; h.max = p.hist.max;
    hist.merge(h);
    ops += p.ops; requests += p.requests; errors += p.errors; denials += p.denials; cpu += p.cpuSecs;
    firstError = firstError || p.firstError;
  }
  return {
    scenario: opts.scenario, concurrency: opts.concurrency, procs: opts.procs, secs: opts.duration,
    ops, requests, errors, denials, first_error: firstError,
    ops_per_sec: ops / opts.duration, requests_per_sec: requests / opts.duration,
    p50_ms: hist.quantileMs(0.5), p99_ms: hist.quantileMs(0.99), max_ms: hist.max / 1e6,
    cpu_us_per_op: (cpu * 1e6) / Math.max(1, ops),
    target_rate: opts.rate || null,
  };
}

async function main() {
  if (process.env.BENCH_WORKER) {
    const opts = JSON.parse(process.env.BENCH_WORKER);
    process.send(await worker(opts));
    return;
  }
  const opts = parseArgs(process.argv);
  if (!['checkout', 'refresh', 'contended'].includes(opts.scenario)) {
    throw new Error(`unknown scenario ${opts.scenario}`);
  }
  opts.runId = `${process.pid}-${Date.now()}`;
  const procs = Math.max(1, Math.min(opts.procs, opts.concurrency));
  const parts = await Promise.all(Array.from({ length: procs }, (_, i) => {
    const holders = Math.floor(opts.concurrency / procs) + (i < opts.concurrency % procs ? 1 : 0);
    const rate = opts.rate ? (opts.rate * holders) / opts.concurrency : 0;
    const w = { ...opts, holders, rate };
    if (procs === 1) return worker(w);
    return new Promise((resolve, reject) => {
      const child = fork(__filename, [], { env: { ...process.env, BENCH_WORKER: JSON.stringify(w) } });
      child.once('message', resolve);
      child.once('error', reject);
      child.once('exit', (code) => { if (code) reject(new Error(`worker exited ${code}`)); });
    });
  }));
  console.log(JSON.stringify(report(opts, parts)));
}

main().catch((e) => { console.error(e); process.exit(1); });
