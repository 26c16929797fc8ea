"""`SchedulerService` and `Admission` on fakes: the tick's order, caps and admission, the
hand-back when the broker refuses, and the sweep, driven by an injected clock (no
database, no Redis, no sleeping). `tests/integration/test_scheduler.py` proves the same on
the real services."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from broadcaster.broker.dispatch import EnqueueFailed
from broadcaster.corps import CorpDirectory
from broadcaster.jobs.states import JobStatus
from broadcaster.quota.memory import InMemoryQuota
from broadcaster.vendor import CREATE_API
from scheduler.service import Admission, SchedulerService
from tests.conftest import make_settings
from tests.fakes import FakeDispatch, FakeJobStore

NOW = datetime(2026, 12, 1, 1, 0, 0)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Rig:
    def __init__(self, quota: InMemoryQuota | None = None, **settings: Any) -> None:
        self.settings = make_settings(**settings)
        self.clock = Clock()
        self.store = FakeJobStore(default_corp="corp-default")
        self.dispatch = FakeDispatch()
        admission = Admission(self.settings, CorpDirectory(self.settings), quota)
        self.service = SchedulerService(
            self.store, self.dispatch, self.settings, clock=self.clock, admission=admission
        )

    def add(self, *, ago_s: float = 0.0, corp_id: str = "corp-a", **job: Any) -> int:
        """A scheduled job, due `ago_s` seconds before NOW (negative: in the future)."""
        send_at = NOW - timedelta(seconds=ago_s)
        return self.store.add({"name": "x"}, corp_id=corp_id, send_at=send_at, **job)

    def status(self, job_id: int) -> str:
        return self.store.get(job_id).status

    def settle(self, job_ids: list[int]) -> None:
        """The workers took these and finished them."""
        for job_id in job_ids:
            self.store.jobs[job_id].status = JobStatus.SENT


def test_a_tick_enqueues_due_jobs_in_claim_order_up_to_max_queued() -> None:
    rig = Rig(scheduler_max_queued=5, scheduler_batch_size=2)
    late = [rig.add(ago_s=10 - i) for i in range(4)]  # due 10 s, 9 s, 8 s, 7 s ago
    urgent = rig.add(ago_s=0, priority=5)
    earliest = rig.add(ago_s=60)
    future = rig.add(ago_s=-30, priority=99)
    report = rig.service.tick()
    assert rig.dispatch.enqueued == [urgent, earliest, *late[:3]]
    assert [len(batch) for batch in rig.dispatch.batches] == [2, 2, 1], "batch size, then room"
    assert (report.enqueued, report.failed, report.expired, report.queue_full) == (5, 0, 0, True)
    assert report.next_due == NOW - timedelta(seconds=7), "the one left behind is overdue"
    assert rig.status(late[3]) == rig.status(future) == JobStatus.SCHEDULED
    assert rig.service.tick().enqueued == 0, "the queue is full until workers take some"
    rig.settle([urgent, earliest])
    again = rig.service.tick()
    assert again.enqueued == 1 and not again.queue_full
    assert rig.dispatch.enqueued[-1] == late[3]
    assert again.next_due == NOW + timedelta(seconds=30)
    rig.clock.now = NOW + timedelta(seconds=30)
    assert rig.service.tick().enqueued == 1 and rig.dispatch.enqueued[-1] == future


def test_a_tick_with_nothing_due_wakes_when_the_next_job_falls_due() -> None:
    rig = Rig(scheduler_poll_interval_s=5)
    rig.add(ago_s=-2)
    report = rig.service.tick()
    assert (report.enqueued, report.queue_full) == (0, False)
    assert rig.dispatch.batches == []
    assert rig.service.next_wakeup(report, NOW) == NOW + timedelta(seconds=2)
    rig.store.jobs.clear()
    empty = rig.service.tick()
    assert empty.next_due is None
    assert rig.service.next_wakeup(empty, NOW) == NOW + timedelta(seconds=5), "the poll"


def test_expired_and_unfit_rows_are_counted_not_enqueued() -> None:
    rig = Rig()
    rig.store.default_corp = None  # no default corp: a row without one cannot be sent
    expired = rig.add(expires_at=NOW)
    corpless = rig.store.add({"name": "x"}, send_at=NOW)
    good = rig.add()
    report = rig.service.tick()
    assert (report.enqueued, report.failed, report.expired) == (1, 1, 1)
    assert rig.dispatch.enqueued == [good]
    assert (rig.status(expired), rig.status(corpless)) == (JobStatus.EXPIRED, JobStatus.FAILED)


def test_admission_closes_a_corp_at_its_cap_and_lets_the_others_through() -> None:
    # Cap: max(10, 600/min * 1 s) = 10 queued jobs per corp.
    rig = Rig(scheduler_admit_horizon_s=1, scheduler_batch_size=5, scheduler_max_queued=100)
    busy = [rig.add(ago_s=100 - i) for i in range(15)]  # corp-a's backlog, due first
    other = [rig.add(ago_s=10 - i, corp_id="corp-b") for i in range(3)]
    report = rig.service.tick()
    assert report.enqueued == 13 and not report.queue_full
    assert rig.dispatch.enqueued == [*busy[:10], *other]
    assert rig.store.queued_by_corp() == {"corp-a": 10, "corp-b": 3}
    assert rig.service.tick().enqueued == 0, "still at its cap: nothing more for corp-a"
    assert rig.status(busy[10]) == JobStatus.SCHEDULED
    rig.settle(busy[:5])
    assert rig.service.tick().enqueued == 5, "as its queue drains, corp-a gets more"
    assert rig.dispatch.enqueued[-5:] == busy[10:]


def test_admission_holds_back_a_corp_the_vendor_blocked_until_the_block_ends() -> None:
    seconds = [0.0]
    settings = make_settings()
    quota = InMemoryQuota(CorpDirectory(settings).limits, slot_lease_s=30, clock=lambda: seconds[0])
    rig = Rig(quota)
    blocked = rig.add(corp_id="corp-b", priority=9)
    free = rig.add()
    quota.pause("corp-b", CREATE_API, 30)
    assert rig.service.tick().enqueued == 1
    assert rig.dispatch.enqueued == [free]
    assert rig.status(blocked) == JobStatus.SCHEDULED
    seconds[0] = 31.0  # the block ends
    assert rig.service.tick().enqueued == 1
    assert rig.dispatch.enqueued == [free, blocked]


def test_an_enqueue_failure_hands_the_whole_batch_back() -> None:
    rig = Rig(scheduler_batch_size=2)
    ids = [rig.add(ago_s=10 - i) for i in range(5)]
    rig.dispatch.fail, rig.dispatch.fail_after = "Redis refused an enqueue", 1
    with pytest.raises(EnqueueFailed, match="Redis refused"):
        rig.service.tick()
    assert rig.dispatch.enqueued == ids[:2], "the first batch went out"
    assert [rig.status(job_id) for job_id in ids] == [JobStatus.QUEUED] * 2 + [
        JobStatus.SCHEDULED
    ] * 3, "the failed batch is scheduled again, not left queued for the sweep"
    assert rig.store.get(ids[2]).lease_until is None
    assert rig.store.queued_by_corp() == {"corp-a": 2}
    rig.dispatch.fail = None
    assert rig.service.tick().enqueued == 3
    assert rig.dispatch.enqueued == ids


def test_the_sweep_requeues_lost_messages_and_marks_lost_calls_unknown() -> None:
    rig = Rig(queued_lease_s=60, sending_lease_s=60)
    lost, taken, calling = rig.add(ago_s=3), rig.add(ago_s=2), rig.add(ago_s=1)
    expiring = rig.add(ago_s=-30, expires_at=NOW + timedelta(seconds=60))
    rig.service.tick()
    assert rig.store.start_sending(calling, NOW, 60) is not None  # a worker died in the call
    assert rig.store.start_sending(taken, NOW, 60) is not None
    rig.dispatch.batches.clear()  # the broker lost every message

    rig.service.sweep()  # the leases still run: nothing happens
    assert rig.dispatch.batches == []
    assert rig.status(calling) == JobStatus.SENDING

    rig.store.jobs[taken].status = JobStatus.SENT  # its worker finished in time
    rig.clock.now = NOW + timedelta(seconds=61)
    rig.service.sweep()
    assert rig.dispatch.enqueued == [lost], "re-enqueued: the actor's CAS makes it safe"
    assert rig.status(lost) == JobStatus.QUEUED
    assert rig.store.get(lost).lease_until == rig.clock.now + timedelta(seconds=60)
    assert rig.status(calling) == JobStatus.UNKNOWN, "never resent blindly"
    assert "may exist at the vendor" in rig.store.get(calling).last_error
    assert rig.status(expiring) == JobStatus.EXPIRED
    assert rig.status(taken) == JobStatus.SENT


def test_a_sweep_whose_enqueue_fails_hands_the_lost_messages_back() -> None:
    rig = Rig(queued_lease_s=60)
    job_id = rig.add()
    rig.service.tick()
    rig.clock.now = NOW + timedelta(seconds=61)
    rig.dispatch.fail = "Redis down"
    with pytest.raises(EnqueueFailed):
        rig.service.sweep()
    assert rig.status(job_id) == JobStatus.SCHEDULED
    rig.dispatch.fail = None
    assert rig.service.tick().enqueued == 1
