"""The web dashboard (/ui) in a real headless Chromium (Debian's, driven by Playwright).

A real `leasehold serve` (LEASEHOLD_BIN) on embedded SQLite; clients open and close sessions
through the HTTP API while the page is open. Screenshots land in LEASEHOLD_UI_ARTIFACTS
(default: ./ui-artifacts).
"""

import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

ROOT_TOKEN = "browser-test-root"
ARTIFACTS = Path(os.environ.get("LEASEHOLD_UI_ARTIFACTS", "ui-artifacts")).resolve()


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no Chromium: apt-get install -y chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, token: str, body=None, accept="application/json"):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token}")
        req.add_header("Accept", accept)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                raw = res.read()
                return res.status, (json.loads(raw) if raw and accept == "application/json" else raw)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw else None)


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("LEASEHOLD_BIN")
    assert binary, "set LEASEHOLD_BIN to the leasehold binary"
    data = tempfile.mkdtemp(prefix="leasehold-ui-")
    port = free_port()
    env = dict(os.environ, LEASEHOLD_ADMIN_TOKEN=ROOT_TOKEN, RUST_LOG="warn")
    proc = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # `localhost`, not 127.0.0.1: browsers keep Secure cookies over plain HTTP only there.
    base = f"http://localhost:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/livez", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("the server did not start")
    yield Api(base)
    proc.kill()
    proc.wait()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def tenant(server: Api):
    status, acc = server.call("POST", "/v1/accounts", ROOT_TOKEN, {"name": "Acme CAD"})
    assert status == 201, acc
    admin = acc["admin_token"]
    aid = acc["id"]
    status, lic = server.call(
        "POST",
        "/v1/licenses",
        admin,
        {"account_id": aid, "product": "cad", "model": "concurrent_sessions", "seats": 3},
    )
    assert status == 201, lic
    tokens = {}
    for user in ("alice", "bob", "carol"):
        status, _ = server.call("PUT", f"/v1/accounts/{aid}/users/{user}", admin, {"kind": "interactive"})
        assert status in (200, 201)
        status, tok = server.call("POST", f"/v1/accounts/{aid}/users/{user}/tokens", admin)
        assert status == 201, tok
        tokens[user] = tok["token"]
    # Another account, whose license the dashboard must never show.
    _, other = server.call("POST", "/v1/accounts", ROOT_TOKEN, {"name": "Other"})
    _, other_lic = server.call(
        "POST",
        "/v1/licenses",
        other["admin_token"],
        {"account_id": other["id"], "product": "secret-product", "model": "concurrent_sessions", "seats": 1},
    )
    return {"admin": admin, "aid": aid, "lid": lic["id"], "tokens": tokens, "other_lid": other_lic["id"]}


def open_session(server: Api, tenant, user: str, device: str) -> str:
    status, s = server.call(
        "POST",
        "/v1/sessions",
        tenant["tokens"][user],
        {"license_id": tenant["lid"], "device_id": device, "instance_id": "cad-1"},
    )
    assert status == 201, s
    return s["id"]


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server: Api, request):
    context = browser.new_context(base_url=server.base, accept_downloads=True)
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # Script errors, and anything the page's Content-Security-Policy refused.
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None)
    yield pg
    pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    # A policy violation or a script error shows up here.
    assert not errors, errors


def sign_in(page: Page, token: str) -> None:
    page.goto("/ui")
    # By keyboard: the field has focus (autofocus), Enter submits.
    expect(page.locator("#token")).to_be_focused()
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page.locator("header .account")).to_have_text("Acme CAD")


def test_sign_in_sets_a_strict_http_only_cookie_and_refuses_bad_tokens(page: Page, tenant):
    page.goto("/ui")
    page.fill("#token", "lh_adm_not-a-real-token")
    page.click("button[type=submit]")
    expect(page.locator("#sign-in-error")).to_contain_text("Unknown or expired token")
    sign_in(page, tenant["admin"])
    cookies = page.context.cookies()
    ui = [c for c in cookies if c["name"] == "lh_ui"]
    assert len(ui) == 1, cookies
    assert ui[0]["httpOnly"] and ui[0]["secure"] and ui[0]["sameSite"] == "Strict"
    # Scripts cannot read it.
    assert "lh_ui" not in page.evaluate("document.cookie")


def test_the_first_page_is_small(page: Page, tenant):
    sizes = {}
    page.on("response", lambda r: sizes.__setitem__(r.url, len(r.body())) if r.ok else None)
    sign_in(page, tenant["admin"])
    page.wait_for_selector("#licenses tbody tr[data-license]")
    page.wait_for_load_state("networkidle")
    total = sum(sizes.values())
    assert total < 100_000, sizes


