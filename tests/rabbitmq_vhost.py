"""A RabbitMQ vhost of the test's own, so a test run never touches another run's queues:
created with `rabbitmqctl` (guest given every permission on it) and deleted after.

The machine's RabbitMQ is found at BROADCASTER_TEST_AMQP_URL (default
amqp://guest:guest@127.0.0.1:5672/); where none answers, or `rabbitmqctl` is missing,
`unavailable()` says why and the tests skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

BASE_URL = os.environ.get("BROADCASTER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def unavailable() -> str | None:
    """Why the RabbitMQ tests cannot run here, or None."""
    parts = urlsplit(BASE_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            pass
    except OSError as exc:
        where = f"{parts.hostname}:{parts.port or 5672}"
        return f"no RabbitMQ at {where} ({exc}); start it with `rabbitmq-server -detached`"
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not on PATH (needed to create a test vhost)"
    return None


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def vhost(prefix: str = "broadcaster_test", *, own_user: bool = False) -> Iterator[str]:
    """BROKER_URL for a fresh vhost, deleted (with its queues) on exit. `own_user`: a user
    of its own with a random password (so a test can look for the password in logs)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    base = urlsplit(BASE_URL)
    user, password = base.username or "guest", base.password or "guest"
    rabbitmqctl("add_vhost", name)
    try:
        if own_user:
            user, password = name, f"pw-{uuid.uuid4().hex}"
            rabbitmqctl("add_user", user, password)
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        where = f"{base.hostname}:{base.port or 5672}"
        yield f"{base.scheme}://{user}:{password}@{where}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)
        if own_user:
            rabbitmqctl("delete_user", user)


def restart_app(down_s: float, while_down: Callable[[], object] = lambda: None) -> float:
    """Stop the RabbitMQ application (the node stays up, durable queues and persistent
    messages are kept), call `while_down`, wait `down_s` more, then start it again, always;
    wait until it accepts connections. Returns the seconds it was unreachable."""
    started = time.monotonic()
    try:
        rabbitmqctl("stop_app")
        while_down()
        time.sleep(down_s)
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    return time.monotonic() - started
