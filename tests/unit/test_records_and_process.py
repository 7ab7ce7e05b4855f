"""Result records and their outbox; the process chokepoint's bounds."""

from __future__ import annotations

import json
import pathlib
import sys
import threading
import time

import pytest

from agents import process
from agents.records import Outbox, ResultRecord, decide_outcome, job_record
from agents.state import PolicyBusy, StateDir


def test_outcome_is_success_only_without_error_findings() -> None:
    record = ResultRecord("backup", host="h")
    assert decide_outcome(record, complete=True) == "success"
    record.add("changed_during_backup", "warning", "x")
    assert decide_outcome(record, complete=True) == "success"
    record.add("unreadable", "error", "y")
    assert decide_outcome(record, complete=True) == "partial"
    assert decide_outcome(ResultRecord("backup", host="h"), complete=False) == "failed"


def test_a_job_that_raises_still_writes_a_failed_record(tmp_path: pathlib.Path) -> None:
    outbox = Outbox(str(tmp_path))
    record = ResultRecord("backup", host="h")
    with pytest.raises(RuntimeError), job_record(outbox, record) as r:
        r.outcome = "success"  # set early, then the job blows up
        raise RuntimeError("disk on fire")
    [path] = outbox.list()
    document = outbox.read_verified(path)
    assert document["outcome"] == "failed"
    assert document["findings"][0]["code"] == "internal_error"
    assert "disk on fire" in document["findings"][0]["message"]
    assert document["schema"] == "drill.result/v1"


def test_outbox_writes_are_complete_files(tmp_path: pathlib.Path) -> None:
    outbox = Outbox(str(tmp_path))
    record = ResultRecord("backup", host="h", details={"policy": "p"})
    record.outcome = "success"
    with job_record(outbox, record):
        pass
    assert record.path is not None and outbox.list() == [record.path]
    assert outbox.read_verified(record.path)["policy"] == "p"
    envelope = json.loads(pathlib.Path(record.path).read_text())
    assert envelope["payloadType"] == "application/vnd.drill.record+json"
    assert envelope["signatures"][0]["keyid"] == outbox.key.keyid
    assert oct((tmp_path / "keys" / "signing.key").stat().st_mode & 0o777) == "0o600"
    assert not [p for p in (tmp_path / "outbox").iterdir() if p.name.startswith(".")]


def test_policy_lock_refuses_a_second_run(tmp_path: pathlib.Path) -> None:
    state = StateDir(str(tmp_path))
    with state.policy_lock("nightly"), pytest.raises(PolicyBusy), state.policy_lock("nightly"):
        pass
    with state.policy_lock("nightly"):  # released after use
        pass


def _python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def test_process_collects_output_and_exit_code() -> None:
    result = process.run_process(_python("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"),
                                 env={"PATH": "/usr/bin"})
    assert (result.returncode, result.stdout, result.stderr_tail) == (3, "out", ("err",))


def test_timeout_stops_the_child() -> None:
    started = time.monotonic()
    with pytest.raises(process.ProcessStopped) as caught:
        process.run_process(_python("import time; time.sleep(30)"), env={}, timeout=0.5)
    assert caught.value.why == "timeout"
    assert time.monotonic() - started < 10


def test_stall_watch_stops_a_child_that_makes_no_progress() -> None:
    stall = process.StallWatch(0.5)
    with pytest.raises(process.ProcessStopped) as caught:
        process.run_process(_python("import time; print('hello', flush=True); time.sleep(30)"), env={},
                            stall=stall, on_stdout_line=lambda _line: None)
    assert caught.value.why == "stalled"


def test_cancellation_interrupts_with_sigint_first() -> None:
    cancellation = process.Cancellation()
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *a: (print('cleaned up', flush=True), sys.exit(130)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    lines: list[str] = []
    timer = threading.Timer(0.5, cancellation.cancel, args=("test stop",))
    timer.start()
    with pytest.raises(process.ProcessStopped) as caught:
        process.run_process(_python(code), env={}, cancellation=cancellation, on_stdout_line=lines.append)
    assert caught.value.why == "cancelled"
    assert lines == ["ready", "cleaned up"]
    with pytest.raises(process.ProcessStopped):  # nothing new starts after a cancellation
        process.run_process(_python("pass"), env={}, cancellation=cancellation)


def test_child_environment_drops_inherited_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTIC_PASSWORD", "leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak")
    env = process.inherited_environment({"RESTIC_REPOSITORY": "/r"})
    assert "RESTIC_PASSWORD" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["RESTIC_REPOSITORY"] == "/r"
