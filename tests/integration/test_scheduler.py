"""The scheduler: claims due rows, enqueues only ids, quarantines bad rows, recovers leases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta

import pytest
import redis
from sqlalchemy import Engine, text, update

from broadcaster import schedule_broadcast, schedule_many
from broadcaster.broker.dispatch import Dispatcher, EnqueueFailed, make_broker
from broadcaster.db import make_engine
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.jobs.tables import jobs
from broadcaster.timeutil import utcnow
from scheduler.runner import SchedulerRunner
from scheduler.service import SchedulerService
from tests.conftest import make_settings
from tests.helpers import body, queued_job_ids, queued_messages, wait_until

NOW = datetime(2026, 12, 1, 1, 0, 0)


def service_for(
    store: JobStore, client: redis.Redis, clock=lambda: NOW, **settings
) -> SchedulerService:  # type: ignore[no-untyped-def]
    return SchedulerService(
        store, Dispatcher(make_broker(client)), make_settings(**settings), clock=clock
    )


def insert_sql(engine: Engine, payload: str, send_at: datetime, **extra: object) -> int:
    columns = {"payload": payload, "send_at": send_at, "corp_id": "corp-a", **extra}
    with engine.begin() as connection:
        return connection.execute(jobs.insert().values(**columns).returning(jobs.c.id)).scalar_one()


def test_a_tick_enqueues_due_jobs_by_id_and_quarantines_bad_rows(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    good = json.dumps(body())
    due = [insert_sql(engine, good, NOW - timedelta(minutes=i)) for i in range(3)]
    future = insert_sql(engine, good, NOW + timedelta(seconds=30))
    not_json = insert_sql(engine, "{oops", NOW)
    missing = insert_sql(engine, json.dumps({"name": "x", "text": "hi"}), NOW)
    wrong_type = insert_sql(engine, json.dumps(body(group_ext_id_list="g1")), NOW)
    expired = insert_sql(engine, good, NOW, expires_at=NOW - timedelta(seconds=1))
    cancelled = insert_sql(engine, good, NOW, status="cancelled")
    no_corp = insert_sql(engine, good, NOW, corp_id=None)

    report = service_for(store, redis_client).tick()

    assert queued_job_ids(redis_client) == sorted([*due, no_corp])
    message = queued_messages(redis_client)[0]
    assert (message.queue_name, message.actor_name, message.kwargs) == (
        "broadcasts",
        "send_broadcast",
        {},
    )
    assert report.enqueued == 4 and report.failed == 3 and report.expired == 1
    assert report.next_due == NOW + timedelta(seconds=30)
    assert store.get(future).status == JobStatus.SCHEDULED
    assert store.get(cancelled).status == JobStatus.CANCELLED
    assert store.get(expired).status == JobStatus.EXPIRED
    assert store.get(no_corp).corp_id == "corp-default", "NULL corp_id takes the default"
    reasons = {job_id: store.get(job_id).last_error for job_id in (not_json, missing, wrong_type)}
    assert "not valid JSON" in reasons[not_json]
    assert "group_ext_id_list: Field required" in reasons[missing]
    assert "group_ext_id_list: Input should be a valid list" in reasons[wrong_type]
    assert all(store.get(j).status == JobStatus.FAILED for j in reasons)
    queued = store.get(due[0])
    assert queued.status == JobStatus.QUEUED and queued.lease_until > NOW


def test_claim_order_is_priority_then_due_time(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    good = json.dumps(body())
    late = insert_sql(engine, good, NOW - timedelta(minutes=1))
    early = insert_sql(engine, good, NOW - timedelta(minutes=5))
    urgent = insert_sql(engine, good, NOW, priority=10)
    claimed = store.claim_due(NOW, 10, 60).claimed
    assert [job.id for job in claimed] == [urgent, early, late]


def test_the_queue_cap_holds_back_work_the_workers_cannot_start_soon(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    schedule_many([{"payload": body(), "send_at": NOW} for _ in range(25)], store=store)
    service = service_for(store, redis_client, scheduler_max_queued=10, scheduler_batch_size=4)
    report = service.tick()
    assert report.enqueued == 10 and report.queue_full
    assert len(queued_job_ids(redis_client)) == 10
    with engine.begin() as connection:  # the workers take five
        connection.execute(
            text(
                "UPDATE broadcast_jobs SET status = 'sent' WHERE id IN (SELECT id FROM "
                "(SELECT id FROM broadcast_jobs WHERE status = 'queued' LIMIT 5) AS taken)"
            )
        )
    assert service.tick().enqueued == 5


def test_the_sweep_requeues_lost_messages_and_never_resends_a_started_call(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    ids = schedule_many(
        [{"payload": body(), "send_at": NOW} for _ in range(3)], store=store
    ).job_ids
    service = service_for(store, redis_client, queued_lease_s=60)
    service.tick()
    redis_client.flushdb()  # the broker lost every message
    with engine.begin() as connection:
        connection.execute(update(jobs).where(jobs.c.id == ids[2]).values(status="sending"))
    service.sweep()  # leases still running: nothing happens
    assert queued_job_ids(redis_client) == []

    later = NOW + timedelta(seconds=61)
    service_for(store, redis_client, clock=lambda: later).sweep()
    assert queued_job_ids(redis_client) == ids[:2]
    assert store.get(ids[2]).status == JobStatus.UNKNOWN
    assert "may exist at the vendor" in store.get(ids[2]).last_error
    assert store.get(ids[0]).lease_until > later


def test_expiry_and_cancel_are_honoured_by_the_sweep(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    first, second = schedule_many(
        [
            {
                "payload": body(),
                "send_at": NOW + timedelta(seconds=30),
                "expires_at": NOW + timedelta(minutes=1),
                "campaign": "x",
            },
            {"payload": body(), "send_at": NOW, "campaign": "x"},
        ],
        store=store,
    ).job_ids
    store.cancel(second, NOW)
    service = service_for(store, redis_client, clock=lambda: NOW + timedelta(minutes=2))
    service.sweep()
    service.tick()
    assert store.get(first).status == JobStatus.EXPIRED
    assert store.get(second).status == JobStatus.CANCELLED
    assert queued_job_ids(redis_client) == []


def test_a_job_already_sending_cannot_be_cancelled(engine: Engine, store: JobStore) -> None:
    from broadcaster.errors import StateConflict

    job_id = schedule_broadcast(body(), store=store, campaign="c").job_ids[0]
    with engine.begin() as connection:
        connection.execute(update(jobs).values(status="sending"))
    with pytest.raises(StateConflict, match="sending: the vendor call may have started"):
        store.cancel(job_id, NOW)
    assert store.cancel_campaign("c", NOW) == (0, 1)


def test_an_unreachable_broker_hands_the_claim_back(engine: Engine, store: JobStore) -> None:
    ids = schedule_many([{"payload": body(), "send_at": NOW}] * 3, store=store).job_ids
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with pytest.raises(EnqueueFailed, match="Redis refused an enqueue"):
        service_for(store, dead).tick()
    assert [store.get(job_id).status for job_id in ids] == [JobStatus.SCHEDULED] * 3, (
        "the whole batch goes back: none of a failed pipeline counts as enqueued"
    )
    assert store.queued_by_corp() == {}


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("empty_pg_url", marks=pytest.mark.postgres, id="postgresql"),
        pytest.param("empty_mysql_url", marks=pytest.mark.mariadb, id="mariadb"),
    ],
)
def test_racing_claimers_claim_each_row_once(server: str, request: pytest.FixtureRequest) -> None:
    """Six claimers in threads, each with its own engine: SKIP LOCKED on a server."""
    pg_url = request.getfixturevalue(server)
    store = JobStore(make_engine(pg_url))
    schedule_many(
        [{"payload": body(), "send_at": NOW, "corp_id": "c"} for _ in range(3000)], store=store
    )
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        own = JobStore(make_engine(pg_url))
        while batch := own.claim_due(NOW, 25, 60).claimed:
            with lock:
                claimed.extend(job.id for job in batch)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 3000 and len(set(claimed)) == 3000


# ------------------------------------------------------------------ the real loop
def run_in_thread(runner: SchedulerRunner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return thread


def test_the_loop_wakes_when_the_next_job_falls_due_not_at_the_next_poll(
    store: JobStore, redis_client: redis.Redis
) -> None:
    due_in = utcnow() + timedelta(seconds=1.5)
    job_id = schedule_broadcast(body(), due_in, store=store).job_ids[0]
    service = service_for(store, redis_client, clock=utcnow, scheduler_poll_interval_s=30)
    runner = SchedulerRunner(service)
    thread = run_in_thread(runner)
    try:
        wait_until(lambda: queued_job_ids(redis_client) == [job_id], timeout=5)
        lateness = (utcnow() - due_in).total_seconds()
        assert lateness < 0.5, f"enqueued {lateness:.3f}s after send_at"
    finally:
        runner.shutdown()
        thread.join(5)


@pytest.mark.postgres
def test_postgres_notify_wakes_the_loop_for_a_plain_sql_insert(
    empty_pg_url: str, redis_client: redis.Redis
) -> None:
    engine = make_engine(empty_pg_url)
    store = JobStore(engine, default_corp="corp-default")
    service = service_for(store, redis_client, clock=utcnow, scheduler_poll_interval_s=30)
    runner = SchedulerRunner(service, listen_engine=engine)
    thread = run_in_thread(runner)
    try:
        assert runner.listener is not None
        wait_until(runner.listener.listening.is_set, timeout=5)
        wait_until(lambda: runner.ticks >= 1, timeout=5)
        inserted = insert_sql(engine, json.dumps(body()), utcnow())
        wait_until(lambda: queued_job_ids(redis_client) == [inserted], timeout=3)
    finally:
        runner.shutdown()
        thread.join(5)


def scheduler_process(db_url: str, redis_url: str, **env: str) -> subprocess.Popen[str]:
    environment = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "WEIBAN_CORP_ID": "corp-default",
        "SCHEDULER_POLL_INTERVAL_S": "0.05",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "broadcaster.cli.main", "scheduler"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_scheduler_processes_enqueue_each_row_once(
    db_url: str, store: JobStore, redis_url: str, redis_client: redis.Redis
) -> None:
    count = 2000
    schedule_many([{"payload": body(), "send_at": utcnow()} for _ in range(count)], store=store)
    processes = [
        scheduler_process(
            db_url,
            redis_url,
            SCHEDULER_BATCH_SIZE="20",
            SCHEDULER_MAX_QUEUED=str(count),
            SCHEDULER_ADMIT_HORIZON_S="1000",  # admit the whole backlog at once
        )
        for _ in range(2)
    ]
    try:
        wait_until(lambda: len(queued_job_ids(redis_client)) >= count, timeout=60)
        wait_until(lambda: store.next_due_at() is None, timeout=10)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=15) for process in processes]
    ids = queued_job_ids(redis_client)
    assert len(ids) == count and len(set(ids)) == count
    assert all(process.returncode == 0 for process in processes), outputs
    enqueued_by = [
        sum(
            json.loads(line).get("count", 0)
            for line in err.splitlines()
            if '"jobs_enqueued"' in line
        )
        for _out, err in outputs
    ]
    assert sum(enqueued_by) == count, enqueued_by


def test_scheduler_waits_for_an_unmigrated_database_with_a_clear_line(
    tmp_path,
    redis_url: str,  # type: ignore[no-untyped-def]
) -> None:
    process = scheduler_process(f"sqlite:///{tmp_path}/empty.db", redis_url)
    try:
        line = process.stderr.readline()  # type: ignore[union-attr]
        assert "run `broadcaster db upgrade`" in line, line
        assert process.poll() is None, "it keeps waiting rather than crash-looping"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    assert process.returncode == 0


def test_a_row_whose_own_text_the_database_cannot_store_still_fails_alone(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    """Found by the chaos suite: a payload key with an escaped NUL (or a lone surrogate)
    ended up in `last_error`, PostgreSQL refused that UPDATE, the claim rolled back, and the
    scheduler retried the same poisoned batch forever."""
    poisoned = [
        '{"name": "x", "\\u0000key": 1}',
        '{"name": "x", "\\ud8c6": [1]}',
        '{"\\u0000": "\\ud800"}',
    ]
    bad = [insert_sql(engine, payload, NOW - timedelta(seconds=1)) for payload in poisoned]
    good = insert_sql(engine, json.dumps(body()), NOW)
    report = service_for(store, redis_client).tick()
    assert report.failed == 3 and queued_job_ids(redis_client) == [good]
    for job_id in bad:
        job = store.get(job_id)
        assert job.status == JobStatus.FAILED and "payload invalid" in job.last_error


def test_a_corp_the_vendor_blocked_is_not_admitted_until_the_block_ends(
    engine: Engine, store: JobStore, redis_client: redis.Redis
) -> None:
    from broadcaster.corps import CorpDirectory
    from broadcaster.quota.limiter import RedisQuota
    from scheduler.service import Admission

    settings = make_settings()
    corps = CorpDirectory(settings)
    quota = RedisQuota(redis_client, corps.limits, slot_lease_s=10, block_s=60)
    blocked = insert_sql(engine, json.dumps(body()), NOW, corp_id="corp-b")
    free = insert_sql(engine, json.dumps(body()), NOW, corp_id="corp-a")
    quota.on_blocked("corp-b", "customer_group_msg/add")
    service = SchedulerService(
        store,
        Dispatcher(make_broker(redis_client)),
        settings,
        clock=lambda: NOW,
        admission=Admission(settings, corps, quota),
    )
    service.tick()
    assert queued_job_ids(redis_client) == [free]
    assert store.get(blocked).status == JobStatus.SCHEDULED
    redis_client.delete(*redis_client.keys("broadcaster:quota:*"))  # the block ends
    service.tick()
    assert queued_job_ids(redis_client) == [blocked, free]
