"""Recovery, two cases.

    .venv/bin/python -m bench.recovery [--quick] [--rounds 3] [--case block|kill|both]

block: seconds from the end of a forced vendor block to sending at ≥ 95 % of the quota
again (target ≤ 2 s), against the block length itself as the baseline. The sandbox runs at
3000/min, 4 in flight, 20 ms calls; after a few seconds of backlog it answers one call
with 10053 and blocks the corp for the block window (60 s; 5 s with --quick), and
broadcaster pauses for the same (WEIBAN_BLOCK_S).

kill: a scheduler and two `worker` commands (1 process × 8 threads each) on a backlog at
the same shape; one worker command is killed with SIGKILL (supervisor and child) while it
holds prefetched messages. Figures: seconds from the kill to the vendor's receipt of each
job the dead worker held unstarted (target: within 15 s of when it would have been), with
the same-run baseline of the jobs at the head of the queue at the kill (sent at once by
the survivor) and the queue's depth then, in seconds of quota. Without the requeue these
jobs waited for the sweep, QUEUED_LEASE_S (300 s).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

from dramatiq.brokers.redis import RedisBroker

from bench.common import (
    created_times,
    fresh_database,
    median,
    rate_between,
    redis_url,
    service,
    service_env,
    stop,
    store_for,
    wait_for,
)
from bench.quota import ALLOWED, BODY, PER_MINUTE, body, vendor
from broadcaster import schedule_many
from broadcaster.broker.dispatch import make_broker
from broadcaster.broker.liveness import HEARTBEAT_TIMEOUT_MS, held_job_ids
from broadcaster.broker.messages import QUEUE_NAME
from broadcaster.redis_conn import connect


def recovered_after(times: list[float], block_end: float) -> float | None:
    """Seconds from `block_end` to the start of the first 1 s window at ≥ 95 % pace."""
    start = block_end
    while start < block_end + 30:
        if sum(1 for t in times if start <= t < start + 1) >= 0.95 * ALLOWED:
            return start - block_end
        start += 0.05
    return None


def one_round(block_s: float) -> dict[str, float | None]:
    db, broker = fresh_database("postgresql"), redis_url()
    sandbox = vendor()
    sandbox.state.config.block_s = block_s
    store = store_for(db)
    schedule_many(
        [{"payload": body(n)} for n in range(int(ALLOWED * (block_s + 20)))],
        store=store,
        batch_size=5000,
    )
    store.engine.dispose()
    process = service(
        ["run", "--processes", "1", "--threads", "8"],
        service_env(
            db,
            broker,
            sandbox.url,
            per_minute=PER_MINUTE,
            per_hour=10**7,
            WEIBAN_BLOCK_S=str(block_s),
            SCHEDULER_POLL_INTERVAL_S="0.1",
        ),
    )
    try:
        wait_for(lambda: len(created_times(sandbox)) > ALLOWED * 4, timeout=60)
        sandbox.state.faults.force_10053 = 1
        blocked_at = wait_for(
            lambda: next((t for t, code, _c in sandbox.state.call_log if code == 10053), None),
            timeout=10,
        )
        block_end = blocked_at + block_s
        time.sleep(max(0.0, block_end + 6 - time.time()))
    finally:
        stop(process)
        sandbox.stop()
    times = created_times(sandbox)
    during = sum(1 for t in times if blocked_at + 0.1 < t < block_end)
    return {"recovery_s": recovered_after(times, block_end), "calls_during_block": during}


class Logged:
    """A `broadcaster` command whose JSON log lines are kept (for the broker id)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "broadcaster.cli.main", *args],
            env={**os.environ, "LOG_LEVEL": "INFO", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)

    def broker_id(self) -> str | None:
        for line in list(self.lines):
            if '"worker_started"' in line:
                return str(json.loads(line)["broker_id"])
        return None


