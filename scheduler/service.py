"""The scheduler's work, free of APScheduler: claim due rows, enqueue their ids, sweep
lost leases. `tick` and `sweep` take the time from an injected clock, so tests drive them
without sleeping; `scheduler/runner.py` decides when they run."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from broadcaster.broker.dispatch import EnqueueFailed
from broadcaster.corps import CorpDirectory
from broadcaster.jobs.store import ClaimedJob
from broadcaster.ports import Dispatch, QuotaView, SchedulerStore
from broadcaster.settings import Settings
from broadcaster.timeutil import utcnow
from broadcaster.vendor import CREATE_API

log = structlog.get_logger("broadcaster.scheduler")


class Admission:
    """Which corps may have more jobs handed to the workers now.

    A corp gets about `scheduler_admit_horizon_s` of its quota's worth of queued jobs:
    more would only wait in the broker (and in worker threads) for quota, and a corp the
    vendor blocked gets none until the block ends, so a blocked corp costs no churn and
    one corp's backlog never holds the queue against another's.
    """

    def __init__(
        self,
        settings: Settings,
        corps: CorpDirectory | None = None,
        quota: QuotaView | None = None,
    ) -> None:
        self.horizon_s = settings.scheduler_admit_horizon_s
        self.corps = corps or CorpDirectory(settings)
        self.quota = quota

    def cap(self, corp_id: str) -> int:
        return max(10, math.ceil(self.corps.limits(corp_id).per_second * self.horizon_s))

    def closed_corps(self, queued: dict[str, int]) -> set[str]:
        closed = {corp for corp, count in queued.items() if count >= self.cap(corp)}
        if self.quota is not None:
            closed |= self.quota.blocked_corps(CREATE_API)
        return closed


@dataclass
class TickReport:
    enqueued: int = 0
    failed: int = 0
    expired: int = 0
    queue_full: bool = False
    next_due: datetime | None = None


class SchedulerService:
    """Moves due rows from the table to the broker, at most `scheduler_max_queued` at a
    time: admitting more than the workers can start soon would only let leases expire."""

    def __init__(
        self,
        store: SchedulerStore,
        dispatcher: Dispatch,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
        admission: Admission | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self.clock = clock
        self.admission = admission or Admission(settings)

    def tick(self) -> TickReport:
        """Claim and enqueue batches until nothing is due or the queue cap is reached."""
        report = TickReport()
        batch = self.settings.scheduler_batch_size
        queued = self.store.queued_by_corp()
        room = self.settings.scheduler_max_queued - sum(queued.values())
        while room > 0:
            now = self.clock()
            wanted = min(batch, room)
            claim = self.store.claim_due(
                now,
                wanted,
                self.settings.queued_lease_s,
                skip_corps=self.admission.closed_corps(queued),
            )
            for job in claim.claimed:
                queued[job.corp_id] = queued.get(job.corp_id, 0) + 1
            for job_id, reason in claim.failed:
                log.warning("job_rejected", job_id=job_id, reason=reason)
            for job_id in claim.expired:
                log.info("job_expired", job_id=job_id)
            self._enqueue(claim.claimed, now)
            report.enqueued += len(claim.claimed)
            report.failed += len(claim.failed)
            report.expired += len(claim.expired)
            room -= len(claim.claimed)
            if len(claim.claimed) + len(claim.failed) + len(claim.expired) < wanted:
                break  # nothing more is due
        report.queue_full = room <= 0
        report.next_due = self.store.next_due_at()
        return report

    def _enqueue(self, claimed: list[ClaimedJob], now: datetime) -> None:
        if not claimed:
            return
        try:
            self.dispatcher.enqueue(job.id for job in claimed)
        except EnqueueFailed as exc:  # none went out: the whole batch goes back
            self.store.release([job.id for job in claimed], now)
            log.error("enqueue_failed", error=str(exc), released=len(claimed))
            raise
        for job in claimed:
            log.debug("job_claimed", job_id=job.id, corp_id=job.corp_id)
        log.info("jobs_enqueued", count=len(claimed))

    def sweep(self) -> None:
        """Recover lost leases and expire stale rows (DESIGN §4)."""
        now = self.clock()
        recovered = self.store.recover(now, self.settings.queued_lease_s)
        for job_id in recovered.unknown:
            log.warning("job_unknown", job_id=job_id, reason="sending lease expired")
        for job_id, reason in recovered.failed:
            log.warning("job_rejected", job_id=job_id, reason=reason)
        if recovered.expired:
            log.info("jobs_expired", count=recovered.expired)
        if recovered.requeued:
            log.warning(
                "jobs_requeued",
                count=len(recovered.requeued),
                reason="queued lease expired (lost broker message)",
            )
            self._enqueue(recovered.requeued, now)

    def next_wakeup(self, report: TickReport, now: datetime) -> datetime:
        """Sleep until the next row falls due, but never longer than the poll interval:
        changes nobody announces (SQLite inserts, a worker's reschedule) are found then."""
        poll = now + timedelta(seconds=self.settings.scheduler_poll_interval_s)
        if report.queue_full or report.next_due is None:
            return poll
        return max(now, min(report.next_due, poll))
