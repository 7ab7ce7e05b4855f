"""The figures of a drill report, computed from the drill's records alone.

The same function runs when the report is written and when an evidence bundle
is verified offline: a report whose figures no longer follow from the signed
records is caught. The figures are plain JSON (they are embedded in the page).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.contract.documents import format_time
from agents.contract.records import DrillFinished, DrillStarted, DrillStep


def drill_figures(started: DrillStarted, steps: Sequence[DrillStep], finished: DrillFinished | None) -> dict[str, Any]:
    """Verdict, scope and one row per system and target, from the ``drill.*`` records."""
    rows = []
    for item in started.scope:
        for target in item.targets:
            step = next((s for s in steps if s.system == item.system and s.target == target), None)
            row: dict[str, Any] = {
                "system": item.system, "host": item.host, "target": target,
                "rto_objective_seconds": item.objectives.rto_seconds,
                "rpo_objective_seconds": item.objectives.rpo_seconds,
                "verdict": "not run", "snapshot_ids": [], "snapshot_time": None, "rpo_seconds": None,
                "rto_seconds": None, "files": 0, "bytes": 0, "tables": 0, "rows": 0, "findings": [],
                "step_started": None, "step_finished": None,
            }
            if step is not None:
                row.update(
                    verdict=step.verdict, rpo_seconds=step.rpo_seconds, rto_seconds=step.rto_seconds,
                    snapshot_time=format_time(step.snapshot_time) if step.snapshot_time else None,
                    snapshot_ids=[v.snapshot_id for v in step.verifications if v.snapshot_id],
                    findings=[{"code": f.code, "message": f.message, "subject": f.subject} for f in step.findings],
                    step_started=format_time(step.started), step_finished=format_time(step.finished),
                    **step.compared.model_dump(include={"files", "bytes", "tables", "rows"}))
            rows.append(row)
    return {
        "drill_id": started.drill_id,
        "site": started.site,
        "started": format_time(started.started),
        "finished": format_time(finished.finished) if finished else None,
        "verdict": finished.verdict if finished else "incomplete",
        "failing": list(finished.failing) if finished else [],
        "systems": rows,
    }
