"""A C handle shared by threads: calls run while it is live, and freeing it waits for the calls
in flight, so that no thread uses a handle another one freed (the C rule is that a handle
must not be used while or after it is freed)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import InvalidArgument


class Handle:
    def __init__(self, pointer: int, free: Callable[[int], None], what: str) -> None:
        self._pointer: int | None = pointer
        self._free = free
        self._what = what
        self._calls = 0
        self._idle = threading.Condition()

    @contextmanager
    def use(self) -> Iterator[int]:
        """The pointer, for the duration of one call; raises once the handle was freed."""
        with self._idle:
            if self._pointer is None:
                raise InvalidArgument(
                    "invalid_argument", f"the {self._what} was closed", None, 0
                )
            pointer = self._pointer
            self._calls += 1
        try:
            yield pointer
        finally:
            with self._idle:
                self._calls -= 1
                self._idle.notify_all()

    @property
    def closed(self) -> bool:
        return self._pointer is None

    def free(self) -> None:
        """Frees the handle once no call is using it; later calls raise. Idempotent."""
        with self._idle:
            pointer, self._pointer = self._pointer, None
            while self._calls > 0:
                self._idle.wait()
        if pointer is not None:
            self._free(pointer)
