"""In-memory stand-ins for the ports (`broadcaster/ports.py`), for unit tests without a
database, a broker or HTTP.

`FakeJobStore` follows the real `JobStore`'s state machine for the methods the scheduler
and the worker call; `tests/integration/test_store_contract.py` runs the same tests on it
and on the real store (SQLite and PostgreSQL), so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from broadcaster.broker.dispatch import EnqueueFailed
from broadcaster.errors import JobNotFound
from broadcaster.jobs.policy import Decision
from broadcaster.jobs.states import CERTAIN_OUTCOMES, JobStatus
from broadcaster.jobs.store import ClaimedJob, ClaimResult, RecoveryResult, SendingJob

EXPIRED_REASON = "expires_at passed before it could be sent"
LOST_CALL_REASON = (
    "worker lost during the vendor call (lease expired); the message may exist at the "
    "vendor: resolve with `broadcaster jobs resolve`"
)
NO_CORP_REASON = (
    "corp_id: NULL and no default corp is set; write corp_id in the row or set WEIBAN_CORP_ID"
)


@dataclass
class FakeJob:
    """One row of `broadcast_jobs`, with the real table's column names."""

    id: int
    payload: str
    send_at: datetime
    corp_id: str | None = None
    dedupe_key: str | None = None
    campaign: str | None = None
    priority: int = 0
    expires_at: datetime | None = None
    max_attempts: int = 5
    status: str = JobStatus.SCHEDULED
    not_before: datetime | None = None
    attempts: int = 0
    lease_until: datetime | None = None
    sent_at: datetime | None = None
    last_errcode: int | None = None
    last_error: str | None = None
    updated_at: datetime | None = None
    last_call_at: datetime | None = None

    @property
    def due_at(self) -> datetime:
        return self.not_before or self.send_at


@dataclass(frozen=True)
class FakeAttempt:
    """One row of `broadcast_attempts`."""

    job_id: int
    attempt_no: int
    started_at: datetime
    duration_ms: int | None
    outcome: str
    errcode: int | None
    error: str | None


