"""Shared fixtures: real databases (SQLite, PostgreSQL, MariaDB/MySQL), a real Redis,
settings."""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, make_url, text

from broadcaster import migrate
from broadcaster.db import make_engine
from broadcaster.jobs.store import JobStore
from broadcaster.ops.devservices import Found, find_mariadb, find_postgres, find_redis
from broadcaster.settings import Settings

# The tests, the system tests' processes and the chaos rounds send thousands of messages to
# the same two groups: WeCom's monthly cap (MONTHLY_CAP_POLICY=trim by default) would trim
# them. Tests of the cap set their policy explicitly.
os.environ.setdefault("MONTHLY_CAP_POLICY", "off")

_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under -n
_XDIST_INDEX = int(_XDIST_WORKER[2:]) if _XDIST_WORKER.startswith("gw") else 0
PG_DB = os.environ.get("BROADCASTER_TEST_PG_DB", "broadcaster_test") + (
    f"_{_XDIST_WORKER}" if _XDIST_WORKER else ""
)
REDIS_DB = str(int(os.environ.get("BROADCASTER_TEST_REDIS_DB", "9")) + _XDIST_INDEX)
MY_DB = os.environ.get("BROADCASTER_TEST_MY_DB", f"{PG_DB}_my")
"""Override these to run two test sessions side by side on one machine's servers (the
MariaDB database is named after the PostgreSQL one unless BROADCASTER_TEST_MY_DB says).
Each pytest-xdist worker takes its own: the PostgreSQL/MariaDB names get the worker's id
(`broadcaster_test_gw1`), the Redis database number the worker's index added (9, 10)."""
_found: dict[str, Found] = {}


def _postgres() -> Found:
    if "pg" not in _found:
        _found["pg"] = find_postgres()
    return _found["pg"]


def _redis() -> Found:
    if "redis" not in _found:
        _found["redis"] = find_redis()
    return _found["redis"]


def _mariadb() -> Found:
    if "mariadb" not in _found:
        _found["mariadb"] = find_mariadb()
    return _found["mariadb"]


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"postgresql: {_postgres().how}",
        f"redis: {_redis().how}",
        f"mariadb: {_mariadb().how}",
    ]


def make_settings(**overrides: Any) -> Settings:
    """Settings for a test: no `.env`, fast polling, explicit overrides."""
    defaults: dict[str, Any] = {
        "weiban_corp_id": "corp-default",
        "scheduler_poll_interval_s": 0.2,
        "scheduler_sweep_interval_s": 0.5,
    }
    return Settings(_env_file=None, **{**defaults, **overrides})  # type: ignore[call-arg]


# ---------------------------------------------------------------- databases
@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    return path


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this session (dropped and recreated)."""
    found = _postgres()
    if found.url is None:
        pytest.skip(found.how)
    admin = make_engine(found.url, isolation_level="AUTOCOMMIT", poolclass=None)
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {PG_DB}"))
    admin.dispose()
    url = make_url(found.url).set(database=PG_DB).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url


@pytest.fixture
def empty_pg_url(pg_url: str) -> str:
    """The session's PostgreSQL database, emptied for this test: every table of the
    schema (a schedule or a token left by one test would act in the next)."""
    from broadcaster.jobs.tables import metadata

    names = ", ".join(table.name for table in metadata.sorted_tables)
    engine = make_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return pg_url


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A migrated MariaDB/MySQL database for this session (dropped and recreated)."""
    found = _mariadb()
    if found.url is None:
        pytest.skip(found.how)
    admin = make_engine(found.url, poolclass=None)
    with admin.begin() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {MY_DB}"))
        connection.execute(text(f"CREATE DATABASE {MY_DB} CHARACTER SET utf8mb4"))
    admin.dispose()
    url = make_url(found.url).set(database=MY_DB).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url


@pytest.fixture
def empty_mysql_url(mysql_url: str) -> str:
    """The session's MariaDB database, emptied for this test (ids from 1 again)."""
    from broadcaster.jobs.tables import metadata

    engine = make_engine(mysql_url, poolclass=None)
    with engine.begin() as connection:
        connection.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
        for table in metadata.sorted_tables:
            connection.execute(text(f"TRUNCATE TABLE {table.name}"))
        connection.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
    engine.dispose()
    return mysql_url


DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
MARIADB = pytest.param("mariadb", marks=pytest.mark.mariadb)
ON_MARIADB_TOO = {
    "tests.integration.test_bootstrap",
    "tests.integration.test_campaign_claim",
    "tests.integration.test_producers",
    "tests.integration.test_reconcile",
    "tests.integration.test_schedule_store",
    "tests.integration.test_scheduler",
    "tests.integration.test_schema",
    "tests.integration.test_sender",
    "tests.integration.test_store_contract",
}
"""The modules whose `db_url` tests also run on MariaDB: the store's contract, the claim
and the two-scheduler race, producers (the README's INSERT), sending, reconcile, schedules,
the schema (a real `broadcaster run` on MariaDB: tests/system/test_mysql_run.py). The rest
of the suite (the CLI's rendering,
the web API, chaos) reads the database through the same store, and running all of it a
third time would cost minutes; poison rows on MariaDB are in test_mysql_poison.py (the
other two databases' odd values are not MySQL's). BROADCASTER_TEST_MARIADB=all runs every
`db_url` test on MariaDB too."""


SHARED_BY_MODULE = {
    "tests.integration.test_rabbitmq": "rabbitmq",
    "tests.system.test_rabbitmq_delivery": "rabbitmq",
    "tests.chaos.test_chaos": "chaos",
    "tests.system.test_readme": "readme",
}
"""Modules that hold something every xdist worker would share: the RabbitMQ system test
stops and starts the server's app under the other RabbitMQ tests; the chaos rounds use one
fixed PostgreSQL database; the README's commands start the sandbox on the README's own
port, 8800. Modules of one group take turns (a lock file); `--dist loadfile` keeps each
module on one worker."""


@pytest.fixture(scope="module", autouse=True)
def one_worker_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module of `SHARED_BY_MODULE` holds its group's lock file while it runs, so no
    other pytest process (an xdist worker, a second session) runs one of the group then.
    (xdist's own `xdist_group` marks are lost under pytest 9.2, which renamed the node id
    attribute xdist rewrites.)"""
    group = SHARED_BY_MODULE.get(request.module.__name__)
    if group is None:
        yield
        return
    lock = Path(tempfile.gettempdir()) / f"broadcaster-tests-{group}.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """As a mark (read by pytest's own hook, after this one), so the fixture's own params
    step aside rather than being applied twice."""
    everywhere = os.environ.get("BROADCASTER_TEST_MARIADB") == "all"
    chosen_module = everywhere or metafunc.module.__name__ in ON_MARIADB_TOO
    if "db_url" not in metafunc.fixturenames or not chosen_module:
        return
    chosen = metafunc.definition.iter_markers("parametrize")
    if not any("db_url" in str(mark.args[0]) for mark in chosen):  # a test's own choice
        every = pytest.mark.parametrize("db_url", [*DATABASES, MARIADB], indirect=True)
        metafunc.definition.add_marker(every)


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """An empty, migrated database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "jobs.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    if request.param == "mariadb":
        return request.getfixturevalue("empty_mysql_url")
    return request.getfixturevalue("empty_pg_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> JobStore:
    return JobStore(engine, default_corp="corp-default")


# ---------------------------------------------------------------- redis
@pytest.fixture(scope="session")
def redis_base_url() -> str:
    found = _redis()
    assert found.url is not None
    return found.url


@pytest.fixture
def redis_url(redis_base_url: str) -> Iterator[str]:
    """A Redis database emptied before each test (db 9 on a TCP server)."""
    url = redis_base_url
    if url.startswith("redis://"):
        url = url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# ---------------------------------------------------------------- the vendor
@pytest.fixture
def sandbox() -> Iterator[Any]:
    """The sandbox vendor on a free loopback port, real HTTP, Weiban's default quota."""
    from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer

    server = SandboxServer(SandboxConfig(latency_ms=5)).start()
    yield server
    server.stop()
