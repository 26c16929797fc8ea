"""Campaign controls in the claim, on SQLite and PostgreSQL, with an injected clock:
quiet hours hold rows (across midnight, at the window's edges, per corp, overridable per
job), the stale guard expires rows with the reason, and the monthly cap trims, holds or
fails a job and counts each group once per job."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from broadcaster.campaigns.controls import CampaignControls
from broadcaster.corps import CorpDirectory
from broadcaster.jobs.policy import Decision
from broadcaster.jobs.states import JobStatus, Outcome
from broadcaster.jobs.store import JobStore
from broadcaster.jobs.tables import group_sends, jobs
from tests.conftest import make_settings
from tests.helpers import body

SH = ZoneInfo("Asia/Shanghai")
LEASE_S = 60.0


def at(text: str) -> datetime:
    """Shanghai wall-clock text as naive UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=SH).astimezone(UTC).replace(tzinfo=None)


def controlled(
    store: JobStore, tmp_path: Any = None, corps: dict[str, Any] | None = None, **settings: Any
) -> JobStore:
    overrides: dict[str, Any] = {"weiban_secret": "s", **settings}
    if corps is not None:
        path = tmp_path / "corps.json"
        path.write_text(json.dumps(corps))
        overrides["weiban_corps_file"] = path
    config = make_settings(**overrides)
    store.use_campaign_controls(CampaignControls.from_settings(config, CorpDirectory(config)))
    return store


def add(store: JobStore, send_at: datetime, *, groups: list[str] | None = None, **row: Any) -> int:
    payload = body(group_ext_id_list=groups or ["group-1"])
    result = store.insert_jobs(
        [{"payload": json.dumps(payload, ensure_ascii=False), "send_at": send_at, **row}]
    )
    return result.inserted_ids[0]


def row_of(engine: Engine, job_id: int) -> Any:
    with engine.begin() as connection:
        return connection.execute(select(jobs).where(jobs.c.id == job_id)).one()


def claimed(store: JobStore, now: datetime) -> list[int]:
    return [job.id for job in store.claim_due(now, 100, LEASE_S).claimed]


# ------------------------------------------------------------------ quiet hours
def test_a_job_due_inside_quiet_hours_waits_for_the_windows_end(
    store: JobStore, engine: Engine
) -> None:
    controlled(store, quiet_hours="22:00-08:00")
    job = add(store, at("2026-11-26 23:30"))
    assert claimed(store, at("2026-11-26 23:30")) == []
    row = row_of(engine, job)
    assert row.status == JobStatus.SCHEDULED and row.attempts == 0
    assert row.not_before == at("2026-11-27 08:00") == row.held_until
    assert row.held_reason == "quiet hours until 08:00 (Asia/Shanghai)"
    assert store.next_due_at() == at("2026-11-27 08:00")
    assert claimed(store, at("2026-11-27 07:59:59")) == []  # the window's last second
    assert claimed(store, at("2026-11-27 08:00")) == [job]  # its end
    assert row_of(engine, job).send_at == at("2026-11-26 23:30"), "send_at kept as written"


def test_the_windows_start_holds_and_the_second_before_does_not(store: JobStore) -> None:
    controlled(store, quiet_hours="22:00-08:00")
    before = add(store, at("2026-11-26 21:59:59"))
    assert claimed(store, at("2026-11-26 21:59:59")) == [before]
    inside = add(store, at("2026-11-26 22:00"))
    assert claimed(store, at("2026-11-26 22:00")) == []
    assert claimed(store, at("2026-11-27 08:00")) == [inside]


def test_a_backlog_due_before_the_window_waits_too_and_urgent_jobs_do_not(
    store: JobStore, engine: Engine
) -> None:
    controlled(store, quiet_hours="22:00-08:00")
    waiting = add(store, at("2026-11-26 21:00"))  # due before; not claimed before 22:00
    urgent = add(store, at("2026-11-26 23:00"), ignore_quiet_hours=True)
    assert claimed(store, at("2026-11-26 23:00")) == [urgent]
    assert row_of(engine, waiting).held_until == at("2026-11-27 08:00")
    assert row_of(engine, urgent).held_until is None


