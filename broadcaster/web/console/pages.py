"""The console's pages (GET): overview, campaign, job, unknown inbox, schedule and import
forms, and the htmx partials that refresh the live parts. Reads are in `views.py`."""

from __future__ import annotations

import math
import threading
from datetime import UTC, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from broadcaster.errors import JobNotFound
from broadcaster.jobs.states import JobStatus
from broadcaster.timeutil import utcnow
from broadcaster.web import queries
from broadcaster.web.console import views
from broadcaster.web.console.chart import rate_chart
from broadcaster.web.console.context import boot_of, display_zone, render
from broadcaster.web.console.guard import viewer
from broadcaster.web.console.session import Session
from broadcaster.web.metrics import Figures
from broadcaster.web.problems import Problem

router = APIRouter(include_in_schema=False)
Viewer = Annotated[Session, Depends(viewer)]
MAX_ID = 2**63 - 1
MAX_BARS = 50
"""Campaigns on the overview, those with work left first: it refreshes every 3 s."""
DELIVERY_FILTERS = ("untracked", "waiting", "completed", "failed", "canceled", "create_failed")


FIRST_READ = threading.Lock()


def _figures(request: Request) -> tuple[Figures, float | None]:
    """The counts /metrics keeps, and their age. Never waits for the first read (at a
    million rows it takes seconds: it also totals the attempts table once): that one
    starts in the background and the page says the counts are coming (age None)."""
    table = request.app.state.metrics.table
    if math.isinf(table.age_s()) and table.cache_s > 0:
        with FIRST_READ:
            if not getattr(request.app.state, "console_first_read", False):
                request.app.state.console_first_read = True
                reader = threading.Thread(target=table.figures, name="console-counts", daemon=True)
                reader.start()
        return Figures(), None
    figures = table.figures()
    return figures, max(0.0, table.age_s())


def _after(request: Request) -> int | None:
    raw = request.query_params.get("after", "")
    return int(raw) if raw.isdigit() and 0 < int(raw) <= MAX_ID else None


# ------------------------------------------------------------------ overview
def _overview_values(request: Request) -> dict[str, Any]:
    boot = boot_of(request)
    figures, age = _figures(request)
    every_bar = views.campaigns_from_figures(figures)
    bars = every_bar[:MAX_BARS]
    seen = {corp for bar in every_bar for corp in bar.corps} - {"(default)"}
    quota, quota_problem = views.quota_of(boot, seen)
    now = utcnow()
    recent = views.recent(boot.store, now)
    start = recent.since.replace(tzinfo=UTC).astimezone(display_zone(boot.settings.default_tz))
    labels = [f"{(start + timedelta(minutes=i)):%H:%M}" for i in range(views.RATE_WINDOW_MIN)]
    limit = max((q.limit for q in quota), default=None)
    series = {
        corp: recent.per_corp.get(corp, [0] * views.RATE_WINDOW_MIN)
        for corp in {q.corp for q in quota} | set(recent.per_corp)
    }
    return {
        "bars": bars,
        "bars_left_out": len(every_bar) - len(bars),
        "figures_age": age,
        "figures_ok": figures.table_ok,
        "reach": request.app.state.console_delivery.by_campaign(),
        "quota": quota,
        "quota_problem": quota_problem,
        "workers": views.workers_of(boot) if quota_problem is None else None,
        "recent": recent,
        "chart": rate_chart(series, limit, views.RATE_WINDOW_MIN, labels),
    }


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, session: Viewer) -> Response:
    values = await run_in_threadpool(_overview_values, request)
    return render(request, "overview.html", values, session=session)


@router.get("/partials/overview", response_class=HTMLResponse)
async def overview_partial(request: Request, session: Viewer) -> Response:
    values = await run_in_threadpool(_overview_values, request)
    return render(request, "overview_live.html", values, session=session)


# ------------------------------------------------------------------ campaign
def _filters(request: Request) -> views.Filters:
    params = request.query_params
    status = params.get("status") or None
    delivery = params.get("delivery") or None
    return views.Filters(
        status=status if status in {s.value for s in JobStatus} else None,
        corp=(params.get("corp") or "").strip()[:1000] or None,
        delivery=delivery if delivery in DELIVERY_FILTERS else None,
        q=(params.get("q") or "").strip()[:200] or None,
    )


