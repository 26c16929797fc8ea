"""The matching table (broadcaster/reconcile/matching.py): one test per row, every
ambiguity, and the properties that keep a resend from ever creating a second message."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadcaster.reconcile.matching import (
    CallRecord,
    Match,
    MatchWindow,
    Verdict,
    match_calls,
)
from broadcaster.vendor.missions import Mission, SubMission
from tests.helpers import body

T0 = datetime(2026, 12, 1, 12, 0, 0, 250_000)
"""When the call began (naive UTC, with a fraction: the vendor's times are whole seconds)."""
WINDOW = MatchWindow(before_s=60.0, after_s=120.0)
TEXT = body()["text"]
NAME = body()["name"]


def call(
    job_id: int = 1, *, at: datetime = T0, mission_id: str | None = None, **change: Any
) -> CallRecord:
    """A job whose payload is the helpers' body with `change` applied."""
    return CallRecord(job_id, json.dumps(body(**change)), at, mission_id)


BASE = Mission(
    id="m1",
    name=NAME,
    created_at=datetime(2026, 12, 1, 12, 0, 7),
    send_at=datetime(2026, 12, 1, 12, 0, 7),
    send_type="realtime",
    creator="staff-1",
    text=TEXT,
    status="creating",
    sent_count=None,
    not_sent_count=None,
    sub_missions=(SubMission("staff-1", ("group-1", "group-2"), "waiting_confirm"),),
)
"""The mission `call()`'s body creates, as the list reports it."""


def mission(groups: tuple[str, ...] | str | None = "same", **change: Any) -> Mission:
    """BASE with `change`; `groups` (a tuple, or None for unknown) sets one sub-mission's."""
    if groups != "same":
        assert not isinstance(groups, str)
        change["sub_missions"] = (SubMission("staff-1", groups, "waiting_confirm"),)
    return replace(BASE, **change)


def one(calls: list[CallRecord], missions: list[Mission], *, complete: bool = True) -> Match:
    result = match_calls(calls, missions, window=WINDOW, complete=complete)
    return result[calls[0].job_id]


# --- one job, one mission -------------------------------------------------------------


def test_an_exact_match_is_found_with_its_mission() -> None:
    match = one([call(3)], [mission()])
    assert match.verdict is Verdict.FOUND
    assert match.mission == BASE
    assert "job 3" in match.reason and "mission m1" in match.reason
    assert "6.75 s after" in match.reason


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"creator": "staff-2"}, id="creator"),
        pytest.param({"name": "双十二预热 第二波"}, id="name"),
        pytest.param({"text": "全场五折，明晚八点开抢"}, id="text"),
        pytest.param({"groups": ("group-1",)}, id="fewer-groups"),
        pytest.param({"groups": ("group-1", "group-2", "group-3")}, id="more-groups"),
        pytest.param({"groups": ("group-1", "group-3")}, id="other-groups"),
        pytest.param({"created_at": T0 - timedelta(seconds=61)}, id="created-too-early"),
        pytest.param({"created_at": T0 + timedelta(seconds=121)}, id="created-too-late"),
    ],
)
def test_one_criterion_differing_alone_makes_the_job_absent(change: dict[str, Any]) -> None:
    match = one([call(3)], [mission(**change)])
    assert match.verdict is Verdict.ABSENT
    assert match.mission is None
    assert "job 3" in match.reason and "read to its end" in match.reason


@pytest.mark.parametrize(
    "created_at",
    [
        pytest.param(T0 - timedelta(seconds=60), id="before-edge"),
        pytest.param(T0 + timedelta(seconds=120), id="after-edge"),
    ],
)
def test_the_window_includes_its_edges(created_at: datetime) -> None:
    assert one([call()], [mission(created_at=created_at)]).verdict is Verdict.FOUND


