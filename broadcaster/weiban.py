"""The Weiban OpenAPI client: the token, the create call, and what each outcome means.

One pooled `httpx.Client` per process with explicit timeouts. Every way a call can end is
turned here, once, into either success or one `VendorError` subclass (see errors.py); the
actor decides from the type alone.

The access token travels in the query string, so no URL is ever put in a message or a log
line: errors name the endpoint path only.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import redis
import structlog

from broadcaster.corps import CorpDirectory
from broadcaster.errors import (
    CredentialsRejected,
    OutcomeUnknown,
    TokenRejected,
    VendorBlocked,
    VendorBusy,
    VendorError,
    VendorRejected,
    VendorUnreachable,
)
from broadcaster.logs import register_secret

log = structlog.get_logger("broadcaster.weiban")

TOKEN_PATH = "/open-api/access_token/get"
CREATE_PATH = "/open-api/customer_group_msg/add"
CREATE_API = "customer_group_msg/add"
"""The quota key of the create endpoint: the vendor counts quota per API."""

ERR_TOKEN, ERR_BUSY, ERR_BLOCKED = 10001, 10052, 10053
TOKEN_EARLY_REFRESH_S = 300
"""Replace a token this long before the vendor says it expires."""


def classify_errcode(errcode: int, errmsg: str, what: str) -> VendorError | None:
    """None for success, else the error that says what to do next."""
    if errcode == 0:
        return None
    detail = f"{what}: errcode {errcode} {errmsg}".strip()
    kinds: dict[int, type[VendorError]] = {
        ERR_TOKEN: TokenRejected,
        ERR_BUSY: VendorBusy,
        ERR_BLOCKED: VendorBlocked,
    }
    return kinds.get(errcode, VendorRejected)(detail, errcode=errcode, errmsg=errmsg)


def classify_transport(exc: httpx.HTTPError, what: str) -> VendorError:
    """Did the request certainly not reach the vendor, or may it have been processed?"""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return VendorUnreachable(f"{what}: not sent, {type(exc).__name__}: {_reason(exc)}")
    return OutcomeUnknown(f"{what}: no answer, {type(exc).__name__}: {_reason(exc)}")


def _reason(exc: Exception) -> str:
    return str(exc).split("\n")[0][:200] or type(exc).__name__


def read_response(response: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON body of an answer, or the error its status implies."""
    if response.status_code >= 500:
        raise OutcomeUnknown(f"{what}: HTTP {response.status_code} from the vendor")
    if response.status_code != 200:
        raise VendorRejected(
            f"{what}: HTTP {response.status_code} from the vendor; check WEIBAN_BASE_URL"
        )
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OutcomeUnknown(f"{what}: unreadable answer (not JSON)") from None
    if not isinstance(data, dict) or not isinstance(data.get("errcode"), int):
        raise OutcomeUnknown(f"{what}: answer without an errcode")
    return data


