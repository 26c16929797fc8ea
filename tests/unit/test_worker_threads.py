"""Worker threads follow the configured corps x in-flight unless set."""

from __future__ import annotations

import json
from pathlib import Path

from broadcaster.quota.sizing import sized_threads
from tests.conftest import make_settings


def _corps(tmp_path: Path, count: int, in_flight: int = 4) -> Path:
    path = tmp_path / "corps.json"
    entries = {f"c{i}": {"secret": "s", "max_in_flight": in_flight} for i in range(count)}
    path.write_text(json.dumps(entries))
    return path


def test_one_corp_keeps_the_default() -> None:
    settings = make_settings()
    assert sized_threads(settings, 2, settings.worker_threads) == 8


def test_twenty_corps_get_threads_for_every_call_in_flight(tmp_path: Path) -> None:
    settings = make_settings(weiban_corps_file=_corps(tmp_path, 20))
    threads = sized_threads(settings, 2, settings.worker_threads)
    assert threads * 2 >= 21 * 5  # every corp's 4 calls and one waiting
    assert threads == 64  # (20 + the default corp) x 5 x 1.5 / 2 = 79, capped


def test_a_set_value_is_kept(tmp_path: Path) -> None:
    corps = _corps(tmp_path, 20)
    assert sized_threads(make_settings(weiban_corps_file=corps, worker_threads=6), 2, 6) == 6
    settings = make_settings(weiban_corps_file=corps)
    assert sized_threads(settings, 2, 3) == 3, "--threads other than the default"


def test_sizing_stops_at_64_a_process(tmp_path: Path) -> None:
    settings = make_settings(weiban_corps_file=_corps(tmp_path, 1000, in_flight=100))
    assert sized_threads(settings, 1, settings.worker_threads) == 64
    settings = make_settings(weiban_corps_file=_corps(tmp_path, 4))
    assert sized_threads(settings, 2, settings.worker_threads) == 19  # 5 corps x 5 x 1.5 / 2


def test_threads_given_on_the_command_line_are_kept_even_at_the_default(
    tmp_path: Path,
) -> None:
    from broadcaster.cli.services import _threads_given

    settings = make_settings(weiban_corps_file=_corps(tmp_path, 20))
    assert sized_threads(_threads_given(settings, 8), 2, 8) == 8, "--threads 8"
    assert sized_threads(_threads_given(settings, None), 2, 8) == 64, "no --threads"
