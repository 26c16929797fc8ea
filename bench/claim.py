"""Claim-and-enqueue throughput, quota lifted: jobs per second the scheduler moves from
due rows to the broker, against a raw `FOR UPDATE SKIP LOCKED` batch loop in the same run,
and the last ÷ first chunk rate while finished rows pile up in the table.

    .venv/bin/python -m bench.claim [--quick] [--db postgresql,sqlite,mariadb]

Full: 1M due rows behind 5M finished ones on PostgreSQL, 200k on SQLite, 100k behind 1M
on MariaDB (its default 128 MB buffer pool: filling 2M rows took minutes per round).
Quick: 50k behind 200k on PostgreSQL, 20k on SQLite, 10k behind 100k on MariaDB (skipped,
saying so, when no MariaDB/MySQL server answers).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime

import redis
from sqlalchemy import Engine, bindparam, text

from bench.common import fresh_database, has_mariadb, redis_url, table
from broadcaster.broker.dispatch import Dispatcher, make_broker
from broadcaster.db import make_engine
from broadcaster.jobs.store import JobStore

PAYLOAD = (
    '{"name":"b","staff_ext_id_list":["s"],"group_ext_id_list":["g"],'
    '"create_staff_ext_id":"s","text":"t"}'
)
NOW = datetime(2026, 12, 1)
DIGITS = "(SELECT 0 UNION ALL " + " UNION ALL ".join(f"SELECT {d}" for d in range(1, 10)) + ")"
MYSQL_ROWS = ", ".join(f"{DIGITS} AS d{n}" for n in range(6))
"""A million rows from nothing on MySQL and MariaDB (MySQL caps recursive CTEs at 1000)."""


def fill(engine: Engine, due: int, finished: int) -> None:
    """Rows straight in by SQL: `finished` already sent, then `due` scheduled in the past."""
    for count, status in ((finished, "sent"), (due, "scheduled")):
        done = 0
        while done < count:
            step = min(200_000, count - done)
            with engine.begin() as connection:
                if engine.dialect.name == "postgresql":
                    connection.execute(
                        text(
                            "INSERT INTO broadcast_jobs (corp_id, payload, send_at, status) "
                            "SELECT 'corp-a', :p, timestamp '2026-11-30', :s "
                            "FROM generate_series(1, :n)"
                        ),
                        {"p": PAYLOAD, "s": status, "n": step},
                    )
                elif engine.dialect.name == "mysql":
                    connection.execute(
                        text(
                            "INSERT INTO broadcast_jobs (corp_id, payload, send_at, status) "
                            f"SELECT 'corp-a', :p, '2026-11-30', :s FROM {MYSQL_ROWS} LIMIT :n"
                        ),
                        {"p": PAYLOAD, "s": status, "n": step},
                    )
                else:
                    connection.execute(
                        text(
                            "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq "
                            "WHERE i < :n) INSERT INTO broadcast_jobs (corp_id, payload, send_at, "
                            "status) SELECT 'corp-a', :p, '2026-11-30 00:00:00.000000', :s FROM seq"
                        ),
                        {"p": PAYLOAD, "s": status, "n": step},
                    )
            done += step
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE broadcast_jobs"))
    elif engine.dialect.name == "mysql":
        with engine.begin() as connection:
            connection.execute(text("ANALYZE TABLE broadcast_jobs"))


def ours(engine: Engine, client: redis.Redis, total: int, chunks: int) -> list[float]:
    """The scheduler's claim path: claim a batch, enqueue its ids, finish the chunk's rows
    (as workers would) so finished rows pile up. Returns the rate of each chunk."""
    store, dispatcher = JobStore(engine, default_corp="corp-a"), Dispatcher(make_broker(client))
    return _chunked(
        total,
        chunks,
        lambda: len(dispatcher.enqueue(job.id for job in store.claim_due(NOW, 500, 300).claimed)),
        engine,
    )


def raw(engine: Engine, client: redis.Redis, total: int, chunks: int) -> list[float]:
    """The least a claimer can do: one UPDATE … SKIP LOCKED … RETURNING, one LPUSH."""
    if engine.dialect.name == "mysql":
        return raw_mysql(engine, client, total, chunks)
    skip = "FOR UPDATE SKIP LOCKED" if engine.dialect.name == "postgresql" else ""
    statement = text(
        "UPDATE broadcast_jobs SET status = 'queued' WHERE id IN (SELECT id FROM broadcast_jobs "
        f"WHERE status = 'scheduled' AND send_at <= :now LIMIT 500 {skip}) RETURNING id"
    )

    def batch() -> int:
        with engine.begin() as connection:
            ids = connection.execute(statement, {"now": NOW}).scalars().all()
        if ids:
            client.lpush("bench:raw", *ids)
        return len(ids)

    return _chunked(total, chunks, batch, engine)


def raw_mysql(engine: Engine, client: redis.Redis, total: int, chunks: int) -> list[float]:
    """MySQL has no UPDATE … RETURNING: SELECT … FOR UPDATE SKIP LOCKED, UPDATE by id,
    one LPUSH, in one transaction (its status index is the one it reads)."""
    pick = text(
        "SELECT id FROM broadcast_jobs WHERE status = 'scheduled' AND send_at <= :now "
        "LIMIT 500 FOR UPDATE SKIP LOCKED"
    )
    move = text("UPDATE broadcast_jobs SET status = 'queued' WHERE id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )

    def batch() -> int:
        with engine.begin() as connection:
            ids = connection.execute(pick, {"now": NOW}).scalars().all()
            if ids:
                connection.execute(move, {"ids": list(ids)})
        if ids:
            client.lpush("bench:raw", *ids)
        return len(ids)

    return _chunked(total, chunks, batch, engine)


def _chunked(total: int, chunks: int, batch, engine: Engine) -> list[float]:  # type: ignore[no-untyped-def]
    rates, size, moved = [], total // chunks, 0
    while moved < total:
        started, in_chunk = time.perf_counter(), 0
        while in_chunk < size:
            got = batch()
            if not got:
                break
            in_chunk += got
        if not in_chunk:
            break
        rates.append(in_chunk / (time.perf_counter() - started))
        moved += in_chunk
        with engine.begin() as connection:  # the workers finish what was handed out
            connection.execute(
                text("UPDATE broadcast_jobs SET status = 'sent' WHERE status = 'queued'")
            )
    return rates


def measure(kind: str, due: int, finished: int) -> list[dict]:
    rows = []
    for name, claimer in (
        ("raw SKIP LOCKED loop", raw),
        ("broadcaster", ours),
        ("raw SKIP LOCKED loop ", raw),
        ("broadcaster ", ours),
    ):
        engine = make_engine(fresh_database(kind))
        fill(engine, due, finished)
        client = redis.Redis.from_url(redis_url())
        started = time.perf_counter()
        rates = claimer(engine, client, due, 10)
        elapsed = time.perf_counter() - started
        rows.append(
            {
                "db": kind,
                "who": name.strip(),
                "jobs/s": due / elapsed,
                "last/first chunk": rates[-1] / rates[0],
            }
        )
        engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--db", default="postgresql,sqlite,mariadb", help="comma-separated")
    args = parser.parse_args()
    sizes = (
        {"postgresql": (50_000, 200_000), "sqlite": (20_000, 0), "mariadb": (10_000, 100_000)}
        if args.quick
        else {
            "postgresql": (1_000_000, 5_000_000),
            "sqlite": (200_000, 0),
            "mariadb": (100_000, 1_000_000),
        }
    )
    wanted = args.db.split(",")
    if "mariadb" in wanted and not has_mariadb():
        print("mariadb: skipped, no MariaDB/MySQL server (set BENCH_MYSQL_URL)")
        wanted.remove("mariadb")
    plan = [(kind, *sizes[kind]) for kind in wanted]
    rows = []
    for kind, due, finished in plan:
        print(f"{kind}: {due} due rows behind {finished} finished, A B A B …", flush=True)
        rows += measure(kind, due, finished)
    print(table(rows, ["db", "who", "jobs/s", "last/first chunk"]))
    for kind, *_rest in plan:
        ours_rate = [r["jobs/s"] for r in rows if r["db"] == kind and r["who"] == "broadcaster"]
        raw_rate = [r["jobs/s"] for r in rows if r["db"] == kind and r["who"] != "broadcaster"]
        print(
            f"{kind}: broadcaster ÷ raw = {sum(ours_rate) / sum(raw_rate):.2f} "
            "(targets: ≥ 10k jobs/s, stability ≥ 0.8)"
        )


if __name__ == "__main__":
    main()
