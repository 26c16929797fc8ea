"""What MySQL/MariaDB does differently, checked on the machine's MariaDB (or MYSQL_TEST_URL):
the schema's character set, collation and indexes, each connection's session, racing
claimers, and a producer's INSERT exactly as the README prints it, from a plain PyMySQL
connection with the server's own defaults (as another app would write it)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import IntegrityError

from broadcaster.db import make_engine
from broadcaster.jobs.store import JobStore
from broadcaster.jobs.tables import metadata
from tests.helpers import body

pytestmark = pytest.mark.mariadb

NOW = datetime(2030, 12, 12, 12, 0, 0)
README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
PROPOSED_INSERT = """-- MySQL / MariaDB
INSERT INTO broadcast_jobs (corp_id, payload, send_at, dedupe_key, campaign)
VALUES ('corp-a',
        '{"name": "双十二预热", "staff_ext_id_list": ["staff-1"], "group_ext_id_list": ["group-9"],
          "create_staff_ext_id": "staff-1", "text": "全场五折，今晚八点开抢 🎉"}',
        '2030-12-12 12:00:00', 'double-12:group-9', 'double-12');
"""
"""The block proposed for the README; once the README has a `-- MySQL` block, that is
what runs (word for word), and it must still be this one."""


@pytest.fixture
def my_engine(empty_mysql_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_mysql_url)
    yield engine
    engine.dispose()


def producer_connection(url: str, **session: str) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    """A plain PyMySQL connection, as another app opens one: the server's defaults."""
    parsed = make_url(url)
    return pymysql.connect(
        host=parsed.host,
        port=parsed.port or 3306,
        user=parsed.username,
        password=parsed.password or "",
        database=parsed.database,
        charset="utf8mb4",
        autocommit=True,
        **session,
    )


def readme_insert() -> str:
    blocks = re.findall(r"```sql\n(.*?)```", README, flags=re.DOTALL)
    documented = [block for block in blocks if block.startswith("-- MySQL")]
    if documented:
        assert documented[0] == PROPOSED_INSERT, "README's MySQL INSERT differs from the tested one"
        return documented[0]
    return PROPOSED_INSERT


def test_the_readme_insert_from_a_plain_connection_is_claimed_and_keeps_its_emoji(
    empty_mysql_url: str, my_engine: Engine
) -> None:
    connection = producer_connection(empty_mysql_url)
    with connection.cursor() as cursor:
        cursor.execute(readme_insert())
    connection.close()
    store = JobStore(my_engine, default_corp="corp-a")
    claimed = store.claim_due(NOW, 10, 60)
    assert len(claimed.claimed) == 1 and claimed.failed == []
    assert claimed.claimed[0].due_at == NOW
    with my_engine.begin() as db:
        payload = db.execute(text("SELECT payload FROM broadcast_jobs")).scalar_one()
    assert json.loads(payload)["text"] == "全场五折，今晚八点开抢 🎉"


def test_every_table_is_utf8mb4_with_an_exact_no_pad_collation(my_engine: Engine) -> None:
    with my_engine.connect() as db:
        rows = db.execute(
            text(
                "SELECT table_name, table_collation FROM information_schema.tables "
                "WHERE table_schema = DATABASE()"
            )
        ).all()
    collations = {name: collation for name, collation in rows if name != "alembic_version"}
    assert set(collations) == {table.name for table in metadata.sorted_tables}
    assert set(collations.values()) <= {"utf8mb4_nopad_bin", "utf8mb4_0900_bin"}, collations


def test_dedupe_keys_differing_in_case_or_a_trailing_space_are_two_keys(
    my_engine: Engine,
) -> None:
    store = JobStore(my_engine, default_corp="corp-a")
    keys = ["promo-1", "Promo-1", "promo-1 ", "promo-1"]
    result = store.insert_jobs(
        [{"payload": json.dumps(body()), "send_at": NOW, "dedupe_key": key} for key in keys]
    )
    assert len(result.inserted_ids) == 3 and result.duplicate_keys == ["promo-1"]
    insert = text("INSERT INTO broadcast_jobs (payload, dedupe_key) VALUES ('{}', 'Promo-1')")
    with pytest.raises(IntegrityError), my_engine.begin() as db:
        db.execute(insert)


def test_each_connection_is_utc_strict_and_utf8mb4(my_engine: Engine) -> None:
    with my_engine.connect() as db:
        zone, mode, charset = db.execute(
            text(
                "SELECT @@session.time_zone, @@session.sql_mode, @@session.character_set_connection"
            )
        ).one()
        isolation = db.get_isolation_level()
    assert zone == "+00:00" and charset == "utf8mb4" and isolation == "READ COMMITTED"
    for flag in ("STRICT_ALL_TABLES", "NO_ZERO_DATE", "NO_ZERO_IN_DATE"):
        assert flag in mode.split(","), mode


