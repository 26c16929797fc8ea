"""RabbitMQ as the broker (BROKER_URL=amqp://...): the scheduler's confirmed batch publish,
the worker's Dramatiq broker, and the one-line errors both give when it is unreachable.

Redis keeps the quota and the token cache either way; only the `send_broadcast` messages
move. The queue is Dramatiq's own (`broadcasts`, durable, with its `.DQ` and `.XQ`
companions, declared with the arguments Dramatiq's RabbitmqBroker uses, so the worker's
declaration of the same queues agrees), and every message is persistent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]
import structlog
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.middleware import Middleware
from pika.adapters.blocking_connection import (  # type: ignore[import-untyped]
    BlockingChannel,
    BlockingConnection,
)

from broadcaster.broker.dispatch import EnqueueFailed
from broadcaster.broker.messages import QUEUE_NAME, send_broadcast_message
from broadcaster.errors import BrokerUnavailable
from broadcaster.settings import redact_url

log = structlog.get_logger("broadcaster.broker")

CONFIRM_TIMEOUT_S = 10.0
"""A batch RabbitMQ has not confirmed within this is handed back (a broker under a memory
or disk alarm blocks publishers: without a bound, the scheduler would hang with it)."""

_PERSISTENT = pika.BasicProperties(delivery_mode=2)


def connection_parameters(url: str) -> pika.URLParameters:
    """BROKER_URL's parameters, with bounds on connecting (5 s) and on being blocked by
    a broker alarm (30 s), unless the URL's query sets its own."""
    parameters = pika.URLParameters(url)
    query = url.partition("?")[2]
    if "socket_timeout" not in query:
        parameters.socket_timeout = 5
    if "blocked_connection_timeout" not in query:
        parameters.blocked_connection_timeout = 30
    if "connection_attempts" not in query:
        parameters.connection_attempts = 1
    return parameters


def unreachable(url: str, exc: BaseException) -> BrokerUnavailable:
    """The one line an operator reads when RabbitMQ cannot be used: where (the password
    hidden), why, and the fix."""
    return BrokerUnavailable(
        f"RabbitMQ at {redact_url(url)} (BROKER_URL) is not usable: {reason(exc)}; "
        "start RabbitMQ or fix BROKER_URL (unset it to carry the messages on Redis)"
    )


def reason(exc: BaseException) -> str:
    """pika's exceptions, in a few words (its own text nests three levels deep)."""
    if isinstance(exc, _NotConfirmed):
        return str(exc)
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return "the user or password was refused"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return "the user may not use this vhost (or the vhost does not exist)"
    if isinstance(exc, pika.exceptions.AMQPConnectionError):
        text = repr(exc)
        for words, said in (
            ("ConnectionRefused", "connection refused"),
            ("gaierror", "the host name does not resolve"),
            ("timed out", "no answer (timed out)"),
            ("Timeout", "no answer (timed out)"),
        ):
            if words in text:
                return said
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]


def declare_queues(channel: BlockingChannel) -> None:
    """`broadcasts`, `.DQ` and `.XQ`, durable, as Dramatiq's RabbitmqBroker declares them
    (a queue declared twice with other arguments is refused by RabbitMQ)."""
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(QUEUE_NAME)}
    channel.queue_declare(queue=QUEUE_NAME, durable=True, arguments=arguments)
    channel.queue_declare(queue=dq_name(QUEUE_NAME), durable=True, arguments=arguments)
    channel.queue_declare(
        queue=xq_name(QUEUE_NAME), durable=True, arguments={"x-message-ttl": DEAD_MESSAGE_TTL}
    )


def check_broker(url: str) -> str:
    """Connect, declare the queue, and say how many messages wait in it (doctor, /readyz,
    the worker's start). Raises BrokerUnavailable with the one line."""
    try:
        connection = BlockingConnection(connection_parameters(url))
        try:
            channel = connection.channel()
            declare_queues(channel)
            waiting = channel.queue_declare(queue=QUEUE_NAME, passive=True).method.message_count
            version = connection._impl.server_properties.get("version", b"?")
        finally:
            connection.close()
    except (pika.exceptions.AMQPError, OSError, ValueError) as exc:
        raise unreachable(url, exc) from None
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    return f"RabbitMQ {version} at {redact_url(url)} answers; {waiting} message(s) in {QUEUE_NAME}"


