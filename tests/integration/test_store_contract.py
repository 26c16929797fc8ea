"""The store seam's contract: the same tests on the real `JobStore` (SQLite and PostgreSQL,
the `store` fixture of conftest) and on `tests.fakes.FakeJobStore`, for every behaviour
the fake claims to share with it. What only a database proves (screening rows of odd
types, concurrency, error text) is tested elsewhere, on the real store alone."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from broadcaster import schedule_many
from broadcaster.jobs.policy import Decision
from broadcaster.jobs.states import JobStatus, Outcome
from broadcaster.jobs.store import JobStore
from tests.fakes import FakeJobStore
from tests.helpers import body

NOW = datetime(2026, 12, 1, 1, 0, 0)
LEASE_S = 60.0
Store = JobStore | FakeJobStore


def seed(store: Store, *, send_at: datetime = NOW, **job: Any) -> int:
    """One scheduled job: through the producers' API on the real store, `add` on the fake."""
    if isinstance(store, FakeJobStore):
        return store.add(body(), send_at=send_at, **job)
    return schedule_many([{"payload": body(), "send_at": send_at, **job}], store=store).job_ids[0]


def sending(store: Store, now: datetime = NOW, **job: Any) -> Any:
    """A job claimed and moved to `sending` at `now`; returns its `SendingJob`."""
    job_id = seed(store, send_at=now, **job)
    assert [claimed.id for claimed in store.claim_due(now, 10, LEASE_S).claimed] == [job_id]
    started = store.start_sending(job_id, now, LEASE_S)
    assert started is not None
    return started


def sent() -> Decision:
    return Decision(JobStatus.SENT, Outcome.SENT, True)


