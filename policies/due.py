"""What is due, computed from persisted state and the clock -- never from uptime.

A policy's schedule gives one calendar per level. Given the instant of the last
slot already handled, a run is due when any level has a slot after it and not
after now. If several slots were missed (the agent was down), exactly one run is
made: the strongest level among them, and the slot recorded is the latest one,
so a restart neither repeats nor skips a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from policies.calendar import Calendar
from policies.levels import LEVEL_ORDER, Level


@dataclass(frozen=True)
class DueRun:
    level: Level
    slot: datetime
    missed_slots: int


def find_due_run(
    calendars: Mapping[Level, Calendar], last_handled: datetime, now: datetime
) -> DueRun | None:
    """The run due at ``now`` given the last handled slot, or None.

    ``missed_slots`` counts how many levels had a slot in the window; more than
    one means the agent was away at a scheduled time.
    """
    slots: dict[Level, datetime] = {}
    for level, calendar in calendars.items():
        slot = calendar.latest_at_or_before(now)
        if slot > last_handled:
            slots[level] = slot
    if not slots:
        return None
    strongest = next(level for level in LEVEL_ORDER if level in slots)
    return DueRun(strongest, max(slots.values()), len(slots))


def next_slot(calendars: Mapping[Level, Calendar], now: datetime) -> tuple[Level, datetime] | None:
    """The next scheduled (level, instant) after ``now``, strongest level first on ties."""
    upcoming = [(calendar.next_after(now), LEVEL_ORDER.index(level), level) for level, calendar in calendars.items()]
    if not upcoming:
        return None
    instant, _, level = min(upcoming)
    return level, instant


def level_for_day(calendars: Mapping[Level, Calendar], now: datetime) -> Level:
    """The level the calendar gives for a run started by hand at ``now``.

    The strongest level scheduled on the same day as ``now``; incremental when no
    level is (an incremental is upgraded to full when there is no usable full).
    """
    for level in LEVEL_ORDER:
        calendar = calendars.get(level)
        if calendar is None:
            continue
        start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        first = calendar.next_after(start_of_day - timedelta(microseconds=1))
        if first.date() == now.date():
            return level
    return Level.INCREMENTAL
