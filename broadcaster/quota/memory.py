"""The vendor quota for one process, in plain Python: what `RedisQuota` decides in Lua on
Redis's clock, decided here under a lock on an injected clock.

For unit tests (a fake clock whose `sleep` advances it: nothing ever sleeps) and for a
single-process setup. Every rule is `RedisQuota`'s, and one contract test suite
(tests/integration/test_quota_contract.py) runs against both, so this one cannot drift:

- pace: a GCRA reservation, one call per `interval_ms(limits)`;
- windows: counts per 100 ms and per second, counted while a bucket's start lies in the
  window widened by its margin, refuse a call that would make more than the usable
  per-minute count in any sliding 60 s, or the per-hour count in any hour;
- in flight: at most `max_in_flight` leased slots (10052 lowers the cap for a while);
- block: 10053 pauses the (corp, API), `block_s` doubling on repeats up to `block_max_s`;
  a 429 `pause` extends a block and never shortens it, without escalating.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broadcaster.corps import QuotaLimits
from broadcaster.quota.limiter import (
    HOUR_BUCKET_MS,
    HOUR_MARGIN_MS,
    MINUTE_BUCKET_MS,
    WINDOW_MARGIN_MS,
    QuotaRules,
    Slot,
    interval_ms,
    wait_for_slot,
)

_HOUR_MS = 3_600_000
_MINUTE_MS = 60_000
_LEVEL_MEMORY_MS = 600_000
"""A 10053 run's level is forgotten this long after its last block ends (as in Redis)."""


@dataclass
class _Window:
    """Call counts per bucket of `width` ms, oldest first, and their sum (RedisQuota's
    `minute` or `hour` list with its field of `sums`)."""

    width: int
    buckets: deque[list[int]] = field(default_factory=deque)  # [index, calls]
    total: int = 0

    def prune(self, cutoff: float) -> float | None:
        """Drop buckets starting at or before `cutoff`; the oldest start left, if any."""
        while self.buckets:
            index, calls = self.buckets[0]
            if index * self.width > cutoff:
                return float(index * self.width)
            self.buckets.popleft()
            self.total -= calls
        return None

    def record(self, at: float) -> None:
        index = math.floor(at / self.width)
        if self.buckets and self.buckets[-1][0] == index:
            self.buckets[-1][1] += 1
        else:
            self.buckets.append([index, 1])
        self.total += 1

    def calls_between(self, since: float, until: float) -> int:
        return sum(c for i, c in self.buckets if since <= i * self.width <= until)


@dataclass
class _State:
    """One (corp, API): what RedisQuota keeps under its keys."""

    minute: _Window = field(default_factory=lambda: _Window(MINUTE_BUCKET_MS))
    hour: _Window = field(default_factory=lambda: _Window(HOUR_BUCKET_MS))
    tat: float = 0.0  # the next free paced moment
    block_until: float = 0.0
    level: int = 0
    level_until: float = 0.0
    in_flight: dict[str, float] = field(default_factory=dict)  # member -> lease end
    cap: int | None = None
    cap_until: float = 0.0

    def prune_in_flight(self, now: float) -> None:
        self.in_flight = {m: end for m, end in self.in_flight.items() if end > now}

    def cap_now(self, now: float, max_in_flight: int) -> int:
        if self.cap is None or self.cap_until <= now:
            return max_in_flight
        return min(max_in_flight, self.cap)


