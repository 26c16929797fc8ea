"""The Python API for producers: `schedule_broadcast` for one send, `schedule_many` for bulk.

    from broadcaster import schedule_broadcast
    shanghai = ZoneInfo("Asia/Shanghai")
    result = schedule_broadcast(body, send_at=datetime(2026, 12, 1, 9, tzinfo=shanghai),
                                dedupe_key="promo-42:g7", campaign="promo-42")

A bad body raises `InvalidPayload` before anything is written. An audience over the vendor's
2000-group cap becomes several jobs of one campaign (dedupe keys `KEY#1`, `KEY#2`, …).
A dedupe_key already present is reported in `duplicate_keys`, not raised: retrying your own
insert is safe. A dedupe_key may not end in `#` and digits: that suffix names the parts of a
split audience. A part's key already held by a row that is not that part (other groups or
another corp: say a row someone wrote as `camp#2` by hand) is refused with `InvalidJob`, not
counted as a duplicate, and nothing of that send is written.

Every value is checked against what the table can hold (priority a 32-bit integer, times
within years 1-9999 once in UTC, text without NUL or unpaired surrogates, keys and labels of
at most 1000 bytes), so one row never makes the database refuse a whole batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from broadcaster.errors import InvalidJob, InvalidPayload
from broadcaster.jobs.store import JobStore
from broadcaster.settings import describe_validation_error, load_settings
from broadcaster.timeutil import to_naive_utc, utcnow
from broadcaster.vendor.payload import (
    MAX_GROUPS_PER_TASK,
    parse_payload,
    split_audience,
    unstorable,
)

INT32 = (-(2**31), 2**31 - 1)
"""`priority` is an INTEGER column: 32 bits on PostgreSQL."""
MAX_LABEL_BYTES = 1000
"""corp_id, dedupe_key and campaign, in UTF-8 bytes. dedupe_key and campaign are indexed,
and PostgreSQL refuses an index entry over ~2700 bytes (failing the whole insert)."""
LABELS = ("corp_id", "dedupe_key", "campaign")
PART_SUFFIX = re.compile(r"#(\d+)\Z")
"""The end of a part's dedupe key (`KEY#2`), reserved: a user key may not end like this."""


