"""Recurring schedules in the database, on SQLite and PostgreSQL: one job per occurrence
whatever the number of passes, stores (schedulers) or restarts; the misfire policy
recorded; pause and remove cancel what was made ahead; the CLI end to end."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select

from broadcaster.campaigns.store import NewSchedule, ScheduleStore
from broadcaster.db import make_engine
from broadcaster.errors import InvalidJob, InvalidPayload
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.tables import jobs, schedule_events, schedules
from tests.helpers import body

NOW = datetime(2026, 11, 26, 12, 0, 30)


@pytest.fixture
def sched(engine: Engine) -> Iterator[ScheduleStore]:
    yield ScheduleStore(engine, default_corp="corp-default")
    with engine.begin() as connection:  # a schedule left behind would act in a later test
        connection.execute(delete(schedules))


def new(**overrides: Any) -> NewSchedule:
    values: dict[str, Any] = {
        "name": "weekly",
        "cron": "* * * * *",
        "tz": "Asia/Shanghai",
        "payload": body(name="周报 {date}", group_ext_id_list=["g1"]),
        "campaign": "weekly",
    }
    values.update(overrides)
    return NewSchedule(**values)


def made(engine: Engine) -> list[Any]:
    with engine.begin() as connection:
        return list(connection.execute(select(jobs).order_by(jobs.c.send_at)).all())


def events(engine: Engine) -> list[tuple[datetime, str]]:
    with engine.begin() as connection:
        rows = connection.execute(
            select(schedule_events.c.occurrence, schedule_events.c.outcome).order_by(
                schedule_events.c.occurrence
            )
        ).all()
    return [(row.occurrence, row.outcome) for row in rows]


def test_each_occurrence_becomes_one_job_ahead_of_time(
    sched: ScheduleStore, engine: Engine
) -> None:
    schedule_id = sched.add(new(), NOW - timedelta(seconds=20))
    report = sched.materialise(NOW, lookahead_s=60, grace_s=300)
    assert report.created == 1
    again = sched.materialise(NOW + timedelta(seconds=5), lookahead_s=60, grace_s=300)
    assert again.created == 0
    [job] = made(engine)
    assert job.send_at == datetime(2026, 11, 26, 12, 1)
    assert job.dedupe_key == f"schedule:{schedule_id}:2026-11-26T12:01:00Z"
    assert job.campaign == "weekly" and job.status == JobStatus.SCHEDULED
    assert json.loads(job.payload)["name"] == "周报 2026-11-26"  # 20:01 in Shanghai
    assert events(engine) == [(datetime(2026, 11, 26, 12, 1), "created")]


def test_two_schedulers_at_once_make_one_job_per_occurrence(
    sched: ScheduleStore, engine: Engine, db_url: str
) -> None:
    sched.add(new(cron="* * * * * *"), NOW - timedelta(seconds=1))
    others = [make_engine(db_url) for _ in range(3)]
    stores = [ScheduleStore(other, default_corp="corp-default") for other in others]
    errors: list[BaseException] = []

    def run(store: ScheduleStore) -> None:
        try:
            for step in range(10):
                store.materialise(NOW + timedelta(seconds=step), lookahead_s=2, grace_s=60)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for other in others:
        other.dispose()
    assert errors == []
    keys = [job.dedupe_key for job in made(engine)]
    assert len(keys) == len(set(keys)) == 13  # 12:00:29 (its creation) .. 12:00:41, once each
    assert len(events(engine)) == 13


def test_a_restart_makes_up_late_occurrences_within_the_grace_and_skips_older(
    sched: ScheduleStore, engine: Engine
) -> None:
    sched.add(new(), NOW - timedelta(minutes=31))
    first = sched.materialise(NOW - timedelta(minutes=30), lookahead_s=60, grace_s=300)
    assert (first.late, first.skipped, first.created) == (1, 0, 1)  # 11:30 (30 s ago), 11:31
    # No scheduler for half an hour; then one starts (a fresh store: a restart).
    restarted = ScheduleStore(engine, default_corp="corp-default")
    report = restarted.materialise(NOW, lookahead_s=60, grace_s=300)
    assert (report.late, report.skipped, report.created) == (5, 1, 1)
    recorded = events(engine)[2:]
    assert recorded[0] == (datetime(2026, 11, 26, 11, 32), "skipped")
    assert [outcome for _, outcome in recorded[1:]] == ["late"] * 5 + ["created"]
    with engine.begin() as connection:
        detail = connection.execute(
            select(schedule_events.c.detail).where(schedule_events.c.outcome == "skipped")
        ).scalar_one()
    assert "from 2026-11-26 11:32:00 UTC until 2026-11-26 11:56:00 UTC skipped" in detail
    sent_at = [job.send_at for job in made(engine)]
    assert sent_at[2:] == [datetime(2026, 11, 26, 11, 56) + timedelta(minutes=n) for n in range(6)]


def test_pause_and_remove_cancel_the_jobs_made_ahead(sched: ScheduleStore, engine: Engine) -> None:
    sched.add(new(cron="*/10 * * * * *"), NOW - timedelta(seconds=5))
    sched.materialise(NOW, lookahead_s=60, grace_s=300)
    assert len(made(engine)) == 7  # 12:00:30 (due now) to 12:01:30
    schedule_id, cancelled = sched.set_paused("weekly", True, NOW)
    assert cancelled == 6, "the one due now stays: it may be on its way"
    assert sched.materialise(NOW, lookahead_s=60, grace_s=300).created == 0
    sched.set_paused(str(schedule_id), False, NOW + timedelta(minutes=5))
    report = sched.materialise(NOW + timedelta(minutes=5), lookahead_s=20, grace_s=300)
    assert (report.created, report.late, report.skipped) == (2, 0, 0), "the pause is not made up"
    _, cancelled = sched.remove("weekly", NOW + timedelta(minutes=5))
    assert cancelled == 2
    with engine.begin() as connection:
        assert connection.execute(select(func.count()).select_from(schedule_events)).scalar() == 0


def test_add_refuses_what_could_never_send(sched: ScheduleStore) -> None:
    with pytest.raises(InvalidJob, match="cron"):
        sched.add(new(cron="every day"), NOW)
    with pytest.raises(InvalidPayload):
        sched.add(new(payload={"name": "x"}), NOW)
    sched.add(new(), NOW)
    with pytest.raises(InvalidJob, match="exists already"):
        sched.add(new(), NOW)


def test_a_schedule_broken_by_hand_does_not_stop_the_others(
    sched: ScheduleStore, engine: Engine
) -> None:
    broken = sched.add(new(name="broken"), NOW - timedelta(seconds=20))
    sched.add(new(name="fine"), NOW - timedelta(seconds=20))
    with engine.begin() as connection:
        connection.execute(
            schedules.update().where(schedules.c.id == broken).values(payload="{not json")
        )
    assert sched.materialise(NOW, lookahead_s=60, grace_s=300).created == 1
