"""The order of a job's steps in `Sender.send` (compare-and-set, quota, call, release,
outcome) and what happens to a job taken to `sending` that does not reach the vendor."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import redis

from broadcaster.jobs.policy import Decision
from broadcaster.jobs.states import JobStatus, Outcome
from broadcaster.jobs.store import SendingJob
from broadcaster.quota.limiter import Slot
from broadcaster.vendor import CREATE_API, call_budget_s
from tests.unit.test_sender import CORP, NOW, Rig


class Recorder:
    """Wraps the rig's store, quota and vendor to log each step in order."""

    def __init__(self, rig: Rig) -> None:
        self.steps: list[str] = []
        self.rig = rig
        store, quota, vendor = rig.store, rig.quota, rig.vendor
        steps = self.steps

        def start_sending(job_id: int, now: datetime, lease_s: float) -> SendingJob | None:
            steps.append("cas")
            return store.start_sending(job_id, now, lease_s)

        def acquire(corp_id: str, api: str, *, max_wait_s: float) -> Slot:
            slot = quota.acquire(corp_id, api, max_wait_s=max_wait_s)
            steps.append("slot")
            return slot

        def release(slot: Slot) -> None:
            quota.release(slot)
            steps.append("release")

        def call(corp_id: str, body: str) -> None:
            steps.append(f"call:{quota.in_flight(corp_id, CREATE_API)}")
            vendor.create_group_message(corp_id, body)

        def finish(job: SendingJob, decision: Decision, *args: Any) -> None:
            steps.append(f"finish:{quota.in_flight(job.corp_id, CREATE_API)}")
            store.finish(job, decision, *args)

        rig.sender.store = _Patched(store, start_sending=start_sending, finish=finish)
        rig.sender.quota = _Patched(quota, acquire=acquire, release=release)
        rig.sender.vendor = _Patched(vendor, create_group_message=call)


class _Patched:
    def __init__(self, inner: object, **overrides: Any) -> None:
        self._inner = inner
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_the_slot_covers_the_call_only_taken_after_the_compare_and_set() -> None:
    rig = Rig()
    recorder = Recorder(rig)
    assert rig.sender.send(rig.queued()) == Outcome.SENT
    assert recorder.steps == ["cas", "slot", "call:1", "release", "finish:0"]


def test_a_stale_message_neither_takes_quota_nor_calls() -> None:
    rig = Rig()
    recorder = Recorder(rig)
    job_id = rig.queued()
    rig.store.jobs[job_id].status = JobStatus.CANCELLED
    assert rig.sender.send(job_id) == Outcome.IGNORED
    assert recorder.steps == ["cas"]
    assert rig.calls_counted() == 0


def test_a_duplicate_delivery_calls_once() -> None:
    rig = Rig()
    job_id = rig.queued()
    assert rig.sender.send(job_id) == Outcome.SENT
    assert rig.sender.send(job_id) == Outcome.IGNORED
    assert len(rig.vendor.calls) == 1
    assert rig.calls_counted() == 1


def test_quota_unreachable_hands_the_job_back_unsent_and_reraises() -> None:
    rig = Rig()
    job_id = rig.queued()

    def down(*args: Any, **kwargs: Any) -> Slot:
        raise redis.ConnectionError("Redis is down")

    rig.sender.quota = _Patched(rig.quota, acquire=down)
    with pytest.raises(redis.ConnectionError):
        rig.sender.send(job_id)
    job = rig.store.get(job_id)
    assert (job.status, job.attempts, job.lease_until) == (JobStatus.SCHEDULED, 0, None)
    assert job.not_before == NOW + timedelta(seconds=1)
    assert rig.vendor.calls == []


def test_a_process_stalled_past_its_call_start_hands_the_job_back_without_calling() -> None:
    rig = Rig()
    job_id = rig.queued()
    acquire = rig.quota.acquire

    def slow(corp_id: str, api: str, *, max_wait_s: float) -> Slot:
        slot = acquire(corp_id, api, max_wait_s=max_wait_s)
        rig.clock.sleep(rig.sender.start_by_s + 0.1)  # a stop-the-world pause, say
        return slot

    rig.sender.quota = _Patched(rig.quota, acquire=slow)
    assert rig.sender.send(job_id) == Outcome.QUOTA_WAIT
    assert rig.vendor.calls == []
    assert rig.store.get(job_id).status == JobStatus.SCHEDULED
    assert rig.quota.in_flight(CORP, CREATE_API) == 0


@pytest.mark.parametrize("configured_s", [5.0, 60.0, 600.0])
def test_the_quota_wait_stays_inside_the_sending_lease_and_the_reconcile_window(
    configured_s: float,
) -> None:
    rig = Rig(worker_max_quota_wait_s=configured_s)
    settings, sender = rig.settings, rig.sender
    budget = call_budget_s(settings.weiban_timeout_s)
    assert sender.max_quota_wait_s <= configured_s
    latest_end = sender.start_by_s + budget
    assert latest_end < settings.sending_lease_s, "the sweep never takes a live call"
    assert latest_end < settings.reconcile_after_s, "nor the reconciler a call not yet made"
    assert sender.max_quota_wait_s < sender.start_by_s
    if configured_s == 5.0:
        assert sender.max_quota_wait_s == 5.0, "the default is kept as configured"
