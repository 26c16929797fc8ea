"""Producer commands: `schedule` (one send) and `import` (backfills)."""

from __future__ import annotations

import gc
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from broadcaster.cli.context import CliContext
from broadcaster.cli.options import BATCH_SIZE, MAX_ATTEMPTS, PRIORITY, SHOW_REJECTED, int_range
from broadcaster.cli.render import literal
from broadcaster.errors import InvalidJob, InvalidPayload
from broadcaster.produce.api import schedule_many
from broadcaster.produce.importer import count_lines, import_file, parse_processes_for
from broadcaster.timeutil import parse_user_time, utcnow

TZ_HELP = "Zone for times written without an offset (default: DEFAULT_TZ, Asia/Shanghai)."


def register(app: typer.Typer) -> None:
    app.command(name="schedule")(schedule)
    app.command(name="import")(import_jobs)


def _read_payload(source: str) -> dict:
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


PAST_TOLERANCE = timedelta(seconds=60)
"""An `--at` further back than this is refused: a mistyped year must not send at once."""


def _time_option(option: str, text: str, zone: str) -> datetime:
    try:
        return parse_user_time(text, tz=zone)
    except InvalidJob as exc:
        raise InvalidJob(f"{option}: {exc}") from None


def _when(
    at: str | None, now: bool, expires_at: str | None, zone: str
) -> tuple[datetime | None, datetime | None]:
    """(send_at, expires_at) as naive UTC; None for send_at means now.

    Refuses `--at` and `--now` together, an `--at` in the past (a typo must not blast
    now: `--now` says so on purpose), and an `--expires-at` not after the send time.
    """
    if at is not None and now:
        raise InvalidJob("give --at or --now, not both")
    current = utcnow()
    send_at = _time_option("--at", at, zone) if at is not None else None
    if send_at is not None and send_at < current - PAST_TOLERANCE:
        raise InvalidJob(
            f"--at {at} is {_ago(current - send_at)} in the past ({_utc(send_at)}); "
            "fix the date, or pass --now (instead of --at) to send at once"
        )
    expires = _time_option("--expires-at", expires_at, zone) if expires_at is not None else None
    if expires is not None and expires <= (send_at or current):
        when = f"--at ({_utc(send_at)})" if send_at else "now"
        raise InvalidJob(
            f"--expires-at {expires_at} ({_utc(expires)}) is not after {when}: "
            "the job would expire before it could be sent"
        )
    return send_at, expires


def _utc(moment: datetime) -> str:
    return f"{moment.isoformat(' ', 'seconds')} UTC"


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86_400:
        return f"{seconds // 86_400} days"
    if seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def schedule(
    ctx: typer.Context,
    payload_file: str = typer.Argument("-", help="The vendor body as JSON; - reads stdin."),
    at: str | None = typer.Option(
        None, "--at", help="When to send (ISO 8601); refused if in the past. Default: now."
    ),
    now: bool = typer.Option(False, "--now", help="Send now (the default when --at is absent)."),
    tz: str | None = typer.Option(None, "--tz", help=TZ_HELP),
    corp: str | None = typer.Option(None, "--corp", help="Corp id (default: WEIBAN_CORP_ID)."),
    dedupe_key: str | None = typer.Option(None, "--dedupe-key"),
    campaign: str | None = typer.Option(None, "--campaign"),
    priority: int = typer.Option(
        0,
        "--priority",
        help=f"Higher goes first in a backlog ({PRIORITY[0]} to {PRIORITY[1]}).",
        callback=int_range(PRIORITY),
    ),
    expires_at: str | None = typer.Option(
        None, "--expires-at", help="Do not send after (must be after --at)."
    ),
    max_attempts: int | None = typer.Option(
        None,
        "--max-attempts",
        help=f"Attempts before failed ({MAX_ATTEMPTS[0]} to {MAX_ATTEMPTS[1]}; default 5).",
        callback=int_range(MAX_ATTEMPTS),
    ),
) -> None:
    """Schedule one send."""
    cli: CliContext = ctx.obj
    zone = tz or cli.settings.default_tz
    send_at, expires = _when(at, now, expires_at, zone)
    request = {
        "payload": _read_payload(payload_file),
        "send_at": send_at,
        "expires_at": expires,
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
        cli.console.print(
            Text.assemble(
                "skipped: dedupe_key '", literal(key, one_line=True), "' is already scheduled"
            )
        )


def import_jobs(
    ctx: typer.Context,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help=".jsonl or .csv"),
    tz: str | None = typer.Option(None, "--tz", help=TZ_HELP),
    fmt: str | None = typer.Option(None, "--format", help="jsonl or csv (default: by suffix)."),
    batch_size: int = typer.Option(2000, "--batch-size", callback=int_range(BATCH_SIZE)),
    show_rejected: int = typer.Option(
        20, "--show-rejected", help="How many rejects to list.", callback=int_range(SHOW_REJECTED)
    ),
) -> None:
    """Import jobs from JSON Lines or CSV, in batches, with a progress bar and a summary."""
    cli: CliContext = ctx.obj
    zone = tz or cli.settings.default_tz
    store = cli.store  # before the progress bar: an error is then one line, nothing above it
    total = count_lines(file)
    # This process only imports: the objects it has made so far (modules, pydantic's
    # schemas) are moved out of the collector's reach, so the full collections that an
    # import's many small dicts trigger do not walk them each time (~8 % of the import,
    # bench/import_speed.py, which does the same).
    gc.collect()
    gc.freeze()
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
            store,
            tz=zone,
            fmt=fmt,
            batch_size=batch_size,
            on_progress=lambda done: progress.update(task, completed=done),
            parse_processes=parse_processes_for(total),
        )
    cli.console.print(
        f"{report.lines} lines: {report.inserted} jobs inserted, "
        f"{report.duplicates} skipped as duplicate, {len(report.rejected)} rejected "
        f"(times without an offset read as {zone})",
        markup=False,
    )
    for line, reason in report.rejected[:show_rejected]:
        cli.console.print(Text.assemble(f"  line {line}: ", literal(reason, one_line=True)))
    if len(report.rejected) > show_rejected:
        cli.console.print(f"  … and {len(report.rejected) - show_rejected} more")
    if report.rejected:
        raise typer.Exit(code=1 if report.inserted == 0 else 0)
