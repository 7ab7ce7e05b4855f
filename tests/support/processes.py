"""Finding and killing a real child process mid-run, to inject a fault real parts can't produce on demand."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest


def pids_of(programs: tuple[bytes, ...], argument: str) -> list[int]:
    """Processes whose program name ends with one of ``programs`` and whose argv holds ``argument``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(programs) and argument.encode() in argv:
            pids.append(int(entry))
    return pids


def kill_after_start(programs: tuple[bytes, ...], argument: str, *, after: float = 0.3) -> tuple[threading.Thread,
                                                                                                list[int]]:
    """Start a thread that SIGKILLs the first matching process ``after`` seconds into its run.

    Returns the thread (join it) and the list it fills with the killed pids.
    """
    killed: list[int] = []

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for pid in pids_of(programs, argument):
                time.sleep(after)  # let it stream part of its output
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread, killed


def run_cli(*argv: str, timeout: float = 600, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one of the project's commands (``drill-agent``, ``drillctl``) as an operator would; ``input_text`` on
    its standard input (else none)."""
    program = shutil.which(argv[0])
    if program is None:
        pytest.fail(f"{argv[0]} is not on PATH: install the project (bash scripts/setup.sh)", pytrace=False)
    return subprocess.run([program, *argv[1:]], capture_output=True, text=True, check=False, timeout=timeout,
                          input=input_text if input_text is not None else "")
