"""List reads per 1000 tracked jobs: what one reconcile pass costs the vendor's list API
(30 missions a page) for N sent jobs, against the naive design of one list read per job,
in the same run; with and without other apps' missions in the same list.

    .venv/bin/python -m bench.reconcile [--quick] [--jobs N] [--noise 0.5] [--db postgresql]

For each noise level, on a fresh database (a temp SQLite file, or PostgreSQL
`broadcaster_bench_reconcile`), a fresh sandbox (over HTTP, quota lifted, `--latency-ms` a
call) and Redis DB 14 (flushed; BENCH_REDIS_URL names the server):
1. N jobs are scheduled, claimed and sent through the worker's own body (`Sender`, 8
   threads), while another app of the same corp creates `noise` × N missions at the same
   times over the sandbox's create endpoint (other names);
2. the reconciler as the scheduler builds it (`Bootstrap.reconciler`, wall clock as-is)
   runs a pass while every mission still waits for its staff (`confirm_after_s` 1 h):
   list reads at the sandbox, wall time, `mission found`: the share of jobs holding the
   mission id the sandbox created for them;
3. the naive design in the same run: for each tracked job, one list read (page one of a
   window of its call's second ± 1 s, through the same quota); `mission found` is the
   share whose mission was on that page (the rest would need more pages: N reads is the
   naive design's floor); then the pass and the naive reads once more (A B A B);
4. the sandbox's staff confirm everything (`confirm_after_s` 0): one pass reads the
   missions final, and the next one reads nothing (final missions leave tracking).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any

import httpx
import redis
from sqlalchemy import text

from bench.common import fresh_database, table
from broadcaster import schedule_many
from broadcaster.bootstrap import Bootstrap
from broadcaster.logs import configure_logging
from broadcaster.ops.devservices import find_redis
from broadcaster.settings import load_settings
from broadcaster.timeutil import utcnow
from broadcaster.vendor.missions import MAX_PAGE_SIZE, RESULT_API
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer
from broadcaster.vendor.sandbox.missions import picked
from worker.sender import Sender

CORP = "corp-a"
REDIS_DB = 14
"""Not the other benches' DB 5 (nor the tests' 9): this bench can run beside them."""
PG_DATABASE = "broadcaster_bench_reconcile"
"""Nor their PostgreSQL database, which each of them drops when it starts."""
THREADS = 8


def body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "staff_ext_id_list": ["s-1", "s-2"],
        "group_ext_id_list": ["g-1", "g-2", "g-3"],
        "create_staff_ext_id": "s-1",
        "text": f"{name}: 今晚八点开抢",
    }


def bench_redis_url() -> str:
    url = os.environ.get("BENCH_REDIS_URL") or find_redis().url
    assert url
    if url.startswith("redis://"):
        url = url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


class Run:
    """One fresh database, sandbox and Redis DB; the worker's body and the reconciler."""

    def __init__(self, kind: str, latency_ms: float) -> None:
        self.sandbox = SandboxServer(
            SandboxConfig(
                per_minute=10**6,
                per_hour=10**8,
                max_in_flight=1000,
                latency_ms=latency_ms,
                confirm_after_s=3600.0,
            )
        ).start()
        self.settings = load_settings(
            _env_file=None,
            database_url=fresh_database(kind, PG_DATABASE),
            redis_url=bench_redis_url(),
            weiban_base_url=self.sandbox.url,
            weiban_corp_id=CORP,
            weiban_secret="sandbox-secret",
            weiban_quota_per_minute=10**6,
            weiban_quota_per_hour=10**8,
            weiban_max_in_flight=THREADS * 2,
        )
        self.boot = Bootstrap(self.settings)
        self.store = self.boot.store
        self.sender = Sender(self.store, self.boot.quota, self.boot.vendor, self.settings)

    def close(self) -> None:
        self.sandbox.stop()
        self.boot.engine.dispose()

    # ------------------------------------------------------------ sending
    def send(self, jobs: int, noise: float) -> float:
        """N jobs through the worker's body; `noise` × N other missions interleaved."""
        ids = schedule_many(
            [{"payload": body(f"bench-{i}"), "corp_id": CORP} for i in range(jobs)],
            store=self.store,
        ).job_ids
        claimed = [job.id for job in self.store.claim_due(utcnow(), jobs, 600).claimed]
        assert sorted(claimed) == sorted(ids), "every job claimed"
        other = httpx.Client(base_url=self.sandbox.url, timeout=10)
        token = other.post(
            "/open-api/access_token/get", json={"corp_id": CORP, "secret": "sandbox-secret"}
        ).json()["access_token"]

        def other_app(number: int) -> None:
            answer = other.post(
                "/open-api/customer_group_msg/add",
                params={"access_token": token},
                json=body(f"other-app-{number}"),
            ).json()
            assert answer["errcode"] == 0, answer

        tasks: list[Callable[[], object]] = []
        for index, job_id in enumerate(claimed, start=1):
            tasks.append(partial(self.sender.send, job_id))
            for _ in range(_noise_count(index, noise)):
                tasks.append(partial(other_app, len(tasks)))
        started = time.perf_counter()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda task: task(), tasks))
        other.close()
        return time.perf_counter() - started

    def statuses(self) -> dict[str, int]:
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT status, COUNT(*) FROM broadcast_jobs GROUP BY status")
            ).all()
        return {str(status): int(count) for status, count in rows}

    def delivery(self) -> dict[str, int]:
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT delivery_status, COUNT(*) FROM broadcast_jobs GROUP BY 1")
            ).all()
        return {str(status): int(count) for status, count in rows}

    def right_mission_share(self, jobs: int) -> float:
        """Jobs whose `vendor_mission_id` is the mission the sandbox created for them."""
        created = {m["body"]["name"]: m["mission_id"] for m in self.sandbox.state.created_list()}
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT payload, vendor_mission_id FROM broadcast_jobs")
            ).all()
        right = sum(
            mission is not None and created.get(json.loads(payload)["name"]) == mission
            for payload, mission in rows
        )
        return right / jobs

    # ------------------------------------------------------------ reading
    def list_calls(self) -> int:
        return int(self.sandbox.state.stats()["list_calls"])

    def missions(self) -> int:
        return int(self.sandbox.state.stats()["missions"])

    def ours(self, label: str, jobs: int) -> dict[str, Any]:
        """One pass of the reconciler the scheduler runs."""
        before, started = self.list_calls(), time.perf_counter()
        report = self.boot.reconciler.run_pass()
        elapsed, reads = time.perf_counter() - started, self.list_calls() - before
        assert report.skipped is None, report.skipped
        assert reads == report.pages, (reads, report.pages)
        errors = [corp.list_error for corp in report.corps if corp.list_error]
        assert not errors, errors
        tracked = sum(corp.tracked for corp in report.corps)
        return {
            "design": "broadcaster",
            "pass": label,
            "tracked": tracked,
            "missions in list": self.missions(),
            "list reads": reads,
            "reads/1000 jobs": reads * 1000 / jobs,
            "wall s": elapsed,
            "mission found": self.right_mission_share(jobs),
        }

    def naive(self, jobs: int) -> dict[str, Any]:
        """One read per tracked job: page one of its call's second ± 1 s, through the same
        read quota; `mission found` is the share whose mission was on that page."""
        open_jobs = self.store.sent_to_track(utcnow(), self.settings.delivery_track_s, 10**6)
        second = timedelta(seconds=1)
        before, started, found = self.list_calls(), time.perf_counter(), 0
        for job in open_jobs:
            slot = self.boot.read_quota.acquire(CORP, RESULT_API, max_wait_s=5)
            try:
                page = self.boot.vendor.list_missions(
                    CORP,
                    job.call_started_at - second,
                    job.call_started_at + second,
                    limit=MAX_PAGE_SIZE,
                )
            finally:
                self.boot.read_quota.release(slot)
            name = json.loads(job.payload)["name"]
            found += any(mission.name == name for mission in page.missions)
        elapsed, reads = time.perf_counter() - started, self.list_calls() - before
        return {
            "design": "naive: 1 read a job",
            "pass": "missions waiting",
            "tracked": len(open_jobs),
            "missions in list": self.missions(),
            "list reads": reads,
            "reads/1000 jobs": reads * 1000 / jobs,
            "wall s": elapsed,
            "mission found": found / jobs,
        }


