"""Quota utilisation: a backlog against the sandbox at Weiban's shape, scaled (3000/min,
4 in flight, 20 ms calls), with 1, 2 and 4 worker processes, against two baselines run in
the same session: Dramatiq's documented rate-limit pattern (WindowRateLimiter raising
RateLimitExceeded under the default Retries) and a single-threaded sleep pacer.

    .venv/bin/python -m bench.quota [--quick] [--seconds 70] [--rounds 3]

Figures: sent/s ÷ what the quota allows (min(per_minute/60, in_flight/latency)), the worst
sliding-60 s count ÷ the limit (runs of 60 s or more), peak in flight, 10052/10053 count.
A chart of send rate and in-flight over time is saved to bench/out/quota.png.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import (
    OUT,
    created_times,
    fresh_database,
    median,
    rate_between,
    redis_url,
    service,
    service_env,
    stop,
    store_for,
    table,
    wait_for,
    worst_window,
)
from broadcaster import schedule_many
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer

PER_MINUTE, IN_FLIGHT, LATENCY_MS = 3000, 4, 20
ALLOWED = min(PER_MINUTE / 60, IN_FLIGHT / (LATENCY_MS / 1000))
BODY = {
    "name": "bench",
    "staff_ext_id_list": ["s"],
    "group_ext_id_list": ["g"],
    "create_staff_ext_id": "s",
    "text": "hello",
}


def body(number: int) -> dict[str, Any]:
    """BODY to a group of its own: a group's monthly cap never rejects a benchmark job."""
    return {**BODY, "group_ext_id_list": [f"g{number}"]}


def memory_per_corp() -> dict[str, float]:
    """Redis memory of one corp's quota after a full hour at Weiban's shape (600/min,
    36000/h), replayed in seconds through the reservation script on a stand-in clock;
    baseline: the call log it replaced (a sorted set with a member per call in the hour),
    built in the same Redis from the same moments."""
    import uuid

    import redis as redis_lib

    from broadcaster.corps import QuotaLimits
    from broadcaster.quota.limiter import RedisQuota, interval_ms

    client = redis_lib.Redis.from_url(redis_url())
    limits = QuotaLimits(per_minute=600, per_hour=36000, max_in_flight=4)
    quota = RedisQuota(client, lambda _corp: limits, slot_lease_s=25)
    start_ms = time.time() * 1000
    now, moments, refused = start_ms, [], 0
    while now < start_ms + 3_600_000:
        status, value = quota.reserve(
            "corp-a", "create", uuid.uuid4().hex, max_wait_s=5, now_ms=now
        )
        if status in ("slot", "ok"):
            moments.append(now + value)
            now += value + interval_ms(limits)
        else:
            refused += 1
            now += value
    log_key = "bench:old-call-log"
    for chunk in range(0, len(moments), 5000):
        client.zadd(log_key, {uuid.uuid4().hex: m for m in moments[chunk : chunk + 5000]})
    old = int(client.memory_usage(log_key, samples=0) or 0)
    new = quota.memory_bytes("corp-a", "create")
    client.close()
    return {"calls": len(moments), "refused": refused, "bytes": new, "log_bytes": old}


def vendor() -> SandboxServer:
    return SandboxServer(
        SandboxConfig(
            per_minute=PER_MINUTE, per_hour=10**7, max_in_flight=IN_FLIGHT, latency_ms=LATENCY_MS
        )
    ).start()


class InFlightSampler(threading.Thread):
    """Samples the sandbox's in-flight count, for the chart."""

    def __init__(self, sandbox: SandboxServer) -> None:
        super().__init__(daemon=True)
        self.sandbox, self.samples, self.running = sandbox, [], True

    def run(self) -> None:
        while self.running:
            corps = self.sandbox.state.stats()["corps"]
            self.samples.append((time.time(), sum(c["in_flight"] for c in corps.values())))
            time.sleep(0.01)


def measure(sandbox: SandboxServer, started: float, seconds: float) -> dict[str, Any]:
    times = created_times(sandbox)
    steady_from = started + min(2.0, seconds / 5)
    stats = sandbox.state.stats()
    rate = rate_between(times, steady_from, started + seconds)
    row: dict[str, Any] = {
        "sent/s": rate,
        "utilisation": rate / ALLOWED,
        "peak_in_flight": max((c["peak_in_flight"] for c in stats["corps"].values()), default=0),
        "10052": stats["errors"].get("10052", 0),
        "10053": stats["errors"].get("10053", 0),
    }
    if seconds >= 60:
        row["worst_60s/limit"] = worst_window(times, 60) / PER_MINUTE
    return row


