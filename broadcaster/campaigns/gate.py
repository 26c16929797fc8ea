"""The campaign controls at claim time, inside the claim's own transaction
(`jobs/store/claim.py` calls these two functions and nothing else):

- `hold_quiet`, before the claim: due `scheduled` rows of corps inside their quiet hours
  get `not_before` = the window's end (one UPDATE per window in force), so the claim does
  not take them and the scheduler sleeps until then. No attempt is used; `held_until` and
  `held_reason` say why (`jobs show`, `status`). `ignore_quiet_hours` rows are left alone.
- `after_claim`, on the rows just claimed and screened: the stale-send guard (→ `expired`
  with the reason) and the per-group monthly cap (trim the payload's groups, hold until
  the month turns, or fail), counting in `broadcast_group_sends`.

Why a row per (job, group) and not a counter per (group, month): the count is "rows of
this group and month whose job is queued, sending, sent or unknown", so every other move
of a job (a business error, cancel, expiry, a retry going back to `scheduled`, an
operator's resolve) changes the count by itself, with no code of ours on those paths to
keep a counter in step, and no counter to drift. It stays cheap however big the tables
grow: the index on (corp, month, group) finds at most cap-many rows per group. Two
schedulers on PostgreSQL serialise the counting per corp with a transaction-scoped
advisory lock; SQLite has one writer anyway.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import (
    BigInteger,
    Connection,
    Text,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from broadcaster.campaigns import cap as capping
from broadcaster.campaigns.controls import CampaignControls
from broadcaster.campaigns.stale import stale_reason
from broadcaster.db import USER_LOCKS
from broadcaster.errors import JobStoreError
from broadcaster.jobs.screening import read_time
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store.base import (
    ClaimedJob,
    ClaimResult,
    move_jobs,
    storable_text,
    update_count,
)
from broadcaster.jobs.tables import due_at, group_sends, jobs

log = structlog.get_logger("broadcaster.campaigns")

COUNTED = [JobStatus.QUEUED, JobStatus.SENDING, JobStatus.SENT, JobStatus.UNKNOWN]
"""A job in these statuses has, or may have, created its message: its groups count."""
CHUNK = 500


def hold_quiet(
    connection: Connection, controls: CampaignControls, now: datetime, default_corp: str | None
) -> int:
    """Push due rows of corps inside their quiet hours to the window's end."""
    held = 0
    corp = func.coalesce(jobs.c.corp_id, default_corp or "")
    for hold in controls.quiet_holds(now):
        where = [
            jobs.c.status == JobStatus.SCHEDULED,
            due_at <= now,
            jobs.c.ignore_quiet_hours.is_not(True),
        ]
        if hold.corps is not None:
            where.append(corp.in_(hold.corps))
        elif hold.exclude:
            where.append(corp.not_in(hold.exclude))
        held += update_count(
            connection,
            update(jobs)
            .where(*where)
            .values(
                not_before=hold.until,
                held_until=hold.until,
                held_reason=hold.reason,
                updated_at=now,
            ),
        )
    if held:
        log.info("jobs_held", count=held, reason="quiet hours")
    return held


def after_claim(
    connection: Connection,
    controls: CampaignControls,
    dialect: str,
    rows: Sequence[Any],
    result: ClaimResult,
    now: datetime,
) -> None:
    """Apply the stale guard and the monthly cap to `result.claimed` (rows: the claim's
    RETURNING, by which each job's send_at, hold and payload are read)."""
    if not result.claimed:
        return
    by_id = {row.id: row for row in rows}
    keep: list[ClaimedJob] = []
    for job in result.claimed:
        row = by_id[job.id]
        send_at = read_time(_cell(row, "send_at", dialect))
        held_until = read_time(row._mapping["held_until__c"])
        rules = controls.rules(job.corp_id)
        reason = None
        if send_at is not None:
            reason = stale_reason(
                send_at,
                held_until,
                now,
                max_lateness_s=controls.max_lateness_s,
                quiet=None if _ignores_quiet(row) else rules.quiet,
                tz=controls.zone(job.corp_id),
            )
        if reason is None:
            keep.append(job)
            continue
        connection.execute(
            move_jobs(now, jobs.c.id == job.id, status=JobStatus.EXPIRED, last_error=reason)
        )
        result.expired.append(job.id)
    result.claimed = keep
    if controls.cap_policy != "off" and keep:
        _apply_cap(connection, controls, dialect, by_id, result, now)


