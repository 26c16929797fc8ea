"""`broadcaster db upgrade|current`."""

from __future__ import annotations

import typer

from broadcaster import migrate
from broadcaster.cli.context import CliContext
from broadcaster.db import check_connection, require_database_file

app = typer.Typer(help="Create and migrate the job tables (Alembic).", no_args_is_help=True)


@app.command()
def upgrade(ctx: typer.Context, revision: str = typer.Argument("head")) -> None:
    """Create or migrate the tables to the newest schema (safe to run again)."""
    cli: CliContext = ctx.obj
    engine = cli.engine
    check_connection(engine)
    migrate.upgrade(engine, revision)
    cli.console.print(f"database at revision {migrate.current_revision(engine)}")


@app.command()
def current(ctx: typer.Context) -> None:
    """Print the schema revision of the database and of the code."""
    cli: CliContext = ctx.obj
    require_database_file(cli.engine)  # reading must not create an empty SQLite file
    check_connection(cli.engine)
    cli.console.print(
        f"database: {migrate.current_revision(cli.engine)}  code: {migrate.head_revision()}"
    )
