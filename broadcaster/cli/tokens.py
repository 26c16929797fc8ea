"""`broadcaster tokens create|list|revoke`: the HTTP API's bearer tokens."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from broadcaster.cli.context import CliContext
from broadcaster.cli.render import literal, print_json
from broadcaster.web.tokens import Scope, TokenStore

app = typer.Typer(
    help="Bearer tokens for the HTTP API: create, list, revoke.", no_args_is_help=True
)


def _tokens(cli: CliContext) -> TokenStore:
    cli.store  # noqa: B018 - checks the database and its schema first, with one clear line
    return TokenStore(cli.engine)


@app.command()
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A label for who uses it, e.g. crm-prod."),
    read_only: bool = typer.Option(False, "--read-only", help="GETs only."),
) -> None:
    """Create a token and print it once, alone on the last line: only its hash is kept."""
    cli: CliContext = ctx.obj
    scope = Scope.READ if read_only else Scope.WRITE
    token = _tokens(cli).create(name, scope)
    cli.err.print(
        Text.assemble(
            "token ",
            literal(name, one_line=True),
            f" ({scope.value}) created; it is shown once, store it now:",
        )
    )
    print(token, flush=True)


@app.command("list")
def list_tokens(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every token's name, scope and dates (never the token)."""
    cli: CliContext = ctx.obj
    infos = _tokens(cli).list()
    if as_json:
        print_json(
            cli.console,
            [
                {
                    "name": info.name,
                    "key_id": info.key_id,
                    "scope": info.scope.value,
                    "created_at": info.created_at.isoformat(),
                    "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
                }
                for info in infos
            ],
        )
        return
    table = Table("name", "key id", "scope", "created (UTC)", "revoked (UTC)")
    for info in infos:
        table.add_row(
            literal(info.name, one_line=True),
            info.key_id,
            info.scope.value,
            f"{info.created_at:%Y-%m-%d %H:%M:%S}",
            f"{info.revoked_at:%Y-%m-%d %H:%M:%S}" if info.revoked_at else "",
        )
    cli.console.print(table)


@app.command()
def revoke(ctx: typer.Context, name: str = typer.Argument(..., help="The token's name.")) -> None:
    """Revoke a token: from now on it gets 401."""
    cli: CliContext = ctx.obj
    _tokens(cli).revoke(name)
    cli.console.print(Text.assemble("token ", literal(name, one_line=True), " revoked"))