class TokenCache:
    """Access tokens in Redis, shared by every process.

    A refresh is single-flight across processes: a Redis lock, then a re-check, so when
    many calls see 10001 at once the token API is called once, and a process holding a
    stale token never overwrites the fresh one another process just stored.
    """

    LOCK_TTL_MS = 15_000
    FAILURE_HOLD_S = 30

    def __init__(
        self,
        client: redis.Redis,
        fetch: Callable[[str], tuple[str, int]],
        fingerprint: Callable[[str], str] | None = None,
    ) -> None:
        self.client = client
        self.fetch = fetch
        self.fingerprint = fingerprint  # a refusal is remembered for that secret only
        self.refreshes = 0
        self._local: dict[str, tuple[str, float]] = {}

    @staticmethod
    def _key(corp_id: str, what: str = "token") -> str:
        return f"broadcaster:weiban:{{{corp_id}}}:{what}"

    LOCAL_TTL_S = 5.0
    """A process keeps the token this long without asking Redis again; a 10001 from the
    vendor replaces it at once, so a token invalidated early costs one extra call."""

    def get(self, corp_id: str) -> str:
        local = self._local.get(corp_id)
        if local and local[1] > time.monotonic():
            return local[0]
        cached = self.client.get(self._key(corp_id))
        token = cached.decode() if cached else self._refresh(corp_id, stale=None)
        self._local[corp_id] = (token, time.monotonic() + self.LOCAL_TTL_S)
        return token

    def replace(self, corp_id: str, rejected: str) -> str:
        """The vendor rejected `rejected` (10001): get a newer one, fetching only if no
        other process already did."""
        token = self._refresh(corp_id, stale=rejected)
        self._local[corp_id] = (token, time.monotonic() + self.LOCAL_TTL_S)
        return token

    def _refresh(self, corp_id: str, stale: str | None) -> str:
        lock_key = self._key(corp_id, "lock")
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + self.LOCK_TTL_MS / 1000
        while time.monotonic() < deadline:
            if self.client.set(lock_key, owner, nx=True, px=self.LOCK_TTL_MS):
                try:
                    return self._fetch_unless_fresh(corp_id, stale)
                finally:
                    self._unlock(lock_key, owner)
            time.sleep(0.05)
            fresh = self._fresh(corp_id, stale)
            if fresh:
                return fresh
        raise VendorUnreachable(f"token for corp {corp_id}: another process's refresh hung")

    def _fresh(self, corp_id: str, stale: str | None) -> str | None:
        cached = self.client.get(self._key(corp_id))
        token = cached.decode() if cached else None
        return token if token and token != stale else None

    def _fetch_unless_fresh(self, corp_id: str, stale: str | None) -> str:
        fresh = self._fresh(corp_id, stale)
        if fresh:
            return fresh
        failure_key = self._key(corp_id, "failure")
        if self.fingerprint is not None:  # a corrected secret is tried at once
            failure_key += ":" + self.fingerprint(corp_id)
        failure = self.client.get(failure_key)
        if failure:  # the token API refused us moments ago: do not hammer it
            raise CredentialsRejected(failure.decode())
        try:
            token, expires_in = self.fetch(corp_id)
        except CredentialsRejected as exc:
            self.client.set(failure_key, str(exc), ex=self.FAILURE_HOLD_S)
            raise
        ttl = max(expires_in - TOKEN_EARLY_REFRESH_S, min(expires_in, 60))
        self.client.set(self._key(corp_id), token, ex=max(1, int(ttl)))
        self.refreshes += 1
        log.info("token_refreshed", corp_id=corp_id, expires_in=expires_in)
        return token

    def _unlock(self, lock_key: str, owner: str) -> None:
        self.client.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) "
            "end return 0",
            1,
            lock_key,
            owner,
        )


class WeibanClient:
    def __init__(
        self,
        base_url: str,
        corps: CorpDirectory,
        redis_client: redis.Redis,
        *,
        timeout_s: float,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.corps = corps
        self.http = http or httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        self.tokens = TokenCache(redis_client, self._fetch_token, corps.secret_fingerprint)

    def close(self) -> None:
        self.http.close()

    def create_group_message(self, corp_id: str, body: str) -> None:
        """Create one mass-message task. Returns on errcode 0; raises a VendorError."""
        token = self._token(self.tokens.get, corp_id)
        try:
            self._post_create(token, body)
        except TokenRejected:
            log.info("token_rejected", corp_id=corp_id)
            fresh = self._token(lambda corp: self.tokens.replace(corp, token), corp_id)
            self._post_create(fresh, body)

    @staticmethod
    def _token(get: Callable[[str], str], corp_id: str) -> str:
        """A token from the shared cache; the cache (Redis) down means: not sent."""
        try:
            return get(corp_id)
        except redis.RedisError as exc:
            raise VendorUnreachable(f"token cache (Redis) unreachable, not sent: {exc}") from None

    def _post_create(self, token: str, body: str) -> None:
        what = f"POST {CREATE_PATH}"
        try:
            response = self.http.post(
                CREATE_PATH, params={"access_token": token}, content=body.encode()
            )
        except httpx.HTTPError as exc:
            raise classify_transport(exc, what) from None
        data = read_response(response, what)
        error = classify_errcode(data["errcode"], str(data.get("errmsg", "")), what)
        if error is not None:
            raise error

    def _fetch_token(self, corp_id: str) -> tuple[str, int]:
        corp = self.corps.get(corp_id)
        assert corp.secret is not None
        what = f"POST {TOKEN_PATH} for corp {corp_id}"
        try:
            response = self.http.post(
                TOKEN_PATH, json={"corp_id": corp_id, "secret": corp.secret.get_secret_value()}
            )
        except httpx.HTTPError as exc:
            error = classify_transport(exc, what)
            raise VendorUnreachable(str(error)) from None  # no token was issued to us
        try:
            data = read_response(response, what)
        except OutcomeUnknown as exc:  # asking for a token twice is harmless
            raise VendorUnreachable(str(exc)) from None
        if data["errcode"] != 0 or not data.get("access_token"):
            raise CredentialsRejected(
                f"{what}: errcode {data['errcode']} {data.get('errmsg', '')}; check the "
                "corp's secret (WEIBAN_SECRET or WEIBAN_CORPS_FILE)",
                errcode=data["errcode"],
                errmsg=str(data.get("errmsg", "")),
            )
        token = str(data["access_token"])
        register_secret(token)
        return token, int(data.get("expires_in") or 7200)
