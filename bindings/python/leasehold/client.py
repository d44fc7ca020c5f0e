"""The client of one Leasehold server: its URL and credentials (a user token, or a service
user's client credentials whose access token the library obtains and renews), optionally a CA
file for HTTPS, and checkout."""

from __future__ import annotations

import os
import socket
import uuid
from ctypes import byref, c_void_p
from types import TracebackType

from ._handle import Handle
from ._native import CHECKOUT_VERIFY_LEASE, CheckoutOptions, encode, lib, take_string
from .errors import InvalidArgument, check
from .seat import Seat

DEFAULT_URL = "http://127.0.0.1:8470"


def default_device_id() -> str:
    """This machine's name: the device a session is opened for, by default."""
    return socket.gethostname() or "python"


def default_instance_id() -> str:
    """A new id for this run of the application (a checkout with the same license, device and
    instance ids returns the same live session)."""
    return f"python-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Client:
    """A client of one Leasehold server; thread-safe (several threads may check out through one
    client at once). Give either ``token`` or ``client_id`` and ``client_secret``.

    ``ca_file``: a PEM file whose certificates are trusted *instead of* the system's for
    ``https://`` URLs (a private CA); None for the system's trust store.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        pointer = c_void_p()
        if token is not None and client_id is None and client_secret is None:
            result = lib.leasehold_client_new(
                encode(url), encode(token), encode(ca_file), byref(pointer)
            )
        elif token is None and client_id is not None and client_secret is not None:
            result = lib.leasehold_client_new_with_client_credentials(
                encode(url), encode(client_id), encode(client_secret), encode(ca_file),
                byref(pointer),
            )
        else:
            raise InvalidArgument(
                "invalid_argument",
                "give either token, or client_id and client_secret",
                None,
                0,
            )
        check(result)
        assert pointer.value is not None
        self._handle = Handle(pointer.value, lib.leasehold_client_free, "client")

    def checkout(
        self,
        license_id: str,
        device_id: str | None = None,
        instance_id: str | None = None,
        *,
        wait_secs: int = 0,
        heartbeat_interval: float | None = None,
        verify_lease: bool = False,
    ) -> Seat:
        """Takes a seat of ``license_id`` and keeps it alive with background heartbeats until it
        is released (``seat.release()``, leaving a ``with`` block, or garbage collection) or
        lost. Blocks until the server answers.

        ``device_id`` defaults to the host name, ``instance_id`` to a new id per call.
        ``wait_secs``: on a license that queues, wait that long for a seat.
        ``heartbeat_interval``: seconds between heartbeats instead of the server's advice.
        ``verify_lease``: verify the session's signed leases against the server's keys.

        Raises NoSeatAvailable when the license is full, ApiError for other refusals,
        TransportError when the server cannot be reached.
        """
        options = CheckoutOptions()
        if wait_secs < 0:
            raise InvalidArgument("invalid_argument", "wait_secs is negative", None, 0)
        options.wait_secs = wait_secs
        if heartbeat_interval is not None:
            if heartbeat_interval <= 0:
                raise InvalidArgument(
                    "invalid_argument", "heartbeat_interval must be positive", None, 0
                )
            options.heartbeat_interval_ms = max(1, round(heartbeat_interval * 1000))
        options.flags = CHECKOUT_VERIFY_LEASE if verify_lease else 0
        seat = c_void_p()
        with self._handle.use() as client:
            check(
                lib.leasehold_checkout(
                    client,
                    encode(license_id),
                    encode(device_id or default_device_id()),
                    encode(instance_id or default_instance_id()),
                    byref(options),
                    byref(seat),
                )
            )
        assert seat.value is not None
        return Seat(seat.value)

    def fetch_jwks(self) -> str:
        """The server's lease-signing keys (``/.well-known/jwks.json``) as JSON text: save it
        and verify leases offline later with ``Verifier``."""
        jwks = c_void_p()
        with self._handle.use() as client:
            check(lib.leasehold_client_fetch_jwks(client, byref(jwks)))
        return take_string(jwks.value) or ""

    def close(self) -> None:
        """Frees the client. Its seats stay valid and keep heartbeating."""
        self._handle.free()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.free()


def checkout(
    license_id: str,
    *,
    url: str | None = None,
    token: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    device_id: str | None = None,
    instance_id: str | None = None,
    wait_secs: int = 0,
    heartbeat_interval: float | None = None,
    verify_lease: bool = False,
) -> Seat:
    """Takes a seat with a client of its own: ``with leasehold.checkout(license_id) as seat:``.

    Unset connection arguments come from the environment, as for ``leasehold run``:
    ``LEASEHOLD_URL`` (default ``http://127.0.0.1:8470``), ``LEASEHOLD_TOKEN``, or
    ``LEASEHOLD_CLIENT_ID`` and ``LEASEHOLD_CLIENT_SECRET``, and ``LEASEHOLD_CA_FILE``. The
    other arguments are those of ``Client.checkout``.
    """
    url = url or os.environ.get("LEASEHOLD_URL") or DEFAULT_URL
    ca_file = ca_file or os.environ.get("LEASEHOLD_CA_FILE") or None
    if token is None and client_id is None:
        client_id = os.environ.get("LEASEHOLD_CLIENT_ID") or None
        client_secret = client_secret or os.environ.get("LEASEHOLD_CLIENT_SECRET")
        if client_id is None:
            token = os.environ.get("LEASEHOLD_TOKEN")
    if token is None and client_id is None:
        raise InvalidArgument(
            "invalid_argument",
            "no credentials: pass token (or client_id and client_secret), or set "
            "LEASEHOLD_TOKEN (or LEASEHOLD_CLIENT_ID and LEASEHOLD_CLIENT_SECRET)",
            None,
            0,
        )
    with Client(
        url, token, client_id=client_id, client_secret=client_secret, ca_file=ca_file
    ) as client:
        # The seat outlives its client.
        return client.checkout(
            license_id,
            device_id,
            instance_id,
            wait_secs=wait_secs,
            heartbeat_interval=heartbeat_interval,
            verify_lease=verify_lease,
        )
