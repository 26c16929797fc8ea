"""`--metrics-port` with real processes: `run` serves the scheduler's figures and its
worker processes' (summed) on one port; SIGTERM stops it with the rest."""

from __future__ import annotations

import shutil
import signal
import socket
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from broadcaster.db import make_engine
from broadcaster.jobs.store import JobStore
from broadcaster.vendor.sandbox import SandboxServer
from tests.helpers import wait_until
from tests.system.harness import Service, schedule_named


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _figures(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_run_serves_scheduler_and_worker_metrics_on_one_port(
    redis_url: str, tmp_path: Path, sqlite_template: Path, sandbox: SandboxServer
) -> None:
    shutil.copy(sqlite_template, tmp_path / "metrics.db")
    db_url = f"sqlite:///{tmp_path / 'metrics.db'}"
    store = JobStore(make_engine(db_url), default_corp="corp-a")
    schedule_named(store, 6, prefix="metrics")
    port = _free_port()
    service = Service(db_url, redis_url, sandbox, LOG_FORMAT="json")
    process = service.start(
        "run", "--processes", "2", "--threads", "2", "--metrics-port", str(port)
    )
    sent = ("broadcaster_worker_vendor_calls_total", (("outcome", "sent"),))

    def all_sent() -> bool:
        assert process.popen.poll() is None, "\n".join(process.lines[-20:])
        try:
            return _figures(port).get(sent, 0) == 6
        except httpx.TransportError:
            return False

    try:
        wait_until(all_sent, timeout=40, every=0.2)
        got = _figures(port)
    finally:
        process.popen.send_signal(signal.SIGTERM)
        code = process.popen.wait(40)
    assert code == 0, "\n".join(process.lines[-30:])
    assert got[("broadcaster_worker_vendor_call_seconds_count", ())] == 6
    assert got[("broadcaster_worker_messages_total", (("outcome", "sent"),))] == 6
    enqueued = ("broadcaster_scheduler_claimed_jobs_total", (("result", "enqueued"),))
    assert got[enqueued] == 6
    assert got[("broadcaster_scheduler_ticks_total", (("result", "ok"),))] >= 1
    assert not [line for line in process.lines if "Traceback" in line]