class FakeJobStore:
    """`SchedulerStore` and `SendStore` in memory: a dict of job records by id.

    Same state machine as `JobStore` for claim_due, release, next_due_at, recover,
    queued_by_corp, start_sending, hand_back and finish (proved by the contract
    suite). What it does NOT do: screen rows for bad payloads or values of odd types
    (`screening.py`), clean error text for storage (`storable_text`), or anything
    concurrent. Those stay proven on real databases only. `add` seeds a job without
    validation; `get` and `attempts_of` read the state back, as on the real store.
    """

    def __init__(self, *, default_corp: str | None = None) -> None:
        self.default_corp = default_corp
        self.jobs: dict[int, FakeJob] = {}
        self.attempts: list[FakeAttempt] = []
        self._next_id = 1

    # ------------------------------------------------------------------ seeding, reading
    def add(
        self,
        payload: str | dict[str, Any] = "{}",
        *,
        corp_id: str | None = None,
        send_at: datetime,
        priority: int = 0,
        expires_at: datetime | None = None,
        max_attempts: int = 5,
        **columns: Any,
    ) -> int:
        """Insert one job (no validation); returns its id."""
        job_id = self._next_id
        self._next_id += 1
        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        self.jobs[job_id] = FakeJob(
            id=job_id,
            payload=text,
            send_at=send_at,
            corp_id=corp_id,
            priority=priority,
            expires_at=expires_at,
            max_attempts=max_attempts,
            **columns,
        )
        return job_id

    def get(self, job_id: int) -> FakeJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id}")
        return replace(job)  # a snapshot, like a row read from the database

    def attempts_of(self, job_id: int) -> list[FakeAttempt]:
        return [attempt for attempt in self.attempts if attempt.job_id == job_id]

    def _corp(self, job: FakeJob) -> str:
        return job.corp_id if job.corp_id is not None else (self.default_corp or "")

    @staticmethod
    def _move(job: FakeJob, now: datetime, **values: Any) -> None:
        """Every move ends the lease and stamps the row, like the real store's `_move`."""
        job.lease_until = None
        job.updated_at = now
        for name, value in values.items():
            setattr(job, name, value)

    # ------------------------------------------------------------------ scheduler
    def claim_due(
        self, now: datetime, limit: int, lease_s: float, *, skip_corps: Collection[str] = ()
    ) -> ClaimResult:
        skipped = set(skip_corps)
        due = [
            job
            for job in self.jobs.values()
            if job.status == JobStatus.SCHEDULED
            and job.due_at <= now
            and self._corp(job) not in skipped
        ]
        due.sort(key=lambda job: (-job.priority, job.due_at, job.id))
        result = ClaimResult()
        for job in due[:limit]:
            job.status = JobStatus.QUEUED
            job.lease_until = now + timedelta(seconds=lease_s)
            job.updated_at = now
            self._screen(job, now, result)
        result.claimed.sort(key=lambda job: (-job.priority, job.due_at, job.id))
        return result

    def _screen(self, job: FakeJob, now: datetime, result: ClaimResult) -> None:
        """The real claim's verdict, for well-formed rows only: expired, no corp, or fit."""
        if job.expires_at is not None and job.expires_at <= now:
            self._move(job, now, status=JobStatus.EXPIRED, last_error=EXPIRED_REASON)
            result.expired.append(job.id)
        elif not self._corp(job):
            self._move(job, now, status=JobStatus.FAILED, last_error=NO_CORP_REASON)
            result.failed.append((job.id, NO_CORP_REASON))
        else:
            job.corp_id = self._corp(job)  # the claim writes the default corp into the row
            result.claimed.append(ClaimedJob(job.id, job.corp_id, job.priority, job.due_at))

    def release(self, job_ids: Sequence[int], now: datetime) -> int:
        released = 0
        for job_id in set(job_ids):
            job = self.jobs.get(job_id)
            if job is not None and job.status == JobStatus.QUEUED:
                self._move(job, now, status=JobStatus.SCHEDULED)
                released += 1
        return released

    def next_due_at(self) -> datetime | None:
        due = [job.due_at for job in self.jobs.values() if job.status == JobStatus.SCHEDULED]
        return min(due, default=None)

    def recover(self, now: datetime, queued_lease_s: float) -> RecoveryResult:
        expired = 0
        for job in self.jobs.values():
            if (
                job.status in (JobStatus.SCHEDULED, JobStatus.QUEUED)
                and job.expires_at is not None
                and job.expires_at <= now
            ):
                self._move(job, now, status=JobStatus.EXPIRED, last_error=EXPIRED_REASON)
                expired += 1
        unknown = []
        for job in self.jobs.values():
            if job.status == JobStatus.SENDING and _lapsed(job, now):
                self._move(job, now, status=JobStatus.UNKNOWN, last_error=LOST_CALL_REASON)
                unknown.append(job.id)
        requeued = ClaimResult()
        for job in self.jobs.values():
            if job.status == JobStatus.QUEUED and _lapsed(job, now):
                job.lease_until = now + timedelta(seconds=queued_lease_s)
                job.updated_at = now
                self._screen(job, now, requeued)
        return RecoveryResult(
            requeued=requeued.claimed,
            unknown=unknown,
            expired=expired + len(requeued.expired),
            failed=requeued.failed,
        )

    def queued_by_corp(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            if job.status == JobStatus.QUEUED:
                counts[self._corp(job)] = counts.get(self._corp(job), 0) + 1
        return counts

    # ------------------------------------------------------------------ workers
    def start_sending(self, job_id: int, now: datetime, lease_s: float) -> SendingJob | None:
        job = self.jobs.get(job_id)
        if job is None or job.status != JobStatus.QUEUED:
            return None
        if job.expires_at is not None and job.expires_at <= now:
            self._move(job, now, status=JobStatus.EXPIRED, last_error=EXPIRED_REASON)
            return None
        job.status = JobStatus.SENDING
        job.lease_until = now + timedelta(seconds=lease_s)
        job.updated_at = now
        job.last_call_at = now
        return SendingJob(job.id, self._corp(job), job.payload, job.attempts, job.max_attempts)

    def hand_back(self, job_id: int, now: datetime, delay_s: float) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.status != JobStatus.SENDING:
            return False
        calls = [attempt.started_at for attempt in self.attempts_of(job_id)]
        self._move(
            job,
            now,
            status=JobStatus.SCHEDULED,
            not_before=now + timedelta(seconds=delay_s),
            last_call_at=max(calls, default=None),
        )
        return True

    def finish(
        self,
        job: SendingJob,
        decision: Decision,
        now: datetime,
        started_at: datetime,
        duration_ms: int,
    ) -> None:
        values: dict[str, Any] = {
            "status": decision.status,
            "attempts": job.attempts + (1 if decision.counts_attempt else 0),
            "last_errcode": decision.errcode,
            "last_error": decision.error,
        }
        if decision.status == JobStatus.SENT:
            values["sent_at"] = now
        if decision.retry_in_s is not None:
            values["not_before"] = now + timedelta(seconds=decision.retry_in_s)
        row = self.jobs[job.id]
        if row.status == JobStatus.SENDING:
            self._move(row, now, **values)
        elif (
            decision.outcome in CERTAIN_OUTCOMES
            and row.status == JobStatus.UNKNOWN
            and row.attempts == job.attempts
        ):
            # The sweep called it `unknown` while the call ran; a certain answer settles it.
            self._move(row, now, **values)
        self.attempts.append(
            FakeAttempt(
                job_id=job.id,
                attempt_no=job.attempts + 1,
                started_at=started_at,
                duration_ms=duration_ms,
                outcome=decision.outcome,
                errcode=decision.errcode,
                error=decision.error,
            )
        )


def _lapsed(job: FakeJob, now: datetime) -> bool:
    return job.lease_until is not None and job.lease_until < now


class FakeDispatch:
    """The broker: records the ids enqueued, batch by batch. Set `fail` to a message to
    make enqueues raise `EnqueueFailed` (none of the batch counts as enqueued), every one
    after the first `fail_after` batches that went out."""

    def __init__(self, *, fail: str | None = None, fail_after: int = 0) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.fail_after = fail_after

    @property
    def enqueued(self) -> list[int]:
        return [job_id for batch in self.batches for job_id in batch]

    def enqueue(self, job_ids: Iterable[int]) -> list[int]:
        ids = list(job_ids)
        if self.fail is not None and len(self.batches) >= self.fail_after:
            raise EnqueueFailed(self.fail)
        if ids:
            self.batches.append(ids)
        return ids


@dataclass
class FakeVendor:
    """The vendor's create call, scripted: one entry per call, None for success or the
    exception to raise (a `VendorError`, or anything else to stand for a crash). Calls
    past the end of the script succeed. Records every call as (corp_id, body)."""

    script: list[BaseException | None] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def create_group_message(self, corp_id: str, body: str) -> None:
        self.calls.append((corp_id, body))
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome


if TYPE_CHECKING:  # mypy checks the fakes fit the ports they stand in for
    from broadcaster.ports import Dispatch, SchedulerStore, SendStore, Vendor

    _scheduler_store: SchedulerStore = FakeJobStore()
    _send_store: SendStore = FakeJobStore()
    _dispatch: Dispatch = FakeDispatch()
    _vendor: Vendor = FakeVendor()
