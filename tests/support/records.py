"""Small, valid records for tests that need one without running a job."""

from __future__ import annotations

from typing import Any

from agents.contract.records import DrillStarted, DrillStep

STARTED = "2026-11-30T02:00:00.000Z"


def backup_document(record_id: str = "r1", host: str = "app01", **changes: Any) -> dict[str, Any]:
    """The JSON document of a successful files backup record."""
    document: dict[str, Any] = {
        "schema": "drill.result/v1", "record_id": record_id, "job": {"id": f"job-{record_id}", "kind": "backup"},
        "host": host, "agent": "vm", "policy": "nightly",
        "target": {"name": "documents", "kind": "files"}, "repository": {"name": "local", "site": "local"},
        "level": {"requested": "full", "effective": "full", "reason": "full requested"},
        "timings": {"started": STARTED, "finished": "2026-11-30T02:00:05.000Z", "duration_seconds": 5.0,
                    "phases": {}},
        "outcome": "success", "findings": [],
    }
    document.update(changes)
    return document


def drill_started(drill_id: str = "D", record_id: str = "d1", site: str = "local") -> DrillStarted:
    return DrillStarted.model_validate({
        "record_id": record_id, "job": {"id": drill_id, "kind": "drill.started"}, "drill_id": drill_id,
        "host": "coordinator", "site": site, "started": STARTED,
        "scope": [{"system": "app01", "targets": ["documents"], "objectives": {"rto_seconds": 3600,
                                                                              "rpo_seconds": 86400}}]})


def drill_step(drill_id: str = "D", record_id: str = "s1") -> DrillStep:
    return DrillStep.model_validate({
        "record_id": record_id, "job": {"id": drill_id, "kind": "drill.step"}, "drill_id": drill_id,
        "host": "coordinator", "system": "app01", "target": "documents", "site": "local", "repository": "local",
        "objectives": {"rto_seconds": 3600, "rpo_seconds": 86400}, "rpo_met": False, "rto_met": False,
        "verdict": "failed", "started": STARTED, "finished": STARTED})


def verify_document(record_id: str = "v1", backup_host: str = "app01", site: str = "local",
                    **changes: Any) -> dict[str, Any]:
    """The JSON document of a passed verification of app01's documents by scratch01."""
    document: dict[str, Any] = {
        "schema": "drill.result/v1", "record_id": record_id, "job": {"id": f"job-{record_id}", "kind": "verify"},
        "host": "scratch01", "agent": "vm", "repository": {"name": "local", "site": site}, "target": "documents",
        "backup_host": backup_host, "scratch": {"host": "scratch01", "directory": "/srv/drill-scratch"},
        "verdict": "passed",
        "timings": {"started": "2026-11-30T03:00:00.000Z", "finished": "2026-11-30T03:00:09.000Z",
                    "duration_seconds": 9.0, "phases": {}},
        "outcome": "success", "findings": [],
    }
    document.update(changes)
    return document
