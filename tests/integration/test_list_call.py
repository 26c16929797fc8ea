"""`WeibanClient.list_missions` over real HTTP against the sandbox, with the token cache
in real Redis: messages created through `create_group_message` come back from the list,
page by page, with the fields the reconciler matches on; a refusal and malformed answers
are classified as the unit tests (`tests/unit/test_list_call.py`) say."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import structlog

from broadcaster.corps import CorpDirectory
from broadcaster.errors import VendorAnswerUnreadable, VendorRejected
from broadcaster.vendor import MAX_WINDOW_S, Mission, WeibanClient
from tests.conftest import make_settings
from tests.helpers import body

CORP = "corp-a"


def client_for(url: str, redis_client: redis.Redis) -> WeibanClient:
    settings = make_settings(
        weiban_corp_id=CORP, weiban_secret="sandbox-secret", weiban_base_url=url
    )
    return WeibanClient(url, CorpDirectory(settings), redis_client, timeout_s=5)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def window() -> tuple[datetime, datetime]:
    now = utc_now()
    return now - timedelta(minutes=5), now + timedelta(minutes=5)


def create(client: WeibanClient, count: int) -> list[dict[str, Any]]:
    bodies = [
        body(
            name=f"campaign-{i}",
            text=f"第{i}条 message\n",
            staff_ext_id_list=["staff-1", "staff-2"],
            group_ext_id_list=[f"g{i}-a", f"g{i}-b", f"g{i}-c"],
        )
        for i in range(count)
    ]
    for value in bodies:
        client.create_group_message(CORP, json.dumps(value, ensure_ascii=False))
    return bodies


def read_all(client: WeibanClient, limit: int, **kwargs: Any) -> list[Mission]:
    start, end = window()
    found: list[Mission] = []
    offset = 0
    while True:
        page = client.list_missions(CORP, start, end, limit=limit, offset=offset, **kwargs)
        assert page.unreadable == 0
        found.extend(page.missions)
        offset += page.raw_count
        if page.raw_count < limit or offset >= (page.total_count or 0):
            return found


def test_created_messages_are_listed_page_by_page_with_their_fields(
    sandbox: Any, redis_client: redis.Redis
) -> None:
    client = client_for(sandbox.url, redis_client)
    before = utc_now().replace(microsecond=0)
    bodies = create(client, 5)
    after = utc_now()

    start, end = window()
    first = client.list_missions(CORP, start, end, limit=2)
    assert (first.total_count, first.raw_count) == (5, 2)
    missions = read_all(client, limit=2)
    assert sandbox.state.list_calls == 1 + 3, "pages of 2, 2 and 1"
    assert sandbox.state.token_issued == 1, "create and list share the cached token"

    assert [m.name for m in missions] == [b["name"] for b in bodies]
    assert len({m.id for m in missions}) == 5 and all(m.id for m in missions)
    for mission, sent in zip(missions, bodies, strict=True):
        assert mission.text == sent["text"], "kept as the vendor gave it"
        assert mission.creator == sent["create_staff_ext_id"]
        assert mission.groups == frozenset(sent["group_ext_id_list"])
        assert mission.created_at is not None and before <= mission.created_at <= after
        assert mission.send_type == "realtime"
        assert mission.status == "waiting" and not mission.is_final
        assert mission.sub_missions is not None
        assert [s.staff_ext_id for s in mission.sub_missions] == ["staff-1", "staff-2"]
        assert {s.status for s in mission.sub_missions} == {"waiting_confirm"}
        assert (mission.sent_count, mission.not_sent_count) == (0, 3)


def test_confirmed_missions_are_final_and_the_staff_filter_applies(
    sandbox: Any, redis_client: redis.Redis
) -> None:
    client = client_for(sandbox.url, redis_client)
    create(client, 2)
    client.create_group_message(CORP, json.dumps(body(create_staff_ext_id="staff-9")))
    sandbox.state.config.confirm_after_s = 0

    start, end = window()
    [mine] = client.list_missions(CORP, start, end, staff_ext_id="staff-9").missions
    assert mine.creator == "staff-9"
    assert (mine.status, mine.is_final, mine.sent_count, mine.not_sent_count) == (
        "completed",
        True,
        2,
        0,
    )
    full = client.list_missions(CORP, start, start + timedelta(seconds=MAX_WINDOW_S))
    assert full.total_count == 3, "a window of exactly three days is accepted"
    earlier = client.list_missions(CORP, start - timedelta(days=1), start)
    assert (earlier.missions, earlier.total_count) == ((), 0)


def test_a_refused_list_is_vendor_rejected(sandbox: Any, redis_client: redis.Redis) -> None:
    client = client_for(sandbox.url, redis_client)
    sandbox.state.faults.list_refuse_errcode = 40003
    with pytest.raises(VendorRejected) as refused:
        client.list_missions(CORP, *window())
    assert refused.value.errcode == 40003
    assert refused.value.errmsg == "调用此接口需购买基础席位"


def test_malformed_answers_are_unreadable_or_read_field_by_field(
    sandbox: Any, redis_client: redis.Redis
) -> None:
    client = client_for(sandbox.url, redis_client)
    create(client, 2)
    sandbox.state.faults.list_malformed = 3  # not JSON; no missions; odd fields
    with structlog.testing.capture_logs() as logs:
        for complaint in ("not JSON", "list of missions"):
            with pytest.raises(VendorAnswerUnreadable, match=complaint):
                client.list_missions(CORP, *window())
        odd = client.list_missions(CORP, *window())
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert [entry["corp_id"] for entry in warnings] == [CORP, CORP]
    assert "access_token" not in repr(logs) and sandbox.url not in repr(logs)

    assert odd.total_count == 2 and len(odd.missions) == 2
    for mission in odd.missions:
        assert (mission.created_at, mission.send_at, mission.text) == (None, None, None)
        assert mission.id and mission.groups, "the rest of the mission is still read"
    assert client.list_missions(CORP, *window()).missions[0].text is not None, "fault spent"