def broker_in_use(url: str | None) -> str:
    """Which broker carries the jobs' messages, for doctor and status (password hidden)."""
    if not url:
        return "Redis (REDIS_URL; BROKER_URL unset)"
    return f"RabbitMQ at {redact_url(url)} (BROKER_URL)"


def make_rabbitmq_broker(url: str, middleware: list[Middleware]) -> RabbitmqBroker:
    """The worker's broker. No liveness thread is needed: RabbitMQ puts a consumer's unacked
    messages back in the queue the moment its connection drops (a killed worker), where
    Redis needed heartbeats (`liveness.py`)."""
    broker = RabbitmqBroker(url=url, middleware=middleware)
    broker.parameters = connection_parameters(url)
    return broker


class DramatiqLogBridge(logging.Handler):
    """Dramatiq's own log records (stdlib logging, no handler: Python printed them raw,
    some over three lines) as one JSON line each. The connection errors its consumers
    report while RabbitMQ is away say where (the password hidden), that the worker
    reconnects by itself, and the fix; an ack lost with the connection is named for
    what it costs (a redelivery, which the actor ignores). No traceback is printed."""

    def __init__(self, url: str) -> None:
        super().__init__(logging.WARNING)
        self.where = redact_url(url)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage().splitlines()[0][:300]
        except Exception:  # a record whose arguments do not format: its template
            text = str(record.msg).splitlines()[0][:300]
        if "connection error" in text and "post_process_message" not in text:
            log.error(
                "broker_unreachable",
                error=f"RabbitMQ at {self.where} (BROKER_URL) is not usable: "
                f"{text.partition(': ')[2] or text}; the worker reconnects by itself; "
                "start RabbitMQ or fix BROKER_URL",
            )
        elif "post_process_message" in text or "Failed to ack" in text:
            log.warning(
                "ack_lost",
                detail=text,
                effect="RabbitMQ redelivers the message; its job is not sent twice",
            )
        else:
            level = "error" if record.levelno >= logging.ERROR else "warning"
            log.log(logging.getLevelName(level.upper()), "dramatiq", detail=text)


def bridge_dramatiq_logs(url: str) -> None:
    """Route the `dramatiq` logger through `DramatiqLogBridge` (idempotent)."""
    logger = logging.getLogger("dramatiq")
    if not any(isinstance(h, DramatiqLogBridge) for h in logger.handlers):
        logger.addHandler(DramatiqLogBridge(url))
    logger.propagate = False


class _Confirms:
    """Publisher confirms for one channel: which delivery tags RabbitMQ acked, and whether
    it nacked or returned any (a return: unroutable, i.e. the queue is gone)."""

    def __init__(self) -> None:
        self.acked_up_to = 0  # every tag <= this is acked (acks with multiple=True)
        self.acked: set[int] = set()  # single acks above it
        self.refused = ""

    def on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self.refused = f"RabbitMQ refused (nack) delivery tag {method.delivery_tag}"
        elif method.multiple:
            self.acked_up_to = max(self.acked_up_to, method.delivery_tag)
            self.acked = {tag for tag in self.acked if tag > self.acked_up_to}
        else:
            self.acked.add(method.delivery_tag)

    def on_return(self, *_args: object) -> None:
        self.refused = f"RabbitMQ returned a message: no queue {QUEUE_NAME} to route it to"

    def all_acked(self, first: int, last: int) -> bool:
        return all(t <= self.acked_up_to or t in self.acked for t in range(first, last + 1))


