"""The reconciler's reads and moves: `unknown` jobs to settle from the vendor's list, sent
jobs whose delivery is still open, and what the list said of each.

Every move is a compare-and-set on the state the reconciler read (status, and for an
`unknown` job its attempt count), so two schedulers reconciling at once, an operator
resolving by hand, or a late answer from the worker each win or lose cleanly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, func, insert, select, update

from broadcaster.jobs.states import JobStatus, Outcome
from broadcaster.jobs.store.base import AnyRow, StoreBase, move_jobs, storable_text
from broadcaster.jobs.tables import TRACKING, attempts, jobs

call_started = func.coalesce(jobs.c.last_call_at, jobs.c.sent_at, jobs.c.updated_at)
"""When a job's latest vendor call began: `last_call_at`, or for rows from before that
column (and rows an operator resolved) the best time we have."""


@dataclass(frozen=True)
class OpenJob:
    """A job whose truth the vendor's list can tell: `unknown`, or `sent` and tracked."""

    id: int
    corp_id: str
    status: JobStatus
    payload: str
    attempts: int
    max_attempts: int
    call_started_at: datetime
    mission_id: str | None
    delivery_status: str | None
    groups_reached: int | None = None
    staff_confirmed: int | None = None

    @property
    def delivery_seen(self) -> tuple[object, ...]:
        """What a new read is compared with, so an unchanged mission costs no write."""
        return (self.mission_id, self.delivery_status, self.groups_reached, self.staff_confirmed)


@dataclass(frozen=True)
class Delivery:
    """A mission's state as one list read showed it."""

    mission_id: str | None
    status: str | None
    groups_reached: int | None
    groups_unreached: int | None
    staff_confirmed: int | None
    staff_total: int | None
    detail: str | None
    """JSON text: the groups reached and not reached."""


_OPEN_COLUMNS = (
    jobs.c.id,
    jobs.c.corp_id,
    jobs.c.status,
    jobs.c.payload,
    jobs.c.attempts,
    jobs.c.max_attempts,
    call_started.label("call_started_at"),
    jobs.c.vendor_mission_id,
    jobs.c.delivery_status,
    jobs.c.delivery_groups_reached,
    jobs.c.delivery_staff_confirmed,
)


