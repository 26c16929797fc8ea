"""Quiet hours with real processes and the clock as it is: a window of a few seconds
around now; rows due inside it reach the vendor only after it ends, an urgent row
(`ignore_quiet_hours`) during it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from broadcaster.jobs.store import JobStore
from broadcaster.jobs.tables import jobs
from broadcaster.timeutil import utcnow
from broadcaster.vendor.sandbox import SandboxServer
from tests.helpers import body, wait_until
from tests.system.harness import Service

SH = ZoneInfo("Asia/Shanghai")  # DEFAULT_TZ
WINDOW_S = 10


def add(store: JobStore, name: str, **row: object) -> int:
    payload = json.dumps(body(name=name), ensure_ascii=False)
    result = store.insert_jobs([{"payload": payload, "corp_id": "corp-a", **row}])
    return result.inserted_ids[0]


def arrivals(sandbox: SandboxServer) -> dict[str, float]:
    return {m["body"]["name"]: m["received_at"] for m in sandbox.state.created_list()}


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_rows_due_inside_the_window_reach_the_vendor_only_after_it(
    db_url: str, store: JobStore, redis_url: str, sandbox: SandboxServer
) -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    end = start + timedelta(seconds=WINDOW_S)
    window = f"{start.astimezone(SH):%H:%M:%S}-{end.astimezone(SH):%H:%M:%S}"
    service = Service(db_url, redis_url, sandbox, QUIET_HOURS=window)
    urgent = add(store, "urgent", ignore_quiet_hours=True)
    service.start("run", "--processes", "1", "--threads", "4")
    try:
        wait_until(lambda: "urgent" in arrivals(sandbox), timeout=WINDOW_S)
        assert utcnow() < end.replace(tzinfo=None) - timedelta(seconds=2), "window too short"
        quiet = [add(store, f"quiet-{n}") for n in range(5)]
        wait_until(lambda: len(arrivals(sandbox)) == 6, timeout=WINDOW_S + 20, every=0.1)
        held = [store.get(job_id) for job_id in quiet]
    finally:
        service.stop()
    seen = arrivals(sandbox)
    window_end = end.timestamp()
    assert seen["urgent"] < window_end
    assert all(seen[f"quiet-{n}"] >= window_end for n in range(5)), (seen, window_end)
    assert all(row.status == "sent" and row.attempts == 1 for row in held)
    end_local = end.astimezone(SH)  # a whole minute reads 17:34, not 17:34:00
    shown = f"{end_local:%H:%M:%S}" if end_local.second else f"{end_local:%H:%M}"
    assert {row.held_reason for row in held} == {f"quiet hours until {shown} (Asia/Shanghai)"}
    assert store.get(urgent).held_until is None
    with store.engine.begin() as connection:  # leave nothing scheduled for later tests
        connection.execute(
            update(jobs).values(status="cancelled").where(jobs.c.status == "scheduled")
        )