class RabbitDispatcher:
    """Enqueues `send_broadcast(job_id)` messages on RabbitMQ, a batch per confirm wait.

    Waiting for each message's confirm (Dramatiq's `RabbitmqBroker(confirm_delivery=True)`)
    costs a round trip per message: 0.45-1.5k messages/s on this 2-core machine's RabbitMQ
    against 5-10k/s for a batch of 500 published and then confirmed (bench/broker.py, as
    fast as raw pika doing the same). So a batch is
    published on a channel in confirm mode, then the dispatcher waits for RabbitMQ to ack
    every one of its delivery tags (a persistent message on a durable queue is acked once
    RabbitMQ has written it to disk).

    Failure semantics, exactly: `enqueue` returns the ids only when every message of the
    batch is acked. Anything else (a nack, a message returned unroutable, the connection
    or channel closing, no confirm within CONFIRM_TIMEOUT_S) raises `EnqueueFailed` for
    the whole batch and drops the connection, so a late confirm of the old channel can
    never be counted for a later batch. The caller hands every row of the batch back
    (`release`: `pending` again), as for Redis. Some of its messages may have landed: the
    actor ignores a message whose row is not `queued`, and once the row is claimed again
    its old and new messages race for the `queued` -> `sending` compare-and-set, so the job
    is still sent once. A message lost after its ack (a queue purged, a node lost) is
    recovered by the lease sweep (`QUEUED_LEASE_S`).

    One connection, opened on first use and again after a failure; a connection found
    closed *before* anything is published (an idle one RabbitMQ dropped for missed
    heartbeats) is reopened and the batch published on it, as nothing was sent. Calls are
    serialised (the scheduler's claim and sweep run on two threads; pika's connections are
    not thread-safe).
    """

    def __init__(self, url: str, *, confirm_timeout_s: float = CONFIRM_TIMEOUT_S) -> None:
        self.url = url
        self.confirm_timeout_s = confirm_timeout_s
        self._lock = threading.Lock()
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._confirms = _Confirms()
        self._published = 0  # delivery tags used on the current channel

    def connect(self) -> None:
        """Open the connection now (the scheduler's start): BrokerUnavailable if it fails."""
        with self._lock:
            self._open()

    def _open(self) -> None:
        self._drop()
        try:
            connection = BlockingConnection(connection_parameters(self.url))
            channel = connection.channel()
            declare_queues(channel)
            confirms = _Confirms()
            selected: list[object] = []
            # pika's BlockingChannel.confirm_delivery() waits for each publish's confirm;
            # the channel underneath takes a callback, so a batch is confirmed in one wait.
            channel._impl.confirm_delivery(
                ack_nack_callback=confirms.on_confirm, callback=selected.append
            )
            channel.add_on_return_callback(confirms.on_return)
            deadline = time.monotonic() + self.confirm_timeout_s
            while not selected and time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.1)
            if not selected:
                raise pika.exceptions.AMQPChannelError("confirm mode not acknowledged")
        except (pika.exceptions.AMQPError, OSError, ValueError) as exc:
            raise unreachable(self.url, exc) from None
        self._connection, self._channel = connection, channel
        self._confirms, self._published = confirms, 0

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()

    def _ready(self) -> BlockingChannel:
        """An open channel: the current one if it still answers, else a new connection."""
        if self._connection is not None and self._connection.is_open:
            try:
                self._connection.process_data_events(time_limit=0)  # heartbeats; a close
                assert self._channel is not None
                if self._channel.is_open:
                    return self._channel
            except (pika.exceptions.AMQPError, OSError):
                pass
        self._open()
        assert self._channel is not None
        return self._channel

    def enqueue(self, job_ids: Iterable[int]) -> list[int]:
        """Publish in order and wait for every confirm; `EnqueueFailed` hands the whole
        batch back (see the class's docstring for why that is exact)."""
        ids = list(job_ids)
        if not ids:
            return []
        with self._lock:
            try:
                channel = self._ready()
            except BrokerUnavailable as exc:
                raise EnqueueFailed(str(exc)) from None
            first = self._published + 1
            try:
                for job_id in ids:
                    channel._impl.basic_publish(
                        exchange="",
                        routing_key=QUEUE_NAME,
                        body=send_broadcast_message(job_id).encode(),
                        properties=_PERSISTENT,
                        mandatory=True,
                    )
                    self._published += 1
                self._wait(first, self._published)
            except (pika.exceptions.AMQPError, OSError, _NotConfirmed) as exc:
                self._drop()
                raise EnqueueFailed(str(unreachable(self.url, exc))) from None
        return ids

    def _wait(self, first: int, last: int) -> None:
        assert self._connection is not None
        confirms = self._confirms
        deadline = time.monotonic() + self.confirm_timeout_s
        while True:
            self._connection.process_data_events(time_limit=0)
            if confirms.refused:
                raise _NotConfirmed(confirms.refused)
            if confirms.all_acked(first, last):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise _NotConfirmed(f"no confirm within {self.confirm_timeout_s:g} s")
            self._connection.sleep(min(left, 0.001))

    def close(self) -> None:
        with self._lock:
            self._drop()


class _NotConfirmed(Exception):
    """A batch RabbitMQ did not ack in full (kept inside this module)."""
