"""The operator console's page render time on a big table: `broadcaster web` as a process,
one logged-in keep-alive client, p50/p95 of GETs of each page (overview and its live
partial, a campaign's first and a later page, filtered, searched, its live progress, a
job, the unknown inbox) on a big table and, in the same run, on a small one with the same
rows in its last 15 minutes (the baseline: big ÷ small is what the table's size costs),
with /healthz beside them as the machine's noise floor.

    .venv/bin/python -m bench.console [--quick] [--db sqlite|postgresql|both] [--rows N]

Full: 10,000 rows, then 1,000,000 (30 requests a page each time).
Quick: 2,000 rows, then 50,000 (10 requests a page), for CI: well under 60 s.
Rows go in by SQL (generate_series on PostgreSQL, a recursive CTE on SQLite) in time
order over a week, 5 corps, 20 campaigns and every status, with an attempt for each row
that was called. Its own PostgreSQL database (broadcaster_bench_console) and Redis DB (12),
whatever BENCH_PG_DB / BENCH_REDIS_DB say, so it never clashes with the other benchmarks.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, make_url, text

from bench.common import fresh_database, stop, table, wait_for
from broadcaster.db import make_engine
from broadcaster.ops.devservices import find_postgres
from broadcaster.web.tokens import Scope, TokenStore

DB_NAME = "broadcaster_bench_console"
REDIS_DB = 12
CAMPAIGNS = 20
CORPS = 5
WEEK_S = 7 * 24 * 3600
CAMPAIGN = "camp-7"
"""The campaign whose pages are timed: 1/20 of the rows."""
STATUSES = (
    # (status, share in 1000): mostly sent, as a table of a live service is.
    ("sent", 800),
    ("failed", 50),
    ("scheduled", 80),
    ("cancelled", 40),
    ("expired", 15),
    ("unknown", 10),
    ("queued", 3),
    ("sending", 2),
)
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')
NEXT = re.compile(
    r'<a[^>]*data-testid="next-page"[^>]*href="([^"]+)"|'
    r'<a[^>]*href="([^"]+)"[^>]*data-testid="next-page"'
)


def redis_url() -> str:
    """Redis DB 12, emptied: apart from the other benchmarks' databases."""
    from bench.api import redis_url as emptied_redis

    return emptied_redis(REDIS_DB)


def _status_case() -> str:
    """The status of row i, by its place in 0..999 (the shares above)."""
    parts, edge = [], 0
    for status, share in STATUSES:
        edge += share
        parts.append(f"WHEN i % 1000 < {edge} THEN '{status}'")
    return "CASE " + " ".join(parts) + " END"


