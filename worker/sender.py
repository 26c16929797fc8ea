"""The body of the `send_broadcast(job_id)` actor.

Safe to run twice for one message (Dramatiq delivers at least once): the job is re-read,
and only the delivery whose compare-and-set moves it `queued` -> `sending` calls the
vendor. The `sending` row is committed before the call, so a worker killed mid-call leaves
evidence the sweep turns into `unknown` rather than a silent resend.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
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

log = structlog.get_logger("broadcaster.worker")

_EVENTS = {
    Outcome.SENT: "job_sent",
    Outcome.REJECTED: "job_failed",
    Outcome.AMBIGUOUS: "job_unknown",
}
"""The log event of a finished call by its outcome; any other outcome is `job_retry`
(or `job_failed` when the attempts ran out)."""


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
    ) -> None:
        self.store = store
        self.quota = quota
        self.vendor = vendor
        self.settings = settings
        self.clock = clock
        self.rng = rng

    def send(self, job_id: int) -> Outcome:
        """Handle one broker message; returns what happened (for logs and tests)."""
        seen = self.store.peek(job_id)
        if seen is None or seen.status != JobStatus.QUEUED:
            log.debug("message_ignored", job_id=job_id, status=seen and seen.status)
            return Outcome.IGNORED
        corp_id = seen.corp_id or self.store.default_corp or ""
        try:
            slot = self.quota.acquire(
                corp_id, CREATE_API, max_wait_s=self.settings.worker_max_quota_wait_s
            )
        except QuotaWait as wait:
            return self._wait_for_quota(job_id, wait)
        # The call's budget runs from the moment the slot is taken, whose lease is that
        # budget plus a margin: database work before the call eats into the call, never
        # past the lease (a call that outlived its slot would let a fifth one start).
        try:
            with deadline_scope(call_budget_s(self.settings.weiban_timeout_s)):
                job = self.store.start_sending(job_id, self.clock(), self.settings.sending_lease_s)
                if job is None:
                    log.debug("lost_claim", job_id=job_id)
                    return Outcome.IGNORED
                started_at, started = self.clock(), time.monotonic()
                error = self._call(job)
        finally:
            self._release(slot)
        decision = self._decide(job, error)
        self._finish(job, decision, started_at, int((time.monotonic() - started) * 1000))
        return decision.outcome

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
        self.store.requeue_later(job_id, self.clock(), delay)
        log.debug("quota_wait", job_id=job_id, retry_in_s=round(delay, 3), blocked=wait.blocked)
        return Outcome.BLOCKED if wait.blocked else Outcome.QUOTA_WAIT
