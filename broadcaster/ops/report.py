"""The operator's view, shared by `broadcaster status` and the demo's summary: counts per
corp and campaign, lateness, quota use, vendor blocks, jobs awaiting a decision; and
(`workers_view`, for `status`) whether the workers alive can reach the corps' quota."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import timedelta
from typing import Any

import redis

from broadcaster.broker.liveness import live_workers
from broadcaster.campaigns.views import campaign_view
from broadcaster.corps import CorpDirectory
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.quota.limiter import RedisQuota
from broadcaster.quota.sizing import Shortfall, measured_latency_ms, quota_need
from broadcaster.timeutil import utcnow
from broadcaster.vendor import CREATE_API


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def collect(
    store: JobStore,
    corps: CorpDirectory,
    quota: RedisQuota | str,
    *,
    cap_policy: str | None = None,
) -> dict[str, Any]:
    """Everything `status` shows; `quota` is the limiter, or why it is not available;
    `cap_policy` the monthly cap's (MONTHLY_CAP_POLICY), shown with its counts."""
    now = utcnow()
    groups: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    totals: dict[str, int] = defaultdict(int)
    corp_ids: set[str] = set(corps.known())
    for row in store.status_counts():
        corp = row.corp_id or store.default_corp or "(default)"
        corp_ids.add(corp)
        groups[(corp, row.campaign or "")][row.status] = row.n
        totals[row.status] += row.n
    delivery = {
        (row.corp_id or store.default_corp or "(default)", row.campaign or ""): {
            "sent": row.sent,
            "missions": row.missions,
            "staff_confirmed": row.confirmed,
            "staff_asked": row.staff,
            "groups_reached": row.reached,
            "groups_not_reached": row.unreached,
            "completed": row.completed,
            "failed": row.failed,
        }
        for row in store.delivery_counts()
    }
    oldest_due = store.oldest_due(now)
    lateness = store.lateness_s(now - timedelta(hours=1))
    return {
        "now": now.isoformat(),
        "totals": dict(totals),
        "groups": [
            {
                "corp_id": corp,
                "campaign": campaign,
                "counts": counts,
                "delivery": delivery.get((corp, campaign)),
            }
            for (corp, campaign), counts in sorted(groups.items())
        ],
        "oldest_due": oldest_due.isoformat() if oldest_due else None,
        "behind_s": round((now - oldest_due).total_seconds(), 3) if oldest_due else 0.0,
        "lateness_last_hour_s": {
            "count": len(lateness),
            "p50": _round(percentile(lateness, 0.50)),
            "p99": _round(percentile(lateness, 0.99)),
        },
        "awaiting_decision": totals.get(JobStatus.UNKNOWN, 0),
        "unknown_reasons": [
            {"reason": row.last_error, "jobs": row.n} for row in store.unknown_reasons()
        ]
        if totals.get(JobStatus.UNKNOWN)
        else [],
        "quota": _quota_view(sorted(corp_ids), corps, quota),
        "campaign_controls": campaign_view(
            store.engine, corps, now, default_corp=store.default_corp, cap_policy=cap_policy
        ),
    }


def _quota_view(
    corp_ids: list[str], corps: CorpDirectory, quota: RedisQuota | str
) -> dict[str, Any]:
    if isinstance(quota, str):
        return {"error": quota}
    view = {}
    try:
        for corp in corp_ids:
            limits = corps.limits(corp)
            last_minute = quota.calls_in_last(corp, CREATE_API, 60)
            view[corp] = {
                "calls_last_minute": last_minute,
                "per_minute_limit": limits.per_minute,
                "used_pct": round(100 * last_minute / limits.per_minute, 1),
                "in_flight": quota.in_flight(corp, CREATE_API),
                "blocked_for_s": round(quota.blocked_for(corp, CREATE_API), 1),
            }
    except redis.RedisError as exc:
        return {"error": f"Redis not reachable: {exc}"}
    return view


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def workers_view(
    client: redis.Redis | str, store: JobStore, corps: CorpDirectory
) -> dict[str, Any]:
    """The worker processes alive (their Liveness beats in Redis: `broker/liveness.py`)
    against the threads the configured corps' quota keeps busy at once (their in-flight
    caps, lowered by the vendor's measured latency: `quota/sizing.py`). `client` is the
    broker's Redis, or why there is none. `line` says it in one line; `short` is True when
    the workers cannot reach the quota (none alive included)."""
    if isinstance(client, str):
        return {"error": client}
    try:
        workers = live_workers(client)
    except redis.RedisError as exc:
        return {"error": f"Redis not reachable: {exc}"}
    need = quota_need(corps, measured_latency_ms(store.engine, store.default_corp))
    shortfall = Shortfall(tuple(worker.threads for worker in workers), need)
    return {
        "processes": shortfall.processes,
        "threads": shortfall.threads,
        "threads_needed": need.threads,
        "short": shortfall.short or not workers,
        "line": shortfall.line(),
        "alive": [
            {
                "host": worker.host,
                "pid": worker.pid,
                "threads": worker.threads,
                "prefetch": worker.prefetch,
            }
            for worker in workers
        ],
    }
