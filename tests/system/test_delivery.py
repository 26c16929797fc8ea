"""The whole service as processes: the quota used to the full and never exceeded, the
vendor's block obeyed, tokens refreshed once, and no message sent twice under faults."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from broadcaster.jobs.store import JobStore
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer
from tests.helpers import wait_until
from tests.system.harness import Service, delivery_report, schedule_named


@pytest.fixture
def vendor() -> Iterator[SandboxServer]:
    """Weiban's shape scaled up: 3000/min, 4 in flight (the 5th gets 10052), 20 ms calls."""
    config = SandboxConfig(
        per_minute=3000, per_hour=180_000, max_in_flight=4, latency_ms=20, block_s=3
    )
    server = SandboxServer(config).start()
    yield server
    server.stop()


QUOTA_ENV = {
    "WEIBAN_QUOTA_PER_MINUTE": "3000",
    "WEIBAN_QUOTA_PER_HOUR": "180000",
    "WEIBAN_BLOCK_S": "3",
}


def all_sent(store: JobStore, ids: dict[str, int]) -> bool:
    counts = {row.status: row.n for row in store.status_counts()}
    return counts.get("sent", 0) == len(ids)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_backlog_uses_the_whole_quota_and_never_exceeds_it(
    db_url: str, store: JobStore, redis_url: str, vendor: SandboxServer
) -> None:
    ids = schedule_named(store, 3000)
    service = Service(db_url, redis_url, vendor, **QUOTA_ENV)
    service.start("run", "--processes", "2", "--threads", "8")
    try:
        wait_until(lambda: all_sent(store, ids), timeout=150, every=0.5)
    finally:
        service.stop()
    report = delivery_report(store, vendor, ids)
    assert report["duplicates"] == {} and len(report["created"]) == 3000
    stats = vendor.state.stats()
    assert stats["errors"] == {}, "zero 10052/10053"
    assert stats["corps"]["corp-a"]["peak_in_flight"] <= 4
    times = sorted(m["received_at"] for m in vendor.state.created_list())
    allowed_s = (3000 - 1) / (3000 / 60)
    took_s = times[-1] - times[0]
    print(
        f"\n3000 jobs in {took_s:.2f}s; the quota allows {allowed_s:.2f}s "
        f"({allowed_s / took_s:.1%} of the quota used)"
    )
    assert took_s <= allowed_s * 1.02


# the quota's behaviour: one database is enough (the suite's time)
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_vendor_block_stops_every_call_for_its_window_then_delivery_resumes(
    db_url: str, store: JobStore, redis_url: str, vendor: SandboxServer
) -> None:
    ids = schedule_named(store, 300)
    service = Service(db_url, redis_url, vendor, **QUOTA_ENV)
    service.start("run", "--processes", "1", "--threads", "8")
    try:
        wait_until(lambda: vendor.state.stats()["created"] >= 100, timeout=60)
        vendor.state.faults.force_10053 = 1
        wait_until(lambda: all_sent(store, ids), timeout=60, every=0.2)
    finally:
        service.stop()
    blocked_at = next(t for t, code, _corp in vendor.state.call_log if code == 10053)
    calls_in_block = [
        (t - blocked_at, c)
        for t, c, _corp in vendor.state.call_log
        if blocked_at + 0.1 < t < blocked_at + 3.0
    ]
    assert calls_in_block == [], "no call reached the vendor during the block"
    resumed = min(t for t, c, _corp in vendor.state.call_log if t > blocked_at + 3.0 and c == 0)
    assert resumed - blocked_at < 4.5, "delivery resumes soon after the block ends"
    report = delivery_report(store, vendor, ids)
    assert report["duplicates"] == {} and len(report["created"]) == 300
    assert any(
        e["event"] == "vendor_blocked"
        for p in service.processes
        for e in p.events("vendor_blocked")
    )


# the token cache's behaviour: one database is enough (the suite's time)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_token_invalidation_mid_run_costs_one_refresh_each(
    db_url: str, store: JobStore, redis_url: str, vendor: SandboxServer
) -> None:
    ids = schedule_named(store, 300)
    service = Service(db_url, redis_url, vendor, **QUOTA_ENV)
    service.start("run", "--processes", "2", "--threads", "4")
    try:
        wait_until(lambda: vendor.state.stats()["created"] >= 80, timeout=60)
        vendor.state.invalidate_tokens()
        wait_until(lambda: vendor.state.stats()["created"] >= 180, timeout=60)
        vendor.state.invalidate_tokens()
        wait_until(lambda: all_sent(store, ids), timeout=60, every=0.2)
    finally:
        service.stop()
    assert vendor.state.token_issued == 3, "the first token and one per invalidation"
    report = delivery_report(store, vendor, ids)
    assert report["duplicates"] == {} and len(report["created"]) == 300


