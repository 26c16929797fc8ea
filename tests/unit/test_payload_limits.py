"""Every value a producer hands over is one the table and the vendor can take (issue 9):
sizes within the vendor's documented limits, integers within their columns, times within
the calendar once in UTC, text without NUL or unpaired surrogates, a named corp, and a
dedupe key that cannot pass for a part of a split audience."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from broadcaster.errors import InvalidJob, InvalidPayload
from broadcaster.produce.api import JobRequest, job_request
from broadcaster.vendor.payload import parse_payload
from tests.helpers import body


def link(**fields: str) -> list[dict[str, Any]]:
    return [{"msgtype": "link", "link": {"title": "t", "url": "https://x.cn/p", **fields}}]


def test_text_up_to_the_vendors_4000_bytes_is_accepted_counted_in_utf8() -> None:
    assert parse_payload(body(text="a" * 4000)).text == "a" * 4000
    assert parse_payload(body(text="中" * 1333)).text  # 3999 bytes
    with pytest.raises(
        InvalidPayload, match="text: 4002 bytes in UTF-8, over WeCom's limit of 4000"
    ):
        parse_payload(body(text="中" * 1334))  # 1334 characters, 4002 bytes


def test_the_error_names_the_field_and_limit_without_echoing_the_text() -> None:
    with pytest.raises(InvalidPayload) as refused:
        parse_payload(body(text="x" * 50_000))
    assert "text: 50000 bytes in UTF-8, over WeCom's limit of 4000" in str(refused.value)
    assert len(str(refused.value)) < 200


@pytest.mark.parametrize(
    ("attachments", "reason"),
    [
        (
            link(title="t" * 129),
            "attachments.0.link.title: 129 bytes in UTF-8, over WeCom's limit of 128",
        ),
        (
            link(desc="d" * 513),
            "attachments.0.link.desc: 513 bytes in UTF-8, over WeCom's limit of 512",
        ),
        (
            link(url="https://x.cn/" + "p" * 2040),
            "attachments.0.link.url: 2053 bytes in UTF-8, over WeCom's limit of 2048",
        ),
        (
            [
                {
                    "msgtype": "miniprogram",
                    "miniprogram": {"appid": "wx1", "title": "标" * 22, "page": "p", "cover": "c"},
                }
            ],
            "attachments.0.miniprogram.title: 66 bytes in UTF-8, over WeCom's limit of 64",
        ),
    ],
)
def test_attachment_fields_over_wecoms_documented_limits_are_refused(
    attachments: list[dict[str, Any]], reason: str
) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        parse_payload(body(attachments=attachments))
    assert parse_payload(body(attachments=link(title="t" * 128, desc="d" * 512)))


def test_a_whole_body_over_one_mebibyte_is_refused() -> None:
    message = parse_payload(body(staff_ext_id_list=[f"staff-{i:07d}" for i in range(80_000)]))
    with pytest.raises(InvalidPayload, match="over the limit of 1048576 "):
        message.to_vendor_json()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"text": "a\x00b"}, r"text: contains a NUL character"),
        ({"name": "\ud800"}, r"name: contains an unpaired surrogate '\\ud800'"),
        ({"group_ext_id_list": ["g1", "g\udfff"]}, r"group_ext_id_list\.1: contains an unpaired"),
        ({"attachments": link(desc="\x00")}, r"attachments\.0\.link\.desc: contains a NUL"),
        ({"te\x00xt": "x"}, r"the key contains a NUL"),
    ],
)
def test_unstorable_text_anywhere_in_the_body_is_refused_by_its_path(
    change: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        parse_payload(body(**change))


def request(**fields: Any) -> JobRequest:
    return job_request({"payload": body(), **fields})


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"priority": 10**20}, "priority: Input should be less than or equal to 2147483647"),
        ({"priority": -(2**31) - 1}, "priority: Input should be greater than or equal to"),
        ({"max_attempts": 10**20}, "max_attempts"),
        ({"corp_id": ""}, "corp_id: must not be empty; leave it out"),
        ({"corp_id": "  \t"}, "corp_id: must not be empty"),
        ({"corp_id": "corp\x00"}, "corp_id: contains a NUL character"),
        ({"campaign": "c\x00"}, "campaign: contains a NUL character"),
        ({"campaign": "\ud83d"}, "campaign: contains an unpaired surrogate"),
        ({"dedupe_key": "k\x00"}, "dedupe_key: contains a NUL character"),
        ({"dedupe_key": "k" * 1001}, "dedupe_key: 1001 bytes in UTF-8, over the limit of 1000"),
        ({"campaign": "营" * 400}, "campaign: 1200 bytes in UTF-8, over the limit of 1000"),
        ({"dedupe_key": "camp#2"}, "dedupe_key: must not end in '#2'.*'camp-2'"),
        ({"dedupe_key": "order#0017"}, "must not end in '#0017'"),
        (
            {"send_at": "9999-12-31T23:59:59-05:00"},
            "send_at: .*out of range once converted to UTC",
        ),
        (
            {"expires_at": "0001-01-01T00:00:00+01:00"},
            "expires_at: .*out of range once converted to UTC",
        ),
    ],
)
def test_job_fields_the_table_cannot_hold_are_refused_naming_the_field(
    fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidJob, match=reason):
        request(**fields)


def test_job_fields_within_range_are_kept() -> None:
    accepted = request(
        priority=2**31 - 1,
        corp_id=" corp-a ",
        dedupe_key="a#b#c:g7",
        campaign="c" * 1000,
        send_at="9999-12-31T23:59:59+00:00",
    )
    assert accepted.priority == 2**31 - 1
    assert accepted.corp_id == "corp-a", "whitespace around a corp id is never meant"
    assert accepted.send_at == datetime(9999, 12, 31, 23, 59, 59)
    assert request(priority=-(2**31)).priority == -(2**31)
    assert request(corp_id=None).corp_id is None


def test_a_huge_label_is_not_echoed_back() -> None:
    with pytest.raises(InvalidJob) as refused:
        request(campaign="c" * 1_000_000)
    assert len(str(refused.value)) < 200


def test_an_expiry_not_after_the_send_time_is_refused() -> None:
    with pytest.raises(InvalidJob, match=r"expires_at \(2026-12-01 00:59:59 UTC\) is not after"):
        request(send_at="2026-12-01T01:00:00Z", expires_at="2026-12-01T00:59:59Z")
    with pytest.raises(InvalidJob, match="is not after now"):
        request(expires_at="2020-01-01T00:00:00Z")
    assert request(send_at="2026-12-01T01:00:00Z", expires_at="2026-12-01T01:00:01Z").expires_at
