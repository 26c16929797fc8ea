"""The console as a user meets it: `broadcaster web` (or `run --web`) as a real process on
a free port, and Debian's Chromium driven by Playwright. Shared by the browser tests'
fixtures and the screenshot script, so both run the console the same way."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Headless in a container: no sandbox (root), no GPU, and nothing that calls home."""

WIDTH = 1280


def chromium_path() -> str | None:
    """Debian's Chromium (Playwright's own browser download is not reachable here):
    BROADCASTER_CHROMIUM if set, else /usr/bin/chromium, else `chromium` on PATH."""
    wanted = os.environ.get("BROADCASTER_CHROMIUM")
    if wanted:
        return wanted if Path(wanted).is_file() else None
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def why_no_browser() -> str | None:
    """None when the browser tests can run, else the reason they skip (said, not silent)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed: pip install -e '.[test]'"
    if chromium_path() is None:
        return (
            "no Chromium: install Debian's (apt-get install chromium) or set "
            "BROADCASTER_CHROMIUM to a Chromium binary"
        )
    return None


@contextmanager
def launched_browser(*extra_args: str) -> Iterator[Browser]:
    """Headless Chromium from the system, closed at the end."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    assert path is not None, why_no_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Console:
    """One `broadcaster` process serving the console; its output kept for failures."""

    base_url: str
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def wait_ready(self, timeout: float = 40) -> None:
        """Until /readyz answers 200 (database and Redis reachable), or fail saying why."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"the console exited ({self.popen.returncode}):\n{self.tail()}"
                )
            try:
                answer = httpx.get(f"{self.base_url}/readyz", timeout=2)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:200]}"
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise AssertionError(f"/readyz not 200 within {timeout}s ({last}):\n{self.tail()}")

    def wait_logged(self, *events: str, timeout: float = 60) -> None:
        """Until each JSON log event named has been printed (LOG_FORMAT=json, LOG_LEVEL=INFO),
        e.g. `worker_started`: a worker takes seconds to start on a loaded machine."""
        deadline = time.monotonic() + timeout
        while not all(any(f'"{e}"' in line for line in list(self.lines)) for e in events):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"never logged {events} within {timeout}s:\n{self.tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to its process group (the run's workers too), SIGKILL if it lingers."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


def console_env(db_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The settings the console runs with in the tests: one corp, no login throttle."""
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "WEIBAN_CORP_ID": "corp-a",
        "WEIBAN_SECRET": "sandbox-secret",
        "WEB_AUTH_FAIL_DELAY_S": "0",
        "MONTHLY_CAP_POLICY": "off",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def start_console(args: list[str], env: dict[str, str], cwd: Path) -> Console:
    """`broadcaster <args> --port <free>` in its own session (so its group can be killed)."""
    port = free_port()
    popen = subprocess.Popen(
        [sys.executable, "-m", "broadcaster.cli.main", *args],
        env={**env, "WEB_PORT": str(port)},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    console = Console(f"http://127.0.0.1:{port}", popen)

    def drain() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            console.lines.append(line.rstrip("\n"))

    threading.Thread(target=drain, daemon=True).start()
    return console


def create_token(db_url: str, name: str, *, read_only: bool = False) -> str:
    """A token as an operator makes one: `broadcaster tokens create` (last line printed)."""
    args = ["tokens", "create", name, *(["--read-only"] if read_only else [])]
    done = subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", *args],
        env={**os.environ, "DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def log_in(page: Page, base_url: str, token: str) -> None:
    """The login form as a user fills it; ends on the overview."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/login")
    page.get_by_test_id("login-token").fill(token)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("logout")).to_be_visible()


CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


def csrf_of(html: str) -> str | None:
    """The hidden csrf_token of the first form in a page, if any."""
    found = CSRF.search(html)
    return None if found is None else (found.group(1) or found.group(2))


def new_page(browser: Browser, base_url: str, locale: str = "zh-CN", **options: Any) -> Page:
    context = browser.new_context(
        base_url=base_url, locale=locale, viewport={"width": WIDTH, "height": 900}, **options
    )
    context.set_default_timeout(10_000)
    return context.new_page()
