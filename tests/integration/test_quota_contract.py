"""The quota's contract, run against every implementation: `RedisQuota` on a real Redis
(its clock is Redis's, so its runs are short: fast limits, blocks of a fraction of a
second) and `InMemoryQuota` on a fake clock whose `sleep` advances it (it never sleeps).

Assertions hold on either clock: on what is refused, on `retry_after_s` ranges, and on
`waited_s` within `slack_s` (none on the fake clock; a loaded machine's lateness on a real
one: lateness only makes waits shorter, so lower bounds on moments stay exact).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
import redis

from broadcaster.corps import QuotaLimits
from broadcaster.ports import Quota
from broadcaster.quota.limiter import QuotaWait, RedisQuota, interval_ms
from broadcaster.quota.memory import InMemoryQuota

CORP, API = "corp", "api"
FAST = QuotaLimits(per_minute=60000, max_in_flight=100)
"""A pace of about a millisecond: nothing waits for it."""
BLOCK_S, BLOCK_MAX_S, CAP_HOLD_S = 0.2, 0.5, 0.3
TICK_S = 0.01
"""Past an edge: on a real clock, waiting exactly to an expiry is a coin toss."""


class QuotaUnderTest(Quota, Protocol):
    def blocked_for(self, corp_id: str, api: str) -> float: ...

    def in_flight(self, corp_id: str, api: str) -> int: ...

    def calls_in_last(self, corp_id: str, api: str, seconds: float) -> int: ...


Limits = QuotaLimits | Callable[[str], QuotaLimits]


@dataclass
class Harness:
    build: Callable[..., QuotaUnderTest]
    elapse: Callable[[float], None]
    """Let this much time pass on the quota's clock."""
    now: Callable[[], float]
    """The quota's clock, in seconds."""
    slack_s: float
    """How much later than due a real clock may hand out a slot."""

    def make(self, limits: Limits, *, lease_s: float = 15, **options: float) -> QuotaUnderTest:
        limits_for = limits if callable(limits) else (lambda _corp: limits)
        settings: dict[str, Any] = {
            "slot_lease_s": lease_s,
            "block_s": BLOCK_S,
            "block_max_s": BLOCK_MAX_S,
            "cap_hold_s": CAP_HOLD_S,
        }
        return self.build(limits_for, **{**settings, **options})


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


@pytest.fixture(params=["memory", "redis"])
def harness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()

        def no_sleeping(seconds: float) -> None:
            raise AssertionError(f"the in-memory quota slept {seconds}s on the real clock")

        monkeypatch.setattr(time, "sleep", no_sleeping)

        def build_memory(limits_for: Callable[[str], QuotaLimits], **kw: Any) -> InMemoryQuota:
            return InMemoryQuota(limits_for, clock=clock.now, sleep=clock.sleep, **kw)

        yield Harness(build_memory, clock.sleep, clock.now, slack_s=1e-9)
        return
    client: redis.Redis = request.getfixturevalue("redis_client")

    def build_redis(limits_for: Callable[[str], QuotaLimits], **kw: Any) -> RedisQuota:
        return RedisQuota(client, limits_for, **kw)

    def redis_now() -> float:
        seconds, micros = client.time()
        return seconds + micros / 1e6

    yield Harness(build_redis, time.sleep, redis_now, slack_s=0.5)


def test_calls_are_spaced_by_the_interval(harness: Harness) -> None:
    """After an idle spell the reservation tolerates one interval (`tat` moves to
    `max(tat, at - interval) + interval`): two calls go at once, then one per interval."""
    limits = QuotaLimits(per_minute=1200, max_in_flight=100)
    interval = interval_ms(limits) / 1000
    quota = harness.make(limits)
    start = harness.now()
    moments, waits = [], []
    for _ in range(8):
        slot = quota.acquire(CORP, API, max_wait_s=1)
        moments.append(harness.now())
        waits.append(slot.waited_s)
        quota.release(slot)
    for k, moment in enumerate(moments[1:], start=1):
        assert moment - start >= (k - 1) * interval - 0.001, f"call {k} came before its moment"
    assert waits[0] <= harness.slack_s and waits[1] <= harness.slack_s
    for wait in waits[2:]:
        assert interval - harness.slack_s <= wait <= interval + harness.slack_s
    assert quota.calls_in_last(CORP, API, 60) == 8


