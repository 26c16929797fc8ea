"""An operator's actions in the browser, checked where they land: in the database."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from playwright.sync_api import expect

from broadcaster.jobs.states import JobStatus
from tests.browser import seed

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser.conftest import Site


def test_cancel_a_campaign_from_its_page(admin: Page, site: Site) -> None:
    ids = seed.schedule(site.store, "双十二-cancel", 7)
    other = seed.schedule(site.store, "keep-going", 2)

    admin.goto("/campaigns/双十二-cancel")
    expect(admin.get_by_test_id("job-row")).to_have_count(7)
    admin.get_by_test_id("cancel-campaign").click()
    # The confirmation names what it will touch before anything is done.
    expect(admin.get_by_test_id("confirm")).to_be_visible()
    expect(admin.get_by_test_id("confirm-counts")).to_have_attribute("data-count", "7")
    assert {site.store.get(i).status for i in ids} == {JobStatus.SCHEDULED}

    admin.get_by_test_id("confirm").click()
    expect(admin.get_by_test_id("flash")).to_be_visible()
    expect(admin).to_have_url(re.compile(r"/campaigns/[^/?]+(\?.*)?$"))  # back on its page
    assert {site.store.get(i).status for i in ids} == {JobStatus.CANCELLED}
    assert {site.store.get(i).status for i in other} == {JobStatus.SCHEDULED}
    expect(admin.get_by_test_id("campaign-progress")).to_have_attribute("data-cancelled", "7")


def test_resolve_an_unknown_job_as_sent(admin: Page, site: Site) -> None:
    job_id = seed.unknown_job(site.store, "resolve-me")

    admin.goto("/unknown")
    expect(admin.locator(f"input[name=job_id][value='{job_id}']")).to_have_count(1)

    admin.goto(f"/jobs/{job_id}")
    expect(admin.get_by_test_id("job-status")).to_have_text("unknown")
    expect(admin.get_by_test_id("attempt")).to_have_count(1)
    # The reconcile evidence is shown beside the decision.
    expect(admin.get_by_test_id("evidence")).to_contain_text("the vendor may have created")

    admin.get_by_test_id("resolve-sent").click()
    expect(admin.get_by_test_id("flash")).to_be_visible()
    expect(admin.get_by_test_id("job-status")).to_have_text("sent")
    expect(admin.get_by_test_id("resolve-sent")).to_have_count(0)
    row = site.store.get(job_id)
    assert row.status == JobStatus.SENT
    assert row.last_error == "resolved as sent by an operator"

    admin.goto("/unknown")
    expect(admin.locator(f"input[name=job_id][value='{job_id}']")).to_have_count(0)


def test_the_schedule_form_shows_a_bad_field_beside_it(admin: Page, site: Site) -> None:
    admin.goto("/schedule")
    admin.locator("[name=name]").fill("周末特惠")
    admin.locator("[name=text]").fill("周末特惠，限时两小时")
    admin.locator("[name=staff_ids]").fill("staff-1")
    admin.locator("[name=group_ids]").fill("group-1\ngroup-2")
    admin.locator("[name=send_at]").fill("下周二")  # not a time it can read
    before = _job_count(site)
    _submit_refused(admin, "send_at")
    # What the operator typed is still there to correct, and nothing was scheduled.
    expect(admin.locator("[name=text]")).to_have_value("周末特惠，限时两小时")
    expect(admin.locator("[name=send_at]")).to_have_value("下周二")
    assert _job_count(site) == before

    admin.locator("[name=send_at]").fill("2030-12-12 20:00")
    admin.locator("[name=expires_at]").fill("2030-12-12 08:00")  # expires before it is sent
    _submit_refused(admin, "expires_at")
    assert _job_count(site) == before

    # Corrected, the same form schedules the job and links to it.
    admin.locator("[name=expires_at]").fill("2030-12-13 08:00")
    admin.get_by_test_id("schedule-submit").click()
    expect(admin.get_by_test_id("flash")).to_be_visible()
    admin.get_by_test_id("scheduled-job").first.click()
    expect(admin.get_by_test_id("job-status")).to_have_text("scheduled")
    assert _job_count(site) == before + 1


def _submit_refused(page: Page, field_name: str) -> None:
    """Submit; the answer is 422 and the one error sits in that field's own block."""
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_test_id("schedule-submit").click()
    assert answer.value.status == 422, answer.value.status
    field = page.locator(".field").filter(has=page.locator(f"[name={field_name}]"))
    error = field.get_by_test_id(f"error-{field_name}")
    expect(error).to_be_visible()
    expect(error).not_to_be_empty()
    expect(page.locator("[data-testid^='error-']")).to_have_count(1)


def _job_count(site: Site) -> int:
    from sqlalchemy import func, select

    from broadcaster.jobs.tables import jobs

    with site.store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(jobs)).scalar_one())
