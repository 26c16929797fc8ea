"""The reconciler against the sandbox over HTTP, a real database (SQLite, PostgreSQL) and
a real Redis: `unknown` jobs settled from the vendor's list, sent jobs followed to their
groups. The clock handed to the reconciler runs ahead, so a call made a second ago is
"RECONCILE_AFTER_S ago" without waiting two minutes; the list reads are real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from broadcaster import schedule_broadcast
from broadcaster.bootstrap import Bootstrap
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.jobs.tables import jobs
from broadcaster.ops.report import collect
from broadcaster.reconcile.reconciler import PassLock, PassReport, ReconcileConfig, Reconciler
from broadcaster.timeutil import utcnow
from broadcaster.vendor.sandbox import SandboxServer
from tests.conftest import make_settings
from tests.helpers import body, wait_until
from worker.sender import Sender

AHEAD_S = 200.0
"""The reconciler's clock runs this far ahead of the wall clock (> RECONCILE_AFTER_S)."""


class Rig:
    """A worker's sender and a reconciler sharing one bootstrap, like the real processes."""

    def __init__(self, db_url: str, redis_url: str, sandbox: SandboxServer, **settings: Any):
        self.settings = make_settings(
            database_url=db_url,
            redis_url=redis_url,
            weiban_base_url=sandbox.url,
            weiban_corp_id="corp-a",
            weiban_secret="sandbox-secret",
            weiban_timeout_s=2,  # 1 s turned a loaded machine's slow connect into "not sent"
            retry_base_s=0.01,
            **settings,
        )
        self.boot = Bootstrap(self.settings)
        self.store: JobStore = self.boot.store
        self.sender = Sender(self.store, self.boot.quota, self.boot.vendor, self.settings)
        self.sandbox = sandbox
        sandbox.state.faults.hang_s = 2.5

    def reconciler(self, clock: Callable[[], Any] | None = None) -> Reconciler:
        config = ReconcileConfig(after_s=self.settings.reconcile_after_s)
        return Reconciler(
            self.store,
            self.boot.vendor,
            self.boot.read_quota,
            config,
            clock=clock or (lambda: utcnow() + timedelta(seconds=AHEAD_S)),
        )

    def send(self, payload: dict[str, Any] | None = None, **job: Any) -> int:
        """Schedule one job due now and run the worker's body on it."""
        job_id = schedule_broadcast(
            payload or body(), store=self.store, corp_id="corp-a", **job
        ).job_ids[0]
        assert job_id in [j.id for j in self.store.claim_due(utcnow(), 10, 60).claimed]
        self.sender.send(job_id)
        return job_id

    def missions(self) -> list[dict[str, Any]]:
        return [m for m in self.sandbox.state.created_list()]

    def run_pass(self) -> PassReport:
        return self.reconciler().run_pass()


@pytest.fixture
def rig(db_url: str, redis_url: str, sandbox: SandboxServer) -> Rig:
    return Rig(db_url, redis_url, sandbox)


def test_an_unknown_job_whose_message_exists_is_settled_sent_with_its_mission(rig: Rig) -> None:
    rig.sandbox.state.faults.hang_after_create = 1
    job_id = rig.send(body(name="hung"))
    assert rig.store.get(job_id).status == JobStatus.UNKNOWN

    report = rig.run_pass()

    job = rig.store.get(job_id)
    created = rig.missions()
    assert len(created) == 1, "found, not sent again"
    assert (job.status, job.vendor_mission_id) == (JobStatus.SENT, created[0]["mission_id"])
    assert job.delivery_status == "waiting" and job.delivery_staff_total == 1
    assert report.count("found") == 1 and report.pages == 1
    assert [a.outcome for a in rig.store.attempts_of(job_id)] == ["ambiguous", "found"]
    assert "found at the vendor as mission" in job.last_error


