"""`broadcaster worker` and `broadcaster run`: processes that live as long as the service.

The supervisor starts N worker processes (each a Dramatiq Worker with M threads),
restarts one that dies, and on SIGTERM/SIGINT passes the signal on and waits for calls in
flight to finish. `run` adds the scheduler in the supervisor's own process: one command
for one machine. The embedded Redis, when REDIS_URL is unset, is started here, before the
children, so they all join it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess

import structlog

from broadcaster.logs import configure_logging
from broadcaster.readiness import Stopped
from broadcaster.redis_conn import resolve_redis_url, stop_embedded_redis
from broadcaster.settings import Settings, load_settings

log = structlog.get_logger("broadcaster.worker")
RESTART_DELAY_S = 2.0


def worker_process_main(threads: int, prefetch: int) -> None:
    """Entry point of one worker process."""
    from worker.app import build_worker_app

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        app = build_worker_app(settings, threads=threads, prefetch=prefetch, stop=stop)
    except Stopped:
        return
    app.start()
    log.info("worker_started", pid=os.getpid(), threads=threads, prefetch=app.worker.queue_prefetch)
    stop.wait()
    log.info("worker_stopping", grace_s=settings.worker_shutdown_s)
    app.stop(settings.worker_shutdown_s)
    log.info("worker_stopped")


class Supervisor:
    def __init__(
        self, settings: Settings, *, processes: int, threads: int, prefetch: int = 0
    ) -> None:
        self.settings = settings
        self.processes = processes
        self.threads = threads
        self.prefetch = prefetch
        self.stopping = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        self.children: list[BaseProcess] = []

    def _spawn(self) -> BaseProcess:
        child = self._context.Process(
            target=worker_process_main, args=(self.threads, self.prefetch), name="worker"
        )
        child.start()
        return child

    def start(self) -> None:
        resolve_redis_url(self.settings)  # children inherit REDIS_URL
        self.children = [self._spawn() for _ in range(self.processes)]

    def watch(self) -> None:
        """Restart children that die, until told to stop."""
        while not self.stopping.wait(0.5):
            for index, child in enumerate(self.children):
                if not child.is_alive() and not self.stopping.is_set():
                    log.error(
                        "worker_died",
                        pid=child.pid,
                        exitcode=child.exitcode,
                        restart_in_s=RESTART_DELAY_S,
                    )
                    time.sleep(RESTART_DELAY_S)
                    self.children[index] = self._spawn()

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


def run_workers(settings: Settings, *, processes: int, threads: int, prefetch: int) -> None:
    supervisor = Supervisor(settings, processes=processes, threads=threads, prefetch=prefetch)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stopping.set())
    try:
        supervisor.start()
        supervisor.watch()
    finally:
        supervisor.stop()
        stop_embedded_redis()


def run_all(settings: Settings, *, processes: int, threads: int, prefetch: int) -> None:
    """Scheduler in this process, workers in children."""
    from scheduler.runner import build_runner

    supervisor = Supervisor(settings, processes=processes, threads=threads, prefetch=prefetch)
    stop = threading.Event()
    runner = None

    def _on_signal(*_args: object) -> None:
        stop.set()
        supervisor.stopping.set()
        if runner is not None:
            runner.shutdown()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    supervisor.start()
    watcher = threading.Thread(target=supervisor.watch, name="supervisor", daemon=True)
    watcher.start()
    try:
        runner = build_runner(settings, stop)
        if not stop.is_set():
            runner.run()
    except Stopped:
        pass
    finally:
        supervisor.stop()
        stop_embedded_redis()
