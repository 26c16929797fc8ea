"""The fault-injection suite: rounds of real processes, real Redis, real PostgreSQL or
SQLite and the sandbox, with faults at random moments, each checked against the promise.

    .venv/bin/python -m tests.chaos.run --rounds 50 [--db both] [--faults 2] [--seed 1]
        [--broker rabbitmq]

With `--broker rabbitmq` the jobs' messages go through the machine's RabbitMQ (a vhost and
user of each round's own) and `rabbitmq_restart` joins the faults.

Every fault is used in turn (then at random), so a run of at least 9 rounds (17 faults,
2 a round) hits each one. The scheduler reconciles inside each round: jobs an ambiguous
call left `unknown` are settled from the vendor's list (found -> sent, absent -> sent
again) before the round checks. Prints a line per round and a summary; exits 1 if any
round broke the promise.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import asdict

from broadcaster.ops.devservices import find_postgres
from tests.chaos.faults import FAULTS, RABBITMQ_FAULTS
from tests.chaos.round import Round, RoundResult


def plan(rounds: int, per_round: int, rng: random.Random, broker: str = "redis") -> list[list[str]]:
    """Cycle through every fault first, then pick at random: full coverage in few rounds."""
    names = sorted(f for f in FAULTS if broker == "rabbitmq" or f not in RABBITMQ_FAULTS)
    queue: list[str] = []
    chosen = []
    for _ in range(rounds):
        faults: list[str] = []
        while len(faults) < per_round:
            if not queue:
                queue = rng.sample(names, len(names))
            name = queue.pop()
            if name not in faults:
                faults.append(name)
        chosen.append(faults)
    return chosen


def run(
    rounds: int, kinds: list[str], per_round: int, seed: int, jobs: int, broker: str = "redis"
) -> list[RoundResult]:
    rng = random.Random(seed)
    pg_base = find_postgres().url if "postgresql" in kinds else None
    results = []
    for number, faults in enumerate(plan(rounds, per_round, rng, broker), start=1):
        kind = kinds[(number - 1) % len(kinds)]
        result = Round(
            number,
            kind,
            faults,
            pg_base=pg_base,
            jobs=jobs,
            seed=rng.randrange(1 << 30),
            broker=broker,
        ).run()
        results.append(result)
        verdict = "ok" if not result.violations else "BROKEN: " + "; ".join(result.violations)
        print(
            f"round {number:3d} {kind + ('+rmq' if broker == 'rabbitmq' else ''):14s} "
            f"{','.join(faults):45s} sent {result.sent:3d} "
            f"unknown {result.unknown:2d} failed {result.failed:2d} dup {result.duplicates} "
            f"lost {result.lost} reconciled {result.found} found/{result.resent} resent "
            f"errors {result.errors} {result.seconds:5.1f}s  {verdict}",
            flush=True,
        )
        if result.stalled:
            print(f"      {result.stalled}: {result.unknown} jobs left unknown", flush=True)
        for hit in result.faults:
            mark = "hit" if hit.proved else "NOT PROVED"
            print(f"      {hit.fault}: {hit.evidence} [{mark}]", flush=True)
    return results


def summary(results: list[RoundResult]) -> dict:
    hits = Counter(hit.fault for result in results for hit in result.faults)
    proved = Counter(hit.fault for result in results for hit in result.faults if hit.proved)
    return {
        "rounds": len(results),
        "clean_rounds": sum(1 for r in results if not r.violations),
        "faults_injected": sum(hits.values()),
        "faults_by_kind": dict(sorted(hits.items())),
        "faults_proved_by_kind": dict(sorted(proved.items())),
        "jobs": sum(r.jobs for r in results),
        "sent": sum(r.sent for r in results),
        "unknown": sum(r.unknown for r in results),
        "reconciled": sum(r.reconciled for r in results),
        "reconciled_found": sum(r.found for r in results),
        "reconciled_resent": sum(r.resent for r in results),
        "reconciled_absent_failed": sum(r.absent_failed for r in results),
        "held_under_list_faults": sum(r.held for r in results),
        "rounds_reconcile_stalled": sum(1 for r in results if r.stalled),
        "list_calls": sum(r.list_calls for r in results),
        "duplicates": sum(r.duplicates for r in results),
        "lost": sum(r.lost for r in results),
        "seconds": round(sum(r.seconds for r in results), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--faults", type=int, default=2, help="faults per round")
    parser.add_argument("--jobs", type=int, default=150, help="jobs per round")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--broker",
        choices=["redis", "rabbitmq"],
        default="redis",
        help="what carries the jobs' messages (rabbitmq: the machine's, a vhost per round)",
    )
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    print(f"seed {args.seed}", flush=True)
    results = run(args.rounds, kinds, args.faults, args.seed, args.jobs, args.broker)
    report = summary(results)
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"summary": report, "rounds": [asdict(r) for r in results]},
                handle,
                indent=1,
                default=str,
            )
    sys.exit(0 if report["clean_rounds"] == report["rounds"] else 1)


if __name__ == "__main__":
    main()
