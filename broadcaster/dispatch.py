"""Handing claimed jobs to the broker: the scheduler's only contact with Dramatiq."""

from __future__ import annotations

from collections.abc import Iterable

import redis
from dramatiq.brokers.redis import RedisBroker

from broadcaster.errors import BrokerUnavailable
from broadcaster.messages import QUEUE_NAME, send_broadcast_message


def make_broker(client: redis.Redis) -> RedisBroker:
    """A Redis broker for enqueueing only: no middleware, no actors, no global state."""
    broker = RedisBroker(client=client, middleware=[])
    broker.declare_queue(QUEUE_NAME)
    return broker


class Dispatcher:
    """Enqueues `send_broadcast(job_id)` messages."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker

    def enqueue(self, job_ids: Iterable[int]) -> list[int]:
        """Enqueue in order. On a Redis failure raise `EnqueueFailed`, which says which
        ids did go out, so the caller can hand the rest back to the table at once."""
        done: list[int] = []
        for job_id in job_ids:
            try:
                self.broker.enqueue(send_broadcast_message(job_id))
            except redis.RedisError as exc:
                raise EnqueueFailed(f"Redis refused an enqueue: {exc}", done) from exc
            done.append(job_id)
        return done


class EnqueueFailed(BrokerUnavailable):
    """Enqueueing stopped part way; `enqueued` holds the ids that did go out."""

    def __init__(self, message: str, enqueued: list[int]) -> None:
        super().__init__(message)
        self.enqueued = enqueued
