"""WeibanClient: the token request, the create call and the list of created missions
over one pooled httpx transport.

Every exchange ends by one deadline (`broadcaster/vendor/deadline.py`) and is sorted by
`answers.py` into success or one `VendorError`. The access token travels in the query
string, so no URL is ever put in a message or a log line: errors name the endpoint path
only, and any text the vendor sends back is masked before it enters an exception.
"""

from __future__ import annotations

import functools
import json
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import redis
import structlog

from broadcaster.corps import CorpDirectory
from broadcaster.errors import (
    CredentialsRejected,
    OutcomeUnknown,
    TokenRejected,
    VendorAnswerUnreadable,
    VendorError,
    VendorThrottled,
    VendorUnreachable,
)
from broadcaster.logs import register_secret, register_token
from broadcaster.vendor.answers import (
    Answer,
    classify_errcode,
    classify_transport,
    read_reply,
    reason_of,
    token_ttl_s,
)
from broadcaster.vendor.constants import (
    CREATE_PATH,
    ERR_BLOCKED,
    ERR_BUSY,
    MAX_ANSWER_BYTES,
    THROTTLE_DEFAULT_S,
    TOKEN_PATH,
)
from broadcaster.vendor.deadline import deadline_scope, deadline_transport
from broadcaster.vendor.missions import (
    MAX_PAGE_SIZE,
    MAX_WINDOW_S,
    RESULT_PATH,
    MissionPage,
    parse_mission_page,
    utc_to_unix,
)
from broadcaster.vendor.tokens import TokenCache, TokenSeal

log = structlog.get_logger("broadcaster.vendor")
T = TypeVar("T")


class WeibanClient:
    """The vendor's endpoints (token, create, list), each call bounded by one deadline.

    A create or list call, with the token fetch and the one repeat a 10001 allows, ends within
    `call_budget_s(timeout_s)`; each HTTP exchange within `timeout_s`. The in-flight slot's
    lease is longer than the budget (`slot_lease_s`), so a call never outlives its slot.
    """

    def __init__(
        self,
        base_url: str,
        corps: CorpDirectory,
        redis_client: redis.Redis,
        *,
        timeout_s: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.corps = corps
        self.timeout_s = timeout_s
        # The transport itself, not an `httpx.Client` around it: a client's per-request
        # work (URL merging, cookies, auth and redirect hooks, its log line carrying the
        # URL, hence the token) was a tenth of a worker's CPU a job; none of it is wanted.
        self.transport = transport or deadline_transport(
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
            proxy=environment_proxy(self.base_url),
        )
        self._timeouts = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)).as_dict()
        self.tokens = TokenCache(
            redis_client,
            self._fetch_token,
            corps.secret_fingerprint,
            TokenSeal(corps.secret_value),
        )
        for corp_id in corps.known():  # this process masks them wherever text leaves it
            register_secret(corps.secret_value(corp_id))

    def close(self) -> None:
        self.transport.close()

    def create_group_message(self, corp_id: str, body: str) -> None:
        """Create one mass-message task. Returns on errcode 0; raises a VendorError."""
        self._with_token(corp_id, lambda token: self._post_create(token, body))

    def list_missions(
        self,
        corp_id: str,
        start: datetime,
        end: datetime,
        *,
        limit: int = MAX_PAGE_SIZE,
        offset: int = 0,
        staff_ext_id: str | None = None,
    ) -> MissionPage:
        """One page of the missions the vendor created for the corp in [start, end]
        (naive UTC; the vendor filters on each mission's send time). Raises a VendorError
        as create does, and `VendorAnswerUnreadable` for an answer without a readable list.
        Takes no quota slot: the caller holds one of `RESULT_API` around it."""
        query = _list_query(start, end, limit, offset, staff_ext_id)
        try:
            return self._with_token(corp_id, lambda token: self._get_missions(token, query))
        except VendorAnswerUnreadable as exc:
            log.warning("mission_list_unreadable", corp_id=corp_id, reason=str(exc))
            raise

    def _with_token(self, corp_id: str, call: Callable[[str], T]) -> T:
        """`call(token)` within one call's budget; on 10001 the token is replaced once
        (single-flight across processes) and the call made again."""
        with deadline_scope(call_budget_s(self.timeout_s)):
            token = self._token(self.tokens.get, corp_id)
            try:
                return call(token)
            except TokenRejected:
                log.info("token_rejected", corp_id=corp_id)
                fresh = self._token(lambda corp: self.tokens.replace(corp, token), corp_id)
                return call(fresh)

    @staticmethod
    def _token(get: Callable[[str], str], corp_id: str) -> str:
        """A token from the shared cache; the cache (Redis) down means: not sent."""
        try:
            return get(corp_id)
        except redis.RedisError as exc:
            raise VendorUnreachable(
                f"token cache (Redis) unreachable, not sent: {reason_of(exc)}"
            ) from None

    def _exchange(
        self,
        method: str,
        what: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        unreadable: type[VendorError] = OutcomeUnknown,
    ) -> Answer:
        """One GET or POST, done within `timeout_s` (and the enclosing call's deadline).
        An answer too large to read raises `unreadable`."""
        request = httpx.Request(
            method,
            self._url(path, params),
            headers=_HEADERS,
            content=content,
            extensions={"timeout": self._timeouts},
        )
        with deadline_scope(self.timeout_s):
            try:
                response = self.transport.handle_request(request)
                try:
                    return Answer(response.status_code, response.headers, _read_capped(response))
                finally:
                    response.close()
            except _AnswerTooLarge:
                raise unreadable(
                    f"{what}: answer over {MAX_ANSWER_BYTES // 1024} KiB, not read"
                ) from None
            except httpx.HTTPError as exc:
                raise classify_transport(exc, what, budget_s=self.timeout_s) from None

    def _url(self, path: str, params: dict[str, str] | None) -> httpx.URL:
        if path == CREATE_PATH and params is not None:
            return _create_url(self.base_url, params["access_token"])
        return httpx.URL(self.base_url + path, params=params)

    def _post_create(self, token: str, body: str) -> None:
        what = f"POST {CREATE_PATH}"
        params = {"access_token": token}
        answer = self._exchange("POST", what, CREATE_PATH, params=params, content=body.encode())
        reply = read_reply(answer, what)
        error = classify_errcode(reply.errcode, reply.errmsg, what)
        if error is not None:
            raise error

    def _get_missions(self, token: str, query: dict[str, str]) -> MissionPage:
        what = f"GET {RESULT_PATH}"
        params = {"access_token": token, **query}
        unreadable = VendorAnswerUnreadable
        answer = self._exchange("GET", what, RESULT_PATH, params=params, unreadable=unreadable)
        reply = read_reply(answer, what, unreadable=unreadable)
        error = classify_errcode(reply.errcode, reply.errmsg, what)
        if error is not None:
            raise error
        try:
            return parse_mission_page(reply.data)
        except VendorAnswerUnreadable as exc:
            raise VendorAnswerUnreadable(f"{what}: {exc}") from None

    def _fetch_token(self, corp_id: str) -> tuple[str, int]:
        """A new token. Any failure here means the create call was not sent: only a
        refusal of the secret itself is `CredentialsRejected` (remembered a while)."""
        corp = self.corps.get(corp_id)
        assert corp.secret is not None
        what = f"POST {TOKEN_PATH} for corp {corp_id}"
        request = {"corp_id": corp_id, "secret": corp.secret.get_secret_value()}
        try:
            content = json.dumps(request).encode()
            reply = read_reply(self._exchange("POST", what, TOKEN_PATH, content=content), what)
        except (VendorThrottled, VendorUnreachable):
            raise
        except VendorError as exc:  # asking for a token twice is harmless
            raise VendorUnreachable(str(exc)) from None
        if reply.errcode in (ERR_BUSY, ERR_BLOCKED):
            wait_s = 1.0 if reply.errcode == ERR_BUSY else THROTTLE_DEFAULT_S * 12
            raise VendorThrottled(
                f"{what}: errcode {reply.errcode} {reply.errmsg}; the token API is busy, "
                f"not sent; again in {wait_s:g} s",
                retry_after_s=wait_s,
            )
        token = reply.data.get("access_token")
        if reply.errcode != 0:
            raise CredentialsRejected(
                f"{what}: errcode {reply.errcode} {reply.errmsg}; check the "
                "corp's secret (WEIBAN_SECRET or WEIBAN_CORPS_FILE)",
                errcode=reply.errcode,
                errmsg=reply.errmsg,
            )
        if not isinstance(token, str) or not token.strip() or len(token) > 2048:
            raise VendorUnreachable(f"{what}: errcode 0 but no usable access_token, not sent")
        register_token(token)
        return token, token_ttl_s(reply.data.get("expires_in"))


