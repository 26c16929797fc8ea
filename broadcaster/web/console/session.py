"""The console's sessions and CSRF tokens: a signed cookie, never the token itself.

The cookie reads `<key_id>.<issued>.<nonce>.<signature>`: the token's public key id, when
the login happened (epoch seconds), a random nonce (each login its own session, and its
own CSRF token) and an HMAC-SHA256 of the three under the session key
(`WEB_SESSION_KEY`, or a random key per process). Nothing in it lets anyone call the API.
Every request looks the key id up among the unrevoked tokens, so revoking the token
(`broadcaster tokens revoke`) ends its sessions at their next request; a session also
ends after `SESSION_TTL_S`.

CSRF: each form carries an HMAC of the session cookie (or, before login, of a random
`broadcaster_login` nonce cookie), so a token is tied to one session and compared in
constant time. The cookies are SameSite=Strict as well, so another site's form does not
even send them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, select
from starlette.requests import Request
from starlette.responses import Response

from broadcaster.jobs.tables import api_tokens
from broadcaster.web.tokens import TOKEN_SHAPE, Principal, Scope

COOKIE = "broadcaster_session"
LOGIN_COOKIE = "broadcaster_login"
SESSION_TTL_S = 12 * 3600
"""A working day: then the operator logs in again."""
LOGIN_TTL_S = 3600


@dataclass(frozen=True)
class Session:
    """A logged-in operator: who (the token's name and scope) and the cookie's value,
    which the CSRF token is derived from."""

    principal: Principal
    cookie: str

    @property
    def may_write(self) -> bool:
        return self.principal.may_write()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class Sessions:
    """Signs and checks session cookies and CSRF tokens with one key."""

    def __init__(self, engine: Engine, secret: str | None, *, trust_forwarded_proto: bool) -> None:
        self.engine = engine
        material = secret.encode() if secret else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"broadcaster console\x00" + material).digest()
        self.trust_forwarded_proto = trust_forwarded_proto

    def _sign(self, purpose: str, text: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}\x00{text}".encode(), "sha256").digest())

    # ------------------------------------------------------------ sessions
    def cookie_for(self, token: str, now: float | None = None) -> str:
        """The session cookie of a token already authenticated."""
        match = TOKEN_SHAPE.match(token)
        assert match is not None  # authenticated tokens have the shape
        issued = int(now if now is not None else time.time())
        body = f"{match.group(1)}.{issued}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._sign('session', body)}"

    def session(self, request: Request) -> Session | None:
        """The request's session, if its cookie is ours, young enough and its token still
        valid (one indexed lookup by key id)."""
        cookie = request.cookies.get(COOKIE, "")
        parts = cookie.split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        key_id, issued, nonce, signature = parts
        body = f"{key_id}.{issued}.{nonce}"
        if not hmac.compare_digest(signature, self._sign("session", body)):
            return None
        age = time.time() - int(issued)
        if age < -60 or age > SESSION_TTL_S:
            return None
        principal = self._active(key_id)
        return Session(principal, cookie) if principal is not None else None

    def _active(self, key_id: str) -> Principal | None:
        query = select(api_tokens.c.name, api_tokens.c.scope).where(
            api_tokens.c.key_id == key_id, api_tokens.c.revoked_at.is_(None)
        )
        with self.engine.begin() as connection:
            row = connection.execute(query).first()
        return Principal(row.name, Scope(row.scope)) if row is not None else None

    # ------------------------------------------------------------ CSRF
    def csrf_for(self, request: Request, session: Session | None) -> str:
        """The CSRF token for the forms of this page: tied to the session, or before login
        to the login nonce cookie (`ensure_login_nonce` sets it)."""
        if session is not None:
            return self._sign("csrf", session.cookie)
        nonce = request.state.login_nonce if hasattr(request.state, "login_nonce") else None
        nonce = nonce or request.cookies.get(LOGIN_COOKIE, "")
        return self._sign("login-csrf", nonce) if nonce else ""

    def ensure_login_nonce(self, request: Request) -> str | None:
        """A fresh nonce when the browser has none; the caller sets it as a cookie."""
        if request.cookies.get(LOGIN_COOKIE):
            return None
        nonce = secrets.token_urlsafe(24)
        request.state.login_nonce = nonce
        return nonce

    def csrf_ok(self, request: Request, session: Session | None, presented: str | None) -> bool:
        expected = self.csrf_for(request, session)
        return bool(expected) and hmac.compare_digest(expected, presented or "")

    # ------------------------------------------------------------ cookies
    def secure(self, request: Request) -> bool:
        """HTTPS: directly, or by X-Forwarded-Proto when the settings trust the proxy."""
        if request.url.scheme == "https":
            return True
        if self.trust_forwarded_proto:
            proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
            return proto.lower() == "https"
        return False

    def set_cookie(
        self, response: Response, request: Request, name: str, value: str, max_age: int
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.secure(request),
        )

    def clear_cookie(self, response: Response, request: Request, name: str) -> None:
        response.delete_cookie(
            name, path="/", httponly=True, samesite="strict", secure=self.secure(request)
        )
