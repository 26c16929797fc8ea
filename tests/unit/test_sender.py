"""`Sender` on fakes: every row of the delivery table (`broadcaster/jobs/policy.py`), what it
does to the quota, and the messages it must drop, with no database, Redis or HTTP, and no
sleeping (the quota runs on a fake clock). `tests/integration/test_sender.py` proves the
same path on the real services."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from broadcaster.corps import CorpDirectory
from broadcaster.errors import (
    CredentialsRejected,
    OutcomeUnknown,
    TokenRejected,
    VendorBlocked,
    VendorBusy,
    VendorRejected,
    VendorThrottled,
    VendorUnreachable,
)
from broadcaster.jobs.states import JobStatus, Outcome
from broadcaster.quota.memory import InMemoryQuota
from broadcaster.vendor import CREATE_API
from tests.conftest import make_settings
from tests.fakes import FakeJobStore, FakeVendor
from worker.sender import Sender

NOW = datetime(2026, 12, 1, 1, 0, 0)
CORP = "corp-a"
JITTER = 0.5
"""What the sender's `rng` returns: the retry delays below are computed from it."""


class Clock:
    """One fake clock for the quota (seconds) and the sender (datetimes): `sleep`
    advances it, so a wait is instant and still seen by both."""

    def __init__(self) -> None:
        self.t = 0.0

    def seconds(self) -> float:
        return self.t

    def now(self) -> datetime:
        return NOW + timedelta(seconds=self.t)

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


class Rig:
    def __init__(self, script: list[BaseException | None] | None = None, **settings: Any):
        self.settings = make_settings(weiban_corp_id="corp-default", **settings)
        self.clock = Clock()
        self.store = FakeJobStore(default_corp="corp-default")
        self.quota = InMemoryQuota(
            CorpDirectory(self.settings).limits,
            slot_lease_s=30,
            block_s=self.settings.weiban_block_s,
            clock=self.clock.seconds,
            sleep=self.clock.sleep,
        )
        self.vendor = FakeVendor(list(script or []))
        self.sender = Sender(
            self.store,
            self.quota,
            self.vendor,
            self.settings,
            clock=self.clock.now,
            rng=lambda: JITTER,
            monotonic=self.clock.seconds,
        )

    def queued(self, **job: Any) -> int:
        """A job claimed by the scheduler, as a broker message finds it."""
        job_id = self.store.add(
            {"name": "x"}, send_at=self.clock.now(), corp_id=job.pop("corp_id", CORP), **job
        )
        claimed = self.store.claim_due(self.clock.now(), 100, 300).claimed
        assert job_id in [claimed_job.id for claimed_job in claimed]
        return job_id

    def calls_counted(self, corp_id: str = CORP) -> int:
        """Calls the quota counted against the corp in the last hour."""
        return self.quota.calls_in_last(corp_id, CREATE_API, 3600)


BACKOFF_1 = 5.0 * (0.5 + JITTER / 2)
"""The first retry's delay at the default retry_base_s of 5 s."""


