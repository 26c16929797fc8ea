"""One corp's refused secret holds no other corp: with the default corp's secret refused,
the worker starts all the same and another corp's jobs are sent."""

from __future__ import annotations

import json
from pathlib import Path

from broadcaster import schedule_many
from broadcaster.jobs.store import JobStore
from broadcaster.vendor.sandbox import SandboxServer
from tests.helpers import body, wait_until
from tests.system.harness import Service


def test_a_refused_default_secret_does_not_stop_the_other_corps(
    db_url: str, store: JobStore, redis_url: str, sandbox: SandboxServer, tmp_path: Path
) -> None:
    corps_file = tmp_path / "corps.json"
    corps_file.write_text(json.dumps({"corp-b": {"secret": "sandbox-secret"}}))
    jobs = [
        {"payload": body(name=f"{corp}-{i}", group_ext_id_list=[f"g-{corp}-{i}"]), "corp_id": corp}
        for corp, count in (("corp-a", 3), ("corp-b", 10))
        for i in range(count)
    ]
    ids = schedule_many(jobs, store=store).job_ids
    by_corp = {
        corp: [i for i, j in zip(ids, jobs, strict=True) if j["corp_id"] == corp]
        for corp in ("corp-a", "corp-b")
    }
    service = Service(
        db_url,
        redis_url,
        sandbox,
        WEIBAN_SECRET="not-the-secret",
        WEIBAN_CORPS_FILE=str(corps_file),
    )
    worker = service.start("run", "--processes", "1", "--threads", "4")
    try:
        wait_until(
            lambda: all(store.get(i).status == "sent" for i in by_corp["corp-b"]),
            timeout=60,
            every=0.2,
        )
        wait_until(lambda: all(store.get(i).last_error for i in by_corp["corp-a"]), timeout=30)
    finally:
        service.stop()
    assert worker.events("corp_secret_refused")[0]["corp_id"] == "corp-a"
    for job_id in by_corp["corp-a"]:
        job = store.get(job_id)
        assert (job.status, job.attempts) == ("scheduled", 0), "waits for a fixed secret"
    created = {m["body"]["name"] for m in sandbox.state.created_list()}
    assert created == {f"corp-b-{i}" for i in range(10)}
    assert not [line for line in worker.lines if "not-the-secret" in line], "never logged"
