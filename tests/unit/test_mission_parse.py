"""`parse_mission_page`: the vendor's list answer read field by field. Every field is
optional; an odd value is None, never a crash; only an answer without a list of missions
is unreadable."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadcaster.errors import VendorAnswerUnreadable, VendorError
from broadcaster.vendor import Mission, MissionPage, parse_mission_page
from broadcaster.vendor.missions import SubMission, china_text_to_utc, utc_to_unix


def mission(**overrides: Any) -> dict[str, Any]:
    """A mission in the sandbox's shape."""
    value: dict[str, Any] = {
        "id": "910001",
        "name": "双十二预热",
        "created_at": "2030-12-01 19:59:58",
        "send_at": "2030-12-01 20:00:00",
        "send_type": "realtime",
        "staff_ext_id": "staff-1",
        "msg_data": json.dumps(
            {"text": "全场五折，今晚八点开抢", "attachments": []}, ensure_ascii=False
        ),
        "status": "sended",
        "sent_count": 1,
        "not_sent_count": 1,
        "sub_mission_list": [
            {
                "staff_ext_id": "staff-1",
                "group_ext_id_list": ["group-1", "group-2"],
                "status": "waiting_confirm",
            }
        ],
    }
    value.update(overrides)
    return value


def one(**overrides: Any) -> Mission:
    page = parse_mission_page({"errcode": 0, "missions": [mission(**overrides)]})
    [parsed] = page.missions
    return parsed


def test_a_whole_mission_is_read() -> None:
    page = parse_mission_page(
        {"errcode": 0, "errmsg": "ok", "missions": [mission()], "total_count": 7}
    )
    assert page == MissionPage(
        missions=(
            Mission(
                id="910001",
                name="双十二预热",
                created_at=datetime(2030, 12, 1, 11, 59, 58),
                send_at=datetime(2030, 12, 1, 12, 0, 0),
                send_type="realtime",
                creator="staff-1",
                text="全场五折，今晚八点开抢",
                status="sended",
                sent_count=1,
                not_sent_count=1,
                sub_missions=(SubMission("staff-1", ("group-1", "group-2"), "waiting_confirm"),),
            ),
        ),
        total_count=7,
        raw_count=1,
        unreadable=0,
    )


def test_china_time_is_utc_eight_hours_earlier() -> None:
    assert china_text_to_utc("2030-12-01 20:00:00") == datetime(2030, 12, 1, 12, 0, 0)
    assert china_text_to_utc("2030-12-01 03:00:00") == datetime(2030, 11, 30, 19, 0, 0)
    assert utc_to_unix(datetime(1970, 1, 2)) == 86_400


@pytest.mark.parametrize("field", ["created_at", "send_at"])
@pytest.mark.parametrize(
    "value",
    [
        None,
        1_900_000_000,
        "2030-12-01",
        "2030-12-01T20:00:00",
        "2030-13-01 20:00:00",
        "2030-12-01 20:00:00+08:00",
        "0001-01-01 00:00:00",  # eight hours before it is no datetime
        "",
        ["2030-12-01 20:00:00"],
    ],
)
def test_odd_time_text_is_none(field: str, value: Any) -> None:
    assert getattr(one(**{field: value}), field) is None


def test_time_text_with_surrounding_spaces_is_read() -> None:
    assert one(send_at=" 2030-12-01 20:00:00 ").send_at == datetime(2030, 12, 1, 12)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("910001", "910001"),
        (910001, "910001"),
        (0, "0"),
        ("", None),
        ("  ", None),
        (None, None),
        (True, None),
        (910001.0, None),
        ({"id": 1}, None),
        (["910001"], None),
        pytest.param(10**5000, None, id="5001-digits"),  # more than Python turns into text
    ],
)
def test_ids_are_strings_or_ints_as_text(value: Any, expected: str | None) -> None:
    assert one(id=value).id == expected
    assert one(staff_ext_id=value).creator == expected


@pytest.mark.parametrize("field", ["name", "send_type", "status"])
@pytest.mark.parametrize("value", [None, 3, True, ["x"], {"x": 1}])
def test_text_fields_of_another_type_are_none(field: str, value: Any) -> None:
    assert getattr(one(**{field: value}), field) is None


def test_unknown_statuses_and_send_types_are_kept_as_given() -> None:
    parsed = one(status="paused_by_admin", send_type="later")
    assert (parsed.status, parsed.send_type, parsed.is_final) == ("paused_by_admin", "later", False)


def test_missing_fields_are_none() -> None:
    [parsed] = parse_mission_page({"missions": [{}]}).missions
    assert parsed == Mission(*([None] * 11))
    assert parsed.groups is None and not parsed.is_final


@pytest.mark.parametrize(
    ("msg_data", "expected"),
    [
        ('{"text": "hello", "attachments": []}', "hello"),
        ('{"text": {"content": "hello"}}', "hello"),
        ({"text": "hello"}, "hello"),
        ({"text": {"content": "hello"}}, "hello"),
        ('{"text": "  Hello\\r\\n "}', "  Hello\r\n "),  # normalising is matching's job
        ('{"text": ""}', ""),
        ("not json", None),
        ('"a string"', None),
        ("[1, 2]", None),
        ('{"attachments": []}', None),
        ('{"text": 5}', None),
        ('{"text": {"content": null}}', None),
        ('{"text": {"body": "hello"}}', None),
        ("[" * 100_000, None),  # too deep for the JSON reader
        (None, None),
        (17, None),
        (["hello"], None),
    ],
)
def test_the_text_comes_from_msg_data(msg_data: Any, expected: str | None) -> None:
    assert one(msg_data=msg_data).text == expected


