"""A worker command killed with SIGKILL while it holds prefetched messages: the other
worker sends those jobs within 15 s (Dramatiq's heartbeats and ack sets, Liveness), not
after QUEUED_LEASE_S, and nothing is sent twice."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from broadcaster import schedule_many
from broadcaster.broker.liveness import held_job_ids
from broadcaster.broker.messages import QUEUE_NAME
from broadcaster.jobs.store import JobStore
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer
from tests.helpers import body, wait_until
from tests.system.harness import Process, Service


def _broker_id(process: Process) -> str | None:
    started = process.events("worker_started")
    return str(started[0]["broker_id"]) if started else None


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_killed_workers_prefetched_jobs_are_sent_within_seconds(
    db_url: str, store: JobStore, redis_url: str
) -> None:
    vendor = SandboxServer(
        SandboxConfig(per_minute=3000, per_hour=180_000, max_in_flight=4, latency_ms=20)
    ).start()
    names = [f"kill-{i}" for i in range(600)]
    ids = schedule_many(
        [
            {"payload": body(name=name, group_ext_id_list=[f"g-{name}"]), "corp_id": "corp-a"}
            for name in names
        ],
        store=store,
    ).job_ids
    name_of = dict(zip(ids, names, strict=True))
    service = Service(
        db_url,
        redis_url,
        vendor,
        WEIBAN_QUOTA_PER_MINUTE="3000",
        WEIBAN_QUOTA_PER_HOUR="180000",
        QUEUED_LEASE_S="300",
    )
    service.start("scheduler")
    doomed = service.start("worker", "--processes", "1", "--threads", "8")
    survivor = service.start("worker", "--processes", "1", "--threads", "8")
    broker = RedisBroker(client=redis.Redis.from_url(redis_url), middleware=[])
    try:
        doomed_id = wait_until(lambda: _broker_id(doomed), timeout=60)
        wait_until(lambda: _broker_id(survivor), timeout=60)
        wait_until(lambda: vendor.state.stats()["created"] >= 100, timeout=60)
        os.killpg(doomed.popen.pid, signal.SIGKILL)
        killed_at = time.time()
        doomed.popen.wait(10)
        held = held_job_ids(broker, doomed_id, QUEUE_NAME)
        unstarted = {name_of[i] for i in held if store.get(i).status == "queued"}
        assert unstarted, "the killed worker held prefetched jobs"

        def received() -> dict[str, float]:
            return {
                m["body"]["name"]: m["received_at"]
                for m in vendor.state.created_list()
                if m["body"]["name"] in unstarted
            }

        wait_until(lambda: len(received()) == len(unstarted), timeout=30, every=0.2)
        late = max(t - killed_at for t in received().values())
        print(f"\n{len(unstarted)} prefetched jobs of the killed worker sent {late:.2f}s after")
        assert late <= 15
        wait_until(lambda: vendor.state.stats()["created"] >= 590, timeout=60, every=0.5)
    finally:
        service.stop()
        vendor.stop()
        broker.client.close()
    counts: dict[str, int] = {}
    for message in vendor.state.created_list():
        counts[message["body"]["name"]] = counts.get(message["body"]["name"], 0) + 1
    assert {n: c for n, c in counts.items() if c > 1} == {}, "nothing sent twice"
    assert vendor.state.stats()["errors"] == {}, "zero 10052/10053"
    assert not [line for line in service.all_lines() if '"jobs_requeued"' in line], (
        "not the 300 s sweep"
    )
    assert any(
        json.loads(line).get("event") == "dead_worker_messages_requeued"
        for line in survivor.lines
        if line.startswith("{")
    )
