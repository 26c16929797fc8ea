"""The README cannot drift from the code: every command, SQL statement and Python example
in it is run here (install and test are run by .ci/run; the demo by test_demo.py)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from broadcaster.db import make_engine
from broadcaster.jobs.store import JobStore
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent

LONG_RUNNING = {"sandbox", "run", "scheduler", "worker"}
COVERED_ELSEWHERE = {"demo", "doctor", "reconcile", "web", "tokens"}
"""test_demo.py; tests/integration/test_doctor.py; test_reconcile.py (it asks the vendor's
list, which here would be the real Weiban); tests/web/test_http.py."""


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def command_lines() -> list[str]:
    lines = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.strip().removeprefix(".venv/bin/")
            if line.startswith(("broadcaster ", "honcho ")):
                lines.append(line)
    return lines


def subcommand(line: str) -> str:
    return line.split()[1]


@pytest.fixture
def workdir(tmp_path: Path, sqlite_template: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copy(ROOT / "Procfile", tmp_path / "Procfile")
    shutil.copy(sqlite_template, tmp_path / "broadcaster.db")
    return tmp_path


def user_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WEIBAN_", "DATABASE_URL", "REDIS_URL", "SCHEDULER_"))
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({"WEIBAN_CORP_ID": "corp-a", "WEIBAN_SECRET": "sandbox-secret", **extra})
    return env


def test_every_readme_command_is_exercised() -> None:
    lines = command_lines()
    assert len(lines) > 15
    for line in lines:
        assert subcommand(line) in (
            LONG_RUNNING
            | COVERED_ELSEWHERE
            | {"db", "schedule", "import", "status", "jobs", "start", "schedules"}
        ), f"README command without a test: {line}"
    assert "python3 -m venv .venv && .venv/bin/pip install -e '.[test]'" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet -e '.[test]'" in ci and ".venv/bin/pytest" in ci


def test_readme_producer_and_operator_commands_run(workdir: Path) -> None:
    """Every short-lived command, in README order, against one database."""
    store = JobStore(make_engine(f"sqlite:///{workdir / 'broadcaster.db'}"), default_corp="corp-a")
    ids = _jobs_in_every_state(store)
    for line in command_lines():
        if subcommand(line) in LONG_RUNNING | COVERED_ELSEWHERE or line.startswith("honcho"):
            continue
        line = _with_job_id(line, ids)
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=workdir,
            env=user_env(),
            input="y\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    jobs = {row.dedupe_key: row for row in store.list_jobs(limit=100)}
    assert "double-12:group-1" in jobs and "d12:group-4" in jobs and "d12:vip-2" in jobs
    assert store.get(ids["cancel"]).status == "cancelled"
    assert store.get(ids["resolve"]).status == "sent"


def _jobs_in_every_state(store: JobStore) -> dict[str, int]:
    from broadcaster import schedule_many
    from tests.helpers import body

    made = schedule_many([{"payload": body()} for _ in range(4)], store=store).job_ids
    ids = dict(zip(["show", "cancel", "retry", "resolve"], made, strict=True))
    with store.engine.begin() as connection:
        connection.execute(
            text(f"UPDATE broadcast_jobs SET status='failed' WHERE id={ids['retry']}")
        )
        connection.execute(
            text(f"UPDATE broadcast_jobs SET status='unknown' WHERE id={ids['resolve']}")
        )
    return ids


def _with_job_id(line: str, ids: dict[str, int]) -> str:
    for verb in ("show", "cancel", "retry", "resolve"):
        if f"jobs {verb} 42" in line:
            return line.replace(" 42", f" {ids[verb]}")
    return line


def _start(line: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", "-c", f"exec {line}"],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[str]) -> str:
    os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=40)
    return output


def test_readme_running_commands_deliver_a_message(workdir: Path) -> None:
    """`sandbox --port 8800` and `run` from the README, with the embedded Redis: a job
    scheduled with the README's command reaches the sandbox."""
    lines = {subcommand(line): line for line in command_lines() if line.startswith("broadcaster")}
    env = user_env(WEIBAN_BASE_URL="http://127.0.0.1:8800", SCHEDULER_POLL_INTERVAL_S="0.2")
    sandbox = _start(lines["sandbox"], workdir, env)
    try:
        import httpx

        wait_until(lambda: _answers("http://127.0.0.1:8800/sandbox/stats"), timeout=20)
        service = _start(lines["run"], workdir, env)
        try:
            subprocess.run(
                ["bash", "-c", "broadcaster schedule examples/body.json"],
                cwd=workdir,
                env=env,
                check=True,
                timeout=60,
            )
            wait_until(
                lambda: httpx.get("http://127.0.0.1:8800/sandbox/stats").json()["created"],
                timeout=60,
                every=0.2,
            )
        finally:
            output = _stop(service)
        assert service.returncode == 0, output
        assert "scheduler_started" in output and "worker_started" in output
    finally:
        _stop(sandbox)


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


EXPECTED_START = {
    "scheduler": ["scheduler_started"],
    "worker": ["worker_started"],
    "honcho": ["scheduler_started", "worker_started"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_START))
def test_readme_production_commands_start_and_stop_cleanly(
    workdir: Path,
    name: str,
    redis_url: str,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    line = next(
        line for line in command_lines() if line.split()[0] == name or line.split()[1] == name
    )
    env = user_env(REDIS_URL=redis_url, WEIBAN_BASE_URL=sandbox.url, WORKER_PROCESSES="1")
    process = _start(line, workdir, env)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: all(word in "".join(seen) for word in EXPECTED_START[name]),
            timeout=40,
            every=0.2,
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(40)
        reader.join(5)
    assert "Traceback" not in "".join(seen)


def test_readme_sql_inserts_work_on_their_database(db_url: str, engine) -> None:  # type: ignore[no-untyped-def]
    kind = "SQLite" if db_url.startswith("sqlite") else "PostgreSQL"
    statement = next(block for block in blocks("sql") if block.startswith(f"-- {kind}"))
    if kind == "SQLite":  # exactly as another app would: the plain sqlite3 module
        connection = sqlite3.connect(db_url.removeprefix("sqlite:///"))
        connection.execute(statement)
        connection.commit()
        connection.close()
    else:
        with engine.begin() as connection:
            connection.execute(text(statement))
    store = JobStore(engine, default_corp="corp-a")
    claimed = store.claim_due(datetime(2030, 12, 12, 12, 0, 0), 10, 60)
    assert len(claimed.claimed) == 1 and claimed.failed == []


def test_readme_python_example_runs(workdir: Path) -> None:
    example = blocks("python")[0]
    done = subprocess.run(
        [sys.executable, "-c", example],
        cwd=workdir,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    connection = sqlite3.connect(workdir / "broadcaster.db")
    keys = {row[0] for row in connection.execute("SELECT dedupe_key FROM broadcast_jobs")}
    assert {"double-12:group-9", "double-12:group-10", "double-12:group-11"} <= keys
