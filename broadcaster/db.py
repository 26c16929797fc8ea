"""Engines for the three supported databases, configured for many writers.

SQLite: WAL (readers never block the writer), a busy timeout instead of instant
`database is locked`, and every transaction opened with `BEGIN IMMEDIATE`: a deferred
transaction that reads and then writes can fail to upgrade its lock when another process
wrote in between (only one marked `SQLITE_READ_ONLY` opens deferred). `BEGIN IMMEDIATE`
waits for the lock in short steps of its own, not SQLite's coarse busy handler.
PostgreSQL: psycopg 3; a restarted server costs one failed statement per process, not a
crash. MySQL 8 / MariaDB 10.6+:
PyMySQL (pure Python: nothing to compile, no client library), and each connection set to
what the schema assumes: utf8mb4, UTC (`time_zone '+00:00'`, so NOW() and CURRENT_TIMESTAMP
agree with our naive-UTC columns), a strict `sql_mode` (a bad time or an over-long text is an
error, never silently zeroed or cut) and READ COMMITTED (no gap locks between two
schedulers' claims; the same visibility as on PostgreSQL).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError

from broadcaster.errors import JobStoreError
from broadcaster.logs import redact_text
from broadcaster.settings import MYSQL_BACKENDS, MYSQL_DRIVERS, POSTGRES_DRIVERS

MYSQL_SQL_MODE = ",".join(
    (
        "STRICT_ALL_TABLES",  # an over-long text, a bad number or time: an error, not a warning
        "NO_ZERO_DATE",
        "NO_ZERO_IN_DATE",
        "ERROR_FOR_DIVISION_BY_ZERO",
        "NO_ENGINE_SUBSTITUTION",
    )
)
"""Set on each of our connections, whatever the server's default (MariaDB's lacks
NO_ZERO_DATE; an operator's may lack STRICT_*). Without ONLY_FULL_GROUP_BY (MySQL 8's
default): it is about queries, not data, and MySQL may not see that a grouped expression
with a parameter is the one selected."""


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy's default driver is psycopg2, which
    is not installed); so do `postgres://` and `postgresql+psycopg2://` (same URL form).
    `mysql://` and `mariadb://` mean PyMySQL (SQLAlchemy's default, mysqlclient, needs a C
    library and a compiler), as one dialect: the SQL we send is the same for both."""
    scheme, separator, rest = url.partition("://")
    backend, _, driver = scheme.partition("+")
    if separator and backend in ("postgresql", "postgres") and driver in POSTGRES_DRIVERS:
        return "postgresql+psycopg://" + rest
    if separator and backend in MYSQL_BACKENDS and driver in MYSQL_DRIVERS:
        return "mysql+pymysql://" + rest
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    if url.startswith("mysql"):
        kwargs.setdefault("isolation_level", "READ COMMITTED")
        connect_args = {
            "charset": "utf8mb4",
            "init_command": f"SET time_zone = '+00:00', sql_mode = '{MYSQL_SQL_MODE}'",
            **kwargs.pop("connect_args", {}),
        }
        kwargs["connect_args"] = connect_args
        engine = _pooled(url, kwargs)
        _configure_mysql(engine)
        return engine
    return _pooled(url, kwargs)


def _pooled(url: str, kwargs: dict[str, Any]) -> Engine:
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    # No pre-ping: it doubled the round trips of every job (bench/overhead.py). After a
    # server restart the first statement on a stale connection fails instead, SQLAlchemy
    # then invalidates the whole pool, and the callers' own recovery covers that one
    # failure (a finish is retried, a lost message is re-enqueued by the sweep).
    kwargs.setdefault("pool_recycle", 1800)
    return create_engine(url, **kwargs)


USER_LOCKS = "broadcaster.user_locks"
"""Set in `Connection.info` by whoever takes a MySQL named lock (`GET_LOCK`): it is held by
the session, not the transaction, so the pool releases it when the connection returns."""


MYSQL_REFUSALS = {
    1292: "DataError",  # incorrect datetime value ('2026-02-30', '0000-00-00' when strict)
    3140: "DataError",  # invalid JSON text (MySQL's JSON type)
    3819: "IntegrityError",  # MySQL: a CHECK constraint failed
    4025: "IntegrityError",  # MariaDB: a CHECK constraint failed
}
"""Server errors PyMySQL classes as OperationalError (as if the server were unreachable)
or not at all, though they refuse a value: classed as PostgreSQL's driver does, so a
refused row is reported as such (the insert retries row by row and names the bad one)."""


def _classify_mysql_errors() -> None:
    import pymysql.err  # type: ignore[import-untyped]

    for code, name in MYSQL_REFUSALS.items():
        pymysql.err.error_map[code] = getattr(pymysql.err, name)


