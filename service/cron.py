"""Standard crontab expressions, translated into APScheduler triggers.

`SONGNET_SCHEDULE` is a standard 5-field expression (minute, hour, day of month, month, day
of week) as `crontab(5)` reads it. APScheduler 3's `CronTrigger.from_crontab` differs from
that in two ways that would silently move a weekly run:

- day-of-week numbers: APScheduler counts 0 as Monday; cron counts 0 (and 7) as Sunday, so
  `0 6 * * 0` would run on Monday. Steps differ the same way (`*/2` is Sun, Tue, Thu, Sat in
  cron, Mon, Wed, Fri, Sun in APScheduler).
- when both day of month and day of week are restricted, cron runs on days matching EITHER
  (`0 6 1 * 1`: the 1st of the month and every Monday); APScheduler requires both.

So every field is parsed here into an explicit set of values and handed to `CronTrigger` in
APScheduler's numbering, and the either-day case becomes an `OrTrigger` of two triggers.
Also accepted: month and weekday names (`jan`, `mon-fri`), the `@hourly`, `@daily`,
`@weekly`, `@monthly`, `@yearly` macros, and, for tests only, a sixth leading field for
seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]  # cron: 0 = Sunday


class CronError(ValueError):
    """The expression is not a valid crontab schedule; the message says which field and why."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: list[str] | None = None  # names for low, low+1, … (month and weekday fields)


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DAY = _Field("day of month", 1, 31)
_MONTH = _Field("month", 1, 12, MONTH_NAMES)
# 7 is Sunday too; folded into 0 after parsing.
_WEEKDAY = _Field("day of week", 0, 7, [*DAY_NAMES, "sun"])

_ITEM = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>[0-9]+))?$")


@dataclass(frozen=True)
class CronSchedule:
    """A parsed crontab expression: the set of values each field allows."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # cron numbering: 0 = Sunday … 6 = Saturday
    day_restricted: bool  # the field did not start with `*` (cron's rule for "either day")
    weekday_restricted: bool

    def trigger(self, tz: tzinfo) -> BaseTrigger:
        """The APScheduler trigger that fires exactly when cron would, in `tz`."""
        common = {
            "second": _join(self.seconds, _SECOND),
            "minute": _join(self.minutes, _MINUTE),
            "hour": _join(self.hours, _HOUR),
            "month": _join(self.months, _MONTH),
            "timezone": tz,
        }
        weekday = _aps_weekdays(self.weekdays)
        day = _join(self.days, _DAY)
        if self.day_restricted and self.weekday_restricted:
            return OrTrigger(
                [
                    CronTrigger(day=day, day_of_week="*", **common),
                    CronTrigger(day="*", day_of_week=weekday, **common),
                ]
            )
        return CronTrigger(day=day, day_of_week=weekday, **common)

    def matches(self, moment: datetime) -> bool:
        """Whether cron would run at `moment` (a zone-aware time in the schedule's zone)."""
        weekday = (moment.weekday() + 1) % 7  # Python: Monday = 0; cron: Sunday = 0
        day_ok = moment.day in self.days
        weekday_ok = weekday in self.weekdays
        either = self.day_restricted and self.weekday_restricted
        return (
            moment.second in self.seconds
            and moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.month in self.months
            and ((day_ok or weekday_ok) if either else (day_ok and weekday_ok))
        )


def parse_crontab(expression: str) -> CronSchedule:
    """Parse a standard crontab expression (5 fields, or a macro; 6 with leading seconds)."""
    text = expression.strip().lower()
    text = MACROS.get(text, text)
    parts = text.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise CronError(
            f"{expression!r} has {len(parts)} fields; expected 5 (minute hour day-of-month month day-of-week)"
        )
    second, minute, hour, day, month, weekday = parts
    weekdays = _parse_field(weekday, _WEEKDAY)
    return CronSchedule(
        expression=expression.strip(),
        seconds=_parse_field(second, _SECOND),
        minutes=_parse_field(minute, _MINUTE),
        hours=_parse_field(hour, _HOUR),
        days=_parse_field(day, _DAY),
        months=_parse_field(month, _MONTH),
        weekdays=frozenset(d % 7 for d in weekdays),
        day_restricted=not day.startswith("*"),
        weekday_restricted=not weekday.startswith("*"),
    )


def validate_crontab(expression: str) -> str:
    """The expression unchanged if valid, else `CronError` (for the settings validator)."""
    parse_crontab(expression)
    return expression


def _parse_field(text: str, field: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise CronError(f"{field.name} field {text!r}: cannot read {item!r}")
        step = int(match["step"]) if match["step"] is not None else 1
        if step == 0:
            raise CronError(f"{field.name} field {text!r}: a step must be at least 1")
        part = match["range"]
        if part == "*":
            low, high = field.low, field.high
            if field is _WEEKDAY:
                high = 6  # `*` is each day once
        elif "-" in part:
            first, last = part.split("-")
            low, high = _value(first, field, text), _value(last, field, text)
            if low > high:
                raise CronError(f"{field.name} field {text!r}: range {part!r} runs backwards")
        else:
            low = _value(part, field, text)
            # `a/n` means from a to the end in steps of n (Vixie cron); a lone `a` is just a.
            high = field.high if match["step"] is not None else low
        values.update(range(low, high + 1, step))
    return frozenset(values)


def _value(token: str, field: _Field, text: str) -> int:
    if token.isdigit():
        number = int(token)
    elif field.names is not None and token in field.names:
        number = field.names.index(token) + field.low
    else:
        raise CronError(f"{field.name} field {text!r}: {token!r} is not a number or name")
    if not field.low <= number <= field.high:
        raise CronError(
            f"{field.name} field {text!r}: {number} is outside {field.low}-{field.high}"
        )
    return number


def _join(values: frozenset[int], field: _Field) -> str:
    full = set(range(field.low, field.high + 1))
    return "*" if values == full else ",".join(str(v) for v in sorted(values))


def _aps_weekdays(weekdays: frozenset[int]) -> str:
    if weekdays == frozenset(range(7)):
        return "*"
    # APScheduler numbers Monday as 0: cron's d is APScheduler's (d + 6) % 7.
    return ",".join(str(v) for v in sorted((d + 6) % 7 for d in weekdays))
