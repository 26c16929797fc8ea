"""The narrow interfaces the scheduler and the worker depend on.

`SchedulerService` and `Admission` need a `SchedulerStore`, a `Dispatch` and a
`QuotaView`; `Sender` needs a `SendStore`, a `Quota` and a `Vendor`; the reconciler reads
the vendor's created missions through a `MissionList` and settles jobs through a
`ReconcileStore`. Each has a real
implementation (`JobStore` on SQLite or PostgreSQL, `RedisQuota`, `Dispatcher`,
`WeibanClient`) and a fake for unit tests; one contract test suite per seam runs against
every implementation, so a fake cannot drift from what it stands in for.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from broadcaster.jobs.policy import Decision
    from broadcaster.jobs.states import JobStatus
    from broadcaster.jobs.store import ClaimResult, Delivery, OpenJob, RecoveryResult, SendingJob
    from broadcaster.quota.limiter import Slot
    from broadcaster.vendor.missions import MissionPage


class SchedulerStore(Protocol):
    """What the scheduler asks of the job table."""

    def claim_due(
        self, now: datetime, limit: int, lease_s: float, *, skip_corps: Collection[str] = ()
    ) -> ClaimResult: ...

    def release(self, job_ids: Sequence[int], now: datetime) -> int: ...

    def next_due_at(self) -> datetime | None: ...

    def recover(self, now: datetime, queued_lease_s: float) -> RecoveryResult: ...

    def queued_by_corp(self) -> dict[str, int]: ...


class SendStore(Protocol):
    """What a worker asks of the job table around one vendor call."""

    default_corp: str | None

    def start_sending(self, job_id: int, now: datetime, lease_s: float) -> SendingJob | None: ...

    def hand_back(self, job_id: int, now: datetime, delay_s: float) -> bool: ...

    def finish(
        self,
        job: SendingJob,
        decision: Decision,
        now: datetime,
        started_at: datetime,
        duration_ms: int,
    ) -> None: ...


class QuotaView(Protocol):
    """What admission reads of the quota: which corps the vendor has paused."""

    def blocked_corps(self, api: str) -> set[str]: ...


class Quota(QuotaView, Protocol):
    """The vendor's quota for a worker: a slot per call, and the vendor's signals."""

    def acquire(self, corp_id: str, api: str, *, max_wait_s: float) -> Slot: ...

    def release(self, slot: Slot) -> None: ...

    def on_blocked(self, corp_id: str, api: str) -> float: ...

    def on_busy(self, corp_id: str, api: str) -> int: ...

    def pause(self, corp_id: str, api: str, seconds: float) -> None: ...


class Dispatch(Protocol):
    """Hands job ids to the workers (the broker)."""

    def enqueue(self, job_ids: Iterable[int]) -> list[int]: ...


class Vendor(Protocol):
    """The vendor's create call: returns on success, raises a `VendorError` otherwise."""

    def create_group_message(self, corp_id: str, body: str) -> None: ...


class MissionList(Protocol):
    """The vendor's list of created missions, one page per call (`WeibanClient`): naive
    UTC window of at most `MAX_WINDOW_S`, `limit` 1 to `MAX_PAGE_SIZE`. Raises a
    `VendorError` (`VendorAnswerUnreadable` for an answer it cannot read), ValueError for
    a window or page out of bounds. Takes no quota slot: the caller holds one of
    `RESULT_API`."""

    def list_missions(
        self,
        corp_id: str,
        start: datetime,
        end: datetime,
        *,
        limit: int = 30,
        offset: int = 0,
        staff_ext_id: str | None = None,
    ) -> MissionPage: ...


class ReconcileStore(Protocol):
    """What the reconciler asks of the job table (`jobs/store/reconcile.py`)."""

    def unknown_to_settle(self, now: datetime, after_s: float, limit: int) -> list[OpenJob]: ...

    def sent_to_track(self, now: datetime, track_s: float, limit: int) -> list[OpenJob]: ...

    def settle_found(
        self, job: OpenJob, delivery: Delivery, sent_at: datetime, now: datetime, evidence: str
    ) -> bool: ...

    def settle_absent(self, job: OpenJob, now: datetime, evidence: str) -> JobStatus | None: ...

    def note_unsettled(self, job: OpenJob, now: datetime, reason: str) -> bool: ...

    def record_deliveries(self, seen: Sequence[tuple[OpenJob, Delivery]], now: datetime) -> int: ...

    def note_delivery(self, job_ids: list[int], now: datetime, reason: str) -> int: ...