@pytest.mark.parametrize(
    "created_at",
    [
        pytest.param(T0 - timedelta(seconds=60, microseconds=1), id="just-before"),
        pytest.param(T0 + timedelta(seconds=120, microseconds=1), id="just-after"),
    ],
)
def test_the_window_ends_at_its_edges(created_at: datetime) -> None:
    assert one([call()], [mission(created_at=created_at)]).verdict is Verdict.ABSENT


def test_the_window_is_the_one_passed() -> None:
    late = [mission(created_at=T0 + timedelta(seconds=200))]
    wide = match_calls([call()], late, window=MatchWindow(after_s=300), complete=True)
    assert wide[1].verdict is Verdict.FOUND
    assert one([call()], late).verdict is Verdict.ABSENT


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        pytest.param("全场五折\n今晚八点", "全场五折\r\n今晚八点", id="crlf"),
        pytest.param("全场五折\n今晚八点", "全场五折\r今晚八点", id="cr"),
        pytest.param("全场五折\r\n今晚八点", "全场五折\n今晚八点", id="crlf-ours"),
        pytest.param("全场五折", "  全场五折 \n", id="surrounding-space"),
        pytest.param(" 全场五折\r\n", "全场五折", id="surrounding-space-ours"),
    ],
)
def test_text_is_compared_after_line_endings_and_surrounding_space(ours: str, theirs: str) -> None:
    assert one([call(text=ours)], [mission(text=theirs)]).verdict is Verdict.FOUND


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        pytest.param("全场五折 今晚八点", "全场五折  今晚八点", id="inner-space"),
        pytest.param("全场五折\n今晚八点", "全场五折\n\n今晚八点", id="blank-line"),
        pytest.param("全场五折\t今晚八点", "全场五折 今晚八点", id="tab"),
        pytest.param("Sale", "sale", id="case"),
    ],
)
def test_any_other_text_difference_is_a_difference(ours: str, theirs: str) -> None:
    assert one([call(text=ours)], [mission(text=theirs)]).verdict is Verdict.ABSENT


def test_name_and_creator_ignore_surrounding_space_only() -> None:
    spaced = call(name=f" {NAME} ", create_staff_ext_id="staff-1 ")
    assert one([spaced], [mission(name=f"{NAME}\n", creator=" staff-1")]).verdict is Verdict.FOUND
    assert one([call()], [mission(name=NAME.replace("预热", "预 热"))]).verdict is Verdict.ABSENT


def test_groups_are_compared_as_a_set_across_sub_missions() -> None:
    split = mission(
        sub_missions=(
            SubMission("staff-2", ("group-2",), "sended"),
            SubMission("staff-1", ("group-1", "group-2"), "waiting_confirm"),
        )
    )
    assert one([call(group_ext_id_list=["group-2", "group-1"])], [split]).verdict is Verdict.FOUND


def test_attachments_are_not_compared() -> None:
    other = [{"msgtype": "image", "image": {"url": "https://example.com/a.png"}}]
    assert one([call(attachments=other)], [mission()]).verdict is Verdict.FOUND
    # so two jobs differing only in attachments both match the one mission
    result = match_calls(
        [call(1), call(2, attachments=other)], [mission()], window=WINDOW, complete=True
    )
    assert {m.verdict for m in result.values()} == {Verdict.AMBIGUOUS}


# --- unknown fields: MAYBE ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"creator": None}, "creator", id="creator"),
        pytest.param({"name": None}, "name", id="name"),
        pytest.param({"name": " "}, "name", id="blank-name"),
        pytest.param({"text": None}, "text", id="text"),
        pytest.param({"sub_missions": None}, "groups", id="no-sub-missions"),
        pytest.param({"sub_missions": ()}, "groups", id="empty-sub-missions"),
        pytest.param({"groups": None}, "groups", id="a-sub-missions-groups"),
        pytest.param({"created_at": None}, "time", id="time"),
    ],
)
def test_an_unknown_field_makes_the_match_ambiguous_naming_it(
    change: dict[str, Any], field: str
) -> None:
    match = one([call(4)], [mission(**change)], complete=True)
    assert match.verdict is Verdict.AMBIGUOUS
    assert match.mission is None
    assert match.reason.startswith("job 4: mission m1 may match")
    assert f"unknown: {field} (not reported or unreadable)" in match.reason


