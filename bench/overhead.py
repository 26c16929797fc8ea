"""Overhead per job: worker CPU ms, Redis commands and CPU, database transactions per
1000 sent jobs (sandbox at zero latency, quota lifted), against a raw loop of Redis
LPUSH/BRPOP plus an httpx POST to the same sandbox. Target ≤ 2.5× the raw loop's CPU (issue 14).

    .venv/bin/python -m bench.overhead [--quick] [--jobs N] [--rounds N]

Rounds go A B A B (raw, ours); the ratio printed is of the medians, each round's too.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import httpx
import redis
from sqlalchemy import text

from bench.common import (
    fresh_database,
    median,
    redis_url,
    service,
    service_env,
    stop,
    store_for,
    table,
    wait_for,
)
from bench.quota import BODY
from broadcaster import schedule_many
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            command = (entry / "cmdline").read_bytes()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
                found.append(int(entry.name))  # the worker, not multiprocessing's tracker
    return found


def redis_commands(client: redis.Redis) -> int:
    """Commands the server ran, those a Lua script calls included."""
    return int(client.info("stats")["total_commands_processed"])


def redis_cpu_seconds(client: redis.Redis) -> float:
    """The Redis server's own CPU (user + sys), as it reports it: what a job costs Redis."""
    usage = client.info("cpu")
    return float(usage["used_cpu_user"]) + float(usage["used_cpu_sys"])


def db_transactions(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                    "WHERE datname = current_database()"
                )
            ).scalar_one()
        )


def ours(jobs: int) -> dict:
    db, broker = fresh_database("postgresql"), redis_url()
    sandbox = SandboxServer(
        SandboxConfig(per_minute=10**6, per_hour=10**8, max_in_flight=1000, latency_ms=0)
    ).start()
    store = store_for(db)
    engine = store.engine
    env = service_env(
        db,
        broker,
        sandbox.url,
        per_minute=10**6,
        per_hour=10**8,
        WEIBAN_MAX_IN_FLIGHT="1000",
        SCHEDULER_ADMIT_HORIZON_S="1000",
    )
    scheduler = service(["scheduler"], env)
    worker = service(["worker", "--processes", "1", "--threads", "8"], env)
    client = redis.Redis.from_url(broker)
    try:
        schedule_many([{"payload": {**BODY, "name": "warm"}}], store=store)
        wait_for(lambda: sandbox.state.stats()["created"] >= 1, timeout=60)
        child = wait_for(lambda: children(worker.pid), timeout=10)[0]
        cpu0, redis0, db0 = cpu_seconds(child), redis_commands(client), db_transactions(engine)
        redis_cpu0 = redis_cpu_seconds(client)
        started = time.perf_counter()
        schedule_many([{"payload": BODY} for _ in range(jobs)], store=store)
        wait_for(lambda: sandbox.state.stats()["created"] >= jobs + 1, timeout=300)
        elapsed = time.perf_counter() - started
        cpu1, redis1, db1 = cpu_seconds(child), redis_commands(client), db_transactions(engine)
        redis_cpu1 = redis_cpu_seconds(client)
    finally:
        stop(worker)
        stop(scheduler)
        sandbox.stop()
        engine.dispose()
    return {
        "who": "broadcaster worker",
        "cpu_ms/1000": (cpu1 - cpu0) * 1e6 / jobs,
        "redis_cmds/1000": (redis1 - redis0) * 1000 / jobs,
        "redis_cpu_ms/1000": (redis_cpu1 - redis_cpu0) * 1e6 / jobs,
        "db_txns/1000": (db1 - db0) * 1000 / jobs,
        "jobs/s": jobs / elapsed,
    }


def _raw_loop(broker: str, vendor_url: str, jobs: int, results) -> None:  # type: ignore[no-untyped-def]
    """In its own process, so its CPU time is its own (the sandbox stays outside)."""
    client = redis.Redis.from_url(broker)
    http = httpx.Client(base_url=vendor_url)
    token = http.post(
        "/open-api/access_token/get", json={"corp_id": "corp-a", "secret": "sandbox-secret"}
    ).json()
    cpu0, started = time.process_time(), time.perf_counter()
    for number in range(jobs):
        client.lpush("bench:raw", number)
        client.brpop(["bench:raw"], timeout=1)
        http.post(
            "/open-api/customer_group_msg/add",
            params={"access_token": token["access_token"]},
            json=BODY,
        )
    results.put((time.process_time() - cpu0, time.perf_counter() - started))


def raw(jobs: int) -> dict:
    import multiprocessing

    broker = redis_url()
    client = redis.Redis.from_url(broker)
    sandbox = SandboxServer(
        SandboxConfig(per_minute=10**6, per_hour=10**8, max_in_flight=1000, latency_ms=0)
    ).start()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    redis0, redis_cpu0 = redis_commands(client), redis_cpu_seconds(client)
    loop = context.Process(target=_raw_loop, args=(broker, sandbox.url, jobs, results))
    loop.start()
    cpu, elapsed = results.get(timeout=300)
    loop.join()
    redis1, redis_cpu1 = redis_commands(client), redis_cpu_seconds(client)
    sandbox.stop()
    return {
        "who": "raw LPUSH/BRPOP + POST",
        "cpu_ms/1000": cpu * 1e6 / jobs,
        "redis_cmds/1000": (redis1 - redis0) * 1000 / jobs,
        "redis_cpu_ms/1000": (redis_cpu1 - redis_cpu0) * 1e6 / jobs,
        "db_txns/1000": 0.0,
        "jobs/s": jobs / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    jobs = args.jobs or (1000 if args.quick else 5000)
    rounds = args.rounds or (1 if args.quick else 2)
    rows = []
    for _round in range(rounds):
        rows += [raw(jobs), ours(jobs)]
    columns = ["who", "cpu_ms/1000", "redis_cmds/1000", "redis_cpu_ms/1000", "db_txns/1000"]
    print(table(rows, [*columns, "jobs/s"]))
    raw_cpu = [row["cpu_ms/1000"] for row in rows[0::2]]
    our_cpu = [row["cpu_ms/1000"] for row in rows[1::2]]
    each = ", ".join(f"{ours_ / raw_:.2f}" for raw_, ours_ in zip(raw_cpu, our_cpu, strict=True))
    ratio = median(our_cpu) / median(raw_cpu)
    print(f"CPU ratio broadcaster ÷ raw: {ratio:.2f} (rounds: {each}; target ≤ 2.5)")


if __name__ == "__main__":
    main()
