"""Engines for the two supported databases, configured for many writers.

SQLite: WAL (readers never block the writer), a busy timeout instead of instant
`database is locked`, and every transaction opened with `BEGIN IMMEDIATE`: a deferred
transaction that reads and then writes can fail to upgrade its lock when another process
wrote in between, and every transaction of ours writes. PostgreSQL: psycopg 3; a restarted
server costs one failed statement per process, not a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError

from broadcaster.errors import JobStoreError
from broadcaster.logs import redact_text
from broadcaster.settings import POSTGRES_DRIVERS


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy's default driver is psycopg2, which
    is not installed); so do `postgres://` and `postgresql+psycopg2://` (same URL form)."""
    scheme, separator, rest = url.partition("://")
    backend, _, driver = scheme.partition("+")
    if separator and backend in ("postgresql", "postgres") and driver in POSTGRES_DRIVERS:
        return "postgresql+psycopg://" + rest
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
    def _on_connect(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


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


def first_line(exc: BaseException) -> str:
    """The first line of a driver error: the cause, without SQL or background links."""
    message = str(getattr(exc, "orig", None) or exc).strip()
    return redact_text(message.splitlines()[0]) if message else type(exc).__name__
