"""Quiet hours: a daily window, in a corp's time zone, in which nothing is sent.

`QUIET_HOURS="22:00-08:00"` (or `quiet_hours` per corp in the corps file). A window whose
start is after its end crosses midnight. A job that falls due inside the window waits
until it ends: it is not claimed (its `not_before` moves to the end), not failed, no
attempt used. The window's end is a wall-clock time: on a day the clocks change it is
the local time as the zone reads it then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WINDOW = re.compile(r"\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*-\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*")
LONGEST_SPAN_DAYS = 800
"""`quiet_seconds` looks at most this many days back; an older job is stale anyway."""


class BadWindow(ValueError):
    """A quiet-hours window that cannot be read (the message says how to write one)."""


@dataclass(frozen=True)
class QuietWindow:
    start: time
    end: time

    @classmethod
    def parse(cls, text: str | None) -> QuietWindow | None:
        """`"22:00-08:00"` → a window (seconds allowed: `"21:59:30-08:00"`); empty or None
        → no window; BadWindow otherwise."""
        if text is None or not text.strip():
            return None
        match = WINDOW.fullmatch(text)
        if match is None:
            raise BadWindow("write a window like 22:00-08:00 (HH:MM-HH:MM, 24-hour clock)")
        sh, sm, ss, eh, em, es = (int(part or 0) for part in match.groups())
        if sh > 23 or eh > 23 or sm > 59 or em > 59 or ss > 59 or es > 59:
            raise BadWindow("hours 00-23, minutes and seconds 00-59, like 22:00-08:00")
        start, end = time(sh, sm, ss), time(eh, em, es)
        if start == end:
            raise BadWindow("start and end are equal; leave it empty for no quiet hours")
        return cls(start, end)

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"

    @property
    def crosses_midnight(self) -> bool:
        return self.start > self.end

    def contains(self, moment: time) -> bool:
        """Is this local wall-clock time inside the window? Start inclusive, end exclusive."""
        if self.crosses_midnight:
            return moment >= self.start or moment < self.end
        return self.start <= moment < self.end

    def held_until(self, now: datetime, tz: ZoneInfo) -> datetime | None:
        """If `now` (naive UTC) is inside the window, the moment it ends (naive UTC)."""
        local = now.replace(tzinfo=UTC).astimezone(tz)
        if not self.contains(local.time()):
            return None
        end_day = local.date()
        if self.crosses_midnight and local.time() >= self.start:
            end_day += timedelta(days=1)
        return _utc(end_day, self.end, tz)

    def quiet_seconds(self, since: datetime, until: datetime, tz: ZoneInfo) -> float:
        """Seconds of [since, until] (naive UTC) that fall inside the window."""
        if until <= since:
            return 0.0
        first = since.replace(tzinfo=UTC).astimezone(tz).date() - timedelta(days=1)
        last = until.replace(tzinfo=UTC).astimezone(tz).date()
        if (last - first).days > LONGEST_SPAN_DAYS:
            first = last - timedelta(days=LONGEST_SPAN_DAYS)
        total = 0.0
        day = first
        while day <= last:
            start = _utc(day, self.start, tz)
            end_day = day + timedelta(days=1) if self.crosses_midnight else day
            end = _utc(end_day, self.end, tz)
            overlap = (min(end, until) - max(start, since)).total_seconds()
            if overlap > 0:
                total += overlap
            day += timedelta(days=1)
        return total


def _utc(day: date, wall: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, wall, tzinfo=tz).astimezone(UTC).replace(tzinfo=None)


def local_hhmm(moment: datetime, tz: ZoneInfo) -> str:
    """A naive UTC time as the corp reads it, for "held: quiet hours until 08:00"."""
    return _hhmm(moment.replace(tzinfo=UTC).astimezone(tz).time())


def _hhmm(moment: time) -> str:
    return f"{moment:%H:%M:%S}" if moment.second else f"{moment:%H:%M}"
