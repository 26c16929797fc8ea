"""`broadcaster scheduler`: the claiming loop on APScheduler.

Four jobs run on a BackgroundScheduler, while the calling thread waits on a stop Event:
`claim` (tick), `sweep` (lease recovery), `reconcile` (settle `unknown` jobs and
follow sent ones' delivery from the vendor's list, `broadcaster/reconcile/`) and
`schedules` (turn recurring schedules' occurrences into jobs, `broadcaster/campaigns/`). The claim
job re-arms itself after each run for the moment the next row falls due, capped by
SCHEDULER_POLL_INTERVAL_S; on PostgreSQL a LISTEN thread pulls it forward to now.

APScheduler's defaults would drop work silently (`misfire_grace_time=1` skips a run that
starts over a second late, e.g. after a GC pause or a slow database; `max_instances=1`
skips a wake-up that arrives during a run), so misfires always run and a wake-up during
a tick is remembered and honoured when the tick ends.
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


class _WakeLatch:
    """Remembers a wake-up that arrives while a tick runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = False
        self._pending = False

    def begin(self) -> None:
        with self._lock:
            self._running, self._pending = True, False

    def end(self) -> bool:
        """Finish a tick; True if a wake-up came in during it."""
        with self._lock:
            self._running = False
            return self._pending

    def request(self) -> bool:
        """Note a wake-up; True if nothing is running and the caller should wake the loop."""
        with self._lock:
            if self._running:
                self._pending = True
                return False
            return True


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
        self.latch = _WakeLatch()
        self.aps = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        settings = service.settings
        # `claim` re-arms itself after every run; its own interval is only a backstop, kept
        # long so it never fires into a running tick (APScheduler would skip that run).
        self.aps.add_job(
            self._claim,
            "interval",
            id="claim",
            seconds=max(30.0, 10 * settings.scheduler_poll_interval_s),
            next_run_time=datetime.now(UTC),
        )
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
        """Run a tick now (called by the LISTEN thread)."""
        if self.latch.request() and self.aps.running:
            self.aps.modify_job("claim", next_run_time=datetime.now(UTC))

    def _claim(self) -> None:
        self.latch.begin()
        report = TickReport()
        started = time.perf_counter()
        try:
            report = self.service.tick()
            self.metrics.tick(report, time.perf_counter() - started)
        except BroadcasterError as exc:
            self.metrics.tick_failed(time.perf_counter() - started)
            log.error("tick_failed", error=str(exc))
        finally:
            woken = self.latch.end()
            now = utcnow()
            wake_at = now if woken else self.service.next_wakeup(report, now)
            if self.aps.running:
                self.aps.modify_job("claim", next_run_time=wake_at.replace(tzinfo=UTC))

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
        log.info("scheduler_started")
        self.stop.wait()
        self.aps.shutdown(wait=True)
        log.info("scheduler_stopped")

    def shutdown(self, *_args: object) -> None:
        self.stop.set()


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
