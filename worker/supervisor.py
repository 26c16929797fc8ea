"""`broadcaster worker` and `broadcaster run`: processes that live as long as the service.

The supervisor checks the configuration (settings, the corps file) before it starts
anything, then starts N worker processes (each a Dramatiq Worker with M threads). It
restarts one that dies, waiting longer each time while it keeps dying soon after its start
(a `worker_died` line each time); one that stops on its configuration stops the command
with that one line and exit 1, as restarting cannot help. On SIGTERM/SIGINT it passes the
signal on and waits for calls in flight to finish. `run` (broadcaster/cli/run_all.py)
adds the scheduler in the supervisor's own process: one command for one machine; this
package never imports the scheduler. The embedded Redis, when REDIS_URL is unset, is
started here, before the children, so they all join it.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import SimpleQueue

import structlog
from prometheus_client import CollectorRegistry

from broadcaster.corps import CorpDirectory
from broadcaster.errors import BroadcasterError, SettingsError
from broadcaster.logs import configure_logging
from broadcaster.ops.readiness import Stopped
from broadcaster.process_metrics import (
    MetricsServer,
    mark_process_dead,
    multiprocess_registry,
    prepare_multiprocess_dir,
    serve,
)
from broadcaster.quota.sizing import sized_threads
from broadcaster.redis_conn import resolve_redis_url, stop_embedded_redis
from broadcaster.settings import Settings, load_settings
from broadcaster.stopping import on_stop_signal

log = structlog.get_logger("broadcaster.worker")
RESTART_DELAY_S = 2.0
"""Pause before restarting a worker process that died after running a while."""
MAX_RESTART_DELAY_S = 60.0
"""The pause doubles, up to this, while a process keeps dying within FAST_DEATH_S."""
FAST_DEATH_S = 10.0
EXIT_CONFIG = 78
"""A worker process's exit code for "the configuration is unusable" (sysexits EX_CONFIG):
restarting it cannot help, so the supervisor stops and says why."""


def preflight(settings: Settings) -> None:
    """What a worker process would refuse at start, checked here once before any starts
    (settings are loaded already): the corps file. Raises SettingsError."""
    CorpDirectory(settings)


def worker_process_main(
    threads: int,
    prefetch: int,
    errors: SimpleQueue | None = None,
    settings: Settings | None = None,
) -> None:
    """Entry point of one worker process.

    `settings` are the supervisor's, handed over explicitly (the Redis URL resolved, so
    every process joins the same embedded server); without them, they are loaded here.
    A configuration error ends it with EXIT_CONFIG and its one-line message handed to the
    supervisor through `errors` (the supervisor prints it, once); another broadcaster
    error at start is logged in one line and ends it with 1 (the supervisor restarts it).
    """
    from worker.app import build_worker_app

    stop = threading.Event()
    on_stop_signal(stop.set)
    try:
        settings = settings or load_settings()
        configure_logging(settings.log_level, settings.log_format)
        app = build_worker_app(settings, threads=threads, prefetch=prefetch, stop=stop)
    except Stopped:
        return
    except SettingsError as exc:
        if errors is not None:
            errors.put(str(exc))
        sys.exit(EXIT_CONFIG)
    except BroadcasterError as exc:
        log.error("worker_start_failed", pid=os.getpid(), error=str(exc))
        sys.exit(1)
    app.start()
    log.info(
        "worker_started",
        pid=os.getpid(),
        threads=threads,
        prefetch=app.worker.queue_prefetch,
        broker_id=app.broker_id,
    )
    stop.wait()
    log.info("worker_stopping", grace_s=settings.worker_shutdown_s)
    app.stop(settings.worker_shutdown_s)
    log.info("worker_stopped")


@dataclass
class _Slot:
    """One worker process and its restart state."""

    process: BaseProcess
    started_at: float
    delay_s: float = RESTART_DELAY_S
    restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        processes: int,
        threads: int,
        prefetch: int = 0,
        target: Callable[..., None] = worker_process_main,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.metrics_port, self.metrics_host = metrics_port, metrics_host
        self.metrics_registry = metrics_registry  # `run`: the scheduler's, served alongside
        self.metrics_server: MetricsServer | None = None
        self.processes = processes
        self.threads = sized_threads(settings, processes, threads)
        if self.threads != threads:
            log.info("worker_threads_sized", threads=self.threads, processes=processes)
        self.prefetch = prefetch
        self.target = target
        self.stopping = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        self._errors: SimpleQueue = self._context.SimpleQueue()
        self.slots: list[_Slot] = []
        self.restart_delay_s = RESTART_DELAY_S
        self.max_restart_delay_s = MAX_RESTART_DELAY_S
        self.fast_death_s = FAST_DEATH_S

    @property
    def children(self) -> list[BaseProcess]:
        return [slot.process for slot in self.slots]

    def _spawn(self) -> BaseProcess:
        child = self._context.Process(
            target=self.target,
            args=(self.threads, self.prefetch, self._errors, self.settings),
            name="worker",
        )
        child.start()
        return child

    def start(self) -> None:
        # Metrics first (a taken port: nothing started yet); the children inherit the
        # directory their figures go to.
        if self.metrics_port is not None:
            registry = multiprocess_registry(prepare_multiprocess_dir(), self.metrics_registry)
            self.metrics_server = serve(registry, self.metrics_port, self.metrics_host)
        # Resolved once, here, and handed to the children with the rest of the settings,
        # so they all join the same Redis (the embedded one when REDIS_URL is unset).
        url = resolve_redis_url(self.settings)
        self.settings = self.settings.model_copy(update={"redis_url": url})
        now = time.monotonic()
        self.slots = [
            _Slot(self._spawn(), now, self.restart_delay_s) for _ in range(self.processes)
        ]

    def watch(self) -> None:
        """Restart children that die, until told to stop. A child that keeps dying soon
        after its start is restarted less and less often (one `worker_died` line each
        time, with the delay). One that died of a configuration error is not restarted:
        raises SettingsError with its message, for the command to print and exit 1."""
        while not self.stopping.wait(0.5):
            for slot in self.slots:
                if self.stopping.is_set():
                    return
                self._tend(slot)

    def _tend(self, slot: _Slot) -> None:
        now = time.monotonic()
        if slot.restart_at is not None:
            if now >= slot.restart_at:
                slot.process, slot.started_at, slot.restart_at = self._spawn(), now, None
            return
        child = slot.process
        if child.is_alive():
            return
        if child.exitcode == EXIT_CONFIG:
            raise SettingsError(self._config_error())
        mark_process_dead(child.pid)
        lived_s = now - slot.started_at
        if lived_s >= self.fast_death_s:
            slot.delay_s = self.restart_delay_s
        log.error(
            "worker_died",
            pid=child.pid,
            exitcode=child.exitcode,
            lived_s=round(lived_s, 1),
            restart_in_s=slot.delay_s,
        )
        slot.restart_at = now + slot.delay_s
        if lived_s < self.fast_death_s:  # dying at start: back off
            slot.delay_s = min(slot.delay_s * 2, self.max_restart_delay_s)

    def _config_error(self) -> str:
        if not self._errors.empty():
            return str(self._errors.get())
        return "a worker process stopped on a configuration error; see its log above"

    def stop(self) -> None:
        self.stopping.set()
        for child in self.children:
            if child.is_alive() and child.pid:
                child.terminate()  # SIGTERM: finish calls in flight, then exit
        deadline = time.monotonic() + self.settings.worker_shutdown_s + 5
        for child in self.children:
            child.join(max(0.1, deadline - time.monotonic()))
            if child.is_alive():
                log.error("worker_kill", pid=child.pid)
                child.kill()
        if self.metrics_server is not None:
            self.metrics_server.stop()


def run_workers(
    settings: Settings,
    *,
    processes: int,
    threads: int,
    prefetch: int,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Raises SettingsError (one line, exit 1) when the configuration is unusable: before
    any worker process starts, or when one stops on it."""
    preflight(settings)
    supervisor = Supervisor(
        settings,
        processes=processes,
        threads=threads,
        prefetch=prefetch,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )
    on_stop_signal(supervisor.stopping.set)
    try:
        supervisor.start()
        supervisor.watch()
    finally:
        supervisor.stop()
        stop_embedded_redis()
