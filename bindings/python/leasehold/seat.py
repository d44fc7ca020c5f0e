"""A checked-out seat: the session the library keeps alive with background heartbeats, its
state (active, lost with a reason, released) by polling, waiting or callback, and its release
(explicit, at the end of a ``with`` block, or when the object is garbage-collected)."""

from __future__ import annotations

import atexit
import enum
import threading
import weakref
from collections.abc import Callable
from ctypes import byref, c_int32
from types import TracebackType

from ._handle import Handle
from ._native import SEAT_CALLBACK, decode, lib, take_string
from .errors import LeaseholdError, check


class SeatState(enum.IntEnum):
    """``ACTIVE`` until the seat is ``LOST`` or ``RELEASED``; both are final."""

    ACTIVE = 0
    LOST = 1
    RELEASED = 2


class LostKind(enum.IntEnum):
    """Why a seat was lost."""

    NONE = 0
    """The seat is not lost."""
    ENDED = 1
    """The server ended the session (``Seat.end_reason``: revoked, inactivity...)."""
    EXPIRED = 2
    """The server could not be reached until the session expired."""
    REJECTED = 3
    """A heartbeat was refused with another error (the token was revoked, say)."""
    LEASE_INVALID = 4
    """The server sent a lease that does not verify (``verify_lease=True``)."""


SeatCallback = Callable[[SeatState, "str | None"], None]
"""Called once with the final state and, for a lost seat, the reason in words."""


# Seats not yet closed: given back when the interpreter exits normally (`atexit`), as a seat
# that is garbage-collected is. A process killed by a signal it does not handle frees its seats
# at the server's inactivity timeout.
_open_seats: weakref.WeakSet[Seat] = weakref.WeakSet()


@atexit.register
def _close_open_seats() -> None:
    for seat in list(_open_seats):
        seat.close()


class Seat:
    """A seat held by this application. Use it as a context manager
    (``with client.checkout(...) as seat:``) so that it is returned when the block ends, even
    on an exception; ``release()`` returns it earlier. Thread-safe."""

    def __init__(self, pointer: int) -> None:
        self._handle = Handle(pointer, lib.leasehold_seat_free, "seat")
        # The C function pointers handed to the library: alive until the seat is freed.
        self._callbacks: list[object] = []
        self._callbacks_lock = threading.Lock()
        with self._handle.use() as seat:
            self._session_id = decode(lib.leasehold_seat_session_id(seat)) or ""
        _open_seats.add(self)

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def state(self) -> SeatState:
        with self._handle.use() as seat:
            return SeatState(lib.leasehold_seat_get_state(seat))

    @property
    def active(self) -> bool:
        return self.state == SeatState.ACTIVE

    @property
    def lost_kind(self) -> LostKind:
        with self._handle.use() as seat:
            return LostKind(lib.leasehold_seat_lost_kind(seat))

    @property
    def lost_reason(self) -> str | None:
        """Why the seat was lost, in words (``"session ended (revoked)"``); None while it is
        not lost."""
        with self._handle.use() as seat:
            return take_string(lib.leasehold_seat_lost_reason(seat))

    @property
    def end_reason(self) -> str | None:
        """The server's reason when it ended the session (``"revoked"``, ``"inactivity"``,
        ``"user_deactivated"``...); None otherwise."""
        with self._handle.use() as seat:
            return decode(lib.leasehold_seat_end_reason(seat))

    @property
    def lease(self) -> str | None:
        """The latest signed lease (a JWT) the heartbeats keep fresh; verify it offline with
        ``Verifier``."""
        with self._handle.use() as seat:
            return take_string(lib.leasehold_seat_lease(seat))

    @property
    def expires_at(self) -> int:
        """When the session expires unless kept alive, as of the latest heartbeat (seconds
        since the Unix epoch)."""
        with self._handle.use() as seat:
            return int(lib.leasehold_seat_expires_at(seat))

    def wait(self, timeout: float | None = None) -> SeatState:
        """Waits until the seat leaves ``ACTIVE`` or ``timeout`` seconds have passed (None: no
        limit); answers the state."""
        ms = 2**64 - 1 if timeout is None else max(0, round(timeout * 1000))
        state = c_int32(0)
        with self._handle.use() as seat:
            check(lib.leasehold_seat_wait(seat, ms, byref(state)))
        return SeatState(state.value)

    def on_change(self, callback: SeatCallback) -> None:
        """Calls ``callback(state, reason)`` once, on a thread of the library, when the seat
        leaves ``ACTIVE`` (at once if it already has); replaces an earlier callback. An
        exception raised by the callback is printed and dropped. A callback not yet delivered
        when the seat is closed is dropped."""

        def trampoline(_user_data: object, state: int, reason: bytes | None) -> None:
            callback(SeatState(state), decode(reason))

        function = SEAT_CALLBACK(trampoline)
        with self._callbacks_lock:
            self._callbacks.append(function)
        with self._handle.use() as seat:
            check(lib.leasehold_seat_set_callback(seat, function, None))

    def release(self) -> None:
        """Gives the seat back now: stops the heartbeats and closes the session, waiting for the
        server. A seat already released, or ended by the server, releases without error."""
        with self._handle.use() as seat:
            check(lib.leasehold_seat_release(seat))

    def close(self) -> None:
        """Frees the seat, returning it first if still active (waiting at most 5 s for the
        server; ``release()`` waits as long as it takes and raises errors). Idempotent."""
        _open_seats.discard(self)
        self._handle.free()

    def __enter__(self) -> Seat:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.release()
        except LeaseholdError:
            # The block's own exception matters more; without one, the failure is raised.
            if exc_type is None:
                raise
        finally:
            self.close()

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.free()

    def __repr__(self) -> str:
        state = "closed" if self._handle.closed else self.state.name.lower()
        return f"<leasehold.Seat {self._session_id} {state}>"
