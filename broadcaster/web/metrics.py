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
from collections.abc import Iterator
from dataclasses import dataclass, field

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
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broadcaster.bootstrap import Bootstrap
from broadcaster.errors import BroadcasterError
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.tables import jobs
from broadcaster.timeutil import utcnow
from broadcaster.vendor import CREATE_API
from broadcaster.web.attempt_totals import (
    CALL_BUCKETS_S,
    LATENESS_BUCKETS_S,
    AttemptCounter,
    histogram_buckets,
)

log = structlog.get_logger("broadcaster.web")


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


def read_figures(boot: Bootstrap, counter: AttemptCounter | None = None) -> Figures:
    started = time.perf_counter()
    figures = Figures()
    store = boot.store
    engine = store.engine
    default = store.default_corp or "(default)"
    grouped = select(
        jobs.c.corp_id, jobs.c.campaign, jobs.c.status, jobs.c.delivery_status, func.count()
    ).group_by(jobs.c.corp_id, jobs.c.campaign, jobs.c.status, jobs.c.delivery_status)
    by_status: dict[tuple[str, str, str], int] = {}
    by_delivery: dict[tuple[str, str, str], int] = {}
    with engine.begin() as connection:
        for corp, campaign, status, delivery, n in connection.execute(grouped):
            key = (corp or default, campaign or "")
            by_status[(*key, status)] = by_status.get((*key, status), 0) + n
            if status == JobStatus.SENT.value:
                state = (*key, delivery or "untracked")
                by_delivery[state] = by_delivery.get(state, 0) + n
    figures.jobs = [(*key, n) for key, n in sorted(by_status.items())]
    figures.delivery = [(*key, n) for key, n in sorted(by_delivery.items())]
    now = utcnow()
    totals = (counter or AttemptCounter()).read(engine, now)
    figures.calls = [(*key, n) for key, n in sorted(totals.calls.items())]
    figures.call_seconds = Histo(*histogram_buckets(totals.call, CALL_BUCKETS_S))
    figures.lateness = Histo(*histogram_buckets(totals.late, LATENESS_BUCKETS_S))
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
    """Figures read from the tables and Redis. A scrape never waits for a read but the
    first: when the figures are older than `cache_s`, one read starts in the background
    and the scrape gets the figures in hand (their age is a metric). `cache_s` 0 reads at
    every scrape, in the scrape (tests)."""

    def __init__(self, boot: Bootstrap, cache_s: float) -> None:
        self.boot = boot
        self.cache_s = cache_s
        self._figures: Figures | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()
        self._attempts = AttemptCounter()

    def figures(self) -> Figures:
        if self._figures is None or self.cache_s == 0:
            with self._lock:
                self._read()
        elif time.monotonic() - self._read_at >= self.cache_s and self._lock.acquire(
            blocking=False
        ):
            threading.Thread(
                target=self._read_and_release, name="metrics-read", daemon=True
            ).start()
        assert self._figures is not None
        return self._figures

    def age_s(self) -> float:
        return time.monotonic() - self._read_at

    def _read_and_release(self) -> None:
        try:
            self._read()
        finally:
            self._lock.release()

    def _read(self) -> None:
        try:
            self._figures = read_figures(self.boot, self._attempts)
        except Exception as exc:  # any failure: figures marked down, never a 500
            log.warning("metrics_table_unavailable", error=str(exc))
            self._figures = Figures()
        self._read_at = time.monotonic()

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
        yield GaugeMetricFamily(
            "broadcaster_metrics_age_seconds",
            "how old the figures from the tables and Redis are",
            value=self.age_s(),
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
            "attempts by outcome and errcode, from broadcast_attempts (every process): create "
            "calls, and reconcile verdicts (found, absent)",
            labels=["outcome", "errcode"],
        )
        for outcome, errcode, n in f.calls:
            calls.add_metric([outcome, errcode], n)
        yield calls
        yield HistogramMetricFamily(
            "broadcaster_vendor_call_seconds",
            "duration of vendor create calls (reconcile verdicts and quota waits left out)",
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


QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes, logged at debug when they succeed."""


class RequestMetrics:
    """Pure ASGI middleware: counts requests by method, route template and status, and
    writes the access log line."""

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
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(scope["method"], route, str(status[0])).inc()
            self.metrics.duration.labels(route).observe(elapsed)
            # the access log, in place of uvicorn's: never a header, never the query
            quiet = route in QUIET_ROUTES and status[0] < 400
            (log.debug if quiet else log.info)(
                "http_request",
                method=scope["method"],
                route=route,
                status=status[0],
                duration_ms=round(elapsed * 1000, 1),
                client=(scope.get("client") or ("?",))[0],
                token=(scope.get("state") or {}).get("token_name"),
            )
