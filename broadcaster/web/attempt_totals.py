"""Running totals over `broadcast_attempts` for /metrics: vendor calls by outcome and
errcode, call duration and lateness histograms. Attempt rows are written once and never
updated, so the totals are counted once and kept; only new rows are read again."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, func, literal_column, select
from sqlalchemy.sql.elements import ColumnElement

from broadcaster.jobs.states import Outcome
from broadcaster.jobs.tables import attempts, jobs

NOT_CREATE_CALLS = (Outcome.FOUND, Outcome.ABSENT, Outcome.IGNORED, Outcome.QUOTA_WAIT)
"""Attempt rows that are not a create call (reconcile verdicts, messages dropped, quota
waits): counted by outcome, kept out of the call duration histogram."""

CALL_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
LATENESS_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0)


def _seconds_between(later: Any, earlier: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    if dialect == "mysql":  # no interval arithmetic on DATETIME
        return func.timestampdiff(literal_column("MICROSECOND"), earlier, later) / 1e6
    return func.extract("epoch", later - earlier)


@dataclass
class AttemptTotals:
    """Counts over a range of `broadcast_attempts` rows (which are never updated)."""

    calls: dict[tuple[str, str], int] = field(default_factory=dict)
    call: list[float] = field(default_factory=lambda: [0.0] * (len(CALL_BUCKETS_S) + 2))
    late: list[float] = field(default_factory=lambda: [0.0] * (len(LATENESS_BUCKETS_S) + 2))

    def plus(self, other: AttemptTotals) -> AttemptTotals:
        calls = dict(self.calls)
        for key, n in other.calls.items():
            calls[key] = calls.get(key, 0) + n
        return AttemptTotals(
            calls,
            [a + b for a, b in zip(self.call, other.call, strict=True)],
            [a + b for a, b in zip(self.late, other.late, strict=True)],
        )


def _sums(
    connection: Connection,
    value: ColumnElement[Any],
    where: Any,
    bounds: Iterable[float],
    join: Any = None,
) -> list[float]:
    """[count <= each bound ..., count, sum]."""
    columns: list[ColumnElement[Any]] = [
        func.coalesce(func.sum(case((value <= bound, 1), else_=0)), 0) for bound in bounds
    ]
    columns += [func.count(), func.coalesce(func.sum(value), 0)]
    query = select(*columns).where(where)
    if join is not None:
        query = query.select_from(join)
    return [float(v or 0) for v in connection.execute(query).one()]


def read_attempts(
    connection: Connection, dialect: str, after: int, up_to: int | None
) -> AttemptTotals:
    """The attempts with `after < id <= up_to` (no upper bound if None), counted."""
    where = attempts.c.id > after
    if up_to is not None:
        where = and_(where, attempts.c.id <= up_to)
    calls = (
        select(attempts.c.outcome, attempts.c.errcode, func.count().label("n"))
        .where(where)
        .group_by(attempts.c.outcome, attempts.c.errcode)
    )
    totals = AttemptTotals()
    totals.calls = {
        (r.outcome, "" if r.errcode is None else str(r.errcode)): r.n
        for r in connection.execute(calls)
    }
    totals.call = _sums(
        connection,
        attempts.c.duration_ms / literal_column("1000.0"),
        and_(
            where,
            attempts.c.duration_ms.is_not(None),
            attempts.c.outcome.not_in([o.value for o in NOT_CREATE_CALLS]),
        ),
        CALL_BUCKETS_S,
    )
    totals.late = _sums(
        connection,
        _seconds_between(attempts.c.started_at, jobs.c.send_at, dialect),
        and_(where, attempts.c.outcome == Outcome.SENT.value),
        LATENESS_BUCKETS_S,
        join=attempts.join(jobs, jobs.c.id == attempts.c.job_id),
    )
    return totals


def histogram_buckets(
    sums: list[float], bounds: Iterable[float]
) -> tuple[list[tuple[str, float]], float]:
    *below, count, total = sums
    buckets = [(repr(bound), n) for bound, n in zip(bounds, below, strict=True)]
    return [*buckets, ("+Inf", count)], total


SETTLE_S = 600.0
"""Attempts that started longer ago than this are counted once and kept: their rows were
committed long since (ids are handed out before commit, so a recent id range may still
gain a row). Only the last ten minutes are read again at each refresh."""


class AttemptCounter:
    """Running totals over `broadcast_attempts`: the first read scans the table, later ones
    only the rows added since (by id) plus the unsettled tail."""

    def __init__(self) -> None:
        self.settled = AttemptTotals()
        self.settled_up_to = 0

    def read(self, engine: Engine, now: datetime) -> AttemptTotals:
        dialect = engine.dialect.name
        with engine.begin() as connection:
            settle_to = connection.execute(
                select(func.max(attempts.c.id)).where(
                    attempts.c.id > self.settled_up_to,
                    attempts.c.started_at < now - timedelta(seconds=SETTLE_S),
                )
            ).scalar()
            if settle_to is not None:
                more = read_attempts(connection, dialect, self.settled_up_to, settle_to)
                self.settled = self.settled.plus(more)
                self.settled_up_to = settle_to
            tail = read_attempts(connection, dialect, self.settled_up_to, None)
        return self.settled.plus(tail)