def test_every_unknown_field_is_named() -> None:
    match = one([call()], [mission(name=None, text=None, created_at=None)])
    assert "unknown: name (not reported or unreadable), text (not reported or unreadable), " in (
        match.reason
    )
    assert "time (not reported or unreadable)" in match.reason


def test_an_unknown_field_does_not_outweigh_a_difference() -> None:
    assert one([call()], [mission(name=None, text="其他")]).verdict is Verdict.ABSENT


def test_a_match_and_a_maybe_for_one_job_is_ambiguous() -> None:
    both = [mission(), mission(id="m2", text=None)]
    match = one([call(5)], both)
    assert match.verdict is Verdict.AMBIGUOUS
    assert (
        match.reason == "job 5: mission m2 may match (unknown: text (not reported or unreadable))"
    )


# --- several jobs, several missions ----------------------------------------------------


def test_two_identical_jobs_and_one_mission_are_both_ambiguous() -> None:
    result = match_calls([call(7), call(3)], [mission()], window=WINDOW, complete=True)
    assert result[3] == Match(Verdict.AMBIGUOUS, None, "job 3: mission m1 matches jobs 3 and 7")
    assert result[7] == Match(Verdict.AMBIGUOUS, None, "job 7: mission m1 matches jobs 3 and 7")


def test_one_job_and_two_missions_is_ambiguous_possibly_created_twice() -> None:
    match = one([call(2)], [mission(id="m2"), mission()])
    assert match == Match(
        Verdict.AMBIGUOUS, None, "job 2: missions m1 and m2 both match: possibly created twice"
    )


def test_two_identical_jobs_and_two_missions_are_ambiguous_not_paired() -> None:
    result = match_calls(
        [call(1), call(2)], [mission(), mission(id="m2")], window=WINDOW, complete=True
    )
    assert [m.verdict for m in result.values()] == [Verdict.AMBIGUOUS] * 2
    assert "possibly created twice" in result[1].reason
    assert "mission m1 matches jobs 1 and 2" in result[1].reason


def test_a_mission_two_jobs_may_match_is_ambiguous_for_both() -> None:
    other_groups = call(2, group_ext_id_list=["group-1"])
    result = match_calls(
        [call(1), other_groups], [mission(sub_missions=None)], window=WINDOW, complete=True
    )
    assert result[1].verdict is Verdict.AMBIGUOUS
    assert result[2].verdict is Verdict.AMBIGUOUS
    assert "and matches jobs 1 and 2" in result[1].reason


def test_jobs_with_different_missions_are_each_found() -> None:
    calls = [call(1), call(2, group_ext_id_list=["group-3"]), call(3, at=T0 + timedelta(hours=1))]
    missions = [
        mission(id="a"),
        mission(id="b", groups=("group-3",)),
        mission(id="c", created_at=T0 + timedelta(hours=1, seconds=2)),
    ]
    result = match_calls(calls, missions, window=WINDOW, complete=True)
    assert {job: m.mission.id for job, m in result.items() if m.mission} == {1: "a", 2: "b", 3: "c"}


def test_a_crowd_of_matches_still_reads_as_one_short_line() -> None:
    crowd = [mission(id=f"m{n:02}") for n in range(25)]
    match = one([call(1), *[call(job) for job in range(2, 30)]], crowd)
    assert match.verdict is Verdict.AMBIGUOUS
    assert "missions m00, m01, m02, m03, m04, m05, m06, m07, m08 and 16 more all match" in (
        match.reason
    )
    assert "more such problems" in match.reason and len(match.reason) < 1000