def _noise_count(index: int, noise: float) -> int:
    """Other apps' missions to create beside the index-th job (1-based): floor(K·noise)
    in all after K jobs, spread evenly."""
    whole, part = divmod(noise, 1.0)
    return int(whole) + picked(index, part)


def measure(kind: str, jobs: int, noise: float, latency_ms: float) -> list[dict[str, Any]]:
    run = Run(kind, latency_ms)
    try:
        send_s = run.send(jobs, noise)
        statuses = run.statuses()
        missions = run.missions()
        print(
            f"  {kind}, noise {noise:g}: {jobs} jobs sent in {send_s:.1f} s beside "
            f"{missions - jobs} other missions; job statuses {statuses}",
            flush=True,
        )
        assert statuses == {"sent": jobs}, statuses
        rows = [run.ours("first (missions waiting)", jobs), run.naive(jobs)]
        rows += [run.ours("again (nothing new)", jobs), run.naive(jobs)]
        run.sandbox.state.config.confirm_after_s = 0.0  # every staff member confirms
        rows.append(run.ours("missions final", jobs))
        delivery = run.delivery()
        assert delivery == {"completed": jobs}, delivery
        rows.append(run.ours("after final", jobs))
    finally:
        run.close()
    for row in rows:
        row["db"], row["noise"] = kind, f"{noise:g}"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 jobs (CI)")
    parser.add_argument("--jobs", type=int, default=None, help="sent jobs (default 1000)")
    parser.add_argument(
        "--noise", type=float, default=0.5, help="other apps' missions per job (0: none)"
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server to create the bench database on (implies --db postgresql)",
    )
    parser.add_argument("--latency-ms", type=float, default=5.0, help="the sandbox's, a call")
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    if args.database_url:
        os.environ["BENCH_PG_URL"] = args.database_url
        args.db = "postgresql"
    jobs = args.jobs or (300 if args.quick else 1000)
    levels = [0.0, args.noise] if args.noise > 0 else [0.0]
    print(
        f"reconcile: {jobs} sent jobs on {args.db}, sandbox {args.latency_ms:g} ms a call, "
        f"noise {' and '.join(f'{n:g}' for n in levels)}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for noise in levels:
        rows += measure(args.db, jobs, noise, args.latency_ms)
    columns = [
        "noise",
        "design",
        "pass",
        "tracked",
        "missions in list",
        "list reads",
        "reads/1000 jobs",
        "wall s",
        "mission found",
    ]
    print(table(rows, columns))
    parts = []
    for noise in levels:
        level = [r for r in rows if r["noise"] == f"{noise:g}"]
        ours = [r for r in level if r["design"] == "broadcaster"]
        naive = [r for r in level if r["design"] != "broadcaster"]
        first, final = ours[0], ours[-1]
        ratio = sum(r["list reads"] for r in naive) / sum(r["list reads"] for r in ours[:2])
        floor = -(-first["missions in list"] // MAX_PAGE_SIZE)
        parts.append(
            f"noise {noise:g}: {first['reads/1000 jobs']:.1f} list reads per 1000 tracked jobs "
            f"({first['list reads']} for {first['missions in list']} missions, floor {floor}), "
            f"naive ÷ broadcaster = {ratio:.1f}×, right mission id {first['mission found']:.0%}"
            f", pass {first['wall s']:.2f} s (naive {min(r['wall s'] for r in naive):.1f} s), "
            f"{final['list reads']} reads once final"
        )
    print("; ".join(parts) + " (targets: the floor ⌈missions ÷ 30⌉, 0 once final)")


if __name__ == "__main__":
    main()
