"""Property tests: whatever restic prints, whatever a record, a job or a manifest holds, the readers raise nothing
but the project's own typed errors (or ``ValueError`` subclasses of the leaf packages' pure parsers)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.contract.documents import DocumentError
from agents.contract.errors import DrillError
from agents.contract.jobs import parse_job
from agents.contract.records import parse_record
from agents.restic.exitcodes import classify_exit, damage_in, explain_stderr
from agents.restic.features import ResticVersion
from agents.restic.messages import parse_backup_message, parse_snapshots
from targets.files.manifest import ManifestError
from targets.files.manifest_store import parse_manifest
from tests.support.records import backup_document

FAST = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=25)
MESSAGE_TYPES = ["status", "summary", "error", "exit_error", "verbose_status", None]


def _mutations(document: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``document`` with one field (top level or one level down) replaced by any JSON value."""
    paths = [(key,) for key in document] + [(key, sub) for key, value in document.items() if isinstance(value, dict)
                                             for sub in value]

    def mutate(path: tuple[str, ...], value: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(document))
        target = copy
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        return copy

    return st.builds(mutate, st.sampled_from(paths), json_values)


@FAST
@given(st.dictionaries(st.sampled_from(["message_type", "snapshot_id", "files_done", "percent_done", "error",
                                        "item", "code", "message", "total_files", "backup_start", "during"]),
                       json_values, max_size=8), st.sampled_from(MESSAGE_TYPES))
def test_restic_json_lines_parse_or_are_refused_typed(fields: dict[str, Any], kind: str | None) -> None:
    if kind is not None:
        fields["message_type"] = kind
    with contextlib.suppress(DrillError):
        parse_backup_message(json.dumps(fields))


@FAST
@given(st.text(max_size=300))
def test_any_text_from_restic_is_a_line_or_nothing(text: str) -> None:
    try:
        parse_backup_message(text)
        parse_snapshots(text)
    except DrillError:
        pass
    version = ResticVersion(0, 14, 0)
    lines = text.splitlines()
    classify_exit(1, version, lines)
    explain_stderr(lines)
    damage_in(lines)


@FAST
@given(st.lists(st.dictionaries(st.sampled_from(["id", "short_id", "time", "tree", "paths", "hostname", "tags",
                                                 "parent", "original"]), json_values, max_size=9), max_size=4))
def test_snapshot_listings_parse_or_are_refused_typed(listing: list[dict[str, Any]]) -> None:
    with contextlib.suppress(DrillError):
        parse_snapshots(json.dumps(listing))


@FAST
@given(_mutations(backup_document()))
def test_records_with_any_field_changed_read_or_are_named(document: dict[str, Any]) -> None:
    try:
        record = parse_record(document)
    except DocumentError as error:
        assert error.code == "invalid_document" and str(error)
    else:
        assert record.kind == "backup"


@FAST
@given(json_values)
def test_any_json_is_a_record_or_a_named_refusal(document: Any) -> None:
    with contextlib.suppress(DocumentError):
        parse_record(document)
    with contextlib.suppress(DocumentError):
        parse_job(document)


@FAST
@given(_mutations({"kind": "verify", "repository": "local", "target": "documents", "snapshot": "latest",
                   "read_data_parts": 30, "scratch": {"directory": "/srv/scratch"}}))
def test_jobs_with_any_field_changed_read_or_are_named(document: dict[str, Any]) -> None:
    try:
        parse_job(document)
    except DocumentError as error:
        assert str(error).startswith(("job", "verify job", "backup job", "check job"))


MANIFEST = {"schema": "drill.manifest.files/v1", "algorithm": "sha256", "host": "h", "policy": "p", "target": "t",
            "job_id": "j", "level": "full", "base_snapshot_id": None, "roots": ["/srv"], "exclude": [],
            "entries": [{"path": "/srv/a", "type": "file", "size": 1, "mode": 420, "mtime_ns": 1, "ctime_ns": 1,
                         "inode": 1, "hash": "sha256:00"}],
            "unreadable": [], "missing_roots": [],
            "totals": {"files": 1, "bytes": 1, "entries": 1, "hashed_files": 1, "hashed_bytes": 1,
                       "reused_hashes": 0, "changed_during_backup": 0}}


@FAST
@given(_mutations(MANIFEST) | st.builds(lambda entry: {**MANIFEST, "entries": [entry]}, json_values))
def test_manifests_read_or_are_refused_typed(document: dict[str, Any]) -> None:
    try:
        manifest = parse_manifest(json.dumps(document).encode())
    except ManifestError:
        return
    for entry in manifest.entries:  # what reads: absolute, normal paths, typed fields
        assert entry.path.startswith("/") and ".." not in entry.path.split("/")
        assert isinstance(entry.size, int) and entry.type in ("file", "dir", "symlink")


@FAST
@given(st.binary(max_size=400))
def test_any_bytes_are_a_manifest_or_a_refusal(data: bytes) -> None:
    with contextlib.suppress(ManifestError):
        parse_manifest(data)
