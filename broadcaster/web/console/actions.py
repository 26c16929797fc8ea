"""The console's actions (POST): each checked by `guard.acting` (session, CSRF, write
token), each the very store operation the API and the CLI use (`OperatorStore.cancel`,
`retry`, `resolve`, `cancel_campaign`; `scheduling.schedule`; `importer.import_file`),
each answered 303 back to its page with a flash, so a reload does not repeat it."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from broadcaster.errors import BroadcasterError, JobNotFound, StateConflict
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.produce.importer import import_file
from broadcaster.timeutil import utcnow
from broadcaster.web.console import forms, views
from broadcaster.web.console.context import boot_of, redirect_with_flash, render
from broadcaster.web.console.guard import acting, viewer
from broadcaster.web.problems import Problem
from broadcaster.web.scheduling import schedule

log = structlog.get_logger("broadcaster.web")
router = APIRouter(include_in_schema=False)
MAX_ID = 2**63 - 1
SHOW_REJECTED = 50


def _campaign_url(name: str) -> str:
    return "/campaigns/" + quote(name, safe="")


def _job_id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and 0 < int(raw) <= MAX_ID else None


# ------------------------------------------------------------------ campaign
@router.post("/campaigns/{name:path}/cancel")
async def cancel_campaign(request: Request, name: str) -> Response:
    session, _form = await acting(request)
    store = boot_of(request).store
    cancelled, sending = await run_in_threadpool(store.cancel_campaign, name, utcnow())
    log.info("console_campaign_cancelled", token=session.principal.name, cancelled=cancelled)
    return redirect_with_flash(
        request, _campaign_url(name), "flash.campaign_cancelled", n=cancelled, sending=sending
    )


def _retry_all(store: JobStore, name: str) -> int:
    """Each failed job of the campaign through `OperatorStore.retry`, as `broadcaster
    retry` does one; a job that moved meanwhile is left as it is."""
    done = 0
    for job_id in views.ids_of(store, name, JobStatus.FAILED):
        try:
            store.retry(job_id, utcnow())
            done += 1
        except (StateConflict, JobNotFound):
            continue
    return done


@router.post("/campaigns/{name:path}/retry-failed")
async def retry_failed(request: Request, name: str) -> Response:
    session, _form = await acting(request)
    done = await run_in_threadpool(_retry_all, boot_of(request).store, name)
    log.info("console_campaign_retried", token=session.principal.name, retried=done)
    return redirect_with_flash(request, _campaign_url(name), "flash.retried", n=done)


# ------------------------------------------------------------------ one job
async def _job_action(request: Request, job_id: str, key: str, move: Any) -> Response:
    session, form = await acting(request)
    number = _job_id(job_id)
    url = f"/jobs/{job_id}" if number is not None else "/"
    if number is None:
        return redirect_with_flash(request, url, "flash.conflict", "error", reason="no such job")
    try:
        await run_in_threadpool(move, boot_of(request).store, number, form)
    except (StateConflict, JobNotFound) as exc:
        return redirect_with_flash(request, url, "flash.conflict", "error", reason=str(exc))
    log.info("console_job_action", token=session.principal.name, job_id=number, action=key)
    return redirect_with_flash(request, url, key)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str) -> Response:
    return await _job_action(
        request, job_id, "flash.job_cancelled", lambda s, n, f: s.cancel(n, utcnow())
    )


@router.post("/jobs/{job_id}/retry")
async def retry_job(request: Request, job_id: str) -> Response:
    return await _job_action(
        request, job_id, "flash.job_retried", lambda s, n, f: s.retry(n, utcnow())
    )


@router.post("/jobs/{job_id}/resolve")
async def resolve_job(request: Request, job_id: str) -> Response:
    _session, form = await acting(request)
    decision = form.get("decision")
    if decision not in ("sent", "resend"):
        return redirect_with_flash(
            request, f"/jobs/{job_id}", "flash.conflict", "error", reason="decision: sent or resend"
        )
    key = "flash.resolved_sent" if decision == "sent" else "flash.resolved_resend"
    return await _job_action(
        request, job_id, key, lambda s, n, f: s.resolve(n, utcnow(), sent=decision == "sent")
    )


# ------------------------------------------------------------------ unknown inbox
def _resolve_many(store: JobStore, ids: list[int], sent: bool) -> tuple[int, int]:
    done = skipped = 0
    for job_id in ids:
        try:
            store.resolve(job_id, utcnow(), sent=sent)
            done += 1
        except (StateConflict, JobNotFound):
            skipped += 1
    return done, skipped


@router.post("/unknown/resolve")
async def resolve_many(request: Request) -> Response:
    session, form = await acting(request)
    raw_ids = [raw for raw in form.getlist("job_id") if isinstance(raw, str)]
    ids = sorted({n for raw in raw_ids if (n := _job_id(raw)) is not None})
    decision = form.get("decision")
    if not ids or decision not in ("sent", "resend"):
        return redirect_with_flash(request, "/unknown", "flash.none_selected", "error")
    done, skipped = await run_in_threadpool(
        _resolve_many, boot_of(request).store, ids, decision == "sent"
    )
    log.info("console_bulk_resolved", token=session.principal.name, resolved=done)
    if skipped:
        return redirect_with_flash(request, "/unknown", "flash.bulk_skipped", "error", n=skipped)
    return redirect_with_flash(request, "/unknown", "flash.bulk_resolved", n=done)


# ------------------------------------------------------------------ schedule
def _schedule_values(request: Request, form: forms.ScheduleForm) -> dict[str, Any]:
    return {"form": form, "tz": boot_of(request).settings.default_tz, "result": None}


@router.get("/schedule")
async def schedule_page(request: Request) -> Response:
    session = await viewer(request)
    values = _schedule_values(request, forms.ScheduleForm())
    return render(request, "schedule.html", values, session=session)


@router.post("/schedule")
async def schedule_submit(request: Request) -> Response:
    session, data = await acting(request)
    form = forms.read_form(data)
    values = _schedule_values(request, form)
    body = forms.to_request(form, values["tz"])
    if body is None:
        return render(request, "schedule.html", values, session=session, status=422)
    try:
        outcome = await run_in_threadpool(schedule, boot_of(request).store, body, None)
    except Problem as exc:
        for error in exc.errors or [{"pointer": "/form", "detail": exc.detail}]:
            form.fail(error["pointer"].strip("/").split("/")[0], error["detail"])
        return render(request, "schedule.html", values, session=session, status=exc.status)
    item = outcome.items[0]
    log.info("console_jobs_scheduled", token=session.principal.name, jobs=len(item.jobs))
    values["result"] = {"created": item.created, "jobs": [ref.id for ref in item.jobs]}
    values["form"] = forms.ScheduleForm()
    status = 201 if item.created else 200
    return render(request, "schedule.html", values, session=session, status=status)


# ------------------------------------------------------------------ import
@router.get("/import")
async def import_page(request: Request) -> Response:
    session = await viewer(request)
    values = {"report": None, "problem": None, "tz": boot_of(request).settings.default_tz}
    return render(request, "import.html", values, session=session)


def _file_name(given: str | None) -> str:
    """The upload's own name, reduced to safe characters (it names the file in messages)."""
    base = Path((given or "").replace("\\", "/")).name
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[:100]
    return safe or "upload"


