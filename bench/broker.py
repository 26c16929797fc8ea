"""RabbitMQ as the broker: enqueue and claim + enqueue throughput against raw baselines in
the same run, and the Redis broker for comparison.

    .venv/bin/python -m bench.broker [--quick]

Enqueue only (the same message bytes every way):
  raw pika, batch confirms   publish 500 on a confirm-mode channel, then wait for the acks
  broadcaster RabbitMQ       RabbitDispatcher.enqueue (the same, with its checks)
  Dramatiq, confirm each     RabbitmqBroker(confirm_delivery=True).enqueue per message
  broadcaster Redis          the pipelined Dispatcher (REDIS_URL's broker)
Claim + enqueue on PostgreSQL (due rows, batches of 500), A B A B:
  raw                        UPDATE … SKIP LOCKED … RETURNING, then raw pika batch confirms
  broadcaster RabbitMQ       JobStore.claim_due + RabbitDispatcher
  broadcaster Redis          JobStore.claim_due + Dispatcher

RabbitMQ: BENCH_AMQP_URL, or a vhost `broadcaster_bench` made with rabbitmqctl on the
machine's server (guest) and deleted after. Quick: 10k messages, 20k rows (< 60 s).
Full: 100k messages, 200k rows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import pika  # type: ignore[import-untyped]
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import Engine, text

from bench.claim import fill
from bench.common import fresh_database, redis_url, table
from broadcaster.broker.dispatch import Dispatcher, make_broker
from broadcaster.broker.messages import QUEUE_NAME, send_broadcast_message
from broadcaster.broker.rabbitmq import RabbitDispatcher, check_broker
from broadcaster.db import make_engine
from broadcaster.jobs.store import JobStore

NOW = datetime(2026, 12, 1)
BATCH = 500
BENCH_VHOST = "broadcaster_bench"


@contextmanager
def amqp_url() -> Iterator[str]:
    """BENCH_AMQP_URL as given, or a vhost of the bench's own on the local server."""
    given = os.environ.get("BENCH_AMQP_URL")
    if given:
        yield given
        return

    def ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)

    ctl("add_vhost", BENCH_VHOST)
    try:
        ctl("set_permissions", "-p", BENCH_VHOST, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{BENCH_VHOST}"
    finally:
        ctl("delete_vhost", BENCH_VHOST)


class RawPublisher:
    """The least a confirmed batch publish takes with pika: publish, then wait for acks."""

    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.acked_up_to, self.acked = 0, set[int]()
        ok: list[object] = []
        self.channel._impl.confirm_delivery(ack_nack_callback=self._ack, callback=ok.append)
        while not ok:
            self.connection.process_data_events(time_limit=0.1)
        self.published = 0
        self.properties = pika.BasicProperties(delivery_mode=2)

    def _ack(self, frame: pika.frame.Method) -> None:
        if frame.method.multiple:
            self.acked_up_to = max(self.acked_up_to, frame.method.delivery_tag)
        else:
            self.acked.add(frame.method.delivery_tag)

    def publish(self, bodies: list[bytes]) -> int:
        first = self.published + 1
        for data in bodies:
            self.channel._impl.basic_publish("", QUEUE_NAME, data, self.properties, True)
        self.published += len(bodies)
        while not all(
            t <= self.acked_up_to or t in self.acked for t in range(first, self.published + 1)
        ):
            self.connection.process_data_events(time_limit=0.001)
        return len(bodies)

    def close(self) -> None:
        self.connection.close()


def purge(url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    connection.channel().queue_purge(QUEUE_NAME)
    connection.close()


def timed(count: int, work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def enqueue_rows(url: str, client: redis.Redis, messages: int, per_message: int) -> list[dict]:
    batches = [list(range(i, min(i + BATCH, messages))) for i in range(0, messages, BATCH)]
    rows = []

    def raw() -> None:
        publisher = RawPublisher(url)
        for batch in batches:
            publisher.publish([send_broadcast_message(i).encode() for i in batch])
        publisher.close()

    def ours() -> None:
        dispatcher = RabbitDispatcher(url)
        for batch in batches:
            dispatcher.enqueue(batch)
        dispatcher.close()

    def dramatiq_each() -> None:
        broker = RabbitmqBroker(url=url, confirm_delivery=True, middleware=[])
        broker.declare_queue(QUEUE_NAME)
        for i in range(per_message):
            broker.enqueue(send_broadcast_message(i))
        broker.close()

    def redis_ours() -> None:
        dispatcher = Dispatcher(make_broker(client))
        for batch in batches:
            dispatcher.enqueue(batch)

    for who, count, work in (
        ("raw pika, batch confirms", messages, raw),
        ("broadcaster RabbitMQ", messages, ours),
        ("raw pika, batch confirms", messages, raw),
        ("broadcaster RabbitMQ", messages, ours),
        ("Dramatiq, confirm each", per_message, dramatiq_each),
        ("broadcaster Redis", messages, redis_ours),
    ):
        client.flushdb()
        rate = timed(count, work)
        purge(url)
        rows.append({"test": "enqueue", "who": who, "messages": count, "per s": rate})
    return rows


def claim_rows(url: str, client: redis.Redis, due: int) -> list[dict]:
    engine = make_engine(fresh_database("postgresql"))
    fill(engine, due, 0)
    store = JobStore(engine, default_corp="corp-a")
    statement = text(
        "UPDATE broadcast_jobs SET status = 'queued' WHERE id IN (SELECT id FROM broadcast_jobs "
        "WHERE status = 'scheduled' AND send_at <= :now LIMIT 500 FOR UPDATE SKIP LOCKED) "
        "RETURNING id"
    )

    def raw() -> None:
        publisher = RawPublisher(url)
        while True:
            with engine.begin() as connection:
                ids = connection.execute(statement, {"now": NOW}).scalars().all()
            if not ids:
                break
            publisher.publish([send_broadcast_message(i).encode() for i in ids])
        publisher.close()

    def ours_with(dispatcher: RabbitDispatcher | Dispatcher) -> Callable[[], None]:
        def run() -> None:
            while claimed := store.claim_due(NOW, BATCH, 300).claimed:
                dispatcher.enqueue(job.id for job in claimed)

        return run

    rabbit = RabbitDispatcher(url)
    rows = []
    for who, work in (
        ("raw SKIP LOCKED + pika", raw),
        ("broadcaster RabbitMQ", ours_with(rabbit)),
        ("raw SKIP LOCKED + pika", raw),
        ("broadcaster RabbitMQ", ours_with(rabbit)),
        ("broadcaster Redis", ours_with(Dispatcher(make_broker(client)))),
    ):
        reset(engine)
        client.flushdb()
        rate = timed(due, work)
        purge(url)
        rows.append({"test": "claim+enqueue", "who": who, "messages": due, "per s": rate})
    rabbit.close()
    engine.dispose()
    return rows


def reset(engine: Engine) -> None:
    """Every row due again, as before the first run."""
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE broadcast_jobs SET status = 'scheduled', lease_until = NULL")
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE broadcast_jobs"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    messages, per_message, due = (
        (10_000, 2_000, 20_000) if args.quick else (100_000, 10_000, 200_000)
    )
    client = redis.Redis.from_url(redis_url())
    with amqp_url() as url:
        print(check_broker(url), flush=True)
        rows = enqueue_rows(url, client, messages, per_message)
        rows += claim_rows(url, client, due)
    print(table(rows, ["test", "who", "messages", "per s"]))
    for test in ("enqueue", "claim+enqueue"):
        ours = [
            r["per s"] for r in rows if r["test"] == test and r["who"] == "broadcaster RabbitMQ"
        ]
        raw = [r["per s"] for r in rows if r["test"] == test and r["who"].startswith("raw")]
        print(f"{test}: broadcaster RabbitMQ ÷ raw = {sum(ours) / sum(raw):.2f}")


if __name__ == "__main__":
    main()
