"""Regenerate the console's screenshots in docs/ (console-<page>.png, 1280 px wide, in
Chinese), from a real `broadcaster run --web` that has sent to the sandbox vendor.

    .venv/bin/python -m tests.browser.screenshots [--out docs]

Run by hand when the pages change, and commit the PNGs; the test suite never writes them.
Needs Redis (the machine's, or REDIS_URL) and Debian's Chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import redis

from broadcaster import migrate
from broadcaster.db import make_engine
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.store import JobStore
from broadcaster.ops.devservices import find_redis
from broadcaster.timeutil import utcnow
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer
from broadcaster.web.tokens import Scope, TokenStore
from tests.browser import seed
from tests.browser.server import (
    console_env,
    launched_browser,
    log_in,
    new_page,
    start_console,
    why_no_browser,
)
from tests.helpers import body

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = os.environ.get("BROADCASTER_TEST_REDIS_DB", "9")


IMPORT = "\n".join(
    json.dumps(line, ensure_ascii=False)
    for line in [
        {
            "payload": body(name="双十二返场", group_ext_id_list=[f"group-{i}"]),
            "campaign": "双十二返场",
            "send_at": "2030-12-12T20:00:00+08:00",
            "dedupe_key": f"return-{i}",
        }
        for i in range(3)
    ]
    + [{"payload": body(name="坏的一行", group_ext_id_list=[]), "campaign": "双十二返场"}]
).encode()
"""Three good lines and one without groups, so the summary shows both."""


def _redis_url() -> str:
    url = os.environ.get("REDIS_URL") or find_redis().url
    assert url, "no Redis: set REDIS_URL"
    if url.startswith("redis://"):
        url = url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


def _seed(store: JobStore) -> dict[str, int]:
    """Campaigns an operator would recognise, in every state worth showing: jobs ahead,
    and failed and unknown ones made by the store's own worker operations before the
    service starts (`_seed_due` adds the ones it sends)."""
    now = utcnow()
    seed.schedule(store, "会员日提醒", 18, send_at=now + timedelta(days=1))
    seed.schedule(
        store, "新品上市", 20, send_at=now + timedelta(hours=3), text="新品上市，首发八折"
    )
    failed = seed.schedule(store, "新品上市", 3, send_at=now - timedelta(seconds=1))
    for job_id in failed:
        seed.call(store, job_id, seed.REJECTED)
    unknown = [seed.unknown_job(store, "双十二预热") for _ in range(3)]
    return {"unknown": unknown[0], "failed": failed[0]}


def _seed_due(store: JobStore) -> None:
    """Jobs due in two seconds, for the running service to send."""
    now = utcnow()
    seed.schedule(
        store,
        "双十二预热",
        24,
        send_at=now + timedelta(seconds=2),
        text="双十二大促今晚八点开抢，全场五折",
    )
    seed.schedule(
        store,
        "会员日提醒",
        12,
        send_at=now + timedelta(seconds=2),
        text="会员日：积分翻倍，到店有礼",
    )


def _wait_sent(store: JobStore, campaign: str, count: int) -> None:
    _wait(lambda: len(store.list_jobs(campaign=campaign, status=JobStatus.SENT)) >= count)


def _wait(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"the service did not get there within {timeout}s")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if reason := why_no_browser():
        raise SystemExit(f"cannot take screenshots: {reason}")
    workdir = Path(tempfile.mkdtemp(prefix="broadcaster-shots-"))
    db_url = f"sqlite:///{workdir / 'console.db'}"
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    store = JobStore(engine, default_corp="corp-a")
    token = TokenStore(engine).create("ops-wang", Scope.WRITE)
    ids = _seed(store)
    vendor = SandboxConfig(latency_ms=30, confirm_after_s=3, never_confirm_share=0.3)
    sandbox = SandboxServer(vendor).start()
    env = console_env(
        db_url,
        _redis_url(),
        WEIBAN_BASE_URL=sandbox.url,
        SCHEDULER_POLL_INTERVAL_S="0.2",
        RECONCILE_INTERVAL_S="2",  # delivery read back soon, for the bars' delivery line
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
    )
    service = start_console(["run", "--web", "--processes", "1", "--threads", "2"], env, workdir)
    try:
        service.wait_ready()
        service.wait_logged("worker_started", "scheduler_started")
        _seed_due(store)
        _wait_sent(store, "会员日提醒", 12)
        _wait(lambda: len(store.list_jobs(campaign="双十二预热", delivery="completed")) >= 8)
        with launched_browser() as browser:
            page = new_page(browser, service.base_url)
            shots = Shots(page, args.out)
            page.goto("/login")
            shots.take("login")
            log_in(page, service.base_url, token)
            page.goto("/")
            shots.take("overview")
            page.goto("/campaigns/双十二预热")
            shots.take("campaign")
            page.goto(f"/jobs/{ids['unknown']}")
            shots.take("job")
            page.goto("/unknown")
            shots.take("unknown")
            page.goto("/schedule")
            form = page.locator("form").filter(has=page.locator("[name=send_at]"))
            form.locator("[name=name]").fill("周末特惠")
            form.locator("[name=text]").fill("周末特惠，限时两小时")
            form.locator("[name=staff_ids]").fill("staff-1")
            form.locator("[name=group_ids]").fill("group-1\ngroup-2")
            form.locator("[name=send_at]").fill("下周二晚上八点")
            form.locator("[type=submit]").click()
            page.get_by_test_id("error-send_at").wait_for()
            shots.take("schedule")
            page.goto("/import")
            page.get_by_test_id("import-file").set_input_files(
                {"name": "双十二名单.jsonl", "mimeType": "application/jsonl", "buffer": IMPORT}
            )
            page.get_by_test_id("import-submit").click()
            page.get_by_test_id("import-summary").wait_for()
            shots.take("import")
    finally:
        service.stop()
        sandbox.stop()
        engine.dispose()
    print(service.tail(20) if any("Traceback" in line for line in service.lines) else "")


class Shots:
    """Full-page PNGs of the page as it stands, named console-<name>.png."""

    def __init__(self, page: object, out: Path) -> None:
        self.page = page
        self.out = out

    def take(self, name: str) -> None:
        path = self.out / f"console-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
