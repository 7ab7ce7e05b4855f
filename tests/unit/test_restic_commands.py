"""Pure builders of restic commands, tested by equality; version gates; exit codes; JSON messages."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from agents.restic import commands, excludes
from agents.restic.exitcodes import ResticOutcome, classify_exit
from agents.restic.features import ResticVersion, UnsupportedResticVersion, parse_version
from agents.restic.messages import (
    BackupError,
    BackupStatus,
    BackupSummary,
    ExitError,
    MalformedResticOutput,
    parse_backup_message,
    parse_snapshots,
)
from agents.restic.repository import Repository
from agents.restic.runner import lock_retry_waits

V014 = ResticVersion(0, 14, 0)
V018 = ResticVersion(0, 18, 0)


def test_global_flags_gate_the_stuck_request_timeout_by_version() -> None:
    assert commands.make_global_flags(V014, "/c", json=True) == ("--json", "--cache-dir", "/c")
    assert commands.make_global_flags(V018, None, json=False) == ("--no-cache", "--stuck-request-timeout", "2m")


def test_full_backup_forces_and_ignores_parent() -> None:
    argv = commands.make_backup_command(
        "restic", ("--json",), paths=["/srv/a", "-odd"], exclude_file="/tmp/x", excludes=["/srv/a/$HOME"],
        host="h", tags=["a=1", "b=2"], parent="p", force=True,
    )
    assert argv == (
        "restic", "--json", "-vv", "backup", "--host", "h", "--exclude-file", "/tmp/x", "--exclude", "/srv/a/$HOME",
        "--tag", "a=1", "--tag", "b=2", "--force", "--", "/srv/a", "-odd",
    )


def test_incremental_backup_names_its_parent() -> None:
    argv = commands.make_backup_command(
        "restic", (), paths=["/srv"], exclude_file=None, host="h", tags=[], parent="abc", force=False
    )
    assert argv[-4:] == ("--parent", "abc", "--", "/srv")
    assert "--force" not in argv and "--exclude-file" not in argv


def test_a_snapshot_time_given_to_restic_is_utc_to_the_microsecond() -> None:
    moment = datetime(2026, 12, 1, 8, 25, 3, 123456, tzinfo=timezone(timedelta(hours=8)))
    assert commands.snapshot_time_flag(moment) == "2026-12-01 00:25:03.123456"
    assert commands.SNAPSHOT_TIME_ZONE == {"TZ": "UTC"}  # the zone restic reads it in
    argv = commands.make_backup_stdin_command("r", (), filename="d", host="h", tags=[], time="2026-12-01 00:25:03")
    assert argv[-2:] == ("--time", "2026-12-01 00:25:03")
    assert commands.make_backup_command("r", (), paths=["/srv"], exclude_file=None, host="h", tags=[], parent=None,
                                        force=True, time="T")[-4:] == ("--time", "T", "--", "/srv")


def test_only_a_repository_on_a_local_path_has_a_local_folder() -> None:
    assert Repository("a", "/srv/repo").local_path == "/srv/repo"
    assert Repository("b", "local:/srv/repo").local_path == "/srv/repo"
    for url in ("s3:http://127.0.0.1:9000/bucket", "rclone:remote:bucket", "sftp:host:/srv", "relative/repo"):
        assert Repository("c", url).local_path is None, url


def test_exclusions_are_literal_paths() -> None:
    made = excludes.make_exclusions(["/srv/a*b", "/srv/[x]", "/srv/back\\slash", "/srv/$HOME", "/srv/ends "])
    assert made.file_lines == ("/srv/a\\*b", "/srv/\\[x]", "/srv/back\\\\slash")
    assert made.argv_patterns == ("/srv/$HOME", "/srv/ends ")
    assert made.file_text() == b"/srv/a\\*b\n/srv/\\[x]\n/srv/back\\\\slash\n"


def test_stdin_backup_and_listing_commands() -> None:
    assert commands.make_backup_stdin_command("r", (), filename="m.json", host="h", tags=["t"]) == (
        "r", "backup", "--stdin", "--stdin-filename", "m.json", "--host", "h", "--tag", "t",
    )
    assert commands.make_snapshots_command("r", ("--json",), host="h", snapshot_ids=["a"]) == (
        "r", "--json", "snapshots", "--host", "h", "a",
    )
    assert commands.make_forget_command("r", (), ["a", "b"]) == ("r", "forget", "a", "b")
    assert commands.make_copy_command("r", (), ["a"]) == ("r", "copy", "a")


def test_no_builder_puts_a_password_on_argv() -> None:
    argv = commands.make_backup_command("r", commands.make_global_flags(V018, "/c", json=True),
                                        paths=["/l"], exclude_file=None, host="h", tags=[], parent=None,
                                        force=False)
    assert not any("password" in a for a in argv)


def test_version_parsing_and_feature_gates() -> None:
    version = parse_version("restic 0.14.0 compiled with go1.19.8 on linux/amd64\n")
    assert version == V014
    assert not version.has_json_restore and not version.prints_full_snapshot_ids
    assert parse_version("restic 0.18.0 compiled with go1.24.4 on linux/amd64").prints_full_snapshot_ids
    with pytest.raises(UnsupportedResticVersion, match="too old"):
        parse_version("restic 0.12.1 compiled with go1.16")
    with pytest.raises(UnsupportedResticVersion, match="cannot read"):
        parse_version("rustic 1.0")


@pytest.mark.parametrize(
    ("code", "version", "stderr", "expected"),
    [
        (0, V014, [], ResticOutcome.SUCCESS),
        (3, V014, [], ResticOutcome.PARTIAL),
        (130, V018, [], ResticOutcome.INTERRUPTED),
        (12, V018, [], ResticOutcome.WRONG_PASSWORD),
        (10, V018, [], ResticOutcome.NO_REPOSITORY),
        (11, V018, [], ResticOutcome.LOCKED),
        # 0.14 cannot exit 10..12: such a code is unknown there, hence a failure.
        (12, V014, [], ResticOutcome.UNKNOWN_EXIT_CODE),
        # 0.17.0 has 10 and 11 but not yet 12 (0.17.1).
        (11, ResticVersion(0, 17, 0), [], ResticOutcome.LOCKED),
        (12, ResticVersion(0, 17, 0), [], ResticOutcome.UNKNOWN_EXIT_CODE),
        (12, ResticVersion(0, 17, 1), [], ResticOutcome.WRONG_PASSWORD),
        (77, V018, [], ResticOutcome.UNKNOWN_EXIT_CODE),
        (1, V014, ["Fatal: wrong password or no key found"], ResticOutcome.WRONG_PASSWORD),
        (1, V014, ["Fatal: unable to open config file: Stat: The specified bucket does not exist",
                   "Is there a repository at the following location?"], ResticOutcome.NO_REPOSITORY),
        (1, V014, ["dial tcp 127.0.0.1:1: connect: connection refused",
                   "Is there a repository at the following location?"], ResticOutcome.UNREACHABLE),
        (1, V014, ["Fatal: unable to create lock in backend: repository is already locked"],
         ResticOutcome.LOCKED),
        (1, V014, ["Fatal: something else"], ResticOutcome.FATAL),
        (1, V014, ['Fatal: invalid id "deadbeef": no matching ID found'], ResticOutcome.NOT_FOUND),
        (1, V018, ['{"message_type":"exit_error","code":1,"message":"failed to load snapshot 12345678: open '
                   'repo/snapshots/1234: no such file or directory"}'], ResticOutcome.NOT_FOUND),
    ],
)
def test_exit_code_table(code: int, version: ResticVersion, stderr: list[str], expected: ResticOutcome) -> None:
    assert classify_exit(code, version, stderr) is expected


def test_backup_messages_by_type_ignoring_unknown_fields() -> None:
    status = parse_backup_message(json.dumps({
        "message_type": "status", "percent_done": 0.5, "files_done": 3, "bytes_done": 10,
        "total_files": 6, "total_bytes": 20, "brand_new_field": [1],
    }))
    assert status == BackupStatus(0.5, 3, 10, 6, 20)
    summary = parse_backup_message('{"message_type":"summary","snapshot_id":"d78e09dd","files_new":1,'
                                   '"total_duration":0.2,"data_added_packed":5}')
    assert isinstance(summary, BackupSummary) and summary.snapshot_id == "d78e09dd" and summary.files_new == 1
    assert parse_backup_message('{"message_type":"verbose_status","action":"new"}') is None
    assert parse_backup_message("not json at all") is None


def test_error_messages_of_both_versions() -> None:
    old = parse_backup_message('{"message_type":"error","error":{"Op":"open","Path":"a","Err":13},'
                               '"during":"archival","item":"/d/a"}')
    new = parse_backup_message('{"message_type":"error","error":{"message":"open a: permission denied"},'
                               '"during":"archival","item":"/d/a"}')
    assert isinstance(old, BackupError) and old.item == "/d/a" and "errno 13" in old.message
    assert isinstance(new, BackupError) and new.message == "open a: permission denied"
    assert parse_backup_message('{"message_type":"exit_error","code":3,"message":"x"}') == ExitError(3, "x")


def test_a_field_of_the_wrong_type_is_rejected() -> None:
    with pytest.raises(MalformedResticOutput):
        parse_backup_message('{"message_type":"status","files_done":"many"}')


def test_snapshots_parse_nanosecond_times_and_tags() -> None:
    output = json.dumps([
        {"time": "2026-11-29T04:47:43.616080377Z", "tree": "t2", "paths": ["/a"], "hostname": "h",
         "id": "b" * 64, "short_id": "bbbbbbbb", "tags": ["drill.level=full"]},
        {"time": "2026-11-28T01:00:00.5+08:00", "tree": "t1", "paths": ["/a"], "hostname": "h", "id": "a" * 64},
    ])
    snapshots = parse_snapshots(output)
    assert [s.tree for s in snapshots] == ["t1", "t2"]  # oldest first
    assert snapshots[1].tag_value("drill.level") == "full"
    assert snapshots[0].short_id == "aaaaaaaa"
    with pytest.raises(MalformedResticOutput):
        parse_snapshots('{"not": "a list"}')


def test_waits_for_a_locked_repository_start_short_and_add_up_to_lock_wait() -> None:
    assert list(lock_retry_waits(0)) == []
    assert list(lock_retry_waits(5)) == [2.0, 3.0]
    waits = list(lock_retry_waits(600))
    assert waits[:4] == [2.0, 4.0, 8.0, 16.0] and max(waits) == 30.0 and sum(waits) == 600.0
