"""The C library (libleasehold) loaded with ctypes, and the prototypes of its functions.

The library is looked up in this order: the ``LEASEHOLD_LIBRARY`` environment variable (a path
to ``libleasehold.so``), then the copy bundled in the wheel next to this file. ctypes releases
the GIL around every call, so a blocking call (checkout, release, wait) blocks only its thread,
and the library's callback thread can take the GIL to run a Python callback meanwhile.
"""

from __future__ import annotations

import ctypes
import os
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_int32,
    c_int64,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path


def _library_name() -> str:
    if sys.platform == "darwin":
        return "libleasehold.dylib"
    if sys.platform == "win32":
        return "leasehold.dll"
    return "libleasehold.so"


def _load() -> ctypes.CDLL:
    explicit = os.environ.get("LEASEHOLD_LIBRARY")
    path = Path(explicit) if explicit else Path(__file__).with_name(_library_name())
    try:
        return ctypes.CDLL(str(path))
    except OSError as err:
        raise ImportError(
            f"cannot load the Leasehold C library from {path}: {err} "
            "(install the wheel, or set LEASEHOLD_LIBRARY to libleasehold.so)"
        ) from err


class CheckoutOptions(Structure):
    """``leasehold_checkout_options``."""

    _fields_ = [
        ("wait_secs", c_uint64),
        ("heartbeat_interval_ms", c_uint64),
        ("flags", c_uint32),
    ]


class LeaseClaims(Structure):
    """``leasehold_lease_claims``: strings owned by the struct, freed with it."""

    _fields_ = [
        ("issuer", c_char_p),
        ("subject", c_char_p),
        ("session_id", c_char_p),
        ("license_id", c_char_p),
        ("kind", c_char_p),
        ("device_id", c_char_p),
        ("instance_id", c_char_p),
        ("issued_at", c_int64),
        ("expires_at", c_int64),
    ]


CHECKOUT_VERIFY_LEASE = 1

# void (*)(void *user_data, leasehold_seat_state state, const char *reason)
SEAT_CALLBACK = CFUNCTYPE(None, c_void_p, c_int32, c_char_p)

lib = _load()

# (name, return type, argument types). Strings the library hands over (`char *`) are declared
# as c_void_p so that ctypes does not copy and lose the pointer: `take_string` reads and frees.
_PROTOTYPES = [
    ("leasehold_version", c_char_p, []),
    ("leasehold_result_name", c_char_p, [c_int32]),
    ("leasehold_last_error_message", c_char_p, []),
    ("leasehold_last_error_code", c_char_p, []),
    ("leasehold_last_error_http_status", c_uint16, []),
    ("leasehold_string_free", None, [c_void_p]),
    ("leasehold_client_new", c_int32, [c_char_p, c_char_p, c_char_p, POINTER(c_void_p)]),
    (
        "leasehold_client_new_with_client_credentials",
        c_int32,
        [c_char_p, c_char_p, c_char_p, c_char_p, POINTER(c_void_p)],
    ),
    ("leasehold_client_fetch_jwks", c_int32, [c_void_p, POINTER(c_void_p)]),
    ("leasehold_client_free", None, [c_void_p]),
    (
        "leasehold_checkout",
        c_int32,
        [c_void_p, c_char_p, c_char_p, c_char_p, POINTER(CheckoutOptions), POINTER(c_void_p)],
    ),
    ("leasehold_seat_get_state", c_int32, [c_void_p]),
    ("leasehold_seat_lost_kind", c_int32, [c_void_p]),
    ("leasehold_seat_lost_reason", c_void_p, [c_void_p]),
    ("leasehold_seat_end_reason", c_char_p, [c_void_p]),
    ("leasehold_seat_wait", c_int32, [c_void_p, c_uint64, POINTER(c_int32)]),
    ("leasehold_seat_set_callback", c_int32, [c_void_p, SEAT_CALLBACK, c_void_p]),
    ("leasehold_seat_session_id", c_char_p, [c_void_p]),
    ("leasehold_seat_lease", c_void_p, [c_void_p]),
    ("leasehold_seat_expires_at", c_int64, [c_void_p]),
    ("leasehold_seat_release", c_int32, [c_void_p]),
    ("leasehold_seat_free", None, [c_void_p]),
    ("leasehold_verifier_new", c_int32, [c_char_p, c_uint64, POINTER(c_void_p)]),
    ("leasehold_verifier_from_file", c_int32, [c_char_p, c_uint64, POINTER(c_void_p)]),
    (
        "leasehold_verifier_verify",
        c_int32,
        [c_void_p, c_char_p, c_int64, POINTER(POINTER(LeaseClaims))],
    ),
    ("leasehold_lease_claims_free", None, [POINTER(LeaseClaims)]),
    ("leasehold_verifier_free", None, [c_void_p]),
]

for _name, _restype, _argtypes in _PROTOTYPES:
    _function = getattr(lib, _name)
    _function.restype = _restype
    _function.argtypes = _argtypes


def encode(text: str | os.PathLike[str] | None) -> bytes | None:
    """A Python string as the library's NUL-terminated UTF-8 (None stays NULL)."""
    if text is None:
        return None
    return os.fspath(text).encode("utf-8")


def decode(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


def take_string(pointer: int | None) -> str | None:
    """Reads a string the library handed over (`char *`) and frees it."""
    if not pointer:
        return None
    try:
        return decode(ctypes.string_at(pointer))
    finally:
        lib.leasehold_string_free(pointer)
