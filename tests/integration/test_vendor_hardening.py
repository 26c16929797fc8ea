"""The vendor client against an odd vendor over real HTTP, and what its answers do to the
job and the quota: one deadline per call, a late answer kept, a 429 obeyed everywhere,
tokens sealed in Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import redis

from broadcaster import schedule_broadcast
from broadcaster.corps import CorpDirectory, QuotaLimits
from broadcaster.errors import OutcomeUnknown
from broadcaster.jobs.policy import Decision
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.quota.limiter import QuotaWait, RedisQuota
from broadcaster.timeutil import utcnow
from broadcaster.vendor import CREATE_API, WeibanClient, slot_lease_s
from broadcaster.vendor.deadline import deadline_scope, deadline_transport
from tests.conftest import make_settings
from tests.helpers import body
from tests.misbehaving_vendor import SECRET, MisbehavingVendor


@pytest.fixture
def odd_vendor() -> Iterator[MisbehavingVendor]:
    server = MisbehavingVendor(trickle_interval_s=0.2).start()
    yield server
    server.stop()


def client_for(url: str, redis_client: redis.Redis, secret: str = SECRET) -> WeibanClient:
    settings = make_settings(weiban_corp_id="corp-a", weiban_secret=secret, weiban_base_url=url)
    return WeibanClient(url, CorpDirectory(settings), redis_client, timeout_s=1.0)


def test_a_trickling_answer_is_cut_at_the_deadline_not_at_each_byte(
    odd_vendor: MisbehavingVendor, redis_client: redis.Redis
) -> None:
    client = client_for(odd_vendor.url, redis_client)
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown, match="within the call's 1 s"):
        client.create_group_message("corp-a", json.dumps(body(name="case:trickle:0")))
    elapsed = time.monotonic() - started
    # The trickle would take 40 s; the exchange is cut at WEIBAN_TIMEOUT_S (1 s). The bound
    # leaves room for a loaded machine and is still far below the slot's lease (7 s).
    assert elapsed < 3.0 < slot_lease_s(1.0)
    # the client is usable afterwards: the cut connection was dropped, not reused
    client.create_group_message("corp-a", json.dumps(body(name="after")))
    assert odd_vendor.record.created == ["after"]


def test_the_deadline_is_on_the_whole_call_not_on_each_socket_operation() -> None:
    """Without the deadline backend the same trickle runs for as long as it trickles."""
    transport = deadline_transport()
    assert type(transport._pool._network_backend).__name__ == "DeadlineBackend"
    vendor = MisbehavingVendor(trickle_interval_s=0.05).start()
    try:
        with httpx.Client(transport=transport, timeout=5) as http:
            started = time.monotonic()
            with deadline_scope(0.5), pytest.raises(httpx.ReadTimeout):
                http.post(
                    f"{vendor.url}/open-api/customer_group_msg/add",
                    json=body(name="case:trickle:1"),
                )
            assert time.monotonic() - started < 2.5, "cut at 0.5 s, not after the 10 s trickle"
    finally:
        vendor.stop()


def test_tokens_are_sealed_in_redis_and_open_only_with_the_secret(
    odd_vendor: MisbehavingVendor, redis_client: redis.Redis
) -> None:
    client = client_for(odd_vendor.url, redis_client)
    client.create_group_message("corp-a", json.dumps(body(name="first")))
    [token] = odd_vendor.record.tokens_issued
    stored = b"".join(
        redis_client.get(key) or b""
        for key in redis_client.scan_iter("broadcaster:weiban:*")
        if redis_client.type(key) == b"string"
    )
    assert stored and token.encode() not in stored
    client_for(odd_vendor.url, redis_client).create_group_message(
        "corp-a", json.dumps(body(name="second"))
    )
    assert len(odd_vendor.record.tokens_issued) == 1, "another process opened the sealed token"
    rotated = client_for(odd_vendor.url, redis_client, secret="rotated-secret-123")
    rotated.create_group_message("corp-a", json.dumps(body(name="third")))
    assert len(odd_vendor.record.tokens_issued) == 2, "a new secret cannot open the old seal"


def test_a_pause_asked_for_by_429_holds_every_caller_and_does_not_escalate(
    redis_client: redis.Redis,
) -> None:
    limits = QuotaLimits()
    quota = RedisQuota(redis_client, lambda _c: limits, slot_lease_s=7, block_s=60)
    quota.pause("corp-a", CREATE_API, 2.0)
    with pytest.raises(QuotaWait) as wait:
        quota.acquire("corp-a", CREATE_API, max_wait_s=0.1)
    assert wait.value.blocked and 1.0 < wait.value.retry_after_s <= 2.0
    assert quota.blocked_corps(CREATE_API) == {"corp-a"}
    quota.pause("corp-a", CREATE_API, 0.5)  # a shorter pause never shortens one in force
    assert quota.blocked_for("corp-a", CREATE_API) > 1.0
    assert quota.on_blocked("corp-a", CREATE_API) < 3, "a 10053 meanwhile keeps the pause"
    assert redis_client.get(quota._key("corp-a", CREATE_API, "blocklevel")) is None


def test_a_late_answer_for_a_job_already_unknown_settles_it(store: JobStore) -> None:
    job_id = schedule_broadcast(body(), store=store, corp_id="corp-a").job_ids[0]
    now = utcnow()
    store.claim_due(now, 10, 60)
    job = store.start_sending(job_id, now, lease_s=5)
    assert job is not None
    assert store.recover(now + timedelta(seconds=6), 60).unknown == [job_id]
    sent = Decision(JobStatus.SENT, "sent", True)
    store.finish(job, sent, now + timedelta(seconds=7), now, duration_ms=7000)
    row = store.get(job_id)
    assert (row.status, row.attempts, row.sent_at is not None) == ("sent", 1, True)
    assert [a.outcome for a in store.attempts_of(job_id)] == ["sent"]
