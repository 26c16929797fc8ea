"""The actor's body against a real database, Redis and the sandbox over HTTP."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis

from broadcaster import schedule_broadcast
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.timeutil import utcnow
from tests.conftest import make_settings
from tests.helpers import body
from worker.app import build_sender
from worker.sender import Sender


def sender_for(db_url: str, redis_url: str, vendor_url: str, **settings: Any) -> Sender:
    config = make_settings(
        database_url=db_url,
        redis_url=redis_url,
        weiban_base_url=vendor_url,
        weiban_corp_id="corp-a",
        weiban_secret="sandbox-secret",
        weiban_block_s=2,
        retry_base_s=0.01,
        **settings,
    )
    return build_sender(config)[0]


def queued_job(store: JobStore, **job: Any) -> int:
    job_id = schedule_broadcast(
        body(**job.pop("body", {})), store=store, corp_id="corp-a", **job
    ).job_ids[0]
    assert [j.id for j in store.claim_due(utcnow(), 10, 60).claimed] == [job_id]
    return job_id


def test_a_job_is_sent_once_and_its_attempt_recorded(
    db_url: str,
    store: JobStore,
    redis_url: str,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    job_id = queued_job(store, body={"name": "once"})
    sender = sender_for(db_url, redis_url, sandbox.url)
    assert sender.send(job_id) == "sent"
    assert sender.send(job_id) == "ignored", "a second delivery of the message sends nothing"
    job = store.get(job_id)
    assert (job.status, job.attempts, job.sent_at is not None) == (JobStatus.SENT, 1, True)
    assert [a.outcome for a in store.attempts_of(job_id)] == ["sent"]
    assert [c["body"]["name"] for c in sandbox.state.created_list()] == ["once"]


def test_duplicate_messages_racing_send_exactly_once(
    db_url: str,
    store: JobStore,
    redis_url: str,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    job_id = queued_job(store)
    senders = [sender_for(db_url, redis_url, sandbox.url) for _ in range(6)]
    results: list[str] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.send(job_id))) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ignored"] * 5 + ["sent"]
    assert sandbox.state.stats()["created"] == 1


def test_a_business_error_fails_the_job_with_errcode_and_errmsg(
    db_url: str,
    engine,
    store: JobStore,
    redis_url: str,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    from sqlalchemy import update

    from broadcaster.jobs.tables import jobs

    job_id = queued_job(store)
    with engine.begin() as connection:  # a body the vendor refuses (it passed our checks once)
        connection.execute(update(jobs).values(payload=json.dumps({"name": "x"})))
    assert sender_for(db_url, redis_url, sandbox.url).send(job_id) == "rejected"
    job = store.get(job_id)
    assert (job.status, job.last_errcode) == (JobStatus.FAILED, 20001)
    assert "参数错误" in job.last_error


def test_an_ambiguous_outcome_becomes_unknown_and_is_never_resent(
    db_url: str,
    store: JobStore,
    redis_url: str,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    job_id = queued_job(store)
    sandbox.state.faults.hang_after_create = 1
    sandbox.state.faults.hang_s = 3
    sender = sender_for(db_url, redis_url, sandbox.url, weiban_timeout_s=1)
    assert sender.send(job_id) == "ambiguous"
    job = store.get(job_id)
    assert job.status == JobStatus.UNKNOWN and "ReadTimeout" in job.last_error
    assert sender.send(job_id) == "ignored"
    assert sandbox.state.stats()["created"] == 1


def test_a_5xx_is_ambiguous_too(
    db_url: str,
    store: JobStore,
    redis_url: str,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    job_id = queued_job(store)
    sandbox.state.faults.http_5xx = 1
    assert sender_for(db_url, redis_url, sandbox.url).send(job_id) == "ambiguous"
    assert store.get(job_id).status == JobStatus.UNKNOWN


def test_a_crash_inside_the_vendor_call_is_unknown_not_a_stuck_sending_job(
    db_url: str,
    store: JobStore,
    redis_url: str,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    """An exception nobody foresaw, after the call may have begun: the outcome is unknown
    at once, recorded with its type, instead of a job left `sending` until its lease ends."""

    class Crashing:
        def create_group_message(self, corp_id: str, body: str) -> None:
            raise RuntimeError("decoder fell over")

    job_id = queued_job(store)
    sender = sender_for(db_url, redis_url, sandbox.url)
    sender.vendor = Crashing()
    assert sender.send(job_id) == "ambiguous"
    job = store.get(job_id)
    assert job.status == JobStatus.UNKNOWN
    assert "RuntimeError: decoder fell over" in job.last_error


def test_a_refused_connection_is_retried_then_sent(
    db_url: str,
    store: JobStore,
    redis_url: str,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    job_id = queued_job(store)
    down = sender_for(db_url, redis_url, "http://127.0.0.1:9")
    assert down.send(job_id) == "not_sent"
    job = store.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.SCHEDULED, 1)
    assert job.not_before > utcnow() - __import__("datetime").timedelta(seconds=1)
    assert store.claim_due(job.not_before, 10, 60).claimed  # due again after its backoff
    assert sender_for(db_url, redis_url, sandbox.url).send(job_id) == "sent"
    assert store.get(job_id).attempts == 2
    assert [a.outcome for a in store.attempts_of(job_id)] == ["not_sent", "sent"]


def test_attempts_run_out_into_failed(
    db_url: str,
    store: JobStore,
    redis_url: str,  # type: ignore[no-untyped-def]
) -> None:
    job_id = queued_job(store, max_attempts=2)
    down = sender_for(db_url, redis_url, "http://127.0.0.1:9")
    down.send(job_id)
    store.claim_due(store.get(job_id).not_before, 10, 60)
    down.send(job_id)
    job = store.get(job_id)
    assert job.status == JobStatus.FAILED and "gave up after 2 attempts" in job.last_error


def test_10053_pauses_the_corp_and_uses_no_attempt(
    db_url: str,
    store: JobStore,
    redis_url: str,
    redis_client: redis.Redis,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    first, second = queued_job(store), queued_job(store)
    sandbox.state.faults.force_10053 = 1
    sandbox.state.config.block_s = 2
    sender = sender_for(db_url, redis_url, sandbox.url)
    assert sender.send(first) == "blocked"
    job = store.get(first)
    assert (job.status, job.attempts, job.last_errcode) == (JobStatus.SCHEDULED, 0, 10053)
    assert 1.5 < (job.not_before - utcnow()).total_seconds() < 3.5
    calls_before = sandbox.state.calls
    assert sender.send(second) == "blocked", "the pause holds every caller back"
    assert sandbox.state.calls == calls_before, "no vendor call during the block"
    assert store.get(second).attempts == 0


def test_10052_lowers_the_cap_and_uses_no_attempt(
    db_url: str,
    store: JobStore,
    redis_url: str,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    job_id = queued_job(store)
    sandbox.state.config.max_in_flight = 0  # another app of the corp holds every slot
    sender = sender_for(db_url, redis_url, sandbox.url)
    assert sender.send(job_id) == "busy"
    job = store.get(job_id)
    assert (job.status, job.attempts, job.last_errcode) == (JobStatus.SCHEDULED, 0, 10052)
    # the 10052 took the cap from 4 to 3; the next one takes it to 2
    assert sender.quota.on_busy("corp-a", "customer_group_msg/add") == 2


@pytest.mark.parametrize("status", ["cancelled", "sent", "failed"])
def test_a_message_for_a_finished_or_cancelled_job_does_nothing(
    db_url: str,
    store: JobStore,
    redis_url: str,
    sandbox,
    status: str,  # type: ignore[no-untyped-def]
) -> None:
    job_id = queued_job(store)
    from sqlalchemy import update

    from broadcaster.jobs.tables import jobs

    with store.engine.begin() as connection:
        connection.execute(update(jobs).values(status=status))
    assert sender_for(db_url, redis_url, sandbox.url).send(job_id) == "ignored"
    assert sandbox.state.calls == 0


def test_redis_lost_during_the_call_still_records_the_outcome(
    db_url: str,
    store: JobStore,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    """Found by the chaos suite: a Redis restart while a call was in flight left the job
    `sending` (the quota release raised), so a sent message ended `unknown`."""
    from tests.chaos.round import RedisServer

    server = RedisServer()
    try:
        job_id = queued_job(store)
        sandbox.state.config.latency_ms = 800
        sender = sender_for(db_url, server.url, sandbox.url)
        outcome: list[str] = []
        thread = threading.Thread(target=lambda: outcome.append(sender.send(job_id)))
        thread.start()
        from tests.helpers import wait_until

        wait_until(lambda: sandbox.state.stats()["corps"].get("corp-a", {}).get("in_flight"))
        server.stop()  # Redis gone while the vendor works on the call
        thread.join(10)
        assert outcome == ["sent"]
        assert store.get(job_id).status == JobStatus.SENT
    finally:
        server.stop()