class JobRequest(BaseModel):
    """One send as a producer asks for it: the vendor body plus when, who and how."""

    model_config = ConfigDict(extra="forbid")

    payload: dict[str, Any]
    send_at: datetime | None = Field(default=None, description="aware, or naive UTC")
    corp_id: str | None = Field(default=None, description="None: the default corp")
    dedupe_key: str | None = Field(default=None, min_length=1)
    campaign: str | None = None
    priority: int = Field(default=0, ge=INT32[0], le=INT32[1])
    expires_at: datetime | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=100)

    @model_validator(mode="before")
    @classmethod
    def _storable_labels(cls, data: Any) -> Any:
        """Checked before the fields so a label of megabytes is not echoed in the error."""
        if isinstance(data, dict):
            for name in LABELS:
                value = data.get(name)
                if not isinstance(value, str):
                    continue
                if reason := unstorable(value):
                    raise ValueError(f"{name}: {reason}")
                if len(value) * 4 > MAX_LABEL_BYTES and len(value.encode()) > MAX_LABEL_BYTES:
                    raise ValueError(
                        f"{name}: {len(value.encode())} bytes in UTF-8, "
                        f"over the limit of {MAX_LABEL_BYTES}"
                    )
        return data

    @field_validator("corp_id")
    @classmethod
    def _named_corp(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError(
                "must not be empty; leave it out (None, or NULL in SQL) to use the default "
                "corp, WEIBAN_CORP_ID"
            )
        return value.strip()

    @field_validator("dedupe_key")
    @classmethod
    def _not_a_part_key(cls, value: str | None) -> str | None:
        if value is not None and (suffix := PART_SUFFIX.search(value)):
            raise ValueError(
                f"must not end in {suffix.group()!r}: KEY#1, KEY#2, … name the parts of an "
                f"audience over {MAX_GROUPS_PER_TASK} groups; use another separator, "
                f"e.g. {value[: suffix.start()] + '-' + suffix.group(1)!r}"
            )
        return value

    @field_validator("send_at", "expires_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            return to_naive_utc(value)
        except InvalidJob as exc:
            raise ValueError(str(exc)) from None
        except OverflowError:  # before timeutil said it in words
            raise ValueError(
                f"{value.isoformat()} is out of range once converted to UTC (years 1 to 9999)"
            ) from None

    @model_validator(mode="after")
    def _expires_after_send(self) -> JobRequest:
        if self.expires_at is None:
            return self
        send_at = self.send_at or utcnow()
        if self.expires_at <= send_at:
            when = f"send_at ({send_at:%Y-%m-%d %H:%M:%S} UTC)" if self.send_at else "now"
            raise ValueError(
                f"expires_at ({self.expires_at:%Y-%m-%d %H:%M:%S} UTC) is not after {when}: "
                "the job would expire before it could be sent"
            )
        return self

    def to_rows(self, *, storable_text: bool = False) -> list[dict[str, Any]]:
        """Validated table rows: one, or one per 2000-group part of a large audience.
        `storable_text`: see `parse_payload`."""
        parts = split_audience(self.payload)
        rows = []
        for number, part in enumerate(parts, start=1):
            body = parse_payload(part, storable_text=storable_text).to_vendor_json()
            key = self.dedupe_key
            if key is not None and len(parts) > 1:
                key = f"{key}#{number}"
            rows.append(self._row(body, key))
        return rows

    def _row(self, body: str, dedupe_key: str | None) -> dict[str, Any]:
        return {
            "corp_id": self.corp_id,
            "payload": body,
            "send_at": self.send_at or utcnow(),
            "dedupe_key": dedupe_key,
            "campaign": self.campaign,
            "priority": self.priority,
            "expires_at": self.expires_at,
            "max_attempts": self.max_attempts or 5,
        }


def job_request(data: dict[str, Any]) -> JobRequest:
    """Build a JobRequest from untrusted data, raising `InvalidJob` with one clear line."""
    try:
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidJob(describe_validation_error(exc)) from None


@dataclass
class ScheduleResult:
    job_ids: list[int] = field(default_factory=list)
    duplicate_keys: list[str] = field(default_factory=list)

    def add(self, other: ScheduleResult) -> None:
        self.job_ids.extend(other.job_ids)
        self.duplicate_keys.extend(other.duplicate_keys)


@cache
def _store_for(database_url: str | None) -> JobStore:
    # Imported here: the bootstrap pulls in the migrations, Redis and Dramatiq, which a
    # producer that passes its own store, or an import's parsing process, never needs.
    from broadcaster.bootstrap import Bootstrap

    settings = load_settings(**({"database_url": database_url} if database_url else {}))
    return Bootstrap(settings).store  # checked: "run broadcaster db upgrade", not "no such table"


def schedule_broadcast(
    payload: dict[str, Any],
    send_at: datetime | None = None,
    *,
    store: JobStore | None = None,
    **job: Any,
) -> ScheduleResult:
    """Schedule one send. `job` takes the other JobRequest fields (corp_id, dedupe_key,
    campaign, priority, expires_at, max_attempts)."""
    request = job_request({"payload": payload, "send_at": send_at, **job})
    return schedule_many([request], store=store)


def schedule_many(
    requests: Iterable[JobRequest | dict[str, Any]],
    *,
    store: JobStore | None = None,
    batch_size: int = 1000,
) -> ScheduleResult:
    """Schedule many sends. Everything is validated first: one bad item raises
    `InvalidPayload`/`InvalidJob` naming its index, and nothing is written."""
    items: list[tuple[int, list[dict[str, Any]]]] = []
    for index, item in enumerate(requests):
        try:
            request = item if isinstance(item, JobRequest) else job_request(item)
            items.append((index, request.to_rows()))
        except (InvalidPayload, InvalidJob) as exc:
            raise type(exc)(f"item {index}: {exc}") from None
    store = store or _store_for(None)
    for index, reason in part_collisions(store, items).items():
        raise InvalidJob(f"item {index}: {reason}")
    rows = [row for _, item_rows in items for row in item_rows]
    result = ScheduleResult()
    for start in range(0, len(rows), batch_size):
        inserted = store.insert_jobs(rows[start : start + batch_size])
        result.add(ScheduleResult(inserted.inserted_ids, inserted.duplicate_keys))
    return result


def part_collisions(
    store: JobStore, items: Sequence[tuple[int, Sequence[dict[str, Any]]]]
) -> dict[int, str]:
    """The items (by their number) whose split-audience part keys (`KEY#n`) are already
    held by a row that is not that part, with why.

    A part already present with the same corp and the same groups is this send scheduled
    before: a duplicate, as for any dedupe_key. Any other row under that key (one written
    by hand as `camp#2`, another audience) would silently stand in for the part and its
    groups would get nothing, so the whole item is refused instead. Checked just before
    the insert: a row written in between by someone else is not seen."""
    parts: dict[str, tuple[int, dict[str, Any]]] = {}
    for number, rows in items:
        for row in rows:
            key = row.get("dedupe_key")
            if key is not None and PART_SUFFIX.search(key):
                parts.setdefault(key, (number, row))
    if not parts:
        return {}
    held_by = store.keyed_jobs(parts)
    collisions: dict[int, str] = {}
    for key, (number, row) in parts.items():
        held = held_by.get(key)
        if held is None or number in collisions:
            continue
        # NULL means the default corp, which the claim writes into the row: equal either way
        same_corp = (held.corp_id or store.default_corp) == (row["corp_id"] or store.default_corp)
        if same_corp and _groups(held.payload) == _groups(row["payload"]):
            continue
        suffix = PART_SUFFIX.search(key)
        assert suffix is not None
        collisions[number] = (
            f"dedupe_key {key!r}, part {suffix.group(1)} of this audience over "
            f"{MAX_GROUPS_PER_TASK} groups, is already held by job {held.id}, which is not "
            f"that part (other groups or another corp); nothing of this send was scheduled: "
            f"choose another dedupe_key than {key[: suffix.start()]!r}"
        )
    return collisions


def _groups(payload: str) -> Any:
    try:
        return json.loads(payload).get("group_ext_id_list")
    except (ValueError, AttributeError, TypeError):
        return None
