"""Job statuses: the one list the schema's CHECK constraint, the store and the CLI share."""

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

CANCELLABLE_STATUSES = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.UNKNOWN})
"""A `queued` job can still be cancelled: the actor's compare-and-set will find it gone."""
