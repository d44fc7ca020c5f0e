#!/usr/bin/env python3
"""Leasehold fault run: the embedded server under kill -9, a full disk and wall-clock steps.

An independent checker: it drives `leasehold serve` over HTTP with its own client code (Python's
standard library only), keeps the full history of what every request was answered, and judges
the server by that history and by the database file it leaves behind, read with Python's own
sqlite3 module. It never asks the server whether it was right.

    sudo python3 faults/faultrun.py --bin target/release/leasehold [--scenario all|kill9|diskfull|clock]

Needs root for the disk-full scenario (it mounts a small tmpfs) and Debian's `faketime` package
for the clock scenario. Prints counts per scenario and a JSON summary (`--json FILE`). Exits 1
when an invariant was broken: an acknowledged open lost, an acknowledged logout resurrected, a
license above its seats, a failed restart, a health check that lied, a session ended by a step.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = "fault-run-root-token-0123456789abcdef"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------------


class Server:
    """`leasehold serve` on a data folder; restartable, killable."""

    def __init__(self, binary, data_dir, env=None):
        self.binary = binary
        self.data_dir = data_dir
        self.port = free_port()
        self.env = dict(os.environ, LEASEHOLD_ADMIN_TOKEN=ROOT, LEASEHOLD_LOG="warn")
        self.env.update(env or {})
        self.proc = None
        self.log = open(os.path.join(tempfile.gettempdir(), f"faultrun-{self.port}.log"), "ab")

    @property
    def host(self):
        return ("127.0.0.1", self.port)

    def start(self, timeout=30.0):
        """Starts the server; answers the seconds until it was healthy, or None."""
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                return None
            status, _ = request(self.host, "GET", "/livez", None, None, timeout=1)
            if status == 404:  # a server from before /livez
                status, _ = request(self.host, "GET", "/healthz", None, None, timeout=1)
            if status == 200:
                return time.monotonic() - started
            time.sleep(0.02)
        return None

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

_local = threading.local()


def request(host, method, path, token, body, timeout=10):
    """One request on this thread's keep-alive connection: (status, json) or (None, error).
    A kept-alive connection the server closed meanwhile is retried once on a new one (every
    call of the protocol used here is idempotent: an open names its client instance)."""
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    reused = host in conns
    status, payload = _request_once(conns, host, method, path, token, body, timeout)
    if status is None and reused:
        status, payload = _request_once(conns, host, method, path, token, body, timeout)
    return status, payload


def _request_once(conns, host, method, path, token, body, timeout):
    conn = conns.get(host)
    if conn is None:
        conn = conns[host] = http.client.HTTPConnection(host[0], host[1], timeout=timeout)
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        return resp.status, payload
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        conns.pop(host, None)
        return None, str(e)


def code(payload):
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return payload["error"].get("code")
    return None


# ---------------------------------------------------------------------------------------------
# Tenants and load
# ---------------------------------------------------------------------------------------------


def setup(server, seats, users, inactivity=60):
    """An account, a license of `seats` seats and `users` users with tokens."""
    st, acc = request(server.host, "POST", "/v1/accounts", ROOT, {"name": "Faults"})
    assert st == 201, (st, acc)
    admin = acc["admin_token"]
    st, lic = request(
        server.host,
        "POST",
        "/v1/licenses",
        admin,
        {
            "account_id": acc["id"],
            "product": "cad",
            "model": "concurrent_sessions",
            "seats": seats,
            "inactivity_timeout_secs": inactivity,
        },
    )
    assert st == 201, (st, lic)
    tokens = []
    for i in range(users):
        name = f"u{i}"
        st, _ = request(server.host, "PUT", f"/v1/accounts/{acc['id']}/users/{name}", admin, {"kind": "interactive"})
        assert st in (200, 201), (st, _)
        st, tok = request(server.host, "POST", f"/v1/accounts/{acc['id']}/users/{name}/tokens", admin, {})
        assert st == 201, st
        tokens.append(tok["token"])
    return {"account": acc["id"], "admin": admin, "license": lic["id"], "seats": seats, "tokens": tokens}


class History:
    """Every answer the clients got, in order."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []

    def add(self, **event):
        event["at"] = time.monotonic()
        with self.lock:
            self.events.append(event)


