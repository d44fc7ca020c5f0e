"""The exceptions of the package: one per result code of the C library, each carrying the
library's message and, when the server refused, its stable error code and HTTP status."""

from __future__ import annotations

from typing import NoReturn

from ._native import decode, lib


class LeaseholdError(Exception):
    """A failed call. ``result`` is the C result name (``"no_seat_available"``, ``"api"``...),
    ``code`` the server's error code (``"unauthorized"``, ``"not_found"``...) or None, and
    ``http_status`` the server's HTTP status or 0."""

    def __init__(self, result: str, message: str, code: str | None, http_status: int) -> None:
        super().__init__(message)
        self.result = result
        self.message = message
        self.code = code
        self.http_status = http_status

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(result={self.result!r}, code={self.code!r}, "
            f"http_status={self.http_status}, message={self.message!r})"
        )


class InvalidArgument(LeaseholdError):
    """An argument is unusable (empty, not UTF-8, unknown option)."""


class ConfigError(LeaseholdError):
    """The client is configured wrongly: a bad URL, an unreadable CA or JWKS file."""


class TransportError(LeaseholdError):
    """The server could not be reached (after the retries)."""


class ApiError(LeaseholdError):
    """The server refused the request; ``code`` and ``http_status`` say how."""


class NoSeatAvailable(ApiError):
    """409 ``no_seat_available``: every seat of the license is taken (after waiting, if asked)."""


class DecodeError(LeaseholdError):
    """An answer of the server, or a key set, could not be read."""


class LeaseInvalid(LeaseholdError):
    """A lease failed verification (malformed, unknown key, bad signature, expired)."""


class InternalError(LeaseholdError):
    """A bug inside the library."""


_BY_RESULT: dict[int, type[LeaseholdError]] = {
    1: InvalidArgument,
    2: ConfigError,
    3: TransportError,
    4: ApiError,
    5: NoSeatAvailable,
    6: DecodeError,
    7: LeaseInvalid,
    8: InternalError,
}


def raise_last_error(result: int) -> NoReturn:
    """Raises the exception of `result`, explained by this thread's last error."""
    name = decode(lib.leasehold_result_name(result)) or "unknown"
    message = decode(lib.leasehold_last_error_message()) or name
    code = decode(lib.leasehold_last_error_code())
    status = int(lib.leasehold_last_error_http_status())
    raise _BY_RESULT.get(result, LeaseholdError)(name, message, code, status)


def check(result: int) -> None:
    """Raises unless `result` is success (0)."""
    if result != 0:
        raise_last_error(result)
