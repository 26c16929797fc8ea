"""`broadcaster schedules add|list|pause|resume|remove`: recurring campaigns (issue 15).

A schedule is a cron expression in a time zone and a payload template; the scheduler turns
each occurrence into one job (dedupe key `schedule:<id>:<occurrence in UTC>`)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.table import Table
from rich.text import Text

from broadcaster.campaigns.cron import next_after, parse_cron
from broadcaster.campaigns.store import NewSchedule, ScheduleStore
from broadcaster.cli.context import CliContext
from broadcaster.cli.produce import TZ_HELP, _read_payload, _time_option
from broadcaster.cli.render import literal, print_json
from broadcaster.errors import InvalidJob
from broadcaster.timeutil import utcnow, zone

app = typer.Typer(
    help="Recurring campaigns: add, list, pause, resume, remove.", no_args_is_help=True
)


def _store(cli: CliContext) -> ScheduleStore:
    cli.store  # noqa: B018 - checks the database and its schema first, with one clear line
    return ScheduleStore(cli.engine, default_corp=cli.settings.weiban_corp_id)


@app.command()
def add(
    ctx: typer.Context,
    cron: str = typer.Option(
        ...,
        "--cron",
        help="When: 5 crontab fields (minute hour day month day-of-week, 0/7 = Sunday), "
        "e.g. '0 20 * * 5' for Fridays at 20:00; or 6 with seconds first.",
    ),
    payload_file: str = typer.Option(
        ...,
        "--payload",
        help="The vendor body as JSON (- reads stdin); {date}, {time}, {datetime}, "
        "{month}, {weekday} in name and text are filled from each occurrence.",
    ),
    campaign: str = typer.Option(..., "--campaign", help="The jobs' campaign label."),
    tz: str | None = typer.Option(None, "--tz", help="Zone of the cron (default: DEFAULT_TZ)."),
    corp: str | None = typer.Option(None, "--corp", help="Corp id (default: WEIBAN_CORP_ID)."),
    name: str | None = typer.Option(None, "--name", help="A unique name (default: campaign)."),
    start: str | None = typer.Option(None, "--start", help=f"First moment. {TZ_HELP}"),
    end: str | None = typer.Option(None, "--end", help=f"Last moment. {TZ_HELP}"),
) -> None:
    """Add a recurring campaign; prints its id and next occurrences."""
    cli: CliContext = ctx.obj
    zone_name = tz or cli.settings.default_tz
    zone(zone_name)
    payload = _read_payload(payload_file)
    new = NewSchedule(
        name=name or campaign,
        cron=cron,
        tz=zone_name,
        payload=payload,
        campaign=campaign,
        corp_id=corp,
        start_at=_time_option("--start", start, zone_name) if start else None,
        end_at=_time_option("--end", end, zone_name) if end else None,
    )
    now = utcnow()
    schedule_id = _store(cli).add(new, now)
    upcoming = _upcoming(cron, zone_name, max(now, new.start_at or now), 3, new.end_at)
    cli.console.print(
        Text.assemble(
            f"schedule {schedule_id} ",
            literal(new.name, one_line=True),
            " added; next: ",
            ", ".join(upcoming) or "none",
        )
    )


@app.command("list")
def list_schedules(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every schedule: cron, zone, state, the next occurrence and what became of the last."""
    cli: CliContext = ctx.obj
    rows = _store(cli).all()
    now = utcnow()
    items = []
    for row in rows:
        try:
            following = next_after(
                parse_cron(row.cron, row.tz), max(now, row.last_occurrence or now)
            )
            if row.end_at is not None and following is not None and following > row.end_at:
                following = None
        except InvalidJob:
            following = None
        items.append((row, following))
    if as_json:
        print_json(
            cli.console,
            [
                {
                    "id": row.id,
                    "name": row.name,
                    "corp_id": row.corp_id,
                    "cron": row.cron,
                    "tz": row.tz,
                    "campaign": row.campaign,
                    "paused": bool(row.paused),
                    "next_occurrence": _iso(following) if not row.paused else None,
                    "last_occurrence": _iso(row.last_occurrence),
                    "last_outcome": row.last_outcome,
                    "last_detail": row.last_detail,
                    "last_job_id": row.last_job_id,
                }
                for row, following in items
            ],
        )
        return
    table = Table("id", "name", "corp", "cron", "tz", "campaign", "state", "next", "last")
    for row, following in items:
        last = ""
        if row.last_outcome:
            last = f"{row.last_outcome}"
            if row.last_job_id:
                last += f" (job {row.last_job_id})"
        table.add_row(
            str(row.id),
            literal(row.name, one_line=True),
            literal(row.corp_id or cli.settings.weiban_corp_id or "", one_line=True),
            literal(row.cron, one_line=True),
            literal(row.tz, one_line=True),
            literal(row.campaign or "", one_line=True),
            "paused" if row.paused else "active",
            "" if row.paused or following is None else _local(following, row.tz),
            last,
        )
    cli.console.print(table)


@app.command()
def pause(ctx: typer.Context, schedule: str = typer.Argument(..., help="Id or name.")) -> None:
    """Stop making jobs; cancels the jobs already made for occurrences to come."""
    cli: CliContext = ctx.obj
    schedule_id, cancelled = _store(cli).set_paused(schedule, True, utcnow())
    cli.console.print(f"schedule {schedule_id} paused; {cancelled} upcoming job(s) cancelled")


@app.command()
def resume(ctx: typer.Context, schedule: str = typer.Argument(..., help="Id or name.")) -> None:
    """Make jobs again, from now on (occurrences during the pause are not made up)."""
    cli: CliContext = ctx.obj
    schedule_id, _ = _store(cli).set_paused(schedule, False, utcnow())
    cli.console.print(f"schedule {schedule_id} resumed")


@app.command()
def remove(ctx: typer.Context, schedule: str = typer.Argument(..., help="Id or name.")) -> None:
    """Delete a schedule; cancels the jobs it made for occurrences to come."""
    cli: CliContext = ctx.obj
    schedule_id, cancelled = _store(cli).remove(schedule, utcnow())
    cli.console.print(f"schedule {schedule_id} removed; {cancelled} upcoming job(s) cancelled")


def _upcoming(
    cron: str, tz: str, after: datetime, count: int, end_at: datetime | None
) -> list[str]:
    trigger = parse_cron(cron, tz)
    found: list[str] = []
    moment: datetime | None = after
    while moment is not None and len(found) < count:
        moment = next_after(trigger, moment)
        if moment is None or (end_at is not None and moment > end_at):
            break
        found.append(_local(moment, tz))
    return found


def _local(moment: datetime, tz: str) -> str:
    return f"{moment.replace(tzinfo=UTC).astimezone(zone(tz)):%Y-%m-%d %H:%M:%S %Z}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat()
