"""Configuration of a policy: its schema fragment and its typed form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from policies.calendar import Calendar, parse_calendar
from policies.durations import parse_duration
from policies.levels import Level

# "(?!\n)": Python's "$" (jsonschema matches with re.search) also matches before a final newline, which
# would let "app01\n" through as a name; ECMA's "$" does not, and the lookahead is harmless there.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$(?!\n)"

MAX_NAMES = 1000
"""The most names (targets, repositories) a list of a config holds; far more than any host needs."""

MAX_KEEP = 10_000
"""The most snapshots of one level retention keeps: decades of hourly backups."""

_LEVEL_CALENDAR = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "When and how a set of targets is backed up, kept and replicated.",
    "required": ["targets", "repository"],
    "additionalProperties": False,
    "properties": {
        "targets": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_NAMES,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": NAME_PATTERN},
            "description": "Names of targets (from 'targets') this policy backs up.",
            "examples": [["documents"]],
        },
        "repository": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "Name of the repository (from 'repositories') the backups go to.",
            "examples": ["local"],
        },
        "replicate_to": {
            "type": "array",
            "maxItems": MAX_NAMES,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": NAME_PATTERN},
            "default": [],
            "description": "Repositories every new snapshot is copied to (restic copy), e.g. the same-city site.",
            "examples": [["same-city"]],
        },
        "schedule": {
            "type": "object",
            "additionalProperties": False,
            "description": (
                "Calendar of each level for 'drill-agent run': 'daily HH:MM', 'sun 01:00', 'mon,wed 02:30', "
                "'mon-fri 02:00', 'hourly :15', 'monthly 1 03:00'. When two levels fall on the same time "
                "the stronger runs (full > differential > incremental)."
            ),
            "properties": {
                "full": {**_LEVEL_CALENDAR, "description": "When to take a full backup.", "examples": ["sun 01:00"]},
                "differential": {
                    **_LEVEL_CALENDAR,
                    "description": "When to take a differential backup.",
                    "examples": ["wed 01:00"],
                },
                "incremental": {
                    **_LEVEL_CALENDAR,
                    "description": "When to take an incremental backup.",
                    "examples": ["daily 01:00"],
                },
            },
            "examples": [{"full": "sun 01:00", "differential": "wed 01:00", "incremental": "daily 01:00"}],
        },
        "max_full_interval": {
            "type": "string",
            "maxLength": 64,
            "description": (
                "A differential or incremental is upgraded to full when the last full is older: a number and a "
                "unit (s, m, h, d, w), 1s to 10 years."
            ),
            "examples": ["14d"],
        },
        "retention": {
            "type": "object",
            "additionalProperties": False,
            "description": "How many snapshots of each level to keep per target (restic forget + prune).",
            "properties": {
                "full": {"type": "integer", "minimum": 1, "maximum": MAX_KEEP,
                         "description": f"Fulls to keep (1 to {MAX_KEEP}).", "examples": [8]},
                "differential": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_KEEP,
                    "description": f"Differentials to keep (0 to {MAX_KEEP}).",
                    "examples": [4],
                },
                "incremental": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_KEEP,
                    "description": f"Incrementals to keep (0 to {MAX_KEEP}).",
                    "examples": [14],
                },
            },
            "examples": [{"full": 8, "differential": 4, "incremental": 14}],
        },
        "prune": {
            "type": "boolean",
            "default": True,
            "description": "Run restic prune after retention forgot snapshots, to free their space.",
            "examples": [True],
        },
    },
}


@dataclass(frozen=True)
class PolicyConfig:
    name: str
    targets: tuple[str, ...]
    repository: str
    replicate_to: tuple[str, ...]
    calendars: dict[Level, Calendar]
    max_full_interval: timedelta | None
    retention: dict[Level, int]
    prune: bool


def make_policy_config(name: str, raw: Mapping[str, Any]) -> PolicyConfig:
    """Build the typed policy from a validated mapping.

    Raises ``CalendarError`` or ``DurationError`` for expressions the schema cannot check.
    """
    schedule = raw.get("schedule") or {}
    max_full = raw.get("max_full_interval")
    return PolicyConfig(
        name=name,
        targets=tuple(raw["targets"]),
        repository=raw["repository"],
        replicate_to=tuple(raw.get("replicate_to", ())),
        calendars={Level(level): parse_calendar(text) for level, text in schedule.items()},
        max_full_interval=parse_duration(max_full) if max_full is not None else None,
        retention={Level(level): int(n) for level, n in (raw.get("retention") or {}).items()},
        prune=bool(raw.get("prune", True)),
    )
