"""What every command needs, built once per invocation and only when asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from rich.console import Console

from broadcaster.db import make_engine
from broadcaster.logs import configure_logging, register_secret
from broadcaster.settings import Settings, load_settings
from broadcaster.store import JobStore


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
        return settings

    @cached_property
    def store(self) -> JobStore:
        engine = make_engine(self.settings.database_url)
        return JobStore(engine, default_corp=self.settings.weiban_corp_id)
