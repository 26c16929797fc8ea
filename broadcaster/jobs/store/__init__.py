"""JobStore: the one seam between broadcaster and its database.

Each method is named by intent (claim the due rows, start sending one, recover lost
leases) and does its work in one short transaction. SQLite and PostgreSQL run the same
statements: `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) … RETURNING`, where
SQLite drops the locking clause and relies on `BEGIN IMMEDIATE` (see `db.py`) making it
the only writer instead.
"""

from broadcaster.jobs.store.base import (
    MAX_ERROR_CHARS,
    AnyRow,
    ClaimedJob,
    ClaimResult,
    InsertResult,
    RecoveryResult,
    RowsRefused,
    SendingJob,
    storable_text,
)
from broadcaster.jobs.store.claim import ClaimStore
from broadcaster.jobs.store.insert import COPY_THRESHOLD, STAGED_COLUMNS, InsertStore
from broadcaster.jobs.store.operate import OperatorStore
from broadcaster.jobs.store.reconcile import Delivery, OpenJob, ReconcileStore
from broadcaster.jobs.store.send import SendingStore
from broadcaster.jobs.store.views import ReportStore


class JobStore(InsertStore, ClaimStore, SendingStore, OperatorStore, ReportStore, ReconcileStore):
    """Every read and write of `broadcast_jobs` and `broadcast_attempts`, for the callers
    that need them all (the CLI, the demo). The scheduler and a worker depend only on
    their own narrow view of it (`broadcaster.ports`); each part lives in its own module
    by caller and can be built alone from the same engine."""


__all__ = [
    "COPY_THRESHOLD",
    "MAX_ERROR_CHARS",
    "STAGED_COLUMNS",
    "AnyRow",
    "ClaimResult",
    "ClaimStore",
    "ClaimedJob",
    "Delivery",
    "InsertResult",
    "InsertStore",
    "JobStore",
    "OpenJob",
    "OperatorStore",
    "ReconcileStore",
    "RecoveryResult",
    "ReportStore",
    "RowsRefused",
    "SendingJob",
    "SendingStore",
    "storable_text",
]
