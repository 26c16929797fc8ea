"""The Weiban OpenAPI client: the token, the create call, and what each outcome means.

One pooled `httpx.Client` per process with explicit timeouts. Every way a call can end is
turned here, once, into either success or one `VendorError` subclass (see errors.py); the
actor decides from the type alone.

The access token travels in the query string, so no URL is ever put in a message or a log
line: errors name the endpoint path only.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import json
import math
import re
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis
import structlog
from cryptography.fernet import Fernet, InvalidToken

from broadcaster.corps import CorpDirectory
from broadcaster.deadline import deadline_passed, deadline_scope, deadline_transport, remaining_s
from broadcaster.errors import (
    CredentialsRejected,
    OutcomeUnknown,
    TokenRejected,
    VendorBlocked,
    VendorBusy,
    VendorError,
    VendorRejected,
    VendorThrottled,
    VendorUnreachable,
)
from broadcaster.logs import redact_text, register_secret, register_token

log = structlog.get_logger("broadcaster.weiban")

TOKEN_PATH = "/open-api/access_token/get"
CREATE_PATH = "/open-api/customer_group_msg/add"
CREATE_API = "customer_group_msg/add"
"""The quota key of the create endpoint: the vendor counts quota per API."""

ERR_TOKEN, ERR_BUSY, ERR_BLOCKED = 10001, 10052, 10053
TOKEN_EARLY_REFRESH_S = 300
"""Replace a token this long before the vendor says it expires."""
MAX_ANSWER_BYTES = 1 << 20
"""The vendor answers a few hundred bytes; a bigger answer is not read into memory."""
MAX_ERRMSG_CHARS = 500
THROTTLE_DEFAULT_S = 5.0
THROTTLE_MAX_S = 3600.0
"""A 429's Retry-After is honoured within these bounds (none given: the default)."""
TOKEN_TTL_BOUNDS_S = (60, 86_400)
ERRCODE_DIGITS = re.compile(r"-?[0-9]{1,11}")
DELTA_SECONDS = re.compile(r"[0-9]+")
"""ASCII digits only: `str.isdigit` also takes '²', which `int` then refuses."""


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


def classify_transport(exc: httpx.HTTPError, what: str, *, budget_s: float) -> VendorError:
    """Did the request certainly not reach the vendor, or may it have been processed?"""
    late = deadline_passed()
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        reason = f"no connection within the call's {budget_s:g} s" if late else _reason(exc)
        return VendorUnreachable(f"{what}: not sent, {type(exc).__name__}: {reason}")
    if late:
        return OutcomeUnknown(
            f"{what}: no complete answer within the call's {budget_s:g} s ({type(exc).__name__})"
        )
    return OutcomeUnknown(f"{what}: no answer, {type(exc).__name__}: {_reason(exc)}")


def _reason(exc: Exception) -> str:
    return redact_text(str(exc).split("\n")[0][:200]) or type(exc).__name__


@dataclass(frozen=True)
class Answer:
    """What came back over HTTP, read in full (and no more than MAX_ANSWER_BYTES)."""

    status: int
    headers: httpx.Headers
    body: bytes


@dataclass(frozen=True)
class Reply:
    """A readable vendor answer: its errcode, its errmsg (masked) and the whole object."""

    errcode: int
    errmsg: str
    data: dict[str, Any]


