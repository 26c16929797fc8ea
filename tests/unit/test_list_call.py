"""`WeibanClient.list_missions` in one piece over `httpx.MockTransport`: the request it
builds, the token it refreshes once, how each answer is classified, and that no token
leaves in an error or a log line. No Redis: the token cache is a stand-in that fetches
through the client's own token request. `tests/integration/test_list_call.py` runs the
same call over HTTP against the sandbox."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
import structlog

from broadcaster.corps import CorpDirectory
from broadcaster.errors import (
    OutcomeUnknown,
    TokenRejected,
    VendorAnswerUnreadable,
    VendorBlocked,
    VendorBusy,
    VendorError,
    VendorRejected,
    VendorThrottled,
    VendorUnreachable,
)
from broadcaster.vendor import (
    CREATE_PATH,
    RESULT_PATH,
    TOKEN_PATH,
    MissionPage,
    WeibanClient,
)
from broadcaster.vendor.constants import MAX_ANSWER_BYTES
from tests.conftest import make_settings

BASE = "https://weiban.test"
CORP = "corp-a"
SECRET = "list-secret-4242"
START = datetime(2030, 12, 1, 11, 0, 0)
END = START + timedelta(hours=2)
START_S = int(START.replace(tzinfo=UTC).timestamp())
END_S = START_S + 7200
TOKEN_1 = "tok-00000001"

Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]


class Vendor:
    """The token endpoint issues tok-00000001, tok-00000002, ...; the list endpoint answers from
    `script` in turn (the last one again when it runs out)."""

    def __init__(self, *script: Reply) -> None:
        self.script = list(script) or [ok()]
        self.requests: list[httpx.Request] = []
        self.tokens_issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_PATH:
            self.tokens_issued += 1
            token = f"tok-{self.tokens_issued:08d}"  # long enough to be masked when seen
            return httpx.Response(200, json={"errcode": 0, "access_token": token})
        self.requests.append(request)
        reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return reply(request) if callable(reply) else reply

    @property
    def lists(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == RESULT_PATH]


class Tokens:
    """The token cache's two calls, without Redis: one token until it is replaced."""

    def __init__(self, fetch: Callable[[str], tuple[str, int]]) -> None:
        self.fetch = fetch
        self.current: str | None = None

    def get(self, corp_id: str) -> str:
        if self.current is None:
            self.current = self.fetch(corp_id)[0]
        return self.current

    def replace(self, corp_id: str, rejected: str) -> str:
        assert rejected == self.current
        self.current = self.fetch(corp_id)[0]
        return self.current


def client_for(vendor: Vendor) -> WeibanClient:
    settings = make_settings(weiban_corp_id=CORP, weiban_secret=SECRET, weiban_base_url=BASE)
    transport = httpx.MockTransport(vendor)
    unused = redis.Redis(host="127.0.0.1", port=1)  # never reached: tokens are stood in
    client = WeibanClient(BASE, CorpDirectory(settings), unused, timeout_s=2, transport=transport)
    client.tokens = Tokens(client._fetch_token)  # type: ignore[assignment]
    return client


def ok(missions: list[Any] | None = None, total: Any = 0, **extra: Any) -> httpx.Response:
    body = {"errcode": 0, "errmsg": "ok", "missions": missions or [], "total_count": total}
    return httpx.Response(200, json={**body, **extra})


def errcode(code: int, errmsg: str = "出错了") -> httpx.Response:
    return httpx.Response(200, json={"errcode": code, "errmsg": errmsg})


MISSION = {
    "id": 910001,
    "name": "n",
    "created_at": "2030-12-01 20:00:00",
    "send_at": "2030-12-01 20:00:00",
    "send_type": "realtime",
    "staff_ext_id": "staff-1",
    "msg_data": '{"text": "t", "attachments": []}',
    "status": "sended",
    "sent_count": 1,
    "not_sent_count": 0,
    "sub_mission_list": [
        {"staff_ext_id": "staff-1", "group_ext_id_list": ["g1"], "status": "sended"}
    ],
}


# ---------------------------------------------------------------- the request
def test_the_request_is_a_get_with_the_window_in_unix_seconds() -> None:
    vendor = Vendor(ok([MISSION, "junk"], total=31))
    page = client_for(vendor).list_missions(CORP, START, END)
    [request] = vendor.lists
    assert request.method == "GET" and request.url.path == RESULT_PATH
    assert list(request.url.params.multi_items()) == [
        ("access_token", TOKEN_1),
        ("start_time", str(START_S)),
        ("end_time", str(END_S)),
        ("limit", "30"),
        ("offset", "0"),
    ]
    assert request.content == b""
    assert isinstance(page, MissionPage)
    assert (page.total_count, page.raw_count, page.unreadable) == (31, 2, 1)
    [mission] = page.missions
    assert (mission.id, mission.created_at) == ("910001", datetime(2030, 12, 1, 12, 0, 0))
    assert mission.groups == frozenset({"g1"})


def test_paging_and_a_staff_filter_are_passed_on() -> None:
    vendor = Vendor()
    client_for(vendor).list_missions(
        CORP, START, START + timedelta(days=3), limit=7, offset=60, staff_ext_id="staff-9"
    )
    params = dict(vendor.lists[0].url.params)
    assert params["end_time"] == str(START_S + 3 * 86_400)
    assert (params["limit"], params["offset"], params["staff_ext_id"]) == ("7", "60", "staff-9")


