"""Recurring campaigns through the API: what `broadcaster schedules add|list|pause|resume|
remove` does, on the same store (`campaigns.store.ScheduleStore`) and with the same checks
(the zone, the cron, the start/end, the corp and the payload rendered for the first
occurrence are checked by `ScheduleStore.add` before anything is stored). Here each of its
refusals is only given the pointer of the field it is about."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from broadcaster.bootstrap import Bootstrap
from broadcaster.campaigns.cron import next_after, parse_cron
from broadcaster.campaigns.store import NewSchedule, ScheduleStore
from broadcaster.errors import InvalidJob, InvalidPayload, JobNotFound
from broadcaster.timeutil import to_naive_utc, utcnow, zone
from broadcaster.web.models import ScheduleIn, ScheduleView
from broadcaster.web.problems import Problem


def store_of(boot: Bootstrap) -> ScheduleStore:
    return ScheduleStore(boot.engine, default_corp=boot.settings.weiban_corp_id)


def _invalid(field: str, exc: Exception) -> Problem:
    detail = str(exc)
    return Problem(422, detail, errors=[{"pointer": f"/{field}", "detail": detail}])


def add(boot: Bootstrap, body: ScheduleIn) -> ScheduleView:
    tz = body.tz or boot.settings.default_tz
    try:
        zone(tz)
    except InvalidJob as exc:
        raise _invalid("tz", exc) from None
    try:
        parse_cron(body.cron, tz)
    except InvalidJob as exc:
        raise _invalid("cron", exc) from None
    times: dict[str, datetime | None] = {}
    for field in ("start_at", "end_at"):
        value = getattr(body, field)
        try:
            times[field] = None if value is None else to_naive_utc(value)
        except InvalidJob as exc:
            raise _invalid(field, exc) from None
    name = body.name or body.campaign
    new = NewSchedule(
        name=name,
        cron=body.cron,
        tz=tz,
        payload=body.payload,
        campaign=body.campaign,
        corp_id=body.corp_id,
        start_at=times["start_at"],
        end_at=times["end_at"],
    )
    store = store_of(boot)
    try:
        schedule_id = store.add(new, utcnow())
    except InvalidPayload as exc:
        raise _invalid("payload", exc) from None
    except InvalidJob as exc:
        message = str(exc)
        field = "end_at" if "--end" in message else "corp_id" if "--corp" in message else ""
        if not field and any(row.name == name for row in store.all()):
            where = "/name" if body.name else "/campaign"
            raise Problem(409, message, errors=[{"pointer": where, "detail": message}]) from None
        detail = message.replace("--end", "end_at").replace("--start", "start_at")
        detail = detail.replace("--corp", "corp_id")
        raise Problem(
            422, detail, errors=[{"pointer": f"/{field}" if field else "", "detail": detail}]
        ) from None
    return one(boot, str(schedule_id))


def listing(boot: Bootstrap) -> list[ScheduleView]:
    now = utcnow()
    return [_view(row, now, boot.settings.weiban_corp_id) for row in store_of(boot).all()]


def one(boot: Bootstrap, ref: str) -> ScheduleView:
    """A schedule by id or name, as `ScheduleStore` finds it (the id first if both match)."""
    views = listing(boot)
    found = [view for view in views if ref.isdigit() and view.id == int(ref)]
    found = found or [view for view in views if view.name == ref]
    if not found:
        raise JobNotFound(f"no schedule with id or name {ref!r}")
    return found[0]


def _view(row: Any, now: datetime, default_corp: str | None) -> ScheduleView:
    following = None
    if not row.paused:
        try:  # as `schedules list` computes it
            following = next_after(
                parse_cron(row.cron, row.tz), max(now, row.last_occurrence or now)
            )
        except InvalidJob:
            following = None
        if row.end_at is not None and following is not None and following > row.end_at:
            following = None
    try:
        payload = json.loads(row.payload)
    except (TypeError, ValueError):
        payload = row.payload
    return ScheduleView(
        id=row.id,
        name=row.name,
        corp_id=row.corp_id if row.corp_id is not None else default_corp,
        cron=row.cron,
        tz=row.tz,
        campaign=row.campaign,
        payload=payload,
        paused=bool(row.paused),
        start_at=_utc(row.start_at),
        end_at=_utc(row.end_at),
        next_occurrence=_utc(following),
        last_occurrence=_utc(row.last_occurrence),
        last_outcome=row.last_outcome,
        last_detail=row.last_detail,
        last_job_id=row.last_job_id,
    )


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)