def test_a_mission_listed_twice_by_paging_is_one_mission() -> None:
    later = mission(status="completed", sent_count=2)
    match = one([call()], [mission(), later, mission()])
    assert match.verdict is Verdict.FOUND
    assert match.mission == later  # of the copies, the final one


def test_copies_of_a_mission_that_disagree_leave_that_field_unknown() -> None:
    match = one([call()], [mission(), mission(text="其他")])
    assert match.verdict is Verdict.AMBIGUOUS
    assert "unknown: text (reported two ways)" in match.reason


def test_missions_without_id_are_never_merged() -> None:
    nameless = mission(id=None)
    match = one([call(1)], [nameless, nameless])
    assert match.verdict is Verdict.AMBIGUOUS
    assert "created 2026-12-01 12:00:07 UTC" in match.reason
    assert "possibly created twice" in match.reason
    assert one([call(1)], [nameless]).mission == nameless


# --- a known mission id ------------------------------------------------------------------


def test_a_known_mission_id_in_the_read_is_found() -> None:
    match = one([call(8, mission_id="m1")], [mission(text="changed since")])
    assert match == Match(
        Verdict.FOUND, mission(text="changed since"), "job 8: mission m1 is in this read"
    )


def test_a_known_mission_id_not_in_the_read_is_undecided() -> None:
    match = one([call(8, mission_id="m9")], [mission()])
    assert match == Match(Verdict.UNDECIDED, None, "job 8: its mission m9 is not in this read")


def test_a_known_mission_is_taken_out_before_the_others_are_matched() -> None:
    calls = [call(1, mission_id="m1"), call(2)]
    alone = match_calls(calls, [mission()], window=WINDOW, complete=True)
    assert alone[1].verdict is Verdict.FOUND
    assert alone[2].verdict is Verdict.ABSENT
    with_twin = match_calls(calls, [mission(), mission(id="m2")], window=WINDOW, complete=True)
    assert with_twin[2].verdict is Verdict.FOUND and with_twin[2].mission == mission(id="m2")


def test_two_jobs_holding_one_mission_id_are_ambiguous() -> None:
    result = match_calls(
        [call(1, mission_id="m1"), call(2, mission_id="m1")],
        [mission()],
        window=WINDOW,
        complete=True,
    )
    assert result[1] == Match(Verdict.AMBIGUOUS, None, "job 1: mission m1 is held by jobs 1 and 2")


def test_a_known_mission_id_needs_no_readable_payload() -> None:
    known = CallRecord(1, "{not json", T0, "m1")
    assert match_calls([known], [mission()], window=WINDOW, complete=True)[1].verdict is (
        Verdict.FOUND
    )


# --- an unreadable payload, an incomplete read -------------------------------------------


@pytest.mark.parametrize(
    ("payload", "why"),
    [("{not json", "not valid JSON"), ('{"name": "x"}', "payload invalid"), ("[]", "object")],
)
def test_an_unreadable_payload_is_undecided_with_the_reason(payload: str, why: str) -> None:
    result = match_calls(
        [CallRecord(6, payload, T0, None), call(1)], [mission()], window=WINDOW, complete=True
    )
    assert result[6].verdict is Verdict.UNDECIDED
    assert result[6].reason.startswith("job 6: its payload is unreadable: ")
    assert why in result[6].reason and "\n" not in result[6].reason
    assert result[1].verdict is Verdict.FOUND  # it claims nothing


def test_an_incomplete_read_never_makes_a_job_absent() -> None:
    match = one([call(9)], [mission(name="其他")], complete=False)
    assert match == Match(
        Verdict.UNDECIDED,
        None,
        "job 9: no mission among the 1 read matches, but the list was not read to its end",
    )
    assert one([call()], [], complete=False).verdict is Verdict.UNDECIDED
    assert one([call()], [mission()], complete=False).verdict is Verdict.FOUND


