"""One worker process: a broker (Redis, or RabbitMQ when BROKER_URL is set), the
`send_broadcast` actor, a Dramatiq Worker.

Built explicitly from settings (no broker chosen at import time), so a test, `worker` and
`run` all wire it the same way. The actor is registered under the name and queue the
scheduler enqueues to (`broadcaster.broker.messages`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import dramatiq
import structlog
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from broadcaster.bootstrap import Bootstrap
from broadcaster.broker.liveness import Liveness
from broadcaster.broker.messages import ACTOR_NAME, QUEUE_NAME
from broadcaster.broker.rabbitmq import (
    bridge_dramatiq_logs,
    check_broker,
    make_rabbitmq_broker,
)
from broadcaster.broker.wake import WakingRedisBroker
from broadcaster.errors import BroadcasterError, CredentialsRejected
from broadcaster.ops.readiness import wait_for
from broadcaster.process_metrics import TimedVendor, WorkerMetrics
from broadcaster.redis_conn import connect
from broadcaster.settings import Settings
from broadcaster.vendor import WeibanClient
from worker.lanes import CorpLanes
from worker.sender import Sender

log = structlog.get_logger("broadcaster.worker")


class BindJobContext(Middleware):
    """Every log line of an actor run carries its job id (structlog contextvars)."""

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        structlog.contextvars.bind_contextvars(job_id=message.args[0] if message.args else None)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        structlog.contextvars.clear_contextvars()

    after_skip_message = after_process_message


@dataclass
class WorkerApp:
    broker: dramatiq.Broker
    worker: dramatiq.Worker
    sender: Sender
    client: WeibanClient
    liveness: Liveness | None
    """Redis only: RabbitMQ requeues a dead consumer's unacked messages by itself."""

    @property
    def broker_id(self) -> str:
        """Who holds a message: the Redis broker's id, or `rabbitmq` (RabbitMQ tracks its
        consumers by connection)."""
        return str(getattr(self.broker, "broker_id", "rabbitmq"))

    def start(self) -> None:
        if self.liveness is not None:
            self.liveness.start()
        self.worker.start()

    def stop(self, timeout_s: float) -> None:
        """Stop taking messages; give calls in flight `timeout_s` to finish and commit
        (beating all the while, so no peer takes this process's messages for a dead one's)."""
        self.worker.stop(timeout=int(timeout_s * 1000))
        if self.liveness is not None:
            self.liveness.stop()
        self.client.close()


def build_sender(
    settings: Settings, boot: Bootstrap | None = None, metrics: WorkerMetrics | None = None
) -> tuple[Sender, WeibanClient]:
    """The actor's body, wired from settings (through `boot` when the caller has one)."""
    boot = boot or Bootstrap(settings)
    store = boot.store  # the database first: a worker waits for it before reading the corps
    vendor = TimedVendor(boot.vendor, metrics) if metrics else boot.vendor
    corps = boot.corps
    lanes = CorpLanes(lambda corp_id: corps.limits(corp_id).max_in_flight)
    return Sender(store, boot.quota, vendor, settings, lanes=lanes), boot.vendor


def check_vendor(boot: Bootstrap, settings: Settings, stop: threading.Event) -> None:
    """Wait until the vendor answers a token request for the default corp (unreachable:
    waited for, like the database). A refused secret is that one corp's trouble: a
    warning, and the worker starts and serves every corp; that corp's jobs wait for a
    fixed secret without using attempts, as any corp's do (the refusal is remembered
    30 s per secret, so the token API is not hammered)."""
    corp_id = settings.weiban_corp_id
    if not corp_id or settings.weiban_secret is None:
        return

    def attempt() -> None:
        try:
            boot.vendor.tokens.get(corp_id)
        except CredentialsRejected as exc:
            log.warning("corp_secret_refused", corp_id=corp_id, error=str(exc))

    wait_for(attempt, "vendor", stop)


def build_worker_app(
    settings: Settings, *, threads: int, prefetch: int = 0, stop: threading.Event | None = None
) -> WorkerApp:
    """Wait for the database, Redis, the broker and the vendor, then wire a Dramatiq
    Worker."""
    stop = stop or threading.Event()
    boot = Bootstrap(settings, wait=stop)
    metrics = WorkerMetrics.in_this_process()  # None unless the supervisor serves metrics
    sender, client = build_sender(settings, boot, metrics)
    check_vendor(boot, settings, stop)
    broker, liveness = build_broker(settings, boot, stop)

    def send_broadcast(job_id: int) -> None:
        try:
            outcome = sender.send(job_id)
            if metrics is not None:
                metrics.handled(outcome)
        except BroadcasterError as exc:
            # The row stays `queued` (or `sending`): the sweep takes it from there.
            log.error("send_failed", job_id=job_id, error=str(exc))

    dramatiq.Actor(
        send_broadcast,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=QUEUE_NAME,
        priority=0,
        options={},
    )
    # worker_timeout: how often threads look up from an empty work queue (to stop). An idle
    # Redis consumer does not poll at this pace: it waits on a wake-up (broker/wake.py).
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    # Dramatiq prefetches 2 x threads by default; a message prefetched is a message
    # another process cannot take. Threads + 2 keeps every thread fed.
    worker.queue_prefetch = prefetch or threads + 2
    return WorkerApp(broker, worker, sender, client, liveness)


def build_broker(
    settings: Settings, boot: Bootstrap, stop: threading.Event
) -> tuple[dramatiq.Broker, Liveness | None]:
    """RabbitMQ when BROKER_URL is set (waited for at start, one line per try naming it;
    later losses are Dramatiq's to reconnect), else Redis with its `Liveness`."""
    if settings.broker_url:
        url = settings.broker_url
        bridge_dramatiq_logs(url)
        wait_for(lambda: check_broker(url), "broker", stop)
        return make_rabbitmq_broker(url, [BindJobContext()]), None
    # The broker gets a client (and connection pool) of its own: sharing the quota's cost
    # ~1 ms of CPU per job in bench.overhead (6.1-6.5 s vs 7.7 s per 1000 jobs).
    redis_client = connect(boot.redis_url)
    # A worker killed with messages prefetched: `Liveness` (every process beats each
    # second) puts them back at the head of the queue once silent for
    # BROKER_HEARTBEAT_TIMEOUT_S; the broker's own random maintenance uses the same timeout.
    timeout_s = settings.broker_heartbeat_timeout_s
    broker = WakingRedisBroker(
        client=redis_client,
        middleware=[BindJobContext()],
        heartbeat_timeout=round(timeout_s * 1000),
    )
    return broker, Liveness(broker, QUEUE_NAME, timeout_s=timeout_s)
