"""Every way a producer puts work in: plain SQL, the Python API, `schedule`, `import`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, text

from broadcaster import schedule_broadcast, schedule_many
from broadcaster.errors import InvalidPayload
from broadcaster.jobs.store import JobStore
from broadcaster.timeutil import utcnow
from tests.helpers import body


def cli(db_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `broadcaster` command, as a user would."""
    env = {**os.environ, "DATABASE_URL": db_url, "WEIBAN_CORP_ID": "corp-default"}
    return subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_plain_sql_insert_from_another_app_is_claimed_when_due(
    engine: Engine, store: JobStore
) -> None:
    payload = json.dumps(body(), ensure_ascii=False)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO broadcast_jobs (corp_id, payload, send_at, dedupe_key, campaign) "
                "VALUES ('corp-a', :p, '2026-12-01 01:00:00', 'promo-42:g7', 'promo-42')"
            ),
            {"p": payload},
        )
    assert store.claim_due(datetime(2026, 12, 1, 0, 59, 59), 10, 60).claimed == []
    claimed = store.claim_due(datetime(2026, 12, 1, 1, 0, 0), 10, 60).claimed
    assert [(job.corp_id, job.due_at) for job in claimed] == [
        ("corp-a", datetime(2026, 12, 1, 1, 0))
    ]


def test_python_api_schedules_dedupes_and_splits(store: JobStore) -> None:
    at = datetime(2026, 12, 1, 9, tzinfo=ZoneInfo("Asia/Shanghai"))
    first = schedule_broadcast(body(), at, store=store, dedupe_key="k1", campaign="c")
    again = schedule_broadcast(body(), at, store=store, dedupe_key="k1", campaign="c")
    assert len(first.job_ids) == 1 and again.job_ids == [] and again.duplicate_keys == ["k1"]
    assert store.get(first.job_ids[0]).send_at == datetime(2026, 12, 1, 1, 0)

    big = body(group_ext_id_list=[f"g{i}" for i in range(4001)])
    split = schedule_broadcast(big, at, store=store, dedupe_key="big", campaign="big")
    rows = [store.get(job_id) for job_id in split.job_ids]
    assert [r.dedupe_key for r in rows] == ["big#1", "big#2", "big#3"]
    assert [len(json.loads(r.payload)["group_ext_id_list"]) for r in rows] == [2000, 2000, 1]
    assert {r.campaign for r in rows} == {"big"}


def test_python_bulk_refuses_a_bad_item_and_writes_nothing(store: JobStore) -> None:
    items = [{"payload": body(), "dedupe_key": f"b{i}"} for i in range(5)]
    items[3]["payload"] = body(group_ext_id_list=[])
    with pytest.raises(InvalidPayload, match="item 3: .*group_ext_id_list"):
        schedule_many(items, store=store)
    assert store.list_jobs() == []
    items[3]["payload"] = body()
    assert len(schedule_many(items, store=store).job_ids) == 5


def test_cli_schedule_reads_stdin_and_a_local_time(db_url: str, store: JobStore) -> None:
    done = cli(
        db_url,
        "schedule",
        "--at",
        "2030-12-01 09:00",
        "--campaign",
        "cli",
        stdin=json.dumps(body()),
    )
    assert done.returncode == 0, done.stderr
    job = store.list_jobs(campaign="cli")[0]
    assert job.send_at == datetime(2030, 12, 1, 1, 0), "naive --at is read in Asia/Shanghai"

    utc = cli(
        db_url, "schedule", "--at", "2030-12-01T09:00:00Z", "--tz", "UTC", stdin=json.dumps(body())
    )
    assert utc.returncode == 0, utc.stderr


def test_cli_schedule_refuses_a_bad_payload_in_one_line(db_url: str, store: JobStore) -> None:
    done = cli(db_url, "schedule", stdin=json.dumps(body(attachments=[{"msgtype": "link"}])))
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, "one line, no traceback"
    assert "needs a 'link' object" in done.stderr
    assert store.list_jobs() == []


