"""Time handling. The database stores naive UTC everywhere (DESIGN §3: a naive value is
UTC); conversions from a user's local time happen only at the CLI and import edges."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from broadcaster.errors import InvalidJob


def utcnow() -> datetime:
    """Naive UTC now, the form every timestamp column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidJob(
            f"unknown time zone {name!r}; use an IANA name like Asia/Shanghai"
        ) from None


TIME_RANGE = "0001-01-01 00:00:00 to 9999-12-31 23:59:59 UTC"


def to_naive_utc(moment: datetime) -> datetime:
    """An aware datetime to naive UTC; a naive one is taken as UTC already (the SQL contract).

    A time that leaves the calendar once converted (`0001-01-01T00:00:00+01:00`,
    `9999-12-31T23:59:59-05:00`) is an `InvalidJob` naming the allowed range.
    """
    if moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise InvalidJob(
            f"time {moment.isoformat()} is out of range once converted to UTC; "
            f"times must fall from {TIME_RANGE}"
        ) from None


def parse_user_time(text: str, *, tz: str | None) -> datetime:
    """Parse a time a person typed: ISO 8601, with an offset, or naive and read in `tz`.

    `tz=None` refuses a naive time, so a command line never guesses the zone silently.
    Returns naive UTC.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidJob(
            f"cannot read time {text!r}; write ISO 8601 like 2026-12-01T09:00:00+08:00"
        ) from None
    if moment.tzinfo is None:
        if tz is None:
            raise InvalidJob(
                f"time {text!r} has no UTC offset; add one (e.g. +08:00) or name a --tz"
            )
        moment = moment.replace(tzinfo=zone(tz))
    return to_naive_utc(moment)
