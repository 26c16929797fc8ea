"""The table is the public contract: what a producer's plain INSERT gets, what it is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from broadcaster import migrate
from broadcaster.timeutil import utcnow


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    migrate.check(engine)  # raises if `alembic check` finds a difference
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_the_minimal_insert_gets_the_documented_defaults(engine: Engine) -> None:
    before = utcnow() - timedelta(seconds=2)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO broadcast_jobs (corp_id, payload) VALUES ('corp-a', '{}')")
        )
        row = connection.execute(text("SELECT * FROM broadcast_jobs")).mappings().one()
    assert row["status"] == "scheduled"
    assert row["attempts"] == 0 and row["priority"] == 0 and row["max_attempts"] == 5
    send_at = row["send_at"]
    if isinstance(send_at, str):  # SQLite hands text back through a raw text() query
        from datetime import datetime

        send_at = datetime.fromisoformat(send_at)
    assert before <= send_at <= utcnow() + timedelta(seconds=2), "send_at omitted = now (UTC)"


def test_an_unknown_status_is_refused_by_the_database(engine: Engine) -> None:
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            text("INSERT INTO broadcast_jobs (payload, status) VALUES ('{}', 'done')")
        )


def test_a_second_insert_with_the_same_dedupe_key_is_refused(engine: Engine) -> None:
    insert = text("INSERT INTO broadcast_jobs (payload, dedupe_key) VALUES ('{}', 'promo:g1')")
    with engine.begin() as connection:
        connection.execute(insert)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert)


def test_sqlite_reads_producer_time_text_as_utc(tmp_path, sqlite_template) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import sqlite3

    path = tmp_path / "p.db"
    shutil.copy(sqlite_template, path)
    connection = sqlite3.connect(path)
    for value in ("2026-12-01 01:00:00", "2026-12-01T09:00:00+08:00", "2026-12-01T01:00:00Z"):
        connection.execute(
            "INSERT INTO broadcast_jobs (payload, send_at) VALUES ('{}', ?)", (value,)
        )
    connection.commit()
    stored = [r[0] for r in connection.execute("SELECT send_at FROM broadcast_jobs")]
    assert stored == ["2026-12-01 01:00:00.000000"] * 3
    with pytest.raises(sqlite3.IntegrityError, match="send_at must be UTC text"):
        connection.execute("INSERT INTO broadcast_jobs (payload, send_at) VALUES ('{}', 'soon')")


@pytest.mark.postgres
def test_postgres_claims_through_partial_indexes(pg_url: str) -> None:
    from broadcaster.db import make_engine

    engine = make_engine(pg_url)
    with engine.connect() as connection:
        indexes = dict(
            connection.execute(
                text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'broadcast_jobs'"
                )
            ).all()
        )
    engine.dispose()
    assert "WHERE (status = 'scheduled'::text)" in indexes["ix_broadcast_jobs_due"]
    assert "WHERE (status = 'scheduled'::text)" in indexes["ix_broadcast_jobs_claim_order"]