def test_a_session_appears_without_a_reload_and_goes_when_revoked(page: Page, server: Api, tenant):
    sign_in(page, tenant["admin"])
    row = page.locator(f'#licenses tr[data-license="{tenant["lid"]}"] td.in-use')
    expect(row).to_have_text("0")
    assert page.locator("text=secret-product").count() == 0
    sid = open_session(server, tenant, "alice", "laptop-7")
    # The live view polls: no reload.
    expect(row).to_have_text("1", timeout=10_000)
    page.click(f'#licenses tr[data-license="{tenant["lid"]}"] a')
    session_row = page.locator(f'#sessions tr[data-session="{sid}"]')
    expect(session_row).to_contain_text("alice")
    expect(session_row).to_contain_text("laptop-7")
    second = open_session(server, tenant, "bob", "desk-2")
    expect(page.locator(f'#sessions tr[data-session="{second}"]')).to_contain_text("bob", timeout=10_000)
    expect(page.locator("#in-use")).to_have_text("2", timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "license-with-sessions.png"), full_page=True)
    # Revoke alice's session by keyboard: focus the button, press Enter.
    session_row.get_by_role("button", name="Revoke").focus()
    page.keyboard.press("Enter")
    expect(session_row).to_have_count(0, timeout=10_000)
    status, body = server.call("POST", f"/v1/sessions/{sid}/heartbeat", tenant["tokens"]["alice"])
    assert status == 410 and body["error"]["reason"] == "revoked", body
    # The audit log names the dashboard's admin as the actor.
    _, audit = server.call("GET", f"/v1/audit?event=ended&license_id={tenant['lid']}", tenant["admin"])
    ended = [e for e in audit["events"] if e["session_id"] == sid]
    assert ended and ended[0]["actor"] == f"admin:{tenant['aid']}", audit
    server.call("DELETE", f"/v1/sessions/{second}", tenant["tokens"]["bob"])


def test_the_charts_high_water_matches_the_api(page: Page, server: Api, tenant):
    a = open_session(server, tenant, "carol", "ws-1")
    b = open_session(server, tenant, "bob", "ws-2")
    server.call("DELETE", f"/v1/sessions/{b}", tenant["tokens"]["bob"])
    sign_in(page, tenant["admin"])
    with page.expect_response(lambda r: "/usage?" in r.url and r.ok) as answer:
        page.goto(f"/ui#/license/{tenant['lid']}")
    query = answer.value.url.split("/usage?", 1)[1]
    status, report = server.call("GET", f"/v1/licenses/{tenant['lid']}/usage?{query}", tenant["admin"])
    assert status == 200, report
    expect(page.locator("#usage-high-water")).to_have_text(str(report["high_water"]))
    assert report["high_water"] >= 2
    expect(page.locator("#usage-denials")).to_have_text(str(report["denials"]))
    # The drawn chart carries each bucket's high water: the highest is the report's.
    bars = page.locator("#chart-in-use rect.hit")
    if report.get("buckets"):
        highs = [int(v) for v in bars.evaluate_all("els => els.map(e => e.dataset.highWater ?? e.getAttribute('data-high-water'))")]
        assert max(highs) == report["high_water"]
        assert highs == [bk["high_water"] for bk in report["buckets"]]
    server.call("DELETE", f"/v1/sessions/{a}", tenant["tokens"]["carol"])


def path_levels(d: str) -> list[float]:
    """The y of each bucket's step in a chart path (`M x,y H x2 L x,y H x2 ...`)."""
    return [float(y) for y in re.findall(r"[ML][-\d.]+,([-\d.]+)H", d)]


def test_before_a_license_existed_the_chart_draws_no_overdraft(page: Page, server: Api, tenant):
    status, lic = server.call(
        "POST",
        "/v1/licenses",
        tenant["admin"],
        {"account_id": tenant["aid"], "product": "cad-overdraft", "seats": 2, "overdraft_seats": 1},
    )
    assert status == 201, lic
    sign_in(page, tenant["admin"])
    with page.expect_response(lambda r: "/usage?" in r.url and r.ok) as answer:
        page.goto(f"/ui#/license/{lic['id']}")
    buckets = answer.value.json()["buckets"]
    unborn = [i for i, b in enumerate(buckets) if b["seats"] == 0]
    assert unborn and buckets[-1]["seats"] == 2, buckets
    limit = path_levels(page.locator("#chart-in-use path.limit").get_attribute("d"))
    overdraft = path_levels(page.locator("#chart-in-use path.overdraft").get_attribute("d"))
    assert len(limit) == len(overdraft) == len(buckets)
    # Before the license: both lines at 0 seats; since: the overdraft line above the seats.
    assert all(overdraft[i] == limit[i] for i in unborn), (overdraft, limit)
    assert overdraft[-1] < limit[-1]