def test_no_calls_no_verdicts_and_bad_input_is_refused() -> None:
    assert match_calls([], [mission()], window=WINDOW, complete=True) == {}
    with pytest.raises(ValueError, match="job 1 appears twice"):
        match_calls([call(1), call(1)], [], window=WINDOW, complete=True)
    with pytest.raises(ValueError, match="before_s"):
        MatchWindow(before_s=-1)
    with pytest.raises(ValueError, match="after_s"):
        MatchWindow(after_s=float("nan"))


# --- properties --------------------------------------------------------------------------

_OFFSETS = [0, 5, -60, 120, -1, -61, 121]
_CONTENTS = [
    ("a", "s1", "t", ("g1", "g2")),
    ("a", " s1", "t\r\n", ("g2", "g1", "g1")),  # the same message as the first
    ("a", "s1", "t u", ("g1", "g2")),
    ("a", "s1", "t", ("g1",)),
    ("b", "s2", "t", ("g1", "g2")),
]
"""(name, creator, text, groups): few, so that jobs and missions often coincide."""


_Content = tuple[str, str, str, tuple[str, ...]]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[CallRecord], list[Mission]]:
    """Calls, and missions most of which copy one call's content and time, with fields
    left unknown, times moved about the window's edges, ids repeated (paging) or absent."""
    job_ids = draw(st.lists(st.integers(1, 40), unique=True, max_size=6))
    records: list[CallRecord] = []
    contents: list[tuple[_Content, datetime]] = []
    for job_id in job_ids:
        name, creator, text, groups = content = draw(st.sampled_from(_CONTENTS[:2] + _CONTENTS))
        payload = json.dumps(
            body(name=name, create_staff_ext_id=creator, text=text, group_ext_id_list=groups)
        )
        if draw(st.integers(0, 9)) == 9:
            payload = "{unreadable"
        at = T0 + timedelta(seconds=draw(st.sampled_from([0, 30, 200])))
        known = draw(st.sampled_from([None, None, None, None, None, "m1", "m2", "m9"]))
        records.append(CallRecord(job_id, payload, at, known))
        contents.append((content, at))

    def maybe(value: Any) -> Any:
        return None if draw(st.integers(0, 9)) == 9 else value

    listed = []
    for _ in range(draw(st.integers(0, 6))):
        if contents and draw(st.integers(0, 2)):
            (name, creator, text, groups), at = draw(st.sampled_from(contents))
        else:
            (name, creator, text, groups), at = draw(st.sampled_from(_CONTENTS)), T0
        subs = draw(st.sampled_from(["one", "split", "one", "one", "empty", "unknown"]))
        sub_missions = {
            "one": (SubMission("s1", groups, None),),
            "split": (SubMission("s1", groups[:1], None), SubMission("s2", groups, None)),
            "empty": (),
            "unknown": (SubMission("s1", None, None),),
        }[subs]
        offset = draw(st.sampled_from([*_OFFSETS, None]))
        listed.append(
            replace(
                BASE,
                id=draw(st.sampled_from(["m1", "m2", "m3", "m4", None])),
                name=maybe(name),
                creator=maybe(creator),
                text=maybe(draw(st.sampled_from([text, f" {text}\r"]))),
                created_at=None if offset is None else at + timedelta(seconds=offset),
                status=draw(st.sampled_from(["creating", "completed"])),
                sub_missions=maybe(sub_missions),
            )
        )
    return records, listed


def _criteria_differ(record: CallRecord, found: Mission) -> list[str]:
    """Independently of the module: the criteria on which `found` is not `record`'s
    mission, counting unknown as not equal."""
    data = json.loads(record.payload)
    lines = str.maketrans({"\r": "\n"})

    def text(value: str) -> str:
        return value.replace("\r\n", "\n").translate(lines).strip()

    groups = found.groups
    problems = []
    if found.creator is None or found.creator.strip() != data["create_staff_ext_id"].strip():
        problems.append("creator")
    if found.name is None or found.name.strip() != data["name"].strip():
        problems.append("name")
    if found.text is None or text(found.text) != text(data["text"]):
        problems.append("text")
    if not groups or groups != set(data["group_ext_id_list"]):
        problems.append("groups")
    start = record.started_at
    if found.created_at is None or not (
        start - timedelta(seconds=60) <= found.created_at <= start + timedelta(seconds=120)
    ):
        problems.append("time")
    return problems


