"""The figures `status` and the demo report: lateness, failures, counts, the
oldest due job."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, case, func, select

from broadcaster.jobs.screening import read_time
from broadcaster.jobs.states import JobStatus, Outcome
from broadcaster.jobs.store.base import StoreBase
from broadcaster.jobs.store.loading import loadable_time
from broadcaster.jobs.tables import attempts, due_at, jobs


class ReportStore(StoreBase):
    """The figures of `status` and the demo."""

    def lateness_s(self, since: datetime) -> list[float]:
        """Seconds from send_at to the start of the successful call, for jobs sent since."""
        query = (
            select(attempts.c.started_at, jobs.c.send_at)
            .join(jobs, jobs.c.id == attempts.c.job_id)
            .where(attempts.c.outcome == Outcome.SENT, attempts.c.started_at >= since)
        )
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [(row.started_at - row.send_at).total_seconds() for row in rows]

    def failures(self, limit: int = 20) -> list[Row[Any]]:
        """Failed jobs grouped by reason, most common first."""
        query = (
            select(jobs.c.last_error, func.count().label("n"))
            .where(jobs.c.status == JobStatus.FAILED)
            .group_by(jobs.c.last_error)
            .order_by(func.count().desc())
            .limit(limit)
        )
        with self._begin() as connection:
            return list(connection.execute(query).all())

    def status_counts(self) -> list[Row[Any]]:
        """(corp_id, campaign, status, count) for every group present."""
        query = (
            select(jobs.c.corp_id, jobs.c.campaign, jobs.c.status, func.count().label("n"))
            .group_by(jobs.c.corp_id, jobs.c.campaign, jobs.c.status)
            .order_by(jobs.c.corp_id, jobs.c.campaign, jobs.c.status)
        )
        with self._begin() as connection:
            return list(connection.execute(query).all())

    def delivery_counts(self) -> list[Row[Any]]:
        """Per (corp_id, campaign), over sent jobs: missions matched, staff who confirmed
        (of those asked), groups reached and not, missions that ended badly."""
        bad = jobs.c.delivery_status.in_(["failed", "create_failed", "canceled"])
        query = (
            select(
                jobs.c.corp_id,
                jobs.c.campaign,
                func.count().label("sent"),
                func.count(jobs.c.vendor_mission_id).label("missions"),
                func.coalesce(func.sum(jobs.c.delivery_staff_confirmed), 0).label("confirmed"),
                func.coalesce(func.sum(jobs.c.delivery_staff_total), 0).label("staff"),
                func.coalesce(func.sum(jobs.c.delivery_groups_reached), 0).label("reached"),
                func.coalesce(func.sum(jobs.c.delivery_groups_unreached), 0).label("unreached"),
                func.count(case((jobs.c.delivery_status == "completed", 1))).label("completed"),
                func.count(case((bad, 1))).label("failed"),
            )
            .where(jobs.c.status == JobStatus.SENT)
            .group_by(jobs.c.corp_id, jobs.c.campaign)
            .order_by(jobs.c.corp_id, jobs.c.campaign)
        )
        with self._begin() as connection:
            return list(connection.execute(query).all())

    def unknown_reasons(self, limit: int = 5) -> list[Row[Any]]:
        """Why `unknown` jobs are still unknown (the reconciler's notes), most common first."""
        query = (
            select(jobs.c.last_error, func.count().label("n"))
            .where(jobs.c.status == JobStatus.UNKNOWN)
            .group_by(jobs.c.last_error)
            .order_by(func.count().desc())
            .limit(limit)
        )
        with self._begin() as connection:
            return list(connection.execute(query).all())

    def oldest_due(self, now: datetime) -> datetime | None:
        """The due time of the oldest `scheduled` row already due: how far behind we are."""
        dialect = self.engine.dialect.name
        with self._begin() as connection:
            oldest = connection.execute(
                select(loadable_time(func.min(due_at), dialect)).where(
                    jobs.c.status == JobStatus.SCHEDULED, due_at <= now
                )
            ).scalar()
        return read_time(oldest)  # None for a time Python cannot hold, as in next_due_at