def _ignores_quiet(row: Any) -> bool:
    return row._mapping["ignore_quiet_hours__c"] == 1


def _cell(row: Any, name: str, dialect: str) -> Any:
    return row._mapping[f"{name}__raw"] if dialect == "sqlite" else row._mapping[name]


def _groups(payload: dict[str, Any]) -> list[str]:
    groups = payload.get("group_ext_id_list")
    return [group for group in groups if isinstance(group, str)] if isinstance(groups, list) else []


def _apply_cap(
    connection: Connection,
    controls: CampaignControls,
    dialect: str,
    by_id: dict[int, Any],
    result: ClaimResult,
    now: datetime,
) -> None:
    by_corp: dict[str, list[ClaimedJob]] = defaultdict(list)
    for job in result.claimed:
        by_corp[job.corp_id].append(job)
    removed: set[int] = set()
    for corp_id in sorted(by_corp):  # a fixed order: two schedulers never deadlock
        _lock_corp(connection, dialect, corp_id)
        tz = controls.zone(corp_id)
        month = capping.month_of(now, tz)
        cap = capping.cap_for(month, controls.rules(corp_id).monthly_cap)
        batch = sorted(by_corp[corp_id], key=lambda job: (-job.priority, job.due_at, job.id))
        payloads = {}
        for job in batch:
            raw = _cell(by_id[job.id], "payload", dialect)
            payloads[job.id] = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        ids = [job.id for job in batch]
        _forget(connection, dialect, ids)  # decided afresh: a retry counts once
        wanted = sorted({group for body in payloads.values() for group in _groups(body)})
        counts = _counts(connection, corp_id, month, wanted)
        sends: list[tuple[int, str]] = []
        for job in batch:
            body = payloads[job.id]
            decision = capping.decide(_groups(body), counts, cap, controls.cap_policy)
            if decision.action in ("send", "trim"):
                for group in decision.kept:
                    counts[group] = counts.get(group, 0) + 1
                    sends.append((job.id, group))
            if decision.action == "send":
                continue
            why = capping.describe(decision.left_out, cap, month)
            if decision.action == "trim":
                _trim(connection, job.id, by_id[job.id], body, decision, why, month, cap, now)
                log.info("job_trimmed", job_id=job.id, left_out=len(decision.left_out), reason=why)
            elif decision.action == "hold":
                until = capping.next_month_start(now, tz)
                reason = f"{why}; held until the month turns"
                connection.execute(
                    move_jobs(
                        now,
                        jobs.c.id == job.id,
                        status=JobStatus.SCHEDULED,
                        not_before=until,
                        held_until=until,
                        held_reason=storable_text(reason),
                    )
                )
                removed.add(job.id)
                log.info("job_held", job_id=job.id, until=until.isoformat(), reason=reason)
            else:
                reason = storable_text(
                    why
                    if decision.kept or controls.cap_policy == "fail"
                    else f"{why}; no group left to send to"
                )
                connection.execute(
                    move_jobs(now, jobs.c.id == job.id, status=JobStatus.FAILED, last_error=reason)
                )
                result.failed.append((job.id, reason))
                removed.add(job.id)
        _remember(connection, dialect, corp_id, month, sends)
    result.claimed = [job for job in result.claimed if job.id not in removed]