def read_reply(answer: Answer, what: str) -> Reply:
    """The vendor's JSON answer, or the error its HTTP status implies.

    3xx (redirects are not followed) and 4xx other than 429 come from something in front
    of the API that turned the request away: not processed, so sent again with backoff
    (an attempt used; `failed` when they run out). 429 is a rate limit: wait for its
    Retry-After, no attempt used. 5xx, or a 200 we cannot read, may follow a processed
    request: the outcome is unknown.
    """
    status = answer.status
    if status == 429:
        wait_s = retry_after_s(answer.headers)
        raise VendorThrottled(
            f"{what}: HTTP 429 from the vendor or its gateway, not processed; "
            f"sending again in {wait_s:g} s",
            retry_after_s=wait_s,
        )
    if status >= 500:
        raise OutcomeUnknown(f"{what}: HTTP {status} from the vendor")
    if status >= 300:
        kind = "a redirect, not followed" if status < 400 else "refused"
        raise VendorUnreachable(
            f"{what}: HTTP {status} from the vendor ({kind}), not processed; check WEIBAN_BASE_URL"
        )
    try:
        data = json.loads(answer.body.decode("utf-8"))
    except (ValueError, RecursionError):  # not JSON, not UTF-8, a 5000-digit number, nesting
        raise OutcomeUnknown(f"{what}: unreadable answer (not JSON)") from None
    errcode = _errcode(data.get("errcode") if isinstance(data, dict) else None)
    if errcode is None:
        raise OutcomeUnknown(f"{what}: answer without a readable errcode")
    errmsg = data.get("errmsg", "")
    errmsg = redact_text(errmsg if isinstance(errmsg, str) else json.dumps(errmsg))
    return Reply(errcode, errmsg[:MAX_ERRMSG_CHARS], data)


def _errcode(value: Any) -> int | None:
    """An integer errcode; digits in a string are taken as the number they spell (a
    gateway that re-encodes JSON may quote it). Anything else is unreadable."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and ERRCODE_DIGITS.fullmatch(value.strip()):
        return int(value)
    return None


def retry_after_s(headers: httpx.Headers) -> float:
    """Retry-After as seconds (delta or HTTP date), bounded; absent or odd: the default."""
    raw = headers.get("retry-after", "").strip()
    seconds: float | None = None
    if DELTA_SECONDS.fullmatch(raw):
        seconds = float(raw[:8])
    elif raw:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            when = email.utils.parsedate_to_datetime(raw)
            seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds is None:
        return THROTTLE_DEFAULT_S
    return min(THROTTLE_MAX_S, max(1.0, seconds))


def _token_ttl_s(value: Any) -> int:
    """The token's lifetime from `expires_in`, within sane bounds (odd: the default)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        low, high = TOKEN_TTL_BOUNDS_S
        return int(min(high, max(low, value)))
    return 7200


class TokenSeal:
    """Tokens are kept in Redis sealed (Fernet) with a key derived from the corp's secret:
    every process that may fetch a token can read one, and a Redis dump, `MONITOR` or a
    replica reveals none. A value that does not open (sealed under an older secret, or
    written by an older version) counts as no token."""

    def __init__(self, secret_of: Callable[[str], str | None]) -> None:
        self.secret_of = secret_of
        self._keys: dict[tuple[str, str], Fernet] = {}

    def _fernet(self, corp_id: str) -> Fernet | None:
        secret = self.secret_of(corp_id)
        if secret is None:
            return None
        key = (corp_id, secret)
        if key not in self._keys:
            material = hashlib.sha256(f"broadcaster token\0{corp_id}\0{secret}".encode())
            self._keys[key] = Fernet(base64.urlsafe_b64encode(material.digest()))
        return self._keys[key]

    def close(self, corp_id: str, token: str) -> bytes:
        fernet = self._fernet(corp_id)
        return fernet.encrypt(token.encode()) if fernet else token.encode()

    def open(self, corp_id: str, raw: bytes | None) -> str | None:
        if not raw:
            return None
        fernet = self._fernet(corp_id)
        if fernet is None:
            return raw.decode(errors="replace")
        try:
            return fernet.decrypt(raw).decode()
        except (InvalidToken, UnicodeDecodeError):
            return None


