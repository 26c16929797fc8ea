"""Liveness on a real Redis: a dead broker's fetched messages go back to the head of the
queue, a live one's stay where they are (Dramatiq's own keys and consumer); each worker's
beat says its threads for `status`, and stops saying them when it dies or stops."""

from __future__ import annotations

import json
import os
import socket
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from broadcaster.broker.dispatch import Dispatcher
from broadcaster.broker.liveness import Liveness, held_job_ids, live_workers, worker_key
from broadcaster.broker.messages import QUEUE_NAME
from tests.helpers import wait_until


def _broker(client: redis.Redis, timeout_ms: int) -> RedisBroker:
    broker = RedisBroker(client=client, middleware=[], heartbeat_timeout=timeout_ms)
    broker.declare_queue(QUEUE_NAME)
    return broker


def _queue(client: redis.Redis) -> list[int]:
    """The job ids in the queue, head first."""
    ids = client.lrange(f"dramatiq:{QUEUE_NAME}", 0, -1)
    found = client.hmget(f"dramatiq:{QUEUE_NAME}.msgs", ids) if ids else []
    return [int(json.loads(data)["args"][0]) for data in found]


def test_a_dead_brokers_messages_return_to_the_head_of_the_queue(
    redis_client: redis.Redis,
) -> None:
    producer = _broker(redis_client, 300)
    Dispatcher(producer).enqueue(range(1, 11))
    dead = _broker(redis_client, 300)
    consumer = dead.consume(QUEUE_NAME, prefetch=3, timeout=100)
    first = next(consumer)
    assert first is not None and first.args == (1,)
    assert sorted(held_job_ids(dead, dead.broker_id, QUEUE_NAME)) == [1, 2, 3]

    survivor = Liveness(_broker(redis_client, 300), QUEUE_NAME)
    assert survivor.beat() == 0, "alive until its heartbeat is 300 ms old"
    assert _queue(redis_client) == list(range(4, 11))
    wait_until(lambda: survivor.beat() == 3, timeout=5, every=0.05)

    assert sorted(_queue(redis_client)[:3]) == [1, 2, 3]
    assert _queue(redis_client)[3:] == list(range(4, 11))
    assert held_job_ids(dead, dead.broker_id, QUEUE_NAME) == []
    heartbeats = {m.decode() for m in redis_client.zrange("dramatiq:__heartbeats__", 0, -1)}
    assert dead.broker_id not in heartbeats, "a dead broker with nothing held is forgotten"
    assert survivor.beat() == 0, "requeued once"


def test_a_beating_broker_keeps_its_messages(redis_client: redis.Redis) -> None:
    producer = _broker(redis_client, 200)
    Dispatcher(producer).enqueue(range(1, 6))
    holder = _broker(redis_client, 200)
    next(holder.consume(QUEUE_NAME, prefetch=2, timeout=100))
    own, other = Liveness(holder, QUEUE_NAME), Liveness(_broker(redis_client, 200), QUEUE_NAME)
    for _ in range(4):
        own.beat()
        assert other.beat() == 0
        time.sleep(0.1)  # time passing is the point: 400 ms in all, twice the timeout
    assert sorted(held_job_ids(holder, holder.broker_id, QUEUE_NAME)) == [1, 2]


def test_the_thread_beats_until_stopped(redis_client: redis.Redis) -> None:
    broker = _broker(redis_client, 1000)
    liveness = Liveness(broker, QUEUE_NAME, every_s=0.05)
    liveness.start()
    try:
        wait_until(
            lambda: redis_client.zscore("dramatiq:__heartbeats__", broker.broker_id) is not None,
            timeout=5,
        )
    finally:
        liveness.stop()
    assert liveness._thread is not None and not liveness._thread.is_alive()


def test_timeout_s_sets_the_brokers_timeout_too(redis_client: redis.Redis) -> None:
    broker = _broker(redis_client, 60_000)
    liveness = Liveness(broker, QUEUE_NAME, timeout_s=2.5)
    assert broker.heartbeat_timeout == 2500 == liveness.timeout_ms
    assert Liveness(_broker(redis_client, 700), QUEUE_NAME).timeout_ms == 700, "else its own"


def test_a_booted_worker_beats_its_threads_which_expire_with_it(
    redis_client: redis.Redis,
) -> None:
    """The Dramatiq Worker's boot tells `Liveness` its threads (a middleware hook); the
    beat publishes them for `status`; silent past the timeout, the process is not counted
    (its hash expires even with no live peer to sweep the index)."""
    broker = _broker(redis_client, 1000)
    liveness = Liveness(broker, QUEUE_NAME)
    liveness.beat()
    assert live_workers(redis_client) == [], "nothing said before the Worker boots"
    worker = dramatiq.Worker(broker, worker_threads=3, worker_timeout=100)
    worker.queue_prefetch = 5
    worker.start()
    try:
        liveness.beat()
        (alive,) = live_workers(redis_client)
        assert (alive.broker_id, alive.threads, alive.prefetch) == (broker.broker_id, 3, 5)
        assert alive.pid == os.getpid() and alive.host == socket.gethostname()
        key = worker_key("dramatiq", broker.broker_id)
        assert 0 < redis_client.pttl(key) <= 1000
        wait_until(lambda: live_workers(redis_client) == [], timeout=5, every=0.05)
        liveness.beat()
        assert len(live_workers(redis_client)) == 1, "beating again: alive again"
    finally:
        worker.stop(timeout=1000)
    assert live_workers(redis_client) == [], "a stopping worker is not counted"
    liveness.beat()
    assert live_workers(redis_client) == [], "nor does its heartbeat say it again"
    assert redis_client.zscore("dramatiq:__heartbeats__", broker.broker_id) is not None


def test_a_dead_workers_entry_is_swept_from_the_index(redis_client: redis.Redis) -> None:
    dead = Liveness(_broker(redis_client, 200), QUEUE_NAME)
    dead.describe(threads=4)
    dead.beat()
    survivor = Liveness(_broker(redis_client, 200), QUEUE_NAME)
    survivor.describe(threads=2)
    dead_id = dead.broker.broker_id

    def swept() -> bool:
        survivor.beat()
        return redis_client.zscore("dramatiq:__workers__", dead_id) is None

    wait_until(swept, timeout=5, every=0.05)
    assert [w.threads for w in live_workers(redis_client)] == [2]
    survivor.stop()
    assert live_workers(redis_client) == [] and redis_client.zcard("dramatiq:__workers__") == 0