def test_an_unknown_job_the_vendor_never_created_is_sent_again_once(rig: Rig) -> None:
    rig.sandbox.state.faults.http_5xx = 1
    job_id = rig.send(body(name="lost"))
    assert rig.store.get(job_id).status == JobStatus.UNKNOWN and rig.missions() == []

    report = rig.run_pass()

    assert report.count("resent") == 1
    job = rig.store.get(job_id)
    assert job.status == JobStatus.SCHEDULED and "not at the vendor" in job.last_error
    ahead = utcnow() + timedelta(seconds=AHEAD_S)  # the reconciler's clock: due at once
    assert [j.id for j in rig.store.claim_due(ahead, 10, 60).claimed] == [job_id]
    rig.sender.send(job_id)
    assert rig.store.get(job_id).status == JobStatus.SENT
    assert len(rig.missions()) == 1, "created exactly once"
    outcomes = [a.outcome for a in rig.store.attempts_of(job_id)]
    assert outcomes == ["ambiguous", "absent", "sent"]


def test_an_absent_job_with_no_attempts_left_fails_with_the_reason(rig: Rig) -> None:
    rig.sandbox.state.faults.http_5xx = 1
    job_id = rig.send(body(name="last try"), max_attempts=1)

    rig.run_pass()

    job = rig.store.get(job_id)
    assert job.status == JobStatus.FAILED
    assert "not sent again: 1 of 1 attempts used" in job.last_error
    assert rig.missions() == []


def test_a_refused_list_leaves_the_job_unknown_and_status_says_why(rig: Rig) -> None:
    rig.sandbox.state.faults.hang_after_create = 1
    rig.sandbox.state.faults.list_refuse_errcode = 20003
    job_id = rig.send()

    report = rig.run_pass()

    job = rig.store.get(job_id)
    assert job.status == JobStatus.UNKNOWN
    assert "20003" in job.last_error and "调用此接口需购买基础席位" in job.last_error
    assert report.corps[0].list_error and report.count("unsettled") == 1
    reasons = collect(rig.store, rig.boot.corps, rig.boot.quota)["unknown_reasons"]
    assert reasons[0]["jobs"] == 1 and "20003" in reasons[0]["reason"]
    rig.sandbox.state.faults.list_refuse_errcode = 0
    rig.run_pass()
    assert rig.store.get(job_id).status == JobStatus.SENT, "settled once the list answers"


def test_one_mission_two_identical_jobs_could_own_stays_unknown(rig: Rig) -> None:
    twin = body(name="twin")
    rig.sandbox.state.faults.hang_after_create = 1
    first = rig.send(twin, dedupe_key="twin-1")
    rig.sandbox.state.faults.http_5xx = 1
    second = rig.send(twin, dedupe_key="twin-2")
    assert [rig.store.get(i).status for i in (first, second)] == ["unknown", "unknown"]

    rig.run_pass()

    for job_id in (first, second):
        job = rig.store.get(job_id)
        assert job.status == JobStatus.UNKNOWN, "never a guess"
        assert "resolve by hand" in job.last_error
        assert str(first) in job.last_error and str(second) in job.last_error
    assert len(rig.missions()) == 1


def test_a_malformed_list_answer_settles_nothing_then_the_next_pass_does(rig: Rig) -> None:
    rig.sandbox.state.faults.hang_after_create = 1
    job_id = rig.send()
    for _ in range(3):  # not JSON; no `missions`; its mission's time and text unreadable
        rig.sandbox.state.faults.list_malformed = 1
        rig.run_pass()
        assert rig.store.get(job_id).status == JobStatus.UNKNOWN
    assert "may match" in rig.store.get(job_id).last_error or "unreadable" in (
        rig.store.get(job_id).last_error
    )
    rig.run_pass()
    assert rig.store.get(job_id).status == JobStatus.SENT
    assert len(rig.missions()) == 1


