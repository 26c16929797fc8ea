"""The sandbox vendor's list of created missions over real HTTP: paging, the documented
limits, its own quota bucket, the staff-confirmation model and the list's faults."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from broadcaster.vendor.missions import CHINA_OFFSET, MAX_WINDOW_S, RESULT_PATH
from broadcaster.vendor.sandbox import SandboxConfig, SandboxServer
from tests.helpers import body, wait_until

CREATE = "/open-api/customer_group_msg/add"


class Vendor:
    """A caller of the sandbox: one corp, one token, plain httpx."""

    def __init__(self, server: SandboxServer, corp: str = "corp-a") -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=10)
        answer = self.http.post(
            "/open-api/access_token/get", json={"corp_id": corp, "secret": "sandbox-secret"}
        ).json()
        self.token = answer["access_token"]

    def faults(self, **knobs: Any) -> None:
        assert self.http.post("/sandbox/faults", json=knobs).json()["errcode"] == 0

    def create(self, **overrides: Any) -> dict[str, Any]:
        answer = self.http.post(CREATE, params={"access_token": self.token}, json=body(**overrides))
        return dict(answer.json())

    def list_raw(self, **params: Any) -> httpx.Response:
        params.setdefault("access_token", self.token)
        return self.http.get(RESULT_PATH, params=params)

    def result(self, **params: Any) -> dict[str, Any]:
        return dict(self.list_raw(**params).json())

    def page(self, limit: int = 30, offset: int = 0, **params: Any) -> dict[str, Any]:
        """A page of the missions created in the last minute."""
        now = int(time.time())
        params = {"start_time": now - 60, "end_time": now + 5, **params}
        return self.result(limit=limit, offset=offset, **params)

    def missions(self) -> list[dict[str, Any]]:
        return list(self.http.get("/sandbox/missions").json())

    def stats(self) -> dict[str, Any]:
        return dict(self.http.get("/sandbox/stats").json())


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    started = SandboxServer(SandboxConfig(latency_ms=1)).start()
    yield started
    started.stop()


@pytest.fixture
def vendor(server: SandboxServer) -> Iterator[Vendor]:
    caller = Vendor(server)
    yield caller
    caller.http.close()


def china_to_unix(text: str) -> int:
    moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S") - CHINA_OFFSET
    return int((moment - datetime(1970, 1, 1)).total_seconds())


# ---------------------------------------------------------------- the answer and paging
def test_each_created_message_is_listed_as_a_mission_with_its_content(vendor: Vendor) -> None:
    before = int(time.time())
    assert vendor.create(
        name="双十一",
        staff_ext_id_list=["s-1", "s-2"],
        group_ext_id_list=["g1", "g2", "g3", "g4", "g5"],
        create_staff_ext_id="s-1",
    ) == {"errcode": 0, "errmsg": "ok"}
    after = int(time.time())

    answer = vendor.page()
    assert (answer["errcode"], answer["errmsg"], answer["total_count"]) == (0, "ok", 1)
    [mission] = answer["missions"]
    assert mission["name"] == "双十一"
    assert mission["staff_ext_id"] == "s-1"
    assert mission["send_type"] == "realtime"
    assert before <= china_to_unix(mission["created_at"]) <= after, "China time, UTC+8"
    assert mission["send_at"] == mission["created_at"]
    assert json.loads(mission["msg_data"]) == {
        "text": body()["text"],
        "attachments": body()["attachments"],
    }
    # the groups dealt round-robin to the staff, in order
    assert [(s["staff_ext_id"], s["group_ext_id_list"]) for s in mission["sub_mission_list"]] == [
        ("s-1", ["g1", "g3", "g5"]),
        ("s-2", ["g2", "g4"]),
    ]
    # nobody confirmed yet (confirm_after_s is 5 s by default)
    assert mission["status"] == "waiting"
    assert {s["status"] for s in mission["sub_mission_list"]} == {"waiting_confirm"}
    assert (mission["sent_count"], mission["not_sent_count"]) == (0, 5)

    [created] = vendor.http.get("/sandbox/created").json()
    assert created["mission_id"] == mission["id"]
    assert vendor.missions() == [mission]


def test_without_a_staff_list_the_creator_alone_sends_to_every_group(vendor: Vendor) -> None:
    vendor.create(staff_ext_id_list=[], create_staff_ext_id="boss", group_ext_id_list=["a", "b"])
    [mission] = vendor.page()["missions"]
    assert [(s["staff_ext_id"], s["group_ext_id_list"]) for s in mission["sub_mission_list"]] == [
        ("boss", ["a", "b"])
    ]


def test_pages_of_30_with_offset_cover_every_mission_once_oldest_first(vendor: Vendor) -> None:
    for n in range(65):
        assert vendor.create(name=f"m{n}")["errcode"] == 0
    pages = [vendor.page(limit=30, offset=offset) for offset in (0, 30, 60, 90)]
    assert [len(p["missions"]) for p in pages] == [30, 30, 5, 0]
    assert {p["total_count"] for p in pages} == {65}
    listed = [m for p in pages for m in p["missions"]]
    assert [m["name"] for m in listed] == [f"m{n}" for n in range(65)]
    assert len({m["id"] for m in listed}) == 65
    assert [m["id"] for m in listed] == [
        c["mission_id"] for c in vendor.server.state.created_list()
    ]
    assert vendor.page(limit=7, offset=10)["missions"] == listed[10:17]


def test_the_window_is_inclusive_on_created_time_and_staff_filters_on_the_creator(
    vendor: Vendor,
) -> None:
    vendor.create(name="by-1", create_staff_ext_id="staff-1")
    vendor.create(name="by-2", create_staff_ext_id="staff-2", staff_ext_id_list=["staff-2"])
    first, second = vendor.missions()
    created = china_to_unix(first["created_at"])
    same_second = vendor.result(start_time=created, end_time=created, limit=30, offset=0)
    assert first["id"] in {m["id"] for m in same_second["missions"]}
    before = vendor.result(start_time=created - 100, end_time=created - 1, limit=30, offset=0)
    assert (before["errcode"], before["total_count"], before["missions"]) == (0, 0, [])

    mine = vendor.page(staff_ext_id="staff-2")
    assert [m["name"] for m in mine["missions"]] == ["by-2"]
    assert mine["total_count"] == 1
    assert vendor.page(staff_ext_id="nobody")["total_count"] == 0
    assert second["name"] == "by-2"


def test_a_corp_lists_only_its_own_missions(server: SandboxServer, vendor: Vendor) -> None:
    other = Vendor(server, corp="corp-b")
    vendor.create(name="a's")
    other.create(name="b's")
    assert [m["name"] for m in vendor.page()["missions"]] == ["a's"]
    assert [m["name"] for m in other.page()["missions"]] == ["b's"]
    assert len(vendor.missions()) == 2


def test_reset_forgets_missions(vendor: Vendor) -> None:
    vendor.create()
    vendor.http.post("/sandbox/reset")
    assert vendor.missions() == []
    assert vendor.page()["total_count"] == 0


# ---------------------------------------------------------------- the documented limits
def test_the_window_limit_and_parameters_are_enforced(vendor: Vendor) -> None:
    vendor.create()
    now = int(time.time())
    ok = {"start_time": now - MAX_WINDOW_S + 5, "end_time": now + 5, "limit": 30, "offset": 0}
    assert vendor.result(**ok)["total_count"] == 1, "exactly 3 days is allowed"

    refused: list[dict[str, Any]] = [
        {**ok, "start_time": ok["start_time"] - 1},  # 3 days and a second
        {**ok, "end_time": ok["start_time"] - 1},  # reversed
        {**ok, "limit": 0},
        {**ok, "limit": 31},
        {**ok, "offset": -1},
        {**ok, "limit": "ten"},
        {**ok, "start_time": "1.5"},
        {k: v for k, v in ok.items() if k != "end_time"},
        {k: v for k, v in ok.items() if k != "limit"},
    ]
    for params in refused:
        answer = vendor.result(**params)
        assert answer["errcode"] == 40002, params
        assert answer["errmsg"].startswith("参数错误"), answer
        assert "missions" not in answer

    assert vendor.result(**ok, access_token="not-a-token")["errcode"] == 10001
    vendor.server.state.invalidate_tokens()
    assert vendor.result(**ok)["errcode"] == 10001


# ---------------------------------------------------------------- quota
def test_list_and_create_have_separate_frequency_buckets(vendor: Vendor) -> None:
    vendor.faults(per_minute=5)
    for _ in range(4):
        assert vendor.page()["errcode"] == 0
    for n in range(5):
        assert vendor.create(name=f"c{n}")["errcode"] == 0, "lists did not use create's quota"
    assert vendor.create(name="c5")["errcode"] == 10053
    assert vendor.create(name="c6")["errcode"] == 10053, "create is blocked"
    assert vendor.page()["errcode"] == 0, "create's block does not block the list"
    assert vendor.page()["errcode"] == 10053, "the list's own 6th call in the minute"
    assert vendor.page()["errcode"] == 10053

    stats = vendor.stats()
    assert stats["calls"] == 7 and stats["list_calls"] == 7
    assert stats["errors"] == {"10053": 2} and stats["list_errors"] == {"10053": 2}
    assert stats["corps"]["corp-a"]["blocked_for_s"] > 50
    assert stats["list_corps"]["corp-a"]["blocked_for_s"] > 50
    assert stats["created"] == 5


def test_list_and_create_have_separate_in_flight_limits(vendor: Vendor) -> None:
    vendor.faults(max_in_flight=1, list_slow_ms=600)
    other = Vendor(vendor.server)
    slow: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: slow.update(vendor.page()))
    thread.start()
    wait_until(lambda: other.stats()["list_corps"].get("corp-a", {}).get("in_flight") == 1)
    assert other.create()["errcode"] == 0, "a list in flight does not hold create's slot"
    assert other.page()["errcode"] == 10052, "the list's only slot is taken"
    thread.join()
    assert slow["errcode"] == 0
    other.http.close()


# ---------------------------------------------------------------- staff confirmation
def test_missions_wait_for_confirmation_then_complete(vendor: Vendor) -> None:
    vendor.faults(confirm_after_s=0.6)
    vendor.create(staff_ext_id_list=["s-1", "s-2"], group_ext_id_list=["g1", "g2", "g3"])
    started = time.time()
    [waiting] = vendor.page()["missions"]
    assert waiting["status"] == "waiting"

    def completed() -> dict[str, Any]:
        [mission] = vendor.page()["missions"]
        return mission if mission["status"] == "completed" else {}

    mission = wait_until(completed, timeout=5, every=0.05)
    assert time.time() - started >= 0.55, "not before confirm_after_s"
    assert {s["status"] for s in mission["sub_mission_list"]} == {"sended"}
    assert (mission["sent_count"], mission["not_sent_count"]) == (3, 0)


def settled(vendor: Vendor, count: int) -> list[dict[str, Any]]:
    """The missions once confirm_after_s has passed for all `count` of them."""
    state = vendor.server.state
    wait_until(
        lambda: (
            len(state.created) == count
            and time.time() - state.created[-1].created_at > state.config.confirm_after_s
        ),
        timeout=5,
    )
    return vendor.missions()


def test_a_share_of_staff_never_confirms_and_their_missions_wait_for_ever(
    vendor: Vendor,
) -> None:
    vendor.faults(confirm_after_s=0.3, never_confirm_share=0.25)
    for n in range(8):
        vendor.create(name=f"m{n}", staff_ext_id_list=["s"], group_ext_id_list=["g1", "g2"])
    missions = settled(vendor, 8)
    assert Counter(m["status"] for m in missions) == {"completed": 6, "waiting": 2}
    for mission in missions:
        sub_status = mission["sub_mission_list"][0]["status"]
        if mission["status"] == "waiting":
            assert sub_status == "waiting_confirm"
            assert (mission["sent_count"], mission["not_sent_count"]) == (0, 2)
        else:
            assert sub_status == "sended"
            assert (mission["sent_count"], mission["not_sent_count"]) == (2, 0)
    time.sleep(0.3)
    assert vendor.missions() == missions, "still waiting, nothing else changed"

    # one mission of four staff, half of whom never confirm: exactly two wait
    vendor.http.post("/sandbox/reset")
    vendor.faults(confirm_after_s=0.3, never_confirm_share=0.5)
    vendor.create(
        staff_ext_id_list=["a", "b", "c", "d"], group_ext_id_list=[f"g{n}" for n in range(8)]
    )
    [mission] = settled(vendor, 1)
    subs = Counter(s["status"] for s in mission["sub_mission_list"])
    assert subs == {"sended": 2, "waiting_confirm": 2}
    assert mission["status"] == "waiting"
    assert (mission["sent_count"], mission["not_sent_count"]) == (4, 4)


def test_a_share_of_missions_fails_after_the_confirmation_time(vendor: Vendor) -> None:
    vendor.faults(confirm_after_s=0.3, fail_share=0.25)
    for n in range(8):
        vendor.create(name=f"m{n}", staff_ext_id_list=["s1", "s2"], group_ext_id_list=["a", "b"])
    assert {m["status"] for m in vendor.missions()} == {"waiting"}, "fails only later"
    missions = settled(vendor, 8)
    assert Counter(m["status"] for m in missions) == {"completed": 6, "failed": 2}
    for mission in missions:
        if mission["status"] == "failed":
            assert (mission["sent_count"], mission["not_sent_count"]) == (0, 2)
            assert {s["status"] for s in mission["sub_mission_list"]} == {"waiting_send"}
        else:
            assert (mission["sent_count"], mission["not_sent_count"]) == (2, 0)
    # the list tells the same story as the test view
    assert vendor.page()["missions"] == missions


# ---------------------------------------------------------------- faults
def test_refused_for_want_of_a_seat_until_the_fault_is_cleared(vendor: Vendor) -> None:
    vendor.create()
    vendor.faults(list_refuse_errcode=20050)
    for _ in range(3):
        assert vendor.page() == {"errcode": 20050, "errmsg": "调用此接口需购买基础席位"}
    assert vendor.create()["errcode"] == 0, "creating is not affected"
    vendor.faults(list_refuse_errcode=0)
    assert vendor.page()["total_count"] == 2
    assert vendor.stats()["faults_served"]["list_refuse_errcode"] == 3


def test_a_slow_list_answers_late_and_create_stays_fast(vendor: Vendor) -> None:
    vendor.faults(list_slow_ms=400)
    started = time.monotonic()
    assert vendor.page()["errcode"] == 0
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert vendor.create()["errcode"] == 0
    assert time.monotonic() - started < 0.3


def test_malformed_answers_cycle_through_their_variants(vendor: Vendor) -> None:
    vendor.create()
    vendor.faults(list_malformed=3)
    now = int(time.time())
    params = {"start_time": now - 60, "end_time": now + 5, "limit": 30, "offset": 0}

    not_json = vendor.list_raw(**params)
    assert not_json.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(not_json.content)

    assert vendor.result(**params) == {"errcode": 0, "errmsg": "ok"}

    odd = vendor.result(**params)
    [mission] = odd["missions"]
    assert mission["created_at"] == mission["send_at"] == "26/11/2030 8pm"
    with pytest.raises(ValueError):
        china_to_unix(mission["created_at"])
    with pytest.raises(json.JSONDecodeError):
        json.loads(mission["msg_data"])

    normal = vendor.result(**params)
    assert normal["missions"] == vendor.missions()
    assert vendor.stats()["faults_served"]["list_malformed"] == 3


def test_a_late_create_is_not_answered_and_appears_after_late_s(vendor: Vendor) -> None:
    vendor.faults(create_late=1, late_s=0.8, hang_s=0.2, max_in_flight=1)
    arrived = time.time()
    with pytest.raises(httpx.RemoteProtocolError):
        vendor.create(name="late")
    assert time.time() - arrived < 0.7, "closed after hang_s"
    assert vendor.missions() == []
    assert vendor.create(name="other")["errcode"] == 10052, "the vendor is still on it"

    [mission] = wait_until(vendor.missions, timeout=5)
    created = vendor.server.state.created[0]
    assert created.body["name"] == "late" and created.mission_id == mission["id"]
    assert created.created_at - arrived >= 0.75
    assert created.created_at - created.received_at >= 0.8
    assert vendor.create(name="other")["errcode"] == 0, "its slot is free again"
    assert vendor.stats()["faults_served"]["create_late"] == 1


def test_a_create_later_than_the_vendor_keeps_a_request_is_never_created(
    vendor: Vendor,
) -> None:
    vendor.faults(create_late=1, late_s=0.8, hang_s=0.1, max_processing_s=0.4)
    arrived = time.time()
    with pytest.raises(httpx.RemoteProtocolError):
        vendor.create(name="abandoned")
    wait_until(lambda: vendor.stats()["faults_served"].get("create_late_abandoned") == 1)
    time.sleep(max(0.0, arrived + 0.8 + 0.2 - time.time()))  # past when it would have come
    assert vendor.missions() == []
    assert vendor.stats()["created"] == 0
    assert vendor.stats()["corps"]["corp-a"]["in_flight"] == 0, "its slot was given back"
