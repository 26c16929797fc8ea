"""`broadcaster schedules add|list|pause|resume|remove`, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import body


def cli(db_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "DATABASE_URL": db_url, "WEIBAN_CORP_ID": "corp-default"}
    environ["COLUMNS"] = "300"
    return subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", "schedules", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


def test_the_schedules_commands(tmp_path: Path, sqlite_template: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite:///{path}"
    template = json.dumps(body(name="周报 {date}", text="[bold]本周[/bold] {weekday}"))
    added = cli(
        url,
        "add",
        "--cron",
        "0 20 * * 5",
        "--payload",
        "-",
        "--campaign",
        "weekly",
        "--name",
        "[red]weekly[/red]",
        stdin=template,
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("schedule 1 [red]weekly[/red] added; next: ")
    assert "20:00:00 CST" in added.stdout
    bad = cli(url, "add", "--cron", "0 20 * *", "--payload", "-", "--campaign", "x", stdin=template)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: cron: 4 fields in '0 20 * *'; write 5")
    listed = json.loads(cli(url, "list", "--json").stdout)
    assert [(item["name"], item["cron"], item["paused"]) for item in listed] == [
        ("[red]weekly[/red]", "0 20 * * 5", False)
    ]
    assert listed[0]["next_occurrence"].endswith("12:00:00+00:00")  # 20:00 in Shanghai
    shown = cli(url, "list")
    assert "[red]weekly[/red]" in shown.stdout and "active" in shown.stdout
    assert cli(url, "pause", "1").stdout.startswith("schedule 1 paused")
    assert json.loads(cli(url, "list", "--json").stdout)[0]["paused"] is True
    assert cli(url, "resume", "[red]weekly[/red]").stdout == "schedule 1 resumed\n"
    assert cli(url, "remove", "1").stdout.startswith("schedule 1 removed")
    missing = cli(url, "remove", "1")
    assert missing.returncode == 1 and "no schedule with id or name '1'" in missing.stderr
