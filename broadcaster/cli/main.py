"""Entry point: one error handler for every command.

A `BroadcasterError` (bad setting, bad payload, unreachable database, ...) prints one line
and exits 1; `-v` adds the traceback. Exit codes: 0 ok, 1 error, 2 usage error.
"""

from __future__ import annotations

import sys
import traceback

import typer

from broadcaster.cli import db as db_cmds
from broadcaster.cli import jobs as jobs_cmds
from broadcaster.cli import produce as produce_cmds
from broadcaster.cli import services as service_cmds
from broadcaster.cli import status as status_cmds
from broadcaster.cli.context import CliContext
from broadcaster.errors import BroadcasterError

EXIT_ERROR = 1

app = typer.Typer(
    name="broadcaster",
    help="Scheduled WeCom customer-group mass messages through the Weiban OpenAPI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db_cmds.app, name="db")
app.add_typer(jobs_cmds.app, name="jobs")
produce_cmds.register(app)
service_cmds.register(app)
status_cmds.register(app)


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks on errors."),
) -> None:
    ctx.obj = CliContext(verbose=verbose)


def main(argv: list[str] | None = None) -> None:
    """Usage errors are Typer's (exit 2); ours surface here, in standalone mode."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="broadcaster")
    except BroadcasterError as exc:
        if "-v" in args or "--verbose" in args:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