def _raw(value: Any) -> bytes | None:
    """A Redis string as bytes (redis-py's types also allow str and awaitables)."""
    if isinstance(value, str):
        return value.encode()
    return value if isinstance(value, bytes) else None


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
        seal: TokenSeal | None = None,
    ) -> None:
        self.client = client
        self.fetch = fetch
        self.fingerprint = fingerprint  # a refusal is remembered for that secret only
        self.seal = seal or TokenSeal(lambda _corp: None)
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
        token = self._cached(corp_id) or self._refresh(corp_id, stale=None)
        register_token(token)  # fetched by another process, maybe: mask it here too
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
        # Waiting for another process's refresh is bounded by the call's own deadline too:
        # the caller holds an in-flight slot whose lease must outlast the whole call.
        deadline = time.monotonic() + min(self.LOCK_TTL_MS / 1000, remaining_s())
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
        token = self._cached(corp_id)
        return token if token and token != stale else None

    def _cached(self, corp_id: str) -> str | None:
        return self.seal.open(corp_id, _raw(self.client.get(self._key(corp_id))))

    def _fetch_unless_fresh(self, corp_id: str, stale: str | None) -> str:
        fresh = self._fresh(corp_id, stale)
        if fresh:
            return fresh
        failure_key = self._key(corp_id, "failure")
        if self.fingerprint is not None:  # a corrected secret is tried at once
            failure_key += ":" + self.fingerprint(corp_id)
        failure = _raw(self.client.get(failure_key))
        if failure:  # the token API refused us moments ago: do not hammer it
            raise CredentialsRejected(failure.decode(errors="replace"))
        try:
            token, expires_in = self.fetch(corp_id)
        except CredentialsRejected as exc:
            self.client.set(failure_key, str(exc), ex=self.FAILURE_HOLD_S)
            raise
        ttl = max(expires_in - TOKEN_EARLY_REFRESH_S, min(expires_in, 60))
        self.client.set(self._key(corp_id), self.seal.close(corp_id, token), ex=max(1, int(ttl)))
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
    """The vendor's two endpoints, each call bounded by one overall deadline.

    A create call, with the token fetch and the one repeat a 10001 allows, ends within
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
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.corps = corps
        self.timeout_s = timeout_s
        self.http = http or httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
            transport=deadline_transport(
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
                proxy=environment_proxy(self.base_url),
            ),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        self.tokens = TokenCache(
            redis_client,
            self._fetch_token,
            corps.secret_fingerprint,
            TokenSeal(corps.secret_value),
        )
        for corp_id in corps.known():  # this process masks them wherever text leaves it
            register_secret(corps.secret_value(corp_id))

    def close(self) -> None:
        self.http.close()

    def create_group_message(self, corp_id: str, body: str) -> None:
        """Create one mass-message task. Returns on errcode 0; raises a VendorError."""
        with deadline_scope(call_budget_s(self.timeout_s)):
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
            raise VendorUnreachable(
                f"token cache (Redis) unreachable, not sent: {_reason(exc)}"
            ) from None

    def _exchange(self, what: str, path: str, content: bytes, **params: str) -> Answer:
        """One POST, done within `timeout_s` (and the enclosing call's deadline)."""
        with deadline_scope(self.timeout_s):
            try:
                with self.http.stream("POST", path, params=params, content=content) as response:
                    return Answer(response.status_code, response.headers, _read_capped(response))
            except _AnswerTooLarge:
                raise OutcomeUnknown(
                    f"{what}: answer over {MAX_ANSWER_BYTES // 1024} KiB, not read"
                ) from None
            except httpx.HTTPError as exc:
                raise classify_transport(exc, what, budget_s=self.timeout_s) from None

    def _post_create(self, token: str, body: str) -> None:
        what = f"POST {CREATE_PATH}"
        answer = self._exchange(what, CREATE_PATH, body.encode(), access_token=token)
        reply = read_reply(answer, what)
        error = classify_errcode(reply.errcode, reply.errmsg, what)
        if error is not None:
            raise error

    def _fetch_token(self, corp_id: str) -> tuple[str, int]:
        """A new token. Any failure here means the create call was not sent: only a
        refusal of the secret itself is `CredentialsRejected` (remembered a while)."""
        corp = self.corps.get(corp_id)
        assert corp.secret is not None
        what = f"POST {TOKEN_PATH} for corp {corp_id}"
        request = {"corp_id": corp_id, "secret": corp.secret.get_secret_value()}
        try:
            reply = read_reply(self._exchange(what, TOKEN_PATH, json.dumps(request).encode()), what)
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
        return token, _token_ttl_s(reply.data.get("expires_in"))


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
    """How long one create call may take in all: two exchanges (a token fetch and the
    create, or a create, a refresh after 10001 and the repeat, each within `timeout_s`
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