class Load:
    """Clients cycling open, heartbeats, logout on one license; failed calls are retried with
    the same client instance, as the SDK does."""

    def __init__(self, server, tenant, history, clients, heartbeats=2, pause=0.0):
        self.server = server
        self.tenant = tenant
        self.history = history
        self.clients = clients
        self.heartbeats = heartbeats
        self.pause = pause
        self.stop_flag = threading.Event()
        self.threads = []

    def start(self):
        for n in range(self.clients):
            t = threading.Thread(target=self.client, args=(n,), daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=60)

    def retry(self, call):
        """Calls until an answer that is not 503 or a transport error (or the run stops)."""
        while True:
            status, body = call()
            if status not in (None, 503) or self.stop_flag.is_set():
                return status, body
            time.sleep(0.05 + random.random() * 0.1)

    def client(self, n):
        token = self.tenant["tokens"][n % len(self.tenant["tokens"])]
        lic = self.tenant["license"]
        k = 0
        while not self.stop_flag.is_set():
            k += 1
            instance = f"c{n}-{k}"

            def open_call():
                st, body = request(
                    self.server.host,
                    "POST",
                    "/v1/sessions",
                    token,
                    {"license_id": lic, "device_id": f"dev{n}", "instance_id": instance},
                )
                self.history.add(op="open", client=n, instance=instance, status=st, code=code(body),
                                 session=body.get("id") if st in (200, 201) and isinstance(body, dict) else None)
                return st, body

            st, body = self.retry(open_call)
            if st not in (200, 201):
                time.sleep(0.02)
                continue
            sid = body["id"]
            for _ in range(self.heartbeats):
                if self.stop_flag.is_set():
                    break
                st, hb = request(self.server.host, "POST", f"/v1/sessions/{sid}/heartbeat", token, {})
                self.history.add(op="heartbeat", client=n, session=sid, status=st, code=code(hb),
                                 reason=(hb or {}).get("error", {}).get("reason") if isinstance(hb, dict) else None)
                time.sleep(self.pause)

            def close_call():
                st, body = request(self.server.host, "DELETE", f"/v1/sessions/{sid}", token, None)
                self.history.add(op="logout", client=n, session=sid, status=st, code=code(body))
                return st, body

            self.retry(close_call)


class Monitor:
    """Polls the license's usage and the health endpoint while the run goes on."""

    def __init__(self, server, tenant, store_broken=None, history=None):
        self.server = server
        self.tenant = tenant
        self.store_broken = store_broken or (lambda: False)
        self.history = history
        self.stop_flag = threading.Event()
        self.max_in_use = 0
        self.over = 0
        self.health_lies = 0
        self.health_checks = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stop_flag.set()
        self.thread.join(timeout=30)

    def writes_all_failed(self, window=0.3):
        if self.history is None:
            return True
        since = time.monotonic() - window
        with self.history.lock:
            recent = [e["status"] for e in reversed(self.history.events[-500:]) if e["at"] >= since]
        answered = [st for st in recent if st is not None]
        return bool(answered) and all(st == 503 for st in answered)

    def run(self):
        path = f"/v1/licenses/{self.tenant['license']}"
        while not self.stop_flag.is_set():
            broken = self.store_broken()
            st, body = request(self.server.host, "GET", path, self.tenant["admin"], None)
            if st == 200:
                in_use = body["usage"]["in_use"]
                self.max_in_use = max(self.max_in_use, in_use)
                if in_use > self.tenant["seats"]:
                    self.over += 1
            st, _ = request(self.server.host, "GET", "/healthz", None, None)
            if st is not None:
                self.health_checks += 1
                # A lie: "ready" while the disk is full and every write of the last moments
                # failed. (A full disk may still take writes into space the database holds:
                # then "ready" is true.)
                if broken and st == 200 and self.writes_all_failed():
                    self.health_lies += 1
            time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------------


