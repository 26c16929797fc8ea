"""POST /api/v1/broadcasts: one job or a list, written as the producer API writes them.

Every item is validated first (the producer's `JobRequest`, through `BroadcastIn`); keys
repeated in the request are refused; a key already held by a row with another body is a
409 before anything is written; then one insert of every row (split audiences included),
where a key already present is a replay, answered with the job that holds it.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from pydantic import ValidationError

from broadcaster.db import is_sqlite
from broadcaster.errors import InvalidJob, InvalidPayload
from broadcaster.jobs.screening import read_time
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.jobs.store.base import InsertResult
from broadcaster.jobs.store.insert import COPY_THRESHOLD
from broadcaster.produce.api import JobRequest, part_collisions
from broadcaster.web import queries
from broadcaster.web.models import BroadcastIn, ItemResult, JobRef, ScheduleOut
from broadcaster.web.problems import Problem, validation_errors


def schedule(
    store: JobStore, body: BroadcastIn | list[BroadcastIn], idempotency_key: str | None
) -> ScheduleOut:
    """Write the jobs of a request; `created` is false on an item whose jobs all existed."""
    single = isinstance(body, BroadcastIn)
    items: list[BroadcastIn] = [body] if isinstance(body, BroadcastIn) else list(body)
    if idempotency_key is not None:
        items = [_with_key(items, idempotency_key, single)]
    _refuse_repeated_keys(items, single)
    planned = _rows(items, single)
    held = queries.rows_by_key(store, [k for _, rows in planned for k in _keys(rows)])
    _refuse_conflicts(store, items, planned, held, single)
    for index, reason in part_collisions(store, planned).items():
        raise Problem(
            422, reason, errors=[{"pointer": _at(single, index, "dedupe_key"), "detail": reason}]
        )
    rows = [row for _, item_rows in planned for row in item_rows]
    inserted = _insert(store, rows) if rows else None
    fresh = iter(inserted.inserted_ids if inserted else [])
    skipped = set(inserted.duplicate_keys if inserted else [])
    late = [k for k in skipped if k not in held]  # written by someone since the check
    if late:
        held.update(queries.rows_by_key(store, late))
        _refuse_conflicts(store, items, planned, held, single, written=True)
    answer = ScheduleOut(items=[])
    default = store.default_corp
    for index, item_rows in planned:
        result = ItemResult(index=index, created=False, jobs=[])
        for row in item_rows:
            key = row["dedupe_key"]
            if key is not None and key in skipped:
                job = held[key]
                ref = JobRef(
                    id=job.id,
                    status=job.status,
                    dedupe_key=key,
                    corp_id=job.corp_id or default,
                    campaign=job.campaign,
                    send_at=queries.as_utc(job.send_at),
                )
            else:
                result.created = True
                ref = JobRef(
                    id=next(fresh),
                    status=JobStatus.SCHEDULED.value,
                    dedupe_key=key,
                    corp_id=row["corp_id"] or default,
                    campaign=row["campaign"],
                    send_at=row["send_at"].replace(tzinfo=UTC),
                )
            result.jobs.append(ref)
        answer.items.append(result)
    return answer


def _insert(store: JobStore, rows: list[dict[str, Any]]) -> InsertResult:
    """One insert of every row; except that PostgreSQL's COPY path (from COPY_THRESHOLD
    rows) stages only the SQL contract's producer columns, so a request with an urgent row
    (`ignore_quiet_hours`) is written by the statement path, in batches below it."""
    if (
        len(rows) < COPY_THRESHOLD
        or is_sqlite(store.engine)
        or not any(row.get("ignore_quiet_hours") for row in rows)
    ):
        return store.insert_jobs(rows)
    ids: list[int] = []
    duplicates: list[str] = []
    for start in range(0, len(rows), COPY_THRESHOLD - 1):
        part = store.insert_jobs(rows[start : start + COPY_THRESHOLD - 1])
        ids.extend(part.inserted_ids)
        duplicates.extend(part.duplicate_keys)
    return InsertResult(ids, duplicates)


def _at(single: bool, index: int, field: str) -> str:
    return f"/{field}" if single else f"/{index}/{field}"


def _with_key(items: list[BroadcastIn], key: str, single: bool) -> BroadcastIn:
    where = "header:Idempotency-Key"
    if not single:
        raise Problem(
            422,
            "Idempotency-Key is for a single job; in a list give each item its dedupe_key",
            errors=[{"pointer": where, "detail": "not allowed with a list"}],
        )
    item = items[0]
    if item.dedupe_key is not None and item.dedupe_key != key:
        raise Problem(
            422,
            "Idempotency-Key and dedupe_key differ",
            errors=[{"pointer": where, "detail": "must equal the body's dedupe_key"}],
        )
    try:  # the same rules as a dedupe_key (length, no NUL, no part suffix)
        JobRequest.model_validate({"payload": {}, "dedupe_key": key})
    except ValidationError as exc:
        errors = [{**e, "pointer": where} for e in validation_errors(exc.errors())]
        raise Problem(422, "invalid Idempotency-Key", errors=errors) from None
    return item.model_copy(update={"dedupe_key": key})


def _refuse_repeated_keys(items: list[BroadcastIn], single: bool) -> None:
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.dedupe_key is None:
            continue
        if item.dedupe_key in seen:
            detail = f"the same dedupe_key as item {seen[item.dedupe_key]}"
            raise Problem(
                422,
                "a dedupe_key is repeated in the request",
                errors=[{"pointer": _at(single, index, "dedupe_key"), "detail": detail}],
            )
        seen[item.dedupe_key] = index


def _rows(items: list[BroadcastIn], single: bool) -> list[tuple[int, list[dict[str, Any]]]]:
    """Every item's table rows (split over 2000 groups), or 422 naming each bad item."""
    planned, errors = [], []
    for index, item in enumerate(items):
        try:
            planned.append((index, item.to_rows()))
        except (InvalidPayload, InvalidJob) as exc:
            errors.append({"pointer": _at(single, index, "payload"), "detail": str(exc)})
    if errors:
        noun = "problem" if len(errors) == 1 else "problems"
        raise Problem(422, f"{len(errors)} {noun} in the request", errors=errors)
    return planned


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    return [row["dedupe_key"] for row in rows if row["dedupe_key"] is not None]


