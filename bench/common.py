"""What the benchmarks share: services, a fresh database, the service as processes,
statistics of the sandbox's record."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import make_url, text

from broadcaster import migrate
from broadcaster.bootstrap import Bootstrap
from broadcaster.db import make_engine
from broadcaster.jobs.store import JobStore
from broadcaster.ops.devservices import find_mariadb, find_postgres, find_redis
from broadcaster.settings import load_settings
from broadcaster.vendor.sandbox import SandboxServer

# The benchmarks send thousands of messages to the same groups: WeCom's monthly cap
# (MONTHLY_CAP_POLICY=trim by default) would trim them. Their processes inherit this.
os.environ.setdefault("MONTHLY_CAP_POLICY", "off")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
BENCH_DB = os.environ.get("BENCH_PG_DB", "broadcaster_bench")
"""BENCH_PG_DB and BENCH_REDIS_DB keep benchmarks run at once on a shared machine apart
(each flushes its Redis database and drops its PostgreSQL one)."""
BENCH_REDIS_DB = os.environ.get("BENCH_REDIS_DB", "5")
BENCH_MY_DB = os.environ.get("BENCH_MY_DB", f"{BENCH_DB}_my")
"""The MariaDB/MySQL database (on BENCH_MYSQL_URL, else MYSQL_TEST_URL or 127.0.0.1:3306);
by default named after BENCH_PG_DB, so benchmarks kept apart there are here too."""


def redis_url() -> str:
    url = os.environ.get("BENCH_REDIS_URL") or find_redis().url
    assert url
    if url.startswith("redis://"):
        url = url.rsplit("/", 1)[0] + f"/{BENCH_REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


def fresh_database(kind: str, name: str = BENCH_DB) -> str:
    """An empty migrated database: PostgreSQL `name` (dropped first), MariaDB `BENCH_MY_DB`
    (or `name`_my), or a temp SQLite file. A bench that may run beside the others passes a
    name of its own."""
    if kind == "sqlite":
        path = Path(tempfile.mkdtemp(prefix="broadcaster-bench-")) / "bench.db"
        url = f"sqlite:///{path}"
    elif kind == "mariadb":
        url = _fresh_mariadb(BENCH_MY_DB if name == BENCH_DB else f"{name}_my")
    else:
        base = os.environ.get("BENCH_PG_URL") or find_postgres().url
        if base is None:
            raise SystemExit("no PostgreSQL: set BENCH_PG_URL")
        admin = make_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            connection.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
        url = make_url(base).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def has_mariadb() -> bool:
    """Whether a MariaDB/MySQL server answers (the benchmarks skip it, saying so, if not)."""
    return bool(os.environ.get("BENCH_MYSQL_URL") or find_mariadb().url)


def _fresh_mariadb(name: str) -> str:
    base = os.environ.get("BENCH_MYSQL_URL") or find_mariadb().url
    if base is None:
        raise SystemExit("no MariaDB/MySQL: set BENCH_MYSQL_URL")
    admin = make_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        connection.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    admin.dispose()
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def store_for(db: str, default_corp: str | None = "corp-a") -> JobStore:
    """The job store as the service builds it (the bootstrap), on `db`."""
    settings = load_settings(_env_file=None, database_url=db, weiban_corp_id=default_corp)
    return Bootstrap(settings).store


def service_env(
    db: str, broker: str, vendor_url: str, *, per_minute: int, per_hour: int, **extra: str
) -> dict[str, str]:
    """The settings every benchmark's service runs with: one corp on the sandbox."""
    return {
        "DATABASE_URL": db,
        "REDIS_URL": broker,
        "WEIBAN_BASE_URL": vendor_url,
        "WEIBAN_CORP_ID": "corp-a",
        "WEIBAN_SECRET": "sandbox-secret",
        "WEIBAN_QUOTA_PER_MINUTE": str(per_minute),
        "WEIBAN_QUOTA_PER_HOUR": str(per_hour),
        **extra,
    }


def service(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    environment = {**os.environ, "LOG_LEVEL": "WARNING", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "broadcaster.cli.main", *args],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(40)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def wait_for(check: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"no result in {timeout}s")


def created_times(sandbox: SandboxServer) -> list[float]:
    return sorted(m["received_at"] for m in sandbox.state.created_list())


def rate_between(times: list[float], start: float, end: float) -> float:
    return sum(1 for t in times if start <= t < end) / (end - start)


def worst_window(times: list[float], seconds: float) -> int:
    """The most calls in any sliding window of `seconds`."""
    worst, first = 0, 0
    for last, moment in enumerate(times):
        while times[first] <= moment - seconds:
            first += 1
        worst = max(worst, last - first + 1)
    return worst


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)
