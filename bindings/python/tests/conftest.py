"""A real ``leasehold serve`` for the tests (the binary from ``LEASEHOLD_BIN``, default the
workspace's debug build), and a tenant per test made through the HTTP API: an account, a
license, users with tokens."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = "python-tests-root-token"
REPO = Path(__file__).resolve().parents[3]


def _binary() -> Path:
    explicit = os.environ.get("LEASEHOLD_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "leasehold"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(url: str, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    """One request to the server's API; answers the status and the decoded JSON (or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


@dataclass
class Server:
    url: str


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    binary = _binary()
    if not binary.is_file():
        pytest.fail(f"no leasehold binary at {binary}: build it (cargo build -p leasehold) "
                    "or set LEASEHOLD_BIN")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ, LEASEHOLD_ADMIN_TOKEN=ROOT, LEASEHOLD_LOG="warn")
        process = subprocess.Popen(
            [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(url + "/healthz", timeout=1):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("the leasehold server did not start")
                    time.sleep(0.05)
            yield Server(url)
        finally:
            process.terminate()
            process.wait(timeout=10)


@dataclass
class Tenant:
    url: str
    account_id: str
    admin_token: str
    license_id: str

    def user_token(self, username: str) -> str:
        status, _ = call(self.url, "PUT", f"/v1/accounts/{self.account_id}/users/{username}",
                         self.admin_token, {"kind": "interactive"})
        assert status in (200, 201)
        status, body = call(self.url, "POST",
                            f"/v1/accounts/{self.account_id}/users/{username}/tokens",
                            self.admin_token)
        assert status == 201, body
        return str(body["token"])

    def service_user(self, username: str) -> tuple[str, str]:
        status, body = call(self.url, "PUT", f"/v1/accounts/{self.account_id}/users/{username}",
                            self.admin_token, {"kind": "service"})
        assert status == 201, body
        return str(body["client_id"]), str(body["client_secret"])

    def in_use(self) -> int:
        status, body = call(self.url, "GET", f"/v1/licenses/{self.license_id}", self.admin_token)
        assert status == 200, body
        return int(body["usage"]["in_use"])

    def sessions(self) -> list[dict[str, Any]]:
        status, body = call(self.url, "GET", f"/v1/licenses/{self.license_id}/sessions",
                            self.admin_token)
        assert status == 200, body
        return list(body["sessions"])

    def revoke(self, session_id: str) -> None:
        status, body = call(self.url, "DELETE", f"/v1/sessions/{session_id}", self.admin_token)
        assert status == 204, body


@pytest.fixture
def make_tenant(server: Server):
    """Makes a tenant whose license has the given terms (default: 1 seat)."""

    def make(**terms: Any) -> Tenant:
        status, account = call(server.url, "POST", "/v1/accounts", ROOT, {"name": "Acme"})
        assert status == 201, account
        license_terms = {"account_id": account["id"], "product": "cad",
                         "model": "concurrent_sessions", "seats": 1, **terms}
        status, lic = call(server.url, "POST", "/v1/licenses", account["admin_token"],
                           license_terms)
        assert status == 201, lic
        return Tenant(server.url, account["id"], account["admin_token"], lic["id"])

    return make


def eventually(check, timeout: float = 10.0) -> bool:
    """Polls `check` until it holds or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())
