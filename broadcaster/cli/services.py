"""Long-running commands: `scheduler` (and, with the sending issue, `worker`, `run`)."""

from __future__ import annotations

import typer

from broadcaster.cli.context import CliContext


def register(app: typer.Typer) -> None:
    app.command(name="scheduler")(scheduler)


def scheduler(ctx: typer.Context) -> None:
    """Claim due jobs and hand them to the workers, until SIGTERM."""
    from scheduler.runner import run_scheduler

    cli: CliContext = ctx.obj
    run_scheduler(cli.settings)
