"""`broadcaster run` on MariaDB: the whole service as processes (scheduler, two workers,
the recovery sweep) delivers a backlog, each job once, as on the other two databases
(tests/system/test_delivery.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broadcaster.db import make_engine
from broadcaster.jobs.store import JobStore
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer
from tests.helpers import wait_until
from tests.system.harness import Service, delivery_report, schedule_named

pytestmark = pytest.mark.mariadb


@pytest.fixture
def vendor() -> Iterator[SandboxServer]:
    config = SandboxConfig(per_minute=3000, per_hour=180_000, max_in_flight=4, latency_ms=20)
    server = SandboxServer(config).start()
    yield server
    server.stop()


@pytest.fixture
def my_store(empty_mysql_url: str) -> Iterator[JobStore]:
    engine = make_engine(empty_mysql_url)
    yield JobStore(engine, default_corp="corp-a")
    engine.dispose()


def test_run_on_mariadb_delivers_a_backlog_once_each_within_the_quota(
    empty_mysql_url: str, my_store: JobStore, redis_url: str, vendor: SandboxServer
) -> None:
    ids = schedule_named(my_store, 300)
    service = Service(
        empty_mysql_url,
        redis_url,
        vendor,
        WEIBAN_QUOTA_PER_MINUTE="3000",
        WEIBAN_QUOTA_PER_HOUR="180000",
    )
    service.start("run", "--processes", "2", "--threads", "4")
    try:

        def all_sent() -> bool:
            counts = {row.status: row.n for row in my_store.status_counts()}
            return counts.get("sent", 0) == len(ids)

        try:
            wait_until(all_sent, timeout=60, every=0.2)
        except AssertionError:  # say what the service said, bar the sends
            said = [line for line in service.all_lines() if "job_sent" not in line]
            counts = {row.status: row.n for row in my_store.status_counts()}
            raise AssertionError(f"{counts}\n" + "\n".join(said[-40:])) from None
    finally:
        service.stop()
    report = delivery_report(my_store, vendor, ids)
    assert report["duplicates"] == {} and len(report["created"]) == len(ids)
    assert report["sent_not_created"] == [] and report["created_not_sent_or_unknown"] == []
    stats = vendor.state.stats()
    assert stats["errors"] == {}, "zero 10052/10053"
    assert stats["corps"]["corp-a"]["peak_in_flight"] <= 4
    lines = "\n".join(service.all_lines())
    assert "Traceback" not in lines
    assert "Deadlock" not in lines, "a worker's move by id and the sweep's lock one order"