def test_the_per_minute_window_is_a_hard_cap(harness: Harness) -> None:
    current = {"limits": FAST}
    quota = harness.make(lambda _corp: current["limits"])
    for _ in range(5):
        quota.release(quota.acquire(CORP, API, max_wait_s=1))
    # The corp's quota is lowered to 5 a minute: the pace (12 s apart) would let the next
    # call go now, since none was paced at that rate; the window refuses it, however
    # patient the caller, until the first of the five leaves the minute (+ margin).
    current["limits"] = QuotaLimits(per_minute=5, max_in_flight=100)
    with pytest.raises(QuotaWait) as waited:
        quota.acquire(CORP, API, max_wait_s=120)
    assert not waited.value.blocked
    assert 59 < waited.value.retry_after_s <= 60.201
    assert quota.calls_in_last(CORP, API, 60) == 5, "the refused call is not counted"


def test_the_hour_window_is_a_hard_cap(harness: Harness) -> None:
    quota = harness.make(QuotaLimits(per_minute=6000, per_hour=3))
    for _ in range(3):
        quota.release(quota.acquire(CORP, API, max_wait_s=1))
    with pytest.raises(QuotaWait) as waited:
        quota.acquire(CORP, API, max_wait_s=1)
    assert not waited.value.blocked and 3590 < waited.value.retry_after_s <= 3601


def test_in_flight_is_capped_and_a_release_frees_a_slot(harness: Harness) -> None:
    quota = harness.make(QuotaLimits(per_minute=60000, max_in_flight=2))
    first = quota.acquire(CORP, API, max_wait_s=1)
    quota.acquire(CORP, API, max_wait_s=1)
    assert quota.in_flight(CORP, API) == 2
    with pytest.raises(QuotaWait) as waited:
        quota.acquire(CORP, API, max_wait_s=0.05)
    assert not waited.value.blocked and waited.value.retry_after_s == 0.5
    quota.release(first)
    assert quota.in_flight(CORP, API) == 1
    quota.acquire(CORP, API, max_wait_s=1)
    assert quota.in_flight(CORP, API) == 2


def test_a_slot_never_released_expires_with_its_lease(harness: Harness) -> None:
    quota = harness.make(QuotaLimits(per_minute=60000, max_in_flight=1), lease_s=0.3)
    quota.acquire(CORP, API, max_wait_s=1)  # never released: the worker "died"
    with pytest.raises(QuotaWait):
        quota.acquire(CORP, API, max_wait_s=0.05)
    assert quota.in_flight(CORP, API) == 1
    harness.elapse(0.3)
    assert quota.in_flight(CORP, API) == 0
    slot = quota.acquire(CORP, API, max_wait_s=1)
    assert slot.waited_s <= 0.002 + harness.slack_s


def test_a_block_starts_at_block_s_doubles_on_repeats_and_is_capped(harness: Harness) -> None:
    quota = harness.make(FAST)
    assert quota.on_blocked(CORP, API) == pytest.approx(BLOCK_S)
    during = quota.on_blocked(CORP, API)
    assert 0 < during <= BLOCK_S, "a 10053 during the block neither extends nor escalates it"
    assert 0 < quota.blocked_for(CORP, API) <= BLOCK_S
    with pytest.raises(QuotaWait) as waited:
        quota.acquire(CORP, API, max_wait_s=5)
    assert waited.value.blocked and 0 < waited.value.retry_after_s <= BLOCK_S
    harness.elapse(BLOCK_S + TICK_S)
    assert quota.blocked_for(CORP, API) == 0
    quota.release(quota.acquire(CORP, API, max_wait_s=1))  # flowing again
    assert quota.on_blocked(CORP, API) == pytest.approx(2 * BLOCK_S), "the second block of a run"
    harness.elapse(2 * BLOCK_S + TICK_S)
    assert quota.on_blocked(CORP, API) == pytest.approx(BLOCK_MAX_S), "doubling is capped"


