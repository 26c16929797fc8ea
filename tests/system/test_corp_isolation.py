"""One corp's trouble holds no other corp's sends (issue 14): with one corp's vendor slow
(2 s a call) and another's blocked (10053), a healthy corp whose jobs sit behind theirs in
the queue is served at its own pace, by a real `run` with its defaults."""

from __future__ import annotations

import json
from pathlib import Path

from broadcaster import schedule_many
from broadcaster.jobs.store import JobStore
from broadcaster.vendor.sandbox import SandboxServer
from tests.helpers import body, wait_until
from tests.system.harness import Service

SLOW, BLOCKED, HEALTHY = "corp-slow", "corp-blocked", "corp-ok"
PER_CORP = 40
HEALTHY_PACE_S = PER_CORP / 10  # the sandbox's 600 a minute
SLOW_CALL_S = 2.0


def test_a_slow_corp_and_a_blocked_corp_hold_no_other_corps_sends(
    db_url: str, store: JobStore, redis_url: str, sandbox: SandboxServer, tmp_path: Path
) -> None:
    corps_file = tmp_path / "corps.json"
    corps_file.write_text(
        json.dumps({corp: {"secret": "sandbox-secret"} for corp in (SLOW, BLOCKED, HEALTHY)})
    )
    sandbox.state.config.corp_latency_ms = {SLOW: SLOW_CALL_S * 1000}
    sandbox.state.block_corp(BLOCKED, seconds=600)
    # The troubled corps' jobs first: they are claimed and queued ahead of the healthy ones.
    jobs = [
        {"payload": body(name=f"{corp}-{i}", group_ext_id_list=[f"g-{corp}-{i}"]), "corp_id": corp}
        for corp in (SLOW, BLOCKED, HEALTHY)
        for i in range(PER_CORP)
    ]
    ids = schedule_many(jobs, store=store).job_ids
    healthy = [i for i, job in zip(ids, jobs, strict=True) if job["corp_id"] == HEALTHY]
    service = Service(
        db_url, redis_url, sandbox, WEIBAN_CORP_ID=HEALTHY, WEIBAN_CORPS_FILE=str(corps_file)
    )
    service.start("run")
    try:
        wait_until(
            lambda: all(store.get(i).status == "sent" for i in healthy), timeout=90, every=0.2
        )
    finally:
        service.stop()

    created = sandbox.state.created_list()
    first_call = min(c["received_at"] for c in created)
    healthy_times = sorted(c["created_at"] for c in created if c["corp_id"] == HEALTHY)
    slow_times = [c["created_at"] for c in created if c["corp_id"] == SLOW]
    began, took = healthy_times[0] - first_call, healthy_times[-1] - first_call
    assert began <= 1.5, f"the healthy corp's first send came {began:.1f} s after the first call"
    assert took <= HEALTHY_PACE_S + 2.5, (
        f"the healthy corp's {PER_CORP} sends took {took:.1f} s from the first call "
        f"(its own pace: {HEALTHY_PACE_S:.0f} s)"
    )
    assert len(slow_times) < PER_CORP, "the slow corp was still sending meanwhile"
    assert not [c for c in created if c["corp_id"] == BLOCKED], "the blocked corp sent nothing"
    assert sandbox.state.errors.get(10052, 0) == 0, "no call over a corp's in-flight limit"