def check(history, db_path, tenant):
    """Judges the history against the database the server left (the server is stopped)."""
    acked_open = {}
    acked_logout = {}
    beats_after_logout = 0
    for e in history.events:
        if e["op"] == "open" and e["status"] in (200, 201) and e["session"]:
            acked_open.setdefault(e["session"], e["at"])
        elif e["op"] == "logout" and e["status"] == 204:
            acked_logout.setdefault(e["session"], e["at"])
        elif e["op"] == "heartbeat" and e["status"] == 200 and e["session"] in acked_logout:
            if e["at"] > acked_logout[e["session"]]:
                beats_after_logout += 1
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT id, license_id, opened_at, expires_at, ended_at, end_reason FROM sessions"
    ).fetchall()
    by_id = {r[0]: r for r in rows}
    lost = [s for s in acked_open if s not in by_id]
    resurrected = [
        s for s in acked_logout
        if s not in by_id or by_id[s][4] is None or by_id[s][5] not in ("logout", "revoked")
    ]
    # Seats in use over time on disk: a session holds its seat from opened_at until it ended
    # or expired, whichever came first (ends before opens at the same millisecond).
    points = []
    for sid, lic, opened, expires, ended, _ in rows:
        if lic != tenant["license"]:
            continue
        end = min(x for x in (ended, expires) if x is not None)
        points.append((opened, 1))
        points.append((end, -1))
    points.sort(key=lambda p: (p[0], p[1]))
    live = peak = 0
    for _, d in points:
        live += d
        peak = max(peak, live)
    still_live = sum(1 for r in rows if r[1] == tenant["license"] and r[4] is None)
    return {
        "acknowledged_opens": len(acked_open),
        "acknowledged_logouts": len(acked_logout),
        "lost_opens": len(lost),
        "resurrected_logouts": len(resurrected) + beats_after_logout,
        "peak_in_use_on_disk": peak,
        "over_allocations_on_disk": max(0, peak - tenant["seats"]),
        "live_on_disk_at_end": still_live,
        "failed_requests": sum(1 for e in history.events if e["status"] in (None, 503)),
    }


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------


def scenario_kill9(args):
    data = tempfile.mkdtemp(prefix="faultrun-kill9-")
    server = Server(args.bin, data)
    failed_restarts = 0
    restart_times = []
    if server.start() is None:
        raise SystemExit("the server did not start")
    tenant = setup(server, seats=args.seats, users=8)
    history = History()
    load = Load(server, tenant, history, clients=args.clients)
    monitor = Monitor(server, tenant)
    load.start()
    monitor.start()
    for cycle in range(args.cycles):
        time.sleep(random.uniform(0.05, args.cycle_secs))
        server.kill9()
        took = server.start()
        if took is None:
            failed_restarts += 1
            server.kill9()
            took = server.start()
        if took is not None:
            restart_times.append(took)
        if args.verbose:
            print(f"  kill -9 cycle {cycle + 1}/{args.cycles}: back in {took}", flush=True)
    load.stop()
    monitor.stop()
    server.stop()
    result = check(history, os.path.join(data, "leasehold.db"), tenant)
    result.update(
        kill9_cycles=args.cycles,
        failed_restarts=failed_restarts,
        restart_secs_median=median(restart_times),
        restart_secs_max=max(restart_times, default=None),
        over_allocations_seen=monitor.over,
    )
    shutil.rmtree(data, ignore_errors=True)
    return result