def kill_round(quick: bool) -> dict[str, float]:
    db, broker_url = fresh_database("postgresql"), redis_url()
    sandbox = vendor()
    store = store_for(db)
    count = int(ALLOWED * (25 if quick else 40))
    result = schedule_many(
        [
            {"payload": {**BODY, "name": f"k{i}", "group_ext_id_list": [f"g{i}"]}}
            for i in range(count)
        ],
        store=store,
        batch_size=5000,
    )
    name_of = {job_id: f"k{i}" for i, job_id in enumerate(result.job_ids)}
    env = service_env(
        db,
        broker_url,
        sandbox.url,
        per_minute=PER_MINUTE,
        per_hour=10**7,
        SCHEDULER_POLL_INTERVAL_S="0.1",
    )
    worker_args = ["worker", "--processes", "1", "--threads", "8"]
    scheduler = service(["scheduler"], env)
    doomed, survivor = Logged(worker_args, env), Logged(worker_args, env)
    broker = make_broker(connect(broker_url))
    try:
        doomed_id = wait_for(doomed.broker_id, timeout=60)
        wait_for(survivor.broker_id, timeout=60)
        wait_for(lambda: len(created_times(sandbox)) > ALLOWED * 4, timeout=60)
        os.killpg(doomed.popen.pid, signal.SIGKILL)
        killed_at = time.time()
        doomed.popen.wait(10)
        held = held_job_ids(broker, doomed_id, QUEUE_NAME)
        head = [int(json.loads(m)["args"][0]) for m in _queue_head(broker, 8)]
        depth_s = int(broker.client.llen(f"{broker.namespace}:{QUEUE_NAME}")) / ALLOWED
        statuses = {job_id: store.get(job_id).status for job_id in held}
        unstarted = [job_id for job_id, status in statuses.items() if status == "queued"]
        names = {name_of[job_id] for job_id in unstarted}
        head_names = {name_of[job_id] for job_id in head}

        def received() -> dict[str, float]:
            return {
                m["body"]["name"]: m["received_at"]
                for m in sandbox.state.created_list()
                if m["body"]["name"] in names | head_names
            }

        wait_for(lambda: len(received()) == len(names | head_names), timeout=120, every=0.2)
    finally:
        if doomed.popen.poll() is None:
            os.killpg(doomed.popen.pid, signal.SIGKILL)
        for process in (survivor.popen, scheduler):
            stop(process)
        store.engine.dispose()
        sandbox.stop()
    seen = received()
    pace = rate_between(created_times(sandbox), killed_at, killed_at + 6) / ALLOWED
    late = [seen[name] - killed_at for name in names]
    return {
        "held": len(held),
        "held_unstarted": len(unstarted),
        "held_in_call": len(held) - len(unstarted),
        "worst_s": max(late, default=0.0),
        "median_s": median(late) if late else 0.0,
        "head_s": max((seen[name] - killed_at for name in head_names), default=0.0),
        "queue_depth_s": depth_s,
        "pace_after_kill": pace,
    }


def _queue_head(broker: RedisBroker, n: int) -> list[bytes]:
    """The next `n` messages the workers will fetch."""
    key = f"{broker.namespace}:{QUEUE_NAME}"
    ids = broker.client.lrange(key, 0, n - 1)
    found = broker.client.hmget(f"{key}.msgs", ids) if ids else []
    return [data for data in found if data]


def kill_report(results: list[dict[str, float]]) -> None:
    for number, r in enumerate(results, 1):
        print(
            f"round {number}: held {r['held']:.0f} ({r['held_unstarted']:.0f} unstarted, "
            f"{r['held_in_call']:.0f} in a call); unstarted sent after the kill: median "
            f"{r['median_s']:.2f}s, worst {r['worst_s']:.2f}s; the queue's head (baseline) "
            f"{r['head_s']:.2f}s; queue depth at the kill {r['queue_depth_s']:.1f}s of quota; "
            f"sent in the 6 s after the kill: {r['pace_after_kill']:.3f} of the quota"
        )
    worst = max(r["worst_s"] for r in results)
    beyond = max(r["worst_s"] - r["head_s"] for r in results)
    print(
        f"\nkilled worker's prefetched jobs: worst {worst:.2f}s after the kill, "
        f"{beyond:.2f}s beyond the queue's head (target ≤ 15 s; heartbeat timeout "
        f"{HEARTBEAT_TIMEOUT_MS / 1000:.0f}s; without the requeue: the 300 s sweep, "
        f"ratio {beyond / 300:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--case", choices=["block", "kill", "both"], default="both")
    args = parser.parse_args()
    block_s = 5.0 if args.quick else 60.0
    rounds = args.rounds or (1 if args.quick else 3)
    if args.case in ("kill", "both"):
        kills = []
        for number in range(rounds):
            print(f"kill round {number + 1} …", flush=True)
            kills.append(kill_round(args.quick))
        kill_report(kills)
        if args.case == "kill":
            return
    results = []
    for number in range(rounds):
        print(f"round {number + 1}: block of {block_s:.0f}s …", flush=True)
        results.append(one_round(block_s))
    recoveries = [r["recovery_s"] for r in results if r["recovery_s"] is not None]
    worst_leak = max(r["calls_during_block"] or 0 for r in results)
    if len(recoveries) < len(results):
        print("some rounds never got back to 95 % within 30 s")
    value = median(recoveries) if recoveries else float("nan")
    print(
        f"\nrecovery to ≥95 % of {ALLOWED:.0f}/s after a {block_s:.0f}s block: "
        f"median {value:.2f}s over {rounds} round(s) (target ≤ 2 s; "
        f"{value / block_s:.3f} of the block itself); calls during the block: {worst_leak}"
    )


if __name__ == "__main__":
    main()
