"""One reconcile pass: read the vendor's list of missions around our calls, and settle.

For every corp with open jobs (`unknown` ones whose call began at least
RECONCILE_AFTER_S ago, and sent ones whose delivery is still open), the pass

1. draws the time window each call's mission could have been created in
   (`MatchWindow`: a minute before the call began to RECONCILE_AFTER_S after it) and
   merges overlapping windows, so one list page serves up to 30 missions of many jobs;
2. reads each merged window to its end (offset paging, ≤ 3 days a request, through the
   quota of the list API, at most DELIVERY_READ_SHARE of it);
3. matches missions to calls (`matching.py`: never a guess) and moves each job:
   found -> `sent` with the mission; certainly absent -> sent again (or `failed`);
   ambiguous or unread -> stays `unknown`, the reason in `last_error`; a sent job's
   mission and delivery are recorded.

Why a resend never creates a second message: an `unknown` job is sent again only when
(a) its call began RECONCILE_AFTER_S ago, longer than any create the vendor still
processes (its gateway abandons a request long before; RECONCILE_AFTER_S must exceed our
own call budget, which settings enforce), and (b) a list read that began after that moment
covered the whole window the first call could have created its mission in, to its end,
with every entry readable. A first call the vendor creates late therefore lands in the
window before the read and is found, not resent. Should the vendor ever create one later
still, the next passes see two missions for the job and flag it (never a silent double).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import redis
import structlog

from broadcaster.errors import (
    QuotaWait,
    VendorBlocked,
    VendorBusy,
    VendorError,
    VendorRejected,
    VendorThrottled,
)
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store.reconcile import Delivery, OpenJob
from broadcaster.ports import MissionList, Quota, ReconcileStore
from broadcaster.reconcile.matching import CallRecord, Match, MatchWindow, Verdict, match_calls
from broadcaster.timeutil import utcnow
from broadcaster.vendor.missions import (
    MAX_PAGE_SIZE,
    MAX_WINDOW_S,
    RESULT_API,
    SUB_MISSION_SENT,
    Mission,
    MissionPage,
)

log = structlog.get_logger("broadcaster.reconcile")


@dataclass(frozen=True)
class ReconcileConfig:
    on_ambiguous: Literal["reconcile", "unknown", "retry"] = "reconcile"
    after_s: float = 120.0
    track_s: float = 259_200.0
    before_s: float = 60.0
    """A mission created up to this long before our call began still matches it: our
    clock and the vendor's differ, and its China-time text has whole seconds."""
    max_pages_per_corp: int = 400
    """A pass stops reading a corp after this many pages and goes on next pass."""
    max_quota_wait_s: float = 5.0
    batch: int = 5000
    """At most this many unknown and this many tracked jobs per pass."""

    @property
    def window(self) -> MatchWindow:
        return MatchWindow(before_s=self.before_s, after_s=self.after_s)


@dataclass
class CorpPass:
    """What one pass did for one corp."""

    corp_id: str
    found: list[int] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    unsettled: dict[int, str] = field(default_factory=dict)
    delivery_updated: int = 0
    tracked: int = 0
    pages: int = 0
    list_error: str | None = None


@dataclass
class PassReport:
    corps: list[CorpPass] = field(default_factory=list)
    skipped: str | None = None
    """Why the pass did nothing (another scheduler holds the pass), else None."""

    @property
    def pages(self) -> int:
        return sum(corp.pages for corp in self.corps)

    def count(self, what: str) -> int:
        if what == "delivery_updated":
            return sum(corp.delivery_updated for corp in self.corps)
        return sum(len(getattr(corp, what)) for corp in self.corps)


@dataclass
class _Span:
    """A merged window and the calls whose missions fall in it."""

    start: datetime
    end: datetime
    jobs: list[OpenJob]
    has_unknown: bool


class PassLock:
    """One reconcile pass at a time across schedulers: SET NX with a short lease in Redis,
    renewed by the holder as it goes (after every page and every span) and freed by the
    holder only. A scheduler killed mid-pass therefore holds the others up for one lease,
    not for the length of a pass. The job moves are compare-and-sets anyway; the lock
    saves the list quota a second scheduler would spend reading the same pages."""

    _RENEW = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
    )
    _RELEASE = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
        "return 0"
    )

    def __init__(
        self, client: redis.Redis, *, lease_s: float, key: str = "broadcaster:reconcile:pass"
    ):
        self.client, self.key, self.lease_ms = client, key, int(lease_s * 1000)
        self.token = uuid.uuid4().hex

    def acquire(self) -> bool:
        return bool(self.client.set(self.key, self.token, nx=True, px=self.lease_ms))

    def renew(self) -> None:
        try:
            self.client.eval(self._RENEW, 1, self.key, self.token, self.lease_ms)
        except redis.RedisError as exc:  # the moves stay safe without the lock
            log.warning("reconcile_lock_renew_failed", error=str(exc))

    def release(self) -> None:
        self.client.eval(self._RELEASE, 1, self.key, self.token)


