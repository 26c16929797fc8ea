"""Lateness: how long after `send_at` the vendor call starts, with the quota out of the way.

    .venv/bin/python -m bench.lateness [--quick] [--jobs 600] [--db sqlite|postgresql|mariadb|all]
        [--case lateness|burst|both]

Two kinds of rows on SQLite, PostgreSQL and MariaDB: rows scheduled ahead at staggered
times, and rows inserted already due while the service runs. Lateness = the sandbox's
arrival time − send_at (for rows inserted due: − the moment of the insert). Baseline in the
same run: a plain `time.sleep` timer waking at each send_at. SQLite and MariaDB have no
NOTIFY, so they run with SCHEDULER_POLL_INTERVAL_S=0.05 (the default 1 s bounds their
lateness for rows inserted due). MariaDB is skipped, saying so, without a server.

`--case burst`: a burst due at once behind a backlog, with the quota in the way (the
sandbox and the quota at 3000/min, i.e. 50/s, 4 in flight, 20 ms): a backlog of `--jobs`/2
rows due at once, then `--jobs`/6 rows all due 2 s later, while the backlog drains. The
fair outcome is a queue at the quota's pace in due order: row i of the whole run, in
(send_at, id) order, starts at ideal_i = max(send_at_i, ideal_(i-1) + 1/50 s), ideal_0 =
the first call. Figures: each group's wait beyond its place in line (arrival − ideal; a
starved row shows here), the pace (calls/s ÷ 50 from the first call to the last) and how
far any row moved from its place in due order (positions).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import UTC, datetime, timedelta

from bench.common import (
    fresh_database,
    has_mariadb,
    redis_url,
    service,
    service_env,
    stop,
    store_for,
    table,
    wait_for,
)
from bench.quota import BODY
from broadcaster import schedule_many
from broadcaster.jobs.store import JobStore
from broadcaster.ops.report import percentile
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer


def stats(values: list[float]) -> dict[str, float | None]:
    ms = [v * 1000 for v in values]
    return {
        "p50_ms": percentile(ms, 0.5),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms) if ms else None,
        "n": len(ms),
    }


def arrival_by_name(sandbox: SandboxServer) -> dict[str, float]:
    return {m["body"]["name"]: m["received_at"] - 0.0 for m in sandbox.state.created_list()}


def run(kind: str, jobs: int) -> tuple[dict, dict]:
    db, broker = fresh_database(kind), redis_url()
    sandbox = SandboxServer(
        SandboxConfig(per_minute=10**6, per_hour=10**8, max_in_flight=1000, latency_ms=0)
    ).start()
    store = store_for(db)
    process = service(
        ["run", "--processes", "1", "--threads", "8"],
        service_env(
            db,
            broker,
            sandbox.url,
            per_minute=10**6,
            per_hour=10**8,
            WEIBAN_MAX_IN_FLIGHT="1000",
            SCHEDULER_POLL_INTERVAL_S="1.0" if kind == "postgresql" else "0.05",
        ),
    )
    try:
        warm = schedule_many([{"payload": {**BODY, "name": "warm-up"}}], store=store)
        wait_for(lambda: arrival_by_name(sandbox).get("warm-up"), timeout=60)
        start = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=2)
        spacing = 6.0 / jobs
        ahead = {f"ahead-{i}": start + timedelta(seconds=i * spacing) for i in range(jobs)}
        schedule_many(
            [{"payload": {**BODY, "name": name}, "send_at": at} for name, at in ahead.items()],
            store=store,
        )
        inserted = insert_due_rows(store, jobs // 4, after=start)
        wait_for(lambda: len(arrival_by_name(sandbox)) >= jobs + jobs // 4 + 1, timeout=60)
    finally:
        stop(process)
        sandbox.stop()
    arrival = arrival_by_name(sandbox)
    ahead_late = [arrival[n] - at.replace(tzinfo=UTC).timestamp() for n, at in ahead.items()]
    due_late = [arrival[n] - moment for n, moment in inserted.items()]
    del warm
    return stats(ahead_late), stats(due_late)


def insert_due_rows(store: JobStore, count: int, after: datetime) -> dict[str, float]:
    """Plain SQL inserts of rows due now, spread over the run, from another thread."""
    moments: dict[str, float] = {}

    def producer() -> None:
        time.sleep(max(0.0, after.replace(tzinfo=UTC).timestamp() - time.time()))
        for number in range(count):
            name = f"due-{number}"
            with store.engine.begin() as connection:
                connection.exec_driver_sql(
                    "INSERT INTO broadcast_jobs (corp_id, payload) VALUES ('corp-a', %s)"
                    if store.engine.dialect.name in ("postgresql", "mysql")
                    else "INSERT INTO broadcast_jobs (corp_id, payload) VALUES ('corp-a', ?)",
                    (json.dumps({**BODY, "name": name}),),
                )
            moments[name] = time.time()
            time.sleep(6.0 / count)

    thread = threading.Thread(target=producer)
    thread.start()
    thread.join()
    return moments


def sleep_timer(jobs: int) -> dict:
    start = time.time() + 0.5
    late = []
    for number in range(jobs):
        due = start + number * 6.0 / jobs
        time.sleep(max(0.0, due - time.time()))
        late.append(time.time() - due)
    return stats(late)


BURST_PER_MINUTE = 3000
BURST_RATE = BURST_PER_MINUTE / 60


def run_burst(kind: str, backlog: int, burst: int) -> list[dict]:
    """A backlog due at once, then a burst all due 2 s later, with the quota in the way."""
    db, broker = fresh_database(kind), redis_url()
    sandbox = SandboxServer(
        SandboxConfig(per_minute=BURST_PER_MINUTE, per_hour=10**8, max_in_flight=4, latency_ms=20)
    ).start()
    store = store_for(db)
    process = service(
        ["run", "--processes", "1", "--threads", "8"],
        service_env(
            db,
            broker,
            sandbox.url,
            per_minute=BURST_PER_MINUTE,
            per_hour=10**8,
            SCHEDULER_POLL_INTERVAL_S="1.0" if kind == "postgresql" else "0.05",
        ),
    )
    try:
        schedule_many([{"payload": {**BODY, "name": "warm-up"}}], store=store)
        wait_for(lambda: arrival_by_name(sandbox).get("warm-up"), timeout=60)
        start = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=1)
        rows = [(f"backlog-{i}", start) for i in range(backlog)]
        rows += [(f"burst-{i}", start + timedelta(seconds=2)) for i in range(burst)]
        # One call, ids in this order: (send_at, id) is the due order.
        schedule_many(
            [{"payload": {**BODY, "name": name}, "send_at": at} for name, at in rows],
            store=store,
        )
        expected = len(rows) + 1
        wait_for(lambda: len(arrival_by_name(sandbox)) >= expected, timeout=60 + len(rows) / 10)
    finally:
        stop(process)
        sandbox.stop()
    return burst_figures(rows, arrival_by_name(sandbox))


def burst_figures(rows: list[tuple[str, datetime]], arrival: dict[str, float]) -> list[dict]:
    """Each group's wait beyond its place in a queue served at the quota's pace in due
    order, the pace, and how far rows moved from their place in due order."""
    due = [(name, at.replace(tzinfo=UTC).timestamp()) for name, at in rows]
    ideal: dict[str, float] = {}
    previous = min(arrival[name] for name, _ in due) - 1 / BURST_RATE
    for name, at in due:
        previous = ideal[name] = max(at, previous + 1 / BURST_RATE)
    sent_order = sorted(ideal, key=lambda name: arrival[name])
    moved = {name: abs(place - sent_order.index(name)) for place, (name, _) in enumerate(due)}
    times = [arrival[name] for name in ideal]
    pace = (len(times) - 1) / max(max(times) - min(times), 1e-9) / BURST_RATE
    figures = []
    for group in ("backlog", "burst"):
        names = [name for name in ideal if name.startswith(group)]
        figures.append(
            {
                "case": f"{group} ({len(names)} rows)",
                **stats([arrival[name] - ideal[name] for name in names]),
                "moved_max": max(moved[name] for name in names),
                "pace": pace,
            }
        )
    return figures


def chosen_kinds(db: str) -> list[str]:
    kinds = ["sqlite", "postgresql", "mariadb"] if db == "all" else [db]
    if "mariadb" in kinds and not has_mariadb():
        print("mariadb: skipped, no MariaDB/MySQL server (set BENCH_MYSQL_URL)")
        kinds.remove("mariadb")
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "mariadb", "all"], default="all")
    parser.add_argument("--case", choices=["lateness", "burst", "both"], default="both")
    args = parser.parse_args()
    jobs = args.jobs or (200 if args.quick else 600)
    kinds = chosen_kinds(args.db)
    if args.case in ("lateness", "both"):
        lateness(kinds, jobs)
    if args.case in ("burst", "both"):
        burst(kinds, jobs // 2, jobs // 6)


def lateness(kinds: list[str], jobs: int) -> None:
    rows = []
    for kind in kinds:
        print(f"{kind}: {jobs} rows ahead + {jobs // 4} inserted due …", flush=True)
        ahead, due = run(kind, jobs)
        rows.append({"case": f"{kind}, scheduled ahead", **ahead})
        rows.append({"case": f"{kind}, inserted due", **due})
    baseline = sleep_timer(jobs)
    rows.append({"case": "baseline: time.sleep timer", **baseline})
    print(table(rows, ["case", "n", "p50_ms", "p99_ms", "max_ms"]))
    print(
        "target: p99 ≤ 100 ms; ratio to the sleep timer's p99: "
        + ", ".join(
            f"{r['case']}: {r['p99_ms'] / max(baseline['p99_ms'], 0.001):.0f}x" for r in rows[:-1]
        )
    )


def burst(kinds: list[str], backlog: int, size: int) -> None:
    rows = []
    for kind in kinds:
        print(
            f"{kind}: burst of {size} due at once 2 s into a backlog of {backlog} "
            f"({BURST_RATE:.0f}/s quota) …",
            flush=True,
        )
        rows += [
            {**row, "case": f"{kind}, {row['case']}"} for row in run_burst(kind, backlog, size)
        ]
    print("wait beyond the row's place in a due-order queue at the quota's pace:")
    print(table(rows, ["case", "n", "p50_ms", "p99_ms", "max_ms", "moved_max", "pace"]))


if __name__ == "__main__":
    main()
