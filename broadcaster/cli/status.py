"""`broadcaster status`: counts by corp, campaign and status, and how far behind we are."""

from __future__ import annotations

import json
from collections import defaultdict

import typer
from rich.table import Table

from broadcaster.cli.context import CliContext
from broadcaster.status import JobStatus
from broadcaster.timeutil import utcnow


def register(app: typer.Typer) -> None:
    app.command(name="status")(status)


def collect(cli: CliContext) -> dict:  # type: ignore[type-arg]
    now = utcnow()
    groups: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    totals: dict[str, int] = defaultdict(int)
    for row in cli.store.status_counts():
        groups[(row.corp_id or "(default)", row.campaign or "")][row.status] = row.n
        totals[row.status] += row.n
    oldest_due = cli.store.oldest_due(now)
    return {
        "now": now.isoformat(),
        "totals": dict(totals),
        "groups": [
            {"corp_id": corp, "campaign": campaign, "counts": counts}
            for (corp, campaign), counts in sorted(groups.items())
        ],
        "oldest_due": oldest_due.isoformat() if oldest_due else None,
        "behind_s": round((now - oldest_due).total_seconds(), 3) if oldest_due else 0.0,
    }


def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Job counts per corp and campaign, and the age of the oldest due job."""
    cli: CliContext = ctx.obj
    report = collect(cli)
    if as_json:
        cli.console.print_json(json.dumps(report, ensure_ascii=False))
        return
    statuses = [status.value for status in JobStatus]
    table = Table("corp", "campaign", *statuses, title="broadcast jobs")
    for group in report["groups"]:
        counts = group["counts"]
        table.add_row(
            group["corp_id"], group["campaign"], *(str(counts.get(s, "")) for s in statuses)
        )
    table.add_row("[bold]total[/]", "", *(str(report["totals"].get(s, "")) for s in statuses))
    cli.console.print(table)
    behind = report["behind_s"]
    cli.console.print(
        f"oldest due job waiting: {behind:.1f}s" if report["oldest_due"] else "nothing due"
    )