class Reconciler:
    def __init__(
        self,
        store: ReconcileStore,
        reader: MissionList,
        quota: Quota,
        config: ReconcileConfig,
        *,
        lock: PassLock | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store, self.reader, self.quota = store, reader, quota
        self.config, self.lock, self.clock = config, lock, clock

    def run_pass(self) -> PassReport:
        """Settle what the list can settle now; safe to run from any number of schedulers."""
        if self.lock is not None and not self.lock.acquire():
            return PassReport(skipped="another scheduler is reconciling")
        try:
            return self._run()
        finally:
            if self.lock is not None:
                self.lock.release()

    def _still_mine(self) -> None:
        if self.lock is not None:
            self.lock.renew()

    def _run(self) -> PassReport:
        now, config = self.clock(), self.config
        unknown = (
            []
            if config.on_ambiguous == "unknown"
            else self.store.unknown_to_settle(now, config.after_s, config.batch)
        )
        tracked = self.store.sent_to_track(now, config.track_s, config.batch)
        by_corp: dict[str, list[OpenJob]] = defaultdict(list)
        for job in [*unknown, *tracked]:
            by_corp[job.corp_id].append(job)
        report = PassReport()
        for corp_id in sorted(by_corp):
            report.corps.append(self._corp(corp_id, by_corp[corp_id], now))
        return report

    # ------------------------------------------------------------ one corp
    def _corp(self, corp_id: str, open_jobs: list[OpenJob], now: datetime) -> CorpPass:
        done = CorpPass(corp_id, tracked=sum(j.status == JobStatus.SENT for j in open_jobs))
        spans = sorted(
            self._spans(open_jobs, now), key=lambda span: (not span.has_unknown, span.start)
        )
        for span in spans:
            missions, complete = self._read(corp_id, span, done)
            if done.list_error is not None and not missions:
                self._list_unavailable(span.jobs, now, done)
                continue
            matches = match_calls(
                [_call_record(job) for job in span.jobs],
                missions,
                window=self.config.window,
                complete=complete,
            )
            seen: list[tuple[OpenJob, Delivery]] = []
            for job in span.jobs:
                self._apply(job, matches[job.id], now, done, seen)
            done.delivery_updated += self.store.record_deliveries(seen, now)
            self._still_mine()
        if done.found or done.resent or done.failed or done.unsettled:
            log.info(
                "reconciled",
                corp_id=corp_id,
                found=len(done.found),
                resent=len(done.resent),
                failed=len(done.failed),
                unsettled=len(done.unsettled),
                pages=done.pages,
            )
        return done

    def _spans(self, open_jobs: Sequence[OpenJob], now: datetime) -> Iterable[_Span]:
        before = timedelta(seconds=self.config.before_s)
        after = timedelta(seconds=self.config.after_s)
        current: _Span | None = None
        for job in sorted(open_jobs, key=lambda j: j.call_started_at):
            start = job.call_started_at - before
            end = min(now, job.call_started_at + after)
            unknown = job.status == JobStatus.UNKNOWN
            if current is not None and start <= current.end:
                current.end = max(current.end, end)
                current.jobs.append(job)
                current.has_unknown |= unknown
                continue
            if current is not None:
                yield current
            current = _Span(start, end, [job], unknown)
        if current is not None:
            yield current

    def _read(self, corp_id: str, span: _Span, done: CorpPass) -> tuple[list[Mission], bool]:
        """Every mission of the span, and whether it was read to its end with every entry
        readable (only then may absence be concluded)."""
        missions: list[Mission] = []
        chunk_start = span.start
        while chunk_start < span.end:
            chunk_end = min(span.end, chunk_start + timedelta(seconds=MAX_WINDOW_S))
            if not self._read_chunk(corp_id, chunk_start, chunk_end, missions, done):
                return missions, False
            chunk_start = chunk_end
        return missions, True

    def _read_chunk(
        self, corp_id: str, start: datetime, end: datetime, into: list[Mission], done: CorpPass
    ) -> bool:
        offset, readable = 0, True
        while True:
            if done.list_error is not None or done.pages >= self.config.max_pages_per_corp:
                return False
            page = self._page(corp_id, start, end, offset, done)
            if page is None:
                return False
            done.pages += 1
            self._still_mine()
            into.extend(page.missions)
            readable &= page.unreadable == 0
            offset += page.raw_count
            total = page.total_count
            if page.raw_count < MAX_PAGE_SIZE or (total is not None and offset >= total):
                return readable

    def _page(
        self, corp_id: str, start: datetime, end: datetime, offset: int, done: CorpPass
    ) -> MissionPage | None:
        """One page through the list API's quota; None (and `list_error`) when the
        vendor or the quota says not now."""
        try:
            slot = self.quota.acquire(corp_id, RESULT_API, max_wait_s=self.config.max_quota_wait_s)
        except QuotaWait as wait:
            done.list_error = f"the list API's quota is used up for now ({wait})"
            return None
        try:
            return self.reader.list_missions(
                corp_id, start, end, limit=MAX_PAGE_SIZE, offset=offset
            )
        except VendorError as error:
            self._vendor_signal(corp_id, error)
            done.list_error = _list_error_text(error)
            log.warning("list_failed", corp_id=corp_id, error=done.list_error)
            return None
        finally:
            try:
                self.quota.release(slot)
            except redis.RedisError as exc:
                log.warning("quota_release_failed", error=str(exc))

    def _vendor_signal(self, corp_id: str, error: VendorError) -> None:
        try:
            if isinstance(error, VendorBlocked):
                self.quota.on_blocked(corp_id, RESULT_API)
            elif isinstance(error, VendorBusy):
                self.quota.on_busy(corp_id, RESULT_API)
            elif isinstance(error, VendorThrottled):
                self.quota.pause(corp_id, RESULT_API, error.retry_after_s)
        except redis.RedisError as exc:
            log.warning("quota_update_failed", error=str(exc))

    # ------------------------------------------------------------ moves
    def _list_unavailable(self, span_jobs: list[OpenJob], now: datetime, done: CorpPass) -> None:
        reason = f"reconcile: {done.list_error}; resolve by hand if it persists"
        for job in span_jobs:
            if job.status == JobStatus.UNKNOWN:
                self.store.note_unsettled(job, now, reason)
                done.unsettled[job.id] = reason
        sent = [job.id for job in span_jobs if job.status == JobStatus.SENT]
        if sent:
            self.store.note_delivery(sent, now, f"delivery not known: {done.list_error}")

    def _apply(
        self,
        job: OpenJob,
        match: Match,
        now: datetime,
        done: CorpPass,
        seen: list[tuple[OpenJob, Delivery]],
    ) -> None:
        """Settles an `unknown` job at once (each in its own transaction: a move with its
        evidence); a sent job's new delivery is added to `seen`, written for the whole
        span in one transaction."""
        if job.status == JobStatus.UNKNOWN:
            self._settle(job, match, now, done)
        else:
            self._track(job, match, now, seen)

    def _settle(self, job: OpenJob, match: Match, now: datetime, done: CorpPass) -> None:
        if match.verdict == Verdict.FOUND and match.mission is not None:
            mission = match.mission
            evidence = f"reconcile: found at the vendor as mission {mission.id}: {match.reason}"
            sent_at = mission.created_at or job.call_started_at
            if self.store.settle_found(job, delivery_of(mission), sent_at, now, evidence):
                done.found.append(job.id)
        elif match.verdict == Verdict.ABSENT:
            evidence = f"reconcile: not at the vendor: {match.reason}"
            status = self.store.settle_absent(job, now, evidence)
            if status == JobStatus.SCHEDULED:
                done.resent.append(job.id)
            elif status == JobStatus.FAILED:
                done.failed.append(job.id)
        else:
            reason = f"reconcile: {match.reason}"
            if match.verdict == Verdict.AMBIGUOUS:
                reason += "; resolve by hand (broadcaster jobs resolve)"
            if self.store.note_unsettled(job, now, reason):
                done.unsettled[job.id] = reason

    def _track(
        self, job: OpenJob, match: Match, now: datetime, seen: list[tuple[OpenJob, Delivery]]
    ) -> None:
        if match.verdict == Verdict.FOUND and match.mission is not None:
            delivery = delivery_of(match.mission)
            shown = (
                delivery.mission_id,
                delivery.status,
                delivery.groups_reached,
                delivery.staff_confirmed,
            )
            if shown != job.delivery_seen:
                seen.append((job, delivery))
        elif match.verdict in (Verdict.AMBIGUOUS, Verdict.ABSENT):
            self.store.note_delivery([job.id], now, f"delivery not known: {match.reason}")


def _call_record(job: OpenJob) -> CallRecord:
    return CallRecord(
        job_id=job.id,
        payload=job.payload,
        started_at=job.call_started_at,
        mission_id=job.mission_id,
    )


def _list_error_text(error: VendorError) -> str:
    if isinstance(error, VendorRejected):
        return f"the vendor's list refused: {error}"
    return f"the vendor's list unavailable: {error}"


def delivery_of(mission: Mission) -> Delivery:
    """What a mission says of delivery: groups reached are those of staff who confirmed
    (`sended` sub-missions); counts from the vendor's own totals when the sub-missions are
    not readable."""
    reached: set[str] = set()
    unreached: set[str] = set()
    confirmed = total = None
    if mission.sub_missions is not None:
        confirmed = sum(sub.status == SUB_MISSION_SENT for sub in mission.sub_missions)
        total = len(mission.sub_missions)
        for sub in mission.sub_missions:
            (reached if sub.status == SUB_MISSION_SENT else unreached).update(
                sub.group_ext_ids or ()
            )
    groups_known = mission.groups is not None
    detail = (
        json.dumps(
            {"reached": sorted(reached), "not_reached": sorted(unreached)}, ensure_ascii=False
        )
        if groups_known
        else None
    )
    return Delivery(
        mission_id=mission.id,
        status=mission.status,
        groups_reached=mission.sent_count
        if mission.sent_count is not None
        else (len(reached) if groups_known else None),
        groups_unreached=mission.not_sent_count
        if mission.not_sent_count is not None
        else (len(unreached) if groups_known else None),
        staff_confirmed=confirmed,
        staff_total=total,
        detail=detail,
    )