@pytest.mark.parametrize(
    ("start", "end", "kwargs", "complaint"),
    [
        (START, START, {}, "window"),
        (END, START, {}, "window"),
        (START, START + timedelta(milliseconds=500), {}, "window"),  # the same unix second
        (START, START + timedelta(days=3, seconds=1), {}, "window"),
        (START.replace(tzinfo=UTC), END.replace(tzinfo=UTC), {}, "naive"),
        (START, END, {"limit": 0}, "limit"),
        (START, END, {"limit": 31}, "limit"),
        (START, END, {"limit": True}, "limit"),
        (START, END, {"limit": 5.0}, "limit"),
        (START, END, {"offset": -1}, "offset"),
        (START, END, {"staff_ext_id": " "}, "staff_ext_id"),
    ],
)
def test_a_callers_mistake_is_a_value_error_and_sends_nothing(
    start: datetime, end: datetime, kwargs: dict[str, Any], complaint: str
) -> None:
    vendor = Vendor()
    with pytest.raises(ValueError, match=complaint):
        client_for(vendor).list_missions(CORP, start, end, **kwargs)
    assert vendor.requests == [] and vendor.tokens_issued == 0


# ---------------------------------------------------------------- tokens
def test_a_rejected_token_is_replaced_once_and_the_page_read_again() -> None:
    vendor = Vendor(errcode(10001, "access_token无效"), ok([MISSION], total=1))
    page = client_for(vendor).list_missions(CORP, START, END)
    assert [r.url.params["access_token"] for r in vendor.lists] == [TOKEN_1, "tok-00000002"]
    assert vendor.tokens_issued == 2 and page.total_count == 1


def test_a_second_rejection_is_not_retried_again() -> None:
    vendor = Vendor(errcode(10001))
    with pytest.raises(TokenRejected):
        client_for(vendor).list_missions(CORP, START, END)
    assert len(vendor.lists) == 2 and vendor.tokens_issued == 2


# ---------------------------------------------------------------- classification
@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (errcode(10052), VendorBusy),
        (errcode(10053), VendorBlocked),
        (errcode(20001, "调用此接口需购买基础席位"), VendorRejected),
        (errcode(40001), VendorRejected),
        (httpx.Response(429, headers={"Retry-After": "7"}), VendorThrottled),
        (httpx.Response(503), OutcomeUnknown),
        (httpx.Response(404), VendorUnreachable),
    ],
)
def test_answers_are_classified_as_for_create(reply: httpx.Response, kind: type) -> None:
    with pytest.raises(VendorError) as raised:
        client_for(Vendor(reply)).list_missions(CORP, START, END)
    assert type(raised.value) is kind
    assert RESULT_PATH in str(raised.value)
    if reply.status_code == 200:
        assert raised.value.errcode == json.loads(reply.content)["errcode"]


def test_a_refusal_carries_the_vendors_reason() -> None:
    with pytest.raises(VendorRejected) as refused:
        client_for(Vendor(errcode(20001, "调用此接口需购买基础席位"))).list_missions(
            CORP, START, END
        )
    assert refused.value.errmsg == "调用此接口需购买基础席位"


def raises(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def reply(_request: httpx.Request) -> httpx.Response:
        raise exc

    return reply


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("refused"), VendorUnreachable),
        (httpx.ReadTimeout("slow"), OutcomeUnknown),
    ],
)
def test_transport_errors_are_classified_as_for_create(exc: Exception, kind: type) -> None:
    with pytest.raises(kind):
        client_for(Vendor(raises(exc))).list_missions(CORP, START, END)


MALFORMED = {
    "not JSON": httpx.Response(200, content=b"<html>busy</html>"),
    "no errcode": httpx.Response(200, json={"missions": []}),
    "not an object": httpx.Response(200, json=[1, 2]),
    "no missions": httpx.Response(200, json={"errcode": 0, "errmsg": "ok"}),
    "missions not a list": httpx.Response(200, json={"errcode": 0, "missions": {"a": 1}}),
    "too large": httpx.Response(200, content=b"{" + b" " * MAX_ANSWER_BYTES + b"}"),
}


@pytest.mark.parametrize("reply", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_answer_is_unreadable_and_logged_with_the_corp(reply: httpx.Response) -> None:
    with structlog.testing.capture_logs() as logs, pytest.raises(VendorAnswerUnreadable) as bad:
        client_for(Vendor(reply)).list_missions(CORP, START, END)
    assert str(bad.value).startswith(f"GET {RESULT_PATH}: ")
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["corp_id"] == CORP and warning["reason"] == str(bad.value)
    assert TOKEN_1 not in repr(logs) and "access_token" not in repr(logs)
    assert "weiban.test" not in repr(logs) + str(bad.value), "never the URL"


def test_no_token_or_secret_in_an_error_even_when_the_vendor_echoes_them() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        token = request.url.params["access_token"]
        return errcode(20001, f"bad request {request.url} token {token} secret {SECRET}")

    with structlog.testing.capture_logs() as logs, pytest.raises(VendorRejected) as refused:
        client_for(Vendor(echo)).list_missions(CORP, START, END)
    text = str(refused.value) + refused.value.errmsg + repr(logs)
    assert TOKEN_1 not in text and SECRET not in text


# ---------------------------------------------------------------- create, unchanged
def test_create_still_posts_its_body_with_the_token_in_the_query() -> None:
    vendor = Vendor(errcode(0, "ok"))
    client_for(vendor).create_group_message(CORP, '{"name": "n"}')
    [request] = vendor.requests
    assert (request.method, request.url.path, request.content) == (
        "POST",
        CREATE_PATH,
        b'{"name": "n"}',
    )
    assert dict(request.url.params) == {"access_token": TOKEN_1}
