"""Bulk import: rows per second of `broadcaster import` (validation, dedupe, batches)
against a raw load of the same rows (executemany on SQLite, COPY on PostgreSQL), A B A B.

    .venv/bin/python -m bench.import_speed [--quick] [--rows N]

Full: 1M JSON Lines rows; quick: 20k. Targets: ≥ 0.5 of the raw rate, ≥ 50k rows/s on
PostgreSQL. MariaDB: a tenth of the rows (100k, quick 2k: one INSERT per row, see
`broadcaster/jobs/store/insert.py`), against PyMySQL's executemany (one multi-row INSERT
per packet, no dedupe); skipped, saying so, when no MariaDB/MySQL server answers.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

from bench.common import fresh_database, has_mariadb, median, store_for, table
from broadcaster.db import make_engine
from broadcaster.produce.importer import count_lines, import_file, parse_processes_for

BODY = {
    "name": "backfill",
    "staff_ext_id_list": ["staff-1"],
    "create_staff_ext_id": "staff-1",
    "text": "全场五折，今晚八点开抢",
}


def make_file(rows: int) -> Path:
    path = Path(tempfile.mkdtemp(prefix="broadcaster-import-")) / "rows.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for number in range(rows):
            handle.write(
                json.dumps(
                    {
                        "payload": {**BODY, "group_ext_id_list": [f"group-{number}"]},
                        "send_at": "2026-12-12T12:00:00Z",
                        "dedupe_key": f"backfill:{number}",
                        "campaign": "backfill",
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    return path


def ours(kind: str, path: Path) -> float:
    store = store_for(fresh_database(kind), default_corp=None)
    gc.collect()
    gc.freeze()  # as `broadcaster import` does (broadcaster/cli/produce.py)
    started = time.perf_counter()
    processes = parse_processes_for(count_lines(path))  # as `broadcaster import` chooses
    report = import_file(path, store, tz="UTC", parse_processes=processes)
    elapsed = time.perf_counter() - started
    gc.unfreeze()
    store.engine.dispose()
    return report.inserted / elapsed


def raw(kind: str, path: Path) -> float:
    """Parse each line and load the columns as they are: no validation, no dedupe check."""
    engine = make_engine(fresh_database(kind))
    started = time.perf_counter()
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            rows.append(
                (
                    "corp-a",
                    json.dumps(record["payload"], ensure_ascii=False),
                    "2026-12-12 12:00:00",
                    record["dedupe_key"],
                    record["campaign"],
                )
            )
    raw_connection = engine.raw_connection()
    try:
        cursor = raw_connection.cursor()
        if kind == "postgresql":
            with cursor.copy(
                "COPY broadcast_jobs (corp_id, payload, send_at, dedupe_key, campaign) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
        elif kind == "mariadb":
            cursor.executemany(
                "INSERT INTO broadcast_jobs (corp_id, payload, send_at, "
                "dedupe_key, campaign) VALUES (%s, %s, %s, %s, %s)",
                rows,
            )
        else:
            cursor.execute("BEGIN")
            cursor.executemany(
                "INSERT INTO broadcast_jobs (corp_id, payload, send_at, "
                "dedupe_key, campaign) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        raw_connection.commit()
    finally:
        raw_connection.close()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=None)
    args = parser.parse_args()
    count = args.rows or (20_000 if args.quick else 1_000_000)
    kinds = ["postgresql", "sqlite", "mariadb"]
    if not has_mariadb():
        print("mariadb: skipped, no MariaDB/MySQL server (set BENCH_MYSQL_URL)")
        kinds.remove("mariadb")
    paths = {count: make_file(count)}
    rows = []
    for kind in kinds:
        rows_here = max(1, count // 10) if kind == "mariadb" else count
        path = paths.setdefault(rows_here, make_file(rows_here))
        print(f"{kind}: {rows_here} rows, A B A B …", flush=True)
        ours_rates, raw_rates = [], []
        for _round in range(2 if args.quick else 3):
            raw_rates.append(raw(kind, path))
            ours_rates.append(ours(kind, path))
        rows.append(
            {
                "db": kind,
                "rows": rows_here,
                "broadcaster rows/s": median(ours_rates),
                "raw rows/s": median(raw_rates),
                "ratio": median(ours_rates) / median(raw_rates),
            }
        )
    print(table(rows, ["db", "rows", "broadcaster rows/s", "raw rows/s", "ratio"]))
    print("targets: ratio ≥ 0.5; ≥ 50k rows/s on PostgreSQL")


if __name__ == "__main__":
    main()