def test_our_own_writes_refuse_a_time_mysql_would_zero(my_engine: Engine) -> None:
    """With the server's default sql_mode, MariaDB would store '2026-02-30' as zeros."""
    store = JobStore(my_engine, default_corp="corp-a")
    with pytest.raises(Exception, match="Incorrect datetime value"), my_engine.begin() as db:
        db.execute(
            text("INSERT INTO broadcast_jobs (payload, send_at) VALUES ('{}', '2026-02-30')")
        )
    assert len(store.insert_jobs([{"payload": "{}", "send_at": NOW}]).inserted_ids) == 1


def test_the_claim_reads_only_the_scheduled_part_of_its_index(my_engine: Engine) -> None:
    """No partial indexes on MySQL: the claim's index starts with status, so finished rows
    are never read; EXPLAIN shows it used, and how many rows it expects to read."""
    with my_engine.begin() as db:
        db.execute(
            text(
                "INSERT INTO broadcast_jobs (payload, send_at, status) "
                "SELECT '{}', '2030-01-01', 'sent' FROM information_schema.columns LIMIT 500"
            )
        )
        db.execute(
            text("INSERT INTO broadcast_jobs (payload, send_at) VALUES ('{}', :t)"), {"t": NOW}
        )
        db.execute(text("ANALYZE TABLE broadcast_jobs"))
        plan = (
            db.execute(
                text(
                    "EXPLAIN SELECT id FROM broadcast_jobs WHERE status = 'scheduled' "
                    "AND due_at <= :now ORDER BY priority DESC, due_at LIMIT 20 "
                    "FOR UPDATE SKIP LOCKED"
                ),
                {"now": NOW},
            )
            .mappings()
            .one()
        )
    assert plan["key"] in ("ix_broadcast_jobs_my_claim_order", "ix_broadcast_jobs_my_due"), plan
    assert int(plan["rows"]) < 50, plan


def test_metrics_read_call_durations_and_lateness_in_seconds(my_engine: Engine) -> None:
    """/metrics' lateness is `started_at - send_at` in seconds: MySQL has no interval
    arithmetic on DATETIME (TIMESTAMPDIFF in microseconds instead)."""
    from broadcaster.web.attempt_totals import LATENESS_BUCKETS_S, AttemptCounter

    store = JobStore(my_engine, default_corp="corp-a")
    [job_id] = store.insert_jobs([{"payload": json.dumps(body()), "send_at": NOW}]).inserted_ids
    with my_engine.begin() as db:
        db.execute(
            text(
                "INSERT INTO broadcast_attempts (job_id, attempt_no, started_at, duration_ms, "
                "outcome) VALUES (:id, 1, :started, 120, 'sent')"
            ),
            {"id": job_id, "started": NOW.replace(microsecond=300000)},
        )
    totals = AttemptCounter().read(my_engine, NOW)
    *below, count, total = totals.late
    assert count == 1 and total == pytest.approx(0.3)
    assert below == [1 if bound >= 0.3 else 0 for bound in LATENESS_BUCKETS_S]


def test_an_import_line_mysql_refuses_costs_only_its_own_line(
    my_engine: Engine, tmp_path: Path
) -> None:
    """A dedupe_key past MySQL's VARCHAR(768) (an index entry is at most 3072 bytes) is
    refused by the database, not cut short: the batch is retried line by line."""
    from broadcaster.produce.importer import import_file

    lines = [
        {"payload": body(), "send_at": "2030-12-12T12:00:00Z", "dedupe_key": key}
        for key in ("k-1", "k" * 769, "k-3", "k-1")
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    store = JobStore(my_engine, default_corp="corp-a")
    report = import_file(path, store, tz="UTC")
    assert (report.inserted, report.duplicates) == (2, 1)
    [(line, reason)] = report.rejected
    assert line == 2 and "Data too long for column 'dedupe_key'" in reason, reason


def test_a_server_without_skip_locked_is_refused_naming_the_versions(my_engine: Engine) -> None:
    from broadcaster.db import check_connection
    from broadcaster.errors import JobStoreError

    check_connection(my_engine)  # this one: 10.6+ or 8.0+
    my_engine.dialect.server_version_info = (10, 5, 27)
    with pytest.raises(JobStoreError, match=r"MariaDB 10\.5\.27 .* too old: .* MariaDB 10\.6\+"):
        check_connection(my_engine)
