"""The console's reads, each chosen to stay cheap on a table of a million rows.

- Overview, per campaign: the counts `/metrics` already keeps (`WebMetrics`, one grouped
  read in the background every WEB_METRICS_CACHE_S), never a count per refresh.
- Campaign progress: counts by status for one campaign, on the (campaign, status) index
  (index-only on PostgreSQL: the cost is the campaign's rows, not the table's).
- Job lists: newest first by id, `LIMIT 51`, on the primary key or the (campaign,
  status) and status indexes.
- Send rate and lateness: the attempts of the last 15 minutes, found by a binary search
  on their primary key (no index on time needed); quota: a few Redis reads per corp.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import ColumnElement, Connection, func, or_, select

from broadcaster.bootstrap import Bootstrap
from broadcaster.errors import BroadcasterError
from broadcaster.jobs.states import JobStatus, Outcome
from broadcaster.jobs.store import JobStore
from broadcaster.jobs.tables import attempts, jobs
from broadcaster.ops.report import percentile, workers_view
from broadcaster.vendor import CREATE_API
from broadcaster.web import queries
from broadcaster.web.attempt_totals import NOT_CREATE_CALLS
from broadcaster.web.metrics import Figures

STATUS_ORDER = [status.value for status in JobStatus]
"""scheduled, queued, sending, sent, failed, unknown, cancelled, expired: the bar's order."""
PAGE_SIZE = 50
RATE_WINDOW_MIN = 15


# ------------------------------------------------------------------ progress
@dataclass
class Progress:
    """A campaign's jobs by status (and its sent jobs by delivery), for one bar."""

    name: str
    by_status: dict[str, int] = field(default_factory=dict)
    by_delivery: dict[str, int] = field(default_factory=dict)
    corps: set[str] = field(default_factory=set)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def count(self, status: str) -> int:
        return self.by_status.get(status, 0)

    def segments(self) -> list[tuple[str, int, float]]:
        """(status, count, percent of the total) in the bar's order, empty ones left out."""
        total = self.total or 1
        known = [s for s in STATUS_ORDER if self.by_status.get(s)]
        odd = sorted(s for s in self.by_status if s not in STATUS_ORDER and self.by_status[s])
        return [(s, self.by_status[s], 100.0 * self.by_status[s] / total) for s in known + odd]

    def pending(self) -> int:
        """Jobs still to be sent, or waiting for an operator: what makes a bar worth a look."""
        return sum(self.count(s) for s in ("scheduled", "queued", "sending", "unknown"))

    def done_share(self) -> float:
        settled = sum(self.count(s) for s in ("sent", "failed", "cancelled", "expired"))
        return 100.0 * settled / self.total if self.total else 0.0


def campaigns_from_figures(figures: Figures) -> list[Progress]:
    """Every campaign's bar from the figures `/metrics` keeps (no query of its own)."""
    found: dict[str, Progress] = {}
    for corp, campaign, status, n in figures.jobs:
        bar = found.setdefault(campaign, Progress(campaign))
        bar.by_status[status] = bar.by_status.get(status, 0) + n
        bar.corps.add(corp)
    for _corp, campaign, state, n in figures.delivery:
        bar = found.setdefault(campaign, Progress(campaign))
        bar.by_delivery[state] = bar.by_delivery.get(state, 0) + n
    return sorted(found.values(), key=lambda bar: (not bar.pending(), bar.name == "", bar.name))


def campaign_progress(store: JobStore, name: str, figures: Figures | None) -> Progress | None:
    """One campaign's counts by status, exact (the (campaign, status) index); its delivery
    from the figures in hand. None when it has no jobs."""
    query = (
        select(jobs.c.status, func.count().label("n"))
        .where(jobs.c.campaign == name)
        .group_by(jobs.c.status)
    )
    with store.engine.begin() as connection:
        by_status = {row.status: row.n for row in connection.execute(query)}
    if not by_status:
        return None
    bar = Progress(name, by_status)
    for _corp, campaign, state, n in figures.delivery if figures else []:
        if campaign == name:
            bar.by_delivery[state] = bar.by_delivery.get(state, 0) + n
    return bar


def delivery_sums(store: JobStore, name: str) -> dict[str, int]:
    """Staff confirmed (of asked) and groups reached over the campaign's sent jobs: for
    the campaign page itself (not its refresh), over the campaign's sent rows."""
    query = select(
        func.coalesce(func.sum(jobs.c.delivery_staff_confirmed), 0).label("confirmed"),
        func.coalesce(func.sum(jobs.c.delivery_staff_total), 0).label("staff"),
        func.coalesce(func.sum(jobs.c.delivery_groups_reached), 0).label("reached"),
        func.coalesce(func.sum(jobs.c.delivery_groups_unreached), 0).label("unreached"),
    ).where(jobs.c.campaign == name, jobs.c.status == JobStatus.SENT.value)
    with store.engine.begin() as connection:
        row = connection.execute(query).one()
    return {key: int(value or 0) for key, value in row._mapping.items()}


