#!/usr/bin/env python3
"""What session event streams cost a server, and how fast a mass end reaches them.

Opens N sessions (N users, one each) on one license of a running server, holds an event stream
for each (raw HTTP/1.1 sockets, asyncio, standard library only), and measures:
  - the server's RSS before and after the streams (with --server-pid);
  - a single revoke: time from the DELETE's answer to the `revoked` event on that stream;
  - a revoke of every session of the license at once: time from the DELETE's answer until
    every stream has its `revoked` event (p50, p99, max over the streams).

Usage: LEASEHOLD_ADMIN_TOKEN=... streams.py --url http://127.0.0.1:8470 --streams 2000 \
         [--server-pid PID] [--revoke-url URL]   (raise `ulimit -n` above the number of streams)
--revoke-url sends the revokes to another node (PostgreSQL: the event crosses nodes).
"""
import argparse
import asyncio
import json
import os
import time
import urllib.request


def call(url, method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return json.loads(text) if text else None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def stream(host, port, token, session, opened, ended_at):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        (
            f"GET /v1/sessions/{session}/events HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    buffer = b""
    while True:
        chunk = await reader.read(4096)
        if not chunk:
            break
        buffer += chunk
        if b"event: open" in buffer and not opened.done():
            opened.set_result(True)
        if b"event: revoked" in buffer:
            ended_at[session] = time.monotonic()
            break
    writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="http://127.0.0.1:8470")
    p.add_argument("--streams", type=int, default=2000)
    p.add_argument("--server-pid", type=int)
    p.add_argument("--revoke-url")
    a = p.parse_args()
    root = os.environ["LEASEHOLD_ADMIN_TOKEN"]
    revoke_url = a.revoke_url or a.url
    host, port = a.url.split("//")[1].split(":")
    acc = call(a.url, "POST", "/v1/accounts", root, {"name": "streams"})
    admin = acc["admin_token"]
    lic = call(a.url, "POST", "/v1/licenses", admin, {
        "account_id": acc["id"], "product": "p", "model": "concurrent_sessions",
        "seats": a.streams + 1})["id"]
    sessions = []
    for i in range(a.streams):
        call(a.url, "PUT", f"/v1/accounts/{acc['id']}/users/u{i}", admin, {"kind": "interactive"})
        tok = call(a.url, "POST", f"/v1/accounts/{acc['id']}/users/u{i}/tokens", admin, {})["token"]
        s = call(a.url, "POST", "/v1/sessions", tok,
                 {"license_id": lic, "device_id": "d", "instance_id": "i"})["id"]
        sessions.append((tok, s))
    before = rss_kib(a.server_pid) if a.server_pid else 0
    loop = asyncio.get_running_loop()
    ended_at = {}
    opened = [loop.create_future() for _ in sessions]
    tasks = [asyncio.create_task(stream(host, int(port), t, s, o, ended_at))
             for (t, s), o in zip(sessions, opened)]
    await asyncio.gather(*opened)
    await asyncio.sleep(1)
    after = rss_kib(a.server_pid) if a.server_pid else 0
    # One revoke.
    tok, first = sessions[0]
    await asyncio.to_thread(call, revoke_url, "DELETE", f"/v1/sessions/{first}", admin)
    answered = time.monotonic()
    while first not in ended_at:
        await asyncio.sleep(0.001)
    single = ended_at[first] - answered
    # Every other session at once.
    await asyncio.to_thread(call, revoke_url, "DELETE", f"/v1/licenses/{lic}/sessions", admin)
    answered = time.monotonic()
    await asyncio.gather(*tasks)
    lat = sorted(ended_at[s] - answered for _, s in sessions[1:])
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    print(json.dumps({
        "streams": a.streams,
        "rss_kib_before": before, "rss_kib_with_streams": after,
        "kib_per_stream": round((after - before) / a.streams, 1) if a.server_pid else None,
        "single_revoke_ms": round(single * 1000, 2),
        "revoke_all_ms": {"p50": round(pick(0.5), 1), "p99": round(pick(0.99), 1),
                          "max": round(lat[-1] * 1000, 1)},
    }))


asyncio.run(main())
