"""`broadcaster jobs list|show|cancel`."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from broadcaster.cli.context import CliContext
from broadcaster.errors import InvalidJob
from broadcaster.status import JobStatus
from broadcaster.timeutil import utcnow

app = typer.Typer(help="Inspect and act on single jobs.", no_args_is_help=True)

LIST_COLUMNS = ("id", "status", "corp_id", "campaign", "send_at", "attempts", "last_error")


def _jsonable(row: Any) -> dict[str, Any]:
    return {
        key: (value.isoformat() if hasattr(value, "isoformat") else value)
        for key, value in row._mapping.items()
    }


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    status: JobStatus | None = typer.Option(None, "--status"),
    campaign: str | None = typer.Option(None, "--campaign"),
    corp: str | None = typer.Option(None, "--corp"),
    limit: int = typer.Option(50, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The newest jobs, filtered."""
    cli: CliContext = ctx.obj
    rows = cli.store.list_jobs(status=status, campaign=campaign, corp_id=corp, limit=limit)
    if as_json:
        cli.console.print_json(json.dumps([_jsonable(row) for row in rows], ensure_ascii=False))
        return
    table = Table(*LIST_COLUMNS)
    for row in rows:
        table.add_row(
            *("" if getattr(row, col) is None else str(getattr(row, col)) for col in LIST_COLUMNS)
        )
    cli.console.print(table)


@app.command()
def show(
    ctx: typer.Context,
    job_id: int,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One job with its attempt history."""
    cli: CliContext = ctx.obj
    job = _jsonable(cli.store.get(job_id))
    job["attempt_history"] = [_jsonable(a) for a in cli.store.attempts_of(job_id)]
    if as_json:
        cli.console.print_json(json.dumps(job, ensure_ascii=False))
        return
    for key, value in job.items():
        if key != "attempt_history":
            cli.console.print(f"[bold]{key}[/]: {value}", markup=True, highlight=False)
    for attempt in job["attempt_history"]:
        cli.console.print(
            f"  attempt {attempt['attempt_no']} at {attempt['started_at']}: "
            f"{attempt['outcome']} errcode={attempt['errcode']} {attempt['error'] or ''}"
        )


@app.command()
def cancel(
    ctx: typer.Context,
    job_id: int | None = typer.Argument(None),
    campaign: str | None = typer.Option(None, "--campaign", help="Cancel a whole campaign."),
) -> None:
    """Cancel one job, or every not-yet-sending job of a campaign."""
    cli: CliContext = ctx.obj
    if (job_id is None) == (campaign is None):
        raise InvalidJob("name one job id or --campaign, not both or neither")
    if job_id is not None:
        cli.store.cancel(job_id, utcnow())
        cli.console.print(f"job {job_id} cancelled")
        return
    cancelled, sending = cli.store.cancel_campaign(campaign or "", utcnow())
    cli.console.print(f"campaign {campaign}: {cancelled} jobs cancelled")
    if sending:
        cli.console.print(f"{sending} jobs already sending could not be cancelled")
