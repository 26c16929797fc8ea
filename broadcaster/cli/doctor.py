"""`broadcaster doctor`: one line per check of the setup; the checks live in
`broadcaster.ops.doctor`, this only prints them. Exit 0 when nothing failed (warnings
included), 1 when a check failed."""

from __future__ import annotations

import typer
from rich.text import Text

from broadcaster.cli.context import CliContext
from broadcaster.cli.options import LATENCY_MS, float_range
from broadcaster.cli.render import literal, print_json
from broadcaster.cli.services import PROCESSES, THREADS
from broadcaster.logs import configure_logging
from broadcaster.ops.doctor import Result, Status, exit_code, run_checks
from broadcaster.settings import Settings

STYLES = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}


def register(app: typer.Typer) -> None:
    app.command(name="doctor")(doctor)


def doctor(
    ctx: typer.Context,
    processes: int | None = PROCESSES,
    threads: int | None = THREADS,
    latency_ms: float | None = typer.Option(
        None,
        "--latency-ms",
        callback=float_range(LATENCY_MS, "milliseconds"),
        help="The vendor's latency per call, for the concurrency check (default: measured "
        "from recent sends, else the worst case).",
    ),
    as_json: bool = typer.Option(False, "--json", help="A list of {check, status, detail}."),
) -> None:
    """Check settings, database, Redis, each corp's token and the workers' concurrency."""
    cli: CliContext = ctx.obj

    def load() -> Settings:
        settings = cli.settings
        configure_logging("WARNING", settings.log_format)  # the lines below are the report
        return settings

    results = run_checks(load, processes=processes, threads=threads, latency_ms=latency_ms)
    if as_json:
        print_json(cli.console, [result.as_dict() for result in results])
    else:
        width = max(len(result.check) for result in results)
        for result in results:
            cli.console.print(line(result, width), soft_wrap=True)
    raise typer.Exit(code=exit_code(results))


def line(result: Result, width: int) -> Text:
    """`mark  check  detail`; the check and the detail printed literally and masked."""
    text = Text(f"{result.status:<4}", style=STYLES[result.status])
    text.append("  ")
    text.append_text(literal(f"{result.check:<{width}}", one_line=True, style="bold"))
    text.append("  ")
    text.append_text(literal(result.detail, one_line=True))
    return text
