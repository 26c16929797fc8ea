"""The vendor quota, enforced in Redis for every process and host (DESIGN §5).

Per (corp, API), three limits at once plus the vendor's block signal:

- pace: a GCRA reservation spaces calls evenly at the rate the windows allow
  (600/min -> one call per ~100 ms), so the quota is used smoothly, never in bursts;
- windows: counts of calls per 100 ms (for the minute) and per second (for the hour),
  with their running sums, refuse a call that would make more than the per-minute count
  in any sliding 60 s, or the per-hour count in any sliding hour (the hard cap; the pace
  keeps us from ever touching it). A bucket is counted while its start lies inside the
  window widened by a margin at least a bucket wide, so the count holds every call the
  vendor's exact window holds: never more calls than allowed, whatever the bucketing.
  About 70 KB of Redis per corp and API at a full hour (a log of every call was 5 MB);
- in flight: at most `max_in_flight` calls hold a slot; a slot is a lease that expires,
  so a killed worker cannot leak one; 10052 lowers the cap for a while;
- block: 10053 pauses the corp on that API for every process (60 s, doubling on repeats
  up to an hour).

Every decision runs in one Lua script on Redis's own clock (`TIME`), so processes with
skewed clocks still agree. `acquire()` sleeps until its reserved moment and returns a
`Slot`; it never raises-and-retries (Dramatiq's RateLimitExceeded pattern used 17% of the
quota here).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import redis

from broadcaster.corps import QuotaLimits
from broadcaster.errors import QuotaWait as QuotaWait  # what `acquire` raises, re-exported

WINDOW_MARGIN_MS = 200
"""Windows are counted 200 ms wider than the vendor's: network jitter between our clock
and its receipt can move a call across a window edge; this keeps us on the safe side at a
cost of 0.3% of the per-minute quota."""

MINUTE_BUCKET_MS = 100
"""The minute window's counts are kept per 100 ms (at most WINDOW_MARGIN_MS: see above)."""

HOUR_BUCKET_MS = 1_000
HOUR_MARGIN_MS = 1_000
"""The hour's counts are kept per second, its window counted 1 s wide of the vendor's
(3600 buckets, ~55 KB; per 100 ms it would be 36000)."""

FREED_WAIT_S = 0.05
"""A caller waiting for an in-flight slot blocks this long at most on the release signal
before trying again (a signal lost to a waiter in another process costs no more)."""

CAP_HOLD_MS = 30_000
"""How long a 10052 keeps the in-flight cap lowered (by default: `cap_hold_s`)."""

_PREFIX = "broadcaster:quota"


