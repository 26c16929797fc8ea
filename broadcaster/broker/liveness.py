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
to the same `HEARTBEAT_TIMEOUT_MS`, so Dramatiq's random maintenance agrees on who is
dead. A message requeued from a worker that was only slow is a harmless duplicate: the
actor re-reads the job and only the compare-and-set that moves it `queued` -> `sending`
calls the vendor. A job already `sending` when its worker died is ignored on redelivery;
the sweep settles it (`unknown`).

Redis only. With BROKER_URL (RabbitMQ) no `Liveness` runs: RabbitMQ returns a consumer's
unacked messages to the queue the moment its connection drops (a killed worker), in their
place, and a worker's connection that goes silent is closed by the server's heartbeats.
"""

from __future__ import annotations

import json
import threading

import redis
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

log = structlog.get_logger("broadcaster.worker")

HEARTBEAT_TIMEOUT_MS = 6_000
"""A broker silent this long is dead: its unacked messages are requeued. Live workers beat
every `BEAT_EVERY_S`, so only a process stalled for six beats (or cut from Redis) is
taken for dead, and then the cost is a duplicate message the actor ignores."""

BEAT_EVERY_S = 1.0
"""How often each worker process beats (and looks for dead ones)."""


REQUEUE_DEAD = """
-- KEYS: namespace ; ARGV: now_ms, heartbeat_timeout_ms, queue_name, own broker id
-- Dramatiq's dispatch.lua maintenance for one queue, with LPUSH in place of RPUSH.
local ns, queue_name = KEYS[1], ARGV[3]
local heartbeats = ns .. ':__heartbeats__'
redis.call('ZADD', heartbeats, ARGV[1], ARGV[4])
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
return moved
"""


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


class Liveness:
    """Beats for `broker` and requeues dead brokers' messages of `queue_name`."""

    def __init__(
        self, broker: RedisBroker, queue_name: str, *, every_s: float = BEAT_EVERY_S
    ) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.every_s = every_s
        self._requeue_dead = broker.client.register_script(REQUEUE_DEAD)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> int:
        """One heartbeat; requeue the messages of brokers found dead. Returns how many."""
        broker = self.broker
        moved = int(
            self._requeue_dead(
                keys=[broker.namespace],
                args=[
                    current_millis(),
                    broker.heartbeat_timeout,
                    self.queue_name,
                    broker.broker_id,
                ],
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
