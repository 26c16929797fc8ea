"""The vendor's list of created missions (DESIGN §9), as we read it.

`GET /open-api/customer_group_msg/result` answers missions whose fields are not promised:
every field here is optional (None = the vendor did not say, or said something we cannot
read), and an unknown mission status counts as "not final". Times arrive as China-time
text and are kept as naive UTC, the table's convention.

`parse_mission_page` reads one answer into these shapes and never fails on a field: a
field missing, null or of another type than expected is None. Only an answer without a
list of missions is unreadable (`VendorAnswerUnreadable`): it settles nothing.

The shapes below are the whole interface between the vendor client (which fills them)
and the reconciler (which matches and records them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broadcaster.errors import VendorAnswerUnreadable

RESULT_PATH = "/open-api/customer_group_msg/result"
RESULT_API = "customer_group_msg/result"
"""The quota key of the list endpoint: a read API, its own bucket per corp."""

MAX_WINDOW_S = 3 * 86_400
"""`end_time - start_time` may be at most 3 days."""
MAX_PAGE_SIZE = 30
"""`limit` may be at most 30."""

CHINA_OFFSET = timedelta(hours=8)
"""China Standard Time, UTC+8 all year (no daylight saving since 1991)."""

FINAL_MISSION_STATUSES = frozenset({"completed", "failed", "canceled", "create_failed"})
"""A mission in one of these will not change; any other status (known or not) may."""

SUB_MISSION_SENT = "sended"
"""A staff member's part of a mission whose status is this has been confirmed and sent."""


@dataclass(frozen=True)
class SubMission:
    """One staff member's share of a mission: the groups they send it to."""

    staff_ext_id: str | None
    group_ext_ids: tuple[str, ...] | None
    status: str | None
    """`waiting_send` | `waiting_confirm` | `sended`, or another text, or None."""


@dataclass(frozen=True)
class Mission:
    """One created mass message as the list reports it."""

    id: str | None
    name: str | None
    created_at: datetime | None
    """Naive UTC (converted from the vendor's China time)."""
    send_at: datetime | None
    send_type: str | None
    creator: str | None
    """`staff_ext_id`: who created it (the payload's `create_staff_ext_id`)."""
    text: str | None
    """The text of `msg_data`, None when msg_data is absent or unreadable."""
    status: str | None
    sent_count: int | None
    not_sent_count: int | None
    sub_missions: tuple[SubMission, ...] | None

    @property
    def groups(self) -> frozenset[str] | None:
        """Every group the mission targets (the union of its sub-missions'), or None when
        any sub-mission's groups are unknown."""
        if self.sub_missions is None:
            return None
        found: set[str] = set()
        for sub in self.sub_missions:
            if sub.group_ext_ids is None:
                return None
            found.update(sub.group_ext_ids)
        return frozenset(found)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_MISSION_STATUSES


@dataclass(frozen=True)
class MissionPage:
    """One page of the list: its missions (unreadable entries dropped and counted) and
    the vendor's `total_count` (None when absent or unreadable)."""

    missions: tuple[Mission, ...]
    total_count: int | None
    raw_count: int
    """How many entries the page held, readable or not: paging goes by this."""
    unreadable: int = 0
    """Entries that were not objects at all (a mission missing fields is still read)."""


def china_text_to_utc(text: str) -> datetime:
    """'YYYY-MM-DD HH:MM:SS' in China time as naive UTC; ValueError when it is not that."""
    return datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S") - CHINA_OFFSET


def utc_to_unix(moment: datetime) -> int:
    """Naive UTC as unix seconds (the list call's `start_time`/`end_time`)."""
    return int((moment - datetime(1970, 1, 1)).total_seconds())


def parse_mission_page(data: dict[str, Any]) -> MissionPage:
    """One answer of the list call (`{errcode, errmsg, missions, total_count}`) as a page.
    Raises VendorAnswerUnreadable when it holds no list of missions; any other oddity
    leaves a field None (or, for an entry that is not an object, counts it `unreadable`)."""
    entries = data.get("missions") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        kind = "missing" if entries is None else f"a {type(entries).__name__}, not a list"
        raise VendorAnswerUnreadable(f"answer without a list of missions ('missions' {kind})")
    missions = tuple(parse_mission(entry) for entry in entries if isinstance(entry, dict))
    return MissionPage(
        missions=missions,
        total_count=_count(data.get("total_count")),
        raw_count=len(entries),
        unreadable=len(entries) - len(missions),
    )


def parse_mission(entry: dict[str, Any]) -> Mission:
    """One mission object; every field optional."""
    return Mission(
        id=_ident(entry.get("id")),
        name=_text(entry.get("name")),
        created_at=_china_time(entry.get("created_at")),
        send_at=_china_time(entry.get("send_at")),
        send_type=_text(entry.get("send_type")),
        creator=_ident(entry.get("staff_ext_id")),
        text=_message_text(entry.get("msg_data")),
        status=_text(entry.get("status")),
        sent_count=_count(entry.get("sent_count")),
        not_sent_count=_count(entry.get("not_sent_count")),
        sub_missions=_sub_missions(entry.get("sub_mission_list")),
    )


def _sub_missions(value: Any) -> tuple[SubMission, ...] | None:
    """Each staff member's share. An entry that is not an object is kept as a share of
    unknown staff and groups, so the mission's group set reads as unknown, not smaller."""
    if not isinstance(value, list):
        return None
    return tuple(_sub_mission(item if isinstance(item, dict) else {}) for item in value)


def _sub_mission(item: dict[str, Any]) -> SubMission:
    return SubMission(
        staff_ext_id=_ident(item.get("staff_ext_id")),
        group_ext_ids=_idents(item.get("group_ext_id_list")),
        status=_text(item.get("status")),
    )


def _idents(value: Any) -> tuple[str, ...] | None:
    """A list of ids, or None when it is not a list or any entry is not an id (a group
    set read in part would look like another set)."""
    if not isinstance(value, list):
        return None
    found = [ident for ident in map(_ident, value) if ident is not None]
    return tuple(found) if len(found) == len(value) else None


def _message_text(value: Any) -> str | None:
    """The text of `msg_data`: JSON text (or an object) holding `text` as a string or as
    `{"content": ...}`. Kept exactly as the vendor gave it."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    if not isinstance(value, dict):
        return None
    text = value.get("text")
    if isinstance(text, dict):
        text = text.get("content")
    return _text(text)


def _china_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return china_text_to_utc(value)
    except (ValueError, OverflowError):  # not that format; or year 1 minus eight hours
        return None


def _ident(value: Any) -> str | None:
    """An id the vendor may send as a string or a number; blank or anything else: None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # more digits than int-to-str allows
            return None
    if isinstance(value, str) and value.strip():
        return value
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int | None:
    """A non-negative integer (a bool is not one)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
