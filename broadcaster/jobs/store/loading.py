"""How the claim reads the columns it judges: in a form that cannot fail to load, so a
producer's odd value fails its own row (`broadcaster.jobs.screening`), never the fetch."""

from __future__ import annotations

from typing import Any

from sqlalchemy import LargeBinary, String, Text, case, cast, func
from sqlalchemy.sql.elements import ColumnElement

from broadcaster.jobs.screening import JUDGED_COLUMNS, TIME_COLUMNS
from broadcaster.jobs.tables import jobs


def judged_columns(dialect: str) -> list[ColumnElement[Any]]:
    """What the claim's RETURNING reads: loading none of these can raise.

    SQLite: each column's storage class (`typeof`) and its bytes (`CAST … AS BLOB`, so
    text that is not UTF-8 does not fail the fetch). PostgreSQL: its own types hold,
    except times outside Python's range, which come as text (`to_char`, independent of
    DateStyle; an infinite time as its name). MySQL: likewise, times as text, where a
    producer's session without NO_ZERO_DATE may have stored '0000-00-00' (or a date MySQL
    zeroed, like '2026-02-30')."""
    columns: list[ColumnElement[Any]] = [jobs.c.id]
    for name in JUDGED_COLUMNS:
        column = jobs.c[name]
        if dialect == "sqlite":
            columns.append(func.typeof(column, type_=String).label(f"{name}__type"))
            columns.append(cast(column, LargeBinary).label(f"{name}__raw"))
        elif name in TIME_COLUMNS:
            columns.append(loadable_time(column, dialect).label(name))
        else:
            columns.append(column.label(name))
    return columns


def loadable_time(expression: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """A time as bytes (SQLite) or text (PostgreSQL, MySQL), for `read_time`."""
    if dialect == "sqlite":
        return cast(expression, LargeBinary)
    if dialect == "mysql":
        return func.date_format(expression, "%Y-%m-%d %H:%i:%s.%f", type_=Text)
    return case(
        (
            func.isfinite(expression),
            func.to_char(expression, "YYYY-MM-DD HH24:MI:SS.US AD", type_=Text),
        ),
        else_=cast(expression, Text),
    )
