"""RabbitMQ as the broker, on the machine's RabbitMQ (a vhost of this module's own): the
confirmed batch lands persistent on Dramatiq's durable queue and a Dramatiq consumer takes
it; a batch RabbitMQ does not take (down, or unroutable) is handed back whole and goes out
when the broker is back; a message lost after its confirm is re-enqueued by the sweep;
and an unusable BROKER_URL is one line without its password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pytest

from broadcaster import schedule_many
from broadcaster.broker.dispatch import EnqueueFailed
from broadcaster.broker.messages import ACTOR_NAME, QUEUE_NAME
from broadcaster.broker.rabbitmq import RabbitDispatcher, check_broker, make_rabbitmq_broker
from broadcaster.errors import BrokerUnavailable, SettingsError
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.settings import load_settings
from scheduler.service import SchedulerService
from tests.conftest import make_settings
from tests.helpers import body
from tests.rabbitmq_vhost import unavailable, vhost
from tests.tcp_proxy import TcpProxy

NOW = datetime(2026, 12, 1, 1, 0, 0)
SECRET = "s3cret-amqp-pw"

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
pytestmark = pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "")


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    with vhost() as url:
        yield url


@pytest.fixture
def channel(amqp_url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A plain channel on the test vhost, the queue emptied before the test."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    check_broker(amqp_url)  # declares the queues as the dispatcher does
    channel.queue_purge(QUEUE_NAME)
    yield channel
    connection.close()


def queued_ids(channel: pika.adapters.blocking_connection.BlockingChannel) -> list[int]:
    """Take every message in the queue: their job ids, in queue order."""
    ids = []
    while True:
        method, properties, payload = channel.basic_get(QUEUE_NAME, auto_ack=True)
        if method is None:
            return ids
        message = json.loads(payload)
        assert message["actor_name"] == ACTOR_NAME and properties.delivery_mode == 2
        ids.append(message["args"][0])


def scheduler(store: JobStore, url: str, clock=lambda: NOW) -> SchedulerService:  # type: ignore[no-untyped-def]
    return SchedulerService(
        store,
        RabbitDispatcher(url, confirm_timeout_s=3),
        make_settings(queued_lease_s=60),
        clock=clock,
    )


@SQLITE
def test_a_confirmed_batch_is_durable_persistent_and_taken_by_a_dramatiq_consumer(
    amqp_url: str, channel, store: JobStore
) -> None:
    ids = schedule_many([{"payload": body(), "send_at": NOW}] * 5, store=store).job_ids
    assert scheduler(store, amqp_url).tick().enqueued == 5
    assert {store.get(i).status for i in ids} == {JobStatus.QUEUED}
    assert channel.queue_declare(QUEUE_NAME, passive=True).method.message_count == 5
    # Dramatiq's own consumer declares the same queue (same arguments, or RabbitMQ would
    # refuse it) and decodes our messages.
    broker = make_rabbitmq_broker(amqp_url, [])
    consumer = broker.consume(QUEUE_NAME, prefetch=5, timeout=1000)
    taken = [next(consumer) for _ in range(5)]
    assert [m.args[0] for m in taken] == ids and {m.actor_name for m in taken} == {ACTOR_NAME}
    consumer.close()  # unacked: RabbitMQ puts them back
    broker.close()
    assert sorted(queued_ids(channel)) == ids


@SQLITE
def test_a_batch_rabbitmq_does_not_take_is_handed_back_and_goes_out_when_it_can(
    amqp_url: str, channel, store: JobStore
) -> None:
    ids = schedule_many([{"payload": body(), "send_at": NOW}] * 4, store=store).job_ids
    service = scheduler(store, amqp_url)
    service.dispatcher.connect()  # type: ignore[attr-defined]
    channel.queue_delete(QUEUE_NAME)  # the broker cannot route the batch: returned
    with pytest.raises(EnqueueFailed, match="no queue broadcasts"):
        service.tick()
    assert {store.get(i).status for i in ids} == {JobStatus.SCHEDULED}, "handed back whole"
    assert store.queued_by_corp() == {}
    assert service.tick().enqueued == 4, "a new connection declares the queue again"
    assert sorted(queued_ids(channel)) == ids

    down = scheduler(store, "amqp://guest:" + SECRET + "@127.0.0.1:1/")
    more = schedule_many([{"payload": body(), "send_at": NOW}] * 2, store=store).job_ids
    with pytest.raises(EnqueueFailed) as refused:
        down.tick()
    assert "connection refused" in str(refused.value) and SECRET not in str(refused.value)
    assert {store.get(i).status for i in more} == {JobStatus.SCHEDULED}


@SQLITE
def test_a_message_lost_after_its_confirm_is_reenqueued_by_the_sweep(
    amqp_url: str, channel, store: JobStore
) -> None:
    ids = schedule_many([{"payload": body(), "send_at": NOW}] * 3, store=store).job_ids
    scheduler(store, amqp_url).tick()
    channel.queue_purge(QUEUE_NAME)  # the broker lost every message
    later = NOW + timedelta(seconds=61)
    scheduler(store, amqp_url, clock=lambda: later).sweep()
    assert sorted(queued_ids(channel)) == ids
    assert {store.get(i).status for i in ids} == {JobStatus.QUEUED}


def test_an_unusable_broker_is_one_line_naming_broker_url_without_its_password(
    tmp_path: Path,
) -> None:
    with pytest.raises(BrokerUnavailable) as caught:
        check_broker(f"amqp://guest:{SECRET}@127.0.0.1:5672/")
    assert "user or password was refused" in str(caught.value)
    assert SECRET not in str(caught.value) and "BROKER_URL" in str(caught.value)
    with pytest.raises(SettingsError) as bad_port:
        load_settings(broker_url=f"amqp://guest:{SECRET}@127.0.0.1:99999/", _env_file=None)
    assert str(bad_port.value).startswith("BROKER_URL: the port is not a number")
    assert SECRET not in str(bad_port.value)

    def doctor(url: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BROKER_URL": url, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
        return subprocess.run(
            [sys.executable, "-m", "broadcaster.cli.main", "doctor"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    bad = doctor(f"http://guest:{SECRET}@127.0.0.1:5672/")
    assert bad.returncode == 1
    assert "BROKER_URL: must be a RabbitMQ URL" in bad.stdout + bad.stderr
    down = doctor(f"amqp://guest:{SECRET}@127.0.0.1:1/")
    out = down.stdout + down.stderr
    assert "connection refused" in out and "amqp://guest:***@127.0.0.1:1/" in out
    for result in (bad, down):
        output = result.stdout + result.stderr
        assert SECRET not in output and "Traceback" not in output


@SQLITE
def test_readyz_checks_rabbitmq_and_names_it_when_unreachable(
    db_url: str, redis_url: str, amqp_url: str
) -> None:
    from fastapi.testclient import TestClient

    from broadcaster.bootstrap import Bootstrap
    from broadcaster.web.app import create_app
    from tests.web.conftest import web_settings

    for url, code in ((amqp_url, 200), (f"amqp://guest:{SECRET}@127.0.0.1:1/", 503)):
        boot = Bootstrap(make_settings(database_url=db_url, redis_url=redis_url, broker_url=url))
        with TestClient(create_app(boot, web_settings())) as client:
            answer = client.get("/readyz")
        boot.engine.dispose()
        assert answer.status_code == code, answer.text
        if code == 200:
            assert answer.json()["checks"]["rabbitmq"] == "ok"
        else:
            assert answer.json()["detail"] == "not ready: rabbitmq"
            assert "connection refused" in answer.json()["checks"]["rabbitmq"]
            assert SECRET not in answer.text and "amqp://guest:***@127.0.0.1:1/" in answer.text


@SQLITE
def test_a_connection_rabbitmq_dropped_while_idle_is_reopened_before_publishing(
    store: JobStore,
) -> None:
    """A scheduler with nothing due for a while: RabbitMQ (or the network) hangs up its
    silent connection; the next batch goes out on a new one, nothing handed back."""
    with vhost("broadcaster_idle") as url:
        parts = urlsplit(url)
        with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as proxy:
            auth = parts.netloc.rsplit("@", 1)[0]
            through_proxy = parts._replace(netloc=f"{auth}@127.0.0.1:{proxy.port}").geturl()
            service = scheduler(store, through_proxy)
            service.dispatcher.connect()  # type: ignore[attr-defined]
            assert proxy.accepted == 1

            proxy.drop()  # the idle connection is gone; the dispatcher has read nothing yet
            ids = schedule_many([{"payload": body(), "send_at": NOW}] * 3, store=store).job_ids
            assert service.tick().enqueued == 3

            assert proxy.accepted == 2, "the batch did not go out on a new connection"
            assert {store.get(i).status for i in ids} == {JobStatus.QUEUED}
            service.dispatcher.close()  # type: ignore[attr-defined]
            connection = pika.BlockingConnection(pika.URLParameters(url))
            assert sorted(queued_ids(connection.channel())) == ids
            connection.close()
