"""Quiet hours, the stale guard and the monthly cap as pure functions: the clock is a
parameter, so midnight, the window's edges and the month's turn are tested directly."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from broadcaster.campaigns import cap
from broadcaster.campaigns.quiet import BadWindow, QuietWindow
from broadcaster.campaigns.stale import lateness_s, stale_reason
from broadcaster.errors import SettingsError
from broadcaster.settings import load_settings

SH = ZoneInfo("Asia/Shanghai")  # UTC+8, no DST
NIGHT = QuietWindow(time(22), time(8))


def utc(text: str) -> datetime:
    """A Shanghai wall-clock time as naive UTC."""
    return (
        datetime.fromisoformat(text)
        .replace(tzinfo=SH)
        .astimezone(ZoneInfo("UTC"))
        .replace(tzinfo=None)
    )


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("22:00-08:00", NIGHT),
        (" 9:30 - 12:00 ", QuietWindow(time(9, 30), time(12))),
        ("21:59:30-08:00:05", QuietWindow(time(21, 59, 30), time(8, 0, 5))),
        ("", None),
        ("  ", None),
    ],
)
def test_windows_are_read(text: str, window: QuietWindow | None) -> None:
    assert QuietWindow.parse(text) == window


@pytest.mark.parametrize(
    "text", ["22-08", "22:00", "24:00-08:00", "22:60-08:00", "08:00-08:00", "22:00:60-08:00"]
)
def test_a_malformed_window_is_refused(text: str) -> None:
    with pytest.raises(BadWindow):
        QuietWindow.parse(text)


def test_a_malformed_window_stops_the_settings_with_a_line_naming_it() -> None:
    with pytest.raises(SettingsError, match=r"^QUIET_HOURS: write a window like 22:00-08:00"):
        load_settings(_env_file=None, quiet_hours="22:00-8")


@pytest.mark.parametrize(
    ("local", "inside"),
    [
        ("21:59:59", False),
        ("22:00:00", True),  # start inclusive
        ("23:59:59", True),
        ("00:00:00", True),  # across midnight
        ("07:59:59", True),
        ("08:00:00", False),  # end exclusive
        ("12:00:00", False),
    ],
)
def test_a_window_across_midnight(local: str, inside: bool) -> None:
    assert NIGHT.contains(time.fromisoformat(local)) is inside


def test_held_until_is_the_next_end_of_the_window() -> None:
    assert NIGHT.held_until(utc("2026-11-26 23:00"), SH) == utc("2026-11-27 08:00")
    assert NIGHT.held_until(utc("2026-11-27 03:00"), SH) == utc("2026-11-27 08:00")
    assert NIGHT.held_until(utc("2026-11-27 08:00"), SH) is None
    assert NIGHT.held_until(utc("2026-11-26 21:59:59"), SH) is None
    day = QuietWindow(time(12), time(14))
    assert day.held_until(utc("2026-11-26 12:00"), SH) == utc("2026-11-26 14:00")


def test_held_until_on_a_day_the_clocks_change() -> None:
    paris = ZoneInfo("Europe/Paris")  # 2026-03-29: 02:00 -> 03:00
    until = NIGHT.held_until(datetime(2026, 3, 28, 22, 30), paris)  # 23:30 local
    assert until == datetime(2026, 3, 29, 6, 0)  # 08:00 CEST


def test_quiet_seconds_count_only_the_window() -> None:
    start, end = utc("2026-11-26 21:00"), utc("2026-11-27 09:00")
    assert NIGHT.quiet_seconds(start, end, SH) == 10 * 3600
    assert NIGHT.quiet_seconds(utc("2026-11-26 23:00"), utc("2026-11-26 23:30"), SH) == 1800
    assert NIGHT.quiet_seconds(utc("2026-11-27 09:00"), utc("2026-11-27 21:00"), SH) == 0
    three_nights = NIGHT.quiet_seconds(utc("2026-11-24 12:00"), utc("2026-11-27 12:00"), SH)
    assert three_nights == 3 * 10 * 3600


def test_the_stale_guard_does_not_count_quiet_hours() -> None:
    send_at, now = utc("2026-11-26 23:00"), utc("2026-11-27 08:30")
    assert lateness_s(send_at, None, now, NIGHT, SH) == 1800
    assert lateness_s(send_at, None, now, None, SH) == 9.5 * 3600
    assert stale_reason(send_at, None, now, max_lateness_s=3600, quiet=NIGHT, tz=SH) is None
    reason = stale_reason(send_at, None, now, max_lateness_s=3600, quiet=None, tz=SH)
    assert reason is not None and reason.startswith("stale: not sent within MAX_LATENESS_S=3600s")


def test_the_stale_guard_counts_from_a_hold_and_can_be_off() -> None:
    send_at, held, now = utc("2026-11-20 10:00"), utc("2026-12-01 00:00"), utc("2026-12-01 01:00")
    assert lateness_s(send_at, held, now, None, SH) == 3600
    assert stale_reason(send_at, None, now, max_lateness_s=0, quiet=None, tz=SH) is None
    assert stale_reason(send_at, held, now, max_lateness_s=7200, quiet=None, tz=SH) is None


def test_the_month_is_the_corps_calendar_month() -> None:
    assert cap.month_of(utc("2026-11-30 23:59"), SH) == "2026-11"
    assert cap.month_of(utc("2026-12-01 00:00"), SH) == "2026-12"
    assert cap.month_of(datetime(2026, 11, 30, 16, 0), SH) == "2026-12"  # 00:00 in Shanghai
    assert cap.next_month_start(utc("2026-11-15 12:00"), SH) == utc("2026-12-01 00:00")
    assert cap.next_month_start(utc("2026-12-31 23:00"), SH) == utc("2027-01-01 00:00")


@pytest.mark.parametrize(("month", "days"), [("2026-11", 30), ("2026-12", 31), ("2028-02", 29)])
def test_the_default_cap_is_the_months_days(month: str, days: int) -> None:
    assert cap.cap_for(month, None) == days
    assert cap.cap_for(month, 4) == 4


def test_the_cap_policies() -> None:
    counts = {"g1": 30, "g2": 29}
    groups = ["g1", "g2", "g3", "g2"]
    assert cap.decide(groups, counts, 30, "trim") == cap.CapDecision("trim", ["g2", "g3"], ["g1"])
    assert cap.decide(groups, counts, 30, "hold") == cap.CapDecision("hold", [], ["g1"])
    assert cap.decide(groups, counts, 30, "fail") == cap.CapDecision("fail", [], ["g1"])
    assert cap.decide(groups, counts, 30, "off").action == "send"
    assert cap.decide(["g2", "g3"], counts, 30, "trim") == cap.CapDecision("send", ["g2", "g3"])
    assert cap.decide(["g1"], counts, 30, "trim") == cap.CapDecision("fail", [], ["g1"])


def test_a_malformed_window_in_the_corps_file_names_the_corp(tmp_path: Any) -> None:
    from broadcaster.corps import CorpDirectory

    path = tmp_path / "corps.json"
    path.write_text('{"corp-b": {"secret": "s", "quiet_hours": "9pm-8am"}}')
    settings = load_settings(_env_file=None, weiban_corps_file=path)
    with pytest.raises(SettingsError, match=r"corp corp-b: quiet_hours: write a window like"):
        CorpDirectory(settings)
    path.write_text('{"corp-b": {"secret": "s", "tz": "Mars/Olympus"}}')
    with pytest.raises(SettingsError, match=r"corp corp-b: tz: unknown time zone"):
        CorpDirectory(settings)


def test_a_corp_inherits_the_defaults_it_does_not_name(tmp_path: Any) -> None:
    from broadcaster.corps import CorpDirectory

    path = tmp_path / "corps.json"
    path.write_text(
        '{"corp-b": {"secret": "s", "tz": "Europe/London"}, "corp-c": {"secret": "s",'
        ' "quiet_hours": ""}, "corp-d": {"secret": "s"}}'
    )
    settings = load_settings(
        _env_file=None, weiban_corps_file=path, quiet_hours="22:00-08:00", monthly_cap=20
    )
    corps = CorpDirectory(settings)
    assert corps.campaign("corp-b").quiet == NIGHT and corps.campaign("corp-b").tz == (
        "Europe/London"
    )
    assert corps.campaign("corp-c").quiet is None and corps.campaign("corp-c").monthly_cap == 20
    assert corps.campaign("corp-d") == corps.campaign("anyone") == corps.default_campaign
