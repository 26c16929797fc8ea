"""What happens to a job after a vendor call: one pure function, one table of outcomes.

    outcome                    next status          attempt used   when again
    errcode 0                  sent                 yes            -
    not sent (connect error)   scheduled / failed   yes            backoff / attempts out
    10001 twice                scheduled / failed   yes            backoff
    10052 busy                 scheduled            no             ~1 s
    10053 blocked              scheduled            no             when the block ends
    HTTP 429 throttled         scheduled            no             its Retry-After
    credentials refused        scheduled            no             60 s (fix the secret)
    other errcode              failed               yes            -
    ambiguous                  unknown (or retry)   yes            the reconciler (or an
                                                                   operator) decides

DESIGN §4 is the source; `tests/unit/test_delivery.py` walks this table.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from broadcaster.errors import (
    CredentialsRejected,
    OutcomeUnknown,
    TokenRejected,
    VendorBlocked,
    VendorBusy,
    VendorError,
    VendorRejected,
    VendorThrottled,
    VendorUnreachable,
)
from broadcaster.jobs.states import JobStatus, Outcome

BUSY_RETRY_S = 1.0
CREDENTIALS_RETRY_S = 60.0


@dataclass(frozen=True)
class Decision:
    status: JobStatus
    outcome: Outcome
    counts_attempt: bool
    retry_in_s: float | None = None
    errcode: int | None = None
    error: str | None = None


def backoff_s(
    attempt: int, *, base_s: float, max_s: float, rng: Callable[[], float] = random.random
) -> float:
    """Exponential with jitter, capped: attempt 1 waits base..base/2, then doubling.
    The jitter spreads a batch that failed together so it does not retry together."""
    ceiling = min(max_s, base_s * 2 ** (attempt - 1))
    return ceiling * (0.5 + rng() / 2)


def decide(
    error: VendorError | None,
    *,
    attempts_before: int,
    max_attempts: int,
    on_ambiguous: Literal["reconcile", "unknown", "retry"],
    backoff: Callable[[int], float],
    block_s: float = 60.0,
) -> Decision:
    """The next state of a job whose vendor call ended with `error` (None = success)."""
    if error is None:
        return Decision(JobStatus.SENT, Outcome.SENT, True)
    code, text = error.errcode, str(error)
    if isinstance(error, VendorBusy):
        return Decision(JobStatus.SCHEDULED, Outcome.BUSY, False, BUSY_RETRY_S, code, text)
    if isinstance(error, VendorBlocked):
        return Decision(JobStatus.SCHEDULED, Outcome.BLOCKED, False, block_s, code, text)
    if isinstance(error, VendorThrottled):
        return Decision(
            JobStatus.SCHEDULED, Outcome.THROTTLED, False, error.retry_after_s, code, text
        )
    if isinstance(error, CredentialsRejected):
        return Decision(
            JobStatus.SCHEDULED, Outcome.CREDENTIALS, False, CREDENTIALS_RETRY_S, code, text
        )
    if isinstance(error, VendorRejected):
        return Decision(JobStatus.FAILED, Outcome.REJECTED, True, None, code, text)
    if isinstance(error, OutcomeUnknown) and on_ambiguous != "retry":
        # `reconcile` too: the reconciler settles the job from the vendor's list later.
        return Decision(JobStatus.UNKNOWN, Outcome.AMBIGUOUS, True, None, code, text)
    outcome = {
        OutcomeUnknown: Outcome.AMBIGUOUS,
        TokenRejected: Outcome.TOKEN,
        VendorUnreachable: Outcome.NOT_SENT,
    }.get(type(error), Outcome.NOT_SENT)
    attempts = attempts_before + 1
    if attempts >= max_attempts:
        return Decision(
            JobStatus.FAILED,
            outcome,
            True,
            None,
            code,
            f"{text} (gave up after {attempts} attempts)",
        )
    return Decision(JobStatus.SCHEDULED, outcome, True, backoff(attempts), code, text)
