"""Stopping a database's work that runs past its time.

A restored database is the tenant's: its tables can be made slow to read on
purpose (a MariaDB virtual column that builds megabytes a row), and a drill
waits for every verification. The server does the work, so the agent cannot
simply stop waiting: it must ask the server to stop (PostgreSQL's cancel
request, MariaDB's ``KILL``), and the statement waiting on it then fails.

A cancel that lands between two statements stops nothing, so once the time is
up the stop is repeated every few moments until the work ends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from agents.engines.base import ChecksumsTookTooLong
from targets.tables import DatabaseUnavailable

log = logging.getLogger(__name__)

REPEAT_EVERY = 1.0  # seconds between two stops once the time is up (less for a shorter limit)


class Overtime:
    """Whether the time ran out (then whatever failed in the block failed because it was stopped)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.fired = False


@contextlib.contextmanager
def stop_after(seconds: float | None, stop: Callable[[], None], what: str = "work",
               describe: Callable[[BaseException], str] = str) -> Iterator[Overtime]:
    """Call ``stop`` once ``seconds`` have passed in the block (None: never), and again every moment until the
    block ends.

    Given ``stop``, which asks the server to end what the block waits on (called from another thread; what it
    raises is logged, not raised: the next repetition tries again; it should not block for long, as the block's end
    waits for it). Yields an :class:`Overtime` whose ``fired`` says whether ``stop`` was called. An error the block
    raises after that is the stop's doing: it comes out as :class:`ChecksumsTookTooLong`, ``describe(error)`` its
    detail. Raises ``DatabaseUnavailable`` when no thread can be had to watch.
    """
    overtime = Overtime(seconds)
    if seconds is None:
        yield overtime
        return
    limit = seconds
    done = threading.Event()
    every = min(REPEAT_EVERY, max(seconds / 4, 0.01))

    def watch() -> None:
        assert seconds is not None
        if done.wait(seconds):
            return
        overtime.fired = True
        failures = 0
        while True:
            try:
                stop()
            except Exception as error:  # a failed stop is retried; the block is still waited on
                failures += 1
                log.log(logging.WARNING if failures == 1 else logging.DEBUG,
                        "could not stop the %s after %.0f s (try %d): %s", what, seconds, failures, error)
            if done.wait(every):
                return

    watcher = threading.Thread(target=watch, name=f"overtime {what}", daemon=True)
    try:
        watcher.start()
    except RuntimeError as error:  # no thread to be had: the work may not run without its limit
        raise DatabaseUnavailable(f"no thread to watch the {what}' time limit: {error}") from error
    try:
        yield overtime
    except Exception as error:
        if overtime.fired:
            raise ChecksumsTookTooLong(limit, describe(error)) from error
        raise
    finally:
        done.set()
        watcher.join()
