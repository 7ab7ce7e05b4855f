"""Result records and their outbox; the process chokepoint's bounds."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pathlib
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from agents import api, process
from agents import outbox as outbox_module
from agents.cli import _print_record
from agents.contract.records import BackupTarget, RepositoryRef, SignedRecord, parse_record
from agents.engines.base import ChecksumsTookTooLong
from agents.engines.overtime import stop_after
from agents.jobs.starting import Starting
from agents.keys import KeyStore
from agents.outbox import Outbox, RecordStore
from agents.records import BackupDraft, RecordDraft, decide_outcome, job_record
from agents.state import PolicyBusy, StateDir
from policies.levels import Level
from tests.support.records import backup_document


def _draft() -> RecordDraft[BackupDraft]:
    return RecordDraft("h", BackupDraft(policy="p", target=BackupTarget(name="t", kind="files"),
                                        repository=RepositoryRef(name="local", site="local"),
                                        level={"requested": Level.FULL}))


def _outbox(path: pathlib.Path) -> Outbox:
    return Outbox(str(path), KeyStore(str(path)))


def _successful_job(outbox: Outbox) -> RecordDraft[BackupDraft]:
    """A job that succeeded, its record written to ``outbox``."""
    draft = _draft()
    draft.outcome = "success"
    with job_record(outbox, draft):
        pass
    return draft


def test_outcome_is_success_only_without_error_findings() -> None:
    draft = _draft()
    assert decide_outcome(draft, complete=True) == "success"
    draft.add("changed_during_backup", "warning", "x")
    assert decide_outcome(draft, complete=True) == "success"
    draft.add("unreadable", "error", "y")
    assert decide_outcome(draft, complete=True) == "partial"
    assert decide_outcome(_draft(), complete=False) == "failed"


def test_a_job_that_raises_still_writes_a_failed_record(tmp_path: pathlib.Path) -> None:
    outbox = _outbox(tmp_path)
    draft = _draft()
    with pytest.raises(RuntimeError), job_record(outbox, draft) as r:
        r.outcome = "success"  # set early, then the job blows up
        raise RuntimeError("disk on fire")
    [path] = outbox.list()
    record = RecordStore(outbox).read(path).record
    assert record.outcome == "failed"  # type: ignore[union-attr]
    assert record.findings[0].code == "internal_error"  # type: ignore[union-attr]
    assert "disk on fire" in record.findings[0].message  # type: ignore[union-attr]
    assert record.schema_ == "drill.result/v1"


def test_outbox_writes_are_complete_files(tmp_path: pathlib.Path) -> None:
    outbox = _outbox(tmp_path)
    signed = _successful_job(outbox).written()
    assert signed.path is not None and outbox.list() == [signed.path]
    assert RecordStore(outbox).read(signed.path).record.policy == "p"  # type: ignore[union-attr]
    envelope = json.loads(pathlib.Path(signed.path).read_text())
    assert envelope["payloadType"] == "application/vnd.drill.record+json"
    assert envelope["signatures"][0]["keyid"] == outbox.keys.key.keyid
    assert oct((tmp_path / "keys" / "signing.key").stat().st_mode & 0o777) == "0o600"
    assert not [p for p in (tmp_path / "outbox").iterdir() if p.name.startswith(".")]


def test_a_record_taken_by_another_ingest_after_the_listing_is_not_read_as_unreadable(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two ingests at once: one lists the outbox, the other moves a record to sent/ before the first reads it.
    outbox = _outbox(tmp_path)
    _successful_job(outbox)
    [kept] = outbox.list()
    (tmp_path / "outbox" / "broken.json").write_text("{not json")
    taken = str(tmp_path / "outbox" / "taken-meanwhile.json")
    listed = [kept, str(tmp_path / "outbox" / "broken.json"), taken]
    monkeypatch.setattr(outbox, "list", lambda: listed)
    found = list(outbox.read_waiting())
    assert [path for path, _ in found] == listed[:2]
    assert found[0][1] == json.loads(pathlib.Path(kept).read_text())
    assert "is not JSON" in found[1][1]["unreadable"]  # type: ignore[index]


def test_an_agent_reads_only_the_oldest_batch_of_a_long_backlog(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    outbox = _outbox(tmp_path)
    for _ in range(3):
        _successful_job(outbox)
    read: list[str] = []
    real_read = outbox_module.read_envelope
    monkeypatch.setattr(outbox_module, "read_envelope", lambda path: read.append(path) or real_read(path))
    agent = api.LocalAgent.__new__(api.LocalAgent)
    monkeypatch.setattr(agent, "_outbox", lambda: outbox)
    waiting = agent.waiting(limit=2)
    assert [w.path for w in waiting] == outbox.list()[:2] == read  # the third is not even read
    assert len(agent.waiting()) == 3


def test_the_outbox_listing_names_what_is_not_a_readable_record_and_shows_the_rest(tmp_path: pathlib.Path) -> None:
    outbox = _outbox(tmp_path)
    _successful_job(outbox)
    [kept] = outbox.list()
    (tmp_path / "outbox" / "broken.json").write_text("{not json")
    (tmp_path / "outbox" / "no-envelope.json").write_text('{"payload": 1}')
    records, unreadable = api.waiting_records(str(tmp_path))
    assert [r.path for r in records] == [kept] and records[0].record.kind == "backup"
    assert sorted((pathlib.Path(path).name, "JSON" in why or "lacks" in why) for path, why in unreadable) == [
        ("broken.json", True), ("no-envelope.json", True)]


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


def test_the_child_s_pid_is_given_as_it_starts_and_a_failing_note_stops_it() -> None:
    noted: list[int] = []
    result = process.run_process(_python("import os; print(os.getpid())"), env={"PATH": "/usr/bin"},
                                 on_start=noted.append)
    assert noted == [int(result.stdout)]

    def cannot_note(pid: int) -> None:
        noted.append(pid)
        raise OSError("no space left on device")

    started = time.monotonic()
    with pytest.raises(OSError, match="no space"):
        process.run_process(_python("import time; time.sleep(30)"), env={"PATH": "/usr/bin"}, on_start=cannot_note)
    assert time.monotonic() - started < 10
    with pytest.raises(ProcessLookupError):
        os.kill(noted[-1], 0)  # killed and reaped, not left running


def test_a_failing_line_callback_stops_the_child_and_its_error_reaches_the_caller() -> None:
    # A child writing far more than a pipe holds: were the failed reader's thread simply gone, the child would block
    # on its full pipe until a stall watch (minutes, in a job) stopped it, and the caller would see "stalled".
    seen: list[str] = []

    def refuse_the_third(line: str) -> None:
        seen.append(line)
        if len(seen) == 3:
            raise ValueError(f"cannot take {line!r}")

    code = "import sys, time\nfor n in range(200000): print('line', n)\nsys.stdout.flush()\ntime.sleep(30)\n"
    started = time.monotonic()
    with pytest.raises(ValueError, match="cannot take 'line 2'"):
        process.run_process(_python(code), env={}, on_stdout_line=refuse_the_third, timeout=20)
    assert time.monotonic() - started < 10
    assert len(seen) == 3  # nothing handed on after the failure


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


def test_a_stall_watch_told_to_expect_progress_keeps_the_first_report_due() -> None:
    # A restic that waited on purpose is given stall_timeout once it has work; one that never reported (it could
    # not open the repository) still owes its first report within first_within of its start.
    waited = process.StallWatch(math.inf, first_within=0.2)
    waited.progress()
    time.sleep(0.3)
    waited.expect_progress_within(0.2)
    assert waited.stalled_for() is None  # the clock restarts
    time.sleep(0.3)
    assert waited.stalled_for() == 0.2
    silent = process.StallWatch(math.inf, first_within=0.2)
    silent.expect_progress_within(60)
    time.sleep(0.3)
    assert silent.stalled_for() == 0.2


def test_a_context_entered_in_a_thread_is_exited_by_that_thread_which_lives_until_then() -> None:
    # A sandboxed server dies with the thread that started it (--die-with-parent): that thread must outlive it.
    events: list[tuple[str, int]] = []
    release = threading.Event()

    @contextlib.contextmanager
    def server() -> Iterator[str]:
        events.append(("entered", threading.get_ident()))
        release.wait(5)
        yield "ready"
        events.append(("exited", threading.get_ident()))

    starting = Starting(server(), "server")
    events.append(("caller goes on", threading.get_ident()))
    release.set()
    assert starting.result() == "ready"
    assert starting._thread.is_alive()  # holding what it started
    starting.close()
    assert [e for e, _ in events if e != "caller goes on"] == ["entered", "exited"]
    by = {e: thread for e, thread in events}
    assert by["entered"] == by["exited"] != by["caller goes on"]
    assert starting.seconds > 0


def test_a_failed_start_is_raised_by_result_and_a_failed_exit_by_close() -> None:
    @contextlib.contextmanager
    def failing_start() -> Iterator[None]:
        raise OSError("no room")
        yield

    starting: Starting[None] = Starting(failing_start(), "failing")
    with pytest.raises(OSError, match="no room"):
        starting.result()
    starting.close()  # nothing was entered: nothing to exit

    @contextlib.contextmanager
    def failing_stop() -> Iterator[None]:
        yield
        raise RuntimeError("could not stop")

    starting = Starting(failing_stop(), "stopping")
    starting.result()
    with pytest.raises(RuntimeError, match="could not stop"):
        starting.close()


def test_overtime_stops_again_until_the_block_ends_and_never_before_its_time() -> None:
    calls: list[float] = []

    def stop() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise OSError("the first stop fails")  # logged; the next one tries again

    started = time.monotonic()
    with stop_after(0.05, stop, "test") as overtime:
        time.sleep(0.4)  # a stop landing between two statements stops nothing: it must come again
    assert overtime.fired and len(calls) >= 3
    assert calls[0] - started >= 0.05
    count = len(calls)
    time.sleep(0.1)
    assert len(calls) == count  # the watch ended with the block

    with stop_after(5, stop, "test") as quick:
        pass
    with stop_after(None, stop, "test") as unlimited:
        time.sleep(0.05)
    assert not quick.fired and not unlimited.fired and len(calls) == count

    # What fails once the stop was sent is the stop's doing; before, it is itself.
    with pytest.raises(ChecksumsTookTooLong, match="canceled"), stop_after(0.01, lambda: None, "test"):
        time.sleep(0.1)
        raise OSError("canceled by the server")
    with pytest.raises(OSError, match="no such table"), stop_after(5, lambda: None, "test"):
        raise OSError("no such table")


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


def test_a_database_backup_prints_its_tables_and_rows(capsys: pytest.CaptureFixture[str]) -> None:
    document = backup_document(target={"name": "db", "kind": "postgres", "database": "shop"}, manifest={
        "digest": "sha256:" + "1" * 64, "snapshot_id": "2" * 64, "schema_digest": "sha256:" + "3" * 64,
        "dump_digest": "sha256:" + "4" * 64, "dump_bytes": 1000, "tables": 12, "rows": 34567})
    _print_record(SignedRecord(envelope={}, record=parse_record(document), keyid="k"))
    line = capsys.readouterr().out.splitlines()[0]
    assert "nightly/db/shop" in line and "tables 12  rows 34567" in line


def test_a_childs_output_reaches_its_reader_line_by_line_however_the_pipe_cuts_it() -> None:
    # The pump reads a MiB at a time and splits the lines itself: what it hands on must be what reading line by line
    # gave -- empty lines, a carriage return, a character cut in two by the pipe, a line longer than a read, a last
    # line without its newline, a byte that is not UTF-8.
    long_line = b"x" * (3 * process.PUMP_CHUNK + 5)
    payload = b"first\n\nwith\r\n" + "caf\u00e9 \u4e2d".encode() * 3000 + b"\n\xff odd\n" + long_line + b"\nlast"
    script = ("import os, sys\n"
              "data = sys.stdin.buffer.read()\n"
              "for i in range(0, len(data), 4093): os.write(1, data[i:i + 4093])\n")
    read, write = os.pipe()

    def feed() -> None:
        with open(write, "wb") as pipe:
            pipe.write(payload)

    lines: list[str] = []
    writer = threading.Thread(target=feed)
    with open(read, "rb") as stdin:
        writer.start()
        result = process.run_process(_python(script), env={"PATH": "/usr/bin"}, stdin=stdin,
                                     on_stdout_line=lines.append)
    writer.join()
    assert result.returncode == 0
    expected = [raw.decode("utf-8", errors="replace").rstrip("\n") for raw in io.BytesIO(payload)]
    assert lines == expected and lines[-1] == "last" and lines[-2] == long_line.decode() and lines[2] == "with\r"


class _Pieces:
    """A stream that gives its bytes in the pieces it was given, one piece a read."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    def readinto1(self, buffer: bytearray) -> int:
        if not self._pieces:
            return 0
        piece = self._pieces.pop(0)
        assert len(piece) <= len(buffer)
        buffer[:len(piece)] = piece
        return len(piece)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("pieces", [
    [b"one\n", b"two\n"],  # a read that ends exactly where its line ends
    [b"par", b"tial\nnext", b"\n"],  # a line begun in one read, ended in the next
    [b"lo", b"ng", b" line", b"\nrest"],  # reads without a newline, then a last line without one
    [b"carried", b"\n", b"\n", b"x\n"],  # a newline first in a read after a carried-over start; an empty line
    [b"\xc3", b"\xa9t\xc3\xa9\n\xff\n"],  # a character cut in two by the reads; a byte that is not UTF-8
])
def test_the_pump_hands_on_the_lines_a_line_by_line_read_would_give(pieces: list[bytes]) -> None:
    expected = [raw.decode("utf-8", errors="replace").rstrip("\n") for raw in io.BytesIO(b"".join(pieces))]
    lines: list[str] = []
    process._pump(_Pieces(list(pieces)), lines.append, chunk=16)  # type: ignore[arg-type]
    assert lines == expected
