"""The short mode of the fault-injection suite (the full one: `python -m tests.chaos.run`):
a few rounds covering the faults that threaten the promise most, the reconcile path among
them (ambiguous calls settled from the vendor's list, under refused, malformed and slow
list answers). RabbitMQ's restart fault runs in the full suite (`--broker rabbitmq`); here
tests/system/test_rabbitmq_delivery.py covers the same faults (a killed worker, the broker
restarted) in one run."""

from __future__ import annotations

import pytest

from broadcaster.ops.devservices import find_postgres
from tests.chaos.round import Round

ROUNDS = [
    ("sqlite", ["kill9_worker", "redis_flushall", "malformed_rows", "list_slow"]),
    ("postgresql", ["kill9_scheduler", "malformed_rows", "force_10053", "token_invalidate"]),
    ("postgresql", ["db_restart", "vendor_hang", "list_malformed"]),
    ("postgresql", ["db_connection_loss", "kill9_worker", "vendor_5xx", "list_refused"]),
    ("sqlite", ["sigterm_worker", "second_scheduler", "vendor_late", "redis_restart"]),
]


@pytest.mark.parametrize(("kind", "faults"), ROUNDS, ids=["-".join(f) for _k, f in ROUNDS])
def test_a_chaos_round_keeps_the_promise(kind: str, faults: list[str]) -> None:
    pg = find_postgres().url if kind == "postgresql" else None
    if kind == "postgresql" and pg is None:
        pytest.skip("no PostgreSQL")
    result = Round(0, kind, faults, pg_base=pg, jobs=120, seed=7).run()
    assert result.violations == [], result
    assert {hit.fault for hit in result.faults} == set(faults)
    assert [hit.fault for hit in result.faults if not hit.proved] == [], result
    assert result.lost == 0 and result.duplicates == 0
    # The reconcile path was taken: a created-then-cut-off call found, a 5xx one resent.
    if {"vendor_hang", "vendor_late"} & set(faults):
        assert result.found >= 1, result
    if "vendor_5xx" in faults:
        assert result.resent >= 1, result