def fill(engine: Engine, rows: int, step_s: float) -> None:
    """Rows 1..`rows` straight in by SQL, in time order as a live table grows: row i due
    (rows - i) × `step_s` ago (the scheduled ones a day later), sent soon after, its
    attempt then; payloads with a text, a name and groups (so search has something to
    find), a dedupe key each. The same `step_s` for both tables gives the last 15 minutes
    the same rows, so the ratio is the table's size alone."""
    postgres = engine.dialect.name == "postgresql"
    status = _status_case()
    ago = f"((:hi - i) * {step_s})"
    if postgres:
        head, series = "", "FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS s(i)"
        send_at = (
            "timezone('utc', now()) + CASE WHEN {s} = 'scheduled' THEN interval '1 day' "
            f"ELSE interval '0' END - {ago} * interval '1 second'"
        )
        sent_at = "send_at + (id % 7) * interval '0.1 second'"
        started = "send_at + interval '0.05 second'"
    else:
        head = "WITH RECURSIVE s(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM s WHERE i < :hi) "
        series = "FROM s"
        send_at = (
            "strftime('%Y-%m-%d %H:%M:%f', 'now', CASE WHEN {s} = 'scheduled' THEN '+1 day' "
            f"ELSE '+0 day' END, '-' || {ago} || ' seconds') || '000'"
        )
        sent_at = (
            "strftime('%Y-%m-%d %H:%M:%f', send_at, '+' || ((id % 7) * 0.1) || ' seconds') || '000'"
        )
        started = "strftime('%Y-%m-%d %H:%M:%f', send_at, '+0.05 seconds') || '000'"
    payload = (
        '\'{"name": "camp-\' || (i % ' + str(CAMPAIGNS) + ") || ' #' || i || '\", "
        '"text": "全场五折 今晚八点开抢 编号\' || i || \'", '
        '"staff_ext_id_list": ["staff-1"], "create_staff_ext_id": "staff-1", '
        '"group_ext_id_list": ["group-\' || i || \'", "group-\' || (i + 1) || \'"]}\''
    )
    with engine.begin() as connection:
        connection.execute(
            text(
                f"{head}INSERT INTO broadcast_jobs (id, corp_id, payload, send_at, dedupe_key, "
                "campaign, status, attempts) "
                f"SELECT i, 'corp-' || ((i / {CAMPAIGNS}) % {CORPS}), {payload}, "
                f"{send_at.format(s=status)}, 'bench-' || i, "
                f"'camp-' || (i % {CAMPAIGNS}), {status}, 0 {series}"
            ),
            {"lo": 1, "hi": rows},
        )
        window = {"lo": 0, "hi": rows}
        connection.execute(
            text(
                f"UPDATE broadcast_jobs SET sent_at = {sent_at}, attempts = 1, "
                "delivery_status = CASE WHEN id % 3 = 0 THEN 'completed' ELSE NULL END "
                "WHERE id > :lo AND id <= :hi AND status = 'sent'"
            ),
            window,
        )
        connection.execute(
            text(
                "UPDATE broadcast_jobs SET attempts = 1, last_errcode = 40058, "
                "last_error = 'errcode 40058: invalid group_ext_id_list' "
                "WHERE id > :lo AND id <= :hi AND status = 'failed'"
            ),
            window,
        )
        connection.execute(
            text(
                "UPDATE broadcast_jobs SET attempts = 1, "
                "last_error = 'timeout after the request was sent' "
                "WHERE id > :lo AND id <= :hi AND status = 'unknown'"
            ),
            window,
        )
        connection.execute(
            text(
                "INSERT INTO broadcast_attempts (job_id, attempt_no, started_at, duration_ms, "
                f"outcome, errcode) SELECT id, 1, {started}, 40 + id % 300, "
                "CASE status WHEN 'sent' THEN 'sent' WHEN 'failed' THEN 'rejected' "
                "ELSE 'ambiguous' END, "
                "CASE status WHEN 'sent' THEN 0 WHEN 'failed' THEN 40058 ELSE NULL END "
                "FROM broadcast_jobs WHERE id > :lo AND id <= :hi "
                "AND status IN ('sent', 'failed', 'unknown') ORDER BY id"
            ),
            window,
        )
        if postgres:  # explicit ids: the sequence must not hand them out again
            connection.execute(
                text("SELECT setval(pg_get_serial_sequence('broadcast_jobs', 'id'), :hi)"),
                window,
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE" if postgres else "ANALYZE"))


def start_web(db: str, broker: str) -> tuple[Any, str]:
    """The console needs the database and Redis, so wait on /readyz, not /healthz."""
    from bench.api import start_web as start_api

    return start_api(db, broker, ready_path="/readyz")


def logged_in(base: str, token: str) -> httpx.Client:
    """A client holding a console session, as a browser after the login form."""
    client = httpx.Client(base_url=base, timeout=300, follow_redirects=False)
    form = client.get("/login")
    fields = {"token": token}
    if found := CSRF.search(form.text):
        fields["csrf_token"] = found.group(1) or found.group(2)
    answer = client.post("/login", data=fields)
    assert answer.status_code in (200, 302, 303), f"login: {answer.status_code} {answer.text[:200]}"
    assert "broadcaster_session" in client.cookies, "login set no session cookie"
    return client


def counts_ready(client: httpx.Client, timeout: float = 600) -> float:
    """Seconds until the overview shows the campaigns' bars: the web process counts the
    table in the background (never holding a page for it), so until then the overview
    says the counts are coming, and timing it would time a lighter page."""
    started = time.perf_counter()
    wait_for(
        lambda: f'data-testid="campaign-{CAMPAIGN}"' in client.get("/partials/overview").text,
        timeout,
        every=0.2,
    )
    return time.perf_counter() - started


def later_page(client: httpx.Client, first: str, hops: int) -> str:
    """The URL `hops` next-page links after `first` (a cursor deep into the campaign)."""
    url = first
    for _ in range(hops):
        found = NEXT.search(client.get(url).text)
        if found is None:
            break
        url = (found.group(1) or found.group(2)).replace("&amp;", "&")
    return url


def pick(engine: Engine) -> dict[str, Any]:
    """Things to ask for that exist: a sent job of the campaign, and text to search."""
    with engine.connect() as connection:
        job = connection.execute(
            text(
                "SELECT id FROM broadcast_jobs WHERE campaign = :c AND status = 'sent' "
                "ORDER BY id DESC LIMIT 1"
            ),
            {"c": CAMPAIGN},
        ).scalar_one()
    return {"job": job}


@dataclass
class Timing:
    first: float
    p50: float
    p95: float
    size: int


def timed(client: httpx.Client, url: str, repeat: int) -> Timing:
    started = time.perf_counter()
    answer = client.get(url)  # cold: templates, plans, caches (the overview: the first read)
    first = (time.perf_counter() - started) * 1000
    assert answer.status_code == 200, f"GET {url}: {answer.status_code} {answer.text[:300]}"
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, f"GET {url}: {answer.status_code}"
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return Timing(first, statistics.median(times), p95, len(answer.content))


def pages(client: httpx.Client, engine: Engine) -> dict[str, str]:
    """The URLs timed, by label."""
    job = pick(engine)["job"]
    first = f"/campaigns/{CAMPAIGN}"
    later = later_page(client, first, 5)
    # Half way down the campaign: the cursor of page 6 with a middle id in it.
    deep = re.sub(r"after=\d+", f"after={job // 2}", later)
    return {
        "/healthz (noise floor)": "/healthz",
        "overview": "/",
        "overview partial": "/partials/overview",
        "campaign, page 1": first,
        "campaign, page 6 (cursor)": later,
        "campaign, half way (cursor)": deep,
        "campaign ?status=failed": f"{first}?status=failed",
        "campaign ?corp=corp-2&status=sent": f"{first}?corp=corp-2&status=sent",
        "campaign ?q=dedupe key": f"{first}?q=bench-{job}",
        "campaign ?q=text": f"{first}?q=编号{job}",
        "campaign progress partial": f"/partials/campaigns/{CAMPAIGN}/progress",
        "job": f"/jobs/{job}",
        "unknown inbox": "/unknown",
    }


def measure(
    kind: str, sizes: dict[str, int], step_s: float, repeat: int, keep: bool = False
) -> list[dict[str, Any]]:
    """Each size on a fresh database and a fresh `broadcaster web`, the same pages; each
    database removed after (the big one kept with `keep`, for EXPLAIN)."""
    rows: dict[str, dict[str, Any]] = {}
    for label, size in sizes.items():
        db, broker = fresh_database(kind, name=DB_NAME), redis_url()
        engine = make_engine(db)
        token = TokenStore(engine).create("bench", Scope.READ)
        started = time.perf_counter()
        fill(engine, size, step_s)
        print(f"{kind}: {size:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
        if keep and label == "big":
            print(f"{kind}: kept at {make_url(db).render_as_string(hide_password=True)}")
        process, base = start_web(db, broker)
        try:
            client = logged_in(base, token)
            counted = counts_ready(client)
            print(f"{kind}: the overview's campaign counts ready {counted:.1f} s after login")
            for name, url in pages(client, engine).items():
                got = timed(client, url, repeat)
                row = rows.setdefault(name, {"db": kind, "page": name})
                row[f"{label} first"] = got.first
                row[f"{label} p50"] = got.p50
                row[f"{label} p95"] = got.p95
                row[f"{label} KB"] = got.size / 1024
                row[f"{label} url"] = url
            client.close()
        finally:
            stop(process)
            engine.dispose()
            if not keep or label != "big":
                drop(db)
    for row in rows.values():
        row["big ÷ small"] = row["big p50"] / row["small p50"]
    return list(rows.values())


def drop(db: str) -> None:
    """Remove a benchmark database: the SQLite file's temporary folder, or the PostgreSQL
    database (a million rows take ~0.5 GB either way)."""
    url = make_url(db)
    if url.get_backend_name() == "sqlite":
        folder = Path(url.database or "").parent
        if folder.name.startswith("broadcaster-bench-"):
            shutil.rmtree(folder, ignore_errors=True)
        return
    base = os.environ.get("BENCH_PG_URL") or find_postgres().url
    assert base is not None
    admin = make_engine(base)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {url.database} WITH (FORCE)"))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rows", type=int, default=None, help="the big table's rows")
    parser.add_argument(
        "--keep", action="store_true", help="keep the big database (printed) for EXPLAIN"
    )
    args = parser.parse_args()
    small, big, repeat = (2_000, 50_000, 10) if args.quick else (10_000, 1_000_000, 30)
    big = args.rows or big
    step_s = WEEK_S / big  # the big table spans a week
    kinds = ["postgresql", "sqlite"] if args.db == "both" else [args.db]
    rows = []
    for kind in kinds:
        rows += measure(kind, {"small": small, "big": big}, step_s, repeat, args.keep)
    print(f"\nms per GET, {repeat} requests each (p50, p95); small = {small:,} rows, big = {big:,}")
    print(
        table(
            rows,
            ["db", "page", "small p50", "big first", "big p50", "big p95", "big ÷ small", "big KB"],
        )
    )
    for kind in kinds:
        worst = max(
            (r for r in rows if r["db"] == kind and "noise" not in r["page"]),
            key=lambda r: r["big p50"],
        )
        print(
            f"{kind}: slowest page at {big:,} rows: {worst['page']} {worst['big p50']:.1f} ms "
            f"({worst['big url']})"
        )


if __name__ == "__main__":
    main()
