"""The per-group monthly cap: WeCom lets a customer group receive only so many mass
messages a month (by default as many as the month has days; an admin can change it, so
it is set per corp). We count what our own jobs sent each group in the corp's calendar
month, and a job whose groups include ones at the cap follows the policy:

- `trim` (default): send to the others; the job records which groups were left out and
  why (`cap_left_out`). A job with every group at the cap has nothing to send: `failed`.
- `hold`: the whole job waits until the month turns (in the corp's time zone).
- `fail`: the job ends `failed`, naming the groups.
- `off`: no counting.

This module decides; `gate.py` counts and writes, in the claim's transaction.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

Policy = Literal["trim", "hold", "fail", "off"]
Action = Literal["send", "trim", "hold", "fail"]


def month_of(now: datetime, tz: ZoneInfo) -> str:
    """The calendar month (`YYYY-MM`) of naive UTC `now` in the corp's zone."""
    return f"{now.replace(tzinfo=UTC).astimezone(tz):%Y-%m}"


def cap_for(month: str, configured: int | None) -> int:
    """The configured cap, or the number of days of `month` (WeCom's default)."""
    if configured is not None:
        return configured
    year, number = (int(part) for part in month.split("-"))
    return calendar.monthrange(year, number)[1]


def next_month_start(now: datetime, tz: ZoneInfo) -> datetime:
    """The first moment of the next calendar month in the corp's zone, as naive UTC."""
    local = now.replace(tzinfo=UTC).astimezone(tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    start = datetime(year, month, 1, tzinfo=tz)
    return start.astimezone(UTC).replace(tzinfo=None)


@dataclass
class CapDecision:
    action: Action
    kept: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def decide(
    groups: Sequence[str], counts: Mapping[str, int], cap: int, policy: Policy
) -> CapDecision:
    """What a job for `groups` does, given what each group received this month."""
    unique = list(dict.fromkeys(groups))
    if policy == "off":
        return CapDecision("send", unique)
    full = [group for group in unique if counts.get(group, 0) >= cap]
    kept = [group for group in unique if counts.get(group, 0) < cap]
    if not full:
        return CapDecision("send", kept)
    if policy == "trim" and kept:
        return CapDecision("trim", kept, full)
    if policy == "hold":
        return CapDecision("hold", [], full)
    return CapDecision("fail", [], full)


def describe(left_out: Sequence[str], cap: int, month: str, *, shown: int = 10) -> str:
    names = ", ".join(left_out[:shown]) + (
        f" and {len(left_out) - shown} more" if len(left_out) > shown else ""
    )
    plural = "group" if len(left_out) == 1 else "groups"
    return f"monthly cap: {plural} {names} already received {cap} of {cap} in {month}"
