"""The Python API for producers: `schedule_broadcast` for one send, `schedule_many` for bulk.

    from broadcaster import schedule_broadcast
    shanghai = ZoneInfo("Asia/Shanghai")
    result = schedule_broadcast(body, send_at=datetime(2026, 12, 1, 9, tzinfo=shanghai),
                                dedupe_key="promo-42:g7", campaign="promo-42")

A bad body raises `InvalidPayload` before anything is written. An audience over the vendor's
2000-group cap becomes several jobs of one campaign (dedupe keys `KEY#1`, `KEY#2`, …).
A dedupe_key already present is reported in `duplicate_keys`, not raised: retrying your own
insert is safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from broadcaster.db import make_engine
from broadcaster.errors import InvalidJob, InvalidPayload
from broadcaster.payload import parse_payload, split_audience
from broadcaster.settings import describe_validation_error, load_settings
from broadcaster.store import JobStore
from broadcaster.timeutil import to_naive_utc, utcnow


class JobRequest(BaseModel):
    """One send as a producer asks for it: the vendor body plus when, who and how."""

    model_config = ConfigDict(extra="forbid")

    payload: dict[str, Any]
    send_at: datetime | None = Field(default=None, description="aware, or naive UTC")
    corp_id: str | None = None
    dedupe_key: str | None = Field(default=None, min_length=1)
    campaign: str | None = None
    priority: int = 0
    expires_at: datetime | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=100)

    @field_validator("send_at", "expires_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else to_naive_utc(value)

    def to_rows(self) -> list[dict[str, Any]]:
        """Validated table rows: one, or one per 2000-group part of a large audience."""
        parts = split_audience(self.payload)
        rows = []
        for number, part in enumerate(parts, start=1):
            body = parse_payload(part).to_vendor_json()
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
    settings = load_settings()
    return JobStore(make_engine(database_url or settings.database_url))


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
    rows: list[dict[str, Any]] = []
    for index, item in enumerate(requests):
        try:
            request = item if isinstance(item, JobRequest) else job_request(item)
            rows.extend(request.to_rows())
        except (InvalidPayload, InvalidJob) as exc:
            raise type(exc)(f"item {index}: {exc}") from None
    store = store or _store_for(None)
    result = ScheduleResult()
    for start in range(0, len(rows), batch_size):
        inserted = store.insert_jobs(rows[start : start + batch_size])
        result.add(ScheduleResult(inserted.inserted_ids, inserted.duplicate_keys))
    return result
