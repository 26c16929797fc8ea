"""Recurring schedules as pure functions: crontab's weekdays, which occurrences a pass
makes (ahead, late within the grace, skipped beyond it), and the template fields."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from broadcaster.campaigns.cron import next_after, parse_cron
from broadcaster.campaigns.schedules import dedupe_key, plan, render
from broadcaster.errors import InvalidJob

NOW = datetime(2026, 11, 26, 12, 0, 30)  # a Thursday, 20:00:30 in Shanghai


def test_weekdays_are_crontabs() -> None:
    weekdays = parse_cron("0 9 * * 1-5", "Asia/Shanghai")
    friday_0900 = datetime(2026, 11, 27, 1, 0)  # UTC
    assert next_after(weekdays, friday_0900) == datetime(2026, 11, 30, 1, 0)  # Monday
    sunday = parse_cron("0 9 * * 0", "UTC")
    assert next_after(sunday, NOW) == datetime(2026, 11, 29, 9, 0)
    assert next_after(parse_cron("0 9 * * 7", "UTC"), NOW) == datetime(2026, 11, 29, 9, 0)
    seconds = parse_cron("*/5 * * * * *", "UTC")
    assert next_after(seconds, NOW) == datetime(2026, 11, 26, 12, 0, 35)


@pytest.mark.parametrize("expression", ["* * * *", "0 9 * * 8", "61 * * * *", "x * * * *"])
def test_a_bad_cron_is_one_line(expression: str) -> None:
    with pytest.raises(InvalidJob, match="^cron: "):
        parse_cron(expression, "UTC")


def run(last: datetime | None, **kwargs: object) -> list[tuple[datetime, str]]:
    arguments: dict[str, object] = {
        "last": last,
        "created_at": datetime(2026, 11, 1),
        "start_at": None,
        "end_at": None,
        "now": NOW,
        "lookahead_s": 60,
        "grace_s": 300,
        **kwargs,
    }
    decided = plan(parse_cron("* * * * *", "UTC"), **arguments)  # type: ignore[arg-type]
    return [(occurrence.at, occurrence.outcome) for occurrence in decided.occurrences]


def test_occurrences_are_made_ahead_once() -> None:
    assert run(datetime(2026, 11, 26, 12, 0)) == [(datetime(2026, 11, 26, 12, 1), "created")]
    assert run(datetime(2026, 11, 26, 12, 1)) == []


def test_missed_occurrences_within_the_grace_are_late_and_older_ones_skipped() -> None:
    made = run(datetime(2026, 11, 26, 11, 50))
    assert made[0] == (datetime(2026, 11, 26, 11, 51), "skipped")
    assert made[1:] == [
        (datetime(2026, 11, 26, 11, 56), "late"),
        (datetime(2026, 11, 26, 11, 57), "late"),
        (datetime(2026, 11, 26, 11, 58), "late"),
        (datetime(2026, 11, 26, 11, 59), "late"),
        (datetime(2026, 11, 26, 12, 0), "late"),
        (datetime(2026, 11, 26, 12, 1), "created"),
    ]


def test_a_week_without_a_scheduler_is_one_skipped_record() -> None:
    decided = plan(
        parse_cron("* * * * * *", "UTC"),
        last=NOW - timedelta(days=7),
        created_at=datetime(2026, 11, 1),
        start_at=None,
        end_at=None,
        now=NOW,
        lookahead_s=2,
        grace_s=0.5,
    )
    outcomes = [occurrence.outcome for occurrence in decided.occurrences]
    assert outcomes == ["skipped", "created", "created", "created"]  # 12:00:30, :31, :32
    assert "SCHEDULE_MISFIRE_GRACE_S=0.5s" in (decided.occurrences[0].detail or "")


def test_start_and_end_bound_the_occurrences() -> None:
    start = datetime(2026, 11, 26, 12, 1)
    assert run(None, start_at=start, lookahead_s=120) == [
        (datetime(2026, 11, 26, 12, 1), "created"),
        (datetime(2026, 11, 26, 12, 2), "created"),
    ]
    assert run(None, created_at=NOW, end_at=datetime(2026, 11, 26, 12, 1, 30), lookahead_s=600) == [
        (datetime(2026, 11, 26, 12, 1), "created")
    ]


def test_the_dedupe_key_names_the_occurrence_in_utc() -> None:
    assert dedupe_key(7, datetime(2026, 11, 27, 12, 0)) == "schedule:7:2026-11-27T12:00:00Z"


def test_template_fields_are_filled_in_the_schedules_zone_and_nothing_else() -> None:
    template = {
        "name": "周报 {date}",
        "text": "{weekday} {time} {month} {other} {0.__class__}",
        "create_staff_ext_id": "{date}",
    }
    filled = render(template, datetime(2026, 11, 27, 16, 30), "Asia/Shanghai")
    assert filled == {
        "name": "周报 2026-11-28",
        "text": "星期六 00:30 2026-11 {other} {0.__class__}",
        "create_staff_ext_id": "{date}",  # only name and text are templates
    }
    assert render({"name": "{datetime}"}, datetime(2026, 11, 27, 16, 30, 5), "UTC") == {
        "name": "2026-11-27 16:30:05"
    }
    assert template["name"] == "周报 {date}", "the template itself is unchanged"
