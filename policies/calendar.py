"""Calendar expressions of a policy's schedule, in the agent's local time zone.

Accepted forms (case-insensitive)::

    daily 01:00          every day at 01:00
    sun 01:00            Sundays
    mon,wed,fri 23:30    several days
    mon-fri 02:00        a range of days
    hourly :15           every hour at minute 15 (``hourly`` alone: minute 0)
    monthly 1 03:00      the 1st of every month (days 1-28)

Numbers are ASCII digits only: ``str.isdigit`` and ``\\d`` also take '²' or '０１', which ``int`` then
refuses or quietly reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([0-9]{1,2}):([0-9]{2})$", re.ASCII)
_MINUTE = re.compile(r"^:([0-9]{2})$", re.ASCII)
_MONTHDAY = re.compile(r"^[0-9]{1,2}$", re.ASCII)


class CalendarError(ValueError):
    """An expression this module cannot read; the message shows the accepted forms."""


_HELP = "use e.g. 'daily 01:00', 'sun 01:00', 'mon,wed 02:30', 'mon-fri 02:00', 'hourly :15', 'monthly 1 03:00'"


@dataclass(frozen=True)
class Calendar:
    """A set of recurring instants: on ``weekdays`` (0 = Monday) or ``monthday``, at ``hour:minute``.

    ``hour`` is None for an hourly calendar.
    """

    text: str
    weekdays: frozenset[int]
    hour: int | None
    minute: int
    monthday: int | None = None

    def _day_matches(self, day: datetime) -> bool:
        if self.monthday is not None:
            return day.day == self.monthday
        return day.weekday() in self.weekdays

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last instant of this calendar not after ``moment`` (same time zone as ``moment``)."""
        if self.hour is None:
            slot = moment.replace(minute=self.minute, second=0, microsecond=0)
            return slot if slot <= moment else slot - timedelta(hours=1)
        day = moment.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        if day > moment:
            day -= timedelta(days=1)
        # At most a month back for a monthly calendar, a week for the others.
        for _ in range(32):
            if self._day_matches(day):
                return day
            day -= timedelta(days=1)
        raise AssertionError(f"calendar {self.text!r} has no instant in a month")  # pragma: no cover

    def next_after(self, moment: datetime) -> datetime:
        """The first instant of this calendar strictly after ``moment``."""
        if self.hour is None:
            slot = moment.replace(minute=self.minute, second=0, microsecond=0)
            return slot if slot > moment else slot + timedelta(hours=1)
        day = moment.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        if day <= moment:
            day += timedelta(days=1)
        for _ in range(32):
            if self._day_matches(day):
                return day
            day += timedelta(days=1)
        raise AssertionError(f"calendar {self.text!r} has no instant in a month")  # pragma: no cover


def _parse_time(text: str, expression: str) -> tuple[int, int]:
    match = _TIME.match(text)
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise CalendarError(f"{expression!r}: {text!r} is not a time of day HH:MM; {_HELP}")
    return int(match[1]), int(match[2])


def _parse_days(text: str, expression: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        if "-" in part:
            first, _, last = part.partition("-")
            if first not in DAYS or last not in DAYS:
                raise CalendarError(f"{expression!r}: {part!r} is not a range of days; {_HELP}")
            start, end = DAYS.index(first), DAYS.index(last)
            span = range(start, end + 1) if start <= end else [*range(start, 7), *range(0, end + 1)]
            days.update(span)
        elif part in DAYS:
            days.add(DAYS.index(part))
        else:
            raise CalendarError(f"{expression!r}: {part!r} is not a day (mon..sun); {_HELP}")
    return frozenset(days)


def parse_calendar(expression: str) -> Calendar:
    """Parse a calendar expression. Raises :class:`CalendarError` with the accepted forms."""
    if len(expression) > 200:  # no accepted form is this long; keep the message that quotes it short
        raise CalendarError(f"{expression[:40]!r}… is not a calendar expression; {_HELP}")
    words = expression.strip().lower().split()
    if not words:
        raise CalendarError(f"empty calendar expression; {_HELP}")
    head = words[0]
    if head == "hourly" and len(words) <= 2:
        minute = 0
        if len(words) == 2:
            match = _MINUTE.match(words[1])
            if match is None or int(match[1]) > 59:
                raise CalendarError(f"{expression!r}: the minute of 'hourly' is written ':MM'; {_HELP}")
            minute = int(match[1])
        return Calendar(expression, frozenset(range(7)), None, minute)
    if head == "monthly" and len(words) == 3:
        if _MONTHDAY.match(words[1]) is None or not 1 <= int(words[1]) <= 28:
            raise CalendarError(f"{expression!r}: the day of the month must be 1..28; {_HELP}")
        hour, minute = _parse_time(words[2], expression)
        return Calendar(expression, frozenset(), hour, minute, monthday=int(words[1]))
    if len(words) != 2:
        raise CalendarError(f"{expression!r} is not a calendar expression; {_HELP}")
    hour, minute = _parse_time(words[1], expression)
    days = frozenset(range(7)) if head == "daily" else _parse_days(head, expression)
    return Calendar(expression, days, hour, minute)
