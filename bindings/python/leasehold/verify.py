"""Offline lease verification: a verifier built from a saved JWKS (the server's
``/.well-known/jwks.json``) checks a lease's signature and expiry with no network."""

from __future__ import annotations

import os
import time
from ctypes import POINTER, byref, c_void_p
from dataclasses import dataclass

from ._handle import Handle
from ._native import LeaseClaims as _CClaims
from ._native import decode, encode, lib
from .errors import check


@dataclass(frozen=True)
class LeaseClaims:
    """The claims of a verified lease."""

    issuer: str
    subject: str
    """The username holding the session."""
    session_id: str
    license_id: str
    kind: str
    """``"interactive"`` or ``"service"``."""
    device_id: str
    instance_id: str
    issued_at: int
    expires_at: int


class Verifier:
    """Verifies leases against a key set, offline. Thread-safe.

    ``jwks_json``: the key set as JSON text (``Client.fetch_jwks()``); ``leeway_secs`` accepts
    leases that long past their expiry (clock skew). Raises DecodeError for text that is not a
    usable key set.
    """

    def __init__(self, jwks_json: str, leeway_secs: int = 0) -> None:
        pointer = c_void_p()
        check(lib.leasehold_verifier_new(encode(jwks_json), leeway_secs, byref(pointer)))
        assert pointer.value is not None
        self._handle = Handle(pointer.value, lib.leasehold_verifier_free, "verifier")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], leeway_secs: int = 0) -> Verifier:
        """A verifier from a saved ``jwks.json``; raises ConfigError when it cannot be read."""
        verifier = cls.__new__(cls)
        pointer = c_void_p()
        check(lib.leasehold_verifier_from_file(encode(path), leeway_secs, byref(pointer)))
        assert pointer.value is not None
        verifier._handle = Handle(pointer.value, lib.leasehold_verifier_free, "verifier")
        return verifier

    def verify(self, lease: str, now: int | None = None) -> LeaseClaims:
        """Checks ``lease``'s signature and its expiry at ``now`` (seconds since the Unix epoch;
        default: this machine's clock). Raises LeaseInvalid, whose message says why."""
        at = int(time.time()) if now is None else now
        claims = POINTER(_CClaims)()
        with self._handle.use() as verifier:
            check(lib.leasehold_verifier_verify(verifier, encode(lease), at, byref(claims)))
        try:
            c = claims.contents

            def text(raw: bytes | None) -> str:
                return decode(raw) or ""

            return LeaseClaims(
                issuer=text(c.issuer),
                subject=text(c.subject),
                session_id=text(c.session_id),
                license_id=text(c.license_id),
                kind=text(c.kind),
                device_id=text(c.device_id),
                instance_id=text(c.instance_id),
                issued_at=int(c.issued_at),
                expires_at=int(c.expires_at),
            )
        finally:
            lib.leasehold_lease_claims_free(claims)

    def close(self) -> None:
        self._handle.free()

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.free()
