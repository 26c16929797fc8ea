"""Long-running commands: `scheduler`, `worker`, `run` (`--web`), `sandbox`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import typer

from broadcaster.cli.context import CliContext
from broadcaster.cli.options import BLOCK_S, COUNT, LATENCY_MS, PORT, float_range, int_range
from broadcaster.settings import Settings


def register(app: typer.Typer) -> None:
    app.command(name="scheduler")(scheduler)
    app.command(
        name="worker",
        help="Run Dramatiq worker processes that send due jobs to the vendor, until SIGTERM.",
    )(_with_worker_shape(_start_workers))
    app.command(name="run")(run)
    app.command(name="sandbox")(sandbox)
    app.command(name="demo")(demo)


def demo(
    ctx: typer.Context,
    keep: bool = typer.Option(False, "--keep", help="Keep broadcaster-demo.db here to inspect."),
    web: bool = typer.Option(
        False, "--web", help="Then keep the console open on the demo's data, until Ctrl-C."
    ),
    web_port: int = typer.Option(
        8080, "--web-port", callback=int_range(PORT), help="Its port (0: any free one)."
    ),
) -> None:
    """The whole thing on embedded defaults against the sandbox, in about a minute."""
    from broadcaster.ops.demo import run_demo

    then = console_after_demo(ctx.obj.console, web_port) if web else None
    if not run_demo(ctx.obj.console, keep=keep, then=then):
        raise typer.Exit(code=1)


def console_after_demo(console: Any, port: int) -> Callable[[Any], None]:
    """Serve the console on the demo's data (its database, its Redis, its service still
    running) with a fresh write token, until SIGINT or SIGTERM."""

    def serve_console(boot: Any) -> None:
        import secrets
        import threading

        from broadcaster.stopping import on_stop_signal
        from broadcaster.web.app import create_app
        from broadcaster.web.config import load_web_settings
        from broadcaster.web.server import start_in_thread
        from broadcaster.web.tokens import Scope, TokenStore

        token = TokenStore(boot.engine).create(f"demo-{secrets.token_hex(3)}", Scope.WRITE)
        web = load_web_settings(boot.settings, host="127.0.0.1", port=port, metrics_cache_s=2.0)
        server = start_in_thread(create_app(boot, web), host=web.host, port=port, log_level="error")
        stop = threading.Event()
        on_stop_signal(stop.set)
        console.print(
            f"\n[bold]Console[/]: http://127.0.0.1:{server.port}/  (log in with this write "
            f"token, made for this demo only)\n{token}\nCtrl-C stops the console and the demo.",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        try:
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()

    return serve_console


METRICS_PORT = typer.Option(
    None,
    "--metrics-port",
    callback=int_range(PORT),
    help="Serve this process's Prometheus metrics on this port (the workers': summed).",
)
METRICS_HOST = typer.Option(
    "127.0.0.1", "--metrics-host", help="Address for --metrics-port (default 127.0.0.1)."
)


def scheduler(
    ctx: typer.Context,
    metrics_port: int | None = METRICS_PORT,
    metrics_host: str = METRICS_HOST,
) -> None:
    """Claim due jobs and hand them to the workers, until SIGTERM."""
    from broadcaster.corps import CorpDirectory
    from scheduler.runner import run_scheduler

    cli: CliContext = ctx.obj
    CorpDirectory(cli.settings)  # a broken corps file: one line now, not after the waits
    run_scheduler(cli.settings, metrics_port=metrics_port, metrics_host=metrics_host)


PROCESSES = typer.Option(
    None,
    "--processes",
    "-p",
    min=1,
    max=256,
    help="Worker processes, 1 to 256 (default WORKER_PROCESSES, 2).",
)
THREADS = typer.Option(
    None,
    "--threads",
    "-t",
    min=1,
    max=1024,
    help="Threads per process, 1 to 1024 (default WORKER_THREADS, 8).",
)
PREFETCH = typer.Option(
    None,
    "--prefetch",
    min=0,
    max=100_000,
    help="Messages each process holds (default threads + 2).",
)


def _shape(
    settings: Settings, processes: int | None, threads: int | None, prefetch: int | None
) -> dict[str, int]:
    """Command-line options over settings."""
    return {
        "processes": processes or settings.worker_processes,
        "threads": threads or settings.worker_threads,
        "prefetch": prefetch if prefetch is not None else settings.worker_prefetch,
    }


def _threads_given(settings: Settings, threads: int | None) -> Settings:
    """`--threads N` counts as set even when N is the default (8): the workers then run N
    threads instead of sizing them from the corps (`quota/sizing.py`)."""
    if threads is None:
        return settings
    return settings.model_copy(update={"worker_threads": threads})


def _with_worker_shape(start: Callable[..., None]) -> Callable[..., None]:
    """A command taking the workers' shape (`-p`, `-t`, `--prefetch`, over settings):
    `worker` and `run` differ only in what they start with it."""

    def command(
        ctx: typer.Context,
        processes: int | None = PROCESSES,
        threads: int | None = THREADS,
        prefetch: int | None = PREFETCH,
        metrics_port: int | None = METRICS_PORT,
        metrics_host: str = METRICS_HOST,
    ) -> None:
        settings = _threads_given(ctx.obj.settings, threads)
        shape = _shape(settings, processes, threads, prefetch)
        start(settings, **shape, metrics_port=metrics_port, metrics_host=metrics_host)

    return command


def _start_workers(settings: Settings, **shape: Any) -> None:
    from worker.supervisor import run_workers

    run_workers(settings, **shape)


def run(
    ctx: typer.Context,
    processes: int | None = PROCESSES,
    threads: int | None = THREADS,
    prefetch: int | None = PREFETCH,
    web: bool = typer.Option(
        False,
        "--web",
        help="Serve the web app too (the API, /metrics, /healthz), on WEB_HOST:WEB_PORT.",
    ),
    metrics_port: int | None = METRICS_PORT,
    metrics_host: str = METRICS_HOST,
) -> None:
    """The scheduler and the workers together, for one machine (and the web app with --web)."""
    from broadcaster.cli.run_all import run_all

    web_settings = None
    if web:
        from broadcaster.web.config import load_web_settings

        web_settings = load_web_settings(ctx.obj.settings)
    settings = _threads_given(ctx.obj.settings, threads)
    run_all(
        settings,
        **_shape(settings, processes, threads, prefetch),
        web=web_settings,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )


def sandbox(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8800, "--port", callback=int_range(PORT)),
    per_minute: int = typer.Option(
        600, "--per-minute", help="Calls per corp per 60 s.", callback=int_range(COUNT)
    ),
    per_hour: int = typer.Option(
        36000, "--per-hour", help="Calls per corp per hour.", callback=int_range(COUNT)
    ),
    max_in_flight: int = typer.Option(
        4, "--max-in-flight", help="The 5th concurrent: 10052.", callback=int_range(COUNT)
    ),
    latency_ms: float = typer.Option(
        20.0, "--latency-ms", callback=float_range(LATENCY_MS, "milliseconds")
    ),
    block_s: float = typer.Option(
        60.0, "--block-s", help="Pause after a per-minute 10053.", callback=float_range(BLOCK_S)
    ),
    secret: str = typer.Option("sandbox-secret", "--secret", help="The secret it accepts."),
) -> None:
    """A local stand-in for Weiban with its quota rules, for trying and testing."""
    import signal

    from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer

    config = SandboxConfig(
        per_minute=per_minute,
        per_hour=per_hour,
        max_in_flight=max_in_flight,
        latency_ms=latency_ms,
        block_s=block_s,
        default_secret=secret,
    )
    server = SandboxServer(config, host=host, port=port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
    ctx.obj.console.print(f"sandbox Weiban on {server.url} (secret {secret!r}); Ctrl-C stops it")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
