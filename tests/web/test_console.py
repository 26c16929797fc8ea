"""The console, server side: login and its cookie, CSRF, the auth matrix, both languages,
escaping, every page on each database, and actions that really change rows."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, update

from broadcaster.bootstrap import Bootstrap
from broadcaster.jobs.states import JobStatus
from broadcaster.jobs.tables import attempts, jobs
from broadcaster.produce.api import schedule_broadcast
from broadcaster.timeutil import utcnow
from broadcaster.web.app import create_app
from broadcaster.web.console.session import COOKIE
from broadcaster.web.tokens import TokenStore
from tests.web.conftest import BODY, Tokens, web_settings

CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')
HOSTILE = "<script>alert(1)</script>"


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)


def login(client: TestClient, token: str) -> None:
    form = client.get("/login")
    answer = client.post(
        "/login",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": "/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text


def post(client: TestClient, page: str, action: str, **data: Any) -> Any:
    """Submit a form of `page` to `action` with the page's CSRF token."""
    token = csrf_of(client.get(page).text)
    return client.post(action, data={"csrf_token": token, **data}, follow_redirects=False)


def status_of(boot: Bootstrap, job_id: int) -> str:
    with boot.engine.begin() as connection:
        return str(connection.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar())


def set_status(boot: Bootstrap, job_id: int, status: JobStatus, **values: Any) -> None:
    with boot.engine.begin() as connection:
        connection.execute(
            update(jobs).where(jobs.c.id == job_id).values(status=status.value, **values)
        )


