"""Recovery: seconds from the end of a forced vendor block to sending at ≥ 95 % of the
quota again (target ≤ 2 s), against the block length itself as the baseline.

    .venv/bin/python -m bench.recovery [--quick] [--rounds 3]

The sandbox runs at 3000/min, 4 in flight, 20 ms calls; after a few seconds of backlog it
answers one call with 10053 and blocks the corp for the block window (60 s; 5 s with
--quick), and broadcaster pauses for the same (WEIBAN_BLOCK_S).
"""

from __future__ import annotations

import argparse
import time

from bench.common import (
    created_times,
    fresh_database,
    median,
    redis_url,
    service,
    service_env,
    stop,
    store_for,
    wait_for,
)
from bench.quota import ALLOWED, BODY, PER_MINUTE, vendor
from broadcaster import schedule_many


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
        [{"payload": BODY} for _ in range(int(ALLOWED * (block_s + 20)))],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    block_s = 5.0 if args.quick else 60.0
    rounds = args.rounds or (1 if args.quick else 3)
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
