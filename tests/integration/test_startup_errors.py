"""Commands that cannot work say so in one line and exit 1 (issue 9, items 7, 8, 10, 11):
a worker with a broken corps file stops instead of restarting its children forever, no
database password is printed, no read of a database creates one, and every command that
needs the tables names `broadcaster db upgrade`."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from broadcaster import migrate
from broadcaster.db import make_engine
from broadcaster.errors import SettingsError
from tests.conftest import make_settings
from tests.helpers import body as vendor_body
from worker.supervisor import EXIT_CONFIG, Supervisor

BAD_JSON = (
    "cannot read it as JSON: Expecting property name enclosed in double quotes: "
    "line 1 column 2 (char 1)"
)


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any broadcaster setting, plus `extra`."""
    prefixes = ("WEIBAN_", "DATABASE_URL", "REDIS_URL", "SCHEDULER_", "WORKER_", "QUEUED_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


def broadcaster(*args: str, cwd: Path, timeout: float = 60, **env: str) -> tuple[int, str]:
    """Run the CLI as a user does; return (exit code, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stderr


def migrated_sqlite(path: Path) -> str:
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


# ------------------------------------------------------------------ item 7: the worker
@pytest.mark.parametrize("command", ["worker", "run", "scheduler"])
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{bad", BAD_JSON),
        (
            '{"corp-b": {"secret": "s3cret-b", "quota_per_minute": "ten"}}',
            "corp corp-b: quota_per_minute: Input should be a valid integer, unable to parse "
            "string as an integer (got 'ten')",
        ),
    ],
)
def test_a_broken_corps_file_stops_worker_and_run_at_once_with_one_line(
    tmp_path: Path, redis_url: str, command: str, content: str, problem: str
) -> None:
    corps = tmp_path / "corps.json"
    corps.write_text(content)
    code, err = broadcaster(
        command,
        cwd=tmp_path,
        timeout=30,  # before the fix: children restarted every 2 s, forever
        # No database yet: the command must not wait for one before checking the file.
        DATABASE_URL=f"sqlite:///{tmp_path / 'jobs.db'}",
        REDIS_URL=redis_url,
        WEIBAN_CORPS_FILE=str(corps),
    )
    separator = ": " if problem == BAD_JSON else ", "
    assert (code, err) == (1, f"error: WEIBAN_CORPS_FILE {corps}{separator}{problem}\n")


def lines_of(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's stderr lines, readable with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_a_worker_process_stopped_by_its_configuration_stops_the_supervisor(
    tmp_path: Path, redis_url: str
) -> None:
    """The corps file breaks after the supervisor checked it, while its children wait for
    the database: the first child to read it stops, and so does the whole command."""
    corps = tmp_path / "corps.json"
    corps.write_text('{"corp-b": {"secret": "s3cret-b"}}')
    database = tmp_path / "jobs.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "broadcaster.cli.main", "worker", "--processes", "2"],
        cwd=tmp_path,
        env=clean_env(
            DATABASE_URL=f"sqlite:///{database}",
            REDIS_URL=redis_url,
            WEIBAN_CORPS_FILE=str(corps),
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its worker processes are killed with it, whatever happens
    )
    try:
        lines = lines_of(process)
        waiting = lines.get(timeout=30)  # a child is up, waiting for the database
        assert '"not_ready"' in waiting and "no database at" in waiting, waiting
        corps.write_text("{bad")
        migrated_sqlite(database)
        assert process.wait(timeout=30) == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # left running, they would take others' jobs
        process.wait()
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert "Traceback" not in "".join(rest)
    assert rest[-1] == f"error: WEIBAN_CORPS_FILE {corps}: {BAD_JSON}\n"


def exits_at_once(threads: int, prefetch: int, errors: Any, settings: Any) -> None:
    """A worker process that dies right after it starts, not for its configuration."""
    sys.exit(3)


def stops_on_configuration(threads: int, prefetch: int, errors: Any, settings: Any) -> None:
    errors.put("WEIBAN_CORPS_FILE corps.json: cannot read it: Permission denied")
    sys.exit(EXIT_CONFIG)


def supervising(target: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Supervisor:
    settings = make_settings(redis_url=redis_url)
    supervisor = Supervisor(settings, processes=1, threads=1, target=target)
    supervisor.restart_delay_s, supervisor.max_restart_delay_s = 0.1, 0.4
    return supervisor


def test_a_worker_process_that_keeps_dying_is_restarted_with_backoff_and_a_line_each_time(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor = supervising(exits_at_once, redis_url, monkeypatch)
    watcher = threading.Thread(target=supervisor.watch, daemon=True)
    with structlog.testing.capture_logs() as logs:
        supervisor.start()
        watcher.start()
        deadline = time.monotonic() + 60
        while sum(e["event"] == "worker_died" for e in logs) < 4:
            assert watcher.is_alive(), "the supervisor must not give up silently"
            assert time.monotonic() < deadline, logs
            time.sleep(0.1)
        supervisor.stopping.set()
        watcher.join(10)
        supervisor.stop()
    died = [e for e in logs if e["event"] == "worker_died"]
    assert [e["restart_in_s"] for e in died[:4]] == [0.1, 0.2, 0.4, 0.4]
    assert {e["exitcode"] for e in died} == {3}


def test_a_worker_process_stopped_by_its_configuration_is_not_restarted(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor = supervising(stops_on_configuration, redis_url, monkeypatch)
    raised: list[BaseException] = []

    def watch() -> None:
        try:
            supervisor.watch()
        except SettingsError as exc:
            raised.append(exc)

    watcher = threading.Thread(target=watch, daemon=True)
    supervisor.start()
    watcher.start()
    watcher.join(30)
    supervisor.stop()
    assert not watcher.is_alive(), "still restarting a process that cannot start"
    assert [str(e) for e in raised] == [
        "WEIBAN_CORPS_FILE corps.json: cannot read it: Permission denied"
    ]


# ------------------------------------------------------------------ items 8, 10, 11
def test_a_database_password_is_never_printed(tmp_path: Path) -> None:
    for scheme in ("postgres", "postgresql+psycopg2"):
        url = f"{scheme}://app:hunter22@127.0.0.1:1/jobs"
        assert broadcaster("status", cwd=tmp_path, DATABASE_URL=url) == (
            1,
            "error: cannot reach the database at postgresql+psycopg://app:***@127.0.0.1:1/jobs: "
            'connection failed: connection to server at "127.0.0.1", port 1 failed: '
            "Connection refused; check DATABASE_URL and that the server is running\n",
        )


@pytest.mark.parametrize(
    ("env", "args", "line"),
    [
        (
            {"DATABASE_URL": "postgresql+asyncpg://app:hunter22@127.0.0.1:1/jobs"},
            ["db", "upgrade"],
            "DATABASE_URL: PostgreSQL driver 'asyncpg' is not supported; write postgresql://... "
            "(broadcaster uses psycopg 3) (got 'postgresql+asyncpg://app:***@127.0.0.1:1/jobs')",
        ),
        (
            {"DATABASE_URL": "sqlite://"},
            ["db", "upgrade"],
            "DATABASE_URL: an in-memory SQLite database keeps nothing between commands; "
            "name a file, e.g. sqlite:///broadcaster.db (got 'sqlite://')",
        ),
        (
            {"QUEUED_LEASE_S": "inf"},
            ["scheduler"],
            "QUEUED_LEASE_S: Input should be a finite number (got 'inf')",
        ),
        (
            {"QUEUED_LEASE_S": "1e308"},
            ["scheduler"],
            "QUEUED_LEASE_S: Input should be less than or equal to 31536000 (got '1e308')",
        ),
        (
            {"SCHEDULER_POLL_INTERVAL_S": "inf"},
            ["scheduler"],
            "SCHEDULER_POLL_INTERVAL_S: Input should be a finite number (got 'inf')",
        ),
        (
            {"REDIS_URL": "localhost:6379"},
            ["worker"],
            "REDIS_URL: must be a URL like redis://localhost:6379/0 (or rediss://, "
            "unix:///PATH); unset it to use the embedded Redis (got 'localhost:6379')",
        ),
        (
            {"DEFAULT_TZ": "Mars/Olympus"},
            ["status"],
            "DEFAULT_TZ: unknown time zone; use an IANA name like Asia/Shanghai "
            "(got 'Mars/Olympus')",
        ),
    ],
)
def test_a_setting_no_command_could_use_is_one_line_and_exit_1(
    tmp_path: Path, env: dict[str, str], args: list[str], line: str
) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}", **env}
    assert broadcaster(*args, cwd=tmp_path, timeout=30, **env) == (1, f"error: {line}\n")


def test_a_corps_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    corps = tmp_path / "corps.json"
    corps.write_bytes('{"corp-b": {"secret": "señor"}}'.encode("latin-1"))
    assert broadcaster(
        "status",
        cwd=tmp_path,
        DATABASE_URL=migrated_sqlite(tmp_path / "jobs.db"),
        WEIBAN_CORPS_FILE=str(corps),
    ) == (
        1,
        f"error: WEIBAN_CORPS_FILE {corps}: not UTF-8 text (invalid continuation byte at "
        "byte 25); save it as UTF-8\n",
    )


TABLE_COMMANDS = [
    ["status"],
    ["jobs", "list"],
    ["jobs", "show", "1"],
    ["schedule", "body.json", "--now"],
    ["import", "jobs.jsonl"],
]


def user_files(tmp_path: Path) -> None:
    """A valid body and import file: only the database can be what is wrong."""
    payload = json.dumps(vendor_body(), ensure_ascii=False)
    (tmp_path / "body.json").write_text(payload)
    (tmp_path / "jobs.jsonl").write_text(f'{{"payload": {payload}}}\n')


@pytest.mark.parametrize("args", [*TABLE_COMMANDS, ["db", "current"]])
def test_a_mistyped_sqlite_path_is_refused_and_not_created(tmp_path: Path, args: list[str]) -> None:
    user_files(tmp_path)
    missing = tmp_path / "jbos.db"
    assert broadcaster(*args, cwd=tmp_path, DATABASE_URL=f"sqlite:///{missing}") == (
        1,
        f"error: no database at {missing}; check DATABASE_URL or run `broadcaster db upgrade`\n",
    )
    assert not missing.exists()


@pytest.mark.parametrize("args", TABLE_COMMANDS)
def test_every_command_on_tables_names_db_upgrade_on_an_unmigrated_database(
    tmp_path: Path, args: list[str]
) -> None:
    user_files(tmp_path)
    database = tmp_path / "empty.db"
    database.touch()  # there, but never migrated
    url = f"sqlite:///{database}"
    assert broadcaster(*args, cwd=tmp_path, DATABASE_URL=url) == (
        1,
        f"error: the database at {url} has no broadcaster tables yet; "
        "run `broadcaster db upgrade`\n",
    )


def test_db_upgrade_creates_a_new_sqlite_file_and_then_every_command_works(
    tmp_path: Path,
) -> None:
    database = tmp_path / "new.db"
    url = f"sqlite:///{database}"
    code, _err = broadcaster("db", "upgrade", cwd=tmp_path, DATABASE_URL=url)
    assert code == 0 and database.exists()
    assert broadcaster("jobs", "list", cwd=tmp_path, DATABASE_URL=url)[0] == 0


def test_the_python_api_on_an_unmigrated_database_names_db_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broadcaster import schedule_broadcast
    from broadcaster.errors import JobStoreError

    path = tmp_path / "empty.db"
    make_engine(f"sqlite:///{path}").dispose()
    path.touch()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JobStoreError, match="run `broadcaster db upgrade`"):
        schedule_broadcast(vendor_body())
