"""Handing claimed jobs to the broker: the scheduler's only contact with Dramatiq."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import uuid4

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from broadcaster.broker.messages import QUEUE_NAME, send_broadcast_message
from broadcaster.broker.wake import push_wake
from broadcaster.errors import BrokerUnavailable


def make_broker(client: redis.Redis) -> RedisBroker:
    """A Redis broker for enqueueing only: no middleware, no actors, no global state."""
    broker = RedisBroker(client=client, middleware=[])
    broker.declare_queue(QUEUE_NAME)
    return broker


class Dispatcher:
    """Enqueues `send_broadcast(job_id)` messages, a claimed batch per Redis round trip.

    Dramatiq's `RedisBroker.enqueue` costs one round trip per message, which capped the
    claim path at ~4.5k jobs/s (bench/claim.py). This sends the broker's own `dispatch`
    script calls, with exactly the arguments `enqueue` passes, through one pipeline; the
    messages are indistinguishable from `broker.enqueue`'s (tests consume them with a real
    Dramatiq worker). The same round trip wakes idle consumers (broker/wake.py).
    """

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._dispatch = broker.scripts["dispatch"]

    def enqueue(self, job_ids: Iterable[int]) -> list[int]:
        """Enqueue in order. On a Redis failure raise `EnqueueFailed`; a pipeline is all or
        nothing from our side, so it reports none enqueued and the caller hands the batch
        back (a message that did land is a harmless duplicate: the actor's CAS)."""
        ids = list(job_ids)
        if not ids:
            return []
        broker = self.broker
        try:
            with broker.client.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    message = send_broadcast_message(job_id).copy(
                        options={"redis_message_id": str(uuid4())}
                    )
                    self._dispatch(
                        keys=[broker.namespace],
                        client=pipe,
                        args=[
                            "enqueue",
                            current_millis(),
                            QUEUE_NAME,
                            broker.broker_id,
                            broker.heartbeat_timeout,
                            broker.dead_message_ttl,
                            0,
                            broker._max_unpack_size(),
                            message.options["redis_message_id"],
                            message.encode(),
                        ],
                    )
                push_wake(pipe, broker.namespace, QUEUE_NAME, len(ids))
                pipe.execute()
        except redis.RedisError as exc:
            raise EnqueueFailed(f"Redis refused an enqueue: {exc}") from exc
        return ids


class EnqueueFailed(BrokerUnavailable):
    """Redis refused a batch's enqueue: count none of it as enqueued and hand it back."""