@pytest.mark.parametrize(
    ("error", "outcome", "status", "attempts", "retry_in_s"),
    [
        pytest.param(None, Outcome.SENT, JobStatus.SENT, 1, None, id="sent"),
        pytest.param(
            VendorUnreachable("connection refused"),
            Outcome.NOT_SENT,
            JobStatus.SCHEDULED,
            1,
            BACKOFF_1,
            id="not-sent-backs-off",
        ),
        pytest.param(
            TokenRejected("10001 twice", errcode=10001),
            Outcome.TOKEN,
            JobStatus.SCHEDULED,
            1,
            BACKOFF_1,
            id="token-backs-off",
        ),
        pytest.param(
            VendorBusy("busy", errcode=10052),
            Outcome.BUSY,
            JobStatus.SCHEDULED,
            0,
            1.0,
            id="10052-no-attempt",
        ),
        pytest.param(
            VendorBlocked("blocked", errcode=10053),
            Outcome.BLOCKED,
            JobStatus.SCHEDULED,
            0,
            60.0 + JITTER,
            id="10053-no-attempt",
        ),
        pytest.param(
            VendorThrottled("HTTP 429", retry_after_s=7.0),
            Outcome.THROTTLED,
            JobStatus.SCHEDULED,
            0,
            7.0,
            id="429-no-attempt",
        ),
        pytest.param(
            CredentialsRejected("secret refused", errcode=40001),
            Outcome.CREDENTIALS,
            JobStatus.SCHEDULED,
            0,
            60.0,
            id="credentials-no-attempt",
        ),
        pytest.param(
            VendorRejected("参数错误", errcode=20001),
            Outcome.REJECTED,
            JobStatus.FAILED,
            1,
            None,
            id="business-error-fails",
        ),
        pytest.param(
            OutcomeUnknown("ReadTimeout after sending"),
            Outcome.AMBIGUOUS,
            JobStatus.UNKNOWN,
            1,
            None,
            id="ambiguous-unknown",
        ),
    ],
)
def test_each_outcome_of_the_call_moves_the_job_as_the_table_says(
    error: BaseException | None,
    outcome: Outcome,
    status: JobStatus,
    attempts: int,
    retry_in_s: float | None,
) -> None:
    rig = Rig([error])
    job_id = rig.queued(max_attempts=5)
    assert rig.sender.send(job_id) == outcome
    job = rig.store.get(job_id)
    assert (job.status, job.attempts, job.lease_until) == (status, attempts, None)
    assert job.not_before == (None if retry_in_s is None else NOW + timedelta(seconds=retry_in_s))
    assert (job.sent_at is not None) == (status == JobStatus.SENT)
    assert job.last_errcode == getattr(error, "errcode", None)
    assert [(a.attempt_no, a.outcome) for a in rig.store.attempts_of(job_id)] == [(1, outcome)]
    assert rig.vendor.calls == [(CORP, '{"name": "x"}')]
    assert rig.quota.in_flight(CORP, CREATE_API) == 0, "the slot is given back"
    assert rig.calls_counted() == 1
    assert rig.sender.send(job_id) == Outcome.IGNORED, "a second delivery sends nothing"
    assert len(rig.vendor.calls) == 1


def test_the_last_attempt_not_sent_fails_the_job() -> None:
    rig = Rig([VendorUnreachable("connection refused")])
    job_id = rig.queued(max_attempts=1)
    assert rig.sender.send(job_id) == Outcome.NOT_SENT
    job = rig.store.get(job_id)
    assert (job.status, job.attempts, job.not_before) == (JobStatus.FAILED, 1, None)
    assert "gave up after 1 attempts" in job.last_error


def test_an_ambiguous_answer_is_retried_when_so_configured() -> None:
    rig = Rig([OutcomeUnknown("502 from the gateway")], weiban_on_ambiguous="retry")
    job_id = rig.queued()
    assert rig.sender.send(job_id) == Outcome.AMBIGUOUS
    job = rig.store.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.SCHEDULED, 1)
    assert job.not_before == NOW + timedelta(seconds=BACKOFF_1)


def test_a_crash_inside_the_vendor_call_is_unknown_not_a_stuck_sending_job() -> None:
    rig = Rig([RuntimeError("decoder fell over")])
    job_id = rig.queued()
    assert rig.sender.send(job_id) == Outcome.AMBIGUOUS
    job = rig.store.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.UNKNOWN, 1)
    assert "RuntimeError: decoder fell over" in job.last_error
    assert rig.quota.in_flight(CORP, CREATE_API) == 0


def test_10052_lowers_the_corps_in_flight_cap() -> None:
    rig = Rig([VendorBusy("busy", errcode=10052)])
    rig.sender.send(rig.queued())
    # the 10052 took the cap from 4 to 3; the next one takes it to 2
    assert rig.quota.on_busy(CORP, CREATE_API) == 2
    assert rig.quota.on_busy("corp-b", CREATE_API) == 3, "another corp's cap is untouched"


