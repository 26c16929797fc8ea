"""The reconcile pass alone: windows merged and paged, the read budget, what a refused or
busy list does, and the pass lock. The store, the list and the quota are small fakes; the
real ones are exercised in tests/integration/test_reconcile.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from broadcaster.errors import QuotaWait, VendorBusy, VendorRejected
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store.reconcile import Delivery, OpenJob
from broadcaster.reconcile.reconciler import ReconcileConfig, Reconciler, delivery_of
from broadcaster.vendor.missions import Mission, MissionPage, SubMission
from tests.helpers import body

NOW = datetime(2030, 12, 1, 12, 0, 0)


def job(job_id: int, status: JobStatus, started: datetime, **payload: Any) -> OpenJob:
    return OpenJob(
        id=job_id,
        corp_id="corp-a",
        status=status,
        payload=json.dumps(body(name=f"job-{job_id}", **payload)),
        attempts=1,
        max_attempts=3,
        call_started_at=started,
        mission_id=None,
        delivery_status=None,
    )


def mission_for(open_job: OpenJob, mission_id: str, status: str = "waiting") -> Mission:
    sent = json.loads(open_job.payload)
    return Mission(
        id=mission_id,
        name=sent["name"],
        created_at=open_job.call_started_at + timedelta(seconds=1),
        send_at=None,
        send_type="realtime",
        creator=sent["create_staff_ext_id"],
        text=sent["text"],
        status=status,
        sent_count=None,
        not_sent_count=None,
        sub_missions=(SubMission("staff-1", tuple(sent["group_ext_id_list"]), "sended"),),
    )


@dataclass
class Store:
    unknown: list[OpenJob] = field(default_factory=list)
    sent: list[OpenJob] = field(default_factory=list)
    moves: list[tuple[str, int, Any]] = field(default_factory=list)

    def unknown_to_settle(self, now: datetime, after_s: float, limit: int) -> list[OpenJob]:
        return self.unknown

    def sent_to_track(self, now: datetime, track_s: float, limit: int) -> list[OpenJob]:
        return self.sent

    def settle_found(
        self, job: OpenJob, delivery: Delivery, sent_at: datetime, now: datetime, evidence: str
    ) -> bool:
        self.moves.append(("found", job.id, delivery.mission_id))
        return True

    def settle_absent(self, job: OpenJob, now: datetime, evidence: str) -> JobStatus | None:
        self.moves.append(("absent", job.id, evidence))
        return JobStatus.SCHEDULED

    def note_unsettled(self, job: OpenJob, now: datetime, reason: str) -> bool:
        self.moves.append(("unsettled", job.id, reason))
        return True

    def record_deliveries(self, seen: Sequence[tuple[OpenJob, Delivery]], now: datetime) -> int:
        self.moves.extend(("delivery", job.id, delivery.status) for job, delivery in seen)
        return len(seen)

    def note_delivery(self, job_ids: list[int], now: datetime, reason: str) -> int:
        self.moves.extend(("delivery_note", job_id, reason) for job_id in job_ids)
        return len(job_ids)


@dataclass
class Lister:
    """The vendor's list over a fixed set of missions, filtered by time like the sandbox."""

    missions: list[Mission] = field(default_factory=list)
    error: Exception | None = None
    reads: list[tuple[datetime, datetime, int]] = field(default_factory=list)

    def list_missions(
        self,
        corp_id: str,
        start: datetime,
        end: datetime,
        *,
        limit: int = 30,
        offset: int = 0,
        staff_ext_id: str | None = None,
    ) -> MissionPage:
        self.reads.append((start, end, offset))
        if self.error is not None:
            raise self.error
        found = [m for m in self.missions if m.created_at and start <= m.created_at <= end]
        page = tuple(found[offset : offset + limit])
        return MissionPage(page, len(found), len(page))


@dataclass
class Quota:
    wait: bool = False
    signals: list[str] = field(default_factory=list)

    def acquire(self, corp_id: str, api: str, *, max_wait_s: float) -> object:
        if self.wait:
            raise QuotaWait(5.0, blocked=False)
        return object()

    def release(self, slot: object) -> None:
        pass

    def blocked_corps(self, api: str) -> set[str]:
        return set()

    def on_blocked(self, corp_id: str, api: str) -> float:
        self.signals.append("blocked")
        return 60.0

    def on_busy(self, corp_id: str, api: str) -> int:
        self.signals.append("busy")
        return 3

    def pause(self, corp_id: str, api: str, seconds: float) -> None:
        self.signals.append("pause")


def reconciler(
    store: Store, lister: Lister, quota: Quota | None = None, **config: Any
) -> Reconciler:
    return Reconciler(store, lister, quota or Quota(), ReconcileConfig(**config), clock=lambda: NOW)  # type: ignore[arg-type]


def test_calls_close_in_time_share_one_window_and_its_pages() -> None:
    start = NOW - timedelta(minutes=10)
    sent = [job(i, JobStatus.SENT, start + timedelta(seconds=i)) for i in range(1, 71)]
    lister = Lister([mission_for(j, f"m{j.id}") for j in sent])
    report = reconciler(Store(sent=sent), lister).run_pass()
    assert report.pages == 3, "70 missions, 30 a page, one merged window"
    assert len({(s, e) for s, e, _ in lister.reads}) == 1
    assert report.count("delivery_updated") == 70


