"""PostgreSQL LISTEN/NOTIFY: wake the scheduler the moment a row becomes `scheduled`.

The first migration's trigger sends one notification per statement that leaves a row
`scheduled` (a producer's INSERT, a worker's reschedule). Without it the scheduler would
find such rows only at its next poll; with it, rows inserted already due are claimed
within milliseconds. Losing the connection only costs that: polling carries on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import structlog
from sqlalchemy import Engine

log = structlog.get_logger("broadcaster.scheduler")
CHANNEL = "broadcast_jobs_due"


class DueListener(threading.Thread):
    def __init__(self, engine: Engine, on_due: Callable[[], None], stop: threading.Event):
        super().__init__(name="due-listener", daemon=True)
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_due = on_due
        self._stop = stop
        self.listening = threading.Event()

    def run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self._listen()
                delay = 1.0
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("listen_lost", error=str(exc).splitlines()[0], retry_in_s=delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _listen(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            self._on_due()  # rows may have come in while we were not listening
            while not self._stop.is_set():
                for _ in connection.notifies(timeout=1.0):
                    self._on_due()
