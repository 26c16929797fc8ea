"""`broadcaster status` counts the worker threads alive against the corps' quota (issue 14):
real `broadcaster worker` processes beating in a real Redis, the sandbox vendor over HTTP,
and `status` run as an operator runs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker

from broadcaster.broker.liveness import Liveness, live_workers
from broadcaster.broker.messages import QUEUE_NAME
from tests.helpers import wait_until
from tests.system.harness import Service

SANDBOX_SECRET = "sandbox-secret"


def status(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", "status", *args],
        capture_output=True,
        text=True,
        env={**service.env, "COLUMNS": "400"},
        cwd=service.cwd,
        timeout=60,
    )


def workers(service: Service) -> dict[str, Any]:
    result = status(service, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout)["workers"])


def test_status_counts_the_live_workers_threads_against_the_quota(
    tmp_path: Path, sqlite_template: Path, redis_url: str, sandbox: Any
) -> None:
    """Two corps at 4 in flight need 8 slots; `worker -p 2 -t 3` runs 6: status says so
    with the fix, loses a killed process within the heartbeat timeout, and says none
    alive once the workers stop."""
    database = tmp_path / "jobs.db"
    shutil.copy(sqlite_template, database)
    corps_file = tmp_path / "corps.json"
    corps_file.write_text(json.dumps({"corp-b": {"secret": SANDBOX_SECRET}}))
    service = Service(
        f"sqlite:///{database}",
        redis_url,
        sandbox,
        WEIBAN_CORPS_FILE=str(corps_file),
        WORKER_THREADS="3",
        BROKER_HEARTBEAT_TIMEOUT_S="3",
    )
    client = redis.Redis.from_url(redis_url)
    supervisor = service.start("worker", "--processes", "2")
    try:
        wait_until(lambda: len(live_workers(client)) == 2, timeout=60, every=0.1)
        view = workers(service)
        assert view["threads"] == 6 and view["threads_needed"] == 8 and view["short"]
        assert view["line"] == (
            "workers: 2 process(es) x 3 thread(s) = 6 slot(s) < 2 corp(s) x 4 in flight = 8: "
            "run more worker processes (WORKER_PROCESSES, --processes) or WORKER_THREADS=4 "
            "(--threads 4)"
        )
        assert {w["threads"] for w in view["alive"]} == {3}
        shown = status(service).stdout
        assert "6 slot(s) < 2 corp(s) x 4 in flight = 8" in " ".join(shown.split())

        # A worker process killed: no longer counted once its beat expires (3 s here).
        doomed = view["alive"][0]["pid"]
        os.kill(doomed, signal.SIGKILL)
        wait_until(
            lambda: doomed not in {w.pid for w in live_workers(client)}, timeout=15, every=0.1
        )
    finally:
        supervisor.popen.send_signal(signal.SIGTERM)
        try:
            supervisor.popen.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(supervisor.popen.pid, signal.SIGKILL)
            supervisor.popen.wait(5)
    # Stopped cleanly: forgotten at once, not after the timeout.
    assert live_workers(client) == [], "\n".join(supervisor.lines[-20:])
    line = status(service)
    assert line.returncode == 0, line.stdout + line.stderr
    assert "workers: none alive" in line.stdout and "start `broadcaster worker`" in line.stdout


def test_enough_threads_is_said_plainly(
    tmp_path: Path, sqlite_template: Path, redis_url: str, sandbox: Any
) -> None:
    """Beats written as a worker's Liveness writes them (one process of 8 threads) for the
    one default corp at 4 in flight."""
    database = tmp_path / "jobs.db"
    shutil.copy(sqlite_template, database)
    service = Service(f"sqlite:///{database}", redis_url, sandbox)
    broker = RedisBroker(client=redis.Redis.from_url(redis_url), middleware=[])
    liveness = Liveness(broker, QUEUE_NAME, timeout_s=30)
    liveness.describe(threads=8, prefetch=10)
    liveness.beat()
    try:
        view = workers(service)
        assert view["processes"] == 1 and not view["short"]
        assert view["line"] == (
            "workers: 1 process(es) x 8 thread(s) = 8 slot(s) >= 1 corp(s) x 4 in flight = 4: "
            "enough for the quota"
        )
        assert [w.threads for w in live_workers(broker.client)] == [8]
    finally:
        liveness.stop()
    assert live_workers(broker.client) == []