def test_calls_far_apart_are_read_as_separate_windows() -> None:
    early = job(1, JobStatus.SENT, NOW - timedelta(hours=5))
    late = job(2, JobStatus.SENT, NOW - timedelta(minutes=5))
    lister = Lister([mission_for(early, "m1"), mission_for(late, "m2")])
    reconciler(Store(sent=[early, late]), lister).run_pass()
    windows = sorted({(s, e) for s, e, _ in lister.reads})
    assert len(windows) == 2 and windows[0][1] < windows[1][0]


def test_unknown_jobs_are_read_first_and_a_budget_cut_never_concludes_absence() -> None:
    tracked = [job(i, JobStatus.SENT, NOW - timedelta(hours=2, seconds=-i)) for i in range(1, 100)]
    lister = Lister([mission_for(j, f"m{j.id}") for j in tracked])
    lost = job(500, JobStatus.UNKNOWN, NOW - timedelta(minutes=30))
    store = Store(unknown=[lost], sent=tracked)
    reconciler(store, lister, max_pages_per_corp=2).run_pass()
    assert ("absent", 500) in [(kind, job_id) for kind, job_id, _ in store.moves]
    assert lister.reads[0][0] < lost.call_started_at < lister.reads[0][1], "unknown first"
    assert not [m for m in store.moves if m[0] == "absent" and m[1] != 500]
    assert sum(m[0] == "delivery" for m in store.moves) == 30, "one page left for tracking"


def test_an_unknown_job_in_an_unfinished_read_stays_unknown() -> None:
    lost = job(1, JobStatus.UNKNOWN, NOW - timedelta(minutes=30))
    others = [
        job(i, JobStatus.UNKNOWN, lost.call_started_at + timedelta(seconds=i)) for i in range(2, 40)
    ]
    lister = Lister([mission_for(j, f"m{j.id}") for j in others])
    store = Store(unknown=[lost, *others])
    reconciler(store, lister, max_pages_per_corp=1).run_pass()
    moves = {job_id: kind for kind, job_id, _ in store.moves}
    assert moves[1] == "unsettled", "30 of 38 missions read: absence not proven"


def test_a_refused_list_notes_every_open_job_and_reads_no_further() -> None:
    lost = job(1, JobStatus.UNKNOWN, NOW - timedelta(minutes=30))
    tracked = job(2, JobStatus.SENT, NOW - timedelta(hours=30))
    lister = Lister(error=VendorRejected("errcode 20003 调用此接口需购买基础席位", errcode=20003))
    store = Store(unknown=[lost], sent=[tracked])
    report = reconciler(store, lister).run_pass()
    assert len(lister.reads) == 1
    assert [(kind, job_id) for kind, job_id, _ in store.moves] == [
        ("unsettled", 1),
        ("delivery_note", 2),
    ]
    assert "20003" in store.moves[0][2] and "refused" in (report.corps[0].list_error or "")


@pytest.mark.parametrize("signal", ["busy", "quota"])
def test_a_busy_vendor_or_spent_quota_ends_the_corps_reads_for_this_pass(signal: str) -> None:
    lost = job(1, JobStatus.UNKNOWN, NOW - timedelta(minutes=30))
    lister = Lister(error=VendorBusy("10052", errcode=10052) if signal == "busy" else None)
    quota = Quota(wait=signal == "quota")
    store = Store(unknown=[lost])
    reconciler(store, lister, quota).run_pass()
    assert store.moves and store.moves[0][0] == "unsettled"
    assert quota.signals == (["busy"] if signal == "busy" else [])


def test_a_window_over_three_days_is_read_in_pieces_the_api_allows() -> None:
    # Calls every two minutes for four days: one merged window, longer than a request may be.
    first = NOW - timedelta(days=4)
    tracked = [job(i, JobStatus.SENT, first + timedelta(minutes=2 * i)) for i in range(2880)]
    lister = Lister([])
    reconciler(Store(sent=tracked), lister).run_pass()
    windows = sorted({(start, end) for start, end, _ in lister.reads})
    assert len(windows) == 2
    assert all(end - start <= timedelta(days=3) for start, end in windows)
    assert windows[0][1] == windows[1][0], "the pieces cover the window without a gap"
    assert windows[-1][1] == NOW


def test_delivery_counts_groups_of_staff_who_confirmed() -> None:
    mission = Mission(
        id="m1",
        name="n",
        created_at=NOW,
        send_at=None,
        send_type=None,
        creator="s",
        text="t",
        status="waiting",
        sent_count=None,
        not_sent_count=None,
        sub_missions=(
            SubMission("s-1", ("g1", "g3"), "sended"),
            SubMission("s-2", ("g2",), "waiting_confirm"),
        ),
    )
    delivery = delivery_of(mission)
    assert (delivery.groups_reached, delivery.groups_unreached) == (2, 1)
    assert (delivery.staff_confirmed, delivery.staff_total) == (1, 2)
    assert json.loads(delivery.detail or "") == {"reached": ["g1", "g3"], "not_reached": ["g2"]}
