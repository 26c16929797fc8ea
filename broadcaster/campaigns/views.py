"""What `status` (and the demo, and the web API's status) shows of the campaign controls:
jobs held and why, each corp's monthly-cap counts this month, the schedules."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, func, select

from broadcaster.campaigns import cap as capping
from broadcaster.campaigns.gate import COUNTED
from broadcaster.corps import CorpDirectory
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.tables import group_sends, jobs, schedule_events, schedules
from broadcaster.timeutil import zone

NEAR_CAP_SHOWN = 5


def campaign_view(
    engine: Engine,
    corps: CorpDirectory,
    now: datetime,
    *,
    default_corp: str | None,
    cap_policy: str | None = None,
) -> dict[str, Any]:
    corp = func.coalesce(jobs.c.corp_id, default_corp or "(default)").label("corp")
    held_query = (
        select(
            corp,
            jobs.c.held_reason,
            func.min(jobs.c.held_until).label("until"),
            func.count().label("n"),
        )
        .where(jobs.c.status == JobStatus.SCHEDULED, jobs.c.held_until > now)
        .group_by(corp, jobs.c.held_reason)
        .order_by(corp, jobs.c.held_reason)
    )
    with engine.begin() as connection:
        held = [
            {"corp_id": row.corp, "reason": row.held_reason, "jobs": row.n}
            for row in connection.execute(held_query)
        ]
        cap = {
            corp_id: _cap_counts(connection, corps, corp_id, now)
            for corp_id in sorted({*corps.known(), *([default_corp] if default_corp else [])})
        }
        schedule_rows = connection.execute(
            select(schedules.c.paused, func.count().label("n")).group_by(schedules.c.paused)
        ).all()
        missed = connection.execute(
            select(schedule_events.c.outcome, func.count().label("n"))
            .where(
                schedule_events.c.recorded_at >= now - timedelta(days=1),
                schedule_events.c.outcome.in_(["late", "skipped"]),
            )
            .group_by(schedule_events.c.outcome)
        ).all()
    return {
        "held": held,
        "monthly_cap": {"policy": cap_policy, "corps": cap},
        "schedules": {
            "active": sum(row.n for row in schedule_rows if not row.paused),
            "paused": sum(row.n for row in schedule_rows if row.paused),
            "late_last_day": sum(row.n for row in missed if row.outcome == "late"),
            "skipped_last_day": sum(row.n for row in missed if row.outcome == "skipped"),
        },
    }


def _cap_counts(
    connection: Any, corps: CorpDirectory, corp_id: str, now: datetime
) -> dict[str, Any]:
    rules = corps.campaign(corp_id)
    month = capping.month_of(now, zone(rules.tz))
    limit = capping.cap_for(month, rules.monthly_cap)
    per_group = (
        select(group_sends.c.group_id, func.count().label("n"))
        .join(jobs, jobs.c.id == group_sends.c.job_id)
        .where(
            group_sends.c.corp_id == corp_id,
            group_sends.c.month == month,
            jobs.c.status.in_(COUNTED),
        )
        .group_by(group_sends.c.group_id)
        .subquery()
    )
    totals = connection.execute(
        select(
            func.count().label("groups"),
            func.coalesce(func.sum(case((per_group.c.n >= limit, 1), else_=0)), 0).label("full"),
            func.coalesce(func.max(per_group.c.n), 0).label("highest"),
        )
    ).one()
    nearest = connection.execute(
        select(per_group.c.group_id, per_group.c.n)
        .order_by(per_group.c.n.desc(), per_group.c.group_id)
        .limit(NEAR_CAP_SHOWN)
    ).all()
    return {
        "month": month,
        "tz": rules.tz,
        "cap": limit,
        "groups_counted": totals.groups,
        "groups_at_cap": int(totals.full),
        "highest": int(totals.highest),
        "top_groups": [{"group_id": row.group_id, "messages": row.n} for row in nearest],
    }