def test_quiet_hours_per_corp_in_its_own_zone(store: JobStore, tmp_path: Any) -> None:
    controlled(
        store,
        tmp_path,
        corps={
            "corp-night": {"secret": "s", "quiet_hours": "22:00-08:00", "tz": "Europe/London"},
            "corp-loud": {"secret": "s", "quiet_hours": ""},
        },
        quiet_hours="22:00-08:00",  # the default, in Asia/Shanghai
    )
    now = datetime(2026, 11, 26, 15, 0)  # 23:00 Shanghai, 15:00 London
    default = add(store, now)
    loud = add(store, now, corp_id="corp-loud")
    night = add(store, now, corp_id="corp-night")
    assert sorted(claimed(store, now)) == sorted([loud, night])
    london_night = datetime(2026, 11, 26, 23, 0)  # 07:00 Shanghai (quiet), 23:00 London
    late_night = add(store, london_night, corp_id="corp-night")
    assert claimed(store, london_night) == []
    assert claimed(store, datetime(2026, 11, 27, 0, 0)) == [default]  # 08:00 in Shanghai
    assert claimed(store, datetime(2026, 11, 27, 8, 0)) == [late_night]  # 08:00 in London


# ------------------------------------------------------------------ stale guard
def test_a_stale_job_ends_expired_with_the_reason(store: JobStore, engine: Engine) -> None:
    controlled(store, max_lateness_s=3600)
    now = datetime(2026, 11, 26, 12, 0)
    stale = add(store, now - timedelta(hours=2))
    fresh = add(store, now - timedelta(minutes=59))
    result = store.claim_due(now, 100, LEASE_S)
    assert [job.id for job in result.claimed] == [fresh]
    assert result.expired == [stale]
    row = row_of(engine, stale)
    assert row.status == JobStatus.EXPIRED
    assert row.last_error.startswith("stale: not sent within MAX_LATENESS_S=3600s of send_at")


def test_the_stale_guard_does_not_count_the_nights_hold(store: JobStore, engine: Engine) -> None:
    controlled(store, max_lateness_s=1800, quiet_hours="22:00-08:00")
    job = add(store, at("2026-11-26 21:50"))  # not claimed before the window: a backlog
    assert claimed(store, at("2026-11-26 22:00")) == []
    assert claimed(store, at("2026-11-27 08:10")) == [job]  # 20 min late outside the window
    off = add(store, at("2026-11-27 06:00"))
    store.use_campaign_controls(None)
    controlled(store, max_lateness_s=0)
    assert claimed(store, at("2026-11-29 08:00")) == [off], "0 turns the guard off"


# ------------------------------------------------------------------ monthly cap
def sent_all(store: JobStore, ids: list[int], now: datetime) -> None:
    for job_id in ids:
        job = store.start_sending(job_id, now, LEASE_S)
        assert job is not None
        store.finish(job, Decision(JobStatus.SENT, Outcome.SENT, True), now, now, 5)


def test_trim_sends_to_the_other_groups_and_records_the_left_out(
    store: JobStore, engine: Engine
) -> None:
    controlled(store, monthly_cap=2, monthly_cap_policy="trim")
    now = at("2026-11-26 12:00")
    first = [add(store, now, groups=["g1", "g2"]) for _ in range(2)]
    assert claimed(store, now) == first
    sent_all(store, first, now)
    third = add(store, now, groups=["g1", "g3", "g2"])
    assert claimed(store, now) == [third]
    row = row_of(engine, third)
    assert json.loads(row.payload)["group_ext_id_list"] == ["g3"]
    left_out = json.loads(row.cap_left_out)
    assert left_out["groups"] == ["g1", "g2"] and left_out["month"] == "2026-11"
    assert "already received 2 of 2 in 2026-11" in left_out["reason"]
    every_group_full = add(store, now, groups=["g1"])
    result = store.claim_due(now, 100, LEASE_S)
    assert result.claimed == [] and [job_id for job_id, _ in result.failed] == [every_group_full]
    failed = row_of(engine, every_group_full)
    assert failed.status == JobStatus.FAILED
    assert failed.last_error.endswith("no group left to send to")


def test_hold_waits_for_the_month_to_turn_then_sends(store: JobStore, engine: Engine) -> None:
    controlled(store, monthly_cap=1, monthly_cap_policy="hold", max_lateness_s=3600)
    now = at("2026-11-30 20:00")
    first = add(store, now, groups=["g1"])
    assert claimed(store, now) == [first]
    held = add(store, now, groups=["g1", "g2"])
    assert claimed(store, now) == []
    row = row_of(engine, held)
    assert row.status == JobStatus.SCHEDULED and row.not_before == at("2026-12-01 00:00")
    assert row.held_reason.endswith("held until the month turns")
    # The month turns in Shanghai: counted afresh, and the hold is not lateness.
    assert claimed(store, at("2026-12-01 00:00")) == [held]
    assert json.loads(row_of(engine, held).payload)["group_ext_id_list"] == ["g1", "g2"]


def test_fail_names_the_groups(store: JobStore, engine: Engine) -> None:
    controlled(store, monthly_cap=1, monthly_cap_policy="fail")
    now = at("2026-11-26 12:00")
    assert len(claimed(store, now)) == 0
    first = add(store, now, groups=["g1"])
    assert claimed(store, now) == [first]
    refused = add(store, now, groups=["g2", "g1"])
    assert claimed(store, now) == []
    assert row_of(engine, refused).last_error == (
        "monthly cap: group g1 already received 1 of 1 in 2026-11"
    )