def _configure_mysql(engine: Engine) -> None:
    _classify_mysql_errors()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None and record.info.pop(USER_LOCKS, False):
            cursor = dbapi_connection.cursor()
            cursor.execute("DO RELEASE_ALL_LOCKS()")
            cursor.close()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        raw: Any = connection.connection.driver_connection
        if connection.get_execution_options().get(SQLITE_READ_ONLY):
            raw.execute("BEGIN")  # WAL: a reader takes no lock and waits for no writer
        else:
            begin_immediate(raw)


SQLITE_READ_ONLY = "broadcaster_sqlite_read_only"
"""Execution option for a transaction that only reads: opened with a plain (deferred)
`BEGIN`, so it neither waits for SQLite's write lock nor holds it from the writers (the
scheduler's polls, `ClaimStore`). A write in it would fail to upgrade when another
connection wrote meanwhile: use it for reads only. Other databases ignore it."""


SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_BUSY_TIMEOUT_MS = int(SQLITE_BUSY_TIMEOUT_S * 1000)
SQLITE_LOCK_RETRY_S = (0.0002, 0.0005, 0.001, 0.002)
"""How long `BEGIN IMMEDIATE` waits between tries for SQLite's write lock: then every
2 ms. SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms
between tries, so a waiter that lost a few rounds to busy neighbours slept 25–100 ms past
the lock's release: the tail of the scheduler's claim and the worker's compare-and-set
(bench/lateness.py: 78 ms and 135 ms p99 on a busy machine)."""


def begin_immediate(raw: Any) -> None:
    """`BEGIN IMMEDIATE` on a sqlite3 connection, tried again every few milliseconds while
    another connection holds the write lock, for up to `SQLITE_BUSY_TIMEOUT_S` (then the
    usual `database is locked`). The connection's busy timeout is off for these tries only
    (2 statements, ~6 µs) and stays for the others, which rarely wait in WAL mode: the
    transaction already holds the lock."""
    raw.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
        tries = 0
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(SQLITE_LOCK_RETRY_S[min(tries, len(SQLITE_LOCK_RETRY_S) - 1)])
            tries += 1
    finally:
        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def is_postgresql(engine: Engine) -> bool:
    """Only PostgreSQL can wake the scheduler (LISTEN/NOTIFY); the others are polled."""
    return engine.dialect.name == "postgresql"


def is_mysql(engine: Engine | Connection) -> bool:
    """MySQL or MariaDB (one dialect here, `mysql`, whichever URL named it)."""
    return engine.dialect.name == "mysql"


def shown_url(engine: Engine) -> str:
    """The database URL as it may be printed: without its password."""
    return engine.url.render_as_string(hide_password=True)


def sqlite_file(engine: Engine) -> Path | None:
    """The file a SQLite engine opens (None for PostgreSQL and for `file:` URI forms)."""
    if not is_sqlite(engine) or not engine.url.database or engine.url.query.get("uri"):
        return None
    return Path(engine.url.database).absolute()


def require_database_file(engine: Engine) -> None:
    """Refuse, without creating it, a SQLite file that is not there: connecting would
    create an empty database, and a mistyped path would then look like "no such table"."""
    path = sqlite_file(engine)
    if path is not None and not path.exists():
        raise JobStoreError(
            f"no database at {path}; check DATABASE_URL or run `broadcaster db upgrade`"
        )


def check_connection(engine: Engine) -> None:
    """Fail with a line that names the database (password hidden) and the fix."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise JobStoreError(
            f"cannot reach the database at {shown_url(engine)}: "
            f"{first_line(exc)}; check DATABASE_URL and that the server is running"
        ) from None
    if is_mysql(engine):
        require_skip_locked(engine)


def require_skip_locked(engine: Engine) -> None:
    """Refuse a MySQL older than 8.0 or a MariaDB older than 10.6: they have no
    `FOR UPDATE SKIP LOCKED`, which keeps two schedulers from claiming one row."""
    version = tuple(engine.dialect.server_version_info or ())
    mariadb = bool(getattr(engine.dialect, "is_mariadb", False))
    needed, name = ((10, 6), "MariaDB") if mariadb else ((8, 0), "MySQL")
    if version and version < needed:
        shown = ".".join(str(part) for part in version)
        raise JobStoreError(
            f"{name} {shown} at {shown_url(engine)} is too old: broadcaster needs MySQL 8.0+ "
            "or MariaDB 10.6+ (FOR UPDATE SKIP LOCKED); upgrade the server"
        )


def first_line(exc: BaseException) -> str:
    """The first line of a driver error: the cause, without SQL or background links."""
    message = str(getattr(exc, "orig", None) or exc).strip()
    return redact_text(message.splitlines()[0]) if message else type(exc).__name__
