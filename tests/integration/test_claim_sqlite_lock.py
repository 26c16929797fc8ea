"""SQLite's single write lock and the scheduler: a poll that finds nothing due, the next
due time and the queued counts read without the lock (so they neither wait for the
workers' transactions nor hold them up); a claim waits for the lock and takes it within
milliseconds of its release, not after SQLite's coarse busy-handler sleeps (up to 100 ms
each); a lock never released still ends in `database is locked`."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from broadcaster import schedule_broadcast
from broadcaster.db import begin_immediate, make_engine
from broadcaster.jobs.store import JobStore
from broadcaster.timeutil import utcnow
from tests.helpers import body


@pytest.fixture
def sqlite_engine(tmp_path: Path, sqlite_template: Path) -> Iterator[Engine]:
    path = tmp_path / "jobs.db"
    path.write_bytes(sqlite_template.read_bytes())
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def holder(engine: Engine) -> sqlite3.Connection:
    """Another connection holding the write lock (a worker mid-transaction)."""
    assert engine.url.database
    raw = sqlite3.connect(engine.url.database, isolation_level=None, check_same_thread=False)
    raw.execute("BEGIN IMMEDIATE")
    return raw


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def test_a_poll_with_nothing_due_takes_no_write_lock(sqlite_engine: Engine) -> None:
    store = JobStore(sqlite_engine, default_corp="corp-default")
    later = utcnow().replace(year=utcnow().year + 1)
    schedule_broadcast(body(), later, store=store)
    lock = holder(sqlite_engine)
    try:
        for action in (
            lambda: store.claim_due(utcnow(), 10, 60),
            store.next_due_at,
            store.queued_by_corp,
        ):
            assert timed(action) < 1.0
        assert store.claim_due(utcnow(), 10, 60).claimed == []
        next_due = store.next_due_at()
        assert next_due is not None and next_due > utcnow()
    finally:
        lock.rollback()
        lock.close()


def test_a_claim_waits_for_the_lock_and_claims_once_it_is_free(sqlite_engine: Engine) -> None:
    store = JobStore(sqlite_engine, default_corp="corp-default")
    job_id = schedule_broadcast(body(), utcnow(), store=store).job_ids[0]
    lock = holder(sqlite_engine)
    claimed: list[int] = []
    thread = threading.Thread(
        target=lambda: claimed.extend(j.id for j in store.claim_due(utcnow(), 10, 60).claimed)
    )
    thread.start()
    try:
        thread.join(0.3)
        assert thread.is_alive()  # waiting for the lock
    finally:
        lock.rollback()
        lock.close()
    thread.join(10)
    assert claimed == [job_id]


def take_lock(path: str, got: list[float]) -> None:
    raw = sqlite3.connect(path, isolation_level=None)
    begin_immediate(raw)
    got.append(time.monotonic())
    raw.rollback()
    raw.close()


def test_the_lock_is_taken_within_milliseconds_of_its_release(sqlite_engine: Engine) -> None:
    """After 0.5 s of waiting SQLite's own handler sleeps 100 ms a try (50 ms late on
    average); these tries are 2 ms apart. Median of 5, for a shared machine."""
    path = sqlite_engine.url.database
    assert path
    waits = []
    for _ in range(5):
        lock = holder(sqlite_engine)
        got: list[float] = []
        thread = threading.Thread(target=take_lock, args=(path, got))
        thread.start()
        thread.join(0.5)
        released = time.monotonic()
        lock.rollback()
        lock.close()
        thread.join(10)
        waits.append(got[0] - released)
    assert sorted(waits)[2] < 0.02, waits


def test_a_lock_never_released_still_ends_in_database_is_locked(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import broadcaster.db

    monkeypatch.setattr(broadcaster.db, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    lock = holder(sqlite_engine)
    assert sqlite_engine.url.database
    raw = sqlite3.connect(sqlite_engine.url.database, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            begin_immediate(raw)
        assert raw.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    finally:
        lock.rollback()
        lock.close()
    begin_immediate(raw)  # free again
    raw.rollback()
    raw.close()
