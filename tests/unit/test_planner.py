"""The nightly plan as a pure function: which jobs, why, and what is flagged."""

from __future__ import annotations

import pathlib
from datetime import UTC, datetime, timedelta

from agents.contract.inventory import Inventory
from drill.config import FleetSettings, FleetSystem, Objectives
from drill.fleet.enrolment import AgentRow
from drill.fleet.planner import LedgerFacts, claim_night, in_window, make_plan, window_end
from drill.fleet.tables import create_fleet_tables
from drill.ledger.store import open_store

NOW = datetime(2026, 11, 30, 1, 30, tzinfo=UTC)
REPO, COPY = "a" * 64, "c" * 64


def _row(host: str, role: str, site: str, repositories: dict[str, tuple[str, str]], *, seen: float | None = None,
         status: str = "approved") -> AgentRow:
    inventory = Inventory(host=host, targets={"documents": {"kind": "files"}} if role == "agent" else {},
                          repositories={n: {"site": s, "id": i} for n, (s, i) in repositories.items()})
    return AgentRow(f"sha256:{host}", host, role, site, "", inventory, "test", 2, status, 0.0, None,
                    NOW.timestamp() if seen is None else seen, None)


SETTINGS = FleetSettings(max_days=7, read_data_nights=30, silent_after=1800)
SYSTEMS = {"app01": FleetSystem("app01", "app01", None, Objectives(timedelta(hours=1), timedelta(hours=24)))}
FLEET = [_row("app01", "agent", "local", {"local": ("local", REPO), "same-city": ("same-city", COPY)}),
         _row("scratch-local", "scratch", "local", {"app01": ("local", REPO)})]


def test_a_new_full_is_verified_and_a_site_without_scratch_host_is_flagged() -> None:
    facts = LedgerFacts(last_backup={("app01", "documents"): NOW - timedelta(hours=2)},
                        last_full={("app01", "documents"): NOW - timedelta(hours=2)},
                        last_verified={("app01", "documents", "local"): NOW - timedelta(days=1)})
    plan = make_plan(SETTINGS, SYSTEMS, FLEET, facts, [], NOW)
    [verify] = [j for j in plan.jobs if j.kind == "verify"]
    assert (verify.site, verify.repository_id, verify.target) == ("local", REPO, "documents")
    assert "not verified yet" in verify.reason
    [check] = [j for j in plan.jobs if j.kind == "check"]
    assert check.spec["read_data_parts"] == 30 and 1 <= check.spec["read_data_part"] <= 30
    codes = {(f.code, f.subject) for f in plan.flags}
    assert ("no_scratch_host", "app01/documents@same-city") in codes
    assert ("coverage_overdue", "app01/documents@same-city") in codes  # never verified there
    assert not any(code == "rpo_breach" for code, _ in codes)


def test_overdue_coverage_rpo_breach_and_silent_hosts_are_flagged() -> None:
    silent = _row("scratch-local", "scratch", "local", {"app01": ("local", REPO)},
                  seen=(NOW - timedelta(hours=2)).timestamp())
    facts = LedgerFacts(last_backup={("app01", "documents"): NOW - timedelta(days=3)},
                        last_verified={("app01", "documents", "local"): NOW - timedelta(days=8)})
    plan = make_plan(SETTINGS, SYSTEMS, [FLEET[0], silent], facts, [], NOW)
    codes = {(f.code, f.subject) for f in plan.flags}
    assert {("rpo_breach", "app01"), ("agent_silent", "scratch-local"),
            ("coverage_overdue", "app01/documents@local")} <= codes
    [verify] = [j for j in plan.jobs if j.kind == "verify"]
    assert "8.0 days ago" in verify.reason


def test_recent_coverage_plans_only_the_check_and_the_parts_rotate_by_night() -> None:
    facts = LedgerFacts(last_backup={("app01", "documents"): NOW - timedelta(hours=1)},
                        last_verified={("app01", "documents", "local"): NOW - timedelta(days=2)})
    tonight = make_plan(SETTINGS, SYSTEMS, FLEET, facts, [], NOW)
    tomorrow = make_plan(SETTINGS, SYSTEMS, FLEET, facts, [], NOW + timedelta(days=1))
    assert [j.kind for j in tonight.jobs] == ["check"]
    parts = [p.jobs[0].spec["read_data_part"] for p in (tonight, tomorrow)]
    assert parts[1] == parts[0] % 30 + 1


def test_the_window_may_pass_midnight() -> None:
    settings = FleetSettings(window=(22 * 60, 2 * 60))
    inside = datetime(2026, 11, 30, 23, 0).astimezone()
    after_midnight = datetime(2026, 12, 1, 1, 0).astimezone()
    assert in_window(settings, inside) == in_window(settings, after_midnight) == "2026-11-30"
    assert in_window(settings, datetime(2026, 11, 30, 12, 0).astimezone()) is None
    assert window_end(settings, inside) == datetime(2026, 12, 1, 2, 0).astimezone()


def test_each_night_is_planned_once_whatever_the_number_of_coordinators(tmp_path: pathlib.Path) -> None:
    settings = FleetSettings(window=(60, 360))
    stores = [open_store(f"sqlite:///{tmp_path}/ledger.db") for _ in range(2)]  # two coordinators, one database
    create_fleet_tables(stores[0])
    inside = datetime(2026, 11, 30, 2, 0).astimezone()
    assert claim_night(stores[0], settings, inside) == "2026-11-30"
    assert claim_night(stores[1], settings, inside + timedelta(minutes=5)) is None  # already planned
    assert claim_night(stores[1], settings, inside.replace(hour=12)) is None  # outside the window
    assert claim_night(stores[1], settings, inside + timedelta(days=1)) == "2026-12-01"  # the next night
    for store in stores:
        store.close()
