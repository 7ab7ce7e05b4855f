"""The one place in the project that starts child processes.

Every external tool (restic, the database dump and load tools, throwaway database servers) is started through
:func:`run_process`: argv tuples only (never a shell), the command logged without
its environment, output streamed line by line to callbacks, the last lines of
stderr kept for the error message, and a bounded life: an overall timeout, a
stall watchdog and cooperative cancellation (SIGINT/SIGTERM of the agent) all end
the child the same way -- SIGINT first so restic can remove its lock, SIGKILL if it
does not exit within a grace period.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import io
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, cast

from agents.contract.errors import DrillError

log = logging.getLogger(__name__)

LineCallback = Callable[[str], None]

# How many stderr lines an error message carries; enough for restic's context,
# short enough for a result record.
STDERR_TAIL_LINES = 20
# How much of a child's output is read at once, and how far ahead it may write (its pipe's size).
PUMP_CHUNK = 1 << 20
# How often a running child's watch looks at cancellation, timeout and stall (its exit is seen at once).
WATCH_INTERVAL_SECONDS = 0.05
# How long a child gets after SIGINT before it is killed. restic needs a moment
# to remove its lock from the repository.
INTERRUPT_GRACE_SECONDS = 15.0


class Cancellation:
    """A flag the agent raises when it is asked to stop (SIGINT/SIGTERM).

    Running children are interrupted when it is set; new ones refuse to start.
    """

    def __init__(self, parent: Cancellation | None = None, *, hard: bool = False) -> None:
        """``parent``: a cancellation that also cancels this one (the agent's global one).

        ``hard``: children are killed at once (SIGKILL) instead of interrupted, for
        a child that must not finish what it is doing -- restic must not turn a
        truncated stream into a snapshot, which it does on SIGINT.
        """
        self._event = threading.Event()
        self._parent = parent
        self._reason = ""
        self.hard = hard

    def cancel(self, reason: str) -> None:
        """Ask every running and future child to stop, giving ``reason``."""
        self._reason = reason
        self._event.set()

    def reset(self) -> None:
        """Clear the flag (a new run in the same process, e.g. in tests)."""
        self._reason = ""
        self._event.clear()

    @property
    def reason(self) -> str:
        if self._event.is_set():
            return self._reason
        return self._parent.reason if self._parent is not None else ""

    @property
    def is_cancelled(self) -> bool:
        return self._event.is_set() or (self._parent is not None and self._parent.is_cancelled)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking when cancelled; whether it was."""
        if self._parent is not None:
            deadline = time.monotonic() + seconds
            while not self.is_cancelled and time.monotonic() < deadline:
                self._event.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            return self.is_cancelled
        return self._event.wait(seconds)


CANCELLATION = Cancellation()


def install_signal_handlers(cancellation: Cancellation = CANCELLATION) -> None:
    """Turn SIGINT and SIGTERM into a cancellation instead of an abrupt exit.

    The job in progress then stops its child cleanly and writes a failed record.
    """

    def handle(signum: int, _frame: object) -> None:
        cancellation.cancel(f"interrupted by {signal.Signals(signum).name}")

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


class ProcessStopped(DrillError):
    """The child was stopped by us: timeout, stall or cancellation.

    ``why`` is one of ``"timeout"``, ``"stalled"``, ``"cancelled"``.
    """

    code = "process_stopped"

    def __init__(self, argv: tuple[str, ...], why: str, detail: str, stderr_tail: tuple[str, ...]) -> None:
        super().__init__(f"{argv[0]} {why}: {detail}")
        self.argv = argv
        self.why = why
        self.detail = detail
        self.stderr_tail = stderr_tail


@dataclass(frozen=True)
class ProcessResult:
    """What a finished child left behind."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr_tail: tuple[str, ...]
    duration_seconds: float


class StallWatch:
    """Tells whether a child still makes progress.

    The caller calls :meth:`progress` whenever the child reports advancing work;
    :func:`run_process` stops the child when nothing advanced for ``seconds``.
    ``first_within`` is a shorter limit for the first report: a child that cannot
    even start its work (an unreachable repository) is given up on sooner.
    """

    def __init__(self, seconds: float, first_within: float | None = None) -> None:
        self.seconds = seconds
        self.first_within = first_within
        self._last = time.monotonic()
        self._progressed = False
        self._lock = threading.Lock()

    def progress(self) -> None:
        with self._lock:
            self._last = time.monotonic()
            self._progressed = True

    def restart(self) -> None:
        """Watch a new attempt of the same work: the shorter limit holds again until it reports."""
        with self._lock:
            self._last = time.monotonic()
            self._progressed = False

    def expect_progress_within(self, seconds: float) -> None:
        """From now on, progress is due within ``seconds`` (a child that waited on purpose now has work to do).

        A child that has not reported yet still owes its first report within ``first_within`` of its start."""
        with self._lock:
            self.seconds = seconds
            if self._progressed:
                self._last = time.monotonic()

    def stalled_for(self) -> float | None:
        """Seconds without progress beyond the limit in force, or None while within it."""
        with self._lock:
            limit = self.seconds if self._progressed or self.first_within is None else self.first_within
            idle = time.monotonic() - self._last
        return limit if idle > limit else None


def format_argv(argv: Iterable[str]) -> str:
    """Render argv for a log line. Secrets never reach argv, so nothing is masked here."""
    return " ".join(a if a and " " not in a else repr(a) for a in argv)


def _pump(stream: IO[bytes], on_line: LineCallback, chunk: int = 1 << 16) -> None:
    """Hand each line of ``stream`` to ``on_line`` (a last line without its newline too), then close it.

    Read a pipe's worth at a time, not a buffer's: a restic backup reports every file (millions of lines), and
    while the job's own thread keeps the interpreter busy, each read costs this thread a wait of up to the
    interpreter's switch interval (5 ms) before it may go on -- with 8 KiB reads, restic filled the pipe and
    waited for it (restic 0.18 at a million files: ≈ 10 s). Into one buffer, reused: a fresh MiB a read, freed
    in this thread, left the agent's memory tens of MiB higher at a million files. ``chunk``: the most read at
    once, the buffer's size (stdout is read :data:`PUMP_CHUNK` at a time; stderr, a few lines, less).
    """
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    unended = bytearray()  # the start of a line the last read did not end
    reader = cast(io.BufferedReader, stream)  # Popen's pipes (buffered): readinto1 reads the pipe at most once
    while size := reader.readinto1(buffer):
        last = buffer.rfind(b"\n", 0, size)
        if last < 0:
            unended += view[:size]
            continue
        at = 0
        if unended:
            at = buffer.find(b"\n", 0, size) + 1
            unended += view[:at - 1]
            on_line(unended.decode("utf-8", errors="replace"))
            unended = bytearray()
        while at <= last:
            end = buffer.find(b"\n", at, last + 1)
            on_line(str(view[at:end], "utf-8", errors="replace"))
            at = end + 1
        unended += view[last + 1:size]
    if unended:
        on_line(unended.decode("utf-8", errors="replace"))
    view.release()
    stream.close()


def _widen(pipe: IO[bytes]) -> None:
    """Let the child write :data:`PUMP_CHUNK` ahead of :func:`_pump` (Linux's pipe holds 64 KiB) while the pump
    waits its turn; where the system refuses (a user's pipes may hold only so much), the pipe stays as it was."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PUMP_CHUNK)


def _stop(child: subprocess.Popen[bytes], *, hard: bool = False) -> None:
    """Interrupt the child like a user pressing Ctrl-C, then kill it if it lingers (at once if ``hard``)."""
    if child.poll() is not None:
        return
    if hard:
        child.kill()
        child.wait()
        return
    try:
        child.send_signal(signal.SIGINT)
        child.wait(timeout=INTERRUPT_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        log.warning("child %d ignored SIGINT for %.0fs; killing it", child.pid, INTERRUPT_GRACE_SECONDS)
        child.kill()
        child.wait()


def run_process(
    argv: tuple[str, ...],
    *,
    env: Mapping[str, str],
    stdin: IO[bytes] | None = None,
    on_stdout_line: LineCallback | None = None,
    on_stderr_line: LineCallback | None = None,
    timeout: float | None = None,
    stall: StallWatch | None = None,
    cancellation: Cancellation = CANCELLATION,
    cwd: str | None = None,
    stdout_to: IO[bytes] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ProcessResult:
    """Run ``argv`` to completion and return its exit code and output.

    Given: the argv tuple and the complete environment of the child (the caller
    decides what it inherits; secrets go in files or the environment, never argv).
    stdout is collected unless ``on_stdout_line`` consumes it line by line or
    ``stdout_to`` (a binary file) receives it unchanged; stderr
    is always passed to ``on_stderr_line`` if given and its tail kept. ``on_start`` is given the child's pid
    as soon as it runs (to note it where a reaper finds it should this process die); if it raises, the child is
    killed and the error raised.

    Returns: a :class:`ProcessResult`; a non-zero exit code is *not* an exception
    here -- the caller's exit-code table decides what it means.

    Raises: :class:`ProcessStopped` when the child was stopped for a timeout, a
    stall or a cancellation; ``FileNotFoundError`` when the program is missing; whatever a line callback raised
    first, once the child is stopped (interrupted, so that restic removes its lock; killed when ``cancellation``
    is a hard one, whose owner must not let the child save what it has) and gone.
    """
    if cancellation.is_cancelled:
        raise ProcessStopped(argv, "cancelled", cancellation.reason, ())
    log.debug("running %s", format_argv(argv))
    started = time.monotonic()
    stdout_parts: list[str] = []
    stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    # Set when the child exits, or when a line callback fails: the watch below then stops the child.
    wake = threading.Event()
    failed: list[BaseException] = []

    def guarded(on_line: LineCallback) -> LineCallback:
        """``on_line``, whose first exception is kept for the caller; later lines are read and dropped, so that the
        child never blocks on a full pipe while it is being stopped."""
        def take(line: str) -> None:
            if failed:
                return
            try:
                on_line(line)
            except BaseException as error:  # raised to the caller once the child is gone
                failed.append(error)
                wake.set()
        return take

    def take_stdout(line: str) -> None:
        if on_stdout_line is None:
            stdout_parts.append(line)
        else:
            on_stdout_line(line)

    def take_stderr(line: str) -> None:
        stderr_tail.append(line)
        if on_stderr_line is not None:
            on_stderr_line(line)

    child = subprocess.Popen(
        argv,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=stdout_to if stdout_to is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        # Own process group: a Ctrl-C on the terminal reaches the agent only, and
        # the agent decides how its children stop.
        start_new_session=True,
    )
    if on_start is not None:
        try:
            on_start(child.pid)
        except BaseException:
            child.kill()
            child.wait()
            raise
    assert child.stderr is not None
    pumps = [threading.Thread(target=_pump, args=(child.stderr, guarded(take_stderr)), daemon=True)]
    if child.stdout is not None:
        if on_stdout_line is not None:  # a stream taken line by line (restic backup: a line a file)
            _widen(child.stdout)
        pumps.append(threading.Thread(target=_pump, args=(child.stdout, guarded(take_stdout), PUMP_CHUNK),
                                      daemon=True))
    for pump in pumps:
        pump.start()

    # A thread waits for the exit, so that the loop below wakes the moment the child ends (a poll with a sleep
    # would add up to its interval to every command: restic runs several per job).
    threading.Thread(target=_wait_then_set, args=(child, wake), daemon=True).start()
    stopped: tuple[str, str] | None = None
    while not wake.wait(WATCH_INTERVAL_SECONDS):
        if cancellation.is_cancelled:
            stopped = ("cancelled", cancellation.reason)
        elif timeout is not None and time.monotonic() - started > timeout:
            stopped = ("timeout", f"no result after {timeout:.0f}s")
        elif stall is not None and (limit := stall.stalled_for()) is not None:
            stopped = ("stalled", f"no progress for {limit:.0f}s")
        if stopped is not None:
            _stop(child, hard=stopped[0] == "cancelled" and cancellation.hard)
            break
    if failed:  # what the child still does is for a caller that will not take it
        _stop(child, hard=cancellation.hard)
    child.wait()
    for pump in pumps:
        pump.join(timeout=5)
    duration = time.monotonic() - started
    tail = tuple(stderr_tail)
    if stopped is not None:  # stopped first: a reader failing on what followed is not the cause
        raise ProcessStopped(argv, stopped[0], stopped[1], tail) from (failed[0] if failed else None)
    if failed:
        raise failed[0]
    return ProcessResult(argv, child.returncode, "\n".join(stdout_parts), tail, duration)


def _wait_then_set(child: subprocess.Popen[bytes], exited: threading.Event) -> None:
    child.wait()
    exited.set()


class StartedProcess:
    """A child whose stdout the caller reads itself (a dump streamed elsewhere).

    stderr is collected in the background; :meth:`finish` waits and returns the
    exit code with stderr's tail; :meth:`stop` interrupts it like :func:`run_process` does.
    """

    def __init__(self, argv: tuple[str, ...], env: Mapping[str, str]) -> None:
        log.debug("starting %s", format_argv(argv))
        self.argv = argv
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(env), start_new_session=True,
        )
        assert self._child.stdout is not None and self._child.stderr is not None
        self.stdout: IO[bytes] = self._child.stdout
        self._pump = threading.Thread(target=_pump, args=(self._child.stderr, self._tail.append), daemon=True)
        self._pump.start()

    @property
    def pid(self) -> int:
        return self._child.pid

    def stop(self, *, hard: bool = False) -> None:
        """Interrupt (SIGINT, then SIGKILL after a grace period), or kill at once if ``hard``."""
        _stop(self._child, hard=hard)

    def running(self) -> bool:
        return self._child.poll() is None

    def finish(self) -> tuple[int, tuple[str, ...]]:
        """Wait for the child; return its exit code (negative: killed by that signal) and stderr tail."""
        code = self._child.wait()
        self._pump.join(timeout=5)
        self.stdout.close()
        return code, tuple(self._tail)


def start_process(argv: tuple[str, ...], *, env: Mapping[str, str]) -> StartedProcess:
    """Start ``argv`` with its stdout as a pipe for the caller. Raises ``FileNotFoundError``."""
    return StartedProcess(argv, env)


def inherited_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment for a child, with ``extra`` on top.

    Variables that would make a child read a secret we did not give it on purpose
    (another repository's password) are removed.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "AWS_"))}
    env.update(extra)
    return env
