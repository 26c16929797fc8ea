"""The /api/v1 routes: thin adapters over the producer API (`scheduling.py`), the JobStore
and the status report (the rows are the ones a SQL producer would write; the rules live in
`broadcaster.produce.api`)."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import AfterValidator, Field

from broadcaster.bootstrap import Bootstrap
from broadcaster.errors import BroadcasterError
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.ops.report import collect, workers_view
from broadcaster.timeutil import utcnow
from broadcaster.web import queries, schedules
from broadcaster.web.auth import Reader, Writer
from broadcaster.web.models import (
    BroadcastBody,
    CampaignCancelled,
    CampaignOut,
    JobDetail,
    JobPage,
    ResolveIn,
    ScheduleChanged,
    ScheduleIn,
    ScheduleList,
    ScheduleOut,
    ScheduleRemoved,
    ScheduleView,
)
from broadcaster.web.scheduling import schedule

log = structlog.get_logger("broadcaster.web")
MAX_ID = 2**63 - 1
JSON = "application/json"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


Label = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_no_nul)]
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="the job's id")]
ScheduleRef = Annotated[
    str,
    Path(min_length=1, max_length=1000, description="the schedule's id or name"),
    AfterValidator(_no_nul),
]
CampaignName = Annotated[str, Path(min_length=1, max_length=1000), AfterValidator(_no_nul)]

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no token, or a wrong or revoked one", **PROBLEM},
    403: {"description": "a read-only token on a write", **PROBLEM},
    503: {"description": "the database is unavailable or not migrated", **PROBLEM},
}
router = APIRouter(prefix="/api/v1", responses=AUTH_ERRORS)


def _boot(request: Request) -> Bootstrap:
    boot: Bootstrap = request.app.state.boot
    return boot


def _store(request: Request) -> JobStore:
    return _boot(request).store


# ------------------------------------------------------------------ scheduling
@router.post(
    "/broadcasts",
    status_code=201,
    response_model=ScheduleOut,
    summary="Schedule one send, or a list of up to 1000",
    responses={
        200: {"description": "a replay: every job existed already", "model": ScheduleOut},
        201: {"description": "at least one job was created"},
        400: {"description": "the body is not JSON", **PROBLEM},
        409: {"description": "a key is held by a job with another body", **PROBLEM},
        413: {"description": "the body is too large", **PROBLEM},
        422: {"description": "invalid fields, each named", **PROBLEM},
    },
)
def create_broadcasts(
    body: BroadcastBody,
    request: Request,
    who: Writer,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=1000,
            description="for a single job: its dedupe_key (a replay answers 200 with the "
            "original job; the same key with another body, 409)",
        ),
    ] = None,
) -> Response:
    outcome = schedule(_store(request), body, idempotency_key)
    jobs = [(item.created, len(item.jobs)) for item in outcome.items]
    log.info(
        "api_jobs_scheduled",
        token=who.name,
        items=len(jobs),
        jobs_created=sum(n for created, n in jobs if created),
        items_replayed=sum(1 for created, _ in jobs if not created),
    )
    return Response(  # built and checked once: FastAPI need not validate it again
        outcome.model_dump_json(),
        status_code=201 if any(item.created for item in outcome.items) else 200,
        media_type=JSON,
    )


# ------------------------------------------------------------------ jobs
@router.get(
    "/broadcasts/{job_id}",
    response_model=JobDetail,
    responses={404: {"description": "no such job", **PROBLEM}},
    summary="One job",
)
def get_broadcast(job_id: JobId, request: Request, who: Reader) -> dict[str, Any]:
    return queries.one_job(_store(request), job_id)


@router.get("/broadcasts", response_model=JobPage, summary="Jobs, newest first, by pages")
def list_broadcasts(
    request: Request,
    who: Reader,
    campaign: Annotated[Label | None, Query()] = None,
    status: Annotated[JobStatus | None, Query()] = None,
    corp_id: Annotated[Label | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    items, next_cursor = queries.page(
        _store(request),
        status=status,
        campaign=campaign,
        corp_id=corp_id,
        limit=limit,
        cursor=cursor,
    )
    return {"items": items, "next_cursor": next_cursor}


CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "the job's status does not allow this", **PROBLEM}
}
MISSING: dict[int | str, dict[str, Any]] = {404: {"description": "no such job", **PROBLEM}}


@router.post(
    "/broadcasts/{job_id}/cancel",
    response_model=JobDetail,
    responses={**CONFLICT, **MISSING},
    summary="Cancel a job not yet sending",
)
def cancel_broadcast(job_id: JobId, request: Request, who: Writer) -> dict[str, Any]:
    store = _store(request)
    store.cancel(job_id, utcnow())
    return queries.one_job(store, job_id)


@router.post(
    "/broadcasts/{job_id}/retry",
    response_model=JobDetail,
    responses={**CONFLICT, **MISSING},
    summary="Send a failed job again, with fresh attempts",
)
def retry_broadcast(job_id: JobId, request: Request, who: Writer) -> dict[str, Any]:
    store = _store(request)
    store.retry(job_id, utcnow())
    return queries.one_job(store, job_id)


@router.post(
    "/broadcasts/{job_id}/resolve",
    response_model=JobDetail,
    responses={**CONFLICT, **MISSING},
    summary="Settle an unknown job: sent, or resend",
)
def resolve_broadcast(
    job_id: JobId, decision: ResolveIn, request: Request, who: Writer
) -> dict[str, Any]:
    store = _store(request)
    store.resolve(job_id, utcnow(), sent=decision.decision == "sent")
    return queries.one_job(store, job_id)


# ------------------------------------------------------------------ campaigns, status
@router.get(
    "/campaigns/{name}",
    response_model=CampaignOut,
    responses={404: {"description": "no jobs in the campaign", **PROBLEM}},
    summary="A campaign's jobs counted by status and delivery",
)
def get_campaign(name: CampaignName, request: Request, who: Reader) -> dict[str, Any]:
    return queries.campaign_counts(_store(request), name)


@router.post(
    "/campaigns/{name}/cancel",
    response_model=CampaignCancelled,
    summary="Cancel every job of a campaign not yet sending",
)
def cancel_campaign(name: CampaignName, request: Request, who: Writer) -> CampaignCancelled:
    cancelled, sending = _store(request).cancel_campaign(name, utcnow())
    return CampaignCancelled(campaign=name, cancelled=cancelled, left_sending=sending)


# ------------------------------------------------------------------ schedules
NO_SCHEDULE: dict[int | str, dict[str, Any]] = {
    404: {"description": "no schedule with that id or name", **PROBLEM}
}


@router.get("/schedules", response_model=ScheduleList, summary="Recurring campaigns")
def list_schedules(request: Request, who: Reader) -> ScheduleList:
    return ScheduleList(items=schedules.listing(_boot(request)))


@router.post(
    "/schedules",
    status_code=201,
    response_model=ScheduleView,
    summary="Add a recurring campaign (as `broadcaster schedules add`)",
    responses={
        409: {"description": "a schedule of that name exists", **PROBLEM},
        422: {"description": "invalid fields, each named", **PROBLEM},
    },
)
def add_schedule(body: ScheduleIn, request: Request, who: Writer) -> ScheduleView:
    view = schedules.add(_boot(request), body)
    log.info("api_schedule_added", token=who.name, schedule_id=view.id)
    return view


@router.post(
    "/schedules/{ref}/pause",
    response_model=ScheduleChanged,
    responses=NO_SCHEDULE,
    summary="Pause a schedule; cancels the jobs made ahead for occurrences to come",
)
def pause_schedule(ref: ScheduleRef, request: Request, who: Writer) -> ScheduleChanged:
    boot = _boot(request)
    schedule_id, cancelled = schedules.store_of(boot).set_paused(ref, True, utcnow())
    log.info("api_schedule_paused", token=who.name, schedule_id=schedule_id)
    return ScheduleChanged(schedule=schedules.one(boot, str(schedule_id)), jobs_cancelled=cancelled)


@router.post(
    "/schedules/{ref}/resume",
    response_model=ScheduleChanged,
    responses=NO_SCHEDULE,
    summary="Resume a schedule, from now on",
)
def resume_schedule(ref: ScheduleRef, request: Request, who: Writer) -> ScheduleChanged:
    boot = _boot(request)
    schedule_id, _ = schedules.store_of(boot).set_paused(ref, False, utcnow())
    log.info("api_schedule_resumed", token=who.name, schedule_id=schedule_id)
    return ScheduleChanged(schedule=schedules.one(boot, str(schedule_id)), jobs_cancelled=0)


@router.delete(
    "/schedules/{ref}",
    response_model=ScheduleRemoved,
    responses=NO_SCHEDULE,
    summary="Remove a schedule; cancels the jobs made ahead for occurrences to come",
)
def remove_schedule(ref: ScheduleRef, request: Request, who: Writer) -> ScheduleRemoved:
    boot = _boot(request)
    view = schedules.one(boot, ref)
    schedule_id, cancelled = schedules.store_of(boot).remove(str(view.id), utcnow())
    log.info("api_schedule_removed", token=who.name, schedule_id=schedule_id)
    return ScheduleRemoved(id=schedule_id, name=view.name, jobs_cancelled=cancelled)


@router.get("/status", summary="What `broadcaster status --json` says")
def status(request: Request, who: Reader) -> dict[str, Any]:
    boot = _boot(request)
    quota: Any
    if not boot.settings.redis_url:
        quota = "REDIS_URL is unset (an embedded Redis lives only while `run` runs)"
    else:
        try:
            quota = boot.quota
        except BroadcasterError as exc:
            quota = str(exc)
    report = collect(boot.store, boot.corps, quota)
    if boot.settings.redis_url and not boot.settings.broker_url and not isinstance(quota, str):
        report["workers"] = workers_view(boot.redis, boot.store, boot.corps)
    return report
