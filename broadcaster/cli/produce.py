"""Producer commands: `schedule` (one send) and `import` (backfills)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from broadcaster.cli.context import CliContext
from broadcaster.errors import InvalidJob, InvalidPayload
from broadcaster.importer import count_lines, import_file
from broadcaster.producer import schedule_many
from broadcaster.timeutil import parse_user_time

TZ_HELP = "Zone for times written without an offset (default: DEFAULT_TZ, Asia/Shanghai)."


def register(app: typer.Typer) -> None:
    app.command(name="schedule")(schedule)
    app.command(name="import")(import_jobs)


def _read_payload(source: str) -> dict:  # type: ignore[type-arg]
    text = sys.stdin.read() if source == "-" else _read_file(Path(source))
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"payload is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidPayload("payload must be a JSON object (the vendor's request body)")
    return payload


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidJob(f"cannot read {path}: {exc.strerror}") from None


def schedule(
    ctx: typer.Context,
    payload_file: str = typer.Argument("-", help="The vendor body as JSON; - reads stdin."),
    at: str | None = typer.Option(None, "--at", help="When to send (ISO 8601). Default: now."),
    tz: str | None = typer.Option(None, "--tz", help=TZ_HELP),
    corp: str | None = typer.Option(None, "--corp", help="Corp id (default: WEIBAN_CORP_ID)."),
    dedupe_key: str | None = typer.Option(None, "--dedupe-key"),
    campaign: str | None = typer.Option(None, "--campaign"),
    priority: int = typer.Option(0, "--priority", help="Higher goes first in a backlog."),
    expires_at: str | None = typer.Option(None, "--expires-at", help="Do not send after."),
    max_attempts: int | None = typer.Option(None, "--max-attempts", min=1),
) -> None:
    """Schedule one send."""
    cli: CliContext = ctx.obj
    zone = tz or cli.settings.default_tz
    request = {
        "payload": _read_payload(payload_file),
        "send_at": parse_user_time(at, tz=zone) if at else None,
        "expires_at": parse_user_time(expires_at, tz=zone) if expires_at else None,
        "corp_id": corp,
        "dedupe_key": dedupe_key,
        "campaign": campaign,
        "priority": priority,
        "max_attempts": max_attempts,
    }
    result = schedule_many([request], store=cli.store)
    for job_id in result.job_ids:
        cli.console.print(f"scheduled job {job_id}")
    for key in result.duplicate_keys:
        cli.console.print(f"skipped: dedupe_key {key!r} is already scheduled")


def import_jobs(
    ctx: typer.Context,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help=".jsonl or .csv"),
    tz: str | None = typer.Option(None, "--tz", help=TZ_HELP),
    fmt: str | None = typer.Option(None, "--format", help="jsonl or csv (default: by suffix)."),
    batch_size: int = typer.Option(2000, "--batch-size", min=1),
    show_rejected: int = typer.Option(20, "--show-rejected", help="How many rejects to list."),
) -> None:
    """Import jobs from JSON Lines or CSV, in batches, with a progress bar and a summary."""
    cli: CliContext = ctx.obj
    zone = tz or cli.settings.default_tz
    total = count_lines(file)
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=cli.err,
        transient=True,
    ) as progress:
        task = progress.add_task("import", total=total)
        report = import_file(
            file,
            cli.store,
            tz=zone,
            fmt=fmt,
            batch_size=batch_size,
            on_progress=lambda done: progress.update(task, completed=done),
        )
    cli.console.print(
        f"{report.lines} lines: {report.inserted} jobs inserted, "
        f"{report.duplicates} skipped as duplicate, {len(report.rejected)} rejected "
        f"(times without an offset read as {zone})"
    )
    for line, reason in report.rejected[:show_rejected]:
        cli.console.print(f"  line {line}: {reason}", markup=False)
    if len(report.rejected) > show_rejected:
        cli.console.print(f"  … and {len(report.rejected) - show_rejected} more")
    if report.rejected:
        raise typer.Exit(code=1 if report.inserted == 0 else 0)