class ReconcileStore(StoreBase):
    """The reconciler's part (`ports.ReconcileStore`)."""

    def unknown_to_settle(self, now: datetime, after_s: float, limit: int) -> list[OpenJob]:
        """`unknown` jobs whose call began at least `after_s` ago, oldest call first."""
        query = (
            select(*_OPEN_COLUMNS)
            .where(
                jobs.c.status == JobStatus.UNKNOWN,
                call_started <= now - timedelta(seconds=after_s),
            )
            .order_by(call_started, jobs.c.id)
            .limit(limit)
        )
        return self._open_jobs(query)

    def sent_to_track(self, now: datetime, track_s: float, limit: int) -> list[OpenJob]:
        """Sent jobs of the last `track_s` whose mission is not final (or not yet known),
        newest first (the partial index `ix_broadcast_jobs_tracking`)."""
        query = (
            select(*_OPEN_COLUMNS)
            .where(TRACKING, jobs.c.sent_at > now - timedelta(seconds=track_s))
            .order_by(jobs.c.sent_at.desc(), jobs.c.id)
            .limit(limit)
        )
        return self._open_jobs(query)

    def _open_jobs(self, query: object) -> list[OpenJob]:
        with self._begin() as connection:
            rows = connection.execute(query).all()  # type: ignore[call-overload]
        return [self._open_job(row) for row in rows]

    def _open_job(self, row: AnyRow) -> OpenJob:
        return OpenJob(
            id=row.id,
            corp_id=row.corp_id or self.default_corp or "",
            status=JobStatus(row.status),
            payload=row.payload,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            call_started_at=row.call_started_at,
            mission_id=row.vendor_mission_id,
            delivery_status=row.delivery_status,
            groups_reached=row.delivery_groups_reached,
            staff_confirmed=row.delivery_staff_confirmed,
        )

    def settle_found(
        self, job: OpenJob, delivery: Delivery, sent_at: datetime, now: datetime, evidence: str
    ) -> bool:
        """`unknown` -> `sent`: the list holds the job's mission. False if the job moved
        meanwhile (an operator, another scheduler, the worker's own late answer)."""
        with self._begin() as connection:
            moved = connection.execute(
                move_jobs(
                    now,
                    *_unchanged_unknown(job),
                    status=JobStatus.SENT,
                    sent_at=sent_at,
                    last_error=storable_text(evidence),
                    last_errcode=None,
                    **_delivery_values(delivery, now),
                )
            ).rowcount
            if moved:
                _record(connection, job, Outcome.FOUND, now, evidence)
        return bool(moved)

    def settle_absent(self, job: OpenJob, now: datetime, evidence: str) -> JobStatus | None:
        """`unknown` -> `scheduled` (sent again now) when the list, read to its end, holds
        no mission of the job; `failed` when its attempts are used up. None if the job
        moved meanwhile."""
        if job.attempts >= job.max_attempts:
            status = JobStatus.FAILED
            text = f"{evidence}; not sent again: {job.attempts} of {job.max_attempts} attempts used"
            values: dict[str, object] = {"status": status, "last_error": storable_text(text)}
        else:
            status, text = JobStatus.SCHEDULED, f"{evidence}; sending again"
            values = {"status": status, "not_before": now, "last_error": storable_text(text)}
        with self._begin() as connection:
            moved = connection.execute(move_jobs(now, *_unchanged_unknown(job), **values)).rowcount
            if moved:
                _record(connection, job, Outcome.ABSENT, now, text)
        return status if moved else None

    def note_unsettled(self, job: OpenJob, now: datetime, reason: str) -> bool:
        """An `unknown` job the list could not settle: the reason, for `status` and the
        operator who resolves it by hand."""
        with self._begin() as connection:
            return bool(
                connection.execute(
                    move_jobs(now, *_unchanged_unknown(job), last_error=storable_text(reason))
                ).rowcount
            )

    def record_deliveries(self, seen: Sequence[tuple[OpenJob, Delivery]], now: datetime) -> int:
        """Sent jobs' missions as the list shows them now, in one transaction (a first
        pass over 1000 jobs was 1000 transactions: 1 s on SQLite, up to 12 s on a loaded
        PostgreSQL). Returns how many rows changed (a job no longer `sent` is left)."""
        if not seen:
            return 0
        changed = 0
        with self._begin() as connection:
            for job, delivery in seen:
                changed += connection.execute(
                    update(jobs)
                    .where(jobs.c.id == job.id, jobs.c.status == JobStatus.SENT)
                    .values(updated_at=now, **_delivery_values(delivery, now))
                ).rowcount
        return changed

    def note_delivery(self, job_ids: list[int], now: datetime, reason: str) -> int:
        """Why these sent jobs' delivery is not known (yet); rows that already say so are
        left alone, so a list refused on every pass costs no writes after the first."""
        note = storable_text(reason)
        with self._begin() as connection:
            return connection.execute(
                update(jobs)
                .where(
                    jobs.c.id.in_(job_ids),
                    jobs.c.status == JobStatus.SENT,
                    jobs.c.delivery_note.is_(None) | (jobs.c.delivery_note != note),
                )
                .values(delivery_note=note, delivery_checked_at=now)
            ).rowcount


def _unchanged_unknown(job: OpenJob) -> tuple[ColumnElement[bool], ...]:
    return (
        jobs.c.id == job.id,
        jobs.c.status == JobStatus.UNKNOWN,
        jobs.c.attempts == job.attempts,
    )


def _delivery_values(delivery: Delivery, now: datetime) -> dict[str, object]:
    return {
        "vendor_mission_id": None
        if delivery.mission_id is None
        else storable_text(delivery.mission_id),
        "delivery_status": None if delivery.status is None else storable_text(delivery.status),
        "delivery_groups_reached": delivery.groups_reached,
        "delivery_groups_unreached": delivery.groups_unreached,
        "delivery_staff_confirmed": delivery.staff_confirmed,
        "delivery_staff_total": delivery.staff_total,
        "delivery_detail": delivery.detail,
        "delivery_checked_at": now,
        "delivery_note": None,
    }


def _record(
    connection: Connection, job: OpenJob, outcome: Outcome, now: datetime, text: str
) -> None:
    """The reconciler's finding in the job's timeline, numbered as the call it settles."""
    connection.execute(
        insert(attempts).values(
            job_id=job.id,
            attempt_no=max(job.attempts, 1),
            started_at=now,
            duration_ms=None,
            outcome=outcome,
            errcode=None,
            error=storable_text(text),
        )
    )
