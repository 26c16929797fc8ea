"""The web API's throughput and /metrics time: jobs/s accepted by `POST /api/v1/broadcasts`
in batches of 100 over real HTTP (`broadcaster web` as a process, one keep-alive client,
and four at once) against `schedule_many` in batches of 100 in the same run (A B A B,
median; target ≥ 0.5 of it); then `/metrics` on a big table: the first scrape (it waits
for the first read of the tables), later scrapes (cached, never waiting), and the reads of
the tables behind them: the first, and later ones as the background refresh does them.

    .venv/bin/python -m bench.api [--quick] [--db sqlite|postgresql|both] [--metrics-rows N]

Full: 20k jobs per side per round, 3 rounds, 1M rows for /metrics.
Quick: 2k jobs per side, 2 rounds, 20k rows (for CI, well under 30 s).
Its own PostgreSQL database (broadcaster_bench_api) and Redis DB (13), whatever
BENCH_PG_DB / BENCH_REDIS_DB say, so it never clashes with the other benchmarks.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from typing import Any

import httpx
import redis
from sqlalchemy import Engine, text

from bench.common import fresh_database, service, stop, store_for, table, wait_for
from broadcaster import schedule_many
from broadcaster.bootstrap import Bootstrap
from broadcaster.db import make_engine
from broadcaster.jobs.store import JobStore
from broadcaster.ops.devservices import find_redis
from broadcaster.settings import load_settings
from broadcaster.web.attempt_totals import AttemptCounter
from broadcaster.web.metrics import read_figures
from broadcaster.web.tokens import Scope, TokenStore

DB_NAME = "broadcaster_bench_api"
REDIS_DB = 13
BATCH = 100
CLIENTS = 4
BODY = {
    "name": "双十二预热",
    "staff_ext_id_list": ["staff-1"],
    "create_staff_ext_id": "staff-1",
    "text": "全场五折，今晚八点开抢",
}
_serial = count(1)


def redis_url(db: int = REDIS_DB) -> str:
    """Redis DB 13 (or `db`), emptied: apart from bench.common's DB 5, so this runs beside
    others."""
    url = os.environ.get("BENCH_REDIS_URL") or find_redis().url
    assert url, "no Redis: set BENCH_REDIS_URL"
    if url.startswith("redis://"):
        url = url.rsplit("/", 1)[0] + f"/{db}"
        redis.Redis.from_url(url).flushdb()
    return url


def batches(jobs: int) -> list[list[dict[str, Any]]]:
    """`jobs` items (one group each, a dedupe key each, as producers send) in batches."""
    out = []
    for _ in range(jobs // BATCH):
        batch = []
        for _ in range(BATCH):
            n = next(_serial)
            batch.append(
                {
                    "payload": {**BODY, "group_ext_id_list": [f"g{n}"]},
                    "dedupe_key": f"bench-{n}",
                    "campaign": "bench",
                    "send_at": "2030-01-01T08:00:00+08:00",
                }
            )
        out.append(batch)
    return out


def python_api(store: JobStore, work: list[list[dict[str, Any]]]) -> float:
    started = time.perf_counter()
    for batch in work:
        schedule_many(batch, store=store)
    return len(work) * BATCH / (time.perf_counter() - started)


def http_api(clients: list[httpx.Client], work: list[list[dict[str, Any]]]) -> float:
    """The batches split over `clients`, each posting its share in turn."""
    shares = [work[i :: len(clients)] for i in range(len(clients))]

    def post_all(i: int) -> None:
        for batch in shares[i]:
            answer = clients[i].post("/api/v1/broadcasts", json=batch)
            assert answer.status_code == 201, answer.text[:300]

    started = time.perf_counter()
    if len(clients) == 1:
        post_all(0)
    else:
        with ThreadPoolExecutor(len(clients)) as pool:
            list(pool.map(post_all, range(len(clients))))
    return len(work) * BATCH / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_web(db: str, broker: str, ready_path: str = "/healthz") -> tuple[Any, str]:
    """`broadcaster web` as a process on a free port, once `ready_path` answers 200."""
    port = free_port()
    process = service(
        ["web", "--port", str(port)],
        {
            "DATABASE_URL": db,
            "REDIS_URL": broker,
            "WEIBAN_CORP_ID": "corp-a",
            "WEB_AUTH_FAIL_DELAY_S": "0",
        },
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, "broadcaster web exited"
        try:
            return httpx.get(base + ready_path, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 30)
    return process, base


def fill(engine: Engine, rows: int) -> None:
    """`rows` jobs straight in by SQL over 5 corps, 200 campaigns and every status, each
    sent or failed one with an attempt (what /metrics reads)."""
    postgres = engine.dialect.name == "postgresql"
    if postgres:
        series = "FROM generate_series(1, :n) AS s(i)"
        send_at, sent_at = "timezone('utc', now()) - interval '1 day'", "timezone('utc', now())"
        started = "send_at + interval '0.05 second'"
        status = (
            "(ARRAY['sent','sent','sent','failed','scheduled','cancelled','unknown'])[1 + i % 7]"
        )
    else:
        series = "FROM s"
        send_at, sent_at = "'2026-11-25 00:00:00.000000'", "'2026-11-25 00:00:01.000000'"
        started = "'2026-11-25 00:00:00.050000'"
        status = (
            "CASE i % 7 WHEN 0 THEN 'sent' WHEN 1 THEN 'sent' WHEN 2 THEN 'sent' "
            "WHEN 3 THEN 'failed' WHEN 4 THEN 'scheduled' WHEN 5 THEN 'cancelled' "
            "ELSE 'unknown' END"
        )
    head = (
        ""
        if postgres
        else "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
    )
    with engine.begin() as connection:
        first = connection.execute(text("SELECT coalesce(max(id), 0) FROM broadcast_jobs"))
        after = first.scalar_one()
        connection.execute(
            text(
                head + "INSERT INTO broadcast_jobs (corp_id, payload, send_at, campaign, status, "
                "sent_at, delivery_status) "
                f"SELECT 'corp-' || (i % 5), '{{}}', {send_at}, 'camp-' || (i % 200), {status}, "
                f"{sent_at}, CASE WHEN i % 3 = 0 THEN 'completed' END {series}"
            ),
            {"n": rows},
        )
        connection.execute(
            text(
                "INSERT INTO broadcast_attempts (job_id, attempt_no, started_at, duration_ms, "
                f"outcome, errcode) SELECT id, 1, {started}, 40 + id % 300, "
                "CASE WHEN status = 'sent' THEN 'sent' ELSE 'rejected' END, "
                "CASE WHEN status = 'sent' THEN 0 ELSE 40058 END FROM broadcast_jobs "
                "WHERE id > :after AND status IN ('sent', 'failed')"
            ),
            {"after": after},
        )
    if postgres:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))


def scrape_ms(base: str) -> tuple[float, int]:
    started = time.perf_counter()
    answer = httpx.get(f"{base}/metrics", timeout=600)
    assert answer.status_code == 200, answer.text[:300]
    return (time.perf_counter() - started) * 1000, len(answer.content)


def measure(kind: str, jobs: int, rounds: int, metrics_rows: int) -> list[dict[str, Any]]:
    db, broker = fresh_database(kind, name=DB_NAME), redis_url()
    store = store_for(db)
    token = TokenStore(store.engine).create("bench", Scope.WRITE)
    process, base = start_web(db, broker)
    rows: list[dict[str, Any]] = []
    try:
        headers = {"Authorization": f"Bearer {token}"}
        clients = [httpx.Client(base_url=base, headers=headers, timeout=120) for _ in range(4)]
        http_api(clients[:1], batches(BATCH * 5))  # warm both up: connections, caches
        python_api(store, batches(BATCH * 5))
        runs: dict[str, list[float]] = {"python": [], "http": [], "http4": []}
        for _ in range(rounds):  # A B A B
            runs["python"].append(python_api(store, batches(jobs)))
            runs["http"].append(http_api(clients[:1], batches(jobs)))
            runs["http4"].append(http_api(clients, batches(jobs)))
        for client in clients:
            client.close()
        python = statistics.median(runs["python"])
        for who, label in (
            ("python", "schedule_many ×100"),
            ("http", "POST ×100, 1 client"),
            ("http4", f"POST ×100, {CLIENTS} clients"),
        ):
            rate = statistics.median(runs[who])
            rows.append(
                {
                    "db": kind,
                    "who": label,
                    "jobs/s": rate,
                    "÷ schedule_many": rate / python,
                    "runs": " ".join(f"{r:.0f}" for r in runs[who]),
                }
            )
        engine = make_engine(db)
        started = time.perf_counter()
        fill(engine, metrics_rows)
        filled_s = time.perf_counter() - started
        with engine.connect() as connection:
            total = connection.execute(text("SELECT count(*) FROM broadcast_jobs")).scalar_one()
        first, size = scrape_ms(base)  # waits for the first read of the tables
        later = statistics.median(scrape_ms(base)[0] for _ in range(10))
        reads = []
        boot = Bootstrap(
            load_settings(
                _env_file=None, database_url=db, redis_url=broker, weiban_corp_id="corp-a"
            )
        )
        counter = AttemptCounter()  # kept, as the web process keeps it: later reads take the tail
        for _ in range(4):
            started = time.perf_counter()
            read_figures(boot, counter)
            reads.append((time.perf_counter() - started) * 1000)
        boot.engine.dispose()
        engine.dispose()
        rows.append(
            {
                "db": kind,
                "who": f"/metrics on {total:,} jobs",
                "first ms": first,
                "later ms": later,
                "first read ms": reads[0],
                "later read ms": statistics.median(reads[1:]),
                "bytes": size,
                "fill s": filled_s,
            }
        )
    finally:
        stop(process)
        store.engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--metrics-rows", type=int, default=None)
    args = parser.parse_args()
    jobs, rounds = (2_000, 2) if args.quick else (20_000, 3)
    metrics_rows = args.metrics_rows or (20_000 if args.quick else 1_000_000)
    kinds = ["postgresql", "sqlite"] if args.db == "both" else [args.db]
    rows = []
    for kind in kinds:
        print(f"{kind}: {rounds} rounds of {jobs} jobs a side, A B A B …", flush=True)
        rows += measure(kind, jobs, rounds, metrics_rows)
    speed = [r for r in rows if "jobs/s" in r]
    print(table(speed, ["db", "who", "jobs/s", "÷ schedule_many", "runs"]))
    print(
        table(
            [r for r in rows if "first ms" in r],
            [
                "db",
                "who",
                "first ms",
                "later ms",
                "first read ms",
                "later read ms",
                "bytes",
                "fill s",
            ],
        )
    )
    for kind in kinds:
        ratio = next(
            r["÷ schedule_many"] for r in speed if r["db"] == kind and "1 client" in r["who"]
        )
        print(f"{kind}: POST ÷ schedule_many = {ratio:.2f} (target ≥ 0.5)")


if __name__ == "__main__":
    main()
