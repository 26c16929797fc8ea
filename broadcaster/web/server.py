"""Serving the app with uvicorn, stopped like every other broadcaster process.

uvicorn re-raises SIGTERM after its graceful shutdown, so the process would end "killed by
signal 15"; here SIGTERM and SIGINT go through `broadcaster.stopping` (a second one forces
the exit), and a graceful stop exits 0 like the scheduler and the workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from broadcaster.stopping import on_stop_signal


class Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        on_stop_signal(self.stop)
        yield

    def stop(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def serve(app: FastAPI, *, host: str, port: int, log_level: str) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
        access_log=False,  # the app writes its own (RequestMetrics), as JSON like the rest
    )
    Server(config).run()
