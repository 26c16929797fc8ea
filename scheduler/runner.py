"""`broadcaster scheduler`: the claiming loop, and APScheduler for the periodic jobs.

The claim loop runs on a thread of its own: it ticks, then waits on an Event until the
next row falls due, capped by SCHEDULER_POLL_INTERVAL_S; on PostgreSQL a LISTEN thread
sets the Event to claim now, and a wake-up that arrives during a tick makes the next tick
start at once. Three jobs run on a BackgroundScheduler: `sweep` (lease recovery),
`reconcile` (settle `unknown` jobs and follow sent ones' delivery from the vendor's list,
`broadcaster/reconcile/`) and `schedules` (turn recurring schedules' occurrences into jobs,
`broadcaster/campaigns/`); the calling thread waits on a stop Event.

The claim was an APScheduler job re-armed from inside its own run (`modify_job`): when the
run ended before APScheduler's loop had stored the job's next interval time (a fast tick
on a loaded machine), that store overwrote the re-arm and the claim slept the 30 s
backstop interval (seen in `bench.lateness`: every row 27–30 s late in some runs).

APScheduler's defaults would drop work silently (`misfire_grace_time=1` skips a run that
starts over a second late, e.g. after a GC pause or a slow database; `max_instances=1`
skips a wake-up that arrives during a run), so misfires always run.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import redis
import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from broadcaster.bootstrap import Bootstrap
from broadcaster.campaigns.controls import CampaignControls
from broadcaster.campaigns.store import ScheduleStore
from broadcaster.db import is_postgresql
from broadcaster.errors import BroadcasterError
from broadcaster.ops.readiness import Stopped
from broadcaster.process_metrics import SchedulerMetrics, serving
from broadcaster.reconcile.reconciler import Reconciler
from broadcaster.redis_conn import stop_embedded_redis
from broadcaster.settings import Settings
from broadcaster.stopping import on_stop_signal
from broadcaster.timeutil import utcnow
from scheduler.notify import DueListener
from scheduler.service import Admission, SchedulerService, TickReport

log = structlog.get_logger("broadcaster.scheduler")


class SchedulerRunner:
    def __init__(
        self,
        service: SchedulerService,
        *,
        listen_engine: Engine | None = None,
        reconciler: Reconciler | None = None,
        schedules: ScheduleStore | None = None,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self.service = service
        self.metrics = metrics or SchedulerMetrics()
        self.reconciler = reconciler
        self.schedules = schedules
        self.stop = threading.Event()
        self._woken = threading.Event()
        self.ticks = 0
        """Ticks finished (tests wait on it)."""
        self._claimer = threading.Thread(target=self._claim_loop, name="claim", daemon=True)
        self.aps = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        settings = service.settings
        self.aps.add_job(
            self._sweep,
            "interval",
            id="sweep",
            seconds=settings.scheduler_sweep_interval_s,
            next_run_time=datetime.now(UTC),
        )
        if reconciler is not None:
            self.aps.add_job(
                self._reconcile,
                "interval",
                id="reconcile",
                seconds=settings.reconcile_interval_s,
                next_run_time=datetime.now(UTC),
            )
        if schedules is not None:
            self.aps.add_job(
                self._materialise,
                "interval",
                id="schedules",
                seconds=settings.schedules_interval_s,
                next_run_time=datetime.now(UTC),
            )
        self.listener = (
            DueListener(listen_engine, self.wake, self.stop) if listen_engine is not None else None
        )

    def wake(self) -> None:
        """Claim now (called by the LISTEN thread); during a tick: again once it ends."""
        self._woken.set()

    def _claim_loop(self) -> None:
        while not self.stop.is_set():
            self._woken.clear()  # a wake-up from here on is for the next tick
            wake_at = self._claim()
            delay = (wake_at - utcnow()).total_seconds()
            if delay > 0 and not self.stop.is_set():
                self._woken.wait(delay)

    def _claim(self) -> datetime:
        """One tick; returns when the next should start."""
        report = TickReport()
        started = time.perf_counter()
        try:
            report = self.service.tick()
            self.metrics.tick(report, time.perf_counter() - started)
        except BroadcasterError as exc:
            self.metrics.tick_failed(time.perf_counter() - started)
            log.error("tick_failed", error=str(exc))
        except Exception as exc:  # the loop must outlive a bug in one tick
            self.metrics.tick_failed(time.perf_counter() - started)
            log.error("tick_failed", error=repr(exc))
        finally:
            self.ticks += 1
        return self.service.next_wakeup(report, utcnow())

    def _sweep(self) -> None:
        try:
            self.service.sweep()
        except BroadcasterError as exc:
            log.error("sweep_failed", error=str(exc))

    def _reconcile(self) -> None:
        assert self.reconciler is not None
        try:
            self.metrics.reconcile_pass(self.reconciler.run_pass())
        except (BroadcasterError, redis.RedisError) as exc:
            self.metrics.reconcile_failed()
            log.error("reconcile_failed", error=str(exc))

    def _materialise(self) -> None:
        assert self.schedules is not None
        settings = self.service.settings
        try:
            report = self.schedules.materialise(
                utcnow(),
                # Occurrences are made ahead, so each is claimed on time like any row.
                lookahead_s=2 * settings.schedules_interval_s,
                grace_s=settings.schedule_misfire_grace_s,
            )
        except BroadcasterError as exc:
            log.error("schedules_failed", error=str(exc))
            return
        if report.created or report.late:
            log.info("schedules_materialised", created=report.created, late=report.late)
            if report.late:
                self.wake()  # due already: claim them now

    def run(self) -> None:
        """Block until `shutdown()` (SIGTERM/SIGINT). A stop requested before or while
        starting is honoured too: it is an Event, not a call into a scheduler that may not
        be running yet."""
        if self.listener:
            self.listener.start()
        self.aps.start()
        self._claimer.start()
        log.info("scheduler_started")
        self.stop.wait()
        self._woken.set()
        self._claimer.join()
        self.aps.shutdown(wait=True)
        log.info("scheduler_stopped")

    def shutdown(self, *_args: object) -> None:
        self.stop.set()
        self._woken.set()


def build_runner(
    settings: Settings, stop: threading.Event, metrics: SchedulerMetrics | None = None
) -> SchedulerRunner:
    """Wire the scheduler from settings, waiting for the database, Redis and the broker
    (RabbitMQ when BROKER_URL is set) to be ready (raises `Stopped` if told to stop
    meanwhile)."""
    boot = Bootstrap(settings, wait=stop)
    store = boot.store
    store.use_campaign_controls(CampaignControls.from_settings(settings, boot.corps))
    service = SchedulerService(
        store,
        boot.dispatcher,
        settings,
        admission=Admission(settings, boot.corps, boot.quota),
    )
    return SchedulerRunner(
        service,
        listen_engine=boot.engine if is_postgresql(boot.engine) else None,
        reconciler=boot.reconciler,
        schedules=ScheduleStore(boot.engine, default_corp=settings.weiban_corp_id),
        metrics=metrics,
    )


def run_scheduler(
    settings: Settings, *, metrics_port: int | None = None, metrics_host: str = "127.0.0.1"
) -> None:
    stop = threading.Event()
    runner: SchedulerRunner | None = None

    def _on_signal(*_args: object) -> None:
        stop.set()
        if runner is not None:
            runner.shutdown()

    on_stop_signal(_on_signal)
    metrics = SchedulerMetrics()
    try:
        with serving(metrics.registry, metrics_port, metrics_host):
            runner = build_runner(settings, stop, metrics)
            if stop.is_set():
                return
            runner.run()
    except Stopped:
        return
    finally:
        stop_embedded_redis()
