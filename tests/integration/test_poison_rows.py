"""A row a producer wrote with odd types fails alone, with its reason, at claim time (issue 9).

Rows go in by plain SQL with bound parameters (or a literal, for what a driver cannot
bind), as another app would write them; SQLite keeps most of them as they were written.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from broadcaster.broker.dispatch import Dispatcher, make_broker
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from scheduler.service import SchedulerService
from tests.conftest import make_settings
from tests.helpers import body, queued_job_ids

NOW = datetime(2026, 12, 1, 1, 0, 0)
DUE = "2026-12-01 00:59:00"
GOOD = json.dumps(body())


def sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def insert_row(engine: Engine, literals: dict[str, str] | None = None, **values: Any) -> int:
    """INSERT by plain SQL: `values` bound, `literals` written into the statement as SQL."""
    literals = literals or {}
    row: dict[str, Any] = {"corp_id": "corp-a", "payload": GOOD, "send_at": DUE, **values}
    row = {name: value for name, value in row.items() if name not in literals}
    columns = [*row, *literals]
    placeholders = [f":{name}" for name in row] + list(literals.values())
    with engine.begin() as connection:
        return connection.execute(
            text(
                f"INSERT INTO broadcast_jobs ({', '.join(columns)}) "
                f"VALUES ({', '.join(placeholders)}) RETURNING id"
            ),
            row,
        ).scalar_one()


def goods(engine: Engine, n: int) -> list[int]:
    return [insert_row(engine) for _ in range(n)]


def service_for(store: JobStore, client: redis.Redis, **settings: Any) -> SchedulerService:
    return SchedulerService(
        store, Dispatcher(make_broker(client)), make_settings(**settings), clock=lambda: NOW
    )


def statuses(engine: Engine) -> dict[int, tuple[str, str | None]]:
    with engine.begin() as connection:
        rows = connection.execute(text("SELECT id, status, last_error FROM broadcast_jobs"))
        return {row.id: (row.status, row.last_error) for row in rows}


def assert_failed(engine: Engine, job_id: int, *fragments: str) -> None:
    status, reason = statuses(engine)[job_id]
    assert status == JobStatus.FAILED, (job_id, status, reason)
    for fragment in fragments:
        assert fragment in (reason or ""), (fragment, reason)


def test_text_priority_fails_alone_and_its_batch_goes_on_in_the_same_tick(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    if not sqlite(engine):  # PostgreSQL refuses it, naming the value
        with pytest.raises(DBAPIError, match='invalid input syntax for type integer: "high"'):
            insert_row(engine, priority="high")
        return
    bad = insert_row(engine, priority="high")
    good = goods(engine, 20)
    report = service_for(store, redis_client, scheduler_batch_size=21).tick()
    assert (report.enqueued, report.failed) == (20, 1)
    assert queued_job_ids(redis_client) == good
    assert_failed(engine, bad, "priority: must be an integer, not the text 'high'")
    assert {statuses(engine)[job_id][0] for job_id in good} == {JobStatus.QUEUED}


def test_text_max_attempts_fails_at_claim_not_after_the_vendor_call(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    if not sqlite(engine):
        with pytest.raises(DBAPIError, match="invalid input syntax for type integer"):
            insert_row(engine, max_attempts="three")
        return
    bad = insert_row(engine, max_attempts="three")  # 'three' >= 1 passes the CHECK
    good = goods(engine, 3)
    service_for(store, redis_client).tick()
    assert queued_job_ids(redis_client) == good
    assert_failed(engine, bad, "max_attempts: must be an integer, not the text 'three'")


@pytest.mark.parametrize("corp", ["", "   "])
def test_a_blank_corp_id_fails_instead_of_going_to_the_default_corp(
    engine: Engine, store: JobStore, redis_client: redis.Redis, corp: str
) -> None:
    bad = insert_row(engine, corp_id=corp)
    default = insert_row(engine, corp_id=None)
    service_for(store, redis_client).tick()
    assert queued_job_ids(redis_client) == [default]
    assert store.get(default).corp_id == "corp-default"
    assert_failed(engine, bad, f"corp_id: the text {corp!r} is blank", "NULL for the default")


def test_times_python_cannot_hold_fail_their_own_rows_not_every_claim(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    if sqlite(engine):
        # 0 is read as Julian day 0 (4714 BC) and stored as '-4713-11-24 …'; year 0 is
        # valid to SQLite: both passed the time trigger, and both failed every claim.
        bad = {
            "send_at": [insert_row(engine, send_at=0), insert_row(engine, send_at="0000-06-01")],
            "expires_at": [insert_row(engine, expires_at="0000-06-01 00:00:00")],
        }
    else:
        bad = {
            "send_at": [
                insert_row(engine, send_at="-infinity"),
                insert_row(engine, send_at="0044-03-15 00:00:00 BC"),
            ],
            "expires_at": [
                insert_row(engine, expires_at="infinity"),
                insert_row(engine, expires_at="10000-01-01 00:00:00"),
            ],
        }
    good = goods(engine, 3)
    assert store.next_due_at() is None or store.next_due_at() <= NOW  # readable, no raise
    report = service_for(store, redis_client).tick()
    assert queued_job_ids(redis_client) == good
    assert report.failed == sum(len(ids) for ids in bad.values())
    for column, ids in bad.items():
        for job_id in ids:
            assert_failed(engine, job_id, f"{column}: must be a UTC time like")
    assert store.next_due_at() is None


def test_odd_storage_classes_on_sqlite_each_fail_naming_their_column(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    if not sqlite(engine):
        pytest.skip("PostgreSQL keeps each column's declared type")
    bad = {
        insert_row(engine, corp_id=b"corp-a"): "corp_id: must be text, not a blob of 6 bytes",
        insert_row(engine, payload=GOOD.encode()): "payload: must be JSON text, not a blob",
        insert_row(engine, payload=5): "payload must be a JSON object, not int",
        insert_row(engine, dedupe_key=b"\x00k"): "dedupe_key: must be text, not a blob",
        insert_row(engine, literals={"campaign": "CAST(X'FF41' AS TEXT)"}): (
            "campaign: text that is not valid UTF-8"
        ),
        insert_row(engine, priority=1.5): "priority: must be an integer, not the real number 1.5",
        insert_row(engine, literals={"priority": "100000000000000000000"}): (
            "priority: must be an integer, not the real number 1.0e+20 "
            "(an integer past 64 bits is stored as a real)"
        ),
        insert_row(engine, max_attempts=b"\x05"): "max_attempts: must be an integer, not a blob",
        insert_row(engine, max_attempts=2.5): "max_attempts: must be an integer, not the real",
        insert_row(engine, literals={"attempts": "'none'"}): "attempts: must be an integer",
        insert_row(engine, literals={"not_before": "'0'"}): "not_before: must be a UTC time",
        insert_row(engine, priority="x", max_attempts="y"): "priority: must be an integer, not "
        "the text 'x'; max_attempts: must be an integer, not the text 'y'",
    }
    good = goods(engine, 5)
    service_for(store, redis_client, scheduler_batch_size=4).tick()
    assert queued_job_ids(redis_client) == good
    for job_id, reason in bad.items():
        assert_failed(engine, job_id, reason)
    assert not [j for j, (s, _) in statuses(engine).items() if s == "queued" and j not in good]


def test_a_text_payload_that_is_not_utf8_or_holds_a_nul_fails_alone(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    if not sqlite(engine):
        with pytest.raises(DBAPIError):  # PostgreSQL text holds no NUL
            insert_row(engine, payload="{\x00}")
        return
    not_utf8 = insert_row(engine, literals={"payload": "CAST(X'7BFF7D' AS TEXT)"})
    nul = insert_row(engine, payload="{\x00}")
    good = goods(engine, 2)
    service_for(store, redis_client).tick()
    assert queued_job_ids(redis_client) == good
    assert_failed(engine, not_utf8, "payload: text that is not valid UTF-8")
    assert_failed(engine, nul, "payload is not valid JSON")


def test_the_sweep_fails_a_row_an_older_version_left_queued_with_odd_types(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    """Before this fix a text `max_attempts` went to a worker; rows queued then are judged
    when their lease runs out, not requeued for ever."""
    if not sqlite(engine):
        pytest.skip("PostgreSQL keeps each column's declared type")
    lost = {"status": "queued", "lease_until": "2026-12-01 00:00:00"}
    bad = insert_row(engine, max_attempts="three", **lost)
    good = insert_row(engine, **lost)
    service_for(store, redis_client).sweep()
    assert queued_job_ids(redis_client) == [good]
    assert_failed(engine, bad, "max_attempts: must be an integer, not the text 'three'")
    assert statuses(engine)[good][0] == JobStatus.QUEUED


def test_a_past_expiry_still_wins_over_other_problems(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    expired = insert_row(engine, payload="{oops", expires_at="2026-12-01 00:00:00")
    future = insert_row(engine, expires_at=(NOW + timedelta(hours=1)).isoformat(sep=" "))
    report = service_for(store, redis_client).tick()
    assert (report.expired, report.enqueued) == (1, 1)
    assert statuses(engine)[expired][0] == JobStatus.EXPIRED
    assert queued_job_ids(redis_client) == [future]


def test_a_row_queued_by_an_older_version_with_odd_types_is_never_sent(
    db_url: str,
    engine: Engine,
    redis_url: str,
    sandbox: Any,
) -> None:
    """Its broker message is already out when the new version starts: the worker's
    compare-and-set fails it instead of calling the vendor (a text `max_attempts` made a
    certain answer `unknown`; a blank corp went to the default corp)."""
    from tests.integration.test_sender import sender_for

    queued = {"status": "queued", "lease_until": "2099-01-01 00:00:00"}
    bad = {insert_row(engine, corp_id="", **queued): "corp_id: must be a corp id or NULL"}
    if sqlite(engine):
        bad[insert_row(engine, max_attempts="three", **queued)] = (
            "max_attempts: must be an integer, not the text 'three'"
        )
        bad[insert_row(engine, literals={"attempts": "1.5"}, **queued)] = (
            "attempts: must be an integer, not the real number 1.5"
        )
    good = insert_row(engine, **queued)
    sender = sender_for(db_url, redis_url, sandbox.url)
    for job_id, reason in bad.items():
        assert sender.send(job_id) == "ignored"
        assert_failed(engine, job_id, reason)
    assert sender.send(good) == "sent"
    assert sandbox.state.stats()["created"] == 1
