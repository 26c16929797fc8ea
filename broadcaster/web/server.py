"""Serving the app with uvicorn, stopped like every other broadcaster process.

uvicorn re-raises SIGTERM after its graceful shutdown, so the process would end "killed by
signal 15"; here SIGTERM and SIGINT go through `broadcaster.stopping` (a second one forces
the exit), and a graceful stop exits 0 like the scheduler and the workers.

`start_in_thread` serves it beside other work in one process (`broadcaster run --web`):
no signal handlers of its own there; the process's stop calls `EmbeddedServer.stop`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from broadcaster.errors import SettingsError
from broadcaster.stopping import on_stop_signal

GRACE_S = 10
"""Open requests get this long to finish when the server stops."""


class Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        on_stop_signal(self.stop)
        yield

    def stop(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def _config(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
        access_log=False,  # the app writes its own (RequestMetrics), as JSON like the rest
        timeout_graceful_shutdown=GRACE_S,
    )


def serve(app: FastAPI, *, host: str, port: int, log_level: str) -> None:
    Server(_config(app, host, port, log_level)).run()


class EmbeddedServer(Server):
    """The server in a thread of a process that handles its own signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    @property
    def port(self) -> int:
        return int(self.servers[0].sockets[0].getsockname()[1])


class Embedded:
    def __init__(self, server: EmbeddedServer, thread: threading.Thread) -> None:
        self.server, self.thread = server, thread

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        """Stop listening, let open requests finish (GRACE_S at most), and wait for it."""
        self.server.should_exit = True
        self.thread.join(GRACE_S + 5)


def start_in_thread(
    app: FastAPI, *, host: str, port: int, log_level: str, timeout_s: float = 30.0
) -> Embedded:
    """Serve `app` from a thread; return once it listens. Raises SettingsError when it
    cannot (the port taken, the address not this machine's): uvicorn ends on that."""
    server = EmbeddedServer(_config(app, host, port, log_level))
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise SettingsError(
                f"web: cannot listen on {host}:{port} (WEB_HOST, WEB_PORT); see the log above"
            )
        time.sleep(0.02)
    return Embedded(server, thread)
