"""The shared vocabulary: status sets, stored outcomes, and QuotaWait in the error tree."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from broadcaster.errors import BroadcasterError, QuotaWait
from broadcaster.jobs.states import (
    CANCELLABLE_STATUSES,
    CERTAIN_OUTCOMES,
    FINAL_STATUSES,
    PENDING_STATUSES,
    SETTLED_STATUSES,
    JobStatus,
    Outcome,
)
from broadcaster.quota.limiter import QuotaWait as QuotaWaitFromQuota


def test_settled_and_pending_split_every_status() -> None:
    assert set(JobStatus) == SETTLED_STATUSES | PENDING_STATUSES
    assert not SETTLED_STATUSES & PENDING_STATUSES
    assert {JobStatus.UNKNOWN} == SETTLED_STATUSES - FINAL_STATUSES
    assert JobStatus.SENDING not in CANCELLABLE_STATUSES
    assert not FINAL_STATUSES & CANCELLABLE_STATUSES


def test_outcomes_keep_the_text_stored_in_broadcast_attempts() -> None:
    assert [outcome.value for outcome in Outcome] == [
        "sent",
        "rejected",
        "ambiguous",
        "not_sent",
        "token",
        "busy",
        "blocked",
        "throttled",
        "credentials",
        "found",
        "absent",
        "ignored",
        "quota_wait",
    ]
    assert Outcome.SENT == "sent" and f"{Outcome.NOT_SENT}" == "not_sent"
    assert {"sent", "rejected"} == CERTAIN_OUTCOMES


def test_quota_wait_is_a_plain_exception_of_the_tree() -> None:
    wait = QuotaWait(2.5, blocked=True)
    assert isinstance(wait, BroadcasterError) and QuotaWaitFromQuota is QuotaWait
    assert (wait.retry_after_s, wait.blocked) == (2.5, True)
    assert str(wait) == "the corp is blocked by the vendor: try again in 2.500s"
    copy = pickle.loads(pickle.dumps(QuotaWait(0.5)))
    assert (copy.retry_after_s, copy.blocked) == (0.5, False)


def test_quota_wait_propagates_through_a_context_manager() -> None:
    """Regression: the frozen-dataclass QuotaWait became FrozenInstanceError here."""

    @contextmanager
    def held() -> Iterator[None]:
        yield

    with pytest.raises(QuotaWait) as waited, held():
        raise QuotaWait(1.0)
    assert waited.type is QuotaWait and waited.value.retry_after_s == 1.0
