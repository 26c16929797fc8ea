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

import contextlib
import threading
import time
from typing import Any

import redis
import structlog
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from redis.exceptions import NoScriptError

log = structlog.get_logger("broadcaster.broker")

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
    """Dramatiq's RedisBroker whose consumers block on the wake list when idle and send
    their acks with their fetches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unsent_acks: dict[str, list[str]] = {}
        """Acks a consumer could not send before it closed (Redis unreachable): the next
        consumer of the queue (Dramatiq restarts one after a connection error) sends them
        first."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> _RedisConsumer:
        return WakingConsumer(self, queue_name, prefetch, timeout)


class WakingConsumer(_RedisConsumer):
    """`_RedisConsumer.__next__` (Dramatiq 2.x) with its idle sleep replaced by BLPOP on
    the queue's wake list, and acks that ride on the next fetch. Pinned by
    tests/integration/test_wake.py.

    Dramatiq acks each message from the worker thread that ran it: one script call, a
    Redis round trip and a pool checkout per message, a tenth of a worker's CPU a job in
    bench.overhead. Here a finished message's id waits in `_pending_acks` and goes out in
    one pipeline with the consumer's next fetch (the consumer fetches as soon as a thread
    frees a place, so that is at once under load, or ≤ `BUSY_WAIT_MAX_MS` when every thread
    was busy). While the consumer blocks on the wake list, and once it is closed, acks go
    out at once, as Dramatiq's do. An ack that fails is kept and sent again (an ack is
    idempotent); one still unsent when the consumer closes passes to the queue's next
    consumer (`WakingRedisBroker.unsent_acks`). Only when the process stops with Redis
    unreachable are acks lost; their messages then go back to the queue once this worker
    is gone, and their second delivery loses the compare-and-set."""

    broker: WakingRedisBroker

    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int):
        super().__init__(broker, queue_name, prefetch, timeout)
        self.wake_key = wake_key(broker.namespace, queue_name)
        self._acks_lock = threading.Lock()
        self._pending_acks: list[str] = broker.unsent_acks.pop(queue_name, [])
        self._acks_wait = True
        """Whether an ack may wait for the next fetch (false while the consumer blocks on
        the wake list, and once it is closed)."""
        self._closed = False
        self._woken_unfetched = False
        """A token was popped and no fetch followed yet: passed on if this consumer stops."""

    def ack(self, message: MessageProxy) -> None:
        with self._acks_lock:
            if self._acks_wait:
                self._pending_acks.append(message.options["redis_message_id"])
                self.queued_message_ids.discard(message.message_id)
                return
        super().ack(message)  # Dramatiq's own: its caller retries it on a connection error

    def close(self) -> None:
        with self._acks_lock:
            self._closed, self._acks_wait = True, False
            acks, self._pending_acks = self._pending_acks, []
        if acks:
            try:
                self._send(acks)
            except redis.RedisError as exc:  # `_send` kept them for the next consumer
                log.warning(
                    "broker_acks_unsent",
                    messages=len(acks),
                    error=str(exc),
                    consequence="the queue's next consumer in this process sends them",
                )
        if self._woken_unfetched:  # the message that token announced is another's now
            with contextlib.suppress(redis.RedisError):
                push_wake(self.broker.client, self.broker.namespace, self.queue_name, 1)
        super().close()

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
                    time.sleep(backoff_ms / 1000)  # an ack meanwhile goes with the next fetch
                    return None
                self.message_cache = self._fetch(room)
                self._woken_unfetched = False
                if not self.message_cache:
                    # Back to the Worker either way: it handles acks between calls.
                    self._send_acks_from_now()
                    token = self.broker.client.blpop([self.wake_key], timeout=IDLE_WAIT_S)
                    self._woken_unfetched = token is not None
                    self._let_acks_wait()
                    return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None

    def _take_acks(self) -> list[str]:
        with self._acks_lock:
            acks, self._pending_acks = self._pending_acks, []
        return acks

    def _keep(self, acks: list[str]) -> None:
        """Acks not sent: again with the next fetch, or by the next consumer once closed."""
        with self._acks_lock:
            if self._closed:
                self.broker.unsent_acks.setdefault(self.queue_name, []).extend(acks)
            else:
                self._pending_acks[:0] = acks

    def _fetch(self, room: int) -> list[bytes]:
        """Up to `room` messages, in one round trip with the acks waiting."""
        acks = self._take_acks()
        if not acks:
            return list(self.broker.do_fetch(self.queue_name, room))
        fetched = self._send(acks, fetch=room)
        assert fetched is not None
        return fetched

    def _send_acks_from_now(self) -> None:
        """Acks go out at once until `_let_acks_wait`; the waiting ones go now."""
        with self._acks_lock:
            self._acks_wait = False
        if acks := self._take_acks():
            self._send(acks)

    def _let_acks_wait(self) -> None:
        with self._acks_lock:
            self._acks_wait = not self._closed

    def _send(self, acks: list[str], *, fetch: int | None = None) -> list[bytes] | None:
        """Dramatiq's `dispatch` script once per ack, then a fetch of up to `fetch`
        messages, in one pipeline (EVALSHA queued directly: a script object in a pipeline
        would first ask SCRIPT EXISTS, a second round trip). Returns the fetched messages.
        An ack that fails is kept; a failed round trip keeps them all and raises."""
        try:
            replies = self._dispatch_pipeline(acks, fetch)
        except redis.RedisError:
            self._keep(acks)
            raise
        failed = [ack for ack, reply in zip(acks, replies, strict=False) if _failed(reply)]
        if failed:
            self._keep(failed)
            log.warning("broker_ack_failed", messages=len(failed), error=str(replies[0]))
        if fetch is None:
            return None
        if _failed(replies[-1]):
            raise replies[-1]
        return list(replies[-1])

    def _dispatch_pipeline(self, acks: list[str], fetch: int | None) -> list[Any]:
        """The replies (an error as its exception); a script cache emptied by a Redis
        restart is refilled and the pipeline sent again (nothing of it ran)."""
        broker = self.broker
        script = broker.scripts["dispatch"]
        commands: list[tuple[str, object]] = [("ack", message_id) for message_id in acks]
        if fetch is not None:
            commands.append(("fetch", fetch))
        for _attempt in range(2):
            pipeline = broker.client.pipeline(transaction=False)
            for command, argument in commands:
                pipeline.evalsha(script.sha, 1, broker.namespace, *self._args(command, argument))
            replies = list(pipeline.execute(raise_on_error=False))
            if not all(isinstance(reply, NoScriptError) for reply in replies):
                break
            broker.client.script_load(script.script)
        return replies

    def _args(self, command: str, argument: object) -> list[Any]:
        """The arguments `RedisBroker._dispatch` builds for the script (Dramatiq 2.x)."""
        broker = self.broker
        return [
            command,
            current_millis(),
            self.queue_name,
            broker.broker_id,
            broker.heartbeat_timeout,
            broker.dead_message_ttl,
            broker._should_do_maintenance(command),
            broker._max_unpack_size(),
            argument,
        ]


def _failed(reply: object) -> bool:
    return isinstance(reply, Exception)