def _lua(name: str) -> str:
    """A script of `lua/` (each starts with the KEYS and ARGV it takes); read when a
    RedisQuota is built, never at import."""
    return (files("broadcaster.quota") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


_RESERVE_KEYS = ("minute", "tat", "block", "inflight", "cap", "hour", "sums")
_SLOT_KEYS = ("inflight", "cap", "block")


@dataclass(frozen=True)
class _ScriptCalls:
    """A (corp, API)'s script keys and fixed arguments, as the bytes sent."""

    reserve_keys: list[bytes]
    before: list[bytes]
    """`reserve`'s arguments between Redis's clock and the member."""
    after: list[bytes]
    """`reserve`'s arguments after the member."""
    slot_keys: list[bytes]
    slot_args: list[bytes]
    """`take_slot`'s arguments after the member."""
    freed: bytes
    release_keys: list[bytes]


@dataclass
class Slot:
    corp_id: str
    api: str
    member: str
    waited_s: float


def interval_ms(limits: QuotaLimits) -> float:
    """The even spacing at the per-minute rate, so that window (with its margin) never
    binds. The hour is a hard cap in the counts only: where it is the tighter limit, a
    backlog runs at the minute's pace until the hour's count is used, then at the pace
    the hour's window frees calls, which the vendor allows and wastes nothing."""
    # One ms more than the window's margin: a backlog's reservations are spaced exactly
    # (`at` = `tat`), and at exactly the margin the 601st-back call sat on the window's
    # edge, where float rounding refused a call every ~7 minutes (a needless QuotaWait).
    return (60_000 + WINDOW_MARGIN_MS + 1) / limits.usable_per_minute


def wait_for_slot(
    reserve: Callable[[], tuple[str, float]],
    take_slot: Callable[[], tuple[str, float]],
    *,
    max_wait_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    wait_freed: Callable[[float], None] | None = None,
) -> float:
    """How `acquire` waits, whatever keeps the state: `reserve` the next paced moment
    (`slot`: due now and in-flight slot taken; `ok`: sleep this many ms, then take one;
    `wait`/`blocked`: refused for this many ms), then try `take_slot` (`ok`, `busy`,
    `blocked`) until `max_wait_s`. While busy it waits with `wait_freed(up_to_s)`, which
    returns early when a slot is released (Redis: a release pushes to a list the waiters
    block on), else with a growing pause. Returns the seconds waited."""
    started = clock()
    status, value_ms = reserve()
    if status == "slot":
        return clock() - started
    if status != "ok":
        raise QuotaWait(value_ms / 1000, blocked=status == "blocked")
    sleep(value_ms / 1000)
    deadline = started + max_wait_s
    pause = 0.002
    while True:
        status, value_ms = take_slot()
        if status == "ok":
            return clock() - started
        if status == "blocked":
            raise QuotaWait(value_ms / 1000, blocked=True)
        if clock() + pause > deadline:
            raise QuotaWait(0.5)
        if wait_freed is not None:
            wait_freed(min(FREED_WAIT_S, deadline - clock()))
            continue
        sleep(pause)
        pause = min(pause * 2, 0.05)


class QuotaRules:
    """What both quotas are built from: each corp's limits, the slot's lease, the 10053
    block and its cap, how long a 10052 lowers the cap, and how to sleep."""

    def __init__(
        self,
        limits_for: Callable[[str], QuotaLimits],
        *,
        slot_lease_s: float,
        block_s: float = 60.0,
        block_max_s: float = 3600.0,
        cap_hold_s: float = CAP_HOLD_MS / 1000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limits_for = limits_for
        self.slot_lease_ms = int(slot_lease_s * 1000)
        self.block_ms = block_s * 1000
        self.block_max_ms = block_max_s * 1000
        self.cap_hold_ms = int(cap_hold_s * 1000)
        self.sleep = sleep


class RedisQuota(QuotaRules):
    """The quota in Redis, shared by every process and host; `rules` as `QuotaRules`."""

    def __init__(
        self, client: redis.Redis, limits_for: Callable[[str], QuotaLimits], **rules: Any
    ) -> None:
        super().__init__(limits_for, **rules)
        self.client = client
        self._reserve = client.register_script(_lua("reserve"))
        self._take_slot = client.register_script(_lua("take_slot"))
        self._block = client.register_script(_lua("block"))
        self._lower_cap = client.register_script(_lua("lower_cap"))
        self._pause = client.register_script(_lua("pause"))
        self._release = client.register_script(_lua("release"))
        self._cached_calls: dict[tuple[str, str, QuotaLimits, float], _ScriptCalls] = {}

    @staticmethod
    def _key(corp_id: str, api: str, what: str) -> str:
        return f"{_PREFIX}:{{{corp_id}:{api}}}:{what}"

    @contextmanager
    def slot(self, corp_id: str, api: str, *, max_wait_s: float) -> Iterator[Slot]:
        """Hold one quota slot for the duration of a vendor call."""
        taken = self.acquire(corp_id, api, max_wait_s=max_wait_s)
        try:
            yield taken
        finally:
            self.release(taken)

    def acquire(self, corp_id: str, api: str, *, max_wait_s: float) -> Slot:
        """Reserve the next paced moment, sleep until it, then take an in-flight slot.
        Raises `QuotaWait` instead of waiting longer than `max_wait_s`."""
        limits = self.limits_for(corp_id)
        member = uuid.uuid4().hex.encode()
        calls = self._calls(corp_id, api, limits, max_wait_s)

        def reserve() -> tuple[str, float]:
            args: list[bytes | int] = [0, *calls.before, member, *calls.after]
            return _verdict(self._reserve(keys=calls.reserve_keys, args=args))

        def take_slot() -> tuple[str, float]:
            return _verdict(self._take_slot(keys=calls.slot_keys, args=[member, *calls.slot_args]))

        def wait_freed(seconds: float) -> None:
            # BLPOP wakes at a release's push: the slot goes to a waiter within a round
            # trip, not after a poll's pause (which cost the in-flight-bound shapes ~8 %).
            self.client.blpop([calls.freed], timeout=max(0.01, round(seconds, 3)))

        waited_s = wait_for_slot(
            reserve,
            take_slot,
            max_wait_s=max_wait_s,
            clock=time.monotonic,
            sleep=self.sleep,
            wait_freed=wait_freed,
        )
        return Slot(corp_id, api, member.decode(), waited_s)

    def _calls(
        self, corp_id: str, api: str, limits: QuotaLimits, max_wait_s: float
    ) -> _ScriptCalls:
        """The keys and fixed arguments of a (corp, API)'s scripts, encoded once (the
        client's encoding and packing of ~20 arguments a call was most of its CPU)."""
        cache_key = (corp_id, api, limits, max_wait_s)
        calls = self._cached_calls.get(cache_key)
        if calls is None:
            key = self._key

            def encoded(*values: float | str) -> list[bytes]:
                # as redis-py encodes them: str as UTF-8, numbers by repr
                return [
                    value.encode() if isinstance(value, str) else repr(value).encode()
                    for value in values
                ]

            calls = _ScriptCalls(
                reserve_keys=encoded(*(key(corp_id, api, what) for what in _RESERVE_KEYS)),
                before=encoded(
                    limits.usable_per_minute,
                    limits.usable_per_hour,
                    interval_ms(limits),
                    max_wait_s * 1000,
                ),
                after=encoded(
                    WINDOW_MARGIN_MS,
                    self.slot_lease_ms,
                    limits.max_in_flight,
                    MINUTE_BUCKET_MS,
                    HOUR_BUCKET_MS,
                    HOUR_MARGIN_MS,
                ),
                slot_keys=encoded(*(key(corp_id, api, what) for what in _SLOT_KEYS)),
                slot_args=encoded(self.slot_lease_ms, limits.max_in_flight),
                freed=key(corp_id, api, "freed").encode(),
                release_keys=encoded(key(corp_id, api, "inflight"), key(corp_id, api, "freed")),
            )
            if len(self._cached_calls) > 10_000:  # corps or limits come and go: stay small
                self._cached_calls.clear()
            self._cached_calls[cache_key] = calls
        return calls

    def reserve(
        self, corp_id: str, api: str, member: str, *, max_wait_s: float, now_ms: float = 0
    ) -> tuple[str, float]:
        """One reservation (see `wait_for_slot`). `now_ms` stands in for Redis's clock
        when given: only for replaying a long run in a moment (bench.quota's memory)."""
        limits = self.limits_for(corp_id)
        key = self._key
        return _verdict(
            self._reserve(
                keys=[key(corp_id, api, what) for what in _RESERVE_KEYS],
                args=[
                    now_ms,
                    limits.usable_per_minute,
                    limits.usable_per_hour,
                    interval_ms(limits),
                    max_wait_s * 1000,
                    member,
                    WINDOW_MARGIN_MS,
                    self.slot_lease_ms,
                    limits.max_in_flight,
                    MINUTE_BUCKET_MS,
                    HOUR_BUCKET_MS,
                    HOUR_MARGIN_MS,
                ],
            )
        )

    def release(self, slot: Slot) -> None:
        """Free the slot and wake one waiter for it, in one round trip (one script: the
        pipeline of its four commands cost 1.3-2x its client CPU, ~120-200 µs vs 94)."""
        keys = self._calls(slot.corp_id, slot.api, self.limits_for(slot.corp_id), 0.0)
        self._release(keys=keys.release_keys, args=[slot.member])

    def on_blocked(self, corp_id: str, api: str) -> float:
        """The vendor said 10053: pause this corp's calls everywhere. Returns the pause in
        seconds (the first block of a run is `block_s`, repeats double up to `block_max_s`;
        10053s from calls already in flight do not escalate a block already in force)."""
        key = self._key
        duration_ms = self._block(
            keys=[key(corp_id, api, "block"), key(corp_id, api, "blocklevel")],
            args=[self.block_ms, self.block_max_ms],
        )
        seconds, micros = self.client.time()
        until_ms = seconds * 1000 + micros / 1000 + float(duration_ms)
        self.client.zadd(f"{_PREFIX}:blocked:{api}", {corp_id: until_ms})
        return float(duration_ms) / 1000

    def pause(self, corp_id: str, api: str, seconds: float) -> None:
        """The vendor (or its gateway) asked us to wait (HTTP 429 with Retry-After): no
        process calls `api` for this corp until then, and the scheduler admits none of its
        jobs. Unlike a 10053 it does not escalate the next block."""
        until_ms = self._pause(keys=[self._key(corp_id, api, "block")], args=[seconds * 1000])
        self.client.zadd(f"{_PREFIX}:blocked:{api}", {corp_id: float(until_ms)})

    def blocked_corps(self, api: str) -> set[str]:
        """Every corp blocked on `api` right now: one call, whatever the number of corps
        (the scheduler admits none of their jobs)."""
        seconds, micros = self.client.time()
        now_ms = seconds * 1000 + micros / 1000
        members = self.client.zrangebyscore(f"{_PREFIX}:blocked:{api}", now_ms, "+inf")
        return {_text(member) for member in members}

    def on_busy(self, corp_id: str, api: str) -> int:
        """The vendor said 10052: someone else holds slots; lower our cap for a while."""
        limits = self.limits_for(corp_id)
        return int(
            self._lower_cap(
                keys=[self._key(corp_id, api, "cap")], args=[limits.max_in_flight, self.cap_hold_ms]
            )
        )

    def blocked_for(self, corp_id: str, api: str) -> float:
        """Seconds left of a block, 0 if none (for the scheduler and `status`)."""
        ttl = self.client.pttl(self._key(corp_id, api, "block"))
        return max(0.0, ttl / 1000)

    def in_flight(self, corp_id: str, api: str) -> int:
        key = self._key(corp_id, api, "inflight")
        now_ms = time.time() * 1000
        return int(self.client.zcount(key, now_ms, "+inf"))

    def calls_in_last(self, corp_id: str, api: str, seconds: float) -> int:
        """Calls whose bucket starts in the last `seconds` (to the bucket: for reports)."""
        seconds_now, micros = self.client.time()
        now_ms = seconds_now * 1000 + micros / 1000
        minute = seconds <= 60
        width = MINUTE_BUCKET_MS if minute else HOUR_BUCKET_MS
        entries = self.client.lrange(self._key(corp_id, api, "minute" if minute else "hour"), 0, -1)
        return bucket_sum(
            (_text(entry) for entry in entries), width, now_ms - seconds * 1000, now_ms
        )

    def memory_bytes(self, corp_id: str, api: str) -> int:
        """Redis memory this (corp, API) takes (`MEMORY USAGE` of each of its keys)."""
        total = 0
        for what in (
            "minute",
            "hour",
            "sums",
            "tat",
            "inflight",
            "freed",
            "cap",
            "block",
            "blocklevel",
        ):
            total += int(self.client.memory_usage(self._key(corp_id, api, what), samples=0) or 0)
        return total


def bucket_sum(entries: Iterable[str], width: int, since_ms: float, until_ms: float) -> int:
    """The calls of `index:calls` buckets whose start lies in [since_ms, until_ms]."""
    total = 0
    for entry in entries:
        index, calls = entry.split(":")
        if since_ms <= int(index) * width <= until_ms:
            total += int(calls)
    return total


def _verdict(reply: Any) -> tuple[str, float]:
    """A script's `{status, milliseconds}` reply."""
    status, value = reply
    return _text(status), float(value)


def _text(value: Any) -> str:
    """redis-py returns bytes here (no decode_responses); its types allow str too."""
    return value.decode() if isinstance(value, bytes) else str(value)
