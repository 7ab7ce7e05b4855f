"""Retention by level: which backups of one policy and target may be forgotten.

Keeps the newest N of each level. Forgetting a full never breaks a later
snapshot on restic (every snapshot restores on its own), so no chain is kept
alive on purpose. Backups that never finished (``usable`` False) are forgotten
once a newer usable backup exists. The caller passes only the backups of one
host, policy and target: what another policy or host owns is never seen here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from policies.levels import BackupPoint, Level


def select_forgettable(points: Sequence[BackupPoint], keep: Mapping[Level, int]) -> list[BackupPoint]:
    """Return the backups to forget, oldest first.

    ``keep`` maps a level to how many of its newest usable backups stay; a level
    missing from ``keep`` keeps everything.
    """
    ordered = sorted(points, key=lambda p: p.time)
    forget: list[BackupPoint] = []
    for level, count in keep.items():
        usable = [p for p in ordered if p.usable and p.level is level]
        if count >= 0 and len(usable) > count:
            forget.extend(usable[: len(usable) - count])
    usable_times = [p.time for p in ordered if p.usable]
    if usable_times:
        newest_usable = max(usable_times)
        forget.extend(p for p in ordered if not p.usable and p.time < newest_usable)
    return sorted(forget, key=lambda p: p.time)
