"""Durations written as ``14d``, ``12h``, ``2w``, ``90m`` or ``45s``: ASCII digits, one unit, 1 second to 10 years."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# ASCII only: \d would also take '１４' (fullwidth digits), which int() quietly reads as 14.
_DURATION = re.compile(r"^\s*([0-9]+)\s*([smhdw])\s*$", re.ASCII)

MAX_DURATION = timedelta(days=3653)
"""The longest duration accepted: 10 years (with leap days); longer is a typo, and timedelta overflows soon after."""


class DurationError(ValueError):
    """A duration that does not read as a number and a unit."""


class DurationRangeError(DurationError):
    """A duration that reads well but is zero or longer than :data:`MAX_DURATION`."""


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` such as ``14d`` into a timedelta of 1 second to 10 years.

    Raises :class:`DurationError` naming the accepted units, and its subclass
    :class:`DurationRangeError` for zero or more than 10 years.
    """
    match = _DURATION.match(text)
    if match is None:
        shown = repr(text) if len(text) <= 40 else repr(text[:40]) + "…"
        raise DurationError(f"{shown} is not a duration; write a number and a unit, e.g. 14d, 12h, 2w, 90m")
    digits, unit = match[1].lstrip("0"), match[2]
    # Compare digits before converting, so that a number of thousands of digits costs nothing.
    if len(digits) > 12 or int(digits or "0") * _SECONDS[unit] > MAX_DURATION.total_seconds():
        shown = match[1] if len(match[1]) <= 20 else match[1][:20] + "…"
        raise DurationRangeError(f"{shown}{unit} is longer than 10 years (3653d), the longest duration accepted")
    if not digits:
        raise DurationRangeError(f"{match[1]}{unit} is no time at all; a duration is at least 1s")
    return timedelta(**{_UNITS[unit]: int(digits)})
