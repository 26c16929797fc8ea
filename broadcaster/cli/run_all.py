"""`broadcaster run`: the scheduler in this process, the worker processes as its children.

The one place that wires both apps together (with the demo): the worker package supervises
worker processes and the scheduler package runs the scheduler, and neither imports the
other (the import rules in pyproject.toml say so).
"""

from __future__ import annotations

import threading

from broadcaster.errors import SettingsError
from broadcaster.ops.readiness import Stopped
from broadcaster.redis_conn import stop_embedded_redis
from broadcaster.settings import Settings
from broadcaster.stopping import on_stop_signal
from scheduler.runner import build_runner
from worker.supervisor import Supervisor, preflight


def run_all(settings: Settings, *, processes: int, threads: int, prefetch: int) -> None:
    """Scheduler in this process, workers in children. Raises SettingsError (one line,
    exit 1) when the configuration is unusable: before anything starts, or when a worker
    process stops on it (then everything stops)."""
    preflight(settings)
    supervisor = Supervisor(settings, processes=processes, threads=threads, prefetch=prefetch)
    stop = threading.Event()
    runner = None
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
        runner = build_runner(supervisor.settings, stop)  # with the Redis the workers use
        if not stop.is_set():
            runner.run()
    except Stopped:
        pass
    finally:
        supervisor.stop()
        stop_embedded_redis()
    if failure:
        raise failure[0]
