"""The short mode of the fault-injection suite (the full one: `python -m tests.chaos.run`):
a few rounds covering the faults that threaten the promise most."""

from __future__ import annotations

import pytest

from broadcaster.ops.devservices import find_postgres
from tests.chaos.round import Round

ROUNDS = [
    ("sqlite", ["kill9_worker", "redis_flushall", "malformed_rows"]),
    ("postgresql", ["kill9_scheduler", "vendor_hang", "malformed_rows"]),
    ("postgresql", ["db_restart", "force_10053", "token_invalidate"]),
    ("postgresql", ["db_connection_loss", "kill9_worker"]),
    ("sqlite", ["sigterm_worker", "second_scheduler", "vendor_5xx", "redis_restart"]),
]


@pytest.mark.parametrize(("kind", "faults"), ROUNDS, ids=["-".join(f) for _k, f in ROUNDS])
def test_a_chaos_round_keeps_the_promise(kind: str, faults: list[str]) -> None:
    pg = find_postgres().url if kind == "postgresql" else None
    if kind == "postgresql" and pg is None:
        pytest.skip("no PostgreSQL")
    result = Round(0, kind, faults, pg_base=pg, jobs=120, seed=7).run()
    assert result.violations == [], result
    assert {hit.fault for hit in result.faults} == set(faults)
    assert [hit.fault for hit in result.faults if not hit.proved] == []
    assert result.lost == 0 and result.duplicates == 0
