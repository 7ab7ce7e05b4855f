"""Work a verification does without a lock while the repository check runs: used only if it succeeded.

The check holds the repository's exclusive lock for its whole run, so anything
that waited for a lock would wait for the check. A read that takes no lock
(``--no-lock``) can start beside it instead: restic still authenticates and
hashes everything it reads, so what such a read returns is the repository's
content, exactly as a locked read would return it. What it cannot rule out is
a ``prune`` elsewhere removing data it still has to read: in the moment before
the check took its lock, or after the check ended, when a long restore goes on
without any lock. Such a read fails. So a failure here is not reported (except
the ``final`` ones, which say something about the content itself); the caller
does the work again, locked, after the check, and reports that attempt's
failure. Nothing done beside the check is used unless the check passed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from agents import process
from agents.contract.errors import DrillError

log = logging.getLogger(__name__)

T = TypeVar("T")


class BesideCheck(Generic[T]):
    """``work`` in a thread, started at once, stoppable through the cancellation it is given.

    ``final``: exceptions that say something about the content itself (not about the moment it was read), which
    a locked read would raise too: :meth:`result` raises them instead of asking for the work again.
    """

    def __init__(self, what: str, work: Callable[[process.Cancellation], T],
                 final: tuple[type[Exception], ...] = ()) -> None:
        self._what = what
        self._stop = process.Cancellation(parent=process.CANCELLATION)
        self._value: T | None = None
        self._succeeded = False
        self._final: Exception | None = None
        self._unexpected: Exception | None = None  # a bug, not a failed read: raised by result(), not redone
        self.seconds = 0.0  # how long the work ran
        self._thread = threading.Thread(target=self._run, args=(work, final), name=f"beside-check-{what}",
                                        daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[process.Cancellation], T], final: tuple[type[Exception], ...]) -> None:
        started = time.monotonic()
        try:
            self._value = work(self._stop)
            self._succeeded = True
        except final as error:
            self._final = error
        except (DrillError, OSError) as error:
            if not self._stop.is_cancelled:
                log.info("the %s beside the check failed (%s); it is done again after the check", self._what, error)
        except Exception as error:  # carried to the caller's thread by result()
            self._unexpected = error
        finally:
            self.seconds = time.monotonic() - started

    def result(self) -> tuple[bool, T | None]:
        """Wait for the work; (True, its value) when it succeeded, (False, None) when it must be done again.
        Raises the ``final`` exception the work raised, and any it did not expect (a bug)."""
        self._thread.join()
        for raised in (self._final, self._unexpected):
            if raised is not None:
                raise raised
        return self._succeeded, self._value

    def drop(self) -> None:
        """Stop the work if it still runs (the check failed, or the job ended) and wait for it."""
        self._stop.cancel(f"the {self._what} is no longer needed")
        self._thread.join()