def run_broadcaster(processes: int, seconds: float, chart: bool = False) -> dict[str, Any]:
    db, broker = fresh_database("postgresql"), redis_url()
    sandbox = vendor()
    store = store_for(db)
    schedule_many(
        [{"payload": body(n)} for n in range(int(ALLOWED * seconds * 1.2) + 200)],
        store=store,
        batch_size=5000,
    )
    store.engine.dispose()
    sampler = InFlightSampler(sandbox)
    sampler.start()
    process = service(
        ["run", "--processes", str(processes), "--threads", "8"],
        service_env(
            db,
            broker,
            sandbox.url,
            per_minute=PER_MINUTE,
            per_hour=10**7,
            SCHEDULER_POLL_INTERVAL_S="0.1",
        ),
    )
    try:
        started = wait_for(lambda: (created_times(sandbox) or [None])[0], timeout=60)
        time.sleep(max(0.0, started + seconds - time.time()))
        row = measure(sandbox, started, seconds)
    finally:
        stop(process)
        sampler.running = False
        sandbox.stop()
    if chart:
        save_chart(created_times(sandbox), sampler.samples, started, seconds, processes)
    return row


@dataclass(frozen=True)
class Shape:
    """A vendor shape and how many corps share it (each corp its own quota)."""

    per_minute: int
    in_flight: int
    latency_ms: float
    corps: int = 1

    @property
    def allowed_per_corp(self) -> float:
        return min(self.per_minute / 60, self.in_flight / (self.latency_ms / 1000))

    @property
    def allowed(self) -> float:
        return self.allowed_per_corp * self.corps


SHAPES = {
    "weiban": Shape(600, 4, 300),
    "slow": Shape(6000, 4, 200),
    "fast": Shape(6000, 4, 20),
    "corps20": Shape(600, 4, 300, corps=20),
    "corps100": Shape(600, 4, 300, corps=100),
}


def run_shape(
    shape: Shape, seconds: float, processes: int | None, threads: int | None
) -> dict[str, Any]:
    """A backlog for every corp at `shape`, `run` with the given worker shape (None: the
    `worker` defaults, threads sized from the corps). Utilisation of the aggregate
    allowance, and fairness: the least-served corp's rate over the most-served one's."""
    import json
    import tempfile
    from pathlib import Path

    db, broker = fresh_database("postgresql"), redis_url()
    sandbox = SandboxServer(
        SandboxConfig(
            per_minute=shape.per_minute,
            per_hour=10**7,
            max_in_flight=shape.in_flight,
            latency_ms=shape.latency_ms,
        )
    ).start()
    corps = ["corp-a", *[f"corp-{n}" for n in range(1, shape.corps)]]
    corps_file = Path(tempfile.mkdtemp(prefix="bench-corps-")) / "corps.json"
    corps_file.write_text(json.dumps({corp: {"secret": "sandbox-secret"} for corp in corps[1:]}))
    store = store_for(db)
    count = int(shape.allowed * seconds * 1.2) + 50 * shape.corps
    schedule_many(
        [{"payload": body(n), "corp_id": corps[n % len(corps)]} for n in range(count)],
        store=store,
        batch_size=5000,
    )
    store.engine.dispose()
    args = ["run"]
    if processes:
        args += ["--processes", str(processes)]
    pinned = {"WORKER_THREADS": str(threads)} if threads else {}  # as set, never sized
    process = service(
        args,
        service_env(
            db,
            broker,
            sandbox.url,
            per_minute=shape.per_minute,
            per_hour=10**7,
            WEIBAN_MAX_IN_FLIGHT=str(shape.in_flight),
            WEIBAN_CORPS_FILE=str(corps_file),
            SCHEDULER_POLL_INTERVAL_S="0.1",
            **pinned,
        ),
    )
    try:
        started = wait_for(lambda: (created_times(sandbox) or [None])[0], timeout=120)
        time.sleep(max(0.0, started + seconds - time.time()))
    finally:
        stop(process)
        sandbox.stop()
    steady_from, until = started + min(3.0, seconds / 5), started + seconds
    created = sandbox.state.created_list()
    times = sorted(m["received_at"] for m in created)
    per_corp = {corp: 0 for corp in corps}
    for message in created:
        if steady_from <= message["received_at"] < until:
            per_corp[message["corp_id"]] = per_corp.get(message["corp_id"], 0) + 1
    stats = sandbox.state.stats()
    rate = rate_between(times, steady_from, until)
    return {
        "sent/s": rate,
        "utilisation": rate / shape.allowed,
        "fairness": min(per_corp.values()) / max(1, max(per_corp.values())),
        "peak_in_flight": max((c["peak_in_flight"] for c in stats["corps"].values()), default=0),
        "10052": stats["errors"].get("10052", 0),
        "10053": stats["errors"].get("10053", 0),
    }