@pytest.mark.parametrize("field", ["sent_count", "not_sent_count"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (12, 12), (-1, None), (True, None), (False, None), (1.0, None), ("3", None)],
)
def test_counts_are_non_negative_ints(field: str, value: Any, expected: int | None) -> None:
    assert getattr(one(**{field: value}), field) == expected


def test_sub_missions_and_the_union_of_their_groups() -> None:
    parsed = one(
        sub_mission_list=[
            {"staff_ext_id": "s1", "group_ext_id_list": ["g1", 2], "status": "sended"},
            {"staff_ext_id": 7, "group_ext_id_list": ["g3", "g1"], "status": "waiting_send"},
            {"staff_ext_id": "s3", "group_ext_id_list": []},
        ]
    )
    assert parsed.sub_missions == (
        SubMission("s1", ("g1", "2"), "sended"),
        SubMission("7", ("g3", "g1"), "waiting_send"),
        SubMission("s3", (), None),
    )
    assert parsed.groups == frozenset({"g1", "2", "g3"})


@pytest.mark.parametrize(
    "groups", [None, "g1", {"g1": 1}, ["g1", None], ["g1", 2.5], ["g1", ["g2"]], ["g1", ""]]
)
def test_a_group_list_read_in_part_is_unknown(groups: Any) -> None:
    parsed = one(
        sub_mission_list=[
            {"staff_ext_id": "s1", "group_ext_id_list": ["g0"]},
            {"staff_ext_id": "s2", "group_ext_id_list": groups},
        ]
    )
    assert parsed.sub_missions is not None
    assert parsed.sub_missions[1].group_ext_ids is None
    assert parsed.groups is None, "one unknown share makes the whole set unknown"


@pytest.mark.parametrize("value", [None, "[]", {"staff_ext_id": "s"}, 3])
def test_a_sub_mission_list_that_is_not_a_list_is_none(value: Any) -> None:
    parsed = one(sub_mission_list=value)
    assert parsed.sub_missions is None and parsed.groups is None


def test_a_sub_mission_that_is_not_an_object_is_an_unknown_share() -> None:
    parsed = one(sub_mission_list=[{"staff_ext_id": "s1", "group_ext_id_list": ["g1"]}, "s2", None])
    assert parsed.sub_missions == (
        SubMission("s1", ("g1",), None),
        SubMission(None, None, None),
        SubMission(None, None, None),
    )
    assert parsed.groups is None


def test_an_empty_sub_mission_list_targets_no_group() -> None:
    assert one(sub_mission_list=[]).groups == frozenset()


@pytest.mark.parametrize(
    ("status", "final"),
    [
        ("completed", True),
        ("failed", True),
        ("canceled", True),
        ("create_failed", True),
        ("waiting", False),
        ("creating", False),
        ("sended", False),
        ("COMPLETED", False),
        (None, False),
    ],
)
def test_is_final(status: str | None, final: bool) -> None:
    assert one(status=status).is_final is final


def test_entries_that_are_not_objects_are_counted_unreadable() -> None:
    page = parse_mission_page(
        {"missions": [mission(), None, "910002", 3, [mission()], mission(id=5)], "total_count": 6}
    )
    assert [m.id for m in page.missions] == ["910001", "5"]
    assert (page.raw_count, page.unreadable, page.total_count) == (6, 4, 6)


@pytest.mark.parametrize(
    ("total", "expected"), [(0, 0), (31, 31), (None, None), (-1, None), ("31", None), (True, None)]
)
def test_total_count_is_a_non_negative_int(total: Any, expected: int | None) -> None:
    assert parse_mission_page({"missions": [], "total_count": total}).total_count == expected


def test_an_empty_page() -> None:
    page = parse_mission_page({"errcode": 0, "missions": []})
    assert page == MissionPage(missions=(), total_count=None, raw_count=0, unreadable=0)


@pytest.mark.parametrize("missions", [None, {}, "[]", 0, {"910001": mission()}])
def test_an_answer_without_a_list_of_missions_is_unreadable(missions: Any) -> None:
    with pytest.raises(VendorAnswerUnreadable, match="missions"):
        parse_mission_page({"errcode": 0, "missions": missions})
    with pytest.raises(VendorAnswerUnreadable, match="missing"):
        parse_mission_page({"errcode": 0})


def test_unreadable_is_a_vendor_error() -> None:
    assert issubclass(VendorAnswerUnreadable, VendorError)


# ---------------------------------------------------------------- any JSON at all
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["2030-12-01 20:00:00", "0001-01-01 00:00:00", '{"text": "t"}', "910001"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
MISSION_FIELDS = [*mission().keys(), "attachments"]
SUB_FIELDS = ["staff_ext_id", "group_ext_id_list", "status"]


def shaped(fields: list[str], leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An object with any of the known fields holding any value (or a leaf instead)."""
    return st.dictionaries(st.sampled_from(fields), leaf, max_size=len(fields)) | leaf


sub_missions = st.lists(shaped(SUB_FIELDS, json_values), max_size=3) | json_values
missions = shaped(
    MISSION_FIELDS,
    json_values | sub_missions | json_values.map(lambda v: json.dumps({"text": v})),
)
answers = st.dictionaries(
    st.sampled_from(["errcode", "errmsg", "missions", "total_count"]),
    json_values | st.lists(missions, max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(answers)
def test_any_answer_is_a_page_or_unreadable(answer: dict[str, Any]) -> None:
    try:
        page = parse_mission_page(answer)
    except VendorAnswerUnreadable:
        assert not isinstance(answer.get("missions"), list)
        return
    assert isinstance(page, MissionPage)
    assert page.raw_count == len(page.missions) + page.unreadable
    for parsed in page.missions:
        _ = parsed.groups, parsed.is_final  # the properties never fail either
