"""Rows for the console to show, made through the store's own operations (the ones the
scheduler and the workers use), so every row is one the service could have made."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from broadcaster import schedule_many
from broadcaster.jobs.policy import Decision
from broadcaster.jobs.states import JobStatus, Outcome
from broadcaster.jobs.store import JobStore
from broadcaster.timeutil import utcnow
from tests.helpers import body

FUTURE = datetime(2030, 1, 1, 8, 0)
"""Far enough ahead that no scheduler would claim it during a test."""
_serial = itertools.count(1)


def schedule(
    store: JobStore,
    campaign: str,
    count: int,
    *,
    send_at: datetime = FUTURE,
    corp_id: str = "corp-a",
    text: str = "全场五折，今晚八点开抢",
    groups: int = 2,
) -> list[int]:
    """`count` jobs of `campaign`, each to its own groups, due at `send_at` (naive UTC)."""
    items = [
        {
            "payload": body(
                name=f"{campaign}-{n}",
                text=text,
                group_ext_id_list=[f"{campaign}-group-{n}-{g}" for g in range(groups)],
            ),
            "campaign": campaign,
            "corp_id": corp_id,
            "send_at": send_at.isoformat(),
        }
        for n in [next(_serial) for _ in range(count)]
    ]
    return schedule_many(items, store=store).job_ids


def call(store: JobStore, job_id: int, decision: Decision, duration_ms: int = 480) -> None:
    """One vendor call of the due job `job_id` as a worker records it: claimed, `sending`
    committed, then the outcome. Other due rows the claim took go back untouched."""
    now = utcnow()
    claimed = store.claim_due(now, limit=1000, lease_s=60)
    others = [job.id for job in claimed.claimed if job.id != job_id]
    if others:
        store.release(others, now)
    sending = store.start_sending(job_id, now, lease_s=60)
    assert sending is not None, f"job {job_id} could not be moved to sending"
    store.finish(sending, decision, utcnow(), now, duration_ms)


AMBIGUOUS = Decision(
    status=JobStatus.UNKNOWN,
    outcome=Outcome.AMBIGUOUS,
    counts_attempt=True,
    error="timeout after the request was sent: the vendor may have created the message",
)
SENT = Decision(status=JobStatus.SENT, outcome=Outcome.SENT, counts_attempt=True, errcode=0)
REJECTED = Decision(
    status=JobStatus.FAILED,
    outcome=Outcome.REJECTED,
    counts_attempt=True,
    errcode=40058,
    error="errcode 40058: invalid group_ext_id_list",
)


def unknown_job(store: JobStore, campaign: str) -> int:
    """A job left `unknown` by an ambiguous vendor call, with its attempt recorded."""
    [job_id] = schedule(store, campaign, 1, send_at=utcnow() - timedelta(seconds=1))
    call(store, job_id, AMBIGUOUS, duration_ms=10_000)
    assert store.get(job_id).status == JobStatus.UNKNOWN
    return job_id
