"""`broadcaster jobs list|show|cancel`."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from broadcaster.cli.context import CliContext
from broadcaster.cli.options import JOB_ID, LIMIT, int_range
from broadcaster.cli.render import literal, plain, print_json
from broadcaster.errors import InvalidJob
from broadcaster.jobs.states import JobStatus
from broadcaster.timeutil import utcnow

app = typer.Typer(
    help="Inspect and act on jobs: list, show, cancel, retry, resolve.", no_args_is_help=True
)

JOB_ID_ARG = typer.Argument(..., callback=int_range(JOB_ID), help="The job's id.")

LIST_COLUMNS = (
    "id",
    "status",
    "corp_id",
    "campaign",
    "send_at",
    "attempts",
    "delivery_status",
    "last_error",
)


def _jsonable(row: Any) -> dict[str, Any]:
    return {
        key: (value.isoformat() if hasattr(value, "isoformat") else value)
        for key, value in row._mapping.items()
    }


def _shown(value: Any) -> Text:
    """A field of `jobs show`: NULL as None, stored text literally (see render)."""
    return literal("None" if value is None else value)


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    status: JobStatus | None = typer.Option(None, "--status"),
    campaign: str | None = typer.Option(None, "--campaign"),
    corp: str | None = typer.Option(None, "--corp"),
    delivery: str | None = typer.Option(
        None,
        "--delivery",
        help="The mission's status at the vendor (waiting, completed, failed, ...), "
        "or none: sent, no mission found yet.",
    ),
    limit: int = typer.Option(50, "--limit", callback=int_range(LIMIT)),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The newest jobs, filtered."""
    cli: CliContext = ctx.obj
    rows = cli.store.list_jobs(
        status=status, campaign=campaign, corp_id=corp, delivery=delivery, limit=limit
    )
    if as_json:
        print_json(cli.console, [_jsonable(row) for row in rows])
        return
    table = Table(*LIST_COLUMNS)
    for row in rows:
        table.add_row(*(literal(getattr(row, col), one_line=True) for col in LIST_COLUMNS))
    cli.console.print(table)


@app.command()
def show(
    ctx: typer.Context,
    job_id: int = JOB_ID_ARG,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One job with its attempt history."""
    cli: CliContext = ctx.obj
    row = cli.store.get(job_id)
    job = _jsonable(row)
    job["held"] = (
        row.held_reason
        if row.status == JobStatus.SCHEDULED
        and row.held_until is not None
        and row.held_until > utcnow()
        else None
    )  # e.g. "quiet hours until 08:00 (Asia/Shanghai)"
    job["attempt_history"] = [_jsonable(a) for a in cli.store.attempts_of(job_id)]
    if as_json:
        print_json(cli.console, job)
        return
    for key, value in job.items():
        if key != "attempt_history":
            cli.console.print(Text.assemble((key, "bold"), ": ", _shown(value)))
    for attempt in job["attempt_history"]:
        cli.console.print(
            Text.assemble(
                "  attempt ",
                _shown(attempt["attempt_no"]),
                " at ",
                _shown(attempt["started_at"]),
                ": ",
                _shown(attempt["outcome"]),
                " errcode=",
                _shown(attempt["errcode"]),
                " ",
                literal(attempt["error"]),
            )
        )


@app.command()
def cancel(
    ctx: typer.Context,
    job_id: int | None = typer.Argument(None, callback=int_range(JOB_ID)),
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
    cli.console.print(
        Text.assemble(
            "campaign ", literal(campaign, one_line=True), f": {cancelled} jobs cancelled"
        )
    )
    if sending:
        cli.console.print(f"{sending} jobs already sending could not be cancelled")


@app.command()
def retry(ctx: typer.Context, job_id: int = JOB_ID_ARG) -> None:
    """Send a `failed` job again, with a fresh set of attempts."""
    cli: CliContext = ctx.obj
    cli.store.retry(job_id, utcnow())
    cli.console.print(f"job {job_id} scheduled again")


@app.command()
def resolve(
    ctx: typer.Context,
    job_id: int = JOB_ID_ARG,
    sent: bool = typer.Option(False, "--sent", help="The message exists at the vendor."),
    resend: bool = typer.Option(False, "--resend", help="It does not: send it again."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Settle an `unknown` job: mark it sent, or send it again.

    Check the vendor's console first: an `unknown` job's call may have created the
    message, and resending it would reach the same groups twice.
    """
    cli: CliContext = ctx.obj
    if sent == resend:
        raise InvalidJob("say --sent (it exists at the vendor) or --resend (it does not)")
    job = cli.store.get(job_id)
    if job.status != JobStatus.UNKNOWN:
        raise InvalidJob(f"job {job_id} is {job.status}, not unknown; nothing to resolve")
    action = "mark it sent" if sent else "SEND IT AGAIN (the groups may get it twice)"
    if not yes:
        label = plain(job.campaign, one_line=True) if job.campaign else "no campaign"
        typer.confirm(f"job {job_id} ({label}): {action}?", abort=True)
    cli.store.resolve(job_id, utcnow(), sent=sent)
    cli.console.print(f"job {job_id} " + ("marked sent" if sent else "scheduled to be resent"))
