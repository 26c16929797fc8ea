"""`broadcaster reconcile [--once]`: settle `unknown` jobs from the vendor's list by hand.

The scheduler runs the same pass every RECONCILE_INTERVAL_S; this command is for an
operator who wants it now (or runs no scheduler), and prints what each pass settled.
"""

from __future__ import annotations

import threading

import typer
from rich.table import Table
from rich.text import Text

from broadcaster.cli.context import CliContext
from broadcaster.cli.render import literal
from broadcaster.reconcile.reconciler import PassReport
from broadcaster.stopping import on_stop_signal


def register(app: typer.Typer) -> None:
    app.command(name="reconcile")(reconcile)


def reconcile(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="One pass, then exit."),
) -> None:
    """Settle unknown jobs against the vendor's list of missions; follow sent jobs'
    delivery. Without --once, a pass every RECONCILE_INTERVAL_S until Ctrl-C."""
    cli: CliContext = ctx.obj
    reconciler = cli.boot.reconciler
    if once:
        cli.console.print(render(reconciler.run_pass()))
        return
    stop = threading.Event()
    on_stop_signal(lambda *_: stop.set())
    while not stop.is_set():
        cli.console.print(render(reconciler.run_pass()))
        stop.wait(cli.settings.reconcile_interval_s)


def render(report: PassReport) -> Table | Text:
    """One row per corp: what the pass settled, and why anything is left."""
    if report.skipped:
        return Text(f"nothing done: {report.skipped}")
    if not report.corps:
        return Text("nothing to reconcile: no unknown jobs due, no delivery to follow")
    table = Table(
        "corp",
        "found (sent)",
        "absent (resent)",
        "absent (failed)",
        "left unknown",
        "delivery updated",
        "tracked",
        "list pages",
        "list",
        title="reconcile pass",
    )
    for corp in report.corps:
        table.add_row(
            literal(corp.corp_id, one_line=True),
            _ids(corp.found),
            _ids(corp.resent),
            _ids(corp.failed),
            _ids(list(corp.unsettled)),
            str(corp.delivery_updated),
            str(corp.tracked),
            str(corp.pages),
            literal(corp.list_error or "ok", one_line=True),
        )
    return table


def _ids(job_ids: list[int]) -> str:
    """A count, with the first few ids so an operator can `jobs show` them."""
    if not job_ids:
        return "0"
    shown = ", ".join(str(job_id) for job_id in job_ids[:5])
    more = ", …" if len(job_ids) > 5 else ""
    return f"{len(job_ids)} ({shown}{more})"