class InMemoryQuota(QuotaRules):
    """`Quota` for one process; thread-safe. `clock` is in seconds; `rules` as
    `QuotaRules`."""

    def __init__(
        self,
        limits_for: Callable[[str], QuotaLimits],
        *,
        clock: Callable[[], float] = time.monotonic,
        **rules: Any,
    ) -> None:
        super().__init__(limits_for, **rules)
        self.clock = clock
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], _State] = {}
        self._blocked: dict[str, dict[str, float]] = {}  # api -> corp -> until (ms)

    def _now_ms(self) -> float:
        return self.clock() * 1000

    def _state(self, corp_id: str, api: str) -> _State:
        return self._states.setdefault((corp_id, api), _State())

    def acquire(self, corp_id: str, api: str, *, max_wait_s: float) -> Slot:
        """Reserve the next paced moment, sleep until it, then take an in-flight slot.
        Raises `QuotaWait` instead of waiting longer than `max_wait_s`."""
        limits = self.limits_for(corp_id)
        member = uuid.uuid4().hex
        with self._lock:
            state = self._state(corp_id, api)

        def reserve() -> tuple[str, float]:
            with self._lock:
                return self._reserve(state, limits, member, max_wait_s * 1000)

        def take_slot() -> tuple[str, float]:
            with self._lock:
                return self._take_slot(state, limits, member, self._now_ms())

        waited_s = wait_for_slot(
            reserve, take_slot, max_wait_s=max_wait_s, clock=self.clock, sleep=self.sleep
        )
        return Slot(corp_id, api, member, waited_s)

    def _reserve(
        self, state: _State, limits: QuotaLimits, member: str, max_wait_ms: float
    ) -> tuple[str, float]:
        now = self._now_ms()
        if state.block_until > now:
            return "blocked", state.block_until - now
        at = max(state.tat, now)
        if at - now > max_wait_ms:
            return "wait", at - now
        margin = WINDOW_MARGIN_MS
        first = state.minute.prune(at - _MINUTE_MS - margin)
        if first is not None and state.minute.total >= limits.usable_per_minute:
            return "wait", first + _MINUTE_MS + margin - now + 1
        first = state.hour.prune(at - _HOUR_MS - HOUR_MARGIN_MS)
        if first is not None and state.hour.total >= limits.usable_per_hour:
            return "wait", first + _HOUR_MS + HOUR_MARGIN_MS - now + 1
        state.minute.record(at)
        state.hour.record(at)
        interval = interval_ms(limits)
        state.tat = max(state.tat, at - interval) + interval
        if at <= now and self._take_slot(state, limits, member, now)[0] == "ok":
            return "slot", 0.0  # due at once: the in-flight slot is taken too
        return "ok", at - now

    def _take_slot(
        self, state: _State, limits: QuotaLimits, member: str, now: float
    ) -> tuple[str, float]:
        if state.block_until > now:
            return "blocked", state.block_until - now
        state.prune_in_flight(now)
        if len(state.in_flight) >= state.cap_now(now, limits.max_in_flight):
            return "busy", 0.0
        state.in_flight[member] = now + self.slot_lease_ms
        return "ok", 0.0

    def release(self, slot: Slot) -> None:
        with self._lock:
            self._state(slot.corp_id, slot.api).in_flight.pop(slot.member, None)

    def on_blocked(self, corp_id: str, api: str) -> float:
        """The vendor said 10053: pause this corp's calls. Returns the pause in seconds
        (`block_s`, doubling on repeats up to `block_max_s`; a 10053 during a block in
        force returns what is left of it and does not escalate)."""
        with self._lock:
            now = self._now_ms()
            state = self._state(corp_id, api)
            if state.block_until > now:
                return (state.block_until - now) / 1000
            state.level = state.level + 1 if state.level_until > now else 1
            duration = min(self.block_ms * 2 ** (state.level - 1), self.block_max_ms)
            state.block_until = now + duration
            state.level_until = now + math.ceil(duration) + _LEVEL_MEMORY_MS
            self._blocked.setdefault(api, {})[corp_id] = state.block_until
            return duration / 1000

    def pause(self, corp_id: str, api: str, seconds: float) -> None:
        """The vendor asked us to wait (HTTP 429 Retry-After): extends a block in force,
        never shortens it, and does not escalate the next 10053."""
        with self._lock:
            now = self._now_ms()
            state = self._state(corp_id, api)
            state.block_until = max(state.block_until, now + seconds * 1000)
            self._blocked.setdefault(api, {})[corp_id] = state.block_until

    def blocked_corps(self, api: str) -> set[str]:
        """Every corp blocked on `api` right now."""
        with self._lock:
            now = self._now_ms()
            return {corp for corp, until in self._blocked.get(api, {}).items() if until >= now}

    def on_busy(self, corp_id: str, api: str) -> int:
        """The vendor said 10052: lower our in-flight cap by one (never below one) for
        `cap_hold_s`."""
        max_in_flight = self.limits_for(corp_id).max_in_flight
        with self._lock:
            now = self._now_ms()
            state = self._state(corp_id, api)
            state.cap = max(1, state.cap_now(now, max_in_flight) - 1)
            state.cap_until = now + self.cap_hold_ms
            return state.cap

    def blocked_for(self, corp_id: str, api: str) -> float:
        """Seconds left of a block, 0 if none."""
        with self._lock:
            return max(0.0, (self._state(corp_id, api).block_until - self._now_ms()) / 1000)

    def in_flight(self, corp_id: str, api: str) -> int:
        with self._lock:
            now = self._now_ms()
            return sum(1 for end in self._state(corp_id, api).in_flight.values() if end >= now)

    def calls_in_last(self, corp_id: str, api: str, seconds: float) -> int:
        with self._lock:
            now = self._now_ms()
            state = self._state(corp_id, api)
            window = state.minute if seconds <= 60 else state.hour
            return window.calls_between(now - seconds * 1000, now)