def _differs_certainly(record: CallRecord, other: Mission) -> bool:
    """Some criterion is known on the mission's side and not equal."""
    data = json.loads(record.payload)
    start = record.started_at
    return bool(
        (other.creator is not None and other.creator.strip() != data["create_staff_ext_id"].strip())
        or (other.name is not None and other.name.strip() != data["name"].strip())
        or (
            other.text is not None
            and other.text.replace("\r\n", "\n").replace("\r", "\n").strip()
            != data["text"].replace("\r\n", "\n").replace("\r", "\n").strip()
        )
        or (other.groups and other.groups != set(data["group_ext_id_list"]))
        or (
            other.created_at is not None
            and not (
                start - timedelta(seconds=60) <= other.created_at <= start + timedelta(seconds=120)
            )
        )
    )


@settings(max_examples=300, deadline=None)
@given(worlds(), st.randoms(use_true_random=False), st.booleans())
def test_the_result_does_not_depend_on_the_order_of_calls_or_missions(
    world: tuple[list[CallRecord], list[Mission]], shuffle: Any, complete: bool
) -> None:
    records, listed = world
    expected = match_calls(records, listed, window=WINDOW, complete=complete)
    records, listed = list(records), list(listed)
    shuffle.shuffle(records)
    shuffle.shuffle(listed)
    assert match_calls(records, listed, window=WINDOW, complete=complete) == expected
    assert set(expected) == {record.job_id for record in records}


@settings(max_examples=300, deadline=None)
@given(worlds(), st.booleans())
def test_what_is_found_is_the_jobs_and_nobody_elses(
    world: tuple[list[CallRecord], list[Mission]], complete: bool
) -> None:
    records, listed = world
    result = match_calls(records, listed, window=WINDOW, complete=complete)
    by_job = {record.job_id: record for record in records}
    found = [(job_id, m.mission) for job_id, m in result.items() if m.verdict is Verdict.FOUND]
    for job_id, mission_found in found:
        assert mission_found is not None and mission_found in listed
        record = by_job[job_id]
        if record.mission_id is not None:
            assert mission_found.id == record.mission_id
        else:
            assert _criteria_differ(record, mission_found) == []
    # never one mission for two jobs: not the same id, not the same entry
    missions_found = [m for _, m in found]
    for position, first in enumerate(missions_found):
        assert first not in missions_found[position + 1 :]
    ids = [m.id for m in missions_found if m is not None and m.id is not None]
    assert len(ids) == len(set(ids))
    for job_id, match in result.items():
        assert (match.mission is not None) == (match.verdict is Verdict.FOUND)
        assert match.reason.startswith(f"job {job_id}: ") and "\n" not in match.reason


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_absent_only_when_complete_and_when_no_mission_could_be_the_jobs(
    world: tuple[list[CallRecord], list[Mission]],
) -> None:
    records, listed = world
    done = match_calls(records, listed, window=WINDOW, complete=True)
    partial = match_calls(records, listed, window=WINDOW, complete=False)
    assert Verdict.ABSENT not in {m.verdict for m in partial.values()}
    claimed = {r.mission_id for r in records} & {m.id for m in listed if m.id is not None}
    for record in records:
        if done[record.job_id].verdict is Verdict.ABSENT:
            assert partial[record.job_id].verdict is Verdict.UNDECIDED
            assert all(m.id in claimed or _differs_certainly(record, m) for m in listed), (
                "ABSENT although a mission may be the job's"
            )
        else:
            assert partial[record.job_id] == done[record.job_id]
