"""The /api/v1 routes: thin adapters over the producer API and the JobStore (the rows are
the ones a SQL producer would write; the rules live in `broadcaster.produce.api`)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import AfterValidator, Field, ValidationError

from broadcaster.bootstrap import Bootstrap
from broadcaster.errors import BroadcasterError, InvalidJob, InvalidPayload
from broadcaster.jobs.screening import read_time
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.ops.report import collect
from broadcaster.produce.api import JobRequest, part_collisions
from broadcaster.timeutil import utcnow
from broadcaster.web import queries
from broadcaster.web.auth import Reader, Writer
from broadcaster.web.models import (
    BroadcastBody,
    BroadcastIn,
    CampaignCancelled,
    CampaignOut,
    ItemResult,
    JobDetail,
    JobPage,
    JobRef,
    ResolveIn,
    ScheduleOut,
)
from broadcaster.web.problems import Problem, validation_errors

MAX_ID = 2**63 - 1
JSON = "application/json"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


Label = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_no_nul)]
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="the job's id")]
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
    single = isinstance(body, BroadcastIn)
    items: list[BroadcastIn] = [body] if isinstance(body, BroadcastIn) else list(body)
    if idempotency_key is not None:
        items = [_with_key(items, idempotency_key, single)]
    _refuse_repeated_keys(items, single)
    planned = _rows(items, single)
    store = _store(request)
    held = queries.rows_by_key(store, [k for _, rows in planned for k in _keys(rows)])
    _refuse_conflicts(store, items, planned, held, single)
    for index, reason in part_collisions(store, planned).items():
        raise Problem(
            422, reason, errors=[{"pointer": _at(single, index, "dedupe_key"), "detail": reason}]
        )
    rows = [row for _, item_rows in planned for row in item_rows]
    inserted = store.insert_jobs(rows) if rows else None
    fresh = iter(inserted.inserted_ids if inserted else [])
    skipped = set(inserted.duplicate_keys if inserted else [])
    late = [k for k in skipped if k not in held]  # written by someone since the check
    if late:
        held.update(queries.rows_by_key(store, late))
        _refuse_conflicts(store, items, planned, held, single, written=True)
    answer = ScheduleOut(items=[])
    default = store.default_corp
    for index, item_rows in planned:
        result = ItemResult(index=index, created=False, jobs=[])
        for row in item_rows:
            key = row["dedupe_key"]
            if key is not None and key in skipped:
                job = held[key]
                ref = JobRef(
                    id=job.id,
                    status=job.status,
                    dedupe_key=key,
                    corp_id=job.corp_id or default,
                    campaign=job.campaign,
                    send_at=queries.as_utc(job.send_at),
                )
            else:
                result.created = True
                ref = JobRef(
                    id=next(fresh),
                    status=JobStatus.SCHEDULED.value,
                    dedupe_key=key,
                    corp_id=row["corp_id"] or default,
                    campaign=row["campaign"],
                    send_at=row["send_at"].replace(tzinfo=UTC),
                )
            result.jobs.append(ref)
        answer.items.append(result)
    created = any(item.created for item in answer.items)
    return Response(  # built and checked once here: FastAPI need not validate it again
        answer.model_dump_json(), status_code=201 if created else 200, media_type=JSON
    )


def _at(single: bool, index: int, field: str) -> str:
    return f"/{field}" if single else f"/{index}/{field}"


def _with_key(items: list[BroadcastIn], key: str, single: bool) -> BroadcastIn:
    where = "header:Idempotency-Key"
    if not single:
        raise Problem(
            422,
            "Idempotency-Key is for a single job; in a list give each item its dedupe_key",
            errors=[{"pointer": where, "detail": "not allowed with a list"}],
        )
    item = items[0]
    if item.dedupe_key is not None and item.dedupe_key != key:
        raise Problem(
            422,
            "Idempotency-Key and dedupe_key differ",
            errors=[{"pointer": where, "detail": "must equal the body's dedupe_key"}],
        )
    try:  # the same rules as a dedupe_key (length, no NUL, no part suffix)
        JobRequest.model_validate({"payload": {}, "dedupe_key": key})
    except ValidationError as exc:
        errors = [{**e, "pointer": where} for e in validation_errors(exc.errors())]
        raise Problem(422, "invalid Idempotency-Key", errors=errors) from None
    return item.model_copy(update={"dedupe_key": key})


def _refuse_repeated_keys(items: list[BroadcastIn], single: bool) -> None:
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.dedupe_key is None:
            continue
        if item.dedupe_key in seen:
            detail = f"the same dedupe_key as item {seen[item.dedupe_key]}"
            raise Problem(
                422,
                "a dedupe_key is repeated in the request",
                errors=[{"pointer": _at(single, index, "dedupe_key"), "detail": detail}],
            )
        seen[item.dedupe_key] = index


def _rows(items: list[BroadcastIn], single: bool) -> list[tuple[int, list[dict[str, Any]]]]:
    """Every item's table rows (split over 2000 groups), or 422 naming each bad item."""
    planned, errors = [], []
    for index, item in enumerate(items):
        try:
            planned.append((index, item.to_rows()))
        except (InvalidPayload, InvalidJob) as exc:
            errors.append({"pointer": _at(single, index, "payload"), "detail": str(exc)})
    if errors:
        noun = "problem" if len(errors) == 1 else "problems"
        raise Problem(422, f"{len(errors)} {noun} in the request", errors=errors)
    return planned


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    return [row["dedupe_key"] for row in rows if row["dedupe_key"] is not None]


def _same(store: JobStore, item: BroadcastIn, row: dict[str, Any], held: Any) -> bool:
    """Whether the row a key holds is this request's: the fields it gave, as stored."""
    default = store.default_corp
    try:
        same_payload = json.loads(held.payload) == json.loads(row["payload"])
    except (TypeError, ValueError):
        same_payload = False
    checks = [
        same_payload,
        (held.corp_id or default) == (row["corp_id"] or default),
        held.campaign == row["campaign"],
        held.priority == row["priority"],
        held.max_attempts == row["max_attempts"],
        read_time(held.expires_at) == row["expires_at"],
    ]
    if "send_at" in item.model_fields_set and item.send_at is not None:
        checks.append(read_time(held.send_at) == row["send_at"])
    return all(checks)


def _refuse_conflicts(
    store: JobStore,
    items: list[BroadcastIn],
    planned: list[tuple[int, list[dict[str, Any]]]],
    held: dict[str, Any],
    single: bool,
    *,
    written: bool = False,
) -> None:
    errors = []
    for index, rows in planned:
        for row in rows:
            key = row["dedupe_key"]
            if key is not None and key in held and not _same(store, items[index], row, held[key]):
                errors.append(
                    {
                        "pointer": _at(single, index, "dedupe_key"),
                        "detail": f"{key!r} is held by job {held[key].id}, with another body",
                    }
                )
                break
    if errors:
        detail = "a key is held by a job with another body; nothing of those items was written"
        if written and not single:
            detail += " (the other items were)"
        raise Problem(409, detail, errors=errors)


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
    return collect(boot.store, boot.corps, quota)
