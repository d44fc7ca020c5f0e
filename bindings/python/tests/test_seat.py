"""The package against a real server: the context manager keeps and returns a seat, a revoke is
told by callback and by waiting, a full license and other refusals raise with the server's
code, threads share one client, a queued checkout waits, service users and offline leases."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import leasehold
from conftest import Tenant, eventually


def test_the_installed_wheel_bundles_the_c_library() -> None:
    bundled = Path(leasehold.__file__).with_name("libleasehold.so")
    assert bundled.is_file(), f"{bundled} missing: the tests must run against the built wheel"
    assert leasehold.__version__ == "0.1.0"


def test_a_with_block_keeps_the_seat_past_the_inactivity_timeout_and_returns_it(make_tenant) -> None:
    # Arrange: sessions end after 3 s without a heartbeat.
    tenant: Tenant = make_tenant(inactivity_timeout_secs=3)
    token = tenant.user_token("bob")

    # Act
    with leasehold.checkout(tenant.license_id, url=tenant.url, token=token,
                            device_id="pc-1", instance_id="py-1") as seat:
        time.sleep(4)
        # Assert: kept by the background heartbeats.
        assert seat.state == leasehold.SeatState.ACTIVE and seat.active
        assert tenant.in_use() == 1
        [live] = tenant.sessions()
        assert live["id"] == seat.session_id
        assert (live["device_id"], live["instance_id"]) == ("pc-1", "py-1")
        assert seat.expires_at > int(time.time())
        assert seat.lost_kind == leasehold.LostKind.NONE and seat.lost_reason is None

    # ...and returned when the block ends (the handle is closed with it).
    assert tenant.in_use() == 0
    with pytest.raises(leasehold.InvalidArgument, match="the seat was closed"):
        seat.release()


def test_an_exception_in_the_block_still_returns_the_seat(make_tenant) -> None:
    tenant = make_tenant()
    token = tenant.user_token("bob")
    with pytest.raises(RuntimeError, match="boom"):
        with leasehold.checkout(tenant.license_id, url=tenant.url, token=token):
            assert tenant.in_use() == 1
            raise RuntimeError("boom")
    assert tenant.in_use() == 0


def test_a_seat_that_is_garbage_collected_is_returned(make_tenant) -> None:
    tenant = make_tenant()
    client = leasehold.Client(tenant.url, tenant.user_token("bob"))
    seat = client.checkout(tenant.license_id)
    assert tenant.in_use() == 1
    del seat
    gc.collect()
    assert tenant.in_use() == 0
    client.close()


def test_a_full_license_raises_no_seat_available_with_the_servers_message(make_tenant) -> None:
    tenant = make_tenant()
    client = leasehold.Client(tenant.url, tenant.user_token("bob"))
    with client.checkout(tenant.license_id):
        with pytest.raises(leasehold.NoSeatAvailable) as refused:
            client.checkout(tenant.license_id)
    err = refused.value
    assert isinstance(err, leasehold.ApiError)
    assert (err.result, err.code, err.http_status) == ("no_seat_available", "no_seat_available", 409)
    assert "the license's only seat is in use" in str(err)


def test_a_revoke_is_told_to_the_callback_and_to_a_waiter(make_tenant) -> None:
    # Arrange
    tenant = make_tenant(inactivity_timeout_secs=3)
    seat = leasehold.checkout(tenant.license_id, url=tenant.url, token=tenant.user_token("bob"))
    heard: list[tuple[leasehold.SeatState, str | None, str]] = []
    told = threading.Event()

    def on_change(state: leasehold.SeatState, reason: str | None) -> None:
        heard.append((state, reason, threading.current_thread().name))
        told.set()

    seat.on_change(on_change)
    assert seat.wait(0.2) == leasehold.SeatState.ACTIVE

    # Act
    tenant.revoke(seat.session_id)

    # Assert
    assert seat.wait(10) == leasehold.SeatState.LOST
    assert seat.lost_kind == leasehold.LostKind.ENDED
    assert seat.end_reason == "revoked"
    assert seat.lost_reason == "session ended (revoked)"
    assert told.wait(5)
    state, reason, thread = heard[0]
    assert (state, reason) == (leasehold.SeatState.LOST, "session ended (revoked)")
    assert thread != threading.current_thread().name
    # Releasing a lost seat succeeds; it stays lost.
    seat.release()
    assert seat.state == leasehold.SeatState.LOST
    seat.close()
    with pytest.raises(leasehold.InvalidArgument, match="the seat was closed"):
        _ = seat.state


def test_a_release_is_told_to_the_callback(make_tenant) -> None:
    tenant = make_tenant()
    seat = leasehold.checkout(tenant.license_id, url=tenant.url, token=tenant.user_token("bob"))
    heard: list[tuple[leasehold.SeatState, str | None]] = []
    told = threading.Event()
    seat.on_change(lambda state, reason: (heard.append((state, reason)), told.set()))
    seat.release()
    assert told.wait(5)
    assert heard == [(leasehold.SeatState.RELEASED, None)]
    assert tenant.in_use() == 0
    seat.close()
    seat.close()  # idempotent


def test_threads_sharing_one_client_take_exactly_the_free_seats(make_tenant) -> None:
    # Arrange: 3 seats, 8 threads, one client.
    tenant = make_tenant(seats=3)
    client = leasehold.Client(tenant.url, tenant.user_token("bob"))
    start = threading.Barrier(8)
    seats: list[leasehold.Seat] = []
    refusals: list[leasehold.LeaseholdError] = []
    lock = threading.Lock()

    def take(i: int) -> None:
        start.wait()
        try:
            seat = client.checkout(tenant.license_id, "pc", f"app-{i}")
            with lock:
                seats.append(seat)
        except leasehold.LeaseholdError as err:
            with lock:
                refusals.append(err)

    # Act
    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Assert: 3 seats, 5 refusals, each with its own thread's error.
    assert len(seats) == 3 and len(refusals) == 5
    assert all(isinstance(e, leasehold.NoSeatAvailable) and e.http_status == 409 for e in refusals)
    assert tenant.in_use() == 3
    # Released from other threads at once.
    releasers = [threading.Thread(target=s.release) for s in seats]
    for t in releasers:
        t.start()
    for t in releasers:
        t.join()
    assert tenant.in_use() == 0
    client.close()


def test_a_queued_checkout_waits_for_the_seat(make_tenant) -> None:
    tenant = make_tenant(on_full="queue")
    client = leasehold.Client(tenant.url, tenant.user_token("bob"))
    first = client.checkout(tenant.license_id, "pc", "first")
    threading.Timer(1.0, first.release).start()
    started = time.monotonic()
    with client.checkout(tenant.license_id, "pc", "second", wait_secs=20) as second:
        assert time.monotonic() - started >= 0.9
        assert second.active
    # Without a wait, a full queueing license refuses at once.
    with client.checkout(tenant.license_id, "pc", "third"):
        with pytest.raises(leasehold.NoSeatAvailable):
            client.checkout(tenant.license_id, "pc", "fourth")
    first.close()


def test_a_service_user_checks_out_with_client_credentials(make_tenant) -> None:
    tenant = make_tenant()
    client_id, secret = tenant.service_user("erp")
    with leasehold.checkout(tenant.license_id, url=tenant.url, client_id=client_id,
                            client_secret=secret, heartbeat_interval=0.2,
                            verify_lease=True) as seat:
        first = seat.expires_at
        assert eventually(lambda: seat.expires_at > first, timeout=5)
        [live] = tenant.sessions()
        assert live["kind"] == "service"
    assert tenant.in_use() == 0


def test_leases_verify_offline_against_a_saved_jwks(make_tenant, tmp_path: Path) -> None:
    tenant = make_tenant()
    with leasehold.Client(tenant.url, tenant.user_token("bob")) as client:
        jwks = client.fetch_jwks()
        seat = client.checkout(tenant.license_id, "pc-9", "verify")
    saved = tmp_path / "jwks.json"
    saved.write_text(jwks)
    verifier = leasehold.Verifier.from_file(saved)
    lease = seat.lease
    assert lease is not None
    claims = verifier.verify(lease)
    assert (claims.subject, claims.session_id, claims.license_id) == (
        "bob", seat.session_id, tenant.license_id)
    assert (claims.kind, claims.device_id, claims.instance_id) == ("interactive", "pc-9", "verify")
    assert claims.issued_at <= claims.expires_at

    # Tampered, or checked after its expiry: LeaseInvalid, with the reason.
    dot = lease.index(".") + 5
    tampered = lease[:dot] + ("B" if lease[dot] == "A" else "A") + lease[dot + 1:]
    with pytest.raises(leasehold.LeaseInvalid):
        verifier.verify(tampered)
    with pytest.raises(leasehold.LeaseInvalid, match="expired"):
        verifier.verify(lease, now=claims.expires_at + 3600)
    # A leeway accepts it; text that is no key set is refused.
    assert leasehold.Verifier(jwks, leeway_secs=7200).verify(lease, now=claims.expires_at + 3600)
    with pytest.raises(leasehold.DecodeError):
        leasehold.Verifier('{"keys": []}')
    with pytest.raises(leasehold.ConfigError):
        leasehold.Verifier.from_file(tmp_path / "missing.json")
    seat.release()


def test_errors_carry_a_stable_result_and_the_servers_code(make_tenant, monkeypatch) -> None:
    tenant = make_tenant()
    token = tenant.user_token("bob")
    with pytest.raises(leasehold.ConfigError, match="not an http"):
        leasehold.Client("ftp://x", token)
    with pytest.raises(leasehold.ConfigError, match="/nonexistent/ca.pem"):
        leasehold.Client(tenant.url, token, ca_file="/nonexistent/ca.pem")
    with pytest.raises(leasehold.InvalidArgument, match="either token"):
        leasehold.Client(tenant.url)
    with pytest.raises(leasehold.InvalidArgument, match="heartbeat_interval") as err:
        leasehold.checkout(tenant.license_id, url=tenant.url, token=token, heartbeat_interval=0)
    assert err.value.result == "invalid_argument"
    with pytest.raises(leasehold.ApiError) as err:
        leasehold.checkout("lic_unknown", url=tenant.url, token=token)
    assert (err.value.code, err.value.http_status) == ("not_found", 404)
    with pytest.raises(leasehold.ApiError) as err:
        leasehold.checkout(tenant.license_id, url=tenant.url, token="not-a-token")
    assert (err.value.code, err.value.http_status) == ("unauthorized", 401)
    with socket_port() as port:
        with pytest.raises(leasehold.TransportError) as err:
            leasehold.checkout(tenant.license_id, url=f"http://127.0.0.1:{port}", token=token)
    assert (err.value.code, err.value.http_status) == (None, 0)
    # No credentials anywhere.
    for name in ("LEASEHOLD_TOKEN", "LEASEHOLD_CLIENT_ID", "LEASEHOLD_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(leasehold.InvalidArgument, match="no credentials"):
        leasehold.checkout(tenant.license_id, url=tenant.url)
    # ...and from the environment.
    monkeypatch.setenv("LEASEHOLD_URL", tenant.url)
    monkeypatch.setenv("LEASEHOLD_TOKEN", token)
    with leasehold.checkout(tenant.license_id) as seat:
        assert seat.active
    with pytest.raises(leasehold.InvalidArgument, match="wait_secs"):
        leasehold.checkout(tenant.license_id, wait_secs=-1)


class socket_port:
    """A port nobody listens on, for the duration of a block."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = int(s.getsockname()[1])
        s.close()
        return self.port

    def __exit__(self, *exc: object) -> None:
        pass


def test_a_program_that_exits_without_releasing_gives_its_seat_back(make_tenant) -> None:
    # Arrange: a child interpreter that takes a seat and ends without releasing or closing it.
    tenant = make_tenant()
    program = (
        "import os, leasehold\n"
        "seat = leasehold.checkout(os.environ['LICENSE_ID'])\n"
        "print('held', seat.session_id, flush=True)\n"
        "input()\n"
    )
    env = dict(os.environ, LEASEHOLD_URL=tenant.url, LEASEHOLD_TOKEN=tenant.user_token("bob"),
               LICENSE_ID=tenant.license_id)
    child = subprocess.Popen([sys.executable, "-c", program], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().startswith("held ")
    assert tenant.in_use() == 1

    # Act: the program ends.
    child.stdin.write("\n")
    child.stdin.close()

    # Assert
    assert child.wait(timeout=30) == 0
    assert tenant.in_use() == 0
