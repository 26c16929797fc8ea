"""Logging in and out with a token from `broadcaster tokens create`, and the two languages."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from playwright.sync_api import expect

from tests.browser import seed

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from tests.browser.conftest import Site


def test_log_in_with_a_token_and_out_again(page: Page, site: Site) -> None:
    page.goto("/")  # no session yet: the console asks for a token
    expect(page.get_by_test_id("login-token")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")  # Accept-Language: zh-CN

    page.get_by_test_id("login-token").fill("bct_000000000000_" + "x" * 43)
    with page.expect_response(
        lambda r: r.url.endswith("/login") and r.request.method == "POST"
    ) as answer:
        page.get_by_test_id("login-submit").click()
    assert answer.value.status == 401
    expect(page.get_by_test_id("login-error")).to_be_visible()
    expect(page.get_by_test_id("logout")).to_have_count(0)

    page.get_by_test_id("login-token").fill(site.write_token)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("logout")).to_be_visible()
    expect(page).to_have_url(f"{site.url}/")  # back where it was sent from: the overview
    expect(page.get_by_test_id("rate-chart")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "broadcaster_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert site.write_token not in cookie["value"]  # the session, never the token itself

    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-token")).to_be_visible()
    page.goto("/")
    expect(page.get_by_test_id("login-token")).to_be_visible()  # the session is over


def test_the_language_follows_the_browser_and_the_switch(browser: Browser, site: Site) -> None:
    seed.schedule(site.store, "lang-check", 1)
    from tests.browser.server import log_in, new_page

    english = new_page(browser, site.url, locale="en-US")
    try:
        log_in(english, site.url, site.write_token)
        english.goto("/campaigns/lang-check")
        expect(english.locator("html")).to_have_attribute("lang", "en")
        expect(english.get_by_test_id("cancel-campaign")).to_have_text(
            re.compile(r"Cancel campaign")
        )

        english.get_by_test_id("lang-zh").click()
        expect(english.locator("html")).to_have_attribute("lang", "zh-CN")
        expect(english.get_by_test_id("cancel-campaign")).to_have_text(re.compile("取消活动"))
        english.goto("/campaigns/lang-check")  # the choice is kept (a cookie) over the header
        expect(english.locator("html")).to_have_attribute("lang", "zh-CN")

        english.get_by_test_id("lang-en").click()
        expect(english.locator("html")).to_have_attribute("lang", "en")
        expect(english.get_by_test_id("cancel-campaign")).to_have_text(
            re.compile(r"Cancel campaign")
        )
    finally:
        english.context.close()
