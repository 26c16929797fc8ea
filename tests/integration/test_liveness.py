"""Liveness on a real Redis: a dead broker's fetched messages go back to the head of the
queue, a live one's stay where they are (Dramatiq's own keys and consumer)."""

from __future__ import annotations

import json
import time

import redis
from dramatiq.brokers.redis import RedisBroker

from broadcaster.broker.dispatch import Dispatcher
from broadcaster.broker.liveness import Liveness, held_job_ids
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
