"""The `broadcaster` command line (Typer + rich)."""
