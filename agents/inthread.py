"""A call run in a thread of its own, whose value -- or what it raised -- is carried back to whoever waits for it.

A job runs its restic commands and dump tools beside its own work (a backup hashes while restic reads, a database
backup checksums while the dump streams, a manifest's restic waits on its stdin from the job's start): the
thread's outcome must reach the job's thread, exceptions included, and a failure must be seen as soon as it
happened, not only once the job's own work has ended.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class InThread(Generic[T]):
    """``call()`` in a daemon thread named ``name``, started at once.

    Raises ``RuntimeError`` when no thread can be started (the call never runs).
    """

    def __init__(self, call: Callable[[], T], name: str) -> None:
        self._call = call
        self._value: T | None = None
        self._returned = False
        self._raised: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
            self._returned = True
        except BaseException as error:  # carried to the waiting thread by result()
            self._raised = error

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self) -> None:
        """Until the call has ended, however it ended."""
        self._thread.join()

    def result(self) -> T:
        """Wait for the call; its value. Raises what it raised."""
        self._thread.join()
        if self._raised is not None:
            raise self._raised
        assert self._returned
        return self._value  # type: ignore[return-value]

    def value_if_returned(self) -> T | None:
        """Wait for the call; its value, or None when it raised (what it raised is then dropped)."""
        self._thread.join()
        return self._value if self._returned else None

    def failure(self) -> BaseException | None:
        """What the call raised, if it has already ended by raising; never waits."""
        return None if self._thread.is_alive() else self._raised
