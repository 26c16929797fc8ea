"""`/metrics`: Prometheus' text format, from `prometheus_client`.

Two kinds of figures:
- read from the tables and Redis at scrape time, cached `WEB_METRICS_CACHE_S` (one
  refresh at a time; a scrape during a refresh gets the previous figures): jobs by
  status, corp and campaign; sent jobs by delivery status; vendor calls by outcome and
  errcode and their latency, and lateness (call start - send_at), as counters and
  histograms over `broadcast_attempts` (so they count every process's calls, and survive
  restarts); the oldest due job; quota use per corp.
- the web process's own: requests by route and status, and their duration.

Names follow Prometheus' conventions: base units, `_total` for counters, bounded labels
(corp, campaign, status; never a job id).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine, and_, case, func, literal_column, select
from sqlalchemy.sql.elements import ColumnElement
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broadcaster.bootstrap import Bootstrap
from broadcaster.errors import BroadcasterError
from broadcaster.jobs.states import JobStatus, Outcome
from broadcaster.jobs.tables import attempts, jobs
from broadcaster.timeutil import utcnow
from broadcaster.vendor import CREATE_API

log = structlog.get_logger("broadcaster.web")

CALL_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
LATENESS_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0)


@dataclass
class Histo:
    buckets: list[tuple[str, float]] = field(default_factory=list)
    sum_value: float = 0.0


@dataclass
class Figures:
    """One read of the tables and Redis."""

    jobs: list[tuple[str, str, str, int]] = field(default_factory=list)
    delivery: list[tuple[str, str, str, int]] = field(default_factory=list)
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    call_seconds: Histo = field(default_factory=Histo)
    lateness: Histo = field(default_factory=Histo)
    behind_s: float = 0.0
    quota: dict[str, dict[str, float]] = field(default_factory=dict)
    table_ok: bool = False
    redis_ok: bool | None = None
    read_s: float = 0.0


def _seconds_between(later: Any, earlier: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


def _histogram(
    engine: Engine, value: ColumnElement[Any], where: Any, bounds: Iterable[float], join: Any = None
) -> Histo:
    bounds = list(bounds)
    columns = [func.count().label("n"), func.coalesce(func.sum(value), 0).label("total")]
    columns += [
        func.coalesce(func.sum(case((value <= bound, 1), else_=0)), 0).label(f"b{i}")
        for i, bound in enumerate(bounds)
    ]
    query = select(*columns).where(where)
    if join is not None:
        query = query.select_from(join)
    with engine.begin() as connection:
        row = connection.execute(query).one()
    buckets = [(repr(bound), float(row[i + 2])) for i, bound in enumerate(bounds)]
    buckets.append(("+Inf", float(row.n)))
    return Histo(buckets, float(row.total or 0))


def read_figures(boot: Bootstrap) -> Figures:
    started = time.perf_counter()
    figures = Figures()
    store = boot.store
    engine = store.engine
    dialect = engine.dialect.name
    default = store.default_corp or "(default)"
    figures.jobs = [
        (row.corp_id or default, row.campaign or "", row.status, row.n)
        for row in store.status_counts()
    ]
    delivery = (
        select(
            jobs.c.corp_id,
            jobs.c.campaign,
            jobs.c.delivery_status,
            func.count().label("n"),
        )
        .where(jobs.c.status == JobStatus.SENT.value)
        .group_by(jobs.c.corp_id, jobs.c.campaign, jobs.c.delivery_status)
    )
    calls = select(attempts.c.outcome, attempts.c.errcode, func.count().label("n")).group_by(
        attempts.c.outcome, attempts.c.errcode
    )
    with engine.begin() as connection:
        figures.delivery = [
            (r.corp_id or default, r.campaign or "", r.delivery_status or "untracked", r.n)
            for r in connection.execute(delivery)
        ]
        figures.calls = [
            (r.outcome, "" if r.errcode is None else str(r.errcode), r.n)
            for r in connection.execute(calls)
        ]
    figures.call_seconds = _histogram(
        engine,
        attempts.c.duration_ms / literal_column("1000.0"),
        attempts.c.duration_ms.is_not(None),
        CALL_BUCKETS_S,
    )
    figures.lateness = _histogram(
        engine,
        _seconds_between(attempts.c.started_at, jobs.c.send_at, dialect),
        attempts.c.outcome == Outcome.SENT.value,
        LATENESS_BUCKETS_S,
        join=attempts.join(jobs, and_(jobs.c.id == attempts.c.job_id)),
    )
    now = utcnow()
    oldest = store.oldest_due(now)
    figures.behind_s = (now - oldest).total_seconds() if oldest else 0.0
    figures.table_ok = True
    figures.quota, figures.redis_ok = _quota(boot, {corp for corp, *_ in figures.jobs})
    figures.read_s = time.perf_counter() - started
    return figures


def _quota(boot: Bootstrap, seen: set[str]) -> tuple[dict[str, dict[str, float]], bool | None]:
    if not boot.settings.redis_url:
        return {}, None
    try:
        corps = boot.corps
        quota = boot.quota
        view: dict[str, dict[str, float]] = {}
        for corp in sorted(set(corps.known()) | (seen - {"(default)"})):
            limits = corps.limits(corp)
            view[corp] = {
                "calls_last_minute": quota.calls_in_last(corp, CREATE_API, 60),
                "per_minute_limit": limits.per_minute,
                "in_flight": quota.in_flight(corp, CREATE_API),
                "blocked_s": quota.blocked_for(corp, CREATE_API),
            }
        return view, True
    except (BroadcasterError, redis.RedisError) as exc:
        log.warning("metrics_quota_unavailable", error=str(exc))
        return {}, False


class TableCollector(Collector):
    """Figures read from the tables and Redis, cached, refreshed by one scrape at a time."""

    def __init__(self, boot: Bootstrap, cache_s: float) -> None:
        self.boot = boot
        self.cache_s = cache_s
        self._figures: Figures | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def figures(self) -> Figures:
        fresh = time.monotonic() - self._read_at < self.cache_s
        if fresh and self._figures is not None:
            return self._figures
        if not self._lock.acquire(blocking=self._figures is None):
            return self._figures or Figures()  # another scrape is refreshing
        try:
            try:
                self._figures = read_figures(self.boot)
            except Exception as exc:  # any failure: figures marked down, never a 500
                log.warning("metrics_table_unavailable", error=str(exc))
                self._figures = Figures()
            self._read_at = time.monotonic()
            return self._figures
        finally:
            self._lock.release()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # figures are read at scrape time, not at registration

    def collect(self) -> Iterator[Metric]:
        f = self.figures()
        up = GaugeMetricFamily(
            "broadcaster_metrics_source_up",
            "1 if the source answered the last read",
            labels=["source"],
        )
        up.add_metric(["database"], 1.0 if f.table_ok else 0.0)
        if f.redis_ok is not None:
            up.add_metric(["redis"], 1.0 if f.redis_ok else 0.0)
        yield up
        yield GaugeMetricFamily(
            "broadcaster_metrics_read_seconds",
            "how long the last read of the tables and Redis took",
            value=f.read_s,
        )
        if not f.table_ok:
            return
        by_status = GaugeMetricFamily(
            "broadcaster_jobs",
            "jobs by corp, campaign and status",
            labels=["corp", "campaign", "status"],
        )
        for corp, campaign, status, n in f.jobs:
            by_status.add_metric([corp, campaign, status], n)
        yield by_status
        delivery = GaugeMetricFamily(
            "broadcaster_jobs_sent_delivery",
            "sent jobs by the delivery status of their vendor mission ('untracked': not read)",
            labels=["corp", "campaign", "delivery_status"],
        )
        for corp, campaign, state, n in f.delivery:
            delivery.add_metric([corp, campaign, state], n)
        yield delivery
        calls = CounterMetricFamily(
            "broadcaster_vendor_calls",
            "vendor create calls by outcome and errcode (every process, from the attempts)",
            labels=["outcome", "errcode"],
        )
        for outcome, errcode, n in f.calls:
            calls.add_metric([outcome, errcode], n)
        yield calls
        yield HistogramMetricFamily(
            "broadcaster_vendor_call_seconds",
            "duration of vendor create calls",
            buckets=f.call_seconds.buckets,
            sum_value=f.call_seconds.sum_value,
        )
        yield HistogramMetricFamily(
            "broadcaster_lateness_seconds",
            "start of the successful call minus send_at",
            buckets=f.lateness.buckets,
            sum_value=f.lateness.sum_value,
        )
        yield GaugeMetricFamily(
            "broadcaster_oldest_due_seconds",
            "how long the oldest due scheduled job has waited (0: none)",
            value=f.behind_s,
        )
        quota_families = {
            "calls_last_minute": GaugeMetricFamily(
                "broadcaster_quota_calls_last_minute",
                "create calls in the last 60 s",
                labels=["corp"],
            ),
            "per_minute_limit": GaugeMetricFamily(
                "broadcaster_quota_limit_per_minute",
                "the corp's per-minute quota",
                labels=["corp"],
            ),
            "in_flight": GaugeMetricFamily(
                "broadcaster_quota_in_flight", "create calls in flight", labels=["corp"]
            ),
            "blocked_s": GaugeMetricFamily(
                "broadcaster_quota_blocked_seconds",
                "seconds left of a vendor block (0: none)",
                labels=["corp"],
            ),
        }
        for corp, values in f.quota.items():
            for key, family in quota_families.items():
                family.add_metric([corp], values[key])
        yield from quota_families.values()


class WebMetrics:
    """The registry of one app: the table collector and the web process's own metrics."""

    def __init__(self, boot: Bootstrap, cache_s: float) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.table = TableCollector(boot, cache_s)
        self.registry.register(self.table)
        self.requests = Counter(
            "broadcaster_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "broadcaster_http_request_seconds",
            "HTTP request duration by route",
            ["route"],
            registry=self.registry,
        )


class RequestMetrics:
    """Pure ASGI middleware counting requests by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = getattr(scope.get("route"), "path", "(unmatched)")
            self.metrics.requests.labels(scope["method"], route, str(status[0])).inc()
            self.metrics.duration.labels(route).observe(time.perf_counter() - started)
