"""The vendor's list of created missions (DESIGN §9), as we read it.

`GET /open-api/customer_group_msg/result` answers missions whose fields are not promised:
every field here is optional (None = the vendor did not say, or said something we cannot
read), and an unknown mission status counts as "not final". Times arrive as China-time
text and are kept as naive UTC, the table's convention.

The shapes below are the whole interface between the vendor client (which fills them)
and the reconciler (which matches and records them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

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
