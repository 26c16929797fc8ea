"""A running campaign's progress moves on its page and on the overview without a reload:
the real service (`broadcaster run --web`: scheduler, a worker and the console in one
command) sends to the sandbox vendor over HTTP while the pages are open."""

from __future__ import annotations

import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from playwright.sync_api import expect

from broadcaster.db import make_engine
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.timeutil import utcnow
from broadcaster.web.tokens import Scope, TokenStore
from tests.browser import seed
from tests.browser.server import console_env, log_in, new_page, start_console

if TYPE_CHECKING:
    from playwright.sync_api import Browser

    from broadcaster.vendor.sandbox import SandboxServer

JOBS = 12
SPACING_S = 0.8
"""The sends spread over ~9 s, longer than two of the page's 3 s refreshes, so refreshes
usually land while the campaign is part way (not asserted: a loaded machine may bunch the
sends)."""


def test_a_running_campaign_moves_on_its_page_and_the_overview(
    browser: Browser,
    sqlite_template: Path,
    browser_redis_url: str,
    sandbox: SandboxServer,
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="broadcaster-progress-"))
    shutil.copy(sqlite_template, workdir / "run.db")
    db_url = f"sqlite:///{workdir / 'run.db'}"
    engine = make_engine(db_url)
    store = JobStore(engine, default_corp="corp-a")
    token = TokenStore(engine).create("progress", Scope.READ)
    env = console_env(
        db_url,
        browser_redis_url,
        WEIBAN_BASE_URL=sandbox.url,
        SCHEDULER_POLL_INTERVAL_S="0.1",
        SCHEDULER_SWEEP_INTERVAL_S="0.5",
        WEB_METRICS_CACHE_S="1",
        LOG_LEVEL="INFO",  # for worker_started and scheduler_started
        LOG_FORMAT="json",
    )
    service = start_console(["run", "--web", "--processes", "1", "--threads", "2"], env, workdir)
    page = None
    try:
        service.wait_ready()
        # Sends paced by send_at need a worker consuming by then (slow to start on a
        # loaded machine): the jobs are scheduled once the service says both are up.
        service.wait_logged("worker_started", "scheduler_started")
        page = new_page(browser, service.base_url)
        log_in(page, service.base_url, token)
        first = utcnow() + timedelta(seconds=2)
        for i in range(JOBS):
            seed.schedule(store, "spring-run", 1, send_at=first + timedelta(seconds=i * SPACING_S))
        overview = page.context.new_page()  # a second tab, watched at the same time
        overview.goto("/")
        page.goto("/campaigns/spring-run")
        bar = page.get_by_test_id("campaign-progress")
        expect(bar).to_have_attribute("data-total", str(JOBS))
        expect(bar).to_have_attribute("data-sent", "0")
        for tab in (page, overview):
            tab.evaluate("window.__notReloaded = true")

        # Refreshes see the sends arrive, until all are in.
        expect(bar).not_to_have_attribute("data-sent", "0", timeout=30_000)
        expect(bar).to_have_attribute("data-sent", str(JOBS), timeout=30_000)
        # The overview's bar (from the figures /metrics keeps, WEB_METRICS_CACHE_S) too.
        on_overview = overview.get_by_test_id("campaign-spring-run")
        expect(on_overview).to_have_attribute("data-sent", str(JOBS), timeout=10_000)
        expect(on_overview).to_have_attribute("data-total", str(JOBS))
        for tab in (page, overview):
            assert tab.evaluate("window.__notReloaded === true"), f"{tab.url} was reloaded"
    except Exception as exc:  # the service's own account, beside what the page showed
        exc.add_note("the service's last lines:\n" + service.tail(60))
        raise
    finally:
        if page is not None:
            page.context.close()
        service.stop()
        engine.dispose()
    rows = store.list_jobs(campaign="spring-run", limit=100)
    assert {row.status for row in rows} == {JobStatus.SENT}
    assert len(sandbox.state.created_list()) == JOBS
    assert not [line for line in service.lines if "Traceback" in line], service.tail(80)
