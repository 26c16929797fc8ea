"""The sandbox vendor's missions: what each created mass message becomes (DESIGN §9).

The model, as the sandbox plays it:

- Every accepted create call becomes one *mission*, with a string id counting up from
  `FIRST_MISSION_ID + 1` ('910001', '910002', ...) in creation order, across corps.
- Sub-missions: one per staff member in the body's `staff_ext_id_list`, in that order (the
  creator, `create_staff_ext_id`, alone when the list is empty). The body's groups are
  dealt to them round-robin in order: group i goes to sub-mission i mod n. A staff member
  left without a group still has an (empty) sub-mission.
- Staff confirmation: a sub-mission is `waiting_confirm` until `confirm_after_s` after the
  mission was created, `sended` from then on; its groups are then reached.
- Never confirmed: with `never_confirm_share` = s, the k-th sub-mission the sandbox ever
  created (k = 1, 2, ... across missions) is never confirmed when floor(k·s) > floor((k-1)·s):
  of any first K sub-missions exactly floor(K·s) stay `waiting_confirm` for ever.
- Failing: with `fail_share` = s, the k-th mission fails by the same rule on its own
  count: exactly floor(K·s) of the first K missions. Once `confirm_after_s` has passed a
  failing mission is `failed`, whatever its staff did; its sub-missions show
  `waiting_send` (confirmed, never sent) and none of its groups counts as reached.
- Mission status, computed at read time from the current knobs: `failed` (above), else
  `waiting` while any sub-mission is `waiting_confirm` (so a mission with a
  never-confirmed sub-mission stays `waiting` for ever), else `completed`.
- `sent_count` = the groups of `sended` sub-missions; `not_sent_count` = all the others.

Rules are a pure function of (ordinal, share), so tests predict counts exactly, and a
share changed through `POST /sandbox/faults` applies to missions already created.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broadcaster.vendor.missions import CHINA_OFFSET

FIRST_MISSION_ID = 910_000
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

WAITING_CONFIRM = "waiting_confirm"
WAITING_SEND = "waiting_send"
SENDED = "sended"


def picked(ordinal: int, share: float) -> bool:
    """Whether the `ordinal`-th item (1-based) is among the `share` picked: exactly
    floor(K·share) of the first K items are, spread evenly."""
    if share <= 0:
        return False
    if share >= 1:
        return True

    def below(k: int) -> int:  # round first: 0.29 * 100 is 28.999999999999996
        return math.floor(round(k * share, 9))

    return below(ordinal) > below(ordinal - 1)


def china_text(moment: float) -> str:
    """Unix seconds as the vendor's China-time text ('YYYY-MM-DD HH:MM:SS')."""
    utc = datetime.fromtimestamp(math.floor(moment), tz=UTC).replace(tzinfo=None)
    return (utc + CHINA_OFFSET).strftime(TIME_FORMAT)


@dataclass(frozen=True)
class SubMission:
    ordinal: int
    """Its rank among every sub-mission the sandbox created (1-based)."""
    staff_ext_id: str
    group_ext_ids: tuple[str, ...]


@dataclass(frozen=True)
class Mission:
    id: str
    ordinal: int
    corp_id: str
    body: dict[str, Any]
    created_at: float
    """Unix seconds."""
    sub_missions: tuple[SubMission, ...]

    @property
    def created_second(self) -> int:
        """The second the vendor reports (and filters on)."""
        return math.floor(self.created_at)

    @property
    def creator(self) -> str:
        return str(self.body.get("create_staff_ext_id", ""))

    def view(
        self,
        now: float,
        *,
        confirm_after_s: float,
        never_confirm_share: float,
        fail_share: float,
    ) -> dict[str, Any]:
        """The mission as the list answers it at `now`."""
        confirmed_phase = now - self.created_at >= confirm_after_s
        failed = confirmed_phase and picked(self.ordinal, fail_share)
        subs: list[dict[str, Any]] = []
        sent = not_sent = 0
        for sub in self.sub_missions:
            if failed:
                status = WAITING_SEND
            elif confirmed_phase and not picked(sub.ordinal, never_confirm_share):
                status = SENDED
            else:
                status = WAITING_CONFIRM
            if status == SENDED:
                sent += len(sub.group_ext_ids)
            else:
                not_sent += len(sub.group_ext_ids)
            subs.append(
                {
                    "staff_ext_id": sub.staff_ext_id,
                    "group_ext_id_list": list(sub.group_ext_ids),
                    "status": status,
                }
            )
        if failed:
            mission_status = "failed"
        elif any(s["status"] == WAITING_CONFIRM for s in subs):
            mission_status = "waiting"
        else:
            mission_status = "completed"
        when = china_text(self.created_at)
        content = {"text": self.body.get("text"), "attachments": self.body.get("attachments")}
        return {
            "id": self.id,
            "name": self.body.get("name"),
            "created_at": when,
            "send_at": when,
            "send_type": "realtime",
            "staff_ext_id": self.body.get("create_staff_ext_id"),
            "msg_data": json.dumps(content, ensure_ascii=False),
            "status": mission_status,
            "sent_count": sent,
            "not_sent_count": not_sent,
            "sub_mission_list": subs,
        }


class MissionRegistry:
    """Every mission created, in creation order. Not thread-safe: the state's lock guards it."""

    def __init__(self) -> None:
        self._missions: list[Mission] = []
        self._sub_count = 0

    def __len__(self) -> int:
        return len(self._missions)

    def add(self, corp_id: str, body: dict[str, Any], created_at: float) -> Mission:
        ordinal = len(self._missions) + 1
        staff = [str(s) for s in body.get("staff_ext_id_list") or []] or [
            str(body.get("create_staff_ext_id", ""))
        ]
        groups = [str(g) for g in body.get("group_ext_id_list") or []]
        subs = []
        for index, staff_id in enumerate(staff):
            self._sub_count += 1
            dealt = tuple(groups[index :: len(staff)])
            subs.append(SubMission(self._sub_count, staff_id, dealt))
        mission = Mission(
            id=str(FIRST_MISSION_ID + ordinal),
            ordinal=ordinal,
            corp_id=corp_id,
            body=body,
            created_at=created_at,
            sub_missions=tuple(subs),
        )
        self._missions.append(mission)
        return mission

    def all(self, corp_id: str | None = None) -> list[Mission]:
        """Oldest first (ties by id: the ordinal)."""
        found = [m for m in self._missions if corp_id is None or m.corp_id == corp_id]
        return sorted(found, key=lambda m: (m.created_second, m.ordinal))

    def query(
        self, corp_id: str, start: int, end: int, staff_ext_id: str | None = None
    ) -> list[Mission]:
        """The corp's missions created within [start, end] (unix seconds, inclusive), by
        `staff_ext_id` when given, oldest first."""
        return [
            m
            for m in self.all(corp_id)
            if start <= m.created_second <= end
            and (staff_ext_id is None or m.creator == staff_ext_id)
        ]

    def clear(self) -> None:
        self._missions.clear()
        self._sub_count = 0
