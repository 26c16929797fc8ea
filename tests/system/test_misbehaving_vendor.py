"""A vendor that answers strangely, against the real service: each odd answer has its
documented end, the worker stays up, at most 4 calls are ever in flight, and no secret or
token reaches a log line, a table, Redis or the terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from broadcaster import schedule_many
from broadcaster.jobs.store import JobStore
from broadcaster.jobs.tables import attempts
from tests.helpers import body, wait_until
from tests.misbehaving_vendor import BAD_SECRET, CASES, SECRET, MisbehavingVendor
from tests.system.harness import Service

TRICKLED_JOBS = 8
FINAL = ("sent", "failed", "unknown")
TIMEOUT_S = 1.0  # each exchange; a whole create call gets twice that


@pytest.fixture
def vendor() -> Iterator[MisbehavingVendor]:
    server = MisbehavingVendor(trickle_interval_s=0.3).start()
    yield server
    server.stop()


def schedule_cases(store: JobStore) -> tuple[dict[str, int], int]:
    """One job per odd kind (the trickle several, to press on the in-flight cap), and one
    for a corp whose token request the vendor refuses, quoting the secret back."""
    names = [f"case:{kind}:0" for kind in CASES if kind != "trickle"]
    names += [f"case:trickle:{i}" for i in range(TRICKLED_JOBS)]
    items = [{"payload": body(name=name), "corp_id": "corp-a"} for name in names]
    items.append({"payload": body(name="refused-secret"), "corp_id": "corp-b"})
    ids = schedule_many(items, store=store).job_ids
    return dict(zip(names, ids[:-1], strict=True)), ids[-1]


def cli(service: Service, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", *args],
        env=service.env,
        cwd=service.cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


# the vendor's answers: one database is enough
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_each_odd_answer_ends_as_documented_and_nothing_leaks(
    db_url: str,
    store: JobStore,
    redis_url: str,
    redis_client: redis.Redis,
    vendor: MisbehavingVendor,
    tmp_path: Path,
) -> None:
    corps_file = tmp_path / "corps.json"
    corps_file.write_text(json.dumps({"corp-b": {"secret": BAD_SECRET}}))
    ids, refused_id = schedule_cases(store)
    service = Service(
        db_url,
        redis_url,
        vendor,  # type: ignore[arg-type]
        WEIBAN_SECRET=SECRET,
        WEIBAN_CORPS_FILE=str(corps_file),
        WEIBAN_TIMEOUT_S=str(TIMEOUT_S),
        SENDING_LEASE_S="10",
        RETRY_BASE_S="0.2",
        RETRY_MAX_S="1",
    )
    run = service.start("run", "--processes", "1", "--threads", "8")
    try:
        wait_until(
            lambda: (
                all(store.get(i).status in FINAL for i in ids.values())
                and store.get(refused_id).last_error
            ),
            timeout=90,
            every=0.2,
        )
        assert run.popen.poll() is None, "the worker is still serving"
        listing = cli(service, "jobs", "list", "--limit", "100")
        quoting = [ids["case:errmsg_token:0"], ids["case:token_302:0"], refused_id]
        shown = [cli(service, "jobs", "show", str(i)) for i in quoting]
    finally:
        service.stop()

    ended = {name: (store.get(i).status, store.get(i).attempts) for name, i in ids.items()}
    expected = {
        name: (CASES[name.split(":")[1]].status, CASES[name.split(":")[1]].attempts) for name in ids
    }
    assert ended == expected

    refused = store.get(refused_id)
    assert (refused.status, refused.attempts) == ("scheduled", 0), "waits for a fixed secret"
    assert "check the corp's secret" in refused.last_error

    record = vendor.record
    assert record.peak_in_flight <= 4
    trickled = [seconds for kind, seconds in record.calls if kind == "trickle"]
    # each trickle (60 s long) is cut at its exchange's 1 s: well inside the slot's lease
    assert len(trickled) == TRICKLED_JOBS and max(trickled) < 2 * TIMEOUT_S + 1
    assert sorted(record.created) == sorted(set(record.created)), "nothing created twice"

    secrets = [SECRET, BAD_SECRET, *record.tokens_issued]
    with store.engine.connect() as connection:
        errors = connection.execute(select(attempts.c.error)).scalars().all()
    texts = {
        "logs": "\n".join(service.all_lines()),
        "last_error": "\n".join(str(store.get(i).last_error) for i in [*ids.values(), refused_id]),
        "attempts.error": "\n".join(str(error) for error in errors),
        "redis": "\n".join(_redis_strings(redis_client)),
        "terminal": listing + "\n".join(shown),
    }
    leaks = {where: s for where, text in texts.items() for s in secrets if s in text}
    assert leaks == {}
    failed = store.get(ids["case:errmsg_token:0"]).last_error
    assert "errcode 20001" in failed and "***" in failed


def _redis_strings(client: redis.Redis) -> list[str]:
    values = []
    for key in client.scan_iter(count=1000):
        if client.type(key) == b"string":
            values.append(client.get(key).decode(errors="replace"))
    return values
