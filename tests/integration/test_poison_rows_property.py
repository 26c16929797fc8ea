"""Property: rows written by plain SQL with any type in any producer column, mixed with good
rows, never stall anything (issue 9). Each row is inserted on its own, as another app
would; the database may refuse it, or keep it. Then one scheduler tick and the real
worker against the sandbox vendor:

- every row the database kept and that had nothing odd is claimed and sent;
- every failed row's reason names one of the columns it was given an odd value in, and
  a value that is certainly wrong (text in an integer column, a blob, a blank corp, a time
  Python cannot hold) is always named;
- nothing is left `queued` or `sending`, and what stays `scheduled` is a row whose odd
  `send_at` is not due.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.exc import StatementError

from broadcaster.dispatch import Dispatcher, make_broker
from broadcaster.messages import QUEUE_NAME
from broadcaster.store import JobStore
from broadcaster.timeutil import utcnow
from scheduler.service import SchedulerService
from tests.conftest import make_settings
from tests.helpers import body, queued_job_ids
from worker.app import build_sender

EXAMPLES = int(os.environ.get("BROADCASTER_POISON_EXAMPLES", "12"))
"""Kept small for the suite; 150 per database ran clean when this was written."""
PRODUCER_COLUMNS = (
    "corp_id",
    "payload",
    "send_at",
    "dedupe_key",
    "campaign",
    "priority",
    "expires_at",
    "max_attempts",
)
TIME_TEXTS = (
    "0000-01-01 00:00:00",  # SQLite: readable, year 0; PostgreSQL: refused
    "-infinity",  # PostgreSQL: due at once, not a Python time
    "infinity",
    "0044-03-15 00:00:00 BC",
    "10000-01-01 00:00:00",
    "2026-11-20T20:00:00+08:00",  # fine: stored as UTC (SQLite) or the offset dropped
    "2026-02-30 00:00:00",
    "2024-01-01",
)


@dataclass(frozen=True)
class Literal:
    """A value written into the SQL text, for what a driver cannot bind (an integer past
    64 bits, which SQLite then stores as a real)."""

    sql: str


def odd_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text(max_size=12).map(lambda s: "x" + s),  # text that is no number
        st.sampled_from(["", " ", "\t", "0", "10", "-1", "1.5", "1e3", "  7 "]),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.integers(min_value=2**63, max_value=2**90).map(lambda n: Literal(str(n))),
        st.integers(min_value=2**63 + 1, max_value=2**90).map(lambda n: Literal(str(-n))),
        st.floats(),
        st.binary(max_size=8),
        st.none(),
        st.sampled_from(TIME_TEXTS),
        st.sampled_from([0, 2460000, 1.5]),  # SQLite reads a number as a Julian day
    )


odd_rows = st.dictionaries(st.sampled_from(PRODUCER_COLUMNS), odd_values(), max_size=2)


def certainly_bad(column: str, value: Any, dialect: str) -> bool:
    """Values the claim must fail naming `column`, whenever the database keeps them."""
    if column == "payload":
        return True  # no odd value here is a valid body
    if column == "corp_id" and isinstance(value, str) and not value.strip():
        return True
    if dialect == "sqlite":
        if isinstance(value, bytes) and column != "send_at" and column != "expires_at":
            return True
        if column in ("priority", "max_attempts"):
            return isinstance(value, Literal) or (isinstance(value, str) and value[:1] == "x")
        if column in ("send_at", "expires_at"):
            return value in ("0000-01-01 00:00:00", 0, 1.5)  # year 0; 4713 BC
        return False
    if column == "send_at":
        return value in ("-infinity", "0044-03-15 00:00:00 BC")
    if column == "expires_at":
        return value in ("infinity", "-infinity", "0044-03-15 00:00:00 BC", "10000-01-01 00:00:00")
    return False


def insert(engine: Engine, number: int, odd: dict[str, Any]) -> int | None:
    """One row by plain SQL; None if the database (or its driver) refused it."""
    row: dict[str, Any] = {
        "corp_id": "corp-a",
        "payload": json.dumps(body(name=f"prop-{number}")),
        "send_at": "2026-11-01 00:00:00",
        "campaign": "prop",
        "priority": 0,
        "max_attempts": 3,
        **odd,
    }
    names, values, params = [], [], {}
    for name, value in row.items():
        names.append(name)
        if isinstance(value, Literal):
            values.append(value.sql)
        else:
            values.append(f":{name}")
            params[name] = value
    statement = (
        f"INSERT INTO broadcast_jobs ({', '.join(names)}) VALUES ({', '.join(values)}) RETURNING id"
    )
    try:
        with engine.begin() as connection:
            return connection.execute(text(statement), params).scalar_one()
    except (StatementError, OverflowError, ValueError):  # refused, with the driver's reason
        return None


def clean(engine: Engine, client: redis.Redis) -> None:
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM broadcast_attempts"))
        connection.execute(text("DELETE FROM broadcast_jobs"))
    client.delete(f"dramatiq:{QUEUE_NAME}", f"dramatiq:{QUEUE_NAME}.msgs")


def test_odd_rows_fail_alone_and_good_rows_are_sent(
    db_url: str,
    engine: Engine,
    redis_url: str,
    redis_client: redis.Redis,
    sandbox: Any,
) -> None:
    dialect = engine.dialect.name
    config = make_settings(
        database_url=db_url,
        redis_url=redis_url,
        weiban_base_url=sandbox.url,
        weiban_corp_id="corp-a",
        weiban_secret="sandbox-secret",
        scheduler_batch_size=3,
    )
    store = JobStore(engine, default_corp="corp-a")
    sender = build_sender(config, redis_url)[0]
    service = SchedulerService(store, Dispatcher(make_broker(redis_client)), config)
    examples = {"odd kept": 0, "failed": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(rows=st.lists(odd_rows, min_size=1, max_size=6))
    def check(rows: list[dict[str, Any]]) -> None:
        clean(engine, redis_client)
        odd: dict[int, dict[str, Any]] = {}
        for number, columns in enumerate([{}, *rows, {}]):
            job_id = insert(engine, number, columns)
            if job_id is not None:
                odd[job_id] = columns
        started = utcnow()
        service.clock = lambda: started + timedelta(seconds=1)
        service.tick()
        claimed = queued_job_ids(redis_client)
        assert claimed == sorted(
            j for j, row in rows_by_status(engine).items() if row[0] == "queued"
        )
        for job_id in claimed:
            sender.send(job_id)

        final = rows_by_status(engine)
        created = {c["body"]["name"] for c in sandbox.state.created_list()}
        for job_id, columns in odd.items():
            status, reason, name = final[job_id]
            assert status not in ("queued", "sending"), (job_id, columns, status)
            if not columns:
                assert status == "sent" and name in created, (job_id, status, reason)
                continue
            examples["odd kept"] += 1
            if status == "scheduled":
                assert "send_at" in columns, (columns, reason)
            if status == "expired":
                assert "expires_at" in columns, columns
                continue
            if status == "failed" and job_id not in claimed:
                examples["failed"] += 1
                assert any(column in (reason or "") for column in columns), (columns, reason)
            for column, value in columns.items():
                if certainly_bad(column, value, dialect):
                    assert status == "failed" and column in (reason or ""), (
                        column,
                        value,
                        status,
                        reason,
                    )
                    assert job_id not in claimed, "failed at claim, not by the worker"

    check()
    assert examples["failed"] > 0, examples  # the property saw bad rows kept and failed


def rows_by_status(engine: Engine) -> dict[int, tuple[str, str | None, str | None]]:
    """id -> (status, last_error, the body's name when the payload is readable)."""
    with engine.begin() as connection:
        rows = connection.execute(
            text("SELECT id, status, last_error, payload FROM broadcast_jobs")
        ).all()
    found = {}
    for row in rows:
        try:
            name = json.loads(row.payload).get("name")
        except Exception:  # an odd payload
            name = None
        found[row.id] = (row.status, row.last_error, name)
    return found
