"""An operator's reads and moves: one job and its attempts, lists, cancel, retry,
resolve."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, func, select

from broadcaster.errors import JobNotFound, StateConflict
from broadcaster.jobs.states import CANCELLABLE_STATUSES, JobStatus
from broadcaster.jobs.store.base import StoreBase, move_jobs, update_count
from broadcaster.jobs.tables import attempts, jobs


class OperatorStore(StoreBase):
    """The CLI's operator commands."""

    def retry(self, job_id: int, now: datetime) -> None:
        """Give a `failed` job a fresh set of attempts."""
        self._operator_move(
            job_id,
            now,
            {JobStatus.FAILED},
            status=JobStatus.SCHEDULED,
            attempts=0,
            not_before=None,
            held_until=now,  # an operator's decision: the stale guard counts from now
            last_error=None,
            last_errcode=None,
        )

    def resolve(self, job_id: int, now: datetime, *, sent: bool) -> None:
        """Settle an `unknown` job: the operator saw the message at the vendor (`sent`),
        or decided it must be sent again."""
        changes: dict[str, Any] = (
            {
                "status": JobStatus.SENT,
                "sent_at": now,
                "last_error": "resolved as sent by an operator",
            }
            if sent
            else {
                "status": JobStatus.SCHEDULED,
                "not_before": None,
                "held_until": now,  # the stale guard counts from the operator's decision
                "last_error": "resolved for resending by an operator",
            }
        )
        self._operator_move(job_id, now, {JobStatus.UNKNOWN}, **changes)

    def _operator_move(
        self, job_id: int, now: datetime, allowed: set[JobStatus], **changes: Any
    ) -> None:
        with self._begin() as connection:
            done = connection.execute(
                move_jobs(now, jobs.c.id == job_id, jobs.c.status.in_(list(allowed)), **changes)
            ).rowcount
            status = (
                None
                if done
                else connection.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
            )
        if done:
            return
        if status is None:
            raise JobNotFound(f"no job with id {job_id}")
        wanted = " or ".join(sorted(allowed))
        raise StateConflict(f"job {job_id} is {status}; this needs a job that is {wanted}")

    def get(self, job_id: int) -> Row[Any]:
        with self._begin() as connection:
            row = connection.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        return row

    def attempts_of(self, job_id: int) -> list[Row[Any]]:
        with self._begin() as connection:
            return list(
                connection.execute(
                    select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.id)
                ).all()
            )

    def list_jobs(
        self,
        *,
        status: str | None = None,
        campaign: str | None = None,
        corp_id: str | None = None,
        delivery: str | None = None,
        limit: int = 50,
    ) -> list[Row[Any]]:
        """The newest jobs, filtered; `delivery` is a mission status as the vendor reports
        it (`waiting`, `completed`, ...) or `none` for sent jobs with no mission found."""
        query = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if delivery == "none":
            query = query.where(jobs.c.status == "sent", jobs.c.delivery_status.is_(None))
        elif delivery:
            query = query.where(jobs.c.delivery_status == delivery)
        if status:
            query = query.where(jobs.c.status == status)
        if campaign:
            query = query.where(jobs.c.campaign == campaign)
        if corp_id:
            query = query.where(jobs.c.corp_id == corp_id)
        with self._begin() as connection:
            return list(connection.execute(query).all())

    def cancel(self, job_id: int, now: datetime) -> None:
        """Cancel one job. A job already `sending` (or finished) cannot be, and says why."""
        with self._begin() as connection:
            if _cancel(connection, now, jobs.c.id == job_id):
                return
            status = connection.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
        if status is None:
            raise JobNotFound(f"no job with id {job_id}")
        if status == JobStatus.SENDING:
            raise StateConflict(
                f"job {job_id} is sending: the vendor call may have started and cannot be "
                "taken back; it will end sent, failed or unknown"
            )
        raise StateConflict(f"job {job_id} is already {status} and cannot be cancelled")

    def cancel_campaign(self, campaign: str, now: datetime) -> tuple[int, int]:
        """Cancel every cancellable job of a campaign; returns (cancelled, left sending)."""
        with self._begin() as connection:
            cancelled = _cancel(connection, now, jobs.c.campaign == campaign)
            sending = connection.execute(
                select(func.count()).where(
                    and_(jobs.c.campaign == campaign, jobs.c.status == JobStatus.SENDING)
                )
            ).scalar_one()
        return cancelled, sending


def _cancel(connection: Connection, now: datetime, where: ColumnElement[bool]) -> int:
    """Cancel the cancellable jobs matching `where`; returns how many."""
    statement = move_jobs(
        now, where, jobs.c.status.in_(list(CANCELLABLE_STATUSES)), status=JobStatus.CANCELLED
    )
    return update_count(connection, statement)