def _list_query(
    start: datetime, end: datetime, limit: int, offset: int, staff_ext_id: str | None
) -> dict[str, str]:
    """The list call's query (without the token); ValueError for a caller's mistake."""
    if start.tzinfo is not None or end.tzinfo is not None:
        raise ValueError("list_missions takes naive UTC datetimes")
    start_s, end_s = utc_to_unix(start), utc_to_unix(end)
    if not 0 < end_s - start_s <= MAX_WINDOW_S:
        raise ValueError(f"the window must be 1 to {MAX_WINDOW_S} s long, is {end_s - start_s}")
    if not _is_int(limit) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be 1 to {MAX_PAGE_SIZE}, is {limit!r}")
    if not _is_int(offset) or offset < 0:
        raise ValueError(f"offset must be 0 or more, is {offset!r}")
    query = {
        "start_time": str(start_s),
        "end_time": str(end_s),
        "limit": str(limit),
        "offset": str(offset),
    }
    if staff_ext_id is not None:
        if not staff_ext_id.strip():
            raise ValueError("staff_ext_id, when given, must not be blank")
        query["staff_ext_id"] = staff_ext_id
    return query


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@functools.lru_cache(maxsize=1024)
def _create_url(base_url: str, token: str) -> httpx.URL:
    """The create call's URL, the same for every job of a corp until its token changes:
    parsed once per token, not per job."""
    return httpx.URL(base_url + CREATE_PATH, params={"access_token": token})


_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "Accept": "application/json",
    "User-Agent": "broadcaster",  # some gateways refuse a request without one
}


class _AnswerTooLarge(Exception):
    pass


def _read_capped(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise _AnswerTooLarge
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _AnswerTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def call_budget_s(timeout_s: float) -> float:
    """How long one create (or list) call may take in all: two exchanges (a token fetch
    and the call, or a call, a refresh after 10001 and the repeat, each within `timeout_s`
    but all within this)."""
    return 2 * timeout_s


def slot_lease_s(timeout_s: float) -> float:
    """The in-flight slot's lease: the call's budget plus a margin for our own work
    around it, so a live call always ends before another worker may take its slot."""
    return call_budget_s(timeout_s) + 5


def environment_proxy(url: str) -> str | None:
    """The proxy HTTPS_PROXY / HTTP_PROXY / ALL_PROXY name for `url`, unless NO_PROXY
    excludes its host: what httpx would use on its own, but it reads the environment only
    when it builds the transport itself, and ours is built here (`deadline_transport`)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy
