"""The operator's commands against hostile stored text and hostile arguments (issue 9,
items 1, 10 and 11, CLI parts).

Whatever a producer wrote (campaign, corp_id, dedupe_key, payload, and the vendor's
`last_error`) prints literally in every view: never read as rich markup, never a crash,
never a control sequence reaching the terminal, never a secret. Out-of-range numbers and
times are one line naming the option and the range.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from broadcaster.cli.main import main
from broadcaster.db import make_engine
from broadcaster.jobs.store import JobStore
from broadcaster.timeutil import utcnow
from tests.helpers import body

ON_SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
"""For the tests that print every view many times: what reaches the terminal is the same
whichever database held the text (test_cli_hostile_property and the campaign-markup test
still run on both), and each costs ~10 s a database."""

SECRET = "hostile-cli-secret-7f3a"
TOKEN = "tok-LIVE-5e9c1d"
BIGINT = "9223372036854775807"
BODY = json.dumps(body())


def cli(
    db_url: str, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the real `broadcaster` command, as a user would (wide, so tables do not wrap)."""
    environ = {
        **os.environ,
        "DATABASE_URL": db_url,
        "WEIBAN_CORP_ID": "corp-default",
        "WEIBAN_SECRET": SECRET,
        "COLUMNS": "400",
        **env,
    }
    environ.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


def insert(engine: Engine, **columns: object) -> int:
    """A row as another app writes it, by plain SQL."""
    values = {"payload": json.dumps(body(), ensure_ascii=False), **columns}
    names = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    with engine.begin() as connection:
        connection.execute(text(f"INSERT INTO broadcast_jobs ({names}) VALUES ({marks})"), values)
        return int(connection.execute(text("SELECT max(id) FROM broadcast_jobs")).scalar_one())


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """For checks made before any row is read or written: one database kind is enough."""
    path = tmp_path / "jobs.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def listed(url: str, **filters: str) -> list[Any]:
    engine = make_engine(url)
    try:
        return JobStore(engine).list_jobs(**filters)
    finally:
        engine.dispose()


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# ------------------------------------------------------------------ item 1: markup
def test_a_campaign_of_markup_prints_literally_in_every_view(
    db_url: str, store: JobStore, tmp_path: Path
) -> None:
    """The issue's reproduction: `schedule --campaign '[/]'`, then every operator command."""
    path = tmp_path / "body.json"
    path.write_text(json.dumps(body()), encoding="utf-8")
    made = cli(db_url, "schedule", str(path), "--campaign", "[/]", "--dedupe-key", "[b]k")
    assert made.returncode == 0, made.stderr
    job_id = store.list_jobs()[0].id
    assert made.stdout == f"scheduled job {job_id}\n"

    again = cli(db_url, "schedule", str(path), "--campaign", "[/]", "--dedupe-key", "[b]k")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "skipped: dedupe_key '[b]k' is already scheduled\n"

    for view in (["status"], ["jobs", "list"], ["jobs", "show", str(job_id)]):
        done = cli(db_url, *view)
        assert done.returncode == 0, f"{view}: {done.stderr}"
        assert "[/]" in done.stdout, view
    show = cli(db_url, "jobs", "show", str(job_id)).stdout
    assert "campaign: [/]\n" in show and "dedupe_key: [b]k\n" in show

    cancelled = cli(db_url, "jobs", "cancel", "--campaign", "[/]")
    assert (cancelled.returncode, cancelled.stdout) == (0, "campaign [/]: 1 jobs cancelled\n")
    assert cancelled.stderr == ""
    assert store.get(job_id).status == "cancelled"


@ON_SQLITE
def test_a_link_in_stored_text_is_shown_not_made_clickable(db_url: str, engine: Engine) -> None:
    link = "[link=https://evil.example/login]Weiban console[/link]"
    job_id = insert(engine, campaign=link, corp_id=link, last_error=link)
    for view in (["status"], ["jobs", "list"], ["jobs", "show", str(job_id)]):
        done = cli(db_url, *view, FORCE_COLOR="1", TERM="xterm-256color")
        assert done.returncode == 0, done.stderr
        assert link in done.stdout, view
        assert "\x1b]8;" not in done.stdout, f"{view}: an OSC 8 hyperlink"


@ON_SQLITE
def test_control_characters_in_stored_text_cannot_steer_the_terminal(
    db_url: str, engine: Engine
) -> None:
    hostile = "ok\x1b[2J\x1b]0;pwned\x07\rfake\x08\u202eevil"
    shown = "ok\\x1b[2J\\x1b]0;pwned\\x07\\rfake\\x08\\u202eevil"
    job_id = insert(
        engine, campaign=hostile, corp_id=hostile, dedupe_key=hostile, last_error=hostile
    )
    for view in (["status"], ["jobs", "list"], ["jobs", "show", str(job_id)]):
        done = cli(db_url, *view)
        assert done.returncode == 0, done.stderr
        assert shown in done.stdout, view
        assert not set(done.stdout) & {"\x1b", "\x07", "\r", "\x08", "\u202e"}, view
    for view in (["jobs", "list", "--json"], ["jobs", "show", str(job_id), "--json"]):
        done = cli(db_url, *view)
        assert "\x1b" not in done.stdout and "\u202e" not in done.stdout
        data = json.loads(done.stdout)
        row = data[0] if isinstance(data, list) else data
        assert row["campaign"] == hostile, "JSON keeps the value, escaped the JSON way"

    cancelled = cli(db_url, "jobs", "cancel", "--campaign", hostile)
    assert cancelled.stdout == f"campaign {shown}: 1 jobs cancelled\n"


def test_a_multi_line_error_stays_in_its_table_row(db_url: str, engine: Engine) -> None:
    insert(engine, campaign="multi", last_error="first line\nsecond line\tend")
    done = cli(db_url, "jobs", "list")
    assert "first line\\nsecond line\\tend" in done.stdout


@ON_SQLITE
def test_stored_secrets_and_tokens_never_reach_the_terminal(db_url: str, engine: Engine) -> None:
    leak = f"errcode 40001 errmsg invalid secret {SECRET}; GET ?access_token={TOKEN}"
    job_id = insert(engine, campaign=f"c-{SECRET}", last_error=leak, status="failed")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO broadcast_attempts (job_id, attempt_no, started_at, outcome, error)"
                " VALUES (:j, 1, '2026-12-01 00:00:00', 'failed', :e)"
            ),
            {"j": job_id, "e": leak},
        )
    views = (
        ["status"],
        ["status", "--json"],
        ["jobs", "list"],
        ["jobs", "list", "--json"],
        ["jobs", "show", str(job_id)],
        ["jobs", "show", str(job_id), "--json"],
    )
    for view in views:
        done = cli(db_url, *view)
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout and TOKEN not in done.stdout, view
        assert "***" in done.stdout, view
    show = cli(db_url, "jobs", "show", str(job_id)).stdout
    assert "last_error: errcode 40001 errmsg invalid secret ***; GET ?access_token=***\n" in show
    assert "  attempt 1 at 2026-12-01T00:00:00: failed errcode=None errcode 40001" in show


def test_resolve_prompt_shows_the_campaign_literally(db_url: str, engine: Engine) -> None:
    job_id = insert(engine, campaign="[/]\x1b[2J", status="unknown")
    done = cli(db_url, "jobs", "resolve", str(job_id), "--sent", stdin="y\n")
    assert done.returncode == 0, done.stderr
    assert f"job {job_id} ([/]\\x1b[2J): mark it sent?" in done.stdout
    assert "\x1b" not in done.stdout


# ------------------------------------------------------------------ item 10: numbers
@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["jobs", "cancel", "99999999999999999999999"], ("'job_id'", f"from 1 to {BIGINT}")),
        (["jobs", "show", "99999999999999999999999"], ("'job_id'", f"from 1 to {BIGINT}")),
        (["jobs", "retry", "0"], ("'job_id'", f"from 1 to {BIGINT}")),
        (["jobs", "resolve", "0", "--sent"], ("'job_id'", f"from 1 to {BIGINT}")),
        (["jobs", "list", "--limit", str(2**64)], ("'--limit'", f"from 1 to {BIGINT}")),
        (["jobs", "list", "--limit", "0"], ("'--limit'", f"from 1 to {BIGINT}")),
        (
            ["schedule", "--priority", str(2**64)],
            ("'--priority'", "from -2147483648 to 2147483647"),
        ),
        (["schedule", "--max-attempts", "0"], ("'--max-attempts'", "from 1 to 100")),
        (["schedule", "--max-attempts", str(2**70)], ("'--max-attempts'", "from 1 to 100")),
        (["import", "x.jsonl", "--batch-size", "0"], ("'--batch-size'", "from 1 to 1000000")),
        (["import", "x.jsonl", "--show-rejected", "-1"], ("'--show-rejected'", "from 0 to")),
        (["status", "--watch", "inf"], ("'--watch'", "from 0.1 to 86400")),
        (["status", "--watch", "nan"], ("'--watch'", "from 0.1 to 86400")),
    ],
)
def test_a_number_out_of_range_is_one_line_naming_the_option_and_range(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    names: tuple[str, ...],
) -> None:
    """In process (the entry point's own handler, `main`), as these fail before any
    setting or row is read; `jobs cancel 99…` is also run for real below."""
    (tmp_path / "x.jsonl").write_text("", encoding="utf-8")
    args = [str(tmp_path / a) if a == "x.jsonl" else a for a in args]
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setattr(sys, "stdin", io.StringIO(BODY))
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("error: Invalid value for "), err
    for name in names:
        assert name in err
    assert listed(sqlite_url) == []


def test_a_job_id_past_64_bits_is_one_line_for_real(sqlite_url: str) -> None:
    done = cli(sqlite_url, "jobs", "cancel", "99999999999999999999999")
    assert done.returncode == 2
    assert one_line_error(done) == (
        "error: Invalid value for 'job_id': 99999999999999999999999 is out of range; "
        f"give a whole number from 1 to {BIGINT} (see broadcaster jobs cancel --help)"
    )


def test_the_largest_job_id_is_accepted_and_simply_not_found(sqlite_url: str) -> None:
    done = cli(sqlite_url, "jobs", "cancel", BIGINT)
    assert done.returncode == 1
    assert one_line_error(done) == f"error: no job with id {BIGINT}"


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00"])
def test_a_time_outside_the_calendar_in_utc_is_one_line(sqlite_url: str, at: str) -> None:
    done = cli(sqlite_url, "schedule", "--at", at, stdin=BODY)
    assert done.returncode == 1
    line = one_line_error(done)
    assert line.startswith("error: --at: time ") and "out of range once converted to UTC" in line
    assert "0001-01-01 00:00:00 to 9999-12-31 23:59:59 UTC" in line
    assert listed(sqlite_url) == []


# ------------------------------------------------------------------ item 11: times
def test_an_at_in_the_past_is_refused_and_now_says_send_now(sqlite_url: str) -> None:
    typo = cli(sqlite_url, "schedule", "--at", "2025-12-12 20:00", stdin=BODY)
    assert typo.returncode == 1
    line = one_line_error(typo)
    assert line.startswith("error: --at 2025-12-12 20:00 is ")
    assert "in the past (2025-12-12 12:00:00 UTC); fix the date, or pass --now" in line
    assert listed(sqlite_url) == []

    now = cli(sqlite_url, "schedule", "--now", "--campaign", "now", stdin=BODY)
    assert now.returncode == 0, now.stderr
    assert abs(listed(sqlite_url, campaign="now")[0].send_at - utcnow()) < timedelta(seconds=30)

    both = cli(sqlite_url, "schedule", "--now", "--at", "2030-01-01", stdin=BODY)
    assert (both.returncode, one_line_error(both)) == (1, "error: give --at or --now, not both")


