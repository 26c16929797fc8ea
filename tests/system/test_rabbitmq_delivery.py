"""`broadcaster run` over RabbitMQ (BROKER_URL, a vhost and user of the test's own) against
the sandbox: a worker process killed with SIGKILL mid-batch, then RabbitMQ's application
stopped and started under the running service; every job is sent exactly once, the
killed worker's messages come back from RabbitMQ (not from the lease sweep: QUEUED_LEASE_S
is far beyond the test), the workers say in one JSON line that RabbitMQ went away, and no
log line carries the broker's password or a traceback."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from broadcaster.jobs.store import JobStore
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer
from tests.helpers import wait_until
from tests.rabbitmq_vhost import restart_app, unavailable, vhost
from tests.system.harness import Service, delivery_report, schedule_named

pytestmark = pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "")


@pytest.fixture
def vendor() -> Iterator[SandboxServer]:
    config = SandboxConfig(per_minute=3000, per_hour=180_000, max_in_flight=4, latency_ms=20)
    server = SandboxServer(config).start()
    yield server
    server.stop()


def settled(store: JobStore, count: int) -> bool:
    counts = {row.status: row.n for row in store.status_counts()}
    return counts.get("sent", 0) == count


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_every_job_is_sent_once_over_rabbitmq_through_a_killed_worker_and_a_broker_restart(
    db_url: str, store: JobStore, redis_url: str, vendor: SandboxServer
) -> None:
    ids = schedule_named(store, 400, prefix="rmq")
    with vhost("broadcaster_sys", own_user=True) as amqp_url:
        password = amqp_url.split("@")[0].rsplit(":", 1)[1]
        service = Service(
            db_url,
            redis_url,
            vendor,
            BROKER_URL=amqp_url,
            WEIBAN_QUOTA_PER_MINUTE="3000",
            WEIBAN_QUOTA_PER_HOUR="180000",
            WEIBAN_TIMEOUT_S="1",
            SENDING_LEASE_S="7.5",
            RECONCILE_AFTER_S="7.5",
            RECONCILE_INTERVAL_S="1",
            WORKER_SHUTDOWN_S="4",
            QUEUED_LEASE_S="600",
        )
        run = service.start("run", "--processes", "2", "--threads", "6")
        try:
            started = wait_until(lambda: len(run.events("worker_started")) >= 2, timeout=60)
            assert started
            wait_until(lambda: vendor.state.stats()["created"] >= 80, timeout=60)
            os.kill(run.events("worker_started")[0]["pid"], signal.SIGKILL)
            wait_until(lambda: vendor.state.stats()["created"] >= 200, timeout=60)
            down_s = restart_app(down_s=1.0)
            wait_until(lambda: settled(store, len(ids)), timeout=120, every=0.5)
        finally:
            service.stop()
    report = delivery_report(store, vendor, ids)
    assert report["duplicates"] == {} and len(report["created"]) == len(ids)
    assert report["sent_not_created"] == [] and report["created_not_sent_or_unknown"] == []
    assert run.events("worker_died"), "the killed worker was seen dead (and restarted)"
    assert not run.events("jobs_requeued"), "RabbitMQ gave the messages back, not the sweep"
    lines = service.all_lines()
    assert [line for line in lines if password in line] == []
    assert [line for line in lines if "Traceback" in line] == []
    unreachable = run.events("broker_unreachable")
    assert unreachable and "(BROKER_URL) is not usable" in unreachable[0]["error"]
    raw = ("Consumer encountered", "Failed to", "The operation will", "If you restart")
    assert [line for line in lines if line.startswith(raw)] == [], "Dramatiq's lines bridged"
    print(f"\n{len(ids)} jobs sent once each; RabbitMQ down {down_s:.1f}s")
