"""Calendars, due runs, level decisions and retention: pure policy logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies.calendar import CalendarError, parse_calendar
from policies.due import find_due_run, level_for_day, next_slot
from policies.durations import MAX_DURATION, DurationError, DurationRangeError, parse_duration
from policies.levels import BackupPoint, Level, choose_level
from policies.retention import select_forgettable

SUN = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # a Sunday


def test_weekday_calendar_latest_and_next() -> None:
    cal = parse_calendar("sun 01:00")
    assert cal.latest_at_or_before(SUN) == datetime(2026, 11, 29, 1, 0, tzinfo=UTC)
    assert cal.next_after(SUN) == datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
    before_the_slot = datetime(2026, 11, 29, 0, 59, tzinfo=UTC)
    assert cal.latest_at_or_before(before_the_slot) == datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "moment", "expected"),
    [
        ("daily 01:00", SUN, datetime(2026, 11, 29, 1, 0, tzinfo=UTC)),
        ("mon-fri 02:00", SUN, datetime(2026, 11, 27, 2, 0, tzinfo=UTC)),
        ("mon,wed 02:30", SUN, datetime(2026, 11, 25, 2, 30, tzinfo=UTC)),
        ("fri-mon 03:00", SUN, datetime(2026, 11, 29, 3, 0, tzinfo=UTC)),
        ("hourly :15", SUN, datetime(2026, 11, 29, 11, 15, tzinfo=UTC)),
        ("HOURLY", SUN, datetime(2026, 11, 29, 12, 0, tzinfo=UTC)),
        ("monthly 1 03:00", SUN, datetime(2026, 11, 1, 3, 0, tzinfo=UTC)),
    ],
)
def test_calendar_forms(text: str, moment: datetime, expected: datetime) -> None:
    assert parse_calendar(text).latest_at_or_before(moment) == expected


@pytest.mark.parametrize("text", ["", "sunday 01:00", "daily 25:00", "daily 1am", "hourly 15", "monthly 31 01:00",
                                  "sun-xyz 01:00", "daily", "monthly ² 03:00", "monthly ¹ 03:00", "monthly ١ 03:00",
                                  "daily ０１:００", "daily 0１:00", "hourly :１５", "monthly 001 03:00",
                                  "daily " + "0" * 5000 + ":00", "x" * 5000])
def test_bad_calendar_expressions_explain_the_accepted_forms(text: str) -> None:
    with pytest.raises(CalendarError, match="daily 01:00"):
        parse_calendar(text)


def test_durations() -> None:
    assert parse_duration("14d") == timedelta(days=14)
    assert parse_duration(" 2w ") == timedelta(weeks=2)
    with pytest.raises(DurationError, match="14d"):
        parse_duration("fortnight")


def test_durations_are_at_most_ten_years_and_never_overflow() -> None:
    assert parse_duration("3653d") == MAX_DURATION == timedelta(days=3653)
    assert parse_duration("0014d") == timedelta(days=14)
    assert parse_duration(f"{3653 * 86400}s") == MAX_DURATION
    for text in ("3654d", "522w", "99999999999999d", "9" * 5000 + "s", f"{3653 * 86400 + 1}s"):
        with pytest.raises(DurationRangeError, match="longer than 10 years"):
            parse_duration(text)
    with pytest.raises(DurationRangeError, match="no time at all"):
        parse_duration("0s")


@pytest.mark.parametrize("text", ["１４d", "١٤d", "14ｄ", "-14d", "1.5d", "14 d x", "14d\n" * 2])
def test_durations_take_only_ascii_digits_and_one_unit(text: str) -> None:
    with pytest.raises(DurationError, match="is not a duration") as caught:
        parse_duration(text)
    assert not isinstance(caught.value, DurationRangeError)


CALENDARS = {
    Level.FULL: parse_calendar("sun 01:00"),
    Level.DIFFERENTIAL: parse_calendar("wed 01:00"),
    Level.INCREMENTAL: parse_calendar("daily 01:00"),
}


def test_due_run_prefers_the_strongest_level_on_a_shared_slot() -> None:
    due = find_due_run(CALENDARS, datetime(2026, 11, 28, 1, 0, tzinfo=UTC), SUN)
    assert due is not None and due.level is Level.FULL and due.slot == datetime(2026, 11, 29, 1, 0, tzinfo=UTC)


def test_nothing_is_due_twice_for_the_same_slot() -> None:
    assert find_due_run(CALENDARS, datetime(2026, 11, 29, 1, 0, tzinfo=UTC), SUN) is None


def test_missed_slots_make_one_run_of_the_strongest_level() -> None:
    # Down from Tuesday noon to Thursday noon: Wednesday's differential and two incrementals missed.
    due = find_due_run(CALENDARS, datetime(2026, 11, 24, 12, 0, tzinfo=UTC), datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    assert due is not None
    assert due.level is Level.DIFFERENTIAL
    assert due.slot == datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
    assert due.missed_slots == 2


def test_next_slot_and_level_for_day() -> None:
    assert next_slot(CALENDARS, SUN) == (Level.INCREMENTAL, datetime(2026, 11, 30, 1, 0, tzinfo=UTC))
    assert level_for_day(CALENDARS, SUN) is Level.FULL
    assert level_for_day(CALENDARS, datetime(2026, 11, 25, 9, 0, tzinfo=UTC)) is Level.DIFFERENTIAL
    assert level_for_day(CALENDARS, datetime(2026, 11, 26, 9, 0, tzinfo=UTC)) is Level.INCREMENTAL
    assert level_for_day({}, SUN) is Level.INCREMENTAL


def _point(name: str, days_ago: float, level: Level, usable: bool = True) -> BackupPoint:
    return BackupPoint(name, SUN - timedelta(days=days_ago), level, usable)


def test_levels_choose_their_base() -> None:
    history = [_point("f1", 6, Level.FULL), _point("i1", 5, Level.INCREMENTAL), _point("d1", 3, Level.DIFFERENTIAL),
               _point("i2", 1, Level.INCREMENTAL), _point("broken", 0.5, Level.INCREMENTAL, usable=False)]
    diff = choose_level(Level.DIFFERENTIAL, history, SUN, timedelta(days=14))
    assert diff.level is Level.DIFFERENTIAL and diff.base is not None and diff.base.snapshot_id == "f1"
    incr = choose_level(Level.INCREMENTAL, history, SUN, timedelta(days=14))
    assert incr.level is Level.INCREMENTAL and incr.base is not None and incr.base.snapshot_id == "i2"
    full = choose_level(Level.FULL, history, SUN, None)
    assert full.level is Level.FULL and full.base is None


def test_upgrade_to_full_without_a_usable_full_or_when_too_old() -> None:
    no_full = choose_level(Level.INCREMENTAL, [_point("f", 1, Level.FULL, usable=False)], SUN, None)
    assert no_full.level is Level.FULL and "no usable full" in no_full.reason
    old = choose_level(Level.DIFFERENTIAL, [_point("f", 15, Level.FULL)], SUN, timedelta(days=14))
    assert old.level is Level.FULL and "max_full_interval" in old.reason
    assert choose_level(Level.DIFFERENTIAL, [_point("f", 13, Level.FULL)], SUN, timedelta(days=14)).level is (
        Level.DIFFERENTIAL
    )


def test_retention_keeps_the_newest_of_each_level_and_drops_stale_unfinished() -> None:
    points = [_point(f"f{i}", 30 - i, Level.FULL) for i in range(4)]
    points += [_point(f"i{i}", 10 - i, Level.INCREMENTAL) for i in range(3)]
    points += [_point("unfinished-old", 20, Level.INCREMENTAL, usable=False),
               _point("unfinished-new", 0, Level.INCREMENTAL, usable=False)]
    forget = {p.snapshot_id for p in select_forgettable(points, {Level.FULL: 2, Level.INCREMENTAL: 1})}
    assert forget == {"f0", "f1", "i0", "i1", "unfinished-old"}


def test_retention_without_a_level_keeps_that_level() -> None:
    points = [_point(f"d{i}", i, Level.DIFFERENTIAL) for i in range(5)]
    assert select_forgettable(points, {Level.FULL: 1}) == []
