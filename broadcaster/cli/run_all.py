"""`broadcaster run`: the scheduler in this process, the worker processes as its children,
and with `--web` the web app in a thread of this process (same settings, same Redis).

The one place that wires both apps together (with the demo): the worker package supervises
worker processes and the scheduler package runs the scheduler, and neither imports the
other (the import rules in pyproject.toml say so).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from broadcaster.bootstrap import Bootstrap
from broadcaster.errors import SettingsError
from broadcaster.ops.readiness import Stopped
from broadcaster.process_metrics import SchedulerMetrics
from broadcaster.redis_conn import stop_embedded_redis
from broadcaster.settings import Settings
from broadcaster.stopping import on_stop_signal
from scheduler.runner import build_runner
from worker.supervisor import Supervisor, preflight

if TYPE_CHECKING:
    from broadcaster.web.config import WebSettings
    from broadcaster.web.server import Embedded


def start_web(settings: Settings, web: WebSettings) -> Embedded:
    """The web app on its own Bootstrap (no waiting: /readyz says what is missing), served
    from a thread; raises SettingsError when it cannot listen."""
    from broadcaster.web.app import create_app
    from broadcaster.web.server import start_in_thread

    app = create_app(Bootstrap(settings), web)
    return start_in_thread(app, host=web.host, port=web.port, log_level=settings.log_level.lower())


def run_all(
    settings: Settings,
    *,
    processes: int,
    threads: int,
    prefetch: int,
    web: WebSettings | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Scheduler in this process, workers in children, the web app (when `web` is given)
    in a thread. Raises SettingsError (one line, exit 1) when the configuration is
    unusable: before anything starts, or when a worker process stops on it or the web
    app cannot listen (then everything stops). SIGTERM stops all three."""
    preflight(settings)
    metrics = SchedulerMetrics()  # served with the workers' on --metrics-port
    supervisor = Supervisor(
        settings,
        processes=processes,
        threads=threads,
        prefetch=prefetch,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        metrics_registry=metrics.registry,
    )
    stop = threading.Event()
    runner = None
    served: Embedded | None = None
    failure: list[SettingsError] = []

    def _on_signal(*_args: object) -> None:
        stop.set()
        supervisor.stopping.set()
        if runner is not None:
            runner.shutdown()

    def _watch() -> None:
        try:
            supervisor.watch()
        except SettingsError as exc:  # a worker stopped on its configuration: stop all
            failure.append(exc)
            _on_signal()

    on_stop_signal(_on_signal)
    supervisor.start()
    watcher = threading.Thread(target=_watch, name="supervisor", daemon=True)
    watcher.start()
    try:
        if web is not None:  # before the scheduler, which may wait for the database
            served = start_web(supervisor.settings, web)
        runner = build_runner(supervisor.settings, stop, metrics)  # with the Redis the workers use
        if not stop.is_set():
            runner.run()
    except Stopped:
        pass
    finally:
        if served is not None:
            served.stop()
        supervisor.stop()
        stop_embedded_redis()
    if failure:
        raise failure[0]
