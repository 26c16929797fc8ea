"""Access tokens shared by every process: cached in Redis sealed under the corp's
secret, refreshed once for all (a Redis lock and a re-check), a refusal remembered a while
for that secret only."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
import structlog
from cryptography.fernet import Fernet, InvalidToken

from broadcaster.errors import (
    CredentialsRejected,
    VendorUnreachable,
)
from broadcaster.logs import register_token
from broadcaster.vendor.constants import TOKEN_EARLY_REFRESH_S
from broadcaster.vendor.deadline import remaining_s

log = structlog.get_logger("broadcaster.vendor")


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
