"""Leasehold for Python: hold a seat of a license while your application runs.

    import leasehold

    with leasehold.checkout(license_id, url="http://127.0.0.1:8470", token=token) as seat:
        ...  # background heartbeats keep the seat; seat.state / seat.wait() / seat.on_change()
    # the seat is returned here

A thin ctypes layer over the C library (``libleasehold``, the Rust SDK), bundled in the wheel.
Borrowing (a seat taken offline for days) is not wrapped here yet: the server, the Rust SDK,
the C library and the ``leasehold`` CLI have it (``leasehold run --lease seat.lease -- python
app.py``).
"""

from __future__ import annotations

from ._native import decode as _decode
from ._native import lib as _lib
from .client import Client, checkout
from .errors import (
    ApiError,
    ConfigError,
    DecodeError,
    InternalError,
    InvalidArgument,
    LeaseholdError,
    LeaseInvalid,
    NoSeatAvailable,
    TransportError,
)
from .seat import LostKind, Seat, SeatCallback, SeatState
from .verify import LeaseClaims, Verifier

__version__: str = _decode(_lib.leasehold_version()) or "0"
"""The version of the C library (and of this package)."""

__all__ = [
    "ApiError",
    "Client",
    "ConfigError",
    "DecodeError",
    "InternalError",
    "InvalidArgument",
    "LeaseClaims",
    "LeaseInvalid",
    "LeaseholdError",
    "LostKind",
    "NoSeatAvailable",
    "Seat",
    "SeatCallback",
    "SeatState",
    "TransportError",
    "Verifier",
    "checkout",
]