def _lock_corp(connection: Connection, dialect: str, corp_id: str) -> None:
    """Serialise the counting for one corp between schedulers, until the transaction ends.
    PostgreSQL: a transaction-scoped advisory lock. MySQL: a named lock (`GET_LOCK`, at most
    64 characters, so the corp is hashed), held by the session: `broadcaster.db` releases it
    when the connection goes back to the pool, after the commit. SQLite: one writer."""
    if dialect == "postgresql":
        connection.execute(
            select(func.pg_advisory_xact_lock(func.hashtext(f"broadcaster.cap:{corp_id}")))
        )
    elif dialect == "mysql":
        digest = hashlib.sha256(corp_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        connection.info[USER_LOCKS] = True
        taken = connection.execute(select(func.get_lock(f"broadcaster.cap:{digest}", 30))).scalar()
        if taken != 1:
            raise JobStoreError("the monthly cap's lock for a corp was not free within 30 s")


def _counts(connection: Connection, corp_id: str, month: str, groups: list[str]) -> dict[str, int]:
    """What each group received this month from our jobs (those that count)."""
    counts: dict[str, int] = {}
    postgres = connection.dialect.name == "postgresql"
    step = max(1, len(groups)) if postgres else CHUNK
    for start in range(0, len(groups), step):
        query = (
            select(group_sends.c.group_id, func.count().label("n"))
            .join(jobs, jobs.c.id == group_sends.c.job_id)
            .where(
                group_sends.c.corp_id == corp_id,
                group_sends.c.month == month,
                _among(group_sends.c.group_id, groups[start : start + step], Text, postgres),
                jobs.c.status.in_(COUNTED),
            )
            .group_by(group_sends.c.group_id)
        )
        counts.update({row.group_id: row.n for row in connection.execute(query)})
    return counts


def _among(column: Any, values: list[Any], kind: Any, postgres: bool) -> Any:
    """`column IN (values)`; on PostgreSQL `= ANY(array)`: one parameter, so the statement
    text is the same whatever the batch (the driver's query cache hits, and compiling 500
    parameters cost more than the query itself)."""
    if postgres:
        return column == any_(bindparam(None, values, type_=ARRAY(kind)))
    return column.in_(values)


def _forget(connection: Connection, dialect: str, ids: list[int]) -> None:
    postgres = dialect == "postgresql"
    step = len(ids) if postgres else CHUNK
    for start in range(0, len(ids), step or 1):
        chunk = ids[start : start + step]
        connection.execute(
            delete(group_sends).where(_among(group_sends.c.job_id, chunk, BigInteger, postgres))
        )


def _remember(
    connection: Connection, dialect: str, corp_id: str, month: str, sends: list[tuple[int, str]]
) -> None:
    """Insert a row per (job, group) sent to. PostgreSQL: one INSERT … SELECT unnest of two
    arrays (an executemany cost 40 ms a batch of 500); SQLite: an executemany (in-process)."""
    if not sends:
        return
    if dialect == "postgresql":
        job_ids = bindparam(None, [job_id for job_id, _ in sends], type_=ARRAY(BigInteger))
        group_ids = bindparam(None, [group for _, group in sends], type_=ARRAY(Text))
        rows = select(
            func.unnest(job_ids),
            func.unnest(group_ids),
            literal(corp_id, Text),
            literal(month, Text),
        )
        columns = ["job_id", "group_id", "corp_id", "month"]
        connection.execute(insert(group_sends).from_select(columns, rows))
        return
    connection.execute(
        insert(group_sends),
        [{"job_id": j, "group_id": g, "corp_id": corp_id, "month": month} for j, g in sends],
    )


def _trim(
    connection: Connection,
    job_id: int,
    row: Any,
    body: dict[str, Any],
    decision: capping.CapDecision,
    why: str,
    month: str,
    cap: int,
    now: datetime,
) -> None:
    """Rewrite the payload's groups to those kept and record the others and why."""
    body["group_ext_id_list"] = decision.kept
    earlier = _earlier_left_out(row._mapping["cap_left_out__c"])
    record = {
        "month": month,
        "cap": cap,
        "groups": earlier + [group for group in decision.left_out if group not in earlier],
        "reason": why,
    }
    connection.execute(
        update(jobs)
        .where(jobs.c.id == job_id)
        .values(
            payload=_dumps(body),
            cap_left_out=_dumps(record),
            updated_at=now,
        )
    )


def _dumps(value: dict[str, Any]) -> str:
    """JSON as readable text, or escaped where a lone surrogate (from a `\\ud800` escape in
    the producer's text) could not be stored as UTF-8."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


def _earlier_left_out(raw: Any) -> list[str]:
    if raw is None:
        return []
    try:
        groups = json.loads(raw.decode() if isinstance(raw, bytes) else raw).get("groups", [])
    except (ValueError, AttributeError):
        return []
    return [group for group in groups if isinstance(group, str)]
