"""Idle consumers wake when messages land (broker/wake.py), on a real Redis with a real
Dramatiq Worker: a message is taken at once although an idle consumer fetches only once a
second, an idle process costs a handful of fetches, and the wake list stays bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import dramatiq
import redis

from broadcaster.broker import wake
from broadcaster.broker.dispatch import Dispatcher
from broadcaster.broker.liveness import Liveness
from broadcaster.broker.messages import ACTOR_NAME, QUEUE_NAME
from broadcaster.broker.wake import WakingRedisBroker, wake_key
from tests.helpers import wait_until


class CountingBroker(WakingRedisBroker):
    """Counts the consumer's fetches (the only thing an idle consumer did before)."""

    fetches = 0

    def do_fetch(self, queue_name: str, prefetch: int) -> list[bytes]:  # type: ignore[override]
        type(self).fetches += 1
        return self._dispatch("fetch")(queue_name, prefetch)  # what __getattr__ gives


def _worker(client: redis.Redis, taken: dict[int, float]) -> tuple[dramatiq.Worker, CountingBroker]:
    broker = CountingBroker(client=client, middleware=[])

    def send_broadcast(job_id: int) -> None:
        taken[job_id] = time.monotonic()

    return _started_worker(broker, send_broadcast, threads=2), broker


def _started_worker(
    broker: dramatiq.Broker, send_broadcast: Callable[[int], None], *, threads: int
) -> dramatiq.Worker:
    """A real Dramatiq Worker running `send_broadcast` as the scheduler's actor."""
    dramatiq.Actor(
        send_broadcast,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=QUEUE_NAME,
        priority=0,
        options={},
    )
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return worker


def test_an_idle_worker_takes_a_message_at_once_and_polls_once_a_second(
    redis_client: redis.Redis,
) -> None:
    taken: dict[int, float] = {}
    worker, _ = _worker(redis_client, taken)
    dispatcher = Dispatcher(WakingRedisBroker(client=redis_client, middleware=[]))
    try:
        time.sleep(0.3)  # let both consumers go idle (the point of the test)
        CountingBroker.fetches = 0
        idle_started = time.monotonic()
        delays = []
        for job_id in range(1, 6):
            time.sleep(0.4)  # idle between messages: each must be woken, not polled
            sent = time.monotonic()
            dispatcher.enqueue([job_id])
            wait_until(lambda job_id=job_id: job_id in taken, timeout=5, every=0.005)
            delays.append(taken[job_id] - sent)
        idle_s = time.monotonic() - idle_started
    finally:
        worker.stop(timeout=2000)
    assert max(delays) < wake.IDLE_WAIT_S / 3, f"woken, not polled: {delays}"
    # Two consumers (the queue and its delay queue), one fetch a second each when idle,
    # plus one per wake-up; at Dramatiq's 20 ms poll this would be ~100 a second.
    assert CountingBroker.fetches <= 2 * (idle_s / wake.IDLE_WAIT_S + 1) + 2 * 5, (
        CountingBroker.fetches,
        idle_s,
    )


def test_a_batch_wakes_every_idle_process(redis_client: redis.Redis) -> None:
    taken: dict[int, float] = {}
    workers = [_worker(redis_client, taken)[0] for _ in range(3)]
    try:
        time.sleep(0.3)
        sent = time.monotonic()
        Dispatcher(WakingRedisBroker(client=redis_client, middleware=[])).enqueue(range(1, 31))
        wait_until(lambda: len(taken) == 30, timeout=5, every=0.005)
    finally:
        for worker in workers:
            worker.stop(timeout=2000)
    assert max(taken.values()) - sent < wake.IDLE_WAIT_S / 2


def test_the_wake_list_is_bounded_and_expires(redis_client: redis.Redis) -> None:
    broker = WakingRedisBroker(client=redis_client, middleware=[])
    Dispatcher(broker).enqueue(range(1, 201))
    Dispatcher(broker).enqueue(range(201, 401))
    key = wake_key(broker.namespace, QUEUE_NAME)
    assert redis_client.llen(key) == wake.WAKE_TOKENS_MAX
    assert 0 < redis_client.pttl(key) <= wake.WAKE_TTL_MS
    assert redis_client.llen(f"dramatiq:{QUEUE_NAME}") == 400, "tokens capped, not messages"


def test_a_dead_workers_requeued_messages_wake_the_living(redis_client: redis.Redis) -> None:
    producer = WakingRedisBroker(client=redis_client, middleware=[], heartbeat_timeout=300)
    Dispatcher(producer).enqueue(range(1, 4))
    key = wake_key(producer.namespace, QUEUE_NAME)
    redis_client.delete(key)
    dead = WakingRedisBroker(client=redis_client, middleware=[], heartbeat_timeout=300)
    consumer = dead.consume(QUEUE_NAME, prefetch=3, timeout=100)
    assert next(consumer) is not None
    survivor = Liveness(
        WakingRedisBroker(client=redis_client, middleware=[], heartbeat_timeout=300), QUEUE_NAME
    )
    wait_until(lambda: survivor.beat() == 3, timeout=5, every=0.05)
    assert redis_client.llen(key) == 3


