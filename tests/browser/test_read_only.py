"""A read-only token sees everything and can change nothing: no action buttons, and a
POST made anyway (with its own session's CSRF token) gets 403 and moves no row."""

from __future__ import annotations

from typing import TYPE_CHECKING

from playwright.sync_api import expect

from broadcaster.jobs.states import JobStatus
from tests.browser import seed
from tests.browser.server import csrf_of

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser.conftest import Site

ACTIONS = [
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


def test_a_read_only_login_sees_no_action_and_a_forged_post_gets_403(
    viewer: Page, admin: Page, site: Site
) -> None:
    scheduled = seed.schedule(site.store, "read-only-view", 3)
    unknown = seed.unknown_job(site.store, "read-only-view")

    # What a write login sees on the same pages, so the absence below means something.
    admin.goto("/campaigns/read-only-view")
    expect(admin.get_by_test_id("cancel-campaign")).to_be_visible()
    admin.goto(f"/jobs/{unknown}")
    expect(admin.get_by_test_id("resolve-sent")).to_be_visible()

    for path in ["/", "/campaigns/read-only-view", f"/jobs/{unknown}", "/unknown"]:
        viewer.goto(path)
        expect(viewer.get_by_test_id("logout")).to_be_visible()  # the page did render
        for action in ACTIONS:
            expect(viewer.get_by_test_id(action), f"{action} on {path}").to_have_count(0)
    viewer.goto(f"/jobs/{unknown}")
    expect(viewer.get_by_test_id("job-status")).to_have_text("unknown")

    # A forged POST from the read-only session, with that session's own CSRF token
    # (from its logout form), so only the token's scope can refuse it.
    csrf = csrf_of(viewer.content())
    assert csrf, "the logout form carries a csrf_token"
    posts = {
        "/campaigns/read-only-view/cancel": {},
        f"/jobs/{unknown}/resolve": {"decision": "sent"},
        f"/jobs/{scheduled[0]}/cancel": {},
        "/unknown/resolve": {"job_id": str(unknown), "decision": "sent"},
    }
    for path, fields in posts.items():
        answer = viewer.request.post(path, form={**fields, "csrf_token": csrf}, max_redirects=0)
        assert answer.status == 403, f"{path}: {answer.status}"
    assert {site.store.get(i).status for i in scheduled} == {JobStatus.SCHEDULED}
    assert site.store.get(unknown).status == JobStatus.UNKNOWN

    # And without the CSRF token a write session is refused too.
    answer = admin.request.post("/campaigns/read-only-view/cancel", form={}, max_redirects=0)
    assert answer.status == 403, answer.status
    assert {site.store.get(i).status for i in scheduled} == {JobStatus.SCHEDULED}
