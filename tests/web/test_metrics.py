"""/metrics figures from the tables: jobs, delivery, vendor calls, latency and lateness."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, update

from broadcaster.bootstrap import Bootstrap
from broadcaster.jobs.tables import attempts, jobs
from broadcaster.timeutil import utcnow
from broadcaster.web.attempt_totals import AttemptCounter
from broadcaster.web.metrics import read_figures
from tests.web.conftest import BODY


def _samples(client: TestClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _attempt(
    boot: Bootstrap, job_id: int, started_ago_s: float, ms: int, outcome: str, errcode: int | None
) -> None:
    started = utcnow() - timedelta(seconds=started_ago_s)
    with boot.engine.begin() as connection:
        connection.execute(
            insert(attempts).values(
                job_id=job_id,
                attempt_no=1,
                started_at=started,
                duration_ms=ms,
                outcome=outcome,
                errcode=errcode,
            )
        )


def test_metrics_count_jobs_delivery_calls_and_times(writer: TestClient, boot: Bootstrap) -> None:
    ids = [
        writer.post("/api/v1/broadcasts", json={"payload": BODY, "campaign": "m"}).json()["items"][
            0
        ]["jobs"][0]["id"]
        for _ in range(3)
    ]
    now = utcnow()
    with boot.engine.begin() as connection:
        connection.execute(
            update(jobs)
            .where(jobs.c.id.in_(ids[:2]))
            .values(status="sent", send_at=now - timedelta(seconds=3600))
        )
        connection.execute(
            update(jobs).where(jobs.c.id == ids[0]).values(delivery_status="completed")
        )
    _attempt(boot, ids[0], 3599.9, 40, "sent", 0)  # 0.1 s late, long settled
    _attempt(boot, ids[1], 3000, 300, "busy", 10052)
    _attempt(boot, ids[1], 1, 30, "sent", 0)  # recent: read again at every refresh
    _attempt(boot, ids[1], 1, 9000, "found", None)  # a reconcile verdict: no call duration
    found = _samples(writer)
    jobs_m = found["broadcaster_jobs"]
    assert jobs_m[(("campaign", "m"), ("corp", "corp-default"), ("status", "sent"))] == 2
    assert jobs_m[(("campaign", "m"), ("corp", "corp-default"), ("status", "scheduled"))] == 1
    delivery = found["broadcaster_jobs_sent_delivery"]
    assert delivery == {
        (("campaign", "m"), ("corp", "corp-default"), ("delivery_status", "completed")): 1,
        (("campaign", "m"), ("corp", "corp-default"), ("delivery_status", "untracked")): 1,
    }
    calls = found["broadcaster_vendor_calls_total"]
    assert calls == {
        (("errcode", "0"), ("outcome", "sent")): 2,
        (("errcode", "10052"), ("outcome", "busy")): 1,
        (("errcode", ""), ("outcome", "found")): 1,
    }
    call_s = found["broadcaster_vendor_call_seconds_bucket"]
    assert call_s[(("le", "0.05"),)] == 2 and call_s[(("le", "0.5"),)] == 3
    assert found["broadcaster_vendor_call_seconds_sum"][()] == 0.37
    late = found["broadcaster_lateness_seconds_bucket"]
    assert late[(("le", "0.25"),)] == 1 and late[(("le", "+Inf"),)] == 2
    assert found["broadcaster_quota_limit_per_minute"][(("corp", "corp-default"),)] == 600
    assert found["broadcaster_metrics_source_up"][(("source", "database"),)] == 1


def test_attempt_totals_are_kept_and_only_the_tail_reread(boot: Bootstrap) -> None:
    with boot.engine.begin() as connection:
        job_id = connection.execute(
            insert(jobs).values(payload="{}", send_at=utcnow()).returning(jobs.c.id)
        ).scalar_one()
    for ago in (7200, 3600, 5):
        _attempt(boot, job_id, ago, 100, "sent", 0)
    counter = AttemptCounter()
    first = read_figures(boot, counter)
    assert counter.settled_up_to > 0, "the old attempts are settled"
    _attempt(boot, job_id, 7000, 100, "rejected", 40058)  # a late commit of an old call
    _attempt(boot, job_id, 1, 100, "sent", 0)
    again = read_figures(boot, counter)
    fresh = read_figures(boot, AttemptCounter())
    assert again.calls == fresh.calls == [("rejected", "40058", 1), ("sent", "0", 4)]
    for mine, full in ((again.call_seconds, fresh.call_seconds), (again.lateness, fresh.lateness)):
        assert mine.buckets == full.buckets
        assert mine.sum_value == pytest.approx(full.sum_value)
    assert first.calls == [("sent", "0", 3)]


def test_metrics_survive_a_database_without_tables(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from broadcaster.web.app import create_app
    from tests.conftest import make_settings
    from tests.web.conftest import web_settings

    (tmp_path / "none.db").touch()
    boot = Bootstrap(make_settings(database_url=f"sqlite:///{tmp_path / 'none.db'}"))
    with TestClient(create_app(boot, web_settings())) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200
    assert 'broadcaster_metrics_source_up{source="database"} 0.0' in answer.text


def test_a_scrape_never_waits_for_a_read_but_the_first(boot: Bootstrap) -> None:
    from broadcaster.web.metrics import TableCollector

    collector = TableCollector(boot, cache_s=0.05)
    first = collector.figures()
    assert first.table_ok
    with boot.engine.begin() as connection:
        connection.execute(insert(jobs).values(payload="{}", campaign="late"))
    deadline = time.monotonic() + 10
    while not any(campaign == "late" for _, campaign, _, _ in collector.figures().jobs):
        assert time.monotonic() < deadline, "the background read never landed"
        time.sleep(0.02)
    assert collector.age_s() < 10
