"""The web app on real databases (SQLite and PostgreSQL) and a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from broadcaster.bootstrap import Bootstrap
from broadcaster.jobs.tables import api_tokens
from broadcaster.web.app import create_app
from broadcaster.web.config import WebSettings
from broadcaster.web.tokens import Scope, TokenStore
from tests.conftest import make_settings

BODY: dict[str, Any] = {
    "name": "双十二预热",
    "staff_ext_id_list": ["staff-1"],
    "group_ext_id_list": ["group-1"],
    "create_staff_ext_id": "staff-1",
    "text": "全场五折，今晚八点开抢",
}


@dataclass
class Tokens:
    write: str
    read: str
    revoked: str

    def header(self, which: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, which)}"}


@pytest.fixture
def boot(db_url: str, redis_url: str) -> Iterator[Bootstrap]:
    boot = Bootstrap(make_settings(database_url=db_url, redis_url=redis_url))
    with boot.engine.begin() as connection:  # the session's PostgreSQL keeps rows between tests
        connection.execute(delete(api_tokens))
    yield boot
    boot.engine.dispose()


@pytest.fixture
def tokens(boot: Bootstrap) -> Tokens:
    store = TokenStore(boot.engine)
    made = Tokens(
        write=store.create("writer", Scope.WRITE),
        read=store.create("reader", Scope.READ),
        revoked=store.create("gone", Scope.WRITE),
    )
    store.revoke("gone")
    return made


def web_settings(**overrides: Any) -> WebSettings:
    defaults: dict[str, Any] = {"auth_fail_delay_s": 0, "metrics_cache_s": 0}
    return WebSettings(**{**defaults, **overrides})


@pytest.fixture
def client(boot: Bootstrap) -> Iterator[TestClient]:
    with TestClient(create_app(boot, web_settings()), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def writer(client: TestClient, tokens: Tokens) -> TestClient:
    client.headers.update(tokens.header("write"))
    return client