def scenario_diskfull(args):
    data = tempfile.mkdtemp(prefix="faultrun-full-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs_mib}m", "tmpfs", data], check=True)
    filler = os.path.join(data, "filler")
    full = threading.Event()
    try:
        server = Server(args.bin, data)
        if server.start() is None:
            raise SystemExit("the server did not start")
        tenant = setup(server, seats=args.seats, users=8)
        history = History()
        load = Load(server, tenant, history, clients=args.clients)
        monitor = Monitor(server, tenant, store_broken=full.is_set, history=history)
        load.start()
        monitor.start()
        failed_restarts = 0
        restart_times = []
        full_rounds = []
        for cycle in range(args.full_cycles):
            time.sleep(args.cycle_secs)
            # Fill the disk: writes fail from now on.
            try:
                with open(filler, "ab") as f:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
            except OSError:
                pass  # full (perhaps before the filler got a byte: the database took the space)
            full.set()
            before = len(history.events)
            time.sleep(args.full_secs)
            during = history.events[before:]
            full_rounds.append(sum(1 for e in during if e["status"] == 503))
            if cycle % 2 == 1:
                # A restart while the disk is full, then space comes back.
                server.kill9()
                took = server.start()
                if took is None:
                    failed_restarts += 1
            # The window of "every write fails" ends here (health may say 503 a little longer:
            # writes resume after a probe, which is not a lie).
            full.clear()
            if os.path.exists(filler):
                os.remove(filler)
            time.sleep(1.0)
            if cycle % 2 == 0:
                server.kill9()
                took = server.start()
                if took is None:
                    failed_restarts += 1
                else:
                    restart_times.append(took)
            if args.verbose:
                print(f"  disk-full cycle {cycle + 1}/{args.full_cycles}: {full_rounds[-1]} answers 503", flush=True)
        time.sleep(args.cycle_secs)
        load.stop()
        monitor.stop()
        server.stop()
        result = check(history, os.path.join(data, "leasehold.db"), tenant)
        result.update(
            disk_full_rounds=args.full_cycles,
            answers_503_while_full=sum(full_rounds),
            failed_restarts=failed_restarts,
            restart_secs_median=median(restart_times),
            over_allocations_seen=monitor.over,
            health_checks=monitor.health_checks,
            healthy_while_full=monitor.health_lies,
        )
        return result
    finally:
        subprocess.run(["umount", "-l", data], check=False)
        shutil.rmtree(data, ignore_errors=True)


