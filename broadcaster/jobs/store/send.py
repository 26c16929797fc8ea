"""A worker's reads and writes around one vendor call: peek, the compare-and-set
to `sending` committed before the call, a wait for quota, the outcome."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from broadcaster.jobs.screening import sending_problem
from broadcaster.jobs.states import CERTAIN_OUTCOMES, JobStatus
from broadcaster.jobs.store.base import (
    AnyRow,
    SendingJob,
    StoreBase,
    expire_jobs,
    move_jobs,
    storable_text,
    update_returning,
)
from broadcaster.jobs.tables import attempts, jobs

if TYPE_CHECKING:
    from broadcaster.jobs.policy import Decision


class SendingStore(StoreBase):
    """A worker's part (`ports.SendStore`)."""

    def peek(self, job_id: int) -> AnyRow | None:
        """Status and corp of a job, to drop a stale message before touching the quota."""
        with self._begin() as connection:
            return connection.execute(
                select(jobs.c.status, jobs.c.corp_id).where(jobs.c.id == job_id)
            ).first()

    def start_sending(self, job_id: int, now: datetime, lease_s: float) -> SendingJob | None:
        """Compare-and-set `queued` -> `sending`, committed before the vendor call. Of two
        deliveries of one broker message, exactly one gets the row; None for the other
        (and for a job cancelled or expired meanwhile, or failed here because a column the
        call needs holds a value of the wrong type: see `screening.sending_problem`)."""
        with self._begin() as connection:
            taken = update_returning(
                connection,
                update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.status == JobStatus.QUEUED,
                    (jobs.c.expires_at.is_(None)) | (jobs.c.expires_at > now),
                )
                .values(
                    status=JobStatus.SENDING,
                    updated_at=now,
                    last_call_at=now,
                    lease_until=now + timedelta(seconds=lease_s),
                ),
                jobs.c.id,
                jobs.c.corp_id,
                jobs.c.payload,
                jobs.c.attempts,
                jobs.c.max_attempts,
            )
            row = taken[0] if taken else None
            if row is None:
                expire_jobs(
                    connection,
                    now,
                    jobs.c.id == job_id,
                    jobs.c.status == JobStatus.QUEUED,
                    jobs.c.expires_at <= now,
                )
                return None
            problem = sending_problem(row)
            if problem is not None:  # never call the vendor for it (issue 9)
                connection.execute(
                    move_jobs(
                        now,
                        jobs.c.id == job_id,
                        status=JobStatus.FAILED,
                        last_error=storable_text(problem),
                    )
                )
                return None
        return SendingJob(
            row.id,
            row.corp_id or self.default_corp or "",
            row.payload,
            row.attempts,
            row.max_attempts,
        )

    def requeue_later(self, job_id: int, now: datetime, delay_s: float) -> bool:
        """A `queued` job waits for quota (or a block): back to `scheduled`, not before
        `now + delay_s`. No attempt is used: the vendor was not called."""
        with self._begin() as connection:
            return bool(
                connection.execute(
                    move_jobs(
                        now,
                        jobs.c.id == job_id,
                        jobs.c.status == JobStatus.QUEUED,
                        status=JobStatus.SCHEDULED,
                        not_before=now + timedelta(seconds=delay_s),
                    )
                ).rowcount
            )

    def finish(
        self,
        job: SendingJob,
        decision: Decision,
        now: datetime,
        started_at: datetime,
        duration_ms: int,
    ) -> None:
        """Record the vendor call's outcome and move the job on, in one transaction."""
        attempts_after = job.attempts + (1 if decision.counts_attempt else 0)
        error = None if decision.error is None else storable_text(decision.error)
        values: dict[str, Any] = {
            "status": decision.status,
            "attempts": attempts_after,
            "last_errcode": decision.errcode,
            "last_error": error,
        }
        if decision.status == JobStatus.SENT:
            values["sent_at"] = now
        if decision.retry_in_s is not None:
            values["not_before"] = now + timedelta(seconds=decision.retry_in_s)
        with self._begin() as connection:
            moved = connection.execute(
                move_jobs(now, jobs.c.id == job.id, jobs.c.status == JobStatus.SENDING, **values)
            ).rowcount
            if not moved and decision.outcome in CERTAIN_OUTCOMES:
                # The sweep called the job `unknown` while this call was still running;
                # its answer, when certain (created, or refused as a business error), is
                # the truth, so it settles the job rather than being lost.
                connection.execute(
                    move_jobs(
                        now,
                        jobs.c.id == job.id,
                        jobs.c.status == JobStatus.UNKNOWN,
                        jobs.c.attempts == job.attempts,
                        **values,
                    )
                )
            connection.execute(
                insert(attempts).values(
                    job_id=job.id,
                    attempt_no=job.attempts + 1,
                    started_at=started_at,
                    duration_ms=duration_ms,
                    outcome=decision.outcome,
                    errcode=decision.errcode,
                    error=error,
                )
            )