def test_the_audit_csv_export_downloads(page: Page, server: Api, tenant):
    open_session(server, tenant, "alice", "export-box")
    sign_in(page, tenant["admin"])
    page.click("nav >> text=Audit log")
    expect(page.locator("#audit tbody tr").first).to_be_visible()
    page.select_option("#audit-kind", "opened")
    page.click("#audit-filters button[type=submit]")
    expect(page.locator("#audit tbody tr").first).to_contain_text("opened")
    with page.expect_download() as download:
        page.click("#audit-csv")
    path = download.value.path()
    rows = list(csv.reader(io.StringIO(Path(path).read_text())))
    assert rows[0][:3] == ["at", "account_id", "license_id"] or "event" in rows[0], rows[0]
    events = {r[rows[0].index("event")] for r in rows[1:]}
    assert events == {"opened"}, events
    assert any("export-box" in ",".join(r) or "alice" in r for r in rows[1:])


def test_a_user_is_switched_off_and_on(page: Page, server: Api, tenant):
    sign_in(page, tenant["admin"])
    page.click("nav >> text=Users")
    switch = page.get_by_role("switch", name="carol active")
    expect(switch).to_be_checked()
    switch.uncheck()
    expect(page.locator('tr[data-user="carol"]')).to_contain_text("inactive")
    _, user = server.call("GET", f"/v1/accounts/{tenant['aid']}/users/carol", tenant["admin"])
    assert user["active"] is False
    page.get_by_role("switch", name="carol active").check()
    expect(page.locator('tr[data-user="carol"]')).not_to_contain_text("inactive")
    _, user = server.call("GET", f"/v1/accounts/{tenant['aid']}/users/carol", tenant["admin"])
    assert user["active"] is True


def test_changes_without_the_csrf_token_are_refused_and_sign_out_ends_the_session(page: Page, server: Api, tenant):
    sid = open_session(server, tenant, "bob", "csrf-box")
    sign_in(page, tenant["admin"])
    answer = page.evaluate(
        """async (sid) => {
            const r = await fetch(`/v1/sessions/${sid}`, {method: 'DELETE'});
            return [r.status, await r.json()];
        }""",
        sid,
    )
    assert answer[0] == 403 and answer[1]["error"]["code"] == "csrf_token_invalid", answer
    status, _ = server.call("POST", f"/v1/sessions/{sid}/heartbeat", tenant["tokens"]["bob"])
    assert status == 200
    cookie = [c for c in page.context.cookies() if c["name"] == "lh_ui"][0]["value"]
    page.click("text=Sign out")
    expect(page.locator("#token")).to_be_visible()
    # The session's credential is expired on the server, not only forgotten by the browser.
    status, _ = server.call("GET", f"/v1/licenses/{tenant['lid']}", cookie)
    assert status == 401
    server.call("DELETE", f"/v1/sessions/{sid}", tenant["tokens"]["bob"])


def test_readable_on_a_phone(browser, server: Api, tenant):
    context = browser.new_context(base_url=server.base, viewport={"width": 390, "height": 844}, is_mobile=True)
    pg = context.new_page()
    sign_in(pg, tenant["admin"])
    pg.goto(f"/ui#/license/{tenant['lid']}")
    expect(pg.locator("#usage-high-water")).to_be_visible()
    width = pg.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, width
    pg.screenshot(path=str(ARTIFACTS / "phone-license.png"), full_page=True)
    context.close()


def test_alerts_show_when_the_threshold_is_reached(page: Page, server: Api, tenant):
    status, lic = server.call(
        "POST",
        "/v1/licenses",
        tenant["admin"],
        {
            "account_id": tenant["aid"],
            "product": "cam",
            "model": "concurrent_sessions",
            "seats": 2,
            "alerts": {"threshold_percent": 50, "denials_per_hour": 1},
        },
    )
    assert status == 201, lic
    sign_in(page, tenant["admin"])
    badge = page.locator(f'#licenses tr[data-license="{lic["id"]}"] .badge')
    expect(badge).to_have_text("< 50%")
    status, s = server.call(
        "POST",
        "/v1/sessions",
        tenant["tokens"]["alice"],
        {"license_id": lic["id"], "device_id": "cam-1", "instance_id": "cam"},
    )
    assert status == 201, s
    # Live: 1 of 2 seats is 50%, the threshold.
    expect(badge).to_have_text("≥ 50%", timeout=10_000)
    page.goto(f"/ui#/license/{lic['id']}")
    expect(page.locator("#alert-threshold")).to_contain_text("reached")
    expect(page.locator("#alert-denials")).to_contain_text("0 of 1 denials")
    server.call("DELETE", f"/v1/sessions/{s['id']}", tenant["tokens"]["alice"])
