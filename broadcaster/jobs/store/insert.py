"""Producers' writes: jobs inserted in batches (COPY through a staging table on
PostgreSQL), duplicates skipped by dedupe_key, refused rows reported for a retry one by one.

MySQL/MariaDB have no INSERT … ON CONFLICT … RETURNING: each row is one
`INSERT … ON DUPLICATE KEY UPDATE id = id` (a duplicate key changes nothing and reports no
new id; unlike INSERT IGNORE it turns no other error into a warning), all in one
transaction. A multi-row INSERT cannot say which rows were new, nor their ids (InnoDB
need not number one statement's rows consecutively)."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, IntegrityError

from broadcaster.db import first_line, is_mysql, is_sqlite
from broadcaster.errors import JobStoreError
from broadcaster.jobs.store.base import AnyRow, InsertResult, RowsRefused, StoreBase
from broadcaster.jobs.tables import PRODUCER_COLUMNS, jobs

_T = TypeVar("_T")
COPY_THRESHOLD = 200
STAGED_COLUMNS = PRODUCER_COLUMNS
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


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value: Any) -> str:
    """One value in COPY's text format; TypeError for a type not expected in these
    columns (the caller then lets psycopg format the batch)."""
    if value is None:
        return "\\N"
    if type(value) is str:
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return value.translate(_COPY_ESCAPES)
        return value
    if type(value) is int:
        return str(value)
    if type(value) is datetime and value.tzinfo is None:
        return value.isoformat(" ")
    raise TypeError(type(value).__name__)


def _copy_text(ids: Sequence[int], rows: Sequence[dict[str, Any]]) -> str | None:
    """The rows, each with its id, as COPY text: psycopg's `write_row` picks a dumper
    for each value in Python, a third of the writing process's time in an import
    (bench/import_speed.py). None when a value is of another type than the producer
    columns hold (str, int, naive UTC datetime)."""
    try:
        lines = [
            f"{job_id}\t" + "\t".join([_copy_field(row.get(c)) for c in STAGED_COLUMNS])
            for job_id, row in zip(ids, rows, strict=True)
        ]
    except TypeError:
        return None
    lines.append("")
    return "\n".join(lines)  # psycopg encodes it in the connection's encoding


def _upsert(names: tuple[str, ...]) -> str:
    """MySQL's INSERT of these producer columns that skips a duplicate dedupe_key."""
    unknown = set(names) - set(jobs.c.keys())
    if unknown:  # names go into SQL text: only the table's own
        raise ValueError(f"no such column: {sorted(unknown)}")
    columns = ", ".join(names)
    values = ", ".join(["%s"] * len(names))
    return (
        f"INSERT INTO broadcast_jobs ({columns}) VALUES ({values}) ON DUPLICATE KEY UPDATE id = id"
    )


def _as_sqlalchemy(exc: Exception) -> Exception:
    """A PyMySQL error as the SQLAlchemy error `_refusing` and `_Transaction` expect."""
    import pymysql  # type: ignore[import-untyped]
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, pymysql.Error):
        return DBAPIError.instance("INSERT INTO broadcast_jobs", None, exc, pymysql.Error)
    return exc


