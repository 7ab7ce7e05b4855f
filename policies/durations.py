"""Durations written as ``14d``, ``12h``, ``2w``, ``90m`` or ``45s``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


class DurationError(ValueError):
    """A duration that does not read as a number and a unit."""


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` such as ``14d`` into a timedelta.

    Raises :class:`DurationError` naming the accepted units.
    """
    match = _DURATION.match(text)
    if match is None:
        raise DurationError(f"{text!r} is not a duration; write a number and a unit, e.g. 14d, 12h, 2w, 90m")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})
