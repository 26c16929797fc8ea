"""The body of the `send_broadcast(job_id)` actor.

Safe to run twice for one message (Dramatiq delivers at least once): only the delivery
whose compare-and-set moves the job `queued` -> `sending` calls the vendor; a stale or
duplicate message loses it and touches nothing else. The `sending` row is committed before
the call, so a worker killed mid-call leaves evidence the sweep turns into `unknown`
rather than a silent resend.

The compare-and-set comes first, then the quota: the in-flight slot is taken right before
the call and freed right after it, so it covers the vendor's work, not our database's.
A job whose quota is not near goes back `sending` -> `scheduled` in one statement. A
worker killed between the compare-and-set and the call leaves a `sending` job that never
reached the vendor: the sweep makes it `unknown`, the reconciler finds no mission and
sends it again, which is the right outcome (a little later). The wait in between is
bounded (`Sender.max_quota_wait_s`) well inside the `sending` lease and the reconciler's
window, so a job can never be swept, or settled as absent, before its call began.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime

import redis
import structlog

from broadcaster.errors import (
    JobStoreError,
    OutcomeUnknown,
    QuotaWait,
    VendorBlocked,
    VendorBusy,
    VendorError,
    VendorThrottled,
)
from broadcaster.jobs.policy import Decision, backoff_s, decide
from broadcaster.jobs.states import JobStatus, Outcome
from broadcaster.jobs.store import SendingJob
from broadcaster.logs import redact_text
from broadcaster.ports import Quota, SendStore, Vendor
from broadcaster.quota.limiter import Slot
from broadcaster.settings import Settings
from broadcaster.timeutil import utcnow
from broadcaster.vendor import CREATE_API, call_budget_s
from broadcaster.vendor.deadline import deadline_scope
from worker.lanes import CorpLanes

log = structlog.get_logger("broadcaster.worker")

_EVENTS = {
    Outcome.SENT: "job_sent",
    Outcome.REJECTED: "job_failed",
    Outcome.AMBIGUOUS: "job_unknown",
}
"""The log event of a finished call by its outcome; any other outcome is `job_retry`
(or `job_failed` when the attempts ran out)."""

CALL_START_MARGIN_S = 2.0
"""Kept between the latest moment a call may start (after the compare-and-set) and the
moment the sweep or the reconciler could judge the job: a worker's own pauses (GC, a
busy machine) come out of this, never out of the call's budget."""

HAND_BACK_AFTER_ERROR_S = 1.0
"""A job whose quota could not be asked (Redis down) is retried this much later."""

LANE_FULL_RETRY_S = 1.0
"""A job whose corp already holds its share of this process's threads (`worker/lanes.py`)
is handed back for this long (plus up to half of it, at random): its corp's calls are all
going or waiting, and the thread serves another corp's message meanwhile."""