@pytest.fixture
def console(boot: Bootstrap) -> Iterator[TestClient]:
    with TestClient(create_app(boot, web_settings()), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def campaign(boot: Bootstrap) -> list[int]:
    """Three jobs of campaign 双十二: one with hostile text."""
    ids = []
    for index, text in enumerate(["全场五折", HOSTILE, "今晚八点"]):
        body = {**BODY, "text": text, "group_ext_id_list": [f"group-{index}"]}
        ids += schedule_broadcast(
            body, campaign="双十二", dedupe_key=f"d12-{index}", store=boot.store
        ).job_ids
    return ids


# ------------------------------------------------------------------ login, session
def test_login_sets_a_strict_httponly_cookie_without_the_token(
    console: TestClient, tokens: Tokens
) -> None:
    assert console.get("/", follow_redirects=False).headers["location"] == "/login?next=%2F"
    page = console.get("/login")
    assert 'name="token"' in page.text and 'data-testid="login-token"' in page.text
    answer = console.post(
        "/login",
        data={"token": tokens.write, "csrf_token": csrf_of(page.text), "next": "/unknown"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/unknown"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    value = console.cookies[COOKIE]
    secret = tokens.write.split("_", 2)[2]  # itself may start with "_" (URL-safe base64)
    assert tokens.write not in value and secret not in value
    assert console.get("/").status_code == 200
    logout = post(console, "/", "/logout")
    assert logout.status_code == 303 and logout.headers["location"] == "/login"
    assert console.get("/", follow_redirects=False).status_code == 303
    assert "You are logged out" in console.get("/login", headers={"Accept-Language": "en"}).text


def test_cookie_is_secure_over_https_and_behind_a_trusted_proxy(
    boot: Bootstrap, tokens: Tokens
) -> None:
    def cookie_of(client: TestClient, headers: dict[str, str]) -> str:
        page = client.get("/login", headers=headers)
        answer = client.post(
            "/login",
            data={"token": tokens.read, "csrf_token": csrf_of(page.text)},
            headers=headers,
            follow_redirects=False,
        )
        return next(c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE))

    https = TestClient(create_app(boot, web_settings()), base_url="https://console.test")
    assert "Secure" in cookie_of(https, {})
    plain = TestClient(create_app(boot, web_settings()))
    assert "Secure" not in cookie_of(plain, {})
    # behind a proxy: X-Forwarded-Proto counts only when the settings trust it (checked on
    # the login form's cookie: a browser would not send a Secure cookie back over http)
    forwarded = {"X-Forwarded-Proto": "https"}
    untrusted = TestClient(create_app(boot, web_settings()))
    assert "Secure" not in untrusted.get("/login", headers=forwarded).headers["set-cookie"]
    trusted = TestClient(create_app(boot, web_settings(trust_forwarded_proto=True)))
    assert "Secure" in trusted.get("/login", headers=forwarded).headers["set-cookie"]


def test_a_bad_token_shows_the_form_again_with_401(console: TestClient, tokens: Tokens) -> None:
    for token in ("hunter2", "bct_000000000000_" + "A" * 43, tokens.revoked):
        page = console.get("/login")
        answer = console.post("/login", data={"token": token, "csrf_token": csrf_of(page.text)})
        assert answer.status_code == 401
        assert 'data-testid="login-error"' in answer.text
        assert token not in answer.text
    assert COOKIE not in console.cookies


def test_a_forged_or_tampered_cookie_is_no_session(console: TestClient, tokens: Tokens) -> None:
    login(console, tokens.write)
    key_id, issued, nonce, signature = console.cookies[COOKIE].split(".")
    console.cookies.set(COOKIE, f"{key_id}.{int(issued) + 1}.{nonce}.{signature}")
    assert console.get("/", follow_redirects=False).status_code == 303
    console.cookies.set(COOKIE, f"{key_id}.{issued}.{nonce}.{'A' * len(signature)}")
    assert console.get("/", follow_redirects=False).status_code == 303


def test_revoking_the_token_ends_its_session(
    console: TestClient, tokens: Tokens, boot: Bootstrap
) -> None:
    login(console, tokens.write)
    assert console.get("/unknown").status_code == 200
    TokenStore(boot.engine).revoke("writer")
    gone = console.get("/unknown", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
    partial = console.get("/partials/overview", headers={"HX-Request": "true"})
    assert partial.headers["HX-Redirect"].startswith("/login")


# ------------------------------------------------------------------ CSRF, auth matrix
def test_posts_need_the_sessions_csrf_token(
    console: TestClient, tokens: Tokens, boot: Bootstrap, campaign: list[int]
) -> None:
    login(console, tokens.write)
    job = campaign[0]
    assert console.post(f"/jobs/{job}/cancel", follow_redirects=False).status_code == 403
    wrong = console.post(f"/jobs/{job}/cancel", data={"csrf_token": "x" * 43})
    assert wrong.status_code == 403
    # a token of another session does not do either
    other = TestClient(console.app)
    login(other, tokens.write)
    stolen = csrf_of(other.get("/").text)
    assert console.post(f"/jobs/{job}/cancel", data={"csrf_token": stolen}).status_code == 403
    assert status_of(boot, job) == "scheduled"
    done = post(console, f"/jobs/{job}", f"/jobs/{job}/cancel")
    assert done.status_code == 303 and done.headers["location"] == f"/jobs/{job}"
    assert status_of(boot, job) == "cancelled"
    assert 'data-testid="flash"' in console.get(f"/jobs/{job}").text
    # the login form too
    assert console.post("/login", data={"token": tokens.write}).status_code == 403


PAGES = ["/", "/partials/overview", "/unknown", "/schedule", "/import"]


def test_anonymous_is_sent_to_login_and_cannot_post(
    console: TestClient, campaign: list[int], boot: Bootstrap
) -> None:
    for page in [*PAGES, "/campaigns/双十二", f"/jobs/{campaign[0]}"]:
        answer = console.get(page, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")
    for action in [f"/jobs/{campaign[0]}/cancel", "/campaigns/x/cancel", "/unknown/resolve"]:
        assert console.post(action, data={"csrf_token": "x"}).status_code == 403
    assert status_of(boot, campaign[0]) == "scheduled"
    assert console.get("/login?next=//evil.example").status_code == 200
    assert 'value="/"' in console.get("/login?next=//evil.example").text


ACTION_HOOKS = [
    "cancel-campaign",
    "retry-failed",
    "cancel-job",
    "retry-job",
    "resolve-sent",
    "resolve-resend",
    "bulk-resolve-sent",
    "bulk-resolve-resend",
    "confirm",
]


def test_read_only_sees_no_buttons_and_gets_403(
    console: TestClient, tokens: Tokens, boot: Bootstrap, campaign: list[int]
) -> None:
    set_status(boot, campaign[1], JobStatus.UNKNOWN, last_error="call timed out")
    login(console, tokens.read)
    for page in [
        "/campaigns/双十二",
        f"/jobs/{campaign[0]}",
        f"/jobs/{campaign[1]}",
        "/unknown",
        "/campaigns/双十二/cancel",
    ]:
        text = console.get(page).text
        for hook in ACTION_HOOKS:
            assert f'data-testid="{hook}"' not in text, (page, hook)
    assert 'data-testid="logout"' in text
    for action in [
        f"/jobs/{campaign[0]}/cancel",
        "/campaigns/双十二/cancel",
        "/unknown/resolve",
        "/schedule",
    ]:
        answer = post(console, "/", action, decision="sent", job_id=str(campaign[1]))
        assert answer.status_code == 403, action
    assert status_of(boot, campaign[0]) == "scheduled"
    assert status_of(boot, campaign[1]) == "unknown"
    assert post(console, "/", "/logout").status_code == 303  # logging out is no action


# ------------------------------------------------------------------ languages, escaping
def test_languages_from_accept_language_and_the_switch(
    console: TestClient, tokens: Tokens, campaign: list[int]
) -> None:
    login(console, tokens.write)
    zh = console.get("/campaigns/双十二", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert '<html lang="zh-CN">' in zh.text and "取消活动" in zh.text and "待发送" in zh.text
    en = console.get("/campaigns/双十二", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert '<html lang="en">' in en.text and "Cancel campaign" in en.text
    assert "取消活动" not in en.text and "scheduled" in en.text
    switched = console.get("/campaigns/双十二?lang=en", headers={"Accept-Language": "zh-CN"})
    assert "Cancel campaign" in switched.text and console.cookies["lang"] == "en"
    kept = console.get("/unknown", headers={"Accept-Language": "zh-CN"})
    assert '<html lang="en">' in kept.text
    console.get("/?lang=zh")
    assert "概览" in console.get("/", headers={"Accept-Language": "en"}).text


def test_stored_text_is_escaped_everywhere(
    console: TestClient, tokens: Tokens, boot: Bootstrap
) -> None:
    hostile = {**BODY, "name": HOSTILE, "text": HOSTILE}
    job = schedule_broadcast(
        hostile, campaign=HOSTILE, dedupe_key=HOSTILE, corp_id="c<b>", store=boot.store
    ).job_ids[0]
    set_status(boot, job, JobStatus.UNKNOWN, last_error=HOSTILE)
    login(console, tokens.write)
    from urllib.parse import quote

    for page in ["/", f"/jobs/{job}", "/unknown", f"/campaigns/{quote(HOSTILE, safe='')}"]:
        text = console.get(page).text
        assert HOSTILE not in text, page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, page
        if page != "/":  # the corp, where the page names it
            assert "c<b>" not in text and "c&lt;b&gt;" in text, page


# ------------------------------------------------------------------ pages, actions
def test_every_page_renders(
    console: TestClient, tokens: Tokens, boot: Bootstrap, campaign: list[int]
) -> None:
    set_status(
        boot,
        campaign[2],
        JobStatus.SENT,
        delivery_status="completed",
        delivery_staff_confirmed=1,
        delivery_staff_total=2,
        delivery_groups_reached=3,
        delivery_groups_unreached=1,
    )
    login(console, tokens.read)
    overview = console.get("/")
    assert overview.status_code == 200
    bar = re.search(r'data-testid="campaign-双十二"[^>]*', overview.text)
    assert bar is not None and 'data-total="3"' in bar.group() and 'data-sent="1"' in bar.group()
    assert 'hx-get="/partials/overview"' in overview.text and "<svg" in overview.text
    reach = re.search(r'data-testid="reach-双十二"[^>]*', overview.text)
    assert reach is not None and 'data-confirmed="1" data-staff="2"' in reach.group()
    assert 'data-reached="3" data-unreached="1"' in reach.group()
    assert "/static/htmx.min.js" in overview.text and "cdn" not in overview.text.lower()
    assert "frame-ancestors 'none'" in overview.headers["content-security-policy"]
    assert "script-src 'self';" in overview.headers["content-security-policy"]
    assert "<script>" not in overview.text  # no inline script: the CSP allows none
    assert console.get("/static/htmx.min.js").status_code == 200
    for page in PAGES:
        assert console.get(page).status_code == 200, page
    page = console.get("/campaigns/双十二")
    assert page.text.count('data-testid="job-row"') == 3
    assert 'data-testid="campaign-progress"' in page.text
    filtered = console.get("/campaigns/双十二", params={"status": "sent"})
    assert filtered.text.count('data-testid="job-row"') == 1
    found = console.get("/campaigns/双十二", params={"q": "group-1"})
    assert found.text.count('data-testid="job-row"') == 1
    progress = console.get("/partials/campaigns/双十二/progress")
    assert 'data-scheduled="2"' in progress.text
    job = console.get(f"/jobs/{campaign[0]}")
    assert '<span class="badge s-scheduled" data-testid="job-status">scheduled</span>' in job.text
    with boot.engine.begin() as connection:
        connection.execute(
            insert(attempts).values(
                job_id=campaign[2],
                attempt_no=1,
                started_at=utcnow(),
                duration_ms=2003,
                outcome="ambiguous",
                errcode=None,
                error="no complete answer within the call's 2 s",
            )
        )
    sent = console.get(f"/jobs/{campaign[2]}", headers={"Accept-Language": "zh"}).text
    assert sent.count('data-testid="attempt"') == 1 and "结果不明" in sent and "2003" in sent
    for missing in ["/jobs/999999", "/jobs/abc", "/campaigns/no-such"]:
        answer = console.get(missing)
        assert answer.status_code == 404 and 'data-testid="not-found"' in answer.text


def test_cursor_paging(console: TestClient, tokens: Tokens, boot: Bootstrap) -> None:
    bodies = [{**BODY, "group_ext_id_list": [f"g{i}"]} for i in range(55)]
    for body in bodies:
        schedule_broadcast(body, campaign="big", store=boot.store)
    login(console, tokens.read)
    first = console.get("/campaigns/big").text
    assert first.count('data-testid="job-row"') == 50
    after = re.search(r'href="([^"]*)" data-testid="next-page"', first)
    assert after is not None
    second = console.get(after.group(1).replace("&amp;", "&")).text
    assert second.count('data-testid="job-row"') == 5
    assert 'data-testid="next-page"' not in second


def test_campaign_cancel_and_retry_failed_change_rows(
    console: TestClient, tokens: Tokens, boot: Bootstrap, campaign: list[int]
) -> None:
    set_status(boot, campaign[0], JobStatus.FAILED, last_error="rejected")
    login(console, tokens.write)
    confirm = console.get("/campaigns/双十二/retry-failed")
    assert 'data-count="1"' in confirm.text and 'data-testid="confirm"' in confirm.text
    done = post(console, "/campaigns/双十二/retry-failed", "/campaigns/双十二/retry-failed")
    assert done.status_code == 303
    assert status_of(boot, campaign[0]) == "scheduled"
    confirm = console.get("/campaigns/双十二/cancel", headers={"Accept-Language": "zh"})
    assert 'data-count="3"' in confirm.text and "取消活动" in confirm.text
    done = post(console, "/campaigns/双十二/cancel", "/campaigns/双十二/cancel")
    assert done.status_code == 303
    assert done.headers["location"] == "/campaigns/%E5%8F%8C%E5%8D%81%E4%BA%8C"
    assert {status_of(boot, job) for job in campaign} == {"cancelled"}
    flash = console.get(done.headers["location"], headers={"Accept-Language": "en"}).text
    assert "Cancelled 3 jobs" in flash


def test_job_resolve_retry_and_bulk_resolve(
    console: TestClient, tokens: Tokens, boot: Bootstrap, campaign: list[int]
) -> None:
    first, second, third = campaign
    for job in campaign:
        set_status(boot, job, JobStatus.UNKNOWN, last_error="no answer in 10 s")
    login(console, tokens.write)
    page = console.get(f"/jobs/{first}").text
    assert 'data-testid="resolve-sent"' in page and "no answer in 10 s" in page
    post(console, f"/jobs/{first}", f"/jobs/{first}/resolve", decision="sent")
    assert status_of(boot, first) == "sent"
    inbox = console.get("/unknown").text
    assert inbox.count('data-testid="job-row"') == 2
    token = csrf_of(inbox)
    answer = console.post(
        "/unknown/resolve",
        data={"csrf_token": token, "decision": "resend", "job_id": [str(second), str(third)]},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert status_of(boot, second) == status_of(boot, third) == "scheduled"
    set_status(boot, second, JobStatus.FAILED)
    post(console, f"/jobs/{second}", f"/jobs/{second}/retry")
    assert status_of(boot, second) == "scheduled"
    conflict = post(console, f"/jobs/{first}", f"/jobs/{first}/cancel")
    assert conflict.status_code == 303 and status_of(boot, first) == "sent"
    assert "already sent" in console.get(f"/jobs/{first}", headers={"Accept-Language": "en"}).text


def test_schedule_form_names_bad_fields_and_writes_good_jobs(
    console: TestClient, tokens: Tokens, boot: Bootstrap
) -> None:
    login(console, tokens.write)
    bad = post(
        console,
        "/schedule",
        "/schedule",
        name="双十二",
        text="",
        group_ids="",
        staff_ids="staff-1",
        send_at="tomorrow",
    )
    assert bad.status_code == 422
    for field in ("send_at", "group_ids"):
        assert f'data-testid="error-{field}"' in bad.text, field
    assert "请至少填写一个客户群 ID" in bad.text and "无法识别的时间" in bad.text
    assert 'value="tomorrow"' in bad.text  # what was typed stays, to be fixed
    good = post(
        console,
        "/schedule",
        "/schedule",
        name="双十二",
        text="全场五折",
        group_ids="group-1\ngroup-2",
        staff_ids="staff-1",
        send_at="2030-12-12T20:00",
        campaign="form",
    )
    assert good.status_code == 201 and 'data-testid="scheduled-job"' in good.text
    with boot.engine.begin() as connection:
        row = connection.execute(select(jobs).where(jobs.c.campaign == "form")).one()
    assert str(row.send_at).startswith("2030-12-12 12:00:00")  # 20:00 in Asia/Shanghai


def test_import_upload_gives_the_cli_summary(
    console: TestClient, tokens: Tokens, boot: Bootstrap
) -> None:
    import json

    login(console, tokens.write)
    lines = [
        json.dumps({"payload": BODY, "campaign": "imp", "dedupe_key": "i-1"}),
        json.dumps({"payload": {**BODY, "group_ext_id_list": []}, "campaign": "imp"}),
        json.dumps({"payload": BODY, "campaign": "imp", "dedupe_key": "i-1"}),
    ]
    token = csrf_of(console.get("/import").text)
    answer = console.post(
        "/import",
        data={"csrf_token": token},
        files={"file": ("名单.jsonl", "\n".join(lines).encode(), "application/x-ndjson")},
        headers={"Accept-Language": "en"},
    )
    assert answer.status_code == 200
    assert "3 lines: 1 jobs inserted, 1 skipped as duplicate, 1 rejected" in answer.text
    assert "line 2" in answer.text
    odd = console.post(
        "/import",
        data={"csrf_token": token},
        files={"file": ("list.txt", b"x", "text/plain")},
    )
    assert odd.status_code == 422 and 'data-testid="import-error"' in odd.text


def test_every_text_key_of_the_templates_is_in_the_catalog() -> None:
    from pathlib import Path

    from broadcaster.web.console.i18n import CATALOG

    folder = Path(__file__).parents[2] / "broadcaster" / "web" / "console" / "templates"
    used = set()
    for template in folder.glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_.]+)["']""", template.read_text()))
    assert used and used - set(CATALOG) == set()
    assert CATALOG["campaign.cancel"] == ("取消活动", "Cancel campaign")
    assert all(zh and en for zh, en in CATALOG.values())


def test_quota_gauge_and_block_banner_read_redis(
    console: TestClient, tokens: Tokens, boot: Bootstrap
) -> None:
    from broadcaster.vendor import CREATE_API

    boot.quota.pause("corp-default", CREATE_API, 30)
    login(console, tokens.read)
    page = console.get("/partials/overview", headers={"Accept-Language": "zh"}).text
    gauge = re.search(r'data-testid="quota-corp-default"[^>]*', page)
    assert gauge is not None and 'data-limit="600"' in gauge.group()
    assert 'data-cap="4"' in gauge.group()
    banner = re.search(r'data-testid="blocked-corp-default".*?data-until="(\d+)"', page, re.S)
    assert banner is not None and 25 <= int(banner.group(1)) <= 30
    assert "微伴已限流" in page


def test_the_overview_never_waits_for_the_first_count(
    boot: Bootstrap, tokens: Tokens, campaign: list[int]
) -> None:
    from tests.helpers import wait_until

    app = create_app(boot, web_settings(metrics_cache_s=60))
    with TestClient(app) as client:
        login(client, tokens.read)
        first = client.get("/")
        assert first.status_code == 200
        if 'data-testid="counting"' in first.text:  # the read had not finished yet
            assert 'data-testid="campaign-双十二"' not in first.text
        wait_until(
            lambda: 'data-testid="campaign-双十二"' in client.get("/partials/overview").text,
            timeout=30,
            every=0.2,
        )


def test_campaign_bars_put_work_left_first() -> None:
    from broadcaster.web.console.views import campaigns_from_figures
    from broadcaster.web.metrics import Figures

    figures = Figures(
        jobs=[
            ("c", "a-done", "sent", 5),
            ("c", "b-busy", "sent", 1),
            ("c", "b-busy", "scheduled", 2),
            ("c", "", "unknown", 1),
        ],
        delivery=[("c", "a-done", "completed", 4)],
    )
    bars = campaigns_from_figures(figures)
    assert [bar.name for bar in bars] == ["b-busy", "", "a-done"]
    assert bars[0].total == 3 and bars[2].by_delivery == {"completed": 4}


def test_the_overview_says_when_no_worker_or_too_few_are_alive(
    boot: Bootstrap, console: TestClient, tokens: Tokens
) -> None:
    """The workers' Redis beats (as a worker's Liveness writes them) against the quota of
    the one configured corp (4 in flight): none alive, too few, enough; the API says the
    same in `workers`."""
    from dramatiq.brokers.redis import RedisBroker

    from broadcaster.broker.liveness import Liveness
    from broadcaster.broker.messages import QUEUE_NAME

    login(console, tokens.read)
    page = console.get("/partials/overview").text
    assert 'data-testid="workers-none"' in page and "没有存活的工作进程" in page
    liveness = Liveness(RedisBroker(client=boot.redis, middleware=[]), QUEUE_NAME, timeout_s=30)
    try:
        liveness.describe(threads=2)
        liveness.beat()
        page = console.get("/partials/overview").text
        short = re.search(r'data-testid="workers-short"[^>]*>([^<]*)<', page)
        assert short is not None and "1 个进程共 2 个线程，低于配额所需的 4 个" in short.group(1)
        api = console.get("/api/v1/status", headers=tokens.header("read"))
        assert api.json()["workers"]["short"] is True
        liveness.describe(threads=8)
        liveness.beat()
        page = console.get("/partials/overview").text
        assert 'data-testid="workers-ok"' in page and 'data-testid="workers-short"' not in page
    finally:
        liveness.stop()
