"""Recurring campaigns: which occurrences of a schedule become jobs now, and how.

The scheduler's `schedules` pass (every `SCHEDULES_INTERVAL_S`) asks `plan` what to do
for each active schedule, then writes it (`store.ScheduleStore.materialise`):

- an occurrence within the look-ahead (twice the interval) becomes a job due at that
  moment, ahead of time, so it is claimed on time like any other row: outcome `created`;
- an occurrence already past (no scheduler ran then) becomes a job at once if it is at
  most `SCHEDULE_MISFIRE_GRACE_S` old (`late`), and is `skipped` if older; a run of
  skipped occurrences is recorded once, with its first and the first kept one.

Each job's dedupe key is `schedule:<id>:<occurrence in UTC ISO>`, so two schedulers, a
restart or a repeated pass make at most one job per occurrence: the database refuses the
second insert (procrastinate's periodic deferrer does the same).

`render` fills the template fields of `name` and `text` from the occurrence, in the
schedule's zone: `{date}` 2026-11-26, `{time}` 09:00, `{datetime}` 2026-11-26 09:00:00,
`{month}` 2026-11, `{weekday}` 星期四.
Any other brace is left as written (the text is data, never a format string).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from apscheduler.triggers.cron import CronTrigger

from broadcaster.campaigns.cron import next_after, next_at_or_after
from broadcaster.timeutil import zone

Outcome = Literal["created", "late", "skipped"]
LATE_AFTER_S = 1.0
"""A job inserted more than this after its occurrence is recorded `late`."""
MAX_PER_PASS = 1000
"""Occurrences turned into jobs per schedule and pass; the rest wait for the next pass."""
WEEKDAYS = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"]
TEMPLATE_FIELDS = ("name", "text")


@dataclass(frozen=True)
class Occurrence:
    at: datetime
    """naive UTC"""
    outcome: Outcome
    detail: str | None = None


@dataclass
class Plan:
    occurrences: list[Occurrence] = field(default_factory=list)
    last: datetime | None = None
    """The schedule's new `last_occurrence` (None: unchanged)."""


def dedupe_key(schedule_id: int, occurrence: datetime) -> str:
    return f"schedule:{schedule_id}:{occurrence:%Y-%m-%dT%H:%M:%S}Z"


def plan(
    trigger: CronTrigger,
    *,
    last: datetime | None,
    created_at: datetime,
    start_at: datetime | None,
    end_at: datetime | None,
    now: datetime,
    lookahead_s: float,
    grace_s: float,
) -> Plan:
    """What to do for one schedule at `now` (every time naive UTC)."""
    result = Plan()
    if last is not None:
        following = next_after(trigger, last)
    else:
        following = next_at_or_after(trigger, max(created_at, start_at or created_at))
    horizon = now + timedelta(seconds=lookahead_s)
    oldest_kept = now - timedelta(seconds=grace_s)
    if following is not None and following < oldest_kept:
        resume = next_at_or_after(trigger, oldest_kept)
        detail = (
            f"missed while no scheduler ran, older than SCHEDULE_MISFIRE_GRACE_S={grace_s:g}s;"
            f" every occurrence from {following:%Y-%m-%d %H:%M:%S} UTC until "
            + (f"{resume:%Y-%m-%d %H:%M:%S} UTC" if resume else "the end")
            + " skipped"
        )
        if end_at is None or following <= end_at:
            result.occurrences.append(Occurrence(following, "skipped", detail))
            result.last = following
        if resume is not None and resume > following:
            result.last = resume - timedelta(microseconds=1)  # resume there next pass
        following = resume
    while (
        following is not None
        and following <= horizon
        and (end_at is None or following <= end_at)
        and len(result.occurrences) < MAX_PER_PASS
    ):
        late = (now - following).total_seconds() > LATE_AFTER_S
        result.occurrences.append(Occurrence(following, "late" if late else "created"))
        result.last = following
        following = next_after(trigger, following)
    return result


def render(payload: dict[str, Any], occurrence: datetime, tz: str) -> dict[str, Any]:
    """The template's fields filled from the occurrence (in the schedule's zone)."""
    local = occurrence.replace(tzinfo=UTC).astimezone(zone(tz))
    values = {
        "{date}": f"{local:%Y-%m-%d}",
        "{time}": f"{local:%H:%M}",
        "{datetime}": f"{local:%Y-%m-%d %H:%M:%S}",
        "{month}": f"{local:%Y-%m}",
        "{weekday}": WEEKDAYS[local.weekday()],
    }
    rendered = dict(payload)
    for name in TEMPLATE_FIELDS:
        text = rendered.get(name)
        if isinstance(text, str):
            for token, value in values.items():
                text = text.replace(token, value)
            rendered[name] = text
    return rendered