def _campaign_values(request: Request, name: str) -> dict[str, Any] | None:
    boot = boot_of(request)
    figures, _age = _figures(request)
    bar = views.campaign_progress(boot.store, name, figures)
    if bar is None:
        return None
    filters = _filters(request)
    rows, next_after = views.campaign_jobs(boot.store, name, filters, _after(request))
    corps = sorted(bar.corps) or sorted(
        {corp for corp, campaign, _s, _n in figures.jobs if campaign == name}
    )
    return {
        "name": name,
        "bar": bar,
        "sums": views.delivery_sums(boot.store, name),
        "rows": rows,
        "next_after": next_after,
        "filters": filters,
        "statuses": [s.value for s in JobStatus],
        "deliveries": DELIVERY_FILTERS,
        "corps": corps,
        "paged": _after(request) is not None,
    }


def _not_found(request: Request, session: Session, key: str, **values: Any) -> Response:
    return render(
        request,
        "not_found.html",
        {"message_key": key, "values": values},
        session=session,
        status=404,
    )


@router.get("/campaigns/{name:path}/cancel", response_class=HTMLResponse)
async def confirm_cancel(request: Request, name: str, session: Viewer) -> Response:
    return await _confirm(request, name, session, "cancel")


@router.get("/campaigns/{name:path}/retry-failed", response_class=HTMLResponse)
async def confirm_retry(request: Request, name: str, session: Viewer) -> Response:
    return await _confirm(request, name, session, "retry")


async def _confirm(request: Request, name: str, session: Session, what: str) -> Response:
    bar = await run_in_threadpool(views.campaign_progress, boot_of(request).store, name, None)
    if bar is None:
        return _not_found(request, session, "campaign.not_found", name=name)
    cancellable = sum(bar.count(s) for s in ("scheduled", "queued", "unknown"))
    values = {
        "name": name,
        "what": what,
        "n": cancellable if what == "cancel" else bar.count("failed"),
        "sending": bar.count("sending"),
    }
    return render(request, "confirm.html", values, session=session)


@router.get("/campaigns/{name:path}", response_class=HTMLResponse)
async def campaign(request: Request, name: str, session: Viewer) -> Response:
    values = await run_in_threadpool(_campaign_values, request, name)
    if values is None:
        return _not_found(request, session, "campaign.not_found", name=name)
    return render(request, "campaign.html", values, session=session)


@router.get("/partials/campaigns/{name:path}/progress", response_class=HTMLResponse)
async def campaign_partial(request: Request, name: str, session: Viewer) -> Response:
    figures, _age = await run_in_threadpool(_figures, request)
    bar = await run_in_threadpool(views.campaign_progress, boot_of(request).store, name, figures)
    if bar is None:
        return _not_found(request, session, "campaign.not_found", name=name)
    return render(request, "campaign_progress.html", {"bar": bar, "name": name}, session=session)


# ------------------------------------------------------------------ job
def _job_values(request: Request, job_id: int) -> dict[str, Any] | None:
    store = boot_of(request).store
    try:
        view = queries.one_job(store, job_id)
    except (Problem, JobNotFound):
        return None
    return {"job": view, "message": views.message_of(view)}


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job(request: Request, job_id: str, session: Viewer) -> Response:
    number = int(job_id) if job_id.isdigit() and 0 < int(job_id) <= MAX_ID else None
    values = None if number is None else await run_in_threadpool(_job_values, request, number)
    if values is None:
        return _not_found(request, session, "job.not_found", id=job_id)
    return render(request, "job.html", values, session=session)


# ------------------------------------------------------------------ unknown inbox
@router.get("/unknown", response_class=HTMLResponse)
async def unknown(request: Request, session: Viewer) -> Response:
    rows, next_after = await run_in_threadpool(
        views.unknown_jobs, boot_of(request).store, _after(request)
    )
    values = {"rows": rows, "next_after": next_after, "paged": _after(request) is not None}
    return render(request, "unknown.html", values, session=session)
