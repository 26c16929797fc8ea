"""What every part of the job store shares: the results it hands back, one short
transaction that turns driver errors into one line, and the moves most writes make."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, Engine, Row, Update, select, update
from sqlalchemy.exc import SQLAlchemyError

from broadcaster.db import first_line
from broadcaster.errors import JobStoreError
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.tables import jobs
from broadcaster.logs import redact_text

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


EXPIRED_REASON = "expires_at passed before it could be sent"


def move_jobs(now: datetime, *where: ColumnElement[bool], **values: Any) -> Update:
    """UPDATE the jobs matching `where` to `values`, stamped `now`, ending their lease:
    every move does but those that take a new one (claim, start_sending, the sweep's)."""
    return update(jobs).where(*where).values(lease_until=None, updated_at=now, **values)


def expire_jobs(connection: Connection, now: datetime, *where: ColumnElement[bool]) -> int:
    """Move the jobs matching `where` to `expired`; returns how many moved."""
    statement = move_jobs(now, *where, status=JobStatus.EXPIRED, last_error=EXPIRED_REASON)
    return update_count(connection, statement)


def update_returning(
    connection: Connection, statement: Update, *columns: ColumnElement[Any]
) -> list[AnyRow]:
    """`statement … RETURNING columns` (an UPDATE of `broadcast_jobs`), on every database.

    MySQL and MariaDB have no UPDATE … RETURNING: the rows are locked and their ids read
    first (`lock_matching`), updated by id, then read back, all in the caller's
    transaction, so no other writer can change them in between."""
    if connection.dialect.name != "mysql":
        return list(connection.execute(statement.returning(*columns)).all())
    ids = lock_matching(connection, statement.whereclause)
    return read_back(connection, statement, ids, *columns)


def update_count(connection: Connection, statement: Update) -> int:
    """Run an UPDATE of `broadcast_jobs` whose WHERE is not by id; how many rows it moved.
    On MySQL through `lock_matching`, then by primary key."""
    if connection.dialect.name != "mysql":
        return int(connection.execute(statement).rowcount)
    ids = lock_matching(connection, statement.whereclause)
    if not ids:
        return 0
    return int(connection.execute(by_primary_key(statement, ids)).rowcount)


def lock_matching(connection: Connection, where: ColumnElement[bool] | None) -> list[int]:
    """MySQL: the ids of the rows matching `where`, locked through the primary key only.

    A locking read or an UPDATE that InnoDB runs through a secondary index locks that
    index's entries, then waits for the row; a worker holding the row (its compare-and-set
    by id) then waits for those entries to change its status: a deadlock (seen with the
    recovery sweep's expiry and `broadcaster run`). So the candidates are read without
    locks (a consistent read), then locked by id, ascending, each rechecked."""
    candidates = select(jobs.c.id) if where is None else select(jobs.c.id).where(where)
    ids = list(connection.execute(candidates).scalars())
    if not ids:
        return []
    locking = (
        select(jobs.c.id)
        .where(jobs.c.id.in_(ids))
        .with_hint(jobs, "FORCE INDEX (PRIMARY)", "mysql")
        .order_by(jobs.c.id)
        .with_for_update()
    )
    if where is not None:
        locking = locking.where(where)
    return list(connection.execute(locking).scalars())


def by_primary_key(statement: Update, ids: list[int]) -> Update:
    """`statement` on the rows `ids` only, found by primary key (MySQL: by no other index,
    see `lock_matching`)."""
    return statement.where(jobs.c.id.in_(ids)).with_hint(
        "FORCE INDEX (PRIMARY)", dialect_name="mysql"
    )


def read_back(
    connection: Connection, statement: Update, ids: list[int], *columns: ColumnElement[Any]
) -> list[AnyRow]:
    """MySQL: run `statement` on the (locked) rows `ids`, then read `columns` of them."""
    if not ids:
        return []
    connection.execute(by_primary_key(statement, ids))
    return list(
        connection.execute(select(*columns).where(jobs.c.id.in_(ids)).order_by(jobs.c.id)).all()
    )


class StoreBase:
    """An engine and the default corp: what each part of the store is built from."""

    def __init__(self, engine: Engine, *, default_corp: str | None = None) -> None:
        self.engine = engine
        self.default_corp = default_corp

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
