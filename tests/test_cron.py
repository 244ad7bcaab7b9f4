"""The crontab translation: standard cron semantics, not APScheduler's own."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.cron import CronError, parse_crontab
from service.settings import SettingsError, load_settings

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
# 2026-03-01 is a Sunday.
SUNDAY = datetime(2026, 3, 1, tzinfo=UTC)


def fire_times(expression: str, start: datetime, count: int, tz: ZoneInfo = UTC) -> list[datetime]:
    trigger = parse_crontab(expression).trigger(tz)
    times: list[datetime] = []
    previous = None
    now = start
    for _ in range(count):
        nxt = trigger.get_next_fire_time(previous, now)
        assert nxt is not None
        times.append(nxt)
        previous = now = nxt
    return times


@pytest.mark.parametrize(
    ("expression", "weekdays"),
    [
        ("0 6 * * 0", {"Sunday"}),
        ("0 6 * * 7", {"Sunday"}),
        ("0 6 * * sun", {"Sunday"}),
        ("0 6 * * 1", {"Monday"}),
        ("0 6 * * MON", {"Monday"}),
        ("0 6 * * 6", {"Saturday"}),
        ("0 6 * * 1-5", {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}),
        ("0 6 * * 5-7", {"Friday", "Saturday", "Sunday"}),
        ("0 6 * * 0,6", {"Saturday", "Sunday"}),
        # cron steps count from Sunday; APScheduler's would give Mon, Wed, Fri, Sun.
        ("0 6 * * */2", {"Sunday", "Tuesday", "Thursday", "Saturday"}),
        ("0 6 * * 1-5/2", {"Monday", "Wednesday", "Friday"}),
    ],
)
def test_day_of_week_uses_standard_numbering(expression: str, weekdays: set[str]) -> None:
    times = fire_times(expression, SUNDAY - timedelta(days=1), 14)
    assert {t.strftime("%A") for t in times} == weekdays
    assert all((t.hour, t.minute) == (6, 0) for t in times)


def test_default_schedule_is_monday_six() -> None:
    assert load_settings().schedule == "0 6 * * 1"
    (first,) = fire_times(load_settings().schedule, SUNDAY, 1)
    assert first == datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def test_restricted_day_and_weekday_mean_either() -> None:
    # The 1st of the month OR any Friday, as crontab(5) says.
    times = fire_times("30 7 1 * 5", datetime(2026, 2, 25, tzinfo=UTC), 6)
    assert [t.date().isoformat() for t in times] == [
        "2026-02-27", "2026-03-01", "2026-03-06", "2026-03-13", "2026-03-20", "2026-03-27",
    ]  # fmt: skip


def test_star_step_day_with_weekday_means_both() -> None:
    # A field starting with `*` counts as unrestricted: odd days that are Mondays.
    times = fire_times("0 0 */2 * 1", datetime(2026, 3, 1, tzinfo=UTC), 3)
    assert all(t.day % 2 == 1 and t.strftime("%A") == "Monday" for t in times)


def test_schedule_follows_the_time_zone_across_dst() -> None:
    # Berlin moves to summer time on 2026-03-29: 06:00 local is 05:00 UTC, then 04:00 UTC.
    times = fire_times("0 6 * * 1", datetime(2026, 3, 20, tzinfo=UTC), 2, tz=BERLIN)
    assert [t.astimezone(UTC).hour for t in times] == [5, 4]
    assert all(t.astimezone(BERLIN).hour == 6 for t in times)


def test_macros_and_seconds_field() -> None:
    assert (
        fire_times("@weekly", SUNDAY + timedelta(hours=1), 1)[0].strftime("%A %H:%M")
        == "Sunday 00:00"
    )
    times = fire_times("*/5 * * * * *", SUNDAY, 3)
    assert [(t - SUNDAY).total_seconds() for t in times] == [0, 5, 10]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 6 * *", "has 4 fields"),
        ("0 6 * * 8", "8 is outside 0-7"),
        ("60 6 * * 1", "60 is outside 0-59"),
        ("0 24 * * 1", "outside 0-23"),
        ("0 6 0 * 1", "outside 1-31"),
        ("0 6 * 13 1", "outside 1-12"),
        ("0 6 * * fri-mon", "runs backwards"),
        ("0 6 * * */0", "step must be at least 1"),
        ("0 6 * * L", "is not a number or name"),
        ("0 6 ? * 1", "cannot read"),
        ("every monday", "has 2 fields"),
    ],
)
def test_invalid_expressions_say_why(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse_crontab(expression)


def test_invalid_schedule_setting_is_listed() -> None:
    with pytest.raises(SettingsError, match=r"SONGNET_SCHEDULE.*outside 0-7"):
        load_settings(schedule="0 6 * * 9")


_fields = st.tuples(
    st.sampled_from(["0", "15", "*/20", "5-10", "0,30", "45"]),
    st.sampled_from(["*", "6", "0-3", "*/6", "22,23"]),
    st.sampled_from(["*", "1", "15", "1-7", "*/10", "31"]),
    st.sampled_from(["*", "1", "2,3", "*/4", "jan-mar"]),
    st.sampled_from(["*", "0", "7", "1-5", "*/2", "sat,sun", "3/2", "2"]),
)


@settings(max_examples=60, deadline=None)
@given(fields=_fields, month=st.integers(1, 12))
def test_trigger_fires_exactly_when_cron_matches(fields: tuple[str, ...], month: int) -> None:
    """Every fire time over a window is a cron match, and no match in between is skipped."""
    expression = " ".join(fields)
    schedule = parse_crontab(expression)
    trigger = schedule.trigger(UTC)
    start = datetime(2026, month, 1, tzinfo=UTC)
    end = start + timedelta(days=62)
    expected: list[datetime] = []
    day = start
    while day < end:
        # Every minute of the day, checked against cron's rule (hour by hour to keep it quick).
        for hour in range(24):
            at_hour = day.replace(hour=hour)
            if schedule.matches(at_hour.replace(minute=min(schedule.minutes))):
                expected.extend(
                    m for m in (at_hour.replace(minute=x) for x in range(60)) if schedule.matches(m)
                )
        day += timedelta(days=1)
    got: list[datetime] = []
    previous = None
    now = start - timedelta(seconds=1)
    while True:
        nxt = trigger.get_next_fire_time(previous, now)
        if nxt is None or nxt >= end:
            break
        got.append(nxt)
        previous = now = nxt
    assert got == expected


def test_matches_is_cron_semantics() -> None:
    schedule = parse_crontab("0 6 * * 0")
    assert schedule.matches(datetime(2026, 3, 1, 6, 0, tzinfo=UTC))  # a Sunday
    assert not schedule.matches(datetime(2026, 3, 2, 6, 0, tzinfo=UTC))
