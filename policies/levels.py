"""Backup levels on restic and how the level of a run is decided.

restic snapshots are independent and each restores on its own; a level only
decides what is re-read and which snapshot is the base:

* ``full``: ``--force``, no parent, every byte re-read and re-hashed;
* ``differential``: parent = the last full of the same policy and target;
* ``incremental``: parent = the latest usable snapshot of any level.

A differential or incremental with no usable full, or whose full is older than
the policy's ``max_full_interval``, is upgraded to full (Bareos' rule).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


class Level(enum.Enum):
    FULL = "full"
    DIFFERENTIAL = "differential"
    INCREMENTAL = "incremental"


# Strongest first: when several levels are due at once, the strongest runs.
LEVEL_ORDER = (Level.FULL, Level.DIFFERENTIAL, Level.INCREMENTAL)


@dataclass(frozen=True)
class BackupPoint:
    """A backup of one policy and target as the level logic sees it.

    ``usable`` is False for a snapshot whose job did not finish (no manifest) or
    that is partial: such a snapshot is never a base.
    """

    snapshot_id: str
    time: datetime
    level: Level
    usable: bool


@dataclass(frozen=True)
class LevelDecision:
    """The level a run takes, its base (None for a full) and why."""

    requested: Level
    level: Level
    base: BackupPoint | None
    reason: str


def choose_level(
    requested: Level, history: Sequence[BackupPoint], now: datetime, max_full_interval: timedelta | None
) -> LevelDecision:
    """Decide the effective level and base of a run.

    Given the requested level, the policy-and-target's earlier backups (any
    order), the current time and the maximum age of a full. Returns the decision
    with a human reason; never raises.
    """
    usable = sorted((p for p in history if p.usable), key=lambda p: p.time)
    if requested is Level.FULL:
        return LevelDecision(requested, Level.FULL, None, "full requested")
    fulls = [p for p in usable if p.level is Level.FULL]
    if not fulls:
        return LevelDecision(requested, Level.FULL, None, "upgraded to full: no usable full backup exists")
    last_full = fulls[-1]
    if max_full_interval is not None and now - last_full.time > max_full_interval:
        age_days = (now - last_full.time).total_seconds() / 86400
        return LevelDecision(
            requested,
            Level.FULL,
            None,
            f"upgraded to full: the last full is {age_days:.1f} days old, older than max_full_interval",
        )
    if requested is Level.DIFFERENTIAL:
        return LevelDecision(requested, Level.DIFFERENTIAL, last_full, "differential against the last full")
    return LevelDecision(requested, Level.INCREMENTAL, usable[-1], "incremental against the latest backup")