def test_cli_import_jsonl_reports_inserted_duplicates_and_rejects(
    db_url: str, store: JobStore, tmp_path: Path
) -> None:
    lines = [
        json.dumps(
            {
                "payload": body(),
                "dedupe_key": f"k{i}",
                "campaign": "imp",
                "send_at": "2026-12-01T09:00:00+08:00",
            }
        )
        for i in range(10)
    ]
    lines[2] = lines[1]  # duplicate key inside the file
    lines[4] = "{broken"  # not JSON
    lines[6] = json.dumps({"payload": body(text="", attachments=[])})  # no content
    lines[8] = json.dumps({"payload": body(), "send_at": "next tuesday"})
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    done = cli(db_url, "import", str(path))
    assert done.returncode == 0, done.stderr
    assert "10 lines: 6 jobs inserted, 1 skipped as duplicate, 3 rejected" in done.stdout
    assert "line 5: not valid JSON" in done.stdout
    assert "line 7: payload invalid" in done.stdout
    assert "line 9: cannot read time 'next tuesday'" in done.stdout
    assert len(store.list_jobs(campaign="imp")) == 6

    again = cli(db_url, "import", str(path))
    assert "0 jobs inserted, 7 skipped as duplicate" in again.stdout


def test_cli_import_csv(db_url: str, store: JobStore, tmp_path: Path) -> None:
    import csv

    path = tmp_path / "jobs.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["corp_id", "payload", "send_at", "dedupe_key", "campaign", "priority"])
        writer.writerow(
            ["corp-b", json.dumps(body(), ensure_ascii=False), "2030-12-01 09:00", "c1", "csv", "5"]
        )
        writer.writerow(["corp-b", "{bad", "", "c2", "csv", ""])
        writer.writerow(["", json.dumps(body()), "", "c3", "csv", "high"])
    done = cli(db_url, "import", str(path), "--tz", "UTC")
    assert "3 lines: 1 jobs inserted, 0 skipped as duplicate, 2 rejected" in done.stdout
    assert "line 3: payload is not valid JSON" in done.stdout
    assert "line 4: priority must be a whole number" in done.stdout
    job = store.list_jobs(campaign="csv")[0]
    assert (job.corp_id, job.priority, job.send_at) == ("corp-b", 5, datetime(2030, 12, 1, 9))


def test_send_at_omitted_means_now(store: JobStore) -> None:
    job_id = schedule_broadcast(body(), store=store).job_ids[0]
    assert abs(store.get(job_id).send_at - utcnow()) < timedelta(seconds=5)


def test_a_large_batch_dedupes_within_itself_and_against_the_table(store: JobStore) -> None:
    """Large batches take PostgreSQL's COPY path; the result must not differ."""
    schedule_broadcast(body(), store=store, dedupe_key="bulk-7")
    items = [{"payload": body(name=f"n{i}"), "dedupe_key": f"bulk-{i % 400}"} for i in range(500)]
    result = schedule_many(items, store=store, batch_size=1000)
    assert len(result.job_ids) == 399, "400 keys, one already there"
    assert len(result.duplicate_keys) == 101
    assert result.job_ids == sorted(result.job_ids)
    names = [json.loads(store.get(job_id).payload)["name"] for job_id in result.job_ids[:3]]
    assert names == ["n0", "n1", "n2"], "rows go in the order given"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_key_committed_during_a_bulk_insert_is_a_duplicate_not_an_error(
    engine: Engine, store: JobStore
) -> None:
    """The COPY path looks up the keys already held, then copies the rest straight in: a
    key another producer commits in between makes the COPY wait on it and then fail, and
    the batch goes in the staged way (INSERT … ON CONFLICT) instead, the key a duplicate."""
    other = engine.connect()
    other.begin()
    other.execute(
        text(
            "INSERT INTO broadcast_jobs (corp_id, payload, send_at, dedupe_key) "
            "VALUES ('corp-a', :payload, now(), 'race-250')"
        ),
        {"payload": json.dumps(body(name="first"))},
    )
    committer = threading.Timer(0.5, lambda: (other.commit(), other.close()))
    committer.start()
    items = [{"payload": body(name=f"n{i}"), "dedupe_key": f"race-{i}"} for i in range(500)]
    try:
        result = schedule_many(items, store=store, batch_size=1000)
    finally:
        committer.join()
    assert result.duplicate_keys == ["race-250"]
    assert len(result.job_ids) == 499 and result.job_ids == sorted(result.job_ids)
    with engine.connect() as connection:
        names = connection.execute(
            text("SELECT payload FROM broadcast_jobs WHERE dedupe_key = 'race-250'")
        ).scalars()
        assert [json.loads(payload)["name"] for payload in names] == ["first"]
        count = connection.execute(text("SELECT count(*) FROM broadcast_jobs")).scalar_one()
    assert count == 500
