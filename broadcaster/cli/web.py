"""`broadcaster web`: the HTTP API, /metrics, /healthz and /readyz, under uvicorn."""

from __future__ import annotations

import typer

from broadcaster.cli.context import CliContext
from broadcaster.cli.options import PORT, int_range


def register(app: typer.Typer) -> None:
    app.command(name="web")(web)


def web(
    ctx: typer.Context,
    host: str | None = typer.Option(
        None, "--host", help="Address to listen on (default WEB_HOST, 127.0.0.1)."
    ),
    port: int | None = typer.Option(
        None,
        "--port",
        callback=int_range(PORT),
        help="Port to listen on (default WEB_PORT, 8080).",
    ),
) -> None:
    """Serve the HTTP API for producers (/api/v1), /metrics, /healthz and /readyz."""
    from broadcaster.web.app import create_app
    from broadcaster.web.config import load_web_settings
    from broadcaster.web.server import serve

    cli: CliContext = ctx.obj
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = load_web_settings(cli.settings, **overrides)
    app = create_app(cli.boot, settings)
    serve(app, host=settings.host, port=settings.port, log_level=cli.settings.log_level.lower())
