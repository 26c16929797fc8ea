"""A killed worker's prefetched messages go back to the head of the queue within seconds.

Dramatiq's Redis broker keeps what is needed: every call of its `dispatch` script stamps
the caller's broker id in the `__heartbeats__` sorted set, and each fetched message id
sits in the fetching broker's `__acks__.<id>.<queue>` set until acked. Its maintenance
step moves the unacked messages of a broker silent for `heartbeat_timeout` back to the
queue, but with three defaults that make a killed worker cost minutes: the timeout is
60 s; maintenance runs on a random 0.1 % of calls; and it appends them to the tail, behind
a backlog of up to `SCHEDULER_ADMIT_HORIZON_S` of quota (15 s behind in bench.recovery),
although they were at its head when fetched.

So each worker process runs `Liveness`, a thread that once a second runs `REQUEUE_DEAD`
on Dramatiq's keys: the process's heartbeat (the same stamp `dispatch` writes), then
Dramatiq's maintenance for our queue, except that a dead broker's messages go to the
head of the queue (LPUSH), where they were. The broker's own `heartbeat_timeout` is set
to the same BROKER_HEARTBEAT_TIMEOUT_S (`Liveness(..., timeout_s=)` sets both), so
Dramatiq's random maintenance agrees on who is dead.

Each beat also says what the process runs, for `broadcaster status` (which compares the
threads alive with what the corps' quota needs): `<ns>:__worker__.<broker id>`, a hash of
threads, prefetch, pid and host that expires after the timeout, indexed by the sorted set
`<ns>:__workers__` (broker id -> last beat, ms). Dramatiq's `__heartbeats__` cannot say it:
the scheduler's enqueues stamp it too. The threads come from the Dramatiq Worker when it
boots (`Liveness` is a middleware of the broker), so until then the beat says nothing.

A message requeued from a worker that was only slow is a harmless duplicate: the actor
re-reads the job and only the compare-and-set that moves it `queued` -> `sending` calls
the vendor. A job already `sending` when its worker died is ignored on redelivery;
the sweep settles it (`unknown`).

Redis only. With BROKER_URL (RabbitMQ) no `Liveness` runs: RabbitMQ returns a consumer's
unacked messages to the queue the moment its connection drops (a killed worker), in their
place, and a worker's connection that goes silent is closed by the server's heartbeats.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.middleware import Middleware

from broadcaster.broker.wake import WAKE_LUA
from broadcaster.settings import BROKER_BEAT_S

log = structlog.get_logger("broadcaster.worker")

HEARTBEAT_TIMEOUT_MS = 6_000
"""BROKER_HEARTBEAT_TIMEOUT_S's default, in ms: a broker silent this long is dead: its
unacked messages are requeued. Live workers beat every `BEAT_EVERY_S`, so only a process
stalled for six beats (or cut from Redis) is taken for dead, and then the cost is a
duplicate message the actor ignores."""

BEAT_EVERY_S = BROKER_BEAT_S
"""How often each worker process beats (and looks for dead ones)."""

DEFAULT_NAMESPACE = "dramatiq"
"""Dramatiq's Redis namespace, the one `worker/app.py`'s broker uses."""


REQUEUE_DEAD = (
    WAKE_LUA
    + """
-- KEYS: namespace ; ARGV: now_ms, heartbeat_timeout_ms, queue_name, own broker id,
--   then field, value pairs of what this worker runs (none before its Worker booted)
-- Dramatiq's dispatch.lua maintenance for one queue, with LPUSH in place of RPUSH.
local ns, queue_name = KEYS[1], ARGV[3]
local heartbeats = ns .. ':__heartbeats__'
redis.call('ZADD', heartbeats, ARGV[1], ARGV[4])
local workers = ns .. ':__workers__'
if #ARGV > 4 then
  local own = ns .. ':__worker__.' .. ARGV[4]
  redis.call('HSET', own, unpack(ARGV, 5))
  redis.call('PEXPIRE', own, ARGV[2])
  redis.call('ZADD', workers, ARGV[1], ARGV[4])
end
redis.call('ZREMRANGEBYSCORE', workers, 0, tonumber(ARGV[1]) - tonumber(ARGV[2]))
local dead = redis.call('ZRANGEBYSCORE', heartbeats, 0, tonumber(ARGV[1]) - tonumber(ARGV[2]))
local queue = ns .. ':' .. queue_name
local messages = queue .. '.msgs'
local moved = 0
for _, broker_id in ipairs(dead) do
  local acks = ns .. ':__acks__.' .. broker_id
  local held = redis.call('SMEMBERS', acks .. '.' .. queue_name)
  for _, message_id in ipairs(held) do
    if redis.call('HEXISTS', messages, message_id) == 1 then
      redis.call('LPUSH', queue, message_id)
      moved = moved + 1
    end
  end
  redis.call('DEL', acks .. '.' .. queue_name)
  if next(redis.call('KEYS', acks .. '*')) == nil then
    redis.call('ZREM', heartbeats, broker_id)
  end
