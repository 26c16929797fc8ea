"""Recurring schedules with real processes: two schedulers and a schedule firing every
second make exactly one job per occurrence, with no gap when one scheduler restarts."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, select

from broadcaster.campaigns.store import NewSchedule, ScheduleStore
from broadcaster.jobs.store import JobStore
from broadcaster.jobs.tables import jobs, schedule_events, schedules
from broadcaster.timeutil import utcnow
from broadcaster.vendor.sandbox import SandboxServer
from tests.helpers import body, wait_until
from tests.system.harness import Service


def made(store: JobStore, schedule_id: int) -> list[str]:
    with store.engine.begin() as connection:
        return list(
            connection.execute(
                select(jobs.c.dedupe_key)
                .where(jobs.c.dedupe_key.like(f"schedule:{schedule_id}:%"))
                .order_by(jobs.c.send_at)
            ).scalars()
        )


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_schedulers_and_a_restart_make_one_job_per_occurrence(
    db_url: str, store: JobStore, redis_url: str, sandbox: SandboxServer
) -> None:
    env = {"SCHEDULES_INTERVAL_S": "0.5", "WEIBAN_CORP_ID": "corp-default"}
    service = Service(db_url, redis_url, sandbox, **env)
    first = service.start("scheduler")
    service.start("scheduler")
    schedule_id = ScheduleStore(store.engine, default_corp="corp-default").add(
        NewSchedule(
            name="every-second",
            cron="* * * * * *",
            tz="Asia/Shanghai",
            payload=body(name="tick {time}"),
            campaign="ticks",
        ),
        utcnow(),
    )
    try:
        wait_until(lambda: len(made(store, schedule_id)) >= 4, timeout=30)
        first.popen.terminate()  # a deploy: SIGTERM, then the same command again
        first.popen.wait(20)
        service.start("scheduler")
        settled = len(made(store, schedule_id)) + 4
        wait_until(lambda: len(made(store, schedule_id)) >= settled, timeout=30)
    finally:
        service.stop()
    keys = made(store, schedule_id)
    with store.engine.begin() as connection:
        outcomes = (
            connection.execute(
                select(schedule_events.c.outcome).where(
                    schedule_events.c.schedule_id == schedule_id
                )
            )
            .scalars()
            .all()
        )
        connection.execute(delete(schedules))  # nothing left to act in a later test
    occurrences = [datetime.fromisoformat(key.split(":", 2)[2].removesuffix("Z")) for key in keys]
    assert len(keys) == len(set(keys))
    steps = {b - a for a, b in itertools.pairwise(occurrences)}
    assert steps == {timedelta(seconds=1)}, f"one job per second, no gap: {keys}"
    assert len(outcomes) == len(keys) and set(outcomes) <= {"created", "late"}
