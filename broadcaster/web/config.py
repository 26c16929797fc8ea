"""The web service's settings: the WEB_* fields of `broadcaster.settings.Settings` (so
`.env` and the environment set them like every other setting), as one object the app is
built from, with the command line's --host/--port laid over them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr

from broadcaster.settings import Settings

MAX_BATCH = 1000
"""Jobs in one POST, at most (all validated before any is written)."""


class WebSettings(BaseModel):
    """The app's knobs: the `web_*` fields of `Settings`, which states their defaults,
    bounds and meaning once (and validated them); `--host`/`--port` are laid over."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 16 * 1024 * 1024
    cors_origins: str = ""
    metrics_cache_s: float = 10.0
    metrics_public: bool = True
    auth_fail_delay_s: float = 0.2
    session_key: SecretStr | None = None
    trust_forwarded_proto: bool = False

    def origins(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


def load_web_settings(settings: Settings, **overrides: object) -> WebSettings:
    """The WEB_* settings, with the command line's values (already checked) over them."""
    values = {name: getattr(settings, f"web_{name}") for name in WebSettings.model_fields}
    return WebSettings(**{**values, **overrides})