end
wake(queue, moved)
return moved
"""
)


def acks_key(broker: RedisBroker, broker_id: str, queue_name: str) -> str:
    """The set of message ids `broker_id` fetched from `queue_name` and has not acked."""
    return f"{broker.namespace}:__acks__.{broker_id}.{queue_name}"


def held_job_ids(broker: RedisBroker, broker_id: str, queue_name: str) -> list[int]:
    """The job ids of the messages `broker_id` holds fetched and unacked (for tests,
    benchmarks and an operator looking at a dead worker's share)."""
    client = broker.client
    message_ids = list(client.smembers(acks_key(broker, broker_id, queue_name)))
    if not message_ids:
        return []
    found = client.hmget(f"{broker.namespace}:{queue_name}.msgs", message_ids)
    return [int(json.loads(data)["args"][0]) for data in found if data]


def worker_key(namespace: str, broker_id: str) -> str:
    """The hash of what one worker process runs (threads, prefetch, pid, host)."""
    return f"{namespace}:__worker__.{broker_id}"


@dataclass(frozen=True)
class LiveWorker:
    """One worker process that beat within its timeout, as it describes itself."""

    broker_id: str
    threads: int
    prefetch: int
    pid: int
    host: str
    beat_ms: int


def live_workers(client: redis.Redis, namespace: str = DEFAULT_NAMESPACE) -> list[LiveWorker]:
    """The worker processes alive now: those whose beat hash has not expired (each expires
    after its own process's heartbeat timeout). Ordered by host, then pid."""
    ids = [_text(i) for i in client.zrange(f"{namespace}:__workers__", 0, -1)]
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for broker_id in ids:
        pipe.hgetall(worker_key(namespace, broker_id))
    found = []
    for broker_id, raw in zip(ids, pipe.execute(), strict=True):
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if not fields:
            continue  # expired: dead, not yet dropped from the index
        try:
            found.append(
                LiveWorker(
                    broker_id,
                    int(fields["threads"]),
                    int(fields.get("prefetch", 0)),
                    int(fields.get("pid", 0)),
                    fields.get("host", ""),
                    int(fields.get("beat_ms", 0)),
                )
            )
        except (KeyError, ValueError):
            continue  # not ours (or a future shape): counts for nothing
    return sorted(found, key=lambda w: (w.host, w.pid))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Liveness(Middleware):
    """Beats for `broker` and requeues dead brokers' messages of `queue_name`.

    `timeout_s` (BROKER_HEARTBEAT_TIMEOUT_S) sets the broker's `heartbeat_timeout` too, so
    both agree; without it the broker's own is used. Added to the broker's middleware, it
    learns the Worker's threads and prefetch when the Worker boots, and beats them."""

    def __init__(
        self,
        broker: RedisBroker,
        queue_name: str,
        *,
        every_s: float = BEAT_EVERY_S,
        timeout_s: float | None = None,
    ) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.every_s = every_s
        if timeout_s is not None:
            broker.heartbeat_timeout = round(timeout_s * 1000)
        self._requeue_dead = broker.client.register_script(REQUEUE_DEAD)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shape: dict[str, str | int] = {}
        broker.add_middleware(self)

    @property
    def timeout_ms(self) -> int:
        return int(self.broker.heartbeat_timeout)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.describe(threads=worker.worker_threads, prefetch=worker.queue_prefetch)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Stopping: its threads serve no new message, so `status` no longer counts them
        (the heartbeat goes on until `stop`, so its held messages stay its own)."""
        self._shape = {}
        with contextlib.suppress(redis.RedisError):  # else it expires after the timeout
            self._forget()

    def describe(self, *, threads: int, prefetch: int = 0) -> None:
        """What this process runs, said from the next beat on (`after_worker_boot` calls
        it with the Worker's figures; tests and other hosts of a consumer may too)."""
        self._shape = {
            "threads": threads,
            "prefetch": prefetch,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def beat(self) -> int:
        """One heartbeat; requeue the messages of brokers found dead. Returns how many."""
        broker = self.broker
        now = current_millis()
        shape: list[Any] = []
        if self._shape:
            for field, value in {**self._shape, "beat_ms": now}.items():
                shape += [field, value]
        moved = int(
            self._requeue_dead(
                keys=[broker.namespace],
                args=[now, self.timeout_ms, self.queue_name, broker.broker_id, *shape],
            )
        )
        if moved:
            log.warning("dead_worker_messages_requeued", count=moved)
        return moved

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except redis.RedisError as exc:  # Dramatiq's consumers report Redis trouble
                log.debug("heartbeat_failed", error=str(exc))
            self._stop.wait(self.every_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="broker-liveness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(redis.RedisError):  # else it expires after the timeout
            self._forget()

    def _forget(self) -> None:
        """No longer a worker `status` counts."""
        namespace, broker_id = self.broker.namespace, self.broker.broker_id
        pipe = self.broker.client.pipeline(transaction=False)
        pipe.delete(worker_key(namespace, broker_id))
        pipe.zrem(f"{namespace}:__workers__", broker_id)
        pipe.execute()