def test_an_at_a_few_seconds_ago_is_within_tolerance(sqlite_url: str) -> None:
    """A command typed for "now" that took a moment to run is not a typo."""
    just_now = (datetime.now(UTC) - timedelta(seconds=20)).isoformat()
    done = cli(sqlite_url, "schedule", "--at", just_now, "--campaign", "t", stdin=BODY)
    assert done.returncode == 0, done.stderr
    assert len(listed(sqlite_url, campaign="t")) == 1


def test_no_at_still_means_now(sqlite_url: str) -> None:
    done = cli(sqlite_url, "schedule", "--campaign", "default-now", stdin=BODY)
    assert done.returncode == 0, done.stderr
    job = listed(sqlite_url, campaign="default-now")[0]
    assert abs(job.send_at - utcnow()) < timedelta(seconds=30)


def test_expires_at_before_at_is_refused(sqlite_url: str) -> None:
    done = cli(
        sqlite_url,
        "schedule",
        "--at",
        "2030-01-02T00:00:00Z",
        "--expires-at",
        "2030-01-01T00:00:00Z",
        stdin=BODY,
    )
    assert done.returncode == 1
    assert one_line_error(done) == (
        "error: --expires-at 2030-01-01T00:00:00Z (2030-01-01 00:00:00 UTC) is not after "
        "--at (2030-01-02 00:00:00 UTC): the job would expire before it could be sent"
    )
    past = cli(sqlite_url, "schedule", "--expires-at", "2026-01-01T00:00:00Z", stdin=BODY)
    assert past.returncode == 1
    assert "is not after now: the job would expire" in one_line_error(past)
    assert listed(sqlite_url) == []

    fine = cli(
        sqlite_url,
        "schedule",
        "--at",
        "2030-01-01T00:00:00Z",
        "--expires-at",
        "2030-01-01T01:00:00Z",
        stdin=BODY,
    )
    assert fine.returncode == 0, fine.stderr
    assert listed(sqlite_url)[0].expires_at == datetime(2030, 1, 1, 1, 0)


def test_a_corps_file_secret_is_masked_in_what_the_cli_prints(
    sqlite_url: str, tmp_path: Path
) -> None:
    corp_secret = "corps-file-secret-51b0"
    corps = tmp_path / "corps.json"
    corps.write_text(json.dumps({"corp-b": {"secret": corp_secret}}))
    engine = make_engine(sqlite_url)
    job_id = insert(engine, corp_id="corp-b", last_error=f"refused {corp_secret}")
    engine.dispose()
    done = cli(sqlite_url, "jobs", "show", str(job_id), WEIBAN_CORPS_FILE=str(corps))
    assert done.returncode == 0, done.stderr
    assert corp_secret not in done.stdout and "refused ***" in done.stdout


def test_an_unforeseen_failure_is_one_line_naming_it_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from broadcaster.cli import context

    def broken(_self: object) -> None:
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(context.CliContext, "store", property(broken))
    with pytest.raises(SystemExit) as exit_:
        main(["jobs", "list"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err == (
        "error: unexpected RuntimeError: the disk caught fire; run again with -v for the "
        "traceback, and please report it\n"
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "99999999999999999999"], "'--port': 99999999999999999999 is out of range"),
        (["--latency-ms", "inf"], "'--latency-ms': inf is out of range"),
        (["--max-in-flight", "0"], "'--max-in-flight': 0 is out of range"),
    ],
)
def test_sandbox_options_out_of_range_are_one_line(
    sqlite_url: str, args: list[str], says: str
) -> None:
    done = cli(sqlite_url, "sandbox", *args)
    assert done.returncode == 2 and says in one_line_error(done)
