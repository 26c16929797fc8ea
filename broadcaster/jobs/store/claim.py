"""The scheduler's reads and writes: claim the due rows (each judged on its own),
release a batch the broker refused, the next due time, the recovery sweep, queued counts."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    LargeBinary,
    Row,
    Select,
    Update,
    case,
    cast,
    func,
    select,
    update,
)

from broadcaster.campaigns import gate
from broadcaster.db import SQLITE_READ_ONLY
from broadcaster.jobs.screening import judge, read_time
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store.base import (
    ClaimedJob,
    ClaimResult,
    RecoveryResult,
    StoreBase,
    _Transaction,
    by_primary_key,
    expire_jobs,
    move_jobs,
    storable_text,
    update_returning,
)
from broadcaster.jobs.store.loading import judged_columns, loadable_time
from broadcaster.jobs.tables import due_at, jobs

if TYPE_CHECKING:
    from broadcaster.campaigns.controls import CampaignControls


class ClaimStore(StoreBase):
    """The scheduler's part (`ports.SchedulerStore`)."""

    controls: CampaignControls | None = None
    """Quiet hours, the stale guard and the monthly cap (issue 15), applied in the claim's
    transaction when set (`scheduler/runner.py` sets them from the settings)."""

    def use_campaign_controls(self, controls: CampaignControls | None) -> None:
        self.controls = controls

    def claim_due(
        self, now: datetime, limit: int, lease_s: float, *, skip_corps: Collection[str] = ()
    ) -> ClaimResult:
        """Move up to `limit` due `scheduled` rows to `queued` with a lease, in one
        transaction, so two schedulers never claim one row. Rows unfit to send are
        finished here instead, each on its own: a bad payload, a missing or blank corp, or
        a value of the wrong type in any column (`screening.py`) ends `failed` with a
        reason naming the column; a row past `expires_at` ends `expired`. Rows of
        `skip_corps` stay put."""
        due = [jobs.c.status == JobStatus.SCHEDULED, due_at <= now]
        if skip_corps:  # corps with enough work queued already, or blocked by the vendor
            due.append(
                func.coalesce(jobs.c.corp_id, self.default_corp or "").not_in(list(skip_corps))
            )
        picked = (
            select(jobs.c.id)
            .where(*due)
            .order_by(jobs.c.priority.desc(), due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claim = (
            update(jobs)
            .where(jobs.c.status == JobStatus.SCHEDULED)
            .values(
                status=JobStatus.QUEUED,
                lease_until=now + timedelta(seconds=lease_s),
                updated_at=now,
            )
        )
        # Read defensively: a producer's odd type must fail its own row, not the claim
        # of the batch (issue 9); `_screen` judges each row.
        read = [*judged_columns(self.engine.dialect.name), *self._campaign_columns()]
        result = ClaimResult()
        if self.engine.dialect.name == "sqlite" and not self._any_due(now):
            return result  # polled and nothing due: SQLite's write lock stays with the workers
        with self._begin() as connection:
            if self.controls is not None:
                gate.hold_quiet(connection, self.controls, now, self.default_corp)
            rows = self._claim_rows(connection, picked, claim, read)
            for row in rows:
                self._screen(row, now, result)
            self._finish_unfit(connection, result, now)
            if self.controls is not None:
                gate.after_claim(
                    connection, self.controls, self.engine.dialect.name, rows, result, now
                )
        result.claimed.sort(key=lambda job: (-job.priority, job.due_at, job.id))
        return result

    def _any_due(self, now: datetime) -> bool:
        """Whether the claim would find a row (due ones of skipped corps count: the
        claim's quiet hours hold them), read without the write lock."""
        with self._read() as connection:
            found = connection.execute(
                select(jobs.c.id)
                .where(jobs.c.status == JobStatus.SCHEDULED, due_at <= now)
                .limit(1)
            ).first()
        return found is not None

    def _read(self) -> _Transaction:
        """A transaction that only reads: on SQLite it takes no write lock (`db.py`)."""
        return _ReadTransaction(self.engine)

    def _claim_rows(
        self, connection: Connection, picked: Select[Any], claim: Update, read: list[Any]
    ) -> list[Any]:
        """Lock the picked rows (`FOR UPDATE SKIP LOCKED`: two schedulers never take one
        row, nor wait on each other) and move them, in the caller's transaction."""
        if connection.dialect.name == "mysql":  # no UPDATE … RETURNING, nor an UPDATE
            # reading its own table: the locking read reads the columns too (the UPDATE
            # changes none of them), then the rows move by primary key
            rows = list(connection.execute(picked.with_only_columns(*read)).all())
            if rows:
                connection.execute(by_primary_key(claim, [row.id for row in rows]))
            return rows
        # Materialised: inlined into `id IN (…)`, PostgreSQL may run the LIMIT subquery
        # more than once and claim more than `limit` rows (seen in the queue-cap test).
        chosen = picked.cte("picked").prefix_with("MATERIALIZED")
        return list(
            connection.execute(claim.where(jobs.c.id == chosen.c.id).returning(*read)).all()
        )

    def _campaign_columns(self) -> list[Any]:
        """What the campaign controls read of a claimed row, loadable whatever it holds."""
        dialect = self.engine.dialect.name
        left_out = jobs.c.cap_left_out
        return [
            loadable_time(jobs.c.held_until, dialect).label("held_until__c"),
            case((jobs.c.ignore_quiet_hours.is_(True), 1), else_=0).label("ignore_quiet_hours__c"),
            (cast(left_out, LargeBinary) if dialect == "sqlite" else left_out).label(
                "cap_left_out__c"
            ),
        ]

    def _screen(self, row: Row[Any], now: datetime, result: ClaimResult) -> None:
        """Sort one claimed row into claimed / failed / expired. Whatever the row holds,
        this decides that row alone: an unforeseen error fails it, with the error."""
        try:
            verdict = judge(row, self.engine.dialect.name, default_corp=self.default_corp, now=now)
        except Exception as exc:  # one row must never fail the batch
            result.failed.append((row.id, storable_text(f"row unreadable: {exc!r}")))
            return
        if verdict.outcome == "expired":
            result.expired.append(row.id)
        elif verdict.outcome == "failed":
            result.failed.append((row.id, storable_text(verdict.reason)))
        else:
            result.claimed.append(
                ClaimedJob(row.id, verdict.corp_id, verdict.priority, verdict.due_at)
            )

    def _finish_unfit(self, connection: Connection, result: ClaimResult, now: datetime) -> None:
        for job_id, reason in result.failed:
            connection.execute(
                move_jobs(now, jobs.c.id == job_id, status=JobStatus.FAILED, last_error=reason)
            )
        if result.expired:
            expire_jobs(connection, now, jobs.c.id.in_(result.expired))
        claimed_without_corp = [job for job in result.claimed if job.corp_id == self.default_corp]
        if claimed_without_corp:
            connection.execute(
                update(jobs)
                .where(
                    jobs.c.id.in_([job.id for job in claimed_without_corp]),
                    jobs.c.corp_id.is_(None),
                )
                .values(corp_id=self.default_corp)
            )

    def release(self, job_ids: Sequence[int], now: datetime) -> int:
        """Hand claimed rows back to `scheduled` (their broker message never went out)."""
        if not job_ids:
            return 0
        with self._begin() as connection:
            return connection.execute(
                move_jobs(
                    now,
                    jobs.c.id.in_(list(job_ids)),
                    jobs.c.status == JobStatus.QUEUED,
                    status=JobStatus.SCHEDULED,
                )
            ).rowcount

    def next_due_at(self) -> datetime | None:
        """When the earliest `scheduled` row falls due (it may be in the past)."""
        dialect = self.engine.dialect.name
        with self._read() as connection:
            earliest = connection.execute(
                select(loadable_time(func.min(due_at), dialect)).where(
                    jobs.c.status == JobStatus.SCHEDULED
                )
            ).scalar()
        # A time Python cannot hold (a producer's odd row): None, i.e. poll as usual; the
        # claim fails that row if it is due.
        return read_time(earliest)

    def recover(self, now: datetime, queued_lease_s: float) -> RecoveryResult:
        """The recovery sweep (DESIGN §4).

        - `queued` past its lease: the broker message was lost; lease it again and return
          it for re-enqueueing (the actor's compare-and-set makes a duplicate harmless).
        - `sending` past its lease: a worker died mid-call; the vendor may have created the
          message, so the job becomes `unknown` for an operator, never resent blindly.
        - `scheduled` or `queued` past `expires_at`: `expired`.
        """
        with self._begin() as connection:
            expired = expire_jobs(
                connection,
                now,
                jobs.c.status.in_([JobStatus.SCHEDULED, JobStatus.QUEUED]),
                jobs.c.expires_at <= now,
            )
            lost = move_jobs(
                now,
                jobs.c.status == JobStatus.SENDING,
                jobs.c.lease_until < now,
                status=JobStatus.UNKNOWN,
                last_error="worker lost during the vendor call (lease expired); "
                "the message may exist at the vendor: resolve with "
                "`broadcaster jobs resolve`",
            )
            unknown = [row.id for row in update_returning(connection, lost, jobs.c.id)]
            # Judged like a claim: a row left `queued` by an older version (before the claim
            # screened odd types) fails now instead of going round forever.
            rows = update_returning(
                connection,
                update(jobs)
                .where(jobs.c.status == JobStatus.QUEUED, jobs.c.lease_until < now)
                .values(lease_until=now + timedelta(seconds=queued_lease_s), updated_at=now),
                *judged_columns(self.engine.dialect.name),
            )
            requeued = ClaimResult()
            for row in rows:
                self._screen(row, now, requeued)
            self._finish_unfit(connection, requeued, now)
        return RecoveryResult(
            requeued=requeued.claimed,
            unknown=list(unknown),
            expired=expired + len(requeued.expired),
            failed=requeued.failed,
        )

    def queued_by_corp(self) -> dict[str, int]:
        """How many jobs each corp has waiting in the broker (for admission)."""
        corp = func.coalesce(jobs.c.corp_id, self.default_corp or "")
        with self._read() as connection:
            rows = connection.execute(
                select(corp.label("corp"), func.count().label("n"))
                .where(jobs.c.status == JobStatus.QUEUED)
                .group_by(corp)
            ).all()
        return {row.corp: row.n for row in rows}


class _ReadTransaction(_Transaction):
    """`_Transaction` for reads only (`db.SQLITE_READ_ONLY`)."""

    def __init__(self, engine: Engine) -> None:
        self._context = _reading(engine)


@contextmanager
def _reading(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        connection.execution_options(**{SQLITE_READ_ONLY: True})
        with connection.begin():
            yield connection