def test_a_worker_killed_mid_call_leaves_that_job_unknown_and_the_rest_delivered(
    db_url: str, store: JobStore, redis_url: str, vendor: SandboxServer
) -> None:
    vendor.state.config.latency_ms = 1500
    ids = schedule_named(store, 12)
    # QUEUED_LEASE_S: the dead worker also held prefetched messages; the sweep re-enqueues
    # their rows once this lease runs out.
    service = Service(
        db_url,
        redis_url,
        vendor,
        WEIBAN_TIMEOUT_S="3",
        SENDING_LEASE_S="12",
        WORKER_SHUTDOWN_S="10",
        QUEUED_LEASE_S="4",
        **QUOTA_ENV,
    )
    service.start("scheduler")
    worker = service.start("worker", "--processes", "1", "--threads", "3")
    try:
        started = wait_until(lambda: worker.events("worker_started"), timeout=30)
        wait_until(
            lambda: vendor.state.stats()["corps"].get("corp-a", {}).get("in_flight"), timeout=30
        )
        os.kill(started[0]["pid"], signal.SIGKILL)
        killed_at = time.time()
        vendor.state.config.latency_ms = 20
        wait_until(
            lambda: all(store.get(i).status in ("sent", "unknown") for i in ids.values()),
            timeout=60,
            every=0.3,
        )
    finally:
        service.stop()
    report = delivery_report(store, vendor, ids)
    unknown = [n for n, s in report["statuses"].items() if s == "unknown"]
    assert 1 <= len(unknown) <= 3, "the calls in flight when the worker died"
    assert report["duplicates"] == {}, "an unknown job is never resent"
    assert report["created_not_sent_or_unknown"] == [] and report["sent_not_created"] == []
    assert [e for e in worker.events("worker_died")], "the supervisor saw it and restarted it"
    assert killed_at < max(m["received_at"] for m in vendor.state.created_list())


# Redis's loss; the database's side is the same on both (the suite's time)
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_redis_flushed_mid_run_loses_nothing_and_sends_nothing_twice(
    db_url: str,
    store: JobStore,
    redis_url: str,
    redis_client: redis.Redis,
    vendor: SandboxServer,
) -> None:
    ids = schedule_named(store, 300)
    service = Service(db_url, redis_url, vendor, QUEUED_LEASE_S="3", **QUOTA_ENV)
    service.start("run", "--processes", "1", "--threads", "8")
    try:
        wait_until(lambda: vendor.state.stats()["created"] >= 100, timeout=60)
        redis_client.flushdb()
        wait_until(lambda: all_sent(store, ids), timeout=90, every=0.3)
    finally:
        service.stop()
    report = delivery_report(store, vendor, ids)
    assert report["duplicates"] == {} and len(report["created"]) == 300
    assert any(p.events("jobs_requeued") for p in service.processes), "the sweep recovered"


# services absent at start: one database is enough (the suite's time)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unreachable_redis_or_vendor_at_start_is_named_and_waited_for(
    db_url: str, redis_url: str, vendor: SandboxServer
) -> None:
    no_redis = Service(db_url, "redis://127.0.0.1:1/0", vendor)
    no_vendor = Service(db_url, redis_url, vendor, WEIBAN_BASE_URL="http://127.0.0.1:9")
    waiting_redis = no_redis.start("worker", "--processes", "1")
    waiting_vendor = no_vendor.start("worker", "--processes", "1")
    try:
        redis_line = wait_until(lambda: waiting_redis.events("not_ready"), timeout=30)[0]
        vendor_line = wait_until(lambda: waiting_vendor.events("not_ready"), timeout=30)[0]
        assert "cannot reach Redis at redis://127.0.0.1:1/0" in redis_line["error"]
        assert "REDIS_URL" in redis_line["error"]
        assert vendor_line["what"] == "vendor" and "not sent" in vendor_line["error"]
        time.sleep(1.5)
        assert waiting_redis.popen.poll() is None and waiting_vendor.popen.poll() is None
    finally:
        no_redis.stop()
        no_vendor.stop()
    assert not [line for line in waiting_redis.lines + waiting_vendor.lines if "Traceback" in line]
