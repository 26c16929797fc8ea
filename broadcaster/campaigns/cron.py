"""Cron expressions for recurring campaigns, read into APScheduler's `CronTrigger`.

Five fields are a crontab line (`minute hour day month day-of-week`); six put seconds
first (`second minute hour day month day-of-week`). The day of week is crontab's: 0 or 7
is Sunday, 1 Monday (APScheduler 3 counts 0 as Monday; numbers are translated to names,
so `1-5` means Monday to Friday as in every crontab). Names (`mon-fri`) work too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

from broadcaster.errors import InvalidJob
from broadcaster.timeutil import zone

DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
NUMERIC_DAYS = re.compile(r"[\d,\-*/]+")


def parse_cron(expression: str, tz: str) -> CronTrigger:
    """A trigger for `expression` in zone `tz`; InvalidJob naming the problem otherwise."""
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise InvalidJob(
            f"cron: {len(fields)} fields in {expression!r}; write 5 (minute hour day month "
            "day-of-week, e.g. '0 9 * * 1-5') or 6 with seconds first"
        )
    second, minute, hour, day, month, day_of_week = fields
    try:
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_weekdays(day_of_week),
            timezone=zone(tz),
        )
    except InvalidJob:
        raise
    except ValueError as exc:
        raise InvalidJob(f"cron: {exc} in {expression!r}") from None


def _weekdays(field: str) -> str:
    """crontab's numeric days (0/7 = Sunday) as names APScheduler reads the same way."""
    if field == "*" or field == "?" or not NUMERIC_DAYS.fullmatch(field):
        return field
    days: set[int] = set()
    for part in field.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            low, high = 0, 6
        elif "-" in body:
            low_text, _, high_text = body.partition("-")
            low, high = int(low_text), int(high_text)
        else:
            low = high = int(body)
        if not (0 <= low <= 7 and 0 <= high <= 7 and low <= high and step >= 1):
            raise ValueError(f"day of week {part!r}: use 0-7 (0 and 7 are Sunday)")
        days.update(day % 7 for day in range(low, high + 1, step))
    return ",".join(DAY_NAMES[day] for day in sorted(days))


def next_after(trigger: CronTrigger, moment: datetime) -> datetime | None:
    """The first occurrence strictly after naive UTC `moment`, as naive UTC."""
    start = moment.replace(tzinfo=UTC) + timedelta(microseconds=1)
    fire = trigger.get_next_fire_time(None, start)
    return None if fire is None else fire.astimezone(UTC).replace(tzinfo=None)


def next_at_or_after(trigger: CronTrigger, moment: datetime) -> datetime | None:
    fire = trigger.get_next_fire_time(None, moment.replace(tzinfo=UTC))
    return None if fire is None else fire.astimezone(UTC).replace(tzinfo=None)
