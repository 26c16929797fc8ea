"""The arithmetic `status` prints: worker slots alive against the threads the corps'
quota keeps busy (`quota/sizing.py`: `quota_need`, `Shortfall`)."""

from __future__ import annotations

import json
from pathlib import Path

from broadcaster.corps import CorpDirectory
from broadcaster.quota.sizing import Need, Shortfall, quota_need
from tests.conftest import make_settings


def _corps(tmp_path: Path, count: int, in_flight: int = 4) -> CorpDirectory:
    path = tmp_path / "corps.json"
    entries = {f"c{i}": {"secret": "s", "max_in_flight": in_flight} for i in range(count)}
    path.write_text(json.dumps(entries))
    return CorpDirectory(make_settings(weiban_corp_id=None, weiban_corps_file=path))


def test_twenty_corps_at_four_in_flight_need_eighty(tmp_path: Path) -> None:
    need = quota_need(_corps(tmp_path, 20))
    assert need == Need(80, 20, (4,) * 20, latency_known=False)
    line = Shortfall((8, 8), need).line()
    assert line == (
        "workers: 2 process(es) x 8 thread(s) = 16 slot(s) < 20 corp(s) x 4 in flight = 80: "
        "run more worker processes (WORKER_PROCESSES, --processes) or WORKER_THREADS=40 "
        "(--threads 40)"
    )


def test_the_measured_latency_lowers_the_need(tmp_path: Path) -> None:
    """600/min is 10/s; at 200 ms that is 2 calls in flight (Little's law), not 4; an
    operator's latency wins over the measured one; a corp without one keeps its cap."""
    corps = _corps(tmp_path, 3)
    assert quota_need(corps, {"c0": 200.0, "c1": 200.0, "c2": 200.0}).threads == 6
    mixed = quota_need(corps, {"c0": 200.0})
    assert mixed.threads == 2 + 4 + 4 and mixed.latency_known
    assert mixed.basis == "3 corps' calls in flight at the measured latency"
    assert quota_need(corps, {"c0": 5000.0}, latency_ms=100).threads == 3


def test_enough_slots_and_mixed_processes(tmp_path: Path) -> None:
    need = quota_need(_corps(tmp_path, 5))
    shortfall = Shortfall((8, 16), need)
    assert shortfall.processes == 2 and shortfall.threads == 24 and not shortfall.short
    assert shortfall.line() == (
        "workers: 2 process(es) (8 + 16 threads) = 24 slot(s) >= 5 corp(s) x 4 in flight = 20: "
        "enough for the quota"
    )
    assert Shortfall((10, 10), need).short is False, "exactly enough is enough"
    assert Shortfall((10, 9), need).short


def test_past_64_threads_a_process_the_fix_is_more_processes(tmp_path: Path) -> None:
    line = Shortfall((64, 64), quota_need(_corps(tmp_path, 100))).line()
    assert line.endswith(
        "< 100 corp(s) x 4 in flight = 400: run 7 worker processes of 64 threads "
        "(WORKER_PROCESSES=7 WORKER_THREADS=64, over more hosts if the cores run out)"
    )


def test_no_worker_alive_is_said(tmp_path: Path) -> None:
    shortfall = Shortfall((), quota_need(_corps(tmp_path, 2)))
    assert shortfall.short and shortfall.processes == 0
    assert shortfall.line() == (
        "workers: none alive (no worker beat in Redis within BROKER_HEARTBEAT_TIMEOUT_S): "
        "nothing is sent; start `broadcaster worker` or `broadcaster run` "
        "(the quota needs 2 corp(s) x 4 in flight = 8 slot(s))"
    )