def _same(store: JobStore, item: BroadcastIn, row: dict[str, Any], held: Any) -> bool:
    """Whether the row a key holds is this request's: the fields it gave, as stored."""
    default = store.default_corp
    try:
        same_payload = json.loads(held.payload) == json.loads(row["payload"])
    except (TypeError, ValueError):
        same_payload = False
    checks = [
        same_payload,
        (held.corp_id or default) == (row["corp_id"] or default),
        held.campaign == row["campaign"],
        held.priority == row["priority"],
        held.max_attempts == row["max_attempts"],
        bool(held.ignore_quiet_hours) == bool(row.get("ignore_quiet_hours")),
        read_time(held.expires_at) == row["expires_at"],
    ]
    if "send_at" in item.model_fields_set and item.send_at is not None:
        checks.append(read_time(held.send_at) == row["send_at"])
    return all(checks)


def _refuse_conflicts(
    store: JobStore,
    items: list[BroadcastIn],
    planned: list[tuple[int, list[dict[str, Any]]]],
    held: dict[str, Any],
    single: bool,
    *,
    written: bool = False,
) -> None:
    errors = []
    for index, rows in planned:
        for row in rows:
            key = row["dedupe_key"]
            if key is not None and key in held and not _same(store, items[index], row, held[key]):
                errors.append(
                    {
                        "pointer": _at(single, index, "dedupe_key"),
                        "detail": f"{key!r} is held by job {held[key].id}, with another body",
                    }
                )
                break
    if errors:
        detail = "a key is held by a job with another body; nothing of those items was written"
        if written and not single:
            detail += " (the other items were)"
        raise Problem(409, detail, errors=errors)