def test_10053_blocks_the_corp_for_every_caller_and_the_next_job_waits_unsent() -> None:
    rig = Rig([VendorBlocked("blocked", errcode=10053)])
    first, second = rig.queued(), rig.queued()
    assert rig.sender.send(first) == Outcome.BLOCKED
    assert rig.quota.blocked_for(CORP, CREATE_API) == 60.0
    assert rig.quota.blocked_corps(CREATE_API) == {CORP}
    assert rig.sender.send(second) == Outcome.BLOCKED, "held back by the block in force"
    assert len(rig.vendor.calls) == 1, "no vendor call during the block"
    job = rig.store.get(second)
    assert (job.status, job.attempts) == (JobStatus.SCHEDULED, 0)
    assert job.not_before == NOW + timedelta(seconds=60.0 + JITTER * 0.1)
    assert rig.store.attempts_of(second) == [], "no call, no attempt recorded"


def test_429_pauses_the_corp_for_its_retry_after() -> None:
    rig = Rig([VendorThrottled("HTTP 429", retry_after_s=7.0)])
    rig.sender.send(rig.queued())
    assert rig.quota.blocked_for(CORP, CREATE_API) == 7.0
    rig.clock.sleep(7.001)
    assert rig.quota.blocked_corps(CREATE_API) == set(), "over once its Retry-After passed"


def test_no_slot_within_the_workers_patience_requeues_without_an_attempt() -> None:
    rig = Rig(weiban_quota_per_minute=1)
    first, second = rig.queued(), rig.queued()
    assert rig.sender.send(first) == Outcome.SENT
    assert rig.sender.send(second) == Outcome.QUOTA_WAIT
    assert len(rig.vendor.calls) == 1
    job = rig.store.get(second)
    assert (job.status, job.attempts, job.lease_until) == (JobStatus.SCHEDULED, 0, None)
    assert job.not_before is not None
    wait_s = (job.not_before - NOW).total_seconds()
    assert 55 < wait_s < 61, f"until the minute's window frees a call, not {wait_s}"
    assert rig.store.attempts_of(second) == []
    assert rig.calls_counted() == 1, "the refused reservation took nothing"


@pytest.mark.parametrize("status", [JobStatus.CANCELLED, JobStatus.SENT, JobStatus.EXPIRED])
def test_a_message_for_a_job_no_longer_queued_is_ignored_without_a_slot(status: str) -> None:
    rig = Rig()
    job_id = rig.queued()
    rig.store.jobs[job_id].status = status  # an operator cancelled it, or it was settled
    assert rig.sender.send(job_id) == Outcome.IGNORED
    assert rig.store.get(job_id).status == status
    assert rig.vendor.calls == []
    assert rig.calls_counted() == 0, "no quota spent on it"
    assert rig.sender.send(999_999) == Outcome.IGNORED, "nor on a job that does not exist"


def test_a_job_expired_by_its_message_is_not_sent_and_takes_no_slot() -> None:
    rig = Rig()
    job_id = rig.queued(expires_at=NOW + timedelta(microseconds=1))
    rig.clock.t = 0.000001  # expired between the claim and the compare-and-set
    assert rig.sender.send(job_id) == Outcome.IGNORED
    assert rig.store.get(job_id).status == JobStatus.EXPIRED
    assert rig.vendor.calls == []
    assert rig.quota.in_flight(CORP, CREATE_API) == 0
    assert rig.calls_counted() == 0, "no quota spent on it"


def test_the_default_corp_is_used_for_a_job_without_one() -> None:
    rig = Rig()
    job_id = rig.store.add({"name": "x"}, send_at=NOW)  # corp_id NULL
    rig.store.claim_due(NOW, 10, 300)
    rig.store.jobs[job_id].corp_id = None  # as a row queued by an older version holds it
    assert rig.sender.send(job_id) == Outcome.SENT
    assert rig.vendor.calls == [("corp-default", '{"name": "x"}')]
    assert rig.calls_counted("corp-default") == 1
