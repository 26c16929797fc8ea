"""The Redis quota limiter under real load: threads racing for slots, two processes
sharing a block, `QuotaWait` through `slot`. The rules themselves (pace, windows, leases,
blocks, pauses, the busy cap) are in test_quota_contract.py, run against both quotas."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from broadcaster.corps import QuotaLimits
from broadcaster.quota.limiter import QuotaWait, RedisQuota


def make_quota(client: redis.Redis, lease_s: float = 15, **limits: float) -> RedisQuota:
    quota_limits = QuotaLimits(**limits)  # type: ignore[arg-type]
    return RedisQuota(
        client, lambda _corp: quota_limits, slot_lease_s=lease_s, block_s=1.0, block_max_s=4.0
    )


def hammer(quota: RedisQuota, calls: int, threads: int, hold_s: float) -> tuple[list[float], int]:
    """`threads` callers take `calls` slots between them; returns start times, peak in-flight."""
    starts: list[float] = []
    lock = threading.Lock()
    state = {"in_flight": 0, "peak": 0}

    def caller() -> None:
        while True:
            with lock:
                if len(starts) >= calls:
                    return
            try:
                with quota.slot("corp", "api", max_wait_s=2):
                    with lock:
                        starts.append(time.monotonic())
                        state["in_flight"] += 1
                        state["peak"] = max(state["peak"], state["in_flight"])
                    time.sleep(hold_s)
                    with lock:
                        state["in_flight"] -= 1
            except QuotaWait as wait:
                time.sleep(wait.retry_after_s)

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sorted(starts)[:calls], state["peak"]


def test_calls_are_paced_evenly_at_the_per_minute_rate(redis_client: redis.Redis) -> None:
    quota = make_quota(redis_client, per_minute=3000, max_in_flight=4)
    starts, peak = hammer(quota, calls=200, threads=16, hold_s=0.01)
    assert len(starts) == 200 and peak <= 4
    # The moments each call was given, on Redis's clock: what the limiter decided, free of
    # the thread wake-up jitter a loaded machine adds to when the callers saw them.
    given = sorted(
        score / 1000
        for _member, score in redis_client.zrange(
            quota._key("corp", "api", "log"), 0, -1, withscores=True
        )
    )
    rate = (len(given) - 1) / (given[-1] - given[0])
    assert 0.97 * 50 <= rate <= 50.5, f"{rate:.2f}/s against 50/s allowed"
    worst_second = max(sum(1 for t in given if s <= t < s + 1) for s in given)
    assert worst_second <= 51, "no bursts: any one second holds about 50 calls"


def test_in_flight_never_exceeds_the_cap(redis_client: redis.Redis) -> None:
    quota = make_quota(redis_client, per_minute=60000, max_in_flight=4)
    _starts, peak = hammer(quota, calls=80, threads=12, hold_s=0.05)
    assert peak == 4


def test_a_vendor_block_pauses_every_caller_and_escalates_on_repeats(
    redis_client: redis.Redis, redis_url: str
) -> None:
    quota = make_quota(redis_client, per_minute=6000)
    other_process = make_quota(redis.Redis.from_url(redis_url), per_minute=6000)
    assert quota.on_blocked("corp", "api") == pytest.approx(1.0)
    assert quota.on_blocked("corp", "api") < 1.0, "a 10053 during the block does not extend it"
    with pytest.raises(QuotaWait) as waited:
        other_process.acquire("corp", "api", max_wait_s=5)
    assert waited.value.blocked and 0 < waited.value.retry_after_s <= 1.0
    time.sleep(1.05)
    quota.release(quota.acquire("corp", "api", max_wait_s=1))  # block over: flowing again
    assert quota.on_blocked("corp", "api") == pytest.approx(2.0), "a repeat doubles"
    assert quota.blocked_for("corp", "api") > 1.5


def test_quota_wait_raised_inside_a_slot_propagates_as_itself(redis_client: redis.Redis) -> None:
    """Regression: as a frozen dataclass, QuotaWait raised through the `slot` context
    manager became FrozenInstanceError on Python 3.11 (contextlib sets `__traceback__`)."""
    quota = make_quota(redis_client, per_minute=60000, max_in_flight=1)
    with pytest.raises(QuotaWait) as waited, quota.slot("corp", "api", max_wait_s=1):
        quota.acquire("corp", "api", max_wait_s=0.1)  # the one slot is held by the `with`
    assert waited.type is QuotaWait and not waited.value.blocked
    assert waited.value.retry_after_s == 0.5
    quota.release(quota.acquire("corp", "api", max_wait_s=1))  # the `with` released its slot


def test_quota_wait_from_a_blocked_slot_propagates_as_itself(redis_client: redis.Redis) -> None:
    quota = make_quota(redis_client, per_minute=60000)
    quota.on_blocked("corp", "api")
    with pytest.raises(QuotaWait) as waited, quota.slot("corp", "api", max_wait_s=1):
        pytest.fail("no slot while the corp is blocked")
    assert waited.value.blocked and 0 < waited.value.retry_after_s <= 1.0
