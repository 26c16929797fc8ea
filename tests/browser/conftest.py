"""Fixtures of the browser tests: one `broadcaster web` process for this package on a real
SQLite database and a real Redis, its tokens made by `broadcaster tokens create`, and
Debian's Chromium. Without Chromium (or Playwright) every test here skips, saying why."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from broadcaster.db import make_engine
from broadcaster.jobs.store import JobStore
from tests.browser.server import (
    Console,
    console_env,
    create_token,
    launched_browser,
    log_in,
    new_page,
    start_console,
    why_no_browser,
)
from tests.conftest import REDIS_DB

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@dataclass
class Site:
    """The running console and what a test needs beside it."""

    console: Console
    db_url: str
    redis_url: str
    store: JobStore
    write_token: str
    read_token: str

    @property
    def url(self) -> str:
        return self.console.base_url


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    reason = why_no_browser()
    if reason is not None:
        pytest.skip(f"browser tests skipped: {reason}")
    with launched_browser() as launched:
        yield launched


@pytest.fixture(scope="package")
def browser_redis_url(redis_base_url: str) -> str:
    """The tests' Redis database (BROADCASTER_TEST_REDIS_DB), emptied once for this package."""
    url = redis_base_url
    if url.startswith("redis://"):
        url = url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(scope="package")
def site(browser: Browser, sqlite_template: Path, browser_redis_url: str) -> Iterator[Site]:
    """`broadcaster web` on a fresh SQLite database, a write and a read-only token."""
    workdir = Path(tempfile.mkdtemp(prefix="broadcaster-browser-"))
    shutil.copy(sqlite_template, workdir / "console.db")
    db_url = f"sqlite:///{workdir / 'console.db'}"
    write_token = create_token(db_url, "console-admin")
    read_token = create_token(db_url, "console-viewer", read_only=True)
    console = start_console(["web"], console_env(db_url, browser_redis_url), workdir)
    engine = make_engine(db_url)
    try:
        console.wait_ready()
        yield Site(
            console,
            db_url,
            browser_redis_url,
            JobStore(engine, default_corp="corp-a"),
            write_token,
            read_token,
        )
    finally:
        console.stop()
        engine.dispose()
    assert not [line for line in console.lines if "Traceback" in line], console.tail(80)


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    """A fresh browser context (no cookies) that prefers Chinese, as most operators do."""
    fresh = new_page(browser, site.url)
    yield fresh
    fresh.context.close()


@pytest.fixture
def admin(browser: Browser, site: Site) -> Iterator[Page]:
    """A browser context of its own, logged in with the write token."""
    fresh = new_page(browser, site.url)
    log_in(fresh, site.url, site.write_token)
    yield fresh
    fresh.context.close()


@pytest.fixture
def viewer(browser: Browser, site: Site) -> Iterator[Page]:
    """A browser context of its own, logged in with the read-only token."""
    fresh = new_page(browser, site.url)
    log_in(fresh, site.url, site.read_token)
    yield fresh
    fresh.context.close()
