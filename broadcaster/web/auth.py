"""The request side of tokens: `Authorization: Bearer <token>`, read or write scope.

No token, a malformed, wrong or revoked one: 401. A read-only token on a write: 403.
Repeated failures from one client address are slowed down: each refused request waits
`WEB_AUTH_FAIL_DELAY_S`, doubled per further failure within a minute (capped at 5 s),
before its 401, without holding a worker thread (an asyncio sleep). The token itself is
never logged, stored or echoed; only its SHA-256 is compared, in constant time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from broadcaster.bootstrap import Bootstrap
from broadcaster.web.problems import Problem
from broadcaster.web.tokens import Principal, TokenStore

bearer = HTTPBearer(auto_error=False, description="a token from `broadcaster tokens create`")
MAX_DELAY_S = 5.0
WINDOW_S = 60.0
MAX_TRACKED = 10_000


class FailureThrottle:
    """Recent auth failures per client address, to slow down guessing."""

    def __init__(self, base_delay_s: float) -> None:
        self.base_delay_s = base_delay_s
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def failed(self, client: str, now: float | None = None) -> float:
        """Record a failure; return how long to wait before answering it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            count, first = self._failures.pop(client, (0, now))
            if now - first > WINDOW_S:
                count, first = 0, now
            count += 1
            self._failures[client] = (count, first)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)
        if self.base_delay_s <= 0:
            return 0.0
        return min(self.base_delay_s * 2 ** min(count - 1, 16), MAX_DELAY_S)


UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="broadcaster"'}


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    tokens: TokenStore = request.app.state.tokens
    throttle: FailureThrottle = request.app.state.auth_throttle
    boot: Bootstrap = request.app.state.boot

    def check(token: str) -> Principal | None:
        boot.store  # noqa: B018 - the database checked first (once): a missing SQLite file is a 503, never created
        return tokens.authenticate(token)

    found = None
    if credentials is not None and credentials.scheme.lower() == "bearer":
        found = await run_in_threadpool(check, credentials.credentials)
    if found is None:
        client = request.client.host if request.client else "?"
        delay = throttle.failed(client)
        if delay:
            await asyncio.sleep(delay)
        detail = (
            "missing bearer token: send Authorization: Bearer <token>"
            if credentials is None
            else "the bearer token is not valid (wrong, malformed or revoked)"
        )
        raise Problem(401, detail, headers=UNAUTHORIZED_HEADERS)
    request.state.token_name = found.name  # the access log says which token (by name)
    return found


async def reader(who: Annotated[Principal, Depends(principal)]) -> Principal:
    return who


async def writer(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.may_write():
        raise Problem(403, f"token {who.name!r} is read-only; this needs a write token")
    return who


Reader = Annotated[Principal, Depends(reader)]
Writer = Annotated[Principal, Depends(writer)]