def test_only_jobs_that_may_have_sent_count_and_a_retry_counts_once(
    store: JobStore, engine: Engine
) -> None:
    controlled(store, monthly_cap=2, monthly_cap_policy="fail")
    now = at("2026-11-26 12:00")
    rejected = add(store, now, groups=["g1"])
    retried = add(store, now, groups=["g1"])
    assert claimed(store, now) == [rejected, retried]
    job = store.start_sending(rejected, now, LEASE_S)
    assert job is not None
    store.finish(
        job,
        Decision(JobStatus.FAILED, Outcome.REJECTED, True, errcode=40001, error="no"),
        now,
        now,
        5,
    )
    job = store.start_sending(retried, now, LEASE_S)
    assert job is not None
    store.finish(
        job, Decision(JobStatus.SCHEDULED, Outcome.NOT_SENT, True, retry_in_s=0), now, now, 5
    )
    assert claimed(store, now) == [retried], "its own earlier claim does not count against it"
    with engine.begin() as connection:
        rows = connection.execute(select(group_sends.c.job_id, group_sends.c.month)).all()
    assert sorted(rows) == sorted([(rejected, "2026-11"), (retried, "2026-11")])
    another = add(store, now, groups=["g1"])
    assert claimed(store, now) == [another], "the failed job does not count: 1 of 2 so far"


def test_the_count_is_per_corp_and_month(store: JobStore, engine: Engine) -> None:
    controlled(store, monthly_cap=1, monthly_cap_policy="fail")
    november = at("2026-11-30 23:59")
    first = add(store, november, groups=["g1"])
    other_corp = add(store, november, groups=["g1"], corp_id="corp-b")
    assert sorted(claimed(store, november)) == sorted([first, other_corp])
    december = add(store, at("2026-12-01 00:00"), groups=["g1"])
    assert claimed(store, at("2026-12-01 00:00")) == [december]


# ------------------------------------------------------------------ what status shows
def test_status_shows_held_jobs_and_the_cap_counts(store: JobStore) -> None:
    from broadcaster.campaigns.views import campaign_view
    from broadcaster.ops.report import collect

    controlled(store, quiet_hours="22:00-08:00", monthly_cap=1, monthly_cap_policy="trim")
    sent = add(store, at("2026-11-26 12:00"), groups=["g1", "g2"])
    assert claimed(store, at("2026-11-26 12:00")) == [sent]
    add(store, at("2026-11-26 23:00"))
    assert claimed(store, at("2026-11-26 23:00")) == []
    corps = CorpDirectory(make_settings(monthly_cap=1, quiet_hours="22:00-08:00"))
    view = campaign_view(
        store.engine, corps, at("2026-11-26 23:00"), default_corp="corp-default", cap_policy="trim"
    )
    assert view["held"] == [
        {"corp_id": "corp-default", "reason": "quiet hours until 08:00 (Asia/Shanghai)", "jobs": 1}
    ]
    month = view["monthly_cap"]["corps"]["corp-default"]
    assert (month["month"], month["cap"], month["groups_counted"], month["groups_at_cap"]) == (
        "2026-11",
        1,
        2,
        2,
    )
    assert "campaign_controls" in collect(store, corps, "no Redis here", cap_policy="trim")


def test_a_large_audience_is_counted_and_trimmed_whole(store: JobStore, engine: Engine) -> None:
    controlled(store, monthly_cap=1, monthly_cap_policy="trim")
    now = at("2026-11-26 12:00")
    half = [f"group-{n}" for n in range(600)]
    everyone = [f"group-{n}" for n in range(1200)]
    first = add(store, now, groups=half)
    assert claimed(store, now) == [first]
    second = add(store, now, groups=everyone)
    assert claimed(store, now) == [second]
    row = row_of(engine, second)
    assert json.loads(row.payload)["group_ext_id_list"] == everyone[600:]
    assert json.loads(row.cap_left_out)["groups"] == half


def test_an_operators_retry_of_an_old_job_is_sent_not_expired(
    store: JobStore, engine: Engine
) -> None:
    controlled(store, max_lateness_s=3600)
    now = datetime(2026, 11, 26, 12, 0)
    old = add(store, now - timedelta(minutes=30))
    with engine.begin() as connection:  # it failed long ago
        connection.execute(jobs.update().values(status=JobStatus.FAILED))
    store.retry(old, now + timedelta(hours=5))
    assert claimed(store, now + timedelta(hours=5, seconds=1)) == [old]