def scenario_clock(args):
    if not os.path.exists(FAKETIME_LIB):
        raise SystemExit("the clock scenario needs Debian's faketime package (apt-get install faketime)")
    data = tempfile.mkdtemp(prefix="faultrun-clock-")
    offset_file = os.path.join(data, "faketime")
    with open(offset_file, "w") as f:
        f.write("+0\n")
    env = {
        "LD_PRELOAD": FAKETIME_LIB,
        "FAKETIME_TIMESTAMP_FILE": offset_file,
        "FAKETIME_CACHE_DURATION": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    server = Server(args.bin, data, env)
    if server.start() is None:
        raise SystemExit("the server did not start under faketime")
    timeout = args.clock_timeout
    tenant = setup(server, seats=40, users=4, inactivity=timeout)
    result = {"inactivity_timeout_secs": timeout}
    for label, step in (("forward_2h", "+2h"), ("back_2h", "+0")):
        active, idle = [], []
        for i in range(8):
            tok = tenant["tokens"][i % len(tenant["tokens"])]
            st, body = request(server.host, "POST", "/v1/sessions", tok,
                               {"license_id": tenant["license"], "device_id": f"{label}-{i}", "instance_id": "app"})
            assert st == 201, (st, body)
            (active if i % 2 == 0 else idle).append((tok, body["id"], time.monotonic()))
        stop = threading.Event()
        ended_by_step = []

        def beat():
            while not stop.is_set():
                for tok, sid, _ in active:
                    st, body = request(server.host, "POST", f"/v1/sessions/{sid}/heartbeat", tok, {})
                    if st == 410 and sid not in ended_by_step:
                        ended_by_step.append(sid)
                time.sleep(1.0)

        t = threading.Thread(target=beat, daemon=True)
        t.start()
        time.sleep(2.0)
        with open(offset_file, "w") as f:
            f.write(f"{step}\n")
        # Watch the idle sessions end: when does each leave the live list?
        ended_at = {}
        stepped = time.monotonic()
        deadline = stepped + timeout + 30
        # Until every idle session ended, and for a few seconds at least (heartbeats must go
        # on past the step for a step that ends sessions to show).
        while (len(ended_at) < len(idle) or time.monotonic() < stepped + 5) and time.monotonic() < deadline:
            st, body = request(server.host, "GET", f"/v1/licenses/{tenant['license']}/sessions", tenant["admin"], None)
            if st == 200:
                live = {s["id"] for s in body["sessions"]}
                for _, sid, _ in idle:
                    if sid not in live and sid not in ended_at:
                        ended_at[sid] = time.monotonic()
            time.sleep(0.25)
        stop.set()
        t.join()
        errors = [ended_at.get(sid, deadline) - (opened + timeout) for _, sid, opened in idle]
        result[label] = {
            "heartbeating_sessions_ended": len(ended_by_step),
            "idle_sessions": len(idle),
            "idle_ended_early_secs_max": round(max(0.0, -min(errors)), 2),
            "idle_ended_late_secs_max": round(max(0.0, max(errors)), 2),
        }
        for tok, sid, _ in active:
            request(server.host, "DELETE", f"/v1/sessions/{sid}", tok, None)
        if args.verbose:
            print(f"  clock {label}: {result[label]}", flush=True)
    # A restart after the clock moved: the documented rule (stored times are wall-clock times;
    # expiries further ahead than a session could have been granted are clamped).
    tok = tenant["tokens"][0]
    st, body = request(server.host, "POST", "/v1/sessions", tok,
                       {"license_id": tenant["license"], "device_id": "restart", "instance_id": "app"})
    sid = body["id"]
    server.stop()
    with open(offset_file, "w") as f:
        f.write("-2h\n")
    took = server.start()
    st, body = request(server.host, "GET", f"/v1/licenses/{tenant['license']}/sessions", tenant["admin"], None)
    expires = [s["expires_at"] for s in body.get("sessions", []) if s["id"] == sid] if st == 200 else []
    result["restart_after_back_step"] = {"restarted": took is not None, "session_live": bool(expires)}
    server.stop()
    shutil.rmtree(data, ignore_errors=True)
    return result


def median(values):
    values = sorted(values)
    if not values:
        return None
    return round(values[len(values) // 2], 3)


def broken(name, result):
    """The invariants a scenario's result breaks."""
    bad = []
    for key in ("lost_opens", "resurrected_logouts", "over_allocations_on_disk", "over_allocations_seen",
                "failed_restarts", "healthy_while_full"):
        if result.get(key):
            bad.append(f"{name}: {key} = {result[key]}")
    for label in ("forward_2h", "back_2h"):
        part = result.get(label)
        if part:
            if part["heartbeating_sessions_ended"]:
                bad.append(f"{name} {label}: heartbeating sessions ended")
            if part["idle_ended_early_secs_max"] > 2 or part["idle_ended_late_secs_max"] > 3:
                bad.append(f"{name} {label}: idle sessions ended off their timeout")
    return bad


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="target/release/leasehold")
    p.add_argument("--scenario", default="all", choices=["all", "kill9", "diskfull", "clock"])
    p.add_argument("--cycles", type=int, default=100, help="kill -9 cycles")
    p.add_argument("--cycle-secs", type=float, default=0.5, help="load between faults")
    p.add_argument("--clients", type=int, default=24)
    p.add_argument("--seats", type=int, default=10)
    p.add_argument("--tmpfs-mib", type=int, default=8)
    p.add_argument("--full-cycles", type=int, default=6)
    p.add_argument("--full-secs", type=float, default=2.0)
    p.add_argument("--clock-timeout", type=int, default=20, help="inactivity timeout in the clock scenario")
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    if not os.path.exists(args.bin):
        raise SystemExit(f"{args.bin} not found: cargo build --release -p leasehold first")
    scenarios = ["kill9", "diskfull", "clock"] if args.scenario == "all" else [args.scenario]
    results, bad = {}, []
    for name in scenarios:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        result = globals()[f"scenario_{name}"](args)
        result["secs"] = round(time.monotonic() - started, 1)
        results[name] = result
        for k, v in result.items():
            print(f"  {k}: {v}")
        bad += broken(name, result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if bad:
        print("BROKEN:\n  " + "\n  ".join(bad))
        sys.exit(1)
    print("no invariant broken")


if __name__ == "__main__":
    main()
