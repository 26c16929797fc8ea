"""What every command needs, built once per invocation and only when asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from rich.console import Console
from sqlalchemy import Engine

from broadcaster.bootstrap import Bootstrap
from broadcaster.corps import CorpDirectory
from broadcaster.errors import SettingsError
from broadcaster.jobs.store import JobStore
from broadcaster.logs import configure_logging, register_secret
from broadcaster.settings import Settings, load_settings


@dataclass
class CliContext:
    verbose: bool = False
    console: Console = field(default_factory=lambda: Console(soft_wrap=True))
    err: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True))

    @cached_property
    def settings(self) -> Settings:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        if settings.weiban_secret is not None:
            register_secret(settings.weiban_secret.get_secret_value())
        _register_corp_secrets(settings)
        return settings

    @cached_property
    def boot(self) -> Bootstrap:
        """The parts of the service, built from settings when first used (no waiting: a
        missing dependency is one line at once)."""
        return Bootstrap(self.settings)

    @property
    def engine(self) -> Engine:
        """The database, unchecked: only `db upgrade` may use it before it has tables."""
        return self.boot.engine

    @property
    def store(self) -> JobStore:
        """The job tables, for every command that reads or writes jobs. Checked first, in
        this one place, so each such command fails alike with one line that says what to
        do: no SQLite file (never created here), unreachable, or not migrated."""
        return self.boot.store


def _register_corp_secrets(settings: Settings) -> None:
    """Mask the corps file's secrets in whatever this command prints. A corps file that
    does not load is no reason to refuse `jobs list`: commands that use the corps say so."""
    if settings.weiban_corps_file is None:
        return
    try:
        corps = CorpDirectory(settings)
    except SettingsError:
        return
    for corp_id in corps.known():
        register_secret(corps.secret_value(corp_id))
