"""Broken settings fail at load with one line that names the variable and hides passwords
(issue 9, items 8, 10 and 11): nothing reaches a traceback or a scheduler tick."""

from __future__ import annotations

from pathlib import Path

import pytest

from broadcaster.corps import CorpDirectory
from broadcaster.db import normalise_url
from broadcaster.errors import SettingsError
from broadcaster.settings import MAX_DURATION_S, Settings, load_settings, redact_url


def refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        load_settings(_env_file=None)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "QUEUED_LEASE_S",
            "inf",
            "QUEUED_LEASE_S: Input should be a finite number (got 'inf')",
        ),
        (
            "QUEUED_LEASE_S",
            "1e308",
            "QUEUED_LEASE_S: Input should be less than or equal to 31536000 (got '1e308')",
        ),
        (
            "SCHEDULER_POLL_INTERVAL_S",
            "inf",
            "SCHEDULER_POLL_INTERVAL_S: Input should be a finite number (got 'inf')",
        ),
        (
            "SCHEDULER_POLL_INTERVAL_S",
            "0",
            "SCHEDULER_POLL_INTERVAL_S: Input should be greater than or equal to 0.01 (got '0')",
        ),
        (
            "WEIBAN_QUOTA_HEADROOM",
            "nan",
            "WEIBAN_QUOTA_HEADROOM: Input should be a finite number (got 'nan')",
        ),
        (
            "WORKER_THREADS",
            "18446744073709551617",
            "WORKER_THREADS: Input should be less than or equal to 1024 "
            "(got '18446744073709551617')",
        ),
        (
            "WEIBAN_QUOTA_PER_MINUTE",
            "1" + "0" * 30,
            "WEIBAN_QUOTA_PER_MINUTE: Input should be less than or equal to 1000000 "
            f"(got '1{'0' * 30}')",
        ),
        (
            "REDIS_URL",
            "localhost:6379",
            "REDIS_URL: must be a URL like redis://localhost:6379/0 (or rediss://, "
            "unix:///PATH); unset it to use the embedded Redis (got 'localhost:6379')",
        ),
        (
            "REDIS_URL",
            "redis://:hunter22@localhost:port/0",
            "REDIS_URL: not a valid Redis URL: Port could not be cast to integer value as "
            "'port' (got 'redis://:***@localhost:port/0')",
        ),
        (
            "DEFAULT_TZ",
            "Mars/Olympus",
            "DEFAULT_TZ: unknown time zone; use an IANA name like Asia/Shanghai "
            "(got 'Mars/Olympus')",
        ),
        (
            "DATABASE_URL",
            "sqlite://",
            "DATABASE_URL: an in-memory SQLite database keeps nothing between commands; "
            "name a file, e.g. sqlite:///broadcaster.db (got 'sqlite://')",
        ),
        (
            "DATABASE_URL",
            "sqlite:///:memory:",
            "DATABASE_URL: an in-memory SQLite database keeps nothing between commands; "
            "name a file, e.g. sqlite:///broadcaster.db (got 'sqlite:///:memory:')",
        ),
        (
            "DATABASE_URL",
            "postgresql+asyncpg://app:hunter22@db/jobs",
            "DATABASE_URL: PostgreSQL driver 'asyncpg' is not supported; write "
            "postgresql://... (broadcaster uses psycopg 3) "
            "(got 'postgresql+asyncpg://app:***@db/jobs')",
        ),
        (
            "DATABASE_URL",
            "oracle://app:hunter22@db/jobs",
            "DATABASE_URL: must start with sqlite://, postgresql:// or mysql:// (e.g. "
            "sqlite:///broadcaster.db, postgresql://USER:PASSWORD@HOST/DB, "
            "mysql://USER:PASSWORD@HOST/DB) (got 'oracle://app:***@db/jobs')",
        ),
        (
            "DATABASE_URL",
            "mysql+mysqldb://app:hunter22@db/jobs",
            "DATABASE_URL: MySQL driver 'mysqldb' is not supported; write "
            "mysql://... (broadcaster uses PyMySQL, installed with it) "
            "(got 'mysql+mysqldb://app:***@db/jobs')",
        ),
        (
            "DATABASE_URL",
            "mariadb://app:hunter22@db",
            "DATABASE_URL: name the database after the host, e.g. "
            "mysql://USER@HOST/DB (got 'mariadb://app:***@db')",
        ),
        (
            "DATABASE_URL",
            "mysql://app:hunter22@db:port/jobs",
            "DATABASE_URL: not a valid database URL: invalid literal for int() with base 10: "
            "'port' (got 'mysql://app:***@db:port/jobs')",
        ),
        (
            "DATABASE_URL",
            "postgresql://app:hunter22@db:port/jobs",
            "DATABASE_URL: not a valid database URL: invalid literal for int() with base 10: "
            "'port' (got 'postgresql://app:***@db:port/jobs')",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    assert refused(monkeypatch, **{name: value}) == message


@pytest.mark.parametrize(
    "url",
    [
        "postgres://app:hunter22@db/jobs",
        "postgresql+psycopg2://app:hunter22@db/jobs",
        "postgresql+psycopg://app:hunter22@db/jobs",
        "postgresql://app:hunter22@db/jobs",
    ],
)
def test_postgres_urls_the_code_can_serve_are_accepted_and_use_psycopg_3(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    settings = load_settings(_env_file=None)
    assert normalise_url(settings.database_url) == "postgresql+psycopg://app:hunter22@db/jobs"


@pytest.mark.parametrize(
    "url",
    [
        "mysql://app:hunter22@db/jobs",
        "mariadb://app:hunter22@db/jobs",
        "mysql+pymysql://app:hunter22@db/jobs",
        "mariadb+pymysql://app:hunter22@db/jobs",
    ],
)
def test_mysql_urls_are_accepted_and_use_pymysql(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    settings = load_settings(_env_file=None)
    assert normalise_url(settings.database_url) == "mysql+pymysql://app:hunter22@db/jobs"


def test_every_number_setting_is_bounded() -> None:
    for name, field in Settings.model_fields.items():
        if field.annotation in (int, float):
            bounds = [m for m in field.metadata if hasattr(m, "le")]
            assert bounds, f"{name.upper()} has no upper bound"
            if name.endswith("_s"):
                assert bounds[0].le <= MAX_DURATION_S, name


def test_an_empty_redis_url_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    assert load_settings(_env_file=None).redis_url is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres://user:pw@host/db", "postgres://user:***@host/db"),
        ("postgresql://u:p@ss@host:5432/db", "postgresql://u:***@host:5432/db"),
        ("postgresql://u:pw@host:notaport/db", "postgresql://u:***@host:notaport/db"),
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("postgresql://u@host/db", "postgresql://u@host/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_a_url_password_is_hidden_even_when_the_url_is_malformed(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_dotenv_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"DEFAULT_TZ=\xff\xfe\n")
    with pytest.raises(SettingsError) as error:
        load_settings(_env_file=env_file)
    assert (
        str(error.value) == ".env: not UTF-8 text (invalid start byte at byte 11); save it as UTF-8"
    )


def corps_from(tmp_path: Path, content: bytes) -> CorpDirectory:
    path = tmp_path / "corps.json"
    path.write_bytes(content)
    return CorpDirectory(Settings(_env_file=None, weiban_corps_file=path))  # type: ignore[call-arg]


def test_a_corps_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as error:
        corps_from(tmp_path, '{"corp-b": {"secret": "señor"}}'.encode("latin-1"))
    assert str(error.value) == (
        f"WEIBAN_CORPS_FILE {tmp_path / 'corps.json'}: not UTF-8 text (invalid continuation "
        "byte at byte 25); save it as UTF-8"
    )


def test_a_corps_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    corps = corps_from(tmp_path, b'\xef\xbb\xbf{"corp-b": {"secret": "s3cret-b"}}')
    assert corps.known() == ["corp-b"]


def test_a_corps_file_limit_past_its_bound_names_the_corp(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as error:
        corps_from(tmp_path, b'{"corp-b": {"secret": "s3cret-b", "quota_per_minute": 1e400}}')
    assert str(error.value).startswith(
        f"WEIBAN_CORPS_FILE {tmp_path / 'corps.json'}, corp corp-b: quota_per_minute: "
    )


def test_a_missing_corps_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(SettingsError) as error:
        CorpDirectory(Settings(_env_file=None, weiban_corps_file=path))  # type: ignore[call-arg]
    assert (
        str(error.value) == f"WEIBAN_CORPS_FILE {path}: cannot read it: No such file or directory"
    )
