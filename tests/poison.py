"""Poison rows: what another app may write into `broadcast_jobs` by plain SQL, any type in
any producer column (issue 9). Shared by the property test and the chaos suite."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.exc import StatementError

from broadcaster.jobs.tables import PRODUCER_COLUMNS
from tests.helpers import body

PAST_TIME_TEXTS = (
    "0000-01-01 00:00:00",  # SQLite: readable, year 0; PostgreSQL: refused
    "-infinity",  # PostgreSQL: due at once, and no Python time
    "0044-03-15 00:00:00 BC",
    "2026-11-20T20:00:00+08:00",  # fine: stored as UTC (SQLite) or the offset dropped
    "2026-02-30 00:00:00",
    "2024-01-01",
)
FUTURE_TIME_TEXTS = ("infinity", "10000-01-01 00:00:00")


@dataclass(frozen=True)
class Literal:
    """A value written into the SQL text, for what a driver cannot bind (an integer past
    64 bits, which SQLite then stores as a real)."""

    sql: str


def odd_values(*, due_only: bool = False) -> st.SearchStrategy[Any]:
    """Odd values for any column. `due_only`: none that, kept in `send_at`, is a time in
    the future (SQLite reads a number as a Julian day, so no free numbers either)."""
    times = PAST_TIME_TEXTS if due_only else PAST_TIME_TEXTS + FUTURE_TIME_TEXTS
    common = [
        st.text(max_size=12).map(lambda s: "x" + s),  # text that is no number
        st.sampled_from(["", " ", "\t", "0", "-1", "1.5", "1e3", "  7 "]),
        st.binary(max_size=8),
        st.none(),
        st.sampled_from(times),
        st.sampled_from([0, 1.5, 2460000]),  # Julian days 4713 BC and AD 2023 to SQLite
    ]
    if due_only:
        return st.one_of(*common)
    return st.one_of(
        *common,
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.integers(min_value=2**63, max_value=2**90).map(lambda n: Literal(str(n))),
        st.integers(min_value=2**63 + 1, max_value=2**90).map(lambda n: Literal(str(-n))),
        st.floats(),
    )


def odd_rows(*, due_only: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """Up to two producer columns with odd values; `{}` is a good row."""
    any_column = st.sampled_from(PRODUCER_COLUMNS)
    if not due_only:
        return st.dictionaries(any_column, odd_values(), max_size=2)
    free = st.sampled_from([c for c in PRODUCER_COLUMNS if c != "send_at"])
    return st.one_of(
        st.dictionaries(free, odd_values(), max_size=2),
        st.dictionaries(any_column, odd_values(due_only=True), max_size=2),
    )


def certainly_bad(column: str, value: Any, dialect: str) -> bool:
    """Values the claim must fail naming `column`, whenever the database keeps them."""
    if column == "payload":
        return True  # no odd value is a valid body
    if column == "corp_id" and isinstance(value, str) and not value.strip():
        return True
    if dialect == "sqlite":
        if isinstance(value, bytes) and column not in ("send_at", "expires_at"):
            return True
        if column in ("priority", "max_attempts"):
            return isinstance(value, Literal) or (isinstance(value, str) and value[:1] == "x")
        if column in ("send_at", "expires_at"):
            return value in ("0000-01-01 00:00:00", 0, 1.5)  # year 0; 4713 BC
        return False
    if column == "send_at":
        return value in ("-infinity", "0044-03-15 00:00:00 BC")
    if column == "expires_at":
        return value in ("infinity", "-infinity", "0044-03-15 00:00:00 BC", "10000-01-01 00:00:00")
    return False


def insert_odd_row(engine: Engine, name: str, odd: dict[str, Any], **defaults: Any) -> int | None:
    """One row by plain SQL (bound parameters; a `Literal` written into the statement):
    a good row with `odd` over it. None if the database or its driver refused it."""
    row: dict[str, Any] = {
        "corp_id": "corp-a",
        "payload": json.dumps(body(name=name)),
        "send_at": "2026-11-01 00:00:00",
        "campaign": "poison",
        "priority": 0,
        "max_attempts": 3,
        **defaults,
        **odd,
    }
    names, values, params = [], [], {}
    for column, value in row.items():
        names.append(column)
        if isinstance(value, Literal):
            values.append(value.sql)
        else:
            values.append(f":{column}")
            params[column] = value
    statement = (
        f"INSERT INTO broadcast_jobs ({', '.join(names)}) VALUES ({', '.join(values)}) RETURNING id"
    )
    try:
        with engine.begin() as connection:
            return connection.execute(text(statement), params).scalar_one()
    except (StatementError, OverflowError, ValueError):  # refused, with the driver's reason
        return None
