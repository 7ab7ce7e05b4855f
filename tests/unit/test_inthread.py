"""A call in a thread of its own: its value or what it raised reaches the waiting thread, a failure at once."""

from __future__ import annotations

import threading

import pytest

from agents.inthread import InThread


def test_the_value_and_the_exception_reach_the_thread_that_waits() -> None:
    assert InThread(lambda: 42, "answer").result() == 42

    def refuse() -> int:
        raise OSError(5, "Input/output error")

    failed = InThread(refuse, "refusing")
    with pytest.raises(OSError, match="Input/output"):
        failed.result()
    assert isinstance(failed.failure(), OSError)
    assert failed.value_if_returned() is None


def test_a_failure_is_seen_without_waiting_and_a_running_call_is_not_taken_for_one() -> None:
    release = threading.Event()

    def slow() -> str:
        release.wait(10)
        return "done"

    running = InThread(slow, "slow")
    assert running.running and running.failure() is None  # never waits for a call that has not ended
    release.set()
    assert running.value_if_returned() == "done" and not running.running
