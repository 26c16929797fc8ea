"""Engines for the two supported databases, configured for many writers.

SQLite: WAL (readers never block the writer), a busy timeout instead of instant
`database is locked`, and every transaction opened with `BEGIN IMMEDIATE`: a deferred
transaction that reads and then writes can fail to upgrade its lock when another process
wrote in between, and every transaction of ours writes. PostgreSQL: psycopg 3; a restarted
server costs one failed statement per process, not a crash.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError

from broadcaster.errors import JobStoreError


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy's default driver is psycopg2)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.removeprefix("postgres://")
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    # No pre-ping: it doubled the round trips of every job (bench/overhead.py). After a
    # server restart the first statement on a stale connection fails instead, SQLAlchemy
    # then invalidates the whole pool, and the callers' own recovery covers that one
    # failure (a finish is retried, a lost message is re-enqueued by the sweep).
    kwargs.setdefault("pool_recycle", 1800)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def check_connection(engine: Engine) -> None:
    """Fail with a line that names the database (password hidden) and the fix."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise JobStoreError(
            f"cannot reach the database at {engine.url.render_as_string(hide_password=True)}: "
            f"{first_line(exc)}; check DATABASE_URL and that the server is running"
        ) from None


def first_line(exc: BaseException) -> str:
    """The first line of a driver error: the cause, without SQL or background links."""
    message = str(getattr(exc, "orig", None) or exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__
