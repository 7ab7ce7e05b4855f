"""Which problems opened and which closed since the last look, once across every coordinator.

The open problems are rows of ``fleet_alerts`` (subject, code). A problem seen now
and not there is inserted -- ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` gives
the row to exactly one coordinator, which sends the failure; a row whose problem
is gone is deleted -- ``DELETE ... RETURNING`` likewise -- and its deleter sends the
recovery. Two ``drillctl serve`` on one database therefore notify each change once.
"""

from __future__ import annotations

from drill.fleet.status import Status
from drill.ledger.store import Store

Problem = tuple[str, str]  # (subject, code)


def problems_of(status: Status) -> dict[Problem, str]:
    """Every open problem of ``status`` with its message."""
    found: dict[Problem, str] = {}
    for target in status.targets:
        for problem in target.problems:
            found[(problem.subject, problem.code)] = problem.message
    for flag in status.flags:
        found[(flag.subject, flag.code)] = flag.message
    return found


def transitions(store: Store, current: dict[Problem, str], now: float,
                ) -> tuple[list[tuple[Problem, str]], list[tuple[Problem, str]]]:
    """Record ``current`` as the open problems; those that opened and those that closed, each with its message."""
    opened, closed = [], []
    for (subject, code), message in sorted(current.items()):
        if store.query("INSERT INTO fleet_alerts (subject, code, message, since) VALUES (%s, %s, %s, %s) "
                       "ON CONFLICT (subject, code) DO NOTHING RETURNING subject",
                       (subject, code, message[:2000], now)):
            opened.append(((subject, code), message))
    for subject, code in store.query("SELECT subject, code FROM fleet_alerts ORDER BY subject, code"):
        if (subject, code) in current:
            continue
        gone = store.query("DELETE FROM fleet_alerts WHERE subject = %s AND code = %s RETURNING message",
                           (subject, code))
        if gone:
            closed.append(((str(subject), str(code)), str(gone[0][0])))
    return opened, closed
