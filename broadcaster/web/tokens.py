"""Bearer tokens for the HTTP API: created by `broadcaster tokens create`, only a hash kept.

A token reads `bct_<key_id>_<secret>`: `key_id` (12 hex digits) is public and finds the
row; `secret` is 32 random bytes (`secrets.token_urlsafe`). The row keeps the SHA-256 of
the whole token, and a presented token is checked with `hmac.compare_digest` against it.

Why SHA-256 and no slow KDF (bcrypt, scrypt, Argon2): a slow hash protects guessable
secrets (passwords) by making each guess expensive. These secrets are 256 random bits, so
nobody holding a stolen table can guess one whatever the hash costs, and a fast hash keeps
every API request cheap. Why the key_id: the lookup by it is an ordinary index lookup, and
the only comparison involving the secret is the constant-time one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from broadcaster.db import first_line
from broadcaster.errors import BroadcasterError, JobStoreError
from broadcaster.jobs.tables import api_tokens
from broadcaster.timeutil import utcnow

PREFIX = "bct_"
TOKEN_SHAPE = re.compile(r"\Abct_([0-9a-f]{12})_([A-Za-z0-9_-]{43})\Z")
NAME_SHAPE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}\Z")


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"


class TokenError(BroadcasterError):
    """A token command cannot be done (a name taken, no such token)."""


@dataclass(frozen=True)
class TokenInfo:
    """A token as `tokens list` shows it: never the token itself."""

    name: str
    key_id: str
    scope: Scope
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the token's name and scope."""

    name: str
    scope: Scope

    def may_write(self) -> bool:
        return self.scope is Scope.WRITE


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token and its key id."""
    key_id = secrets.token_hex(6)
    return f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}", key_id


class TokenStore:
    """The `api_tokens` table: create, list, revoke, and check a presented token."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, scope: Scope) -> str:
        """Store a new token's hash under `name`; return the token (shown once, never kept)."""
        if not NAME_SHAPE.match(name):
            raise TokenError(
                "token name: 1 to 100 letters, digits or . _ : @ -, starting with a letter or digit"
            )
        token, key_id = new_token()
        row = {"name": name, "key_id": key_id, "token_hash": hash_token(token), "scope": scope}
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(api_tokens).values(**row))
        except IntegrityError:
            raise TokenError(
                f"a token named {name!r} exists already (revoked ones keep their name); "
                "choose another name"
            ) from None
        except SQLAlchemyError as exc:
            raise JobStoreError(f"database error: {first_line(exc)}") from exc
        return token

    def list(self) -> list[TokenInfo]:
        query = select(api_tokens).order_by(api_tokens.c.id)
        try:
            with self.engine.begin() as connection:
                rows = connection.execute(query).all()
        except SQLAlchemyError as exc:
            raise JobStoreError(f"database error: {first_line(exc)}") from exc
        return [
            TokenInfo(row.name, row.key_id, Scope(row.scope), row.created_at, row.revoked_at)
            for row in rows
        ]

    def revoke(self, name: str, now: datetime | None = None) -> None:
        statement = (
            update(api_tokens)
            .where(api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now or utcnow())
        )
        try:
            with self.engine.begin() as connection:
                done = connection.execute(statement).rowcount
        except SQLAlchemyError as exc:
            raise JobStoreError(f"database error: {first_line(exc)}") from exc
        if not done:
            raise TokenError(f"no active token named {name!r} (see `broadcaster tokens list`)")

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token; None for anything else. The
        secret part is only ever compared in constant time, against its hash."""
        match = TOKEN_SHAPE.match(token)
        if match is None:
            return None
        query = select(api_tokens.c.name, api_tokens.c.token_hash, api_tokens.c.scope).where(
            api_tokens.c.key_id == match.group(1), api_tokens.c.revoked_at.is_(None)
        )
        try:
            with self.engine.begin() as connection:
                row = connection.execute(query).first()
        except SQLAlchemyError as exc:
            raise JobStoreError(f"database error: {first_line(exc)}") from exc
        presented = hash_token(token)
        stored = row.token_hash if row is not None else hash_token("")
        if not hmac.compare_digest(presented, stored) or row is None:
            return None
        return Principal(row.name, Scope(row.scope))