# ------------------------------------------------------------------ job lists
@dataclass(frozen=True)
class Filters:
    status: str | None = None
    corp: str | None = None
    delivery: str | None = None
    q: str | None = None


def _filters(store: JobStore, filters: Filters) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if filters.status:
        where.append(jobs.c.status == filters.status)
    if filters.corp:
        if filters.corp == store.default_corp:  # NULL is the default corp
            where.append(or_(jobs.c.corp_id == filters.corp, jobs.c.corp_id.is_(None)))
        else:
            where.append(jobs.c.corp_id == filters.corp)
    if filters.delivery == "untracked":
        where.append(jobs.c.status == JobStatus.SENT.value)
        where.append(jobs.c.delivery_status.is_(None))
    elif filters.delivery:
        where.append(jobs.c.delivery_status == filters.delivery)
    if filters.q:
        # dedupe key, or anything in the vendor body: name, text, group ids (as stored)
        where.append(
            or_(
                jobs.c.dedupe_key.contains(filters.q, autoescape=True),
                jobs.c.payload.contains(filters.q, autoescape=True),
            )
        )
    return where


def job_page(
    store: JobStore,
    where: list[ColumnElement[bool]],
    after: int | None,
    limit: int = PAGE_SIZE,
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first by id; `after` is the last id of the page before. Returns the rows (as
    the API's job view, which no odd stored value can break) and the next page's `after`."""
    conditions = list(where)
    if after is not None:
        conditions.append(jobs.c.id < after)

    def shape(columns: list[ColumnElement[Any]]) -> Any:
        return select(*columns).where(*conditions).order_by(jobs.c.id.desc()).limit(limit + 1)

    with store.engine.begin() as connection:
        rows = queries._rows(connection, store.engine, shape)
    views = [queries.job_view(row, store.default_corp) for row in rows[:limit]]
    more = len(rows) > limit and views
    return views, (views[-1]["id"] if more else None)


def campaign_jobs(
    store: JobStore, name: str, filters: Filters, after: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    return job_page(store, [jobs.c.campaign == name, *_filters(store, filters)], after)


def unknown_jobs(store: JobStore, after: int | None) -> tuple[list[dict[str, Any]], int | None]:
    return job_page(store, [jobs.c.status == JobStatus.UNKNOWN.value], after, limit=200)


def ids_of(store: JobStore, campaign: str, status: JobStatus) -> list[int]:
    """A campaign's jobs in one status (the (campaign, status) index)."""
    query = select(jobs.c.id).where(jobs.c.campaign == campaign, jobs.c.status == status.value)
    with store.engine.begin() as connection:
        return list(connection.execute(query).scalars())


# ------------------------------------------------------------------ one job
def message_of(view: dict[str, Any]) -> dict[str, Any]:
    """The vendor body, readable: name, text, attachments, groups and staff."""
    payload = view.get("payload")
    if isinstance(payload, str):  # not JSON: shown as it is
        return {"raw": payload}
    if not isinstance(payload, dict):
        return {"raw": json.dumps(payload, ensure_ascii=False)}
    groups = payload.get("group_ext_id_list")
    staff = payload.get("staff_ext_id_list")
    attachments = payload.get("attachments")
    return {
        "name": payload.get("name"),
        "text": payload.get("text"),
        "groups": len(groups) if isinstance(groups, list) else 0,
        "group_ids": groups[:20] if isinstance(groups, list) else [],
        "staff": staff if isinstance(staff, list) else [],
        "attachments": [_attachment(a) for a in attachments]
        if isinstance(attachments, list)
        else [],
        "raw": json.dumps(payload, ensure_ascii=False, indent=2),
    }


def _attachment(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    kind = str(item.get("msgtype", "?"))
    body = item.get(kind)
    if isinstance(body, dict):
        label = body.get("title") or body.get("url") or ""
        return f"{kind}: {label}"
    return kind


# ------------------------------------------------------------------ quota, rate, lateness
@dataclass
class CorpQuota:
    corp: str
    calls: int
    limit: int
    usable: int
    in_flight: int
    cap: int
    blocked_s: float

    @property
    def calls_pct(self) -> float:
        return min(100.0, 100.0 * self.calls / self.limit) if self.limit else 0.0

    @property
    def flight_pct(self) -> float:
        return min(100.0, 100.0 * self.in_flight / self.cap) if self.cap else 0.0


def quota_of(boot: Bootstrap, corps: Iterable[str]) -> tuple[list[CorpQuota], str | None]:
    """Live quota per corp from Redis (the limiter's own read-only counters); or the
    catalog key saying why it cannot be read."""
    if not boot.settings.redis_url:
        return [], "overview.no_redis"
    try:
        quota = boot.quota
        directory = boot.corps
        out = []
        for corp in sorted(set(directory.known()) | set(corps)):
            limits = directory.limits(corp)
            out.append(
                CorpQuota(
                    corp=corp,
                    calls=quota.calls_in_last(corp, CREATE_API, 60),
                    limit=limits.per_minute,
                    usable=limits.usable_per_minute,
                    in_flight=quota.in_flight(corp, CREATE_API),
                    cap=limits.max_in_flight,
                    blocked_s=quota.blocked_for(corp, CREATE_API),
                )
            )
        return out, None
    except (BroadcasterError, redis.RedisError):
        return [], "overview.redis_down"


def workers_of(boot: Bootstrap) -> dict[str, Any] | None:
    """The live worker processes against what the corps' quota needs (`status`'s
    `workers:` line, read from the workers' Redis beats); None where there is no such
    count (RabbitMQ tracks its consumers itself; without REDIS_URL there is no beat)."""
    if not boot.settings.redis_url or boot.settings.broker_url:
        return None
    try:
        view = workers_view(boot.redis, boot.store, boot.corps)
    except BroadcasterError as exc:
        view = {"error": str(exc)}
    return None if "error" in view else view


@dataclass
class Recent:
    """The last 15 minutes of calls: per corp, create calls per minute; lateness."""

    since: datetime
    per_corp: dict[str, list[int]] = field(default_factory=dict)
    lateness: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float | None:
        return percentile(self.lateness, 0.5)

    @property
    def p99(self) -> float | None:
        return percentile(self.lateness, 0.99)


SLACK_IDS = 2000
"""Attempt rows are written when a call ends, so ids follow started_at only roughly (by
at most the calls in flight at once, a few hundred); the scan starts this many ids early
and filters by time."""


def first_id_since(connection: Connection, since: datetime) -> int | None:
    """The lowest attempt id started at or after `since`, roughly: a binary search over the
    primary key (about 20 lookups at a million rows; attempts has no index on time)."""
    # Two statements: SQLite answers min() and max() alone from the key's ends, but scans
    # the whole index for both in one (120-225 ms at 800k attempts, every refresh).
    low = connection.execute(select(func.min(attempts.c.id))).scalar()
    high = connection.execute(select(func.max(attempts.c.id))).scalar()
    if low is None:
        return None
    while low < high:
        middle = (low + high) // 2
        row = connection.execute(
            select(attempts.c.id, attempts.c.started_at)
            .where(attempts.c.id >= middle)
            .order_by(attempts.c.id)
            .limit(1)
        ).one()
        started = queries.as_utc(row.started_at)
        if started is not None and started.replace(tzinfo=None) < since:
            low = row.id + 1
        else:
            high = middle
    return low


def recent(store: JobStore, now: datetime) -> Recent:
    """Calls of the last 15 minutes, found by id (`first_id_since`): ~600 a minute per
    corp at most, counted per minute here; and the lateness of the sent ones (start of
    the successful call - send_at, as `status` reads it)."""
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=RATE_WINDOW_MIN - 1)
    found = Recent(since)
    default = store.default_corp or "(default)"
    with store.engine.begin() as connection:
        start = first_id_since(connection, since)
        if start is None:
            return found
        query = (
            select(attempts.c.started_at, attempts.c.outcome, jobs.c.corp_id, jobs.c.send_at)
            .join(jobs, jobs.c.id == attempts.c.job_id)
            .where(
                attempts.c.id >= start - SLACK_IDS,
                attempts.c.started_at >= since,
                attempts.c.outcome.not_in([o.value for o in NOT_CREATE_CALLS]),
            )
        )
        rows = connection.execute(query).all()
    for row in rows:
        started = queries.as_utc(row.started_at)
        if started is None:
            continue
        minute = int((started.replace(tzinfo=None) - since).total_seconds() // 60)
        if 0 <= minute < RATE_WINDOW_MIN:
            series = found.per_corp.setdefault(row.corp_id or default, [0] * RATE_WINDOW_MIN)
            series[minute] += 1
        send_at = queries.as_utc(row.send_at)
        if row.outcome == Outcome.SENT.value and send_at is not None:
            found.lateness.append((started - send_at).total_seconds())
    return found
