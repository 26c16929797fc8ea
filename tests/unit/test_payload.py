"""The vendor body is validated before it is stored, with reasons a person can act on."""

from __future__ import annotations

from itertools import chain

import pytest

from broadcaster.errors import InvalidPayload
from broadcaster.vendor.payload import MAX_GROUPS_PER_TASK, parse_payload, split_audience
from tests.helpers import body


def test_a_valid_body_round_trips_to_the_vendor_json() -> None:
    message = parse_payload(body())
    assert message.group_ext_id_list == ["group-1", "group-2"]
    assert '"msgtype":"link"' in message.to_vendor_json()
    assert "null" not in message.to_vendor_json()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"name": ""}, "name"),
        ({"group_ext_id_list": []}, "group_ext_id_list"),
        ({"group_ext_id_list": "g1"}, "group_ext_id_list"),
        ({"group_ext_id_list": [f"g{i}" for i in range(MAX_GROUPS_PER_TASK + 1)]}, "at most 2000"),
        ({"staff_ext_id_list": [1, 2]}, "staff_ext_id_list"),
        ({"create_staff_ext_id": None}, "create_staff_ext_id"),
        ({"text": "", "attachments": []}, "non-empty text or at least one attachment"),
        ({"attachments": [{"msgtype": "gif"}]}, "msgtype"),
        ({"attachments": [{"msgtype": "image"}]}, "needs a 'image' object"),
        ({"attachments": [{"msgtype": "image", "image": {"url": "http://x.cn/a.png"}}]}, "https"),
        ({"group_ext_ids": ["g"]}, "group_ext_ids: Extra inputs are not permitted"),
    ],
)
def test_a_bad_body_is_refused_naming_the_field(change: dict, reason: str) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        parse_payload(body(**change))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"), ("null", "object")],
)
def test_text_that_is_not_a_json_object_is_refused(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        parse_payload(raw)


def test_every_attachment_kind_is_accepted_with_its_object() -> None:
    attachments = [
        {"msgtype": "image", "image": {"title": "t", "url": "https://x.cn/a.png"}},
        {"msgtype": "link", "link": {"title": "t", "url": "https://x.cn", "desc": "d"}},
        {
            "msgtype": "miniprogram",
            "miniprogram": {"appid": "wx1", "title": "t", "page": "p/index", "cover": "c"},
        },
        {"msgtype": "video", "video": {"title": "t", "url": "https://x.cn/v.mp4"}},
    ]
    assert len(parse_payload(body(attachments=attachments)).attachments) == 4


def test_a_large_audience_splits_into_parts_within_the_vendor_cap() -> None:
    groups = [f"g{i}" for i in range(4500)]
    parts = split_audience(body(group_ext_id_list=groups))
    assert [len(p["group_ext_id_list"]) for p in parts] == [2000, 2000, 500]
    assert list(chain.from_iterable(p["group_ext_id_list"] for p in parts)) == groups
    assert split_audience(body()) == [body()]
