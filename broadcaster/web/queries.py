"""The reads the API needs beyond the JobStore: a job's view that a producer's odd value
cannot break, cursor pages in a stable order, a campaign's counts, rows by dedupe key.

Times are read through the store's loading helpers (`loadable_time`, `read_time`), so a
time Python cannot hold shows as null instead of failing the page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, LargeBinary, Select, cast, func, select
from sqlalchemy.exc import SQLAlchemyError

from broadcaster.jobs.screening import read_time
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.jobs.store.loading import loadable_time
from broadcaster.jobs.tables import attempts, jobs
from broadcaster.timeutil import utcnow
from broadcaster.web.problems import Problem

TIMES = (
    "send_at",
    "expires_at",
    "not_before",
    "sent_at",
    "last_call_at",
    "created_at",
    "updated_at",
    "delivery_checked_at",
    "held_until",
)
OTHERS = (
    "id",
    "status",
    "corp_id",
    "campaign",
    "dedupe_key",
    "priority",
    "max_attempts",
    "attempts",
    "last_errcode",
    "last_error",
    "payload",
    "vendor_mission_id",
    "delivery_status",
    "delivery_groups_reached",
    "delivery_groups_unreached",
    "delivery_staff_confirmed",
    "delivery_staff_total",
    "delivery_note",
    "held_reason",
    "cap_left_out",
    "ignore_quiet_hours",
)
INTS = {
    "priority",
    "max_attempts",
    "attempts",
    "last_errcode",
    "delivery_groups_reached",
    "delivery_groups_unreached",
    "delivery_staff_confirmed",
    "delivery_staff_total",
}

NOT_TEXT = {"id", "ignore_quiet_hours"}


def _columns(engine: Engine, *, safe: bool) -> list[ColumnElement[Any]]:
    """The view's columns: as stored (fast), or in a form that cannot fail to load (`safe`,
    for a page holding a time Python cannot read, or SQLite text that is not UTF-8)."""
    dialect = engine.dialect.name
    times: list[ColumnElement[Any]] = [
        loadable_time(jobs.c[name], dialect).label(name) if safe else jobs.c[name] for name in TIMES
    ]
    others: list[ColumnElement[Any]] = [
        cast(jobs.c[name], LargeBinary).label(name)  # text that is not UTF-8 loads as bytes
        if safe and dialect == "sqlite" and name not in INTS and name not in NOT_TEXT
        else jobs.c[name]
        for name in OTHERS
    ]
    return others + times


LOAD_ERRORS = (ValueError, TypeError, OverflowError, SQLAlchemyError)


def _rows(connection: Connection, engine: Engine, shape: Callable[[Any], Select[Any]]) -> list[Any]:
    """Rows of `shape(columns)`: read as stored, or, if a value fails to load, again safely."""
    try:
        with connection.begin_nested():
            return list(connection.execute(shape(_columns(engine, safe=False))).all())
    except LOAD_ERRORS:
        return list(connection.execute(shape(_columns(engine, safe=True))).all())


def as_utc(value: Any) -> datetime | None:
    moment = value if isinstance(value, datetime) else read_time(value)
    return moment.replace(tzinfo=UTC) if moment is not None else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _payload(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def job_view(row: Any, default_corp: str | None) -> dict[str, Any]:
    """One row as the API's JobOut: UTC times with their offset, delivery grouped."""
    data = dict(row._mapping)
    view: dict[str, Any] = {name: as_utc(data[name]) for name in TIMES}
    for name in OTHERS:
        value = data[name]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "backslashreplace")
        view[name] = _int(value) if name in INTS else value
    view["corp_id"] = data["corp_id"] if data["corp_id"] is not None else default_corp
    view["payload"] = _payload(view["payload"])
    view["cap_left_out"] = None if view["cap_left_out"] is None else _payload(view["cap_left_out"])
    urgent = view["ignore_quiet_hours"]
    view["ignore_quiet_hours"] = None if urgent is None else bool(urgent)
    held_until = view["held_until"]
    view["held"] = (
        view["held_reason"]
        if view["status"] == JobStatus.SCHEDULED.value
        and held_until is not None
        and held_until > utcnow().replace(tzinfo=UTC)
        else None
    )
    view["delivery"] = {
        "vendor_mission_id": view.pop("vendor_mission_id"),
        "status": view.pop("delivery_status"),
        "groups_reached": view.pop("delivery_groups_reached"),
        "groups_unreached": view.pop("delivery_groups_unreached"),
        "staff_confirmed": view.pop("delivery_staff_confirmed"),
        "staff_total": view.pop("delivery_staff_total"),
        "checked_at": view.pop("delivery_checked_at"),
        "note": view.pop("delivery_note"),
    }
    return view