def shapes_main(name: str, seconds: float, rounds: int) -> None:
    """One shape: broadcaster with the `worker` defaults against the same-run baseline of
    today's fixed 2 x 8 (many corps), or 2 processes against the sleep pacer (one corp)."""
    shape = SHAPES[name]
    contenders: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("broadcaster, worker defaults", lambda: run_shape(shape, seconds, None, None)),
    ]
    if shape.corps > 1:  # for one corp the defaults are 2 x 8: the allowance is the reference
        contenders.append(("baseline: 2 x 8 threads", lambda: run_shape(shape, seconds, 2, 8)))
    results: dict[str, list[dict[str, Any]]] = {}
    for round_number in range(rounds):
        for label, run in contenders:
            print(f"round {round_number + 1}: {name}: {label} for {seconds:.0f}s …", flush=True)
            results.setdefault(label, []).append(run())
    rows = []
    baseline = results.get("baseline: 2 x 8 threads")
    base = median([r["utilisation"] for r in baseline]) if baseline else None
    for label, runs in results.items():
        row = {key: median([r[key] for r in runs]) for key in runs[0]}
        row["name"] = label
        row["vs 2 x 8"] = row["utilisation"] / base if base else None
        rows.append(row)
    print(
        f"\n{name}: {shape.corps} corp(s) at {shape.per_minute}/min, {shape.in_flight} in flight, "
        f"{shape.latency_ms:.0f} ms: allowed {shape.allowed:.0f}/s; median of {rounds} round(s)"
    )
    columns = ["name", "sent/s", "utilisation", "fairness", "peak_in_flight", "10052", "10053"]
    print(table(rows, [*columns, "vs 2 x 8"]))


def run_sleep_pacer(seconds: float) -> dict[str, Any]:
    """The simplest pacer: one thread, one call, then sleep for one interval."""
    sandbox = vendor()
    client = httpx.Client(base_url=sandbox.url)
    token = client.post(
        "/open-api/access_token/get", json={"corp_id": "corp-a", "secret": "sandbox-secret"}
    ).json()
    started = time.time()
    while time.time() < started + seconds:
        client.post(
            "/open-api/customer_group_msg/add",
            params={"access_token": token["access_token"]},
            json=BODY,
        )
        time.sleep(1 / ALLOWED)
    row = measure(sandbox, started, seconds)
    sandbox.stop()
    return row


