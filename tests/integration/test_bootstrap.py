"""The one bootstrap: each part built once and only when asked for, a missing dependency
one clear line (or waited for, when the caller waits)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from broadcaster.bootstrap import Bootstrap
from broadcaster.errors import BrokerUnavailable, JobStoreError
from broadcaster.ops.readiness import Stopped
from tests.conftest import make_settings


def test_parts_are_built_once_and_wired_with_the_default_corp(db_url: str, redis_url: str) -> None:
    boot = Bootstrap(make_settings(database_url=db_url, redis_url=redis_url))
    assert boot.store is boot.store and boot.quota.client is boot.redis
    assert boot.store.default_corp == "corp-default"
    assert boot.vendor.tokens.client is boot.redis, "one Redis client for quota and tokens"


def test_a_part_nobody_asked_for_is_never_built(tmp_path: Path) -> None:
    """Reading jobs must not need Redis: an unreachable one is no error until asked for."""
    boot = Bootstrap(
        make_settings(database_url=f"sqlite:///{tmp_path}/x.db", redis_url="redis://127.0.0.1:1/0")
    )
    assert "redis" not in vars(boot)
    with pytest.raises(BrokerUnavailable, match="cannot reach Redis at redis://127.0.0.1:1/0"):
        _ = boot.quota


def test_a_missing_database_is_one_line_at_once_or_waited_for(tmp_path: Path) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path}/missing.db")
    with pytest.raises(JobStoreError, match="no database at"):
        _ = Bootstrap(settings).store
    stop = threading.Event()
    stop.set()  # told to stop while waiting: it gives up at once, with Stopped
    with pytest.raises(Stopped):
        _ = Bootstrap(settings, wait=stop).store
    assert not (tmp_path / "missing.db").exists()