class InsertStore(StoreBase):
    """Inserts for producers (the Python API, the CLI, import)."""

    def insert_jobs(self, rows: Sequence[dict[str, Any]]) -> InsertResult:
        """Insert many rows in one statement; a `dedupe_key` already present (in the table
        or earlier in `rows`) is skipped and reported, never an error."""
        if not rows:
            return InsertResult([], [])
        if is_mysql(self.engine):
            return self._refusing(lambda: self._insert_one_by_one(rows))
        if not is_sqlite(self.engine) and len(rows) >= COPY_THRESHOLD:
            return self._copy_jobs(rows)
        dialect_insert = sqlite_insert if is_sqlite(self.engine) else pg_insert
        statement = (
            dialect_insert(jobs)
            .on_conflict_do_nothing(index_elements=[jobs.c.dedupe_key])
            .returning(jobs.c.id, jobs.c.dedupe_key, sort_by_parameter_order=True)
        )

        def insert() -> list[Any]:
            with self._begin() as connection:
                return list(connection.execute(statement, list(rows)).all())

        returned = self._refusing(insert)
        return InsertResult([row.id for row in returned], _skipped_keys(rows, returned))

    @staticmethod
    def _refusing(write: Callable[[], _T]) -> _T:
        """Run `write`, a refused value raised as `RowsRefused`."""
        try:
            return write()
        except JobStoreError as exc:
            if isinstance(exc.__cause__, DataError | IntegrityError):
                raise RowsRefused(str(exc)) from exc.__cause__
            raise
        except (OverflowError, UnicodeError, ValueError) as exc:  # the driver's own checks
            raise RowsRefused(f"database refused a value: {exc}") from exc

    def _insert_one_by_one(self, rows: Sequence[dict[str, Any]]) -> InsertResult:
        """MySQL: see the module's docstring. Through the driver's cursor: SQLAlchemy's
        work per statement cost as much as the round trip (bench/import_speed.py)."""
        inserted: list[_Inserted] = []
        statements: dict[tuple[str, ...], str] = {}
        with self._begin() as connection:
            cursor: Any = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                for row in rows:
                    names = tuple(row)
                    sql = statements.get(names) or statements.setdefault(names, _upsert(names))
                    cursor.execute(sql, tuple(row.values()))
                    if cursor.lastrowid:
                        inserted.append(_Inserted(cursor.lastrowid, row.get("dedupe_key")))
            except Exception as exc:  # the driver's own: classed as SQLAlchemy's would be
                raise _as_sqlalchemy(exc) from exc
            finally:
                cursor.close()
        return InsertResult([row.id for row in inserted], _skipped_keys(rows, inserted))

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
        """PostgreSQL bulk path. First the direct way: the keys already held are looked up
        (one index probe a key), the batch's ids are taken from the sequence and the new
        rows are COPYed straight into `broadcast_jobs`. Should that meet a key another
        producer wrote in the meantime (a unique violation), the batch goes the staged way:
        COPY into a temporary table, then one INSERT … SELECT … ON CONFLICT DO NOTHING.
        The direct way is ~1.5x faster (bench/import_speed.py); the staged way was already
        3x faster than a multi-row VALUES statement, whose SQL text the driver parsed.

        The driver's errors are raised here as `RowsRefused` (a value the database will not
        take, e.g. a NUL in text) or `JobStoreError`, like the other path's: psycopg's own
        exceptions are not SQLAlchemy's, and escaped as a traceback (issue 9)."""
        import psycopg

        try:
            try:
                return self._copy_jobs_direct(rows)
            except psycopg.errors.UniqueViolation:
                return self._copy_jobs_raw(rows)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise RowsRefused(f"database error: {first_line(exc)}") from exc
        except (OverflowError, UnicodeError, ValueError) as exc:
            raise RowsRefused(f"database refused a value: {exc}") from exc
        except psycopg.Error as exc:
            raise JobStoreError(f"database error: {first_line(exc)}") from exc

    def _copy_jobs_direct(self, rows: Sequence[dict[str, Any]]) -> InsertResult:
        keys = [key for row in rows if (key := row.get("dedupe_key")) is not None]
        with self._begin() as connection:
            driver: Any = connection.connection.driver_connection  # psycopg's, never None here
            cursor = driver.cursor()
            held: set[str] = set()
            if keys:
                cursor.execute(  # the keys as one JSON text: psycopg dumps a list in Python
                    "SELECT dedupe_key FROM broadcast_jobs WHERE dedupe_key = ANY(ARRAY("
                    "SELECT jsonb_array_elements_text(%s::jsonb)))",
                    (json.dumps(keys, ensure_ascii=False),),
                )
                held = {key for (key,) in cursor.fetchall()}
            fresh, skipped = [], []
            for row in rows:  # a key held, or met earlier in `rows`, is skipped
                key = row.get("dedupe_key")
                if key is not None:
                    if key in held:
                        skipped.append(key)
                        continue
                    held.add(key)
                fresh.append(row)
            if not fresh:
                return InsertResult([], skipped)
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence('broadcast_jobs', 'id')) "
                "FROM generate_series(1, %s)",
                (len(fresh),),
            )
            ids = sorted(job_id for (job_id,) in cursor.fetchall())
            with cursor.copy(f"COPY broadcast_jobs (id, {STAGED}) FROM STDIN") as copy:
                if (text := _copy_text(ids, fresh)) is not None:
                    copy.write(text)
                else:
                    for job_id, row in zip(ids, fresh, strict=True):
                        copy.write_row((job_id, *(row.get(col) for col in STAGED_COLUMNS)))
        return InsertResult(ids, skipped)

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
