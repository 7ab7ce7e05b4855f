"""The documents between agent and coordinator: typed, versioned, validated on write and read, forward compatible."""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from agents.config.model import validate_config
from agents.contract import signing
from agents.contract.documents import DocumentError, to_json_document
from agents.contract.jobs import BackupJob, CheckJob, VerifyJob, job_json_schema, parse_job
from agents.contract.records import (
    RECORD_TYPES,
    BackupRecord,
    DrillStep,
    SignedRecord,
    VerifyRecord,
    parse_record,
    record_json_schema,
)
from agents.execute import execute
from tests.support.records import backup_document, drill_started, drill_step

ROOT = pathlib.Path(__file__).resolve().parents[2]
CAPTURED = ROOT / "tests" / "fixtures" / "records-2026-11"


def _captured() -> list[pathlib.Path]:
    return sorted(CAPTURED.glob("*.dsse.json"))


@pytest.mark.parametrize("path", _captured(), ids=lambda p: p.name)
def test_records_written_in_todays_format_still_read(path: pathlib.Path) -> None:
    """Records captured from the version before the typed contract: signatures hold, every field reads."""
    keys = {}
    for name in ("agent.pub", "coordinator.pub"):
        public = signing.load_public_pem((CAPTURED / name).read_text())
        keys.update({signing.key_id(public, digest): public for digest in signing.DIGESTS})
    signed = SignedRecord.open(json.loads(path.read_text()), keys)
    record = signed.record
    assert record.kind == path.name.split(".dsse")[0].split("-")[0] or record.kind.startswith("drill.")
    assert type(record) is RECORD_TYPES[record.kind]
    assert not record.model_extra  # nothing of today's format is unknown to the types
    if isinstance(record, BackupRecord):
        assert record.target.kind in path.name and record.level.requested.value in path.name
    if isinstance(record, VerifyRecord):
        assert record.verdict == "passed" and record.snapshot is not None
    if isinstance(record, DrillStep):
        assert record.job.kind == "drill.step" and record.job.id == record.drill_id  # the legacy drill.drill/v1


def test_the_captured_set_covers_every_kind_written_then() -> None:
    kinds = {parse_record(json.loads(base64.b64decode(json.loads(p.read_text())["payload"]))).kind
             for p in _captured()}
    assert kinds == {"backup", "verify", "drill.started", "drill.step", "drill.finished"}


def test_unknown_fields_are_kept_on_read_and_written_back() -> None:
    document = backup_document("r1", future_field={"a": 1},
                               snapshot={"id": "ab" * 32, "time": "2026-11-30T02:00:00Z", "tree": None, "later": 2})
    record = parse_record(document)
    assert record.model_extra == {"future_field": {"a": 1}}
    assert isinstance(record, BackupRecord) and record.snapshot is not None
    assert record.snapshot.model_extra == {"later": 2}
    again = to_json_document(record)
    assert again["future_field"] == {"a": 1} and again["snapshot"]["later"] == 2


@pytest.mark.parametrize(("change", "named"), [
    ({"outcome": 7}, "outcome"),
    ({"timings": {"started": "yesterday", "finished": "2026-11-30T02:00:05Z", "duration_seconds": 5}},
     "timings.started"),
    ({"level": {"requested": "weekly"}}, "level.requested"),
    ({"findings": [{"code": "x", "severity": "fatal", "message": "m"}]}, "findings.0.severity"),
    ({"job": {"id": "j", "kind": "verify"}}, "verify record"),
    ({"schema": "drill.result/v9"}, "drill.result/v9"),
    ({"job": {"id": "j", "kind": "format-disk"}}, "format-disk"),
])
def test_wrong_types_are_refused_with_the_field_named(change: dict[str, Any], named: str) -> None:
    with pytest.raises(DocumentError) as refused:
        parse_record({**backup_document(), **change})
    assert named in str(refused.value)
    assert refused.value.code == "invalid_document"


def test_nan_and_infinity_are_refused() -> None:
    with pytest.raises(DocumentError, match="duration_seconds"):
        parse_record(backup_document(timings={"started": "2026-11-30T02:00:00Z", "finished": "2026-11-30T02:00:05Z",
                                              "duration_seconds": float("nan")}))


def test_records_of_every_kind_match_the_generated_json_schema() -> None:
    schema = json.loads((ROOT / "docs" / "schemas" / "drill.result.v1.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for record in (parse_record(backup_document()), drill_started(), drill_step()):
        validator.validate(to_json_document(record))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**backup_document(), "outcome": "maybe"})


def test_jobs_parse_and_refuse_with_named_errors() -> None:
    job = parse_job({"kind": "verify", "repository": "local", "target": "documents", "snapshot": "1a2b3c4d"})
    assert isinstance(job, VerifyJob) and job.snapshot == "1a2b3c4d" and job.read_data_parts == 30
    assert parse_job(to_json_document(job)) == job  # written and read back unchanged
    for bad, named in (({"kind": "verify", "repository": "local", "target": "d", "read_data_parts": 0},
                        "read_data_parts"),
                       ({"kind": "backup", "policy": 5}, "policy"),
                       ({"kind": "verify", "repository": "../etc", "target": "d"}, "repository"),
                       ({"kind": "verify", "repository": "local", "target": "d", "snapshot": "; rm -rf"}, "snapshot"),
                       ({"kind": "format-disk"}, "format-disk"),
                       ([], "job")):
        with pytest.raises(DocumentError) as refused:
            parse_job(bad)
        assert named in str(refused.value)
    schema = job_json_schema()
    for example in (BackupJob(policy="nightly"), CheckJob(repository="local"), job):
        jsonschema.validate(to_json_document(example), schema)


def test_the_generated_schemas_and_reference_are_current() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_docs.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads((ROOT / "docs" / "schemas" / "drill.result.v1.json").read_text()) == record_json_schema()


def _agent(tmp_path: pathlib.Path) -> Any:
    (tmp_path / "pw").write_text("x\n")
    return validate_config("agent.yaml", f"""
host: app01
state_dir: {tmp_path}/state
repositories: {{local: {{url: {tmp_path}/repo, password_file: {tmp_path}/pw}}}}
targets: {{documents: {{kind: files, paths: [{tmp_path}/data]}}}}
policies: {{nightly: {{targets: [documents], repository: local}}}}
""")


@pytest.mark.parametrize(("job", "code"), [
    (BackupJob(policy="weekly"), "unknown_policy"),
    (BackupJob(policy="nightly", target="archive"), "unknown_target"),
    (VerifyJob(repository="far", target="documents"), "unknown_repository"),
    (VerifyJob(repository="local", target="crm"), "unknown_target"),
    (VerifyJob(repository="local", target="documents", target_kind="postgres"), "target_kind_mismatch"),
    (VerifyJob(repository="local", target="documents", scratch={"directory": "relative"}), "invalid_job"),
    (VerifyJob(repository="local", target="documents", expires="2020-01-01T00:00:00Z"), "job_expired"),
    (CheckJob(repository="far"), "unknown_repository"),
])
def test_a_job_the_agent_will_not_run_ends_in_a_signed_refusal(tmp_path: pathlib.Path, job: Any, code: str) -> None:
    [signed] = execute(_agent(tmp_path), job)
    record = signed.record
    assert record.kind == "refused" and record.refused.id == job.id  # type: ignore[union-attr]
    assert [f.code for f in record.findings] == [code]  # type: ignore[union-attr]
    assert record.outcome == "failed" and record.job.request == job.id  # type: ignore[union-attr]
    assert signed.path is not None and pathlib.Path(signed.path).exists()  # in the outbox, for the coordinator
