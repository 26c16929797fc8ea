"""Idle Redis consumers wait for a wake-up, not a timer.

Dramatiq's Redis consumer polls an empty queue: it sleeps up to `worker_timeout` between
fetches. At 100 ms that sleep was the largest step of a due row's lateness; at 20 ms an
idle `worker` (2 processes, a queue and its delay queue each) cost ~19 % of a core and
Redis another 3 %, for nothing. Here whoever puts messages on the queue (the scheduler's
`Dispatcher`, `Liveness` requeueing a dead worker's messages) also pushes up to
`WAKE_TOKENS_MAX` tokens on `<namespace>:<queue>.wake`, and an idle consumer blocks on
that list with BLPOP for up to `IDLE_WAIT_S`: a message is fetched as soon as it lands,
and an idle process makes one fetch and one BLPOP a second.

A token is only a hint: the consumer fetches through Dramatiq's own `dispatch` script
whatever woke it, so a lost or stale token costs at most `IDLE_WAIT_S`, never a message,
and a spare token costs one empty fetch. The list is capped and expires, so a queue with
no worker does not grow it.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

WAKE_TOKENS_MAX = 64
"""At most this many tokens wait on a queue's wake list (one per idle consumer is enough;
a batch pushes one per message up to this)."""

WAKE_TTL_MS = 10_000
"""A wake list nobody pops (no worker running) is gone after this."""

IDLE_WAIT_S = 1.0
"""How long an idle consumer blocks before it fetches anyway (and handles its acks)."""

BUSY_WAIT_MAX_MS = 20
"""With every prefetched message still at work, the consumer sleeps at most this long
before it looks at its acks again: no Redis call, so a short step is cheap and keeps the
threads fed."""


def wake_key(namespace: str, queue_name: str) -> str:
    """The list an idle consumer of `queue_name` blocks on."""
    return f"{namespace}:{queue_name}.wake"


def push_wake(client: Any, namespace: str, queue_name: str, count: int) -> None:
    """Queue up to `WAKE_TOKENS_MAX` tokens for `count` new messages. `client` may be a
    pipeline, so the tokens go out with the messages in one round trip."""
    if count <= 0:
        return
    key = wake_key(namespace, queue_name)
    client.lpush(key, *([1] * min(count, WAKE_TOKENS_MAX)))
    client.ltrim(key, 0, WAKE_TOKENS_MAX - 1)
    client.pexpire(key, WAKE_TTL_MS)


WAKE_LUA = f"""
local function wake(queue, count)
  if count <= 0 then return end
  for _ = 1, math.min(count, {WAKE_TOKENS_MAX}) do redis.call('LPUSH', queue .. '.wake', 1) end
  redis.call('LTRIM', queue .. '.wake', 0, {WAKE_TOKENS_MAX - 1})
  redis.call('PEXPIRE', queue .. '.wake', {WAKE_TTL_MS})
end
"""
"""`wake(queue_key, count)` for Lua scripts that requeue messages themselves."""


class WakingRedisBroker(RedisBroker):
    """Dramatiq's RedisBroker whose consumers block on the wake list when idle."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> _RedisConsumer:
        return WakingConsumer(self, queue_name, prefetch, timeout)


class WakingConsumer(_RedisConsumer):
    """`_RedisConsumer.__next__` (Dramatiq 2.x) with its idle sleep replaced by BLPOP on
    the queue's wake list. Pinned by tests/integration/test_wake.py."""

    def __init__(self, broker: RedisBroker, queue_name: str, prefetch: int, timeout: int):
        super().__init__(broker, queue_name, prefetch, timeout)
        self.wake_key = wake_key(broker.namespace, queue_name)

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:  # Dramatiq's guard (its issue #266)
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                room = self.prefetch - self.outstanding_message_count
                if room <= 0:
                    self.misses, backoff_ms = compute_backoff(
                        self.misses, max_backoff=BUSY_WAIT_MAX_MS
                    )
                    time.sleep(backoff_ms / 1000)
                    return None
                self.message_cache = self.broker.do_fetch(self.queue_name, room)
                if not self.message_cache:
                    # Back to the Worker either way: it handles acks between calls.
                    self.broker.client.blpop([self.wake_key], timeout=IDLE_WAIT_S)
                    return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None