class Sender:
    def __init__(
        self,
        store: SendStore,
        quota: Quota,
        vendor: Vendor,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
        lanes: CorpLanes | None = None,
    ) -> None:
        self.store = store
        self.quota = quota
        self.vendor = vendor
        self.settings = settings
        self.clock = clock
        self.rng = rng
        self.monotonic = monotonic
        self.lanes = lanes
        self.call_budget_s = call_budget_s(settings.weiban_timeout_s)
        # The call must start, and end, while the job's `sending` lease holds and inside
        # the reconciler's window after `last_call_at` (both start at the compare-and-set).
        self.start_by_s = (
            min(settings.sending_lease_s, settings.reconcile_after_s)
            - self.call_budget_s
            - CALL_START_MARGIN_S
        )
        self.max_quota_wait_s = max(
            0.0, min(settings.worker_max_quota_wait_s, self.start_by_s - CALL_START_MARGIN_S)
        )

    def send(self, job_id: int) -> Outcome:
        """Handle one broker message; returns what happened (for logs and tests)."""
        taken_at = self.monotonic()
        job = self.store.start_sending(job_id, self.clock(), self.settings.sending_lease_s)
        if job is None:  # a duplicate, stale (cancelled, done) or expired message
            log.debug("message_ignored", job_id=job_id)
            return Outcome.IGNORED
        with self._lane(job.corp_id) as entered:
            if not entered:  # the corp's share of threads is taken: serve another corp
                self._hand_back(job.id, LANE_FULL_RETRY_S * (1 + self.rng() / 2))
                return Outcome.QUOTA_WAIT
            try:
                slot = self.quota.acquire(job.corp_id, CREATE_API, max_wait_s=self.max_quota_wait_s)
            except QuotaWait as wait:
                return self._wait_for_quota(job.id, wait)
            except BaseException:
                self._hand_back(job.id, HAND_BACK_AFTER_ERROR_S)
                raise
            if self.monotonic() - taken_at > self.start_by_s:  # this process stalled
                self._release(slot)
                self._hand_back(job.id, 0.0)
                log.warning("call_start_too_late", job_id=job.id)
                return Outcome.QUOTA_WAIT
            # The slot's lease is the call's budget plus a margin: the call ends inside it.
            try:
                with deadline_scope(self.call_budget_s):
                    started_at, started = self.clock(), time.monotonic()
                    error = self._call(job)
            finally:
                self._release(slot)
        decision = self._decide(job, error)
        self._finish(job, decision, started_at, int((time.monotonic() - started) * 1000))
        return decision.outcome

    def _lane(self, corp_id: str) -> AbstractContextManager[bool]:
        return nullcontext(True) if self.lanes is None else self.lanes.enter(corp_id)

    def _hand_back(self, job_id: int, delay_s: float) -> None:
        """Best effort: a job that did not reach the vendor goes back to `scheduled`
        (failing that, the sweep and the reconciler settle it)."""
        try:
            self.store.hand_back(job_id, self.clock(), delay_s)
        except JobStoreError as exc:
            log.warning("hand_back_failed", job_id=job_id, error=str(exc))

    def _release(self, slot: Slot) -> None:
        """Redis down now must not cost the outcome of a call already made: the slot's
        lease expires by itself."""
        try:
            self.quota.release(slot)
        except redis.RedisError as exc:
            log.warning("quota_release_failed", error=str(exc))

    def _call(self, job: SendingJob) -> VendorError | None:
        try:
            self.vendor.create_group_message(job.corp_id, job.payload)
        except VendorError as error:
            return error
        except Exception as exc:  # a bug or an answer nobody foresaw, after the call began
            log.exception("vendor_call_crashed", job_id=job.id, corp_id=job.corp_id)
            return OutcomeUnknown(
                f"the vendor call ended unexpectedly ({type(exc).__name__}: "
                f"{redact_text(str(exc))[:200]}); the message may exist"
            )
        return None

    def _decide(self, job: SendingJob, error: VendorError | None) -> Decision:
        block_s = self.settings.weiban_block_s
        try:
            if isinstance(error, VendorBlocked):
                block_s = self.quota.on_blocked(job.corp_id, CREATE_API)
                log.warning("vendor_blocked", job_id=job.id, corp_id=job.corp_id, pause_s=block_s)
            elif isinstance(error, VendorThrottled):
                self.quota.pause(job.corp_id, CREATE_API, error.retry_after_s)
                log.warning(
                    "vendor_throttled",
                    job_id=job.id,
                    corp_id=job.corp_id,
                    pause_s=error.retry_after_s,
                )
            elif isinstance(error, VendorBusy):
                cap = self.quota.on_busy(job.corp_id, CREATE_API)
                log.warning("vendor_busy", job_id=job.id, corp_id=job.corp_id, in_flight_cap=cap)
        except redis.RedisError as exc:  # the outcome is known: record it regardless
            log.warning("quota_update_failed", job_id=job.id, error=str(exc))
        return decide(
            error,
            attempts_before=job.attempts,
            max_attempts=job.max_attempts,
            on_ambiguous=self.settings.weiban_on_ambiguous,
            backoff=lambda n: backoff_s(
                n, base_s=self.settings.retry_base_s, max_s=self.settings.retry_max_s, rng=self.rng
            ),
            block_s=block_s + self.rng(),
        )

    def _finish(
        self, job: SendingJob, decision: Decision, started_at: datetime, duration_ms: int
    ) -> None:
        """Commit the outcome; a database blip is retried for a while, since the only
        alternative is letting the lease run out and calling a sent job `unknown`."""
        deadline = time.monotonic() + self.settings.sending_lease_s / 2
        while True:
            try:
                self.store.finish(job, decision, self.clock(), started_at, duration_ms)
                break
            except JobStoreError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("finish_retry", job_id=job.id, error=str(exc))
                time.sleep(0.5)
        event = _EVENTS.get(decision.outcome, "job_retry")
        if decision.status == JobStatus.FAILED:
            event = "job_failed"
        log.info(
            event,
            job_id=job.id,
            corp_id=job.corp_id,
            status=decision.status,
            errcode=decision.errcode,
            error=decision.error,
            ms=duration_ms,
        )

    def _wait_for_quota(self, job_id: int, wait: QuotaWait) -> Outcome:
        delay = wait.retry_after_s + self.rng() * 0.1
        self.store.hand_back(job_id, self.clock(), delay)
        log.debug("quota_wait", job_id=job_id, retry_in_s=round(delay, 3), blocked=wait.blocked)
        return Outcome.BLOCKED if wait.blocked else Outcome.QUOTA_WAIT