class StoreContract:
    """The tests; a subclass supplies the `store` fixture."""

    # ------------------------------------------------------------------ claim
    def test_claim_orders_by_priority_then_due_time_and_stops_at_the_limit(
        self, store: Store
    ) -> None:
        late = seed(store, send_at=NOW - timedelta(minutes=1), corp_id="corp-a")
        early = seed(store, send_at=NOW - timedelta(minutes=5), corp_id="corp-b")
        urgent = seed(store, send_at=NOW, priority=10, corp_id="corp-a")
        seed(store, send_at=NOW + timedelta(seconds=1), priority=99)  # not due yet
        first = store.claim_due(NOW, 2, LEASE_S)
        assert [job.id for job in first.claimed] == [urgent, early]
        assert [(job.corp_id, job.priority) for job in first.claimed] == [
            ("corp-a", 10),
            ("corp-b", 0),
        ]
        assert first.claimed[1].due_at == NOW - timedelta(minutes=5)
        assert store.queued_by_corp() == {"corp-a": 1, "corp-b": 1}
        assert store.get(urgent).status == JobStatus.QUEUED
        assert store.get(urgent).lease_until == NOW + timedelta(seconds=LEASE_S)
        assert store.get(late).status == JobStatus.SCHEDULED
        second = store.claim_due(NOW, 2, LEASE_S)
        assert [job.id for job in second.claimed] == [late], "only due rows, once each"
        assert store.claim_due(NOW, 2, LEASE_S).claimed == []

    def test_claim_leaves_the_rows_of_skipped_corps_and_gives_null_the_default_corp(
        self, store: Store
    ) -> None:
        a = seed(store, corp_id="corp-a")
        b = seed(store, corp_id="corp-b")
        default = seed(store)  # corp_id NULL: the default corp
        claimed = store.claim_due(NOW, 10, LEASE_S, skip_corps={"corp-a", "corp-default"})
        assert [job.id for job in claimed.claimed] == [b]
        assert store.get(a).status == store.get(default).status == JobStatus.SCHEDULED
        rest = store.claim_due(NOW, 10, LEASE_S, skip_corps=["corp-b"]).claimed
        assert sorted(job.id for job in rest) == [a, default]
        assert {job.id: job.corp_id for job in rest}[default] == "corp-default"
        assert store.get(default).corp_id == "corp-default", "written into the row"
        assert store.queued_by_corp() == {"corp-a": 1, "corp-b": 1, "corp-default": 1}

    def test_a_row_past_its_expiry_expires_at_claim_instead(self, store: Store) -> None:
        stale = seed(store, expires_at=NOW + timedelta(minutes=1))
        fresh = seed(store, send_at=NOW + timedelta(seconds=1))
        later = NOW + timedelta(minutes=1)
        result = store.claim_due(later, 10, LEASE_S)
        assert [job.id for job in result.claimed] == [fresh]
        assert (result.expired, result.failed) == ([stale], [])
        job = store.get(stale)
        assert job.status == JobStatus.EXPIRED and job.lease_until is None
        assert "expires_at" in job.last_error

    def test_a_row_without_a_corp_fails_at_claim_when_there_is_no_default(
        self, store: Store
    ) -> None:
        store.default_corp = None
        job_id = seed(store)
        result = store.claim_due(NOW, 10, LEASE_S)
        assert (result.claimed, result.expired) == ([], [])
        [(failed_id, reason)] = result.failed
        assert failed_id == job_id and "corp_id" in reason
        job = store.get(job_id)
        assert (job.status, job.lease_until) == (JobStatus.FAILED, None)
        assert job.last_error == reason

    def test_release_hands_only_queued_rows_back(self, store: Store) -> None:
        ids = [seed(store, corp_id="corp-a") for _ in range(3)]
        store.claim_due(NOW, 2, LEASE_S)
        assert store.release([*ids, 999_999], NOW) == 2, "the scheduled one and a stranger: no"
        assert [store.get(job_id).status for job_id in ids] == [JobStatus.SCHEDULED] * 3
        assert all(store.get(job_id).lease_until is None for job_id in ids)
        assert store.queued_by_corp() == {}
        assert store.release([], NOW) == 0
        assert len(store.claim_due(NOW, 10, LEASE_S).claimed) == 3, "due again at once"

    def test_next_due_at_is_the_earliest_scheduled_time_even_past(self, store: Store) -> None:
        assert store.next_due_at() is None
        past = seed(store, send_at=NOW - timedelta(hours=1))
        seed(store, send_at=NOW + timedelta(minutes=5))
        assert store.next_due_at() == NOW - timedelta(hours=1)
        store.claim_due(NOW, 10, LEASE_S)
        assert store.next_due_at() == NOW + timedelta(minutes=5)
        assert store.start_sending(past, NOW, LEASE_S) is not None
        assert store.hand_back(past, NOW, 30)
        assert store.next_due_at() == NOW + timedelta(seconds=30), "not_before counts"

    # ------------------------------------------------------------------ recover
    def test_recover_requeues_lost_messages_unknowns_lost_calls_and_expires(
        self, store: Store
    ) -> None:
        lost_message = seed(store, corp_id="corp-a")
        lost_call = seed(store, corp_id="corp-a")
        expiring = seed(
            store, send_at=NOW + timedelta(minutes=1), expires_at=NOW + timedelta(minutes=2)
        )
        store.claim_due(NOW, 10, LEASE_S)
        assert store.start_sending(lost_call, NOW, LEASE_S) is not None

        quiet = store.recover(NOW + timedelta(seconds=LEASE_S), 300)  # leases still run
        assert (quiet.requeued, quiet.unknown, quiet.expired) == ([], [], 0)

        later = NOW + timedelta(minutes=2)
        result = store.recover(later, 300)
        assert [job.id for job in result.requeued] == [lost_message]
        assert result.requeued[0].corp_id == "corp-a"
        assert (result.unknown, result.expired, result.failed) == ([lost_call], 1, [])
        requeued = store.get(lost_message)
        assert requeued.status == JobStatus.QUEUED
        assert requeued.lease_until == later + timedelta(seconds=300)
        unknown = store.get(lost_call)
        assert unknown.status == JobStatus.UNKNOWN and unknown.lease_until is None
        assert "may exist at the vendor" in unknown.last_error
        assert store.get(expiring).status == JobStatus.EXPIRED
        again = store.recover(later, 300)
        assert (again.requeued, again.unknown, again.expired) == ([], [], 0)

    def test_recover_expires_a_queued_row_past_its_expiry(self, store: Store) -> None:
        job_id = seed(store, expires_at=NOW + timedelta(seconds=10))
        store.claim_due(NOW, 10, LEASE_S)
        result = store.recover(NOW + timedelta(seconds=10), 300)
        assert (result.requeued, result.expired) == ([], 1)
        assert store.get(job_id).status == JobStatus.EXPIRED
        assert store.queued_by_corp() == {}

    # ------------------------------------------------------------------ workers
    def test_start_sending_is_a_compare_and_set(self, store: Store) -> None:
        job_id = seed(store, corp_id="corp-a", max_attempts=3)
        assert store.start_sending(job_id, NOW, LEASE_S) is None, "not queued yet"
        store.claim_due(NOW, 10, LEASE_S)
        job = store.start_sending(job_id, NOW, 30)
        assert job is not None
        assert (job.id, job.corp_id, job.attempts, job.max_attempts) == (job_id, "corp-a", 0, 3)
        assert job.payload
        assert store.start_sending(job_id, NOW, 30) is None, "the second delivery loses"
        row = store.get(job_id)
        assert row.status == JobStatus.SENDING
        assert row.lease_until == NOW + timedelta(seconds=30)
        assert store.start_sending(999_999, NOW, 30) is None

    def test_start_sending_gives_the_default_corp_and_expires_a_stale_job(
        self, store: Store
    ) -> None:
        default = seed(store)
        stale = seed(store, expires_at=NOW + timedelta(seconds=5))
        store.claim_due(NOW, 10, LEASE_S)
        job = store.start_sending(default, NOW, LEASE_S)
        assert job is not None and job.corp_id == "corp-default"
        assert store.start_sending(stale, NOW + timedelta(seconds=5), LEASE_S) is None
        assert store.get(stale).status == JobStatus.EXPIRED

    def test_hand_back_returns_a_sending_job_to_scheduled_in_one_move(self, store: Store) -> None:
        job = sending(store)
        assert store.get(job.id).last_call_at == NOW
        assert store.hand_back(job.id, NOW, 20)
        row = store.get(job.id)
        assert (row.status, row.attempts, row.lease_until) == (JobStatus.SCHEDULED, 0, None)
        assert (row.not_before, row.last_call_at) == (NOW + timedelta(seconds=20), None)
        assert not store.hand_back(job.id, NOW, 20), "only a sending job"
        assert store.claim_due(NOW + timedelta(seconds=19), 10, LEASE_S).claimed == []
        [again] = store.claim_due(NOW + timedelta(seconds=20), 10, LEASE_S).claimed
        assert again.id == job.id
        assert store.start_sending(job.id, NOW + timedelta(seconds=20), LEASE_S) is not None

    def test_hand_back_keeps_the_time_of_the_latest_call_made(self, store: Store) -> None:
        job = sending(store)
        retry = Decision(JobStatus.SCHEDULED, Outcome.NOT_SENT, True, 1.0, None, "refused")
        store.finish(job, retry, NOW, NOW, 5)
        later = NOW + timedelta(seconds=1)
        [again] = store.claim_due(later, 10, LEASE_S).claimed
        assert store.start_sending(again.id, later, LEASE_S) is not None
        assert store.hand_back(job.id, later, 5)
        row = store.get(job.id)
        assert (row.status, row.attempts, row.last_call_at) == (JobStatus.SCHEDULED, 1, NOW)

    # ------------------------------------------------------------------ finish
    def test_finish_sent(self, store: Store) -> None:
        job = sending(store)
        later = NOW + timedelta(seconds=1)
        store.finish(job, sent(), later, NOW, 120)
        row = store.get(job.id)
        assert (row.status, row.attempts, row.sent_at, row.lease_until) == (
            JobStatus.SENT,
            1,
            later,
            None,
        )
        assert (row.last_errcode, row.last_error) == (None, None)
        [attempt] = store.attempts_of(job.id)
        assert (attempt.attempt_no, attempt.outcome, attempt.started_at) == (1, "sent", NOW)
        assert (attempt.duration_ms, attempt.errcode, attempt.error) == (120, None, None)

    def test_finish_failed_keeps_the_vendors_error(self, store: Store) -> None:
        job = sending(store)
        refused = Decision(JobStatus.FAILED, Outcome.REJECTED, True, None, 20001, "参数错误")
        store.finish(job, refused, NOW, NOW, 5)
        row = store.get(job.id)
        assert (row.status, row.attempts) == (JobStatus.FAILED, 1)
        assert (row.last_errcode, row.last_error, row.sent_at) == (20001, "参数错误", None)
        assert [(a.outcome, a.errcode) for a in store.attempts_of(job.id)] == [("rejected", 20001)]

    def test_finish_retry_uses_an_attempt_and_waits_until_not_before(self, store: Store) -> None:
        job = sending(store)
        retry = Decision(JobStatus.SCHEDULED, Outcome.NOT_SENT, True, 30.0, None, "refused")
        store.finish(job, retry, NOW, NOW, 5)
        row = store.get(job.id)
        assert (row.status, row.attempts, row.lease_until) == (JobStatus.SCHEDULED, 1, None)
        assert row.not_before == NOW + timedelta(seconds=30)
        assert store.next_due_at() == NOW + timedelta(seconds=30)
        assert store.claim_due(NOW + timedelta(seconds=29), 10, LEASE_S).claimed == []
        [again] = store.claim_due(NOW + timedelta(seconds=30), 10, LEASE_S).claimed
        second = store.start_sending(again.id, NOW + timedelta(seconds=30), LEASE_S)
        assert second is not None and second.attempts == 1
        store.finish(second, sent(), NOW + timedelta(seconds=31), NOW + timedelta(seconds=30), 5)
        assert [(a.attempt_no, a.outcome) for a in store.attempts_of(job.id)] == [
            (1, "not_sent"),
            (2, "sent"),
        ]
        assert store.get(job.id).attempts == 2

    def test_finish_without_an_attempt_used(self, store: Store) -> None:
        job = sending(store)
        busy = Decision(JobStatus.SCHEDULED, Outcome.BUSY, False, 1.0, 10052, "busy")
        store.finish(job, busy, NOW, NOW, 5)
        row = store.get(job.id)
        assert (row.status, row.attempts, row.last_errcode) == (JobStatus.SCHEDULED, 0, 10052)
        assert row.not_before == NOW + timedelta(seconds=1)
        assert [(a.attempt_no, a.outcome) for a in store.attempts_of(job.id)] == [(1, "busy")]

    # ------------------------------------------------------------------ the late answer
    @pytest.mark.parametrize(
        ("decision", "settled"),
        [
            (sent(), JobStatus.SENT),
            (
                Decision(JobStatus.FAILED, Outcome.REJECTED, True, None, 20001, "no"),
                JobStatus.FAILED,
            ),
        ],
    )
    def test_a_certain_late_answer_settles_an_unknown_job(
        self, store: Store, decision: Decision, settled: str
    ) -> None:
        job = sending(store)
        later = NOW + timedelta(seconds=LEASE_S + 1)
        assert store.recover(later, 300).unknown == [job.id]
        store.finish(job, decision, later, NOW, 61_000)
        row = store.get(job.id)
        assert (row.status, row.attempts) == (settled, 1)
        assert len(store.attempts_of(job.id)) == 1

    def test_an_uncertain_late_answer_leaves_an_unknown_job_unknown(self, store: Store) -> None:
        job = sending(store)
        later = NOW + timedelta(seconds=LEASE_S + 1)
        store.recover(later, 300)
        retry = Decision(JobStatus.SCHEDULED, Outcome.NOT_SENT, True, 5.0, None, "refused")
        store.finish(job, retry, later, NOW, 61_000)
        row = store.get(job.id)
        assert (row.status, row.attempts) == (JobStatus.UNKNOWN, 0)
        assert "may exist at the vendor" in row.last_error
        assert [a.outcome for a in store.attempts_of(job.id)] == ["not_sent"], "still recorded"


class TestJobStore(StoreContract):
    """On SQLite and PostgreSQL: conftest's `store` fixture, default corp `corp-default`."""


class TestFakeJobStore(StoreContract):
    @pytest.fixture
    def store(self) -> FakeJobStore:
        return FakeJobStore(default_corp="corp-default")
