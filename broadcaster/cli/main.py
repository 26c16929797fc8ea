"""Entry point: one error handler for every command.

A `BroadcasterError` (bad setting, bad payload, unreachable database, ...) prints one line
and exits 1; `-v` adds the traceback. Any other exception is a bug or a failure nobody
foresaw: one line too, naming its type, with `-v` for the traceback. A usage error (an
unknown option, a value out of range) prints one line naming the option and exits 2.
Exit codes: 0 ok, 1 error, 2 usage error. Every message goes through `render.plain`: no
secret and no control character reaches the terminal, whatever text a message quotes.
"""

from __future__ import annotations

import sys
import traceback

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from broadcaster.cli import db as db_cmds
from broadcaster.cli import doctor as doctor_cmds
from broadcaster.cli import jobs as jobs_cmds
from broadcaster.cli import produce as produce_cmds
from broadcaster.cli import reconcile as reconcile_cmds
from broadcaster.cli import schedules as schedules_cmds
from broadcaster.cli import services as service_cmds
from broadcaster.cli import status as status_cmds
from broadcaster.cli import tokens as tokens_cmds
from broadcaster.cli import web as web_cmds
from broadcaster.cli.context import CliContext
from broadcaster.cli.render import plain
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
app.add_typer(tokens_cmds.app, name="tokens")
app.add_typer(schedules_cmds.app, name="schedules")
doctor_cmds.register(app)
produce_cmds.register(app)
reconcile_cmds.register(app)
service_cmds.register(app)
status_cmds.register(app)
web_cmds.register(app)


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks on errors."),
) -> None:
    ctx.obj = CliContext(verbose=verbose)


def main(argv: list[str] | None = None) -> None:
    """Run a command; every error ends as one line on stderr and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, prog_name="broadcaster", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()  # the help text itself, as Typer prints it
        sys.exit(exc.exit_code)
    except ClickException as exc:
        _fail(exc.format_message() + _help_hint(exc), exc.exit_code)
    except typer.Abort:
        _fail("aborted", EXIT_ERROR)
    except BroadcasterError as exc:
        if "-v" in args or "--verbose" in args:
            traceback.print_exc()
        _fail(str(exc), EXIT_ERROR)
    except Exception as exc:  # a bug or an unforeseen failure: still one line, not a trace
        if "-v" in args or "--verbose" in args:
            traceback.print_exc()
        _fail(
            f"unexpected {type(exc).__name__}: {exc}; run again with -v for the traceback, "
            "and please report it",
            EXIT_ERROR,
        )
    sys.exit(result if isinstance(result, int) else 0)


def _help_hint(exc: ClickException) -> str:
    ctx = getattr(exc, "ctx", None)
    return f" (see {ctx.command_path} --help)" if ctx is not None else ""


def _fail(message: str, code: int) -> None:
    print(f"error: {plain(message, one_line=True)}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
