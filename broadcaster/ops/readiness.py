"""Start-up checks that wait instead of dying: a service started before its database or
Redis (a deploy, a reboot) logs one clear line per try and carries on when they appear."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from broadcaster import migrate
from broadcaster.db import check_connection, first_line, require_database_file, shown_url
from broadcaster.errors import BroadcasterError, JobStoreError

log = structlog.get_logger("broadcaster")
T = TypeVar("T")


def check_schema(engine: Engine) -> None:
    """The database is there (a missing SQLite file is not created), reachable, and
    migrated to the code's head revision; else one line that says to run `db upgrade`."""
    require_database_file(engine)
    check_connection(engine)
    try:
        current = migrate.current_revision(engine)
    except SQLAlchemyError as exc:
        raise JobStoreError(
            f"cannot read the schema revision of the database at {shown_url(engine)}: "
            f"{first_line(exc)}; run `broadcaster db upgrade`"
        ) from None
    head = migrate.head_revision()
    if current is None:
        raise JobStoreError(
            f"the database at {shown_url(engine)} has no broadcaster tables yet; "
            "run `broadcaster db upgrade`"
        )
    if current != head:
        raise JobStoreError(
            f"database schema is at {current or 'nothing'}, the code needs {head}; "
            "run `broadcaster db upgrade`"
        )


class Stopped(Exception):
    """The process was asked to stop while waiting for a dependency."""


def wait_for(
    attempt: Callable[[], T],
    what: str,
    stop: threading.Event,
    *,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
) -> T:
    """Call `attempt` until it succeeds, backing off; raise `Stopped` if `stop` is set first."""
    delay = first_delay
    while not stop.is_set():
        try:
            return attempt()
        except BroadcasterError as exc:
            log.error("not_ready", what=what, error=str(exc), retry_in_s=delay)
        stop.wait(delay)
        delay = min(delay * 2, max_delay)
    raise Stopped(what)