def test_sent_jobs_get_their_mission_and_delivery_from_one_page(rig: Rig) -> None:
    rig.sandbox.state.config.confirm_after_s = 0.5
    groups = [f"g-{i}" for i in range(5)]
    ids = [
        rig.send(
            body(name=f"campaign-{i}", staff_ext_id_list=["s-1", "s-2"], group_ext_id_list=groups)
        )
        for i in range(3)
    ]
    first = rig.run_pass()
    assert first.pages == 1 and first.count("delivery_updated") == 3
    by_mission = {m["mission_id"]: m["body"]["name"] for m in rig.missions()}
    for job_id in ids:
        job = rig.store.get(job_id)
        assert by_mission[job.vendor_mission_id] == json.loads(job.payload)["name"]
    wait_until(
        lambda: all(m["status"] == "completed" for m in rig.sandbox.state.missions_list()),
        timeout=5,
    )
    rig.run_pass()
    for job_id in ids:
        job = rig.store.get(job_id)
        assert job.delivery_status == "completed"
        assert (job.delivery_groups_reached, job.delivery_groups_unreached) == (5, 0)
        assert (job.delivery_staff_confirmed, job.delivery_staff_total) == (2, 2)
        assert sorted(json.loads(job.delivery_detail)["reached"]) == groups
    assert rig.run_pass().count("delivery_updated") == 0, "final missions are not read again"
    counts = collect(rig.store, rig.boot.corps, rig.boot.quota)["groups"][0]["delivery"]
    assert counts["missions"] == 3 and counts["groups_reached"] == 15
    listed = rig.store.list_jobs(delivery="completed")
    assert sorted(row.id for row in listed) == sorted(ids)


def test_unknown_mode_leaves_unknown_jobs_to_the_operator(
    db_url: str, redis_url: str, sandbox: SandboxServer
) -> None:
    rig = Rig(db_url, redis_url, sandbox, weiban_on_ambiguous="unknown")
    rig.sandbox.state.faults.hang_after_create = 1
    job_id = rig.send()
    config = ReconcileConfig(on_ambiguous="unknown")
    reconciler = Reconciler(
        rig.store,
        rig.boot.vendor,
        rig.boot.read_quota,
        config,
        clock=lambda: utcnow() + timedelta(seconds=AHEAD_S),
    )
    report = reconciler.run_pass()
    assert rig.store.get(job_id).status == JobStatus.UNKNOWN and report.corps == []


def test_one_pass_at_a_time_and_a_dead_holder_frees_it_after_one_lease(redis_client) -> None:  # type: ignore[no-untyped-def]
    first = PassLock(redis_client, lease_s=0.5)
    second = PassLock(redis_client, lease_s=0.5)
    assert first.acquire() and not second.acquire()
    first.renew()
    assert redis_client.pttl(first.key) > 400
    second.release()  # not the holder: nothing happens
    assert not second.acquire()
    first.release()
    assert second.acquire(), "released by its holder"
    assert wait_until(lambda: first.acquire(), timeout=3), "a holder that died frees it"


def test_two_reconcilers_at_once_settle_each_job_once(rig: Rig) -> None:
    """Two schedulers whose passes overlap (no lock between them): every move is a
    compare-and-set, so a job is sent again once, however the passes interleave."""
    lost = []
    for index in range(6):
        rig.sandbox.state.faults.http_5xx = 1
        lost.append(rig.send(body(name=f"lost-{index}")))
    passes = [rig.reconciler(), rig.reconciler()]
    reports: list[PassReport] = []
    threads = [threading.Thread(target=lambda r=r: reports.append(r.run_pass())) for r in passes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(report.count("resent") for report in reports) == len(lost)
    for job_id in lost:
        outcomes = [a.outcome for a in rig.store.attempts_of(job_id)]
        assert outcomes == ["ambiguous", "absent"], outcomes
        assert rig.store.get(job_id).status == JobStatus.SCHEDULED


def test_the_reconcile_command_prints_what_it_settled(
    db_url: str, rig: Rig, redis_url: str, sandbox: SandboxServer
) -> None:
    rig.sandbox.state.faults.hang_after_create = 1
    found = rig.send(body(name="seen"))
    rig.sandbox.state.faults.http_5xx = 1
    absent = rig.send(body(name="never"))
    with rig.store.engine.begin() as connection:  # as if the calls began 9 s ago
        connection.execute(jobs.update().values(last_call_at=utcnow() - timedelta(seconds=9)))
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "WEIBAN_BASE_URL": sandbox.url,
        "WEIBAN_CORP_ID": "corp-a",
        "WEIBAN_SECRET": "sandbox-secret",
        "WEIBAN_TIMEOUT_S": "1",
        "RECONCILE_AFTER_S": "8",  # the least the settings allow with that timeout
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", "reconcile", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"1 ({found})" in done.stdout and f"1 ({absent})" in done.stdout
    assert rig.store.get(found).status == JobStatus.SENT
    assert rig.store.get(absent).status == JobStatus.SCHEDULED
