"""``drillctl status`` as a pure function of the fleet, its records and the time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from agents.contract.inventory import Inventory
from agents.contract.records import parse_record
from drill.config import FleetSettings, FleetSystem, Objectives
from drill.fleet.enrolment import AgentRow
from drill.fleet.status import build_status
from tests.support.records import backup_document, verify_document

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SETTINGS = FleetSettings(max_days=7, read_data_nights=30, silent_after=1800)
SYSTEMS = {"app01": FleetSystem("app01", "app01", None, Objectives(timedelta(hours=1), timedelta(hours=24)))}


def _row(host: str, role: str, repositories: dict[str, tuple[str, str]]) -> AgentRow:
    inventory = Inventory(host=host, targets={"documents": {"kind": "files"}} if role == "agent" else {},
                          repositories={n: {"site": s, "id": i} for n, (s, i) in repositories.items()})
    return AgentRow(f"sha256:{host}", host, role, "local", "", inventory, "test", 2, "approved", 0.0, None,
                    NOW.timestamp(), None)


FLEET = [_row("app01", "agent", {"local": ("local", "a" * 64)}),
         _row("scratch01", "scratch", {"app01": ("local", "a" * 64)})]


def test_a_backed_up_and_verified_target_is_healthy_with_its_figures() -> None:
    records = [parse_record(backup_document(manifest=None)), parse_record(verify_document())]
    status = build_status(SETTINGS, SYSTEMS, FLEET, records, [], NOW)
    assert status.healthy, status.to_json()
    [target] = status.to_json()["targets"]
    assert target["backup"]["level"] == "full" and target["backup"]["outcome"] == "success"
    assert target["backup"]["age_seconds"] == 10 * 3600 - 5
    assert (target["verification"]["verdict"], target["verification"]["site"],
            target["verification"]["scratch_host"]) == ("passed", "local", "scratch01")
    assert (target["rpo_seconds"], target["rpo_objective_seconds"]) == (10 * 3600 - 5, 86400)


def test_a_failed_backup_a_failed_verification_an_old_backup_and_a_silent_host_are_each_named() -> None:
    failed = backup_document("r2", outcome="failed", findings=[
        {"code": "repository_unreachable", "severity": "error", "message": "connection refused"}],
        timings={"started": "2026-11-30T11:00:00.000Z", "finished": "2026-11-30T11:00:01.000Z",
                 "duration_seconds": 1.0, "phases": {}})
    records = [parse_record(backup_document()), parse_record(failed),
               parse_record(verify_document(verdict="failed", outcome="failed", findings=[
                   {"code": "content_mismatch", "severity": "error", "message": "a.txt differs"}]))]
    later = NOW + timedelta(days=1)
    fleet = [replace(FLEET[0], last_seen=later.timestamp()), replace(FLEET[1], last_seen=later.timestamp() - 7200)]
    status = build_status(SETTINGS, SYSTEMS, fleet, records, [], later)
    assert not status.healthy
    [target] = status.targets
    codes = {p.code: p.message for p in target.problems}
    assert "connection refused" in codes["backup_failed"]
    assert "content_mismatch" in codes["verification_failed"]
    assert "34.0 h ago" in codes["rpo_breach"]  # the newest *successful* backup counts
    assert [(f.code, f.subject) for f in status.flags] == [("agent_silent", "scratch01")]


def test_a_target_never_verified_at_a_site_is_coverage_overdue() -> None:
    fleet = [_row("app01", "agent", {"local": ("local", "a" * 64), "same-city": ("same-city", "c" * 64)}),
             FLEET[1]]
    status = build_status(SETTINGS, SYSTEMS, fleet, [parse_record(backup_document()),
                                                     parse_record(verify_document())], [], NOW)
    [target] = status.targets
    assert [(p.code, p.subject) for p in target.problems] == [
        ("coverage_overdue", "app01/documents@same-city"), ("no_scratch_host", "app01/documents@same-city")]
