"""JobStore: the one seam between broadcaster and its database.

Each method is named by intent (claim the due rows, start sending one, recover lost
leases) and does its work in one short transaction. SQLite and PostgreSQL run the same
statements: `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) … RETURNING`, where
SQLite drops the locking clause and relies on `BEGIN IMMEDIATE` (see `db.py`) making it
the only writer instead.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Update,
    and_,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from broadcaster.db import first_line, is_sqlite
from broadcaster.errors import JobNotFound, JobStoreError, StateConflict
from broadcaster.logs import redact_text
from broadcaster.schema import attempts, due_at, jobs
from broadcaster.screening import (
    judge,
    judged_columns,
    loadable_time,
    read_time,
    sending_problem,
)
from broadcaster.status import CANCELLABLE_STATUSES, CERTAIN_OUTCOMES, JobStatus, Outcome

if TYPE_CHECKING:
    from broadcaster.delivery import Decision


AnyRow = Row[*tuple[Any, ...]]
"""A row of any columns (SQLAlchemy types a row by its columns; `Row[Any]` is one)."""


@dataclass(frozen=True)
class ClaimedJob:
    """A row the scheduler moved to `queued`, ready to hand to the broker."""

    id: int
    corp_id: str
    priority: int
    due_at: datetime


@dataclass(frozen=True)
class SendingJob:
    """A job this worker moved to `sending`: everything the vendor call needs."""

    id: int
    corp_id: str
    payload: str
    attempts: int
    max_attempts: int


@dataclass
class ClaimResult:
    claimed: list[ClaimedJob] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)


@dataclass
class InsertResult:
    inserted_ids: list[int]
    duplicate_keys: list[str]


class RowsRefused(JobStoreError):
    """The database refused the data of some row in an insert (a value out of a column's
    range, a character it cannot store), as opposed to being unreachable: the caller can
    insert the rows one by one to find the bad one. Nothing of the insert was written."""


@dataclass
class RecoveryResult:
    requeued: list[ClaimedJob]
    unknown: list[int]
    expired: int
    failed: list[tuple[int, str]] = field(default_factory=list)


MAX_ERROR_CHARS = 2000


def storable_text(message: str) -> str:
    """Error text as a database will take it: a bad row's own content ends up in its
    `last_error`, and PostgreSQL refuses NUL bytes and unpaired surrogates, which failed
    the whole claim and stalled the scheduler (found by the chaos suite)."""
    clean = message.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()
    return redact_text(clean)[:MAX_ERROR_CHARS]  # a vendor may echo a secret or token


COPY_THRESHOLD = 200
STAGED_COLUMNS = (
    "corp_id",
    "payload",
    "send_at",
    "dedupe_key",
    "campaign",
    "priority",
    "expires_at",
    "max_attempts",
)
STAGED = ", ".join(STAGED_COLUMNS)


@dataclass(frozen=True)
class _Inserted:
    id: int
    dedupe_key: str | None


def _skipped_keys(rows: Sequence[dict[str, Any]], returned: Sequence[Any]) -> list[str]:
    """The dedupe keys of `rows` that were not inserted: present before, or repeated
    within `rows` itself (only the first of those goes in)."""
    fresh = {row.dedupe_key for row in returned if row.dedupe_key is not None}
    skipped = []
    for row in rows:
        key = row.get("dedupe_key")
        if key is None:
            continue
        if key in fresh:
            fresh.discard(key)
        else:
            skipped.append(key)
    return skipped


EXPIRED_REASON = "expires_at passed before it could be sent"


def _move(now: datetime, *where: ColumnElement[bool], **values: Any) -> Update:
    """UPDATE the jobs matching `where` to `values`, stamped `now`, ending their lease:
    every move does but those that take a new one (claim, start_sending, the sweep's)."""
    return update(jobs).where(*where).values(lease_until=None, updated_at=now, **values)


def _expire(connection: Connection, now: datetime, *where: ColumnElement[bool]) -> int:
    """Move the jobs matching `where` to `expired`; returns how many moved."""
    statement = _move(now, *where, status=JobStatus.EXPIRED, last_error=EXPIRED_REASON)
    return connection.execute(statement).rowcount


class JobStore:
    """Every read and write of `broadcast_jobs` and `broadcast_attempts`."""

    def __init__(self, engine: Engine, *, default_corp: str | None = None) -> None:
        self.engine = engine
        self.default_corp = default_corp

    # ------------------------------------------------------------------ producers
    def insert_jobs(self, rows: Sequence[dict[str, Any]]) -> InsertResult:
        """Insert many rows in one statement; a `dedupe_key` already present (in the table
        or earlier in `rows`) is skipped and reported, never an error."""
        if not rows:
            return InsertResult([], [])
        if not is_sqlite(self.engine) and len(rows) >= COPY_THRESHOLD:
            return self._copy_jobs(rows)
        dialect_insert = sqlite_insert if is_sqlite(self.engine) else pg_insert
        statement = (
            dialect_insert(jobs)
            .on_conflict_do_nothing(index_elements=[jobs.c.dedupe_key])
            .returning(jobs.c.id, jobs.c.dedupe_key, sort_by_parameter_order=True)
        )
        try:
            with self._begin() as connection:
                returned = connection.execute(statement, list(rows)).all()
        except JobStoreError as exc:
            if isinstance(exc.__cause__, DataError | IntegrityError):
                raise RowsRefused(str(exc)) from exc.__cause__
            raise
        except (OverflowError, UnicodeError, ValueError) as exc:  # the driver's own checks
            raise RowsRefused(f"database refused a value: {exc}") from exc
        return InsertResult([row.id for row in returned], _skipped_keys(rows, returned))

    def keyed_jobs(self, keys: Collection[str]) -> dict[str, AnyRow]:
        """The rows holding these dedupe keys (id, dedupe_key, corp_id, payload), by key."""
        found: dict[str, AnyRow] = {}
        ordered = list(keys)
        query = select(jobs.c.id, jobs.c.dedupe_key, jobs.c.corp_id, jobs.c.payload)
        with self._begin() as connection:
            for start in range(0, len(ordered), 500):
                chunk = ordered[start : start + 500]
                for row in connection.execute(query.where(jobs.c.dedupe_key.in_(chunk))):
                    found[row.dedupe_key] = row
        return found

    def _copy_jobs(self, rows: Sequence[dict[str, Any]]) -> InsertResult:
        """PostgreSQL bulk path: COPY into a temporary table, then one INSERT … SELECT …
        ON CONFLICT DO NOTHING. A multi-row VALUES statement spent most of its time in the
        driver parsing its own giant SQL text (bench/import_speed.py: 3x faster this way).

        The driver's errors are raised here as `RowsRefused` (a value the database will not
        take, e.g. a NUL in text) or `JobStoreError`, like the other path's: psycopg's own
        exceptions are not SQLAlchemy's, and escaped as a traceback (issue 9)."""
        import psycopg

        try:
            return self._copy_jobs_raw(rows)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise RowsRefused(f"database error: {first_line(exc)}") from exc
        except (OverflowError, UnicodeError, ValueError) as exc:
            raise RowsRefused(f"database refused a value: {exc}") from exc
        except psycopg.Error as exc:
            raise JobStoreError(f"database error: {first_line(exc)}") from exc

    def _copy_jobs_raw(self, rows: Sequence[dict[str, Any]]) -> InsertResult:
        with self._begin() as connection:
            driver: Any = connection.connection.driver_connection  # psycopg's, never None here
            cursor = driver.cursor()
            cursor.execute(
                "CREATE TEMP TABLE IF NOT EXISTS broadcast_jobs_staging (ord int, corp_id text, "
                "payload text, send_at timestamp, dedupe_key text, campaign text, priority int, "
                "expires_at timestamp, max_attempts int) ON COMMIT DELETE ROWS"
            )
            with cursor.copy(f"COPY broadcast_jobs_staging (ord, {STAGED}) FROM STDIN") as copy:
                for number, row in enumerate(rows):
                    copy.write_row((number, *(row.get(column) for column in STAGED_COLUMNS)))
            cursor.execute(
                f"INSERT INTO broadcast_jobs ({STAGED}) SELECT {STAGED} "
                "FROM broadcast_jobs_staging ORDER BY ord "
                "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key"
            )
            returned = sorted(cursor.fetchall())
        inserted = [_Inserted(job_id, key) for job_id, key in returned]
        return InsertResult([row.id for row in inserted], _skipped_keys(rows, inserted))

    # ------------------------------------------------------------------ scheduler
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
            # Materialised: inlined into `id IN (…)`, PostgreSQL may run the LIMIT subquery
            # more than once and claim more than `limit` rows (seen in the queue-cap test).
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        claim = (
            update(jobs)
            .where(jobs.c.id == picked.c.id, jobs.c.status == JobStatus.SCHEDULED)
            .values(
                status=JobStatus.QUEUED,
                lease_until=now + timedelta(seconds=lease_s),
                updated_at=now,
            )
            # Read defensively: a producer's odd type must fail its own row, not the claim
            # of the batch (issue 9); `_screen` judges each row.
            .returning(*judged_columns(self.engine.dialect.name))
        )
        result = ClaimResult()
        with self._begin() as connection:
            for row in connection.execute(claim).all():
                self._screen(row, now, result)
            self._finish_unfit(connection, result, now)
        result.claimed.sort(key=lambda job: (-job.priority, job.due_at, job.id))
        return result

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
                _move(now, jobs.c.id == job_id, status=JobStatus.FAILED, last_error=reason)
            )
        if result.expired:
            _expire(connection, now, jobs.c.id.in_(result.expired))
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
                _move(
                    now,
                    jobs.c.id.in_(list(job_ids)),
                    jobs.c.status == JobStatus.QUEUED,
                    status=JobStatus.SCHEDULED,
                )
            ).rowcount

    def next_due_at(self) -> datetime | None:
        """When the earliest `scheduled` row falls due (it may be in the past)."""
        dialect = self.engine.dialect.name
        with self._begin() as connection:
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
            expired = _expire(
                connection,
                now,
                jobs.c.status.in_([JobStatus.SCHEDULED, JobStatus.QUEUED]),
                jobs.c.expires_at <= now,
            )
            unknown = (
                connection.execute(
                    _move(
                        now,
                        jobs.c.status == JobStatus.SENDING,
                        jobs.c.lease_until < now,
                        status=JobStatus.UNKNOWN,
                        last_error="worker lost during the vendor call (lease expired); "
                        "the message may exist at the vendor: resolve with "
                        "`broadcaster jobs resolve`",
                    ).returning(jobs.c.id)
                )
                .scalars()
                .all()
            )
            # Judged like a claim: a row left `queued` by an older version (before the claim
            # screened odd types) fails now instead of going round forever.
            rows = connection.execute(
                update(jobs)
                .where(jobs.c.status == JobStatus.QUEUED, jobs.c.lease_until < now)
                .values(lease_until=now + timedelta(seconds=queued_lease_s), updated_at=now)
                .returning(*judged_columns(self.engine.dialect.name))
            ).all()
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

    # ------------------------------------------------------------------ workers
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
            row = connection.execute(
                update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.status == JobStatus.QUEUED,
                    (jobs.c.expires_at.is_(None)) | (jobs.c.expires_at > now),
                )
                .values(
                    status=JobStatus.SENDING,
                    updated_at=now,
                    lease_until=now + timedelta(seconds=lease_s),
                )
                .returning(
                    jobs.c.id, jobs.c.corp_id, jobs.c.payload, jobs.c.attempts, jobs.c.max_attempts
                )
            ).first()
            if row is None:
                _expire(
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
                    _move(
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
                    _move(
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
                _move(now, jobs.c.id == job.id, jobs.c.status == JobStatus.SENDING, **values)
            ).rowcount
            if not moved and decision.outcome in CERTAIN_OUTCOMES:
                # The sweep called the job `unknown` while this call was still running;
                # its answer, when certain (created, or refused as a business error), is
                # the truth, so it settles the job rather than being lost.
                connection.execute(
                    _move(
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

    # ------------------------------------------------------------------ operators
    def retry(self, job_id: int, now: datetime) -> None:
        """Give a `failed` job a fresh set of attempts."""
        self._operator_move(
            job_id,
            now,
            {JobStatus.FAILED},
            status=JobStatus.SCHEDULED,
            attempts=0,
            not_before=None,
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
                "last_error": "resolved for resending by an operator",
            }
        )
        self._operator_move(job_id, now, {JobStatus.UNKNOWN}, **changes)

    def _operator_move(
        self, job_id: int, now: datetime, allowed: set[JobStatus], **changes: Any
    ) -> None:
        with self._begin() as connection:
            done = connection.execute(
                _move(now, jobs.c.id == job_id, jobs.c.status.in_(list(allowed)), **changes)
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

    def queued_by_corp(self) -> dict[str, int]:
        """How many jobs each corp has waiting in the broker (for admission)."""
        corp = func.coalesce(jobs.c.corp_id, self.default_corp or "")
        with self._begin() as connection:
            rows = connection.execute(
                select(corp.label("corp"), func.count().label("n"))
                .where(jobs.c.status == JobStatus.QUEUED)
                .group_by(corp)
            ).all()
        return {row.corp: row.n for row in rows}

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
        limit: int = 50,
    ) -> list[Row[Any]]:
        query = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
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
            done = connection.execute(
                _move(
                    now,
                    jobs.c.id == job_id,
                    jobs.c.status.in_(list(CANCELLABLE_STATUSES)),
                    status=JobStatus.CANCELLED,
                )
            ).rowcount
            if done:
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
            cancelled = connection.execute(
                _move(
                    now,
                    jobs.c.campaign == campaign,
                    jobs.c.status.in_(list(CANCELLABLE_STATUSES)),
                    status=JobStatus.CANCELLED,
                )
            ).rowcount
            sending = connection.execute(
                select(func.count()).where(
                    and_(jobs.c.campaign == campaign, jobs.c.status == JobStatus.SENDING)
                )
            ).scalar_one()
        return cancelled, sending

    def lateness_s(self, since: datetime) -> list[float]:
        """Seconds from send_at to the start of the successful call, for jobs sent since."""
        query = (
            select(attempts.c.started_at, jobs.c.send_at)
            .join(jobs, jobs.c.id == attempts.c.job_id)
            .where(attempts.c.outcome == Outcome.SENT, attempts.c.started_at >= since)
        )
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [(row.started_at - row.send_at).total_seconds() for row in rows]

    def failures(self, limit: int = 20) -> list[Row[Any]]:
        """Failed jobs grouped by reason, most common first."""
        query = (
            select(jobs.c.last_error, func.count().label("n"))
            .where(jobs.c.status == JobStatus.FAILED)
            .group_by(jobs.c.last_error)
            .order_by(func.count().desc())
            .limit(limit)
        )
        with self._begin() as connection:
            return list(connection.execute(query).all())

    def status_counts(self) -> list[Row[Any]]:
        """(corp_id, campaign, status, count) for every group present."""
        query = (
            select(jobs.c.corp_id, jobs.c.campaign, jobs.c.status, func.count().label("n"))
            .group_by(jobs.c.corp_id, jobs.c.campaign, jobs.c.status)
            .order_by(jobs.c.corp_id, jobs.c.campaign, jobs.c.status)
        )
        with self._begin() as connection:
            return list(connection.execute(query).all())

    def oldest_due(self, now: datetime) -> datetime | None:
        """The due time of the oldest `scheduled` row already due: how far behind we are."""
        dialect = self.engine.dialect.name
        with self._begin() as connection:
            oldest = connection.execute(
                select(loadable_time(func.min(due_at), dialect)).where(
                    jobs.c.status == JobStatus.SCHEDULED, due_at <= now
                )
            ).scalar()
        return read_time(oldest)  # None for a time Python cannot hold, as in next_due_at

    # ------------------------------------------------------------------ internals
    def _begin(self) -> _Transaction:
        return _Transaction(self.engine)


class _Transaction:
    """`engine.begin()` that turns driver errors into one-line `JobStoreError`s."""

    def __init__(self, engine: Engine) -> None:
        self._context: AbstractContextManager[Connection] = engine.begin()

    def __enter__(self) -> Connection:
        try:
            return self._context.__enter__()
        except SQLAlchemyError as exc:
            raise JobStoreError(f"database unavailable: {first_line(exc)}") from exc

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        try:
            self._context.__exit__(exc_type, exc, tb)
        except SQLAlchemyError as error:
            raise JobStoreError(f"database error: {first_line(error)}") from error
        if isinstance(exc, SQLAlchemyError):
            raise JobStoreError(f"database error: {first_line(exc)}") from exc
        return False
