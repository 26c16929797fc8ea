"""Delivery truth with real processes: calls that hang after the vendor created the
message, calls answered 5xx before it created anything, and calls the vendor creates late
all end `sent`, each message created exactly once, and sent rows carry the vendor's
mission and its delivery."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broadcaster.jobs.store import JobStore
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer
from tests.helpers import wait_until
from tests.system.harness import Service, delivery_report, schedule_named

RECONCILE_ENV = {
    "WEIBAN_TIMEOUT_S": "1",
    "RECONCILE_AFTER_S": "8",
    "RECONCILE_INTERVAL_S": "1",
    "RETRY_BASE_S": "0.2",
}


@pytest.fixture
def vendor() -> Iterator[SandboxServer]:
    config = SandboxConfig(latency_ms=20, confirm_after_s=1.0, never_confirm_share=0.0)
    server = SandboxServer(config).start()
    server.state.faults.hang_s = 1.5
    server.state.faults.late_s = 3.0
    yield server
    server.stop()


# PostgreSQL, the production database; reconcile on SQLite and MariaDB: the integration tests
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_ambiguous_calls_are_settled_and_every_message_is_created_exactly_once(
    db_url: str, store: JobStore, redis_url: str, vendor: SandboxServer
) -> None:
    faults = vendor.state.faults
    faults.hang_after_create, faults.http_5xx, faults.create_late = 4, 4, 2
    ids = schedule_named(store, 60, prefix="reconcile")
    service = Service(db_url, redis_url, vendor, **RECONCILE_ENV)
    service.start("run", "--processes", "1", "--threads", "4")

    def settled() -> bool:
        return all(store.get(job_id).status == "sent" for job_id in ids.values())

    def tracked() -> list[str]:
        rows = [store.get(job_id) for job_id in ids.values()]
        return [r for r in rows if r.vendor_mission_id and r.delivery_status == "completed"]

    try:
        wait_until(settled, timeout=90, every=0.5)
        wait_until(lambda: len(tracked()) >= 0.95 * len(ids), timeout=30, every=0.5)
    finally:
        service.stop()
    served = vendor.state.faults_served
    assert served["hang_after_create"] == 4 and served["http_5xx"] == 4
    assert served["create_late"] == 2
    report = delivery_report(store, vendor, ids)
    assert report["duplicates"] == {}, "no message created twice"
    assert len(report["created"]) == 60 and report["sent_not_created"] == []
    reconciled = [e for p in service.processes for e in p.events("reconciled")]
    assert sum(e["found"] for e in reconciled) >= 6, "hung and late calls found in the list"
    assert sum(e["resent"] for e in reconciled) >= 4, "5xx calls sent again"
    missions = {m["mission_id"] for m in vendor.state.created_list()}
    assert {store.get(i).vendor_mission_id for i in ids.values()} <= missions
    assert not [line for line in service.all_lines() if "Traceback" in line]
