"""Admission on the in-memory quota: how many queued jobs a corp may have, and which
corps get none now (at their cap, or blocked by the vendor). No Redis, no sleeping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broadcaster.corps import CorpDirectory, QuotaLimits
from broadcaster.quota.memory import InMemoryQuota
from broadcaster.vendor import CREATE_API
from scheduler.service import Admission
from tests.conftest import make_settings


@pytest.fixture
def corps(tmp_path: Path) -> CorpDirectory:
    """corp-default: 600/min (10/s); corp-fast: 6000/min (100/s); corp-slow: 12/min
    (0.2/s); corp-hourly: 600/min but 3600/h, so 1/s."""
    path = tmp_path / "corps.json"
    entries = {
        "corp-fast": {"secret": "s", "quota_per_minute": 6000, "quota_per_hour": 360000},
        "corp-slow": {"secret": "s", "quota_per_minute": 12},
        "corp-hourly": {"secret": "s", "quota_per_hour": 3600},
    }
    path.write_text(json.dumps(entries), encoding="utf-8")
    return CorpDirectory(make_settings(weiban_corps_file=path))


@pytest.fixture
def quota(corps: CorpDirectory) -> InMemoryQuota:
    """On a fake clock: `quota.sleep(s)` is time passing."""
    now = [1_000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return InMemoryQuota(
        corps.limits, slot_lease_s=15, block_s=60, clock=lambda: now[0], sleep=sleep
    )


def admission(corps: CorpDirectory, quota: InMemoryQuota | None, horizon_s: float) -> Admission:
    settings = make_settings(scheduler_admit_horizon_s=horizon_s)
    return Admission(settings, corps, quota)


def test_the_cap_is_the_horizons_worth_of_the_corps_rate_and_at_least_ten(
    corps: CorpDirectory, quota: InMemoryQuota
) -> None:
    admit = admission(corps, quota, horizon_s=20)
    assert admit.cap("corp-default") == 200
    assert admit.cap("corp-fast") == 2000
    assert admit.cap("corp-hourly") == 20, "the hour's rate where it is the tighter"
    assert admit.cap("corp-slow") == 10, "never below ten"
    assert admission(corps, quota, horizon_s=2.55).cap("corp-default") == 26, "rounded up"


def test_the_cap_of_an_unknown_corp_is_the_defaults(
    corps: CorpDirectory, quota: InMemoryQuota
) -> None:
    assert corps.limits("corp-unlisted") == QuotaLimits()
    assert admission(corps, quota, horizon_s=20).cap("corp-unlisted") == 200


def test_a_corp_at_its_cap_is_closed_and_one_below_is_open(
    corps: CorpDirectory, quota: InMemoryQuota
) -> None:
    admit = admission(corps, quota, horizon_s=20)
    queued = {"corp-default": 200, "corp-fast": 1999, "corp-slow": 11, "corp-hourly": 0}
    assert admit.closed_corps(queued) == {"corp-default", "corp-slow"}
    assert admit.closed_corps({}) == set()


def test_a_blocked_corp_is_closed_until_its_block_ends(
    corps: CorpDirectory, quota: InMemoryQuota
) -> None:
    admit = admission(corps, quota, horizon_s=20)
    assert quota.on_blocked("corp-fast", CREATE_API) == 60
    quota.on_blocked("corp-slow", "some/other_api")  # another API's block: no matter here
    assert admit.closed_corps({"corp-fast": 0, "corp-slow": 0}) == {"corp-fast"}
    assert admit.closed_corps({}) == {"corp-fast"}, "closed whether or not it has jobs queued"
    assert admit.closed_corps({"corp-default": 200}) == {"corp-fast", "corp-default"}
    quota.sleep(60.001)
    assert admit.closed_corps({"corp-fast": 0, "corp-default": 199}) == set()


def test_a_paused_corp_is_closed_too(corps: CorpDirectory, quota: InMemoryQuota) -> None:
    admit = admission(corps, quota, horizon_s=20)
    quota.pause("corp-default", CREATE_API, 5)
    assert admit.closed_corps({"corp-default": 0}) == {"corp-default"}
    quota.sleep(5.001)
    assert admit.closed_corps({"corp-default": 0}) == set()


def test_without_a_quota_only_the_counts_close_a_corp(corps: CorpDirectory) -> None:
    admit = admission(corps, None, horizon_s=20)
    assert admit.closed_corps({"corp-default": 200, "corp-fast": 5}) == {"corp-default"}
