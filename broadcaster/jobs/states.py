"""Job statuses and call outcomes: the one vocabulary the schema's CHECK constraint, the
store, the workers, the CLI, the demo and the tests share."""

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a broadcast job is in its life.

    `sending` means the vendor call may have started: a job found there after its lease
    ran out becomes `unknown`, never `scheduled`, because the vendor's create call is not
    idempotent and resending could create a second mass message.
    """

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


FINAL_STATUSES = frozenset(
    {JobStatus.SENT, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)
"""Statuses a job never leaves on its own. `unknown` waits for an operator's decision."""

SETTLED_STATUSES = FINAL_STATUSES | {JobStatus.UNKNOWN}
"""Statuses the service is done with: final, or `unknown` (an operator's turn). A run has
finished when every job is in one of these."""

PENDING_STATUSES = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.SENDING})
"""Statuses the service is still working on: every status that is not settled."""

CANCELLABLE_STATUSES = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.UNKNOWN})
"""A `queued` job can still be cancelled: the actor's compare-and-set will find it gone."""


class Outcome(StrEnum):
    """What one delivery of a `send_broadcast` message came to. The first nine are what a
    vendor call ended with, stored in `broadcast_attempts.outcome` (see `policy.py` for
    what each does to the job), then two the reconciler records; the values are stored
    text and must never change."""

    SENT = "sent"
    """errcode 0: the message exists at the vendor."""
    REJECTED = "rejected"
    """A business error: the vendor refused this message."""
    AMBIGUOUS = "ambiguous"
    """The call may have been processed (timeout after sending, 5xx)."""
    NOT_SENT = "not_sent"
    """The request certainly did not reach the vendor."""
    TOKEN = "token"
    """10001: the access token was refused."""
    BUSY = "busy"
    """10052: too many calls in flight for the corp."""
    BLOCKED = "blocked"
    """10053, or (returned by the sender, not stored) a block already in force in the
    quota: the corp is paused."""
    THROTTLED = "throttled"
    """HTTP 429: turned away unprocessed."""
    CREDENTIALS = "credentials"
    """The token API refused the corp's credentials."""
    # Recorded by the reconciler (no vendor call): what the list said of an `unknown` job.
    FOUND = "found"
    """The vendor's list holds the job's mission: the ambiguous call did create it."""
    ABSENT = "absent"
    """The list, read to its end, holds no mission of the job: it is sent again."""
    # Returned by `Sender.send` only; no vendor call was made, nothing is stored.
    IGNORED = "ignored"
    """The message was stale or a duplicate delivery: the job was not `queued` (or another
    delivery won the compare-and-set)."""
    QUOTA_WAIT = "quota_wait"
    """No quota slot within the worker's patience: the job waits, no attempt used."""


CERTAIN_OUTCOMES = frozenset({Outcome.SENT, Outcome.REJECTED})
"""Answers that say for sure what the vendor did: such an answer arriving after the sweep
called its job `unknown` still settles the job."""