def test_a_pause_extends_a_block_never_shortens_it_and_does_not_escalate(
    harness: Harness,
) -> None:
    quota = harness.make(FAST)
    quota.pause(CORP, API, 0.1)
    with pytest.raises(QuotaWait) as waited:
        quota.acquire(CORP, API, max_wait_s=5)
    assert waited.value.blocked and 0 < waited.value.retry_after_s <= 0.1
    harness.elapse(0.1 + TICK_S)
    assert quota.blocked_corps(API) == set()
    assert quota.on_blocked(CORP, API) == pytest.approx(BLOCK_S), "the pause was no 10053"
    quota.pause(CORP, API, 1.0)
    assert 0.5 < quota.blocked_for(CORP, API) <= 1.0, "a longer pause extends the block"
    quota.pause(CORP, API, 0.1)
    assert quota.blocked_for(CORP, API) > 0.5, "a shorter pause does not shorten it"
    assert quota.on_blocked(CORP, API) > 0.5, "a 10053 during the pause returns what is left"
    with pytest.raises(QuotaWait) as waited:
        quota.acquire(CORP, API, max_wait_s=5)
    assert waited.value.blocked and 0.5 < waited.value.retry_after_s <= 1.0


def test_busy_lowers_the_in_flight_cap_for_a_while(harness: Harness) -> None:
    quota = harness.make(QuotaLimits(per_minute=60000, max_in_flight=2))
    assert quota.on_busy(CORP, API) == 1
    assert quota.on_busy(CORP, API) == 1, "never below one"
    quota.acquire(CORP, API, max_wait_s=1)
    with pytest.raises(QuotaWait) as waited:
        quota.acquire(CORP, API, max_wait_s=0.05)
    assert not waited.value.blocked
    harness.elapse(CAP_HOLD_S)
    quota.acquire(CORP, API, max_wait_s=1)  # the hold is over: two in flight again
    assert quota.in_flight(CORP, API) == 2


def test_blocked_corps_names_each_corp_blocked_on_that_api(harness: Harness) -> None:
    quota = harness.make(FAST)
    assert quota.blocked_corps(API) == set()
    quota.on_blocked("corp-a", API)
    quota.pause("corp-b", API, 0.6)
    quota.on_blocked("corp-c", "other-api")
    assert quota.blocked_corps(API) == {"corp-a", "corp-b"}
    assert quota.blocked_corps("other-api") == {"corp-c"}
    harness.elapse(BLOCK_S + TICK_S)
    assert quota.blocked_corps(API) == {"corp-b"}
    harness.elapse(0.4)
    assert quota.blocked_corps(API) == set()


def test_quota_wait_when_the_next_moment_is_beyond_the_callers_patience(
    harness: Harness,
) -> None:
    limits = QuotaLimits(per_minute=600, max_in_flight=10)
    interval = interval_ms(limits) / 1000  # about 100 ms
    quota = harness.make(limits)
    for _ in range(2):  # the two an idle quota lets go at once
        quota.release(quota.acquire(CORP, API, max_wait_s=1))
    with pytest.raises(QuotaWait) as waited:
        quota.acquire(CORP, API, max_wait_s=0.05)
    assert not waited.value.blocked
    assert 0.05 < waited.value.retry_after_s <= interval + 1e-6
    assert interval - waited.value.retry_after_s <= harness.slack_s
    slot = quota.acquire(CORP, API, max_wait_s=1)  # the refusal took no moment
    assert slot.waited_s <= interval + harness.slack_s
    assert interval - slot.waited_s <= harness.slack_s
    quota.release(slot)
    assert quota.calls_in_last(CORP, API, 60) == 3


def test_a_blocked_corp_is_refused_at_once_however_patient_the_caller(
    harness: Harness,
) -> None:
    quota = harness.make(FAST)
    quota.on_blocked(CORP, API)
    started = harness.now()
    with pytest.raises(QuotaWait) as waited:
        quota.acquire(CORP, API, max_wait_s=60)
    assert waited.value.blocked and 0 < waited.value.retry_after_s <= BLOCK_S
    assert harness.now() - started < BLOCK_S, "refused, not waited out"
    assert quota.calls_in_last(CORP, API, 60) == 0
