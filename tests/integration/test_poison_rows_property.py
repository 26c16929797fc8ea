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
from datetime import timedelta
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from broadcaster.broker.dispatch import Dispatcher, make_broker
from broadcaster.broker.messages import QUEUE_NAME
from broadcaster.jobs.store import JobStore
from broadcaster.timeutil import utcnow
from scheduler.service import SchedulerService
from tests.conftest import make_settings
from tests.helpers import queued_job_ids
from tests.poison import certainly_bad, insert_odd_row, odd_rows
from worker.app import build_sender

EXAMPLES = int(os.environ.get("BROADCASTER_POISON_EXAMPLES", "12"))
"""Kept small for the suite; 150 per database ran clean when this was written."""


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
    sender = build_sender(config)[0]
    service = SchedulerService(store, Dispatcher(make_broker(redis_client)), config)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(rows=st.lists(odd_rows(), min_size=1, max_size=6))
    def check(rows: list[dict[str, Any]]) -> None:
        clean(engine, redis_client)
        odd: dict[int, dict[str, Any]] = {}
        # good rows around the random ones, and one bad row every database keeps
        for number, columns in enumerate([{}, {"corp_id": ""}, *rows, {}]):
            job_id = insert_odd_row(engine, f"prop-{number}", columns)
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
            assert status not in ("queued", "sending", "unknown"), (job_id, columns, status)
            if not columns:
                assert status == "sent" and name in created, (job_id, status, reason)
                continue
            if status == "scheduled":
                assert "send_at" in columns, (columns, reason)
            if status == "expired":
                assert "expires_at" in columns, columns
                continue
            if status == "failed" and job_id not in claimed:
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
