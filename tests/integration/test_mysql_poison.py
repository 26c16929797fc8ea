"""A row a producer wrote badly on MySQL/MariaDB fails alone, with its reason (issue 9).

MySQL's odd values are not SQLite's or PostgreSQL's: its columns keep their types, but a
producer's session without NO_ZERO_DATE (MariaDB's default sql_mode lacks it), or without
strict mode, stores zeros for a time it cannot read ('2026-02-30' becomes
'0000-00-00 00:00:00' with a mere warning). Rows go in from a plain PyMySQL connection
with the session the producer chose, as another app would write them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pymysql
import pytest
import redis
from sqlalchemy import Engine, make_url, text

from broadcaster.broker.dispatch import Dispatcher, make_broker
from broadcaster.db import make_engine
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from scheduler.service import SchedulerService
from tests.conftest import make_settings
from tests.helpers import body, queued_job_ids

pytestmark = pytest.mark.mariadb

NOW = datetime(2026, 12, 1, 1, 0, 0)
DUE = "2026-12-01 00:59:00"
GOOD = json.dumps(body())
LAX = "NO_ENGINE_SUBSTITUTION"
"""A producer's session with neither strict mode nor NO_ZERO_DATE."""


@pytest.fixture
def my_engine(empty_mysql_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_mysql_url)
    yield engine
    engine.dispose()


def insert_row(url: str, sql_mode: str | None = None, **values: Any) -> int:
    """INSERT from a plain PyMySQL connection; `sql_mode` None: the server's default."""
    parsed = make_url(url)
    connection = pymysql.connect(
        host=parsed.host,
        port=parsed.port or 3306,
        user=parsed.username,
        password=parsed.password or "",
        database=parsed.database,
        charset="utf8mb4",
        autocommit=True,
    )
    row: dict[str, Any] = {"corp_id": "corp-a", "payload": GOOD, "send_at": DUE, **values}
    try:
        with connection.cursor() as cursor:
            if sql_mode is not None:
                cursor.execute("SET SESSION sql_mode = %s", (sql_mode,))
            columns = ", ".join(row)
            cursor.execute(
                f"INSERT INTO broadcast_jobs ({columns}) VALUES ({', '.join(['%s'] * len(row))})",
                list(row.values()),
            )
            return int(cursor.lastrowid)
    finally:
        connection.close()


def failed_reason(engine: Engine, job_id: int) -> str:
    with engine.begin() as connection:
        row = connection.execute(
            text("SELECT status, last_error FROM broadcast_jobs WHERE id = :id"), {"id": job_id}
        ).one()
    assert row.status == JobStatus.FAILED, row
    return str(row.last_error)


def tick(store: JobStore, client: redis.Redis) -> Any:
    service = SchedulerService(
        store, Dispatcher(make_broker(client)), make_settings(), clock=lambda: NOW
    )
    return service.tick()


def test_zeroed_and_invalid_times_and_bad_json_fail_alone_and_the_rest_is_sent(
    empty_mysql_url: str, my_engine: Engine, redis_client: redis.Redis
) -> None:
    url = empty_mysql_url
    zeroed = insert_row(url, sql_mode=LAX, send_at="2026-02-30 10:00:00")  # zeros, a warning
    zero = insert_row(url, send_at="0000-00-00 00:00:00")  # the server's default mode takes it
    zero_expiry = insert_row(url, sql_mode=LAX, expires_at="2026-13-01 00:00:00")
    not_json = insert_row(url, payload='{"name": "half a JSON')
    good = [insert_row(url) for _ in range(3)]
    store = JobStore(my_engine, default_corp="corp-default")
    assert store.next_due_at() is None or store.next_due_at() <= NOW  # readable, no raise
    report = tick(store, redis_client)
    assert queued_job_ids(redis_client) == good
    assert report.failed == 4
    for job_id in (zeroed, zero):
        reason = failed_reason(my_engine, job_id)
        assert "send_at: must be a UTC time like 2026-12-01 01:00:00" in reason, reason
        assert "'0000-00-00 00:00:00.000000'" in reason, reason
    assert "expires_at: must be a UTC time like" in failed_reason(my_engine, zero_expiry)
    assert "payload" in failed_reason(my_engine, not_json)
    assert store.next_due_at() is None


def test_a_failed_zero_date_row_still_lists_and_shows(
    empty_mysql_url: str, my_engine: Engine, redis_client: redis.Redis
) -> None:
    """The operator's views read the row that holds zeros without a traceback."""
    bad = insert_row(empty_mysql_url, sql_mode=LAX, send_at="2026-02-30 10:00:00")
    tick(JobStore(my_engine, default_corp="corp-default"), redis_client)
    env = {**os.environ, "DATABASE_URL": empty_mysql_url, "WEIBAN_CORP_ID": "corp-default"}
    for command in (["jobs", "list"], ["jobs", "show", str(bad)]):
        done = subprocess.run(
            [sys.executable, "-m", "broadcaster.cli.main", *command],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "failed" in done.stdout, done.stdout


def test_a_strict_producer_is_refused_with_the_reason(empty_mysql_url: str) -> None:
    """Strict mode (the server's default, and ours) refuses what the lax mode zeroes."""
    with pytest.raises(pymysql.err.MySQLError, match="Incorrect datetime value"):
        insert_row(empty_mysql_url, sql_mode="STRICT_ALL_TABLES", send_at="2026-02-30 10:00:00")
    with pytest.raises(pymysql.err.MySQLError, match="Incorrect integer value: 'high'"):
        insert_row(empty_mysql_url, priority="high")