def test_a_consumer_blocked_on_its_wake_list_lets_the_worker_stop(
    redis_client: redis.Redis,
) -> None:
    """Stopping waits for the consumer's BLPOP at most: about IDLE_WAIT_S, not more."""
    worker, _ = _worker(redis_client, {})
    time.sleep(0.3)
    stopped = threading.Event()
    started = time.monotonic()
    threading.Thread(target=lambda: (worker.stop(timeout=5000), stopped.set())).start()
    assert stopped.wait(wake.IDLE_WAIT_S * 3), "the worker did not stop"
    assert time.monotonic() - started < wake.IDLE_WAIT_S * 2.5


def test_every_message_is_acked_while_the_worker_runs_most_with_a_fetch(
    redis_client: redis.Redis,
) -> None:
    """Acks that wait for the next fetch still all reach Redis, soon, with the worker
    running (a message left in its ack set would be delivered again after it stops)."""
    sent_with_fetch = []

    class Recording(wake.WakingConsumer):
        def _dispatch_pipeline(self, acks, fetch):  # type: ignore[no-untyped-def]
            sent_with_fetch.append(len(acks) if fetch is not None else 0)
            return super()._dispatch_pipeline(acks, fetch)

    class Broker(WakingRedisBroker):
        def consume(self, queue_name, prefetch=1, timeout=5000):  # type: ignore[no-untyped-def]
            return Recording(self, queue_name, prefetch, timeout)

    broker = Broker(client=redis_client, middleware=[])
    taken: set[int] = set()

    def send_broadcast(job_id: int) -> None:
        time.sleep(0.002)  # a little work, so the consumer finds threads busy
        taken.add(job_id)

    worker = _started_worker(broker, send_broadcast, threads=4)
    acks = f"dramatiq:__acks__.{broker.broker_id}.{QUEUE_NAME}"
    try:
        Dispatcher(WakingRedisBroker(client=redis_client, middleware=[])).enqueue(range(1, 301))
        wait_until(lambda: len(taken) == 300, timeout=10, every=0.01)
        wait_until(lambda: redis_client.scard(acks) == 0, timeout=wake.IDLE_WAIT_S * 3)
        assert redis_client.hlen(f"dramatiq:{QUEUE_NAME}.msgs") == 0
    finally:
        worker.stop(timeout=2000)
    assert sum(sent_with_fetch) > 150, f"most acks should ride on a fetch: {sent_with_fetch}"


def test_a_consumer_stopping_after_its_wake_up_passes_the_token_on(
    redis_client: redis.Redis,
) -> None:
    """Woken but stopped before its fetch: the token goes back, so an idle peer fetches
    the message now rather than at its next once-a-second look."""
    broker = WakingRedisBroker(client=redis_client, middleware=[])
    broker.declare_queue(QUEUE_NAME)
    consumer = broker.consume(QUEUE_NAME, prefetch=2, timeout=100)
    key = wake_key(broker.namespace, QUEUE_NAME)
    wake.push_wake(redis_client, broker.namespace, QUEUE_NAME, 1)
    assert next(consumer) is None  # an empty fetch, then the token: woken
    assert redis_client.llen(key) == 0
    consumer.close()  # stopping now, before the fetch the token asked for
    assert redis_client.llen(key) == 1


def test_acks_a_closing_consumer_could_not_send_go_with_the_next_consumers_fetch(
    redis_client: redis.Redis,
) -> None:
    """Redis unreachable when the consumer closes (Dramatiq closes and restarts it after a
    connection error): its acks pass to the queue's next consumer, which sends them with
    its first fetch, even after Redis lost its script cache."""
    broker = WakingRedisBroker(client=redis_client, middleware=[])
    Dispatcher(broker).enqueue([1, 2, 3])
    consumer = broker.consume(QUEUE_NAME, prefetch=3, timeout=100)
    messages = [next(consumer) for _ in range(3)]
    for message in messages:
        assert message is not None
        consumer.ack(message)  # they wait for the next fetch
    acks = f"dramatiq:__acks__.{broker.broker_id}.{QUEUE_NAME}"
    assert redis_client.scard(acks) == 3
    reachable = broker.client
    broker.client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    consumer.close()
    assert redis_client.scard(acks) == 3
    assert len(broker.unsent_acks[QUEUE_NAME]) == 3
    broker.client = reachable
    redis_client.script_flush()  # as after a Redis restart
    successor = broker.consume(QUEUE_NAME, prefetch=3, timeout=100)
    assert next(successor) is None  # nothing to fetch; the acks went with the fetch
    assert redis_client.scard(acks) == 0
    assert redis_client.hlen(f"dramatiq:{QUEUE_NAME}.msgs") == 0
    successor.close()
