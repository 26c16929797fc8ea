"""The web service's settings: the WEB_* fields of `broadcaster.settings.Settings` (so
`.env` and the environment set them like every other setting), as one object the app is
built from, with the command line's --host/--port laid over them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from broadcaster.settings import Settings

MAX_BATCH = 1000
"""Jobs in one POST, at most (all validated before any is written)."""


class WebSettings(BaseModel):
    """The app's knobs (bounds as in `Settings`, which validated them already)."""

    model_config = ConfigDict(frozen=True)

    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8080, ge=0, le=65535, description="port to listen on")
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="request bodies over this are refused with 413",
    )
    cors_origins: str = Field(
        default="", description="comma-separated origins allowed by CORS; empty: CORS off"
    )
    metrics_cache_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="the figures from the tables are read again at most this often (in the "
        "background; a scrape never waits but the first)",
    )
    metrics_public: bool = Field(
        default=True,
        description="false: /metrics needs a read token too (Prometheus' "
        "authorization: credentials_file)",
    )
    auth_fail_delay_s: float = Field(
        default=0.2,
        ge=0,
        le=10,
        allow_inf_nan=False,
        description="first delay after a refused token from one address; doubles per "
        "failure within a minute, capped at 5 s",
    )

    def origins(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


def load_web_settings(settings: Settings, **overrides: object) -> WebSettings:
    """The WEB_* settings, with the command line's values (already checked) over them."""
    values = {name: getattr(settings, f"web_{name}") for name in WebSettings.model_fields}
    return WebSettings(**{**values, **overrides})