def _dramatiq_worker(broker_url: str, vendor_url: str, token: str) -> None:
    """A worker written the way Dramatiq documents rate limiting."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.rate_limits import WindowRateLimiter
    from dramatiq.rate_limits.backends import RedisBackend

    broker = RedisBroker(url=broker_url, namespace="bench-baseline")
    limiter = WindowRateLimiter(
        RedisBackend(url=broker_url), "weiban", limit=int(ALLOWED), window=1
    )
    client = httpx.Client(base_url=vendor_url)

    def send(_number: int) -> None:
        with limiter.acquire():
            client.post(
                "/open-api/customer_group_msg/add", params={"access_token": token}, json=BODY
            )

    dramatiq.Actor(
        send,
        broker=broker,
        actor_name="send",
        queue_name="bench",
        priority=0,
        options={"max_retries": 10_000},
    )
    worker = dramatiq.Worker(broker, worker_threads=8)
    worker.start()
    time.sleep(10_000)


def run_dramatiq_pattern(seconds: float, processes: int = 2) -> dict[str, Any]:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker_url = redis_url()
    sandbox = vendor()
    token = httpx.post(
        f"{sandbox.url}/open-api/access_token/get",
        json={"corp_id": "corp-a", "secret": "sandbox-secret"},
    ).json()
    broker = RedisBroker(url=broker_url, namespace="bench-baseline")
    for number in range(int(ALLOWED * seconds * 1.2) + 200):
        broker.enqueue(
            dramatiq.Message(
                queue_name="bench", actor_name="send", args=(number,), kwargs={}, options={}
            )
        )
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=_dramatiq_worker, args=(broker_url, sandbox.url, token["access_token"])
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        started = wait_for(lambda: (created_times(sandbox) or [None])[0], timeout=60)
        time.sleep(max(0.0, started + seconds - time.time()))
        row = measure(sandbox, started, seconds)
    finally:
        for worker in workers:
            worker.kill()
            worker.join()
        sandbox.stop()
    return row


def save_chart(
    times: list[float],
    samples: list[tuple[float, int]],
    started: float,
    seconds: float,
    processes: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    figure, (rate_axis, flight_axis) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    buckets = [rate_between(times, started + s, started + s + 1) for s in range(int(seconds))]
    rate_axis.step(range(len(buckets)), buckets, where="post", label="sent per second")
    rate_axis.axhline(PER_MINUTE / 60, color="red", linestyle="--", label="quota (per_minute/60)")
    rate_axis.set_ylabel("calls / s")
    rate_axis.set_ylim(0, max([*buckets, PER_MINUTE / 60]) * 1.15)
    rate_axis.legend(loc="lower right")
    xs = [t - started for t, _n in samples if started <= t <= started + seconds]
    ys = [n for t, n in samples if started <= t <= started + seconds]
    flight_axis.plot(xs, ys, linewidth=0.5, label="in flight at the vendor")
    flight_axis.axhline(IN_FLIGHT, color="red", linestyle="--", label="in-flight limit")
    flight_axis.set_ylabel("calls in flight")
    flight_axis.set_xlabel("seconds")
    flight_axis.legend(loc="upper right")
    figure.suptitle(
        f"broadcaster, {processes} worker processes x 8 threads: "
        f"{PER_MINUTE}/min, {IN_FLIGHT} in flight, {LATENCY_MS} ms calls"
    )
    figure.tight_layout()
    figure.savefig(OUT / "quota.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, one round (CI)")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--memory", action="store_true", help="only Redis memory per corp at a full hour"
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), help="a vendor shape (see SHAPES)")
    args = parser.parse_args()
    if args.shape:
        shapes_main(args.shape, args.seconds or (10.0 if args.quick else 30.0), args.rounds or 1)
        return
    memory = memory_per_corp()
    print(
        f"Redis memory per corp at a full hour ({memory['calls']:.0f} calls, "
        f"{memory['refused']:.0f} refused by a window): {memory['bytes'] / 1024:.0f} KB; "
        f"the call log it replaced: {memory['log_bytes'] / 1024:.0f} KB "
        f"(ratio {memory['bytes'] / memory['log_bytes']:.3f}; target ≤ 256 KB); "
        f"1000 corps: {memory['bytes'] * 1000 / 2**20:.0f} MB"
    )
    if args.memory:
        return
    seconds = args.seconds or (8.0 if args.quick else 70.0)
    rounds = args.rounds or (1 if args.quick else 3)
    results: dict[str, list[dict[str, Any]]] = {}
    contenders = [
        ("broadcaster x1", lambda: run_broadcaster(1, seconds)),
        ("broadcaster x2", lambda: run_broadcaster(2, seconds, chart=True)),
        ("broadcaster x4", lambda: run_broadcaster(4, seconds)),
        ("dramatiq WindowRateLimiter x2", lambda: run_dramatiq_pattern(seconds)),
        ("sleep pacer", lambda: run_sleep_pacer(seconds)),
    ]
    for round_number in range(rounds):  # A B A B: every contender once per round
        for name, run in contenders:
            print(f"round {round_number + 1}: {name} for {seconds:.0f}s …", flush=True)
            results.setdefault(name, []).append(run())
    rows = []
    baseline = median([r["utilisation"] for r in results["dramatiq WindowRateLimiter x2"]])
    for name, runs in results.items():
        row = {key: median([r[key] for r in runs]) for key in runs[0] if key in runs[0]}
        row["name"] = name
        row["vs dramatiq"] = row["utilisation"] / baseline if baseline else None
        rows.append(row)
    columns = [
        "name",
        "sent/s",
        "utilisation",
        "worst_60s/limit",
        "peak_in_flight",
        "10052",
        "10053",
        "vs dramatiq",
    ]
    print(f"\nquota allows {ALLOWED:.0f}/s; median of {rounds} round(s) of {seconds:.0f}s")
    print(table(rows, columns))
    print(f"chart: {OUT / 'quota.png'}")


if __name__ == "__main__":
    main()
