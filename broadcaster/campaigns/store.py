"""The schedules' table (`broadcast_schedules`), what became of each occurrence
(`broadcast_schedule_events`), and the jobs each occurrence makes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Column, Connection, Row, Table, delete, func, select, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from broadcaster.campaigns.cron import parse_cron
from broadcaster.campaigns.schedules import Occurrence, dedupe_key, plan, render
from broadcaster.errors import InvalidJob, JobNotFound, JobStoreError
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store.base import StoreBase, move_jobs
from broadcaster.jobs.tables import jobs, schedule_events, schedules
from broadcaster.timeutil import zone
from broadcaster.vendor.payload import parse_payload

log = structlog.get_logger("broadcaster.schedules")


@dataclass
class PassReport:
    created: int = 0
    late: int = 0
    skipped: int = 0
    duplicates: int = 0
    """Occurrences whose job another scheduler (or an earlier pass) had made already."""


@dataclass(frozen=True)
class NewSchedule:
    name: str
    cron: str
    tz: str
    payload: dict[str, Any]
    campaign: str | None
    corp_id: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None


class ScheduleStore(StoreBase):
    def add(self, new: NewSchedule, now: datetime) -> int:
        """Check everything a materialised job will need, then store the schedule."""
        trigger = parse_cron(new.cron, new.tz)
        zone(new.tz)
        if new.end_at is not None and new.start_at is not None and new.end_at <= new.start_at:
            raise InvalidJob("--end must be after --start")
        if new.corp_id is None and not self.default_corp:
            raise InvalidJob("no --corp and no default corp (WEIBAN_CORP_ID)")
        if new.corp_id is not None and not new.corp_id.strip():
            raise InvalidJob("--corp must not be empty; leave it out for the default corp")
        first = trigger.get_next_fire_time(None, _aware(max(now, new.start_at or now)))
        sample = render(new.payload, now if first is None else _naive(first), new.tz)
        parse_payload(sample)  # InvalidPayload names every problem
        try:
            with self._begin() as connection:
                return int(
                    connection.execute(
                        schedules.insert().values(
                            name=new.name,
                            corp_id=new.corp_id,
                            cron=new.cron,
                            tz=new.tz,
                            payload=json.dumps(new.payload, ensure_ascii=False),
                            campaign=new.campaign,
                            start_at=new.start_at,
                            end_at=new.end_at,
                            created_at=now,
                            updated_at=now,
                        )
                    ).inserted_primary_key[0]  # type: ignore[index]
                )
        except JobStoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise InvalidJob(f"a schedule named {new.name!r} exists already") from None
            raise

    def all(self) -> list[Row[Any]]:
        """Every schedule, with its latest event (outcome, occurrence, detail)."""
        latest = (
            select(
                schedule_events.c.schedule_id,
                func.max(schedule_events.c.occurrence).label("occurrence"),
            )
            .group_by(schedule_events.c.schedule_id)
            .subquery()
        )
        query = (
            select(
                schedules,
                schedule_events.c.outcome.label("last_outcome"),
                schedule_events.c.detail.label("last_detail"),
                schedule_events.c.job_id.label("last_job_id"),
            )
            .outerjoin(latest, latest.c.schedule_id == schedules.c.id)
            .outerjoin(
                schedule_events,
                (schedule_events.c.schedule_id == schedules.c.id)
                & (schedule_events.c.occurrence == latest.c.occurrence),
            )
            .order_by(schedules.c.id)
        )
        with self._begin() as connection:
            return list(connection.execute(query).all())

    def events(self, ref: str, limit: int = 20) -> list[Row[Any]]:
        with self._begin() as connection:
            schedule_id = self._find(connection, ref).id
            return list(
                connection.execute(
                    select(schedule_events)
                    .where(schedule_events.c.schedule_id == schedule_id)
                    .order_by(schedule_events.c.occurrence.desc())
                    .limit(limit)
                ).all()
            )

    def set_paused(self, ref: str, paused: bool, now: datetime) -> tuple[int, int]:
        """Pause or resume; pausing cancels the jobs it made ahead for occurrences still to
        come. Returns (schedule id, jobs cancelled). Resuming starts from now: occurrences
        that fell during the pause are not made (pausing was the operator's decision)."""
        with self._begin() as connection:
            row = self._find(connection, ref)
            values: dict[str, Any] = {"paused": paused, "updated_at": now}
            if not paused:
                values["last_occurrence"] = max(row.last_occurrence or now, now)
            connection.execute(update(schedules).where(schedules.c.id == row.id).values(**values))
            cancelled = self._cancel_ahead(connection, row.id, now) if paused else 0
        return row.id, cancelled

    def remove(self, ref: str, now: datetime) -> tuple[int, int]:
        """Delete a schedule and its events; cancel the jobs it made for occurrences still
        to come (jobs already due or sent stay, as any job)."""
        with self._begin() as connection:
            row = self._find(connection, ref)
            cancelled = self._cancel_ahead(connection, row.id, now)
            connection.execute(
                delete(schedule_events).where(schedule_events.c.schedule_id == row.id)
            )
            connection.execute(delete(schedules).where(schedules.c.id == row.id))
        return row.id, cancelled

    def _cancel_ahead(self, connection: Connection, schedule_id: int, now: datetime) -> int:
        return connection.execute(
            move_jobs(
                now,
                jobs.c.dedupe_key.like(f"schedule:{schedule_id}:%"),
                jobs.c.status == JobStatus.SCHEDULED,
                jobs.c.send_at > now,
                status=JobStatus.CANCELLED,
                last_error="its schedule was paused or removed",
            )
        ).rowcount

    def _find(self, connection: Connection, ref: str) -> Row[Any]:
        where = schedules.c.name == ref
        if ref.isdigit():
            where = where | (schedules.c.id == int(ref))
        row = connection.execute(select(schedules).where(where)).first()
        if row is None:
            raise JobNotFound(f"no schedule with id or name {ref!r}")
        return row

    # ------------------------------------------------------------ the scheduler's pass
    def materialise(self, now: datetime, *, lookahead_s: float, grace_s: float) -> PassReport:
        """Turn each active schedule's due occurrences into jobs: one short transaction
        per schedule, its row locked (PostgreSQL) so two schedulers take turns; the dedupe
        key makes a job per occurrence at most once whatever happens."""
        report = PassReport()
        with self._begin() as connection:
            ids = (
                connection.execute(
                    select(schedules.c.id)
                    .where(schedules.c.paused.is_(False))
                    .order_by(schedules.c.id)
                )
                .scalars()
                .all()
            )
        for schedule_id in ids:
            try:
                self._materialise_one(schedule_id, now, lookahead_s, grace_s, report)
            except (InvalidJob, ValueError, TypeError) as exc:  # a row written by hand with
                # a bad cron, zone or payload: that schedule waits, the others go on
                log.error("schedule_unusable", schedule_id=schedule_id, error=str(exc))
        return report

    def _materialise_one(
        self,
        schedule_id: int,
        now: datetime,
        lookahead_s: float,
        grace_s: float,
        report: PassReport,
    ) -> None:
        with self._begin() as connection:
            row = connection.execute(
                select(schedules)
                .where(schedules.c.id == schedule_id, schedules.c.paused.is_(False))
                .with_for_update()
            ).first()
            if row is None:
                return
            decided = plan(
                parse_cron(row.cron, row.tz),
                last=row.last_occurrence,
                created_at=row.created_at,
                start_at=row.start_at,
                end_at=row.end_at,
                now=now,
                lookahead_s=lookahead_s,
                grace_s=grace_s,
            )
            template = json.loads(row.payload)
            for occurrence in decided.occurrences:
                self._record(connection, row, template, occurrence, now, report)
            if decided.last is not None:
                connection.execute(
                    update(schedules)
                    .where(schedules.c.id == schedule_id)
                    .values(last_occurrence=decided.last, updated_at=now)
                )

    def _record(
        self,
        connection: Connection,
        row: Row[Any],
        template: dict[str, Any],
        occurrence: Occurrence,
        now: datetime,
        report: PassReport,
    ) -> None:
        job_id = None
        if occurrence.outcome != "skipped":
            body = render(template, occurrence.at, row.tz)
            job = {
                "corp_id": row.corp_id,
                "payload": json.dumps(body, ensure_ascii=False),
                "send_at": occurrence.at,
                "dedupe_key": dedupe_key(row.id, occurrence.at),
                "campaign": row.campaign,
            }
            job_id = _insert_new(connection, jobs, job, [jobs.c.dedupe_key])
            if job_id is None:
                report.duplicates += 1
                return
        event = {
            "schedule_id": row.id,
            "occurrence": occurrence.at,
            "outcome": occurrence.outcome,
            "job_id": job_id,
            "detail": occurrence.detail,
            "recorded_at": now,
        }
        key = [schedule_events.c.schedule_id, schedule_events.c.occurrence]
        inserted = _insert_new(connection, schedule_events, event, key) is not None
        if not inserted:
            return
        if occurrence.outcome == "created":
            report.created += 1
        elif occurrence.outcome == "late":
            report.late += 1
            log.warning(
                "schedule_late",
                schedule_id=row.id,
                occurrence=occurrence.at.isoformat(),
                job_id=job_id,
            )
        else:
            report.skipped += 1
            log.warning(
                "schedule_skipped",
                schedule_id=row.id,
                occurrence=occurrence.at.isoformat(),
                detail=occurrence.detail,
            )


def _insert_new(
    connection: Connection, table: Table, values: dict[str, Any], key: list[Column[Any]]
) -> int | None:
    """Insert a row unless one with the same unique `key` exists: its new id, or None.
    MySQL has no ON CONFLICT: ON DUPLICATE KEY UPDATE id = id changes nothing on a
    duplicate and reports no new id (INSERT IGNORE would also hide other errors)."""
    dialect = connection.dialect.name
    if dialect == "mysql":
        statement = mysql_insert(table).values(values).on_duplicate_key_update(id=table.c.id)
        return connection.execute(statement).lastrowid or None
    dialect_insert = sqlite_insert if dialect == "sqlite" else pg_insert
    return connection.execute(
        dialect_insert(table)
        .values(values)
        .on_conflict_do_nothing(index_elements=key)
        .returning(table.c.id)
    ).scalar()


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)
