"""A context manager entered in a thread, so that the caller goes on while it starts.

A verification's throwaway database takes a second or two to start (initdb,
the server's start), while the caller waits for the repository check and reads
the manifest; once it knows what to load, it starts restic's dump too. The
scratch database's start need not stand in line before all of that.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Starting(Generic[T]):
    """``manager`` entered at once in a thread; :meth:`result` waits for what it gave, :meth:`close` (always
    call it, e.g. from an ``ExitStack``) waits for the start and exits it.

    The thread that entered it also exits it, and lives until then: a sandboxed server is started with
    ``--die-with-parent``, and the kernel's "parent" is the thread that started the child -- a thread that
    ended would take the throwaway server with it.
    """

    def __init__(self, manager: contextlib.AbstractContextManager[T], name: str) -> None:
        self._manager = manager
        self._value: T | None = None
        self._enter_raised: BaseException | None = None
        self._exit_raised: BaseException | None = None
        self._started = threading.Event()
        self._closing = threading.Event()
        self._asked = False  # whether result() was called: a failed start nobody asked about is logged
        self.seconds = 0.0  # how long entering took
        self._thread = threading.Thread(target=self._hold, name=f"starting-{name}", daemon=True)
        self._thread.start()

    def _hold(self) -> None:
        began = time.monotonic()
        try:
            self._value = self._manager.__enter__()
        except BaseException as error:  # raised by result(), in the caller's thread
            self._enter_raised = error
            return
        finally:
            self.seconds = time.monotonic() - began
            self._started.set()
        self._closing.wait()
        try:
            self._manager.__exit__(None, None, None)
        except BaseException as error:  # raised by close(), in the caller's thread
            self._exit_raised = error

    def result(self) -> T:
        """Wait for the start; what entering gave. Raises what entering raised."""
        self._started.wait()
        self._asked = True
        if self._enter_raised is not None:
            raise self._enter_raised
        return self._value  # type: ignore[return-value]

    def close(self) -> None:
        """Wait for the start, then exit what was entered (in the thread that entered it) and wait for that.
        Raises what exiting raised."""
        self._closing.set()
        self._thread.join()
        if self._enter_raised is not None and not self._asked:
            log.info("%s did not start (no longer needed): %s", self._thread.name, self._enter_raised)
        raised, self._exit_raised = self._exit_raised, None
        if raised is not None:
            raise raised