def _by_ids(ids: list[int], columns: list[ColumnElement[Any]]) -> Select[Any]:
    return select(*columns).where(jobs.c.id.in_(ids))


def jobs_by_id(store: JobStore, ids: Collection[int]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    found: dict[int, dict[str, Any]] = {}
    ordered = list(ids)
    with store.engine.begin() as connection:
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            rows = _rows(connection, store.engine, partial(_by_ids, chunk))
            for row in rows:
                found[row.id] = job_view(row, store.default_corp)
    return found


def one_job(store: JobStore, job_id: int) -> dict[str, Any]:
    view = jobs_by_id(store, [job_id]).get(job_id)
    if view is None:
        raise Problem(404, f"no job with id {job_id}")
    query = (
        select(
            attempts.c.attempt_no,
            loadable_time(attempts.c.started_at, store.engine.dialect.name).label("started_at"),
            attempts.c.duration_ms,
            attempts.c.outcome,
            attempts.c.errcode,
            attempts.c.error,
        )
        .where(attempts.c.job_id == job_id)
        .order_by(attempts.c.id)
    )
    with store.engine.begin() as connection:
        rows = connection.execute(query).all()
    view["attempt_history"] = [
        {**row._mapping, "started_at": as_utc(row.started_at)} for row in rows
    ]
    return view


def rows_by_key(store: JobStore, keys: Collection[str]) -> dict[str, Any]:
    """The rows holding these dedupe keys, by key: every producer column, for comparing."""
    found: dict[str, Any] = {}
    ordered = list(keys)
    with store.engine.begin() as connection:
        for start in range(0, len(ordered), 500):
            query = select(
                jobs.c.id,
                jobs.c.dedupe_key,
                jobs.c.status,
                jobs.c.corp_id,
                jobs.c.payload,
                jobs.c.campaign,
                jobs.c.priority,
                jobs.c.max_attempts,
                jobs.c.ignore_quiet_hours,
                loadable_time(jobs.c.send_at, store.engine.dialect.name).label("send_at"),
                loadable_time(jobs.c.expires_at, store.engine.dialect.name).label("expires_at"),
            ).where(jobs.c.dedupe_key.in_(ordered[start : start + 500]))
            for row in connection.execute(query):
                found[row.dedupe_key] = row
    return found


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": last_id}).encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        before = json.loads(base64.urlsafe_b64decode(cursor.encode()))["before"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeError):
        before = None
    if not isinstance(before, int) or isinstance(before, bool) or before < 1:
        raise Problem(
            422,
            "invalid cursor",
            errors=[{"pointer": "query:cursor", "detail": "not a cursor this API handed out"}],
        )
    return before


def page(
    store: JobStore,
    *,
    status: JobStatus | None,
    campaign: str | None,
    corp_id: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first by id (stable: ids never change); `cursor` continues after a page."""
    where: list[ColumnElement[bool]] = []
    if cursor is not None:
        where.append(jobs.c.id < decode_cursor(cursor))
    if status is not None:
        where.append(jobs.c.status == status.value)
    if campaign is not None:
        where.append(jobs.c.campaign == campaign)
    if corp_id is not None:
        if corp_id == store.default_corp:  # NULL is the default corp
            where.append((jobs.c.corp_id == corp_id) | jobs.c.corp_id.is_(None))
        else:
            where.append(jobs.c.corp_id == corp_id)

    def shape(columns: list[ColumnElement[Any]]) -> Select[Any]:
        return select(*columns).where(*where).order_by(jobs.c.id.desc()).limit(limit + 1)

    with store.engine.begin() as connection:
        rows = _rows(connection, store.engine, shape)
    views = [job_view(row, store.default_corp) for row in rows[:limit]]
    more = len(rows) > limit
    return views, (encode_cursor(views[-1]["id"]) if more and views else None)


def campaign_counts(store: JobStore, name: str) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    by_delivery: dict[str, int] = {}
    status_query = (
        select(jobs.c.status, func.count().label("n"))
        .where(jobs.c.campaign == name)
        .group_by(jobs.c.status)
    )
    delivery_query = (
        select(jobs.c.delivery_status, func.count().label("n"))
        .where(jobs.c.campaign == name, jobs.c.status == JobStatus.SENT.value)
        .group_by(jobs.c.delivery_status)
    )
    with store.engine.begin() as connection:
        for row in connection.execute(status_query):
            by_status[row.status] = row.n
        for row in connection.execute(delivery_query):
            by_delivery[row.delivery_status or "untracked"] = row.n
    if not by_status:
        raise Problem(404, f"no jobs in campaign {name!r}")
    return {
        "name": name,
        "total": sum(by_status.values()),
        "by_status": by_status,
        "by_delivery": by_delivery,
    }