def _import(store: JobStore, upload: UploadFile, tz: str) -> Any:
    """The upload through `import_file`, as `broadcaster import FILE` reads a file: kept
    in a temporary file under its own name's suffix (.jsonl or .csv picks the format)."""
    with tempfile.TemporaryDirectory(prefix="broadcaster-import-") as folder:
        path = Path(folder) / _file_name(upload.filename)
        with path.open("wb") as handle:
            while chunk := upload.file.read(1 << 20):
                handle.write(chunk)
        return import_file(path, store, tz=tz)


@router.post("/import")
async def import_submit(request: Request) -> Response:
    session, form = await acting(request)
    tz = boot_of(request).settings.default_tz
    values: dict[str, Any] = {"report": None, "problem": None, "tz": tz}
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        values["problem"] = ("import.no_file", {})
        return render(request, "import.html", values, session=session, status=422)
    try:
        report = await run_in_threadpool(_import, boot_of(request).store, upload, tz)
    except BroadcasterError as exc:
        values["problem"] = ("import.refused", {"reason": str(exc)})
        return render(request, "import.html", values, session=session, status=422)
    log.info("console_import", token=session.principal.name, inserted=report.inserted)
    values["report"] = report
    values["shown"] = report.rejected[:SHOW_REJECTED]
    return render(request, "import.html", values, session=session)
