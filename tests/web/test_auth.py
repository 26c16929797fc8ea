"""Tokens: the auth matrix on every endpoint, the stored hash, the CLI, slowing down."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from structlog.testing import capture_logs

from broadcaster.bootstrap import Bootstrap
from broadcaster.jobs.tables import api_tokens
from broadcaster.web.app import create_app
from broadcaster.web.auth import MAX_DELAY_S, FailureThrottle
from broadcaster.web.tokens import TOKEN_SHAPE, Scope, TokenError, TokenStore
from tests.web.conftest import BODY, Tokens, web_settings

READS = [
    ("GET", "/api/v1/broadcasts/1", None),
    ("GET", "/api/v1/broadcasts", None),
    ("GET", "/api/v1/campaigns/c", None),
    ("GET", "/api/v1/status", None),
]
WRITES = [
    ("POST", "/api/v1/broadcasts", {"payload": BODY, "campaign": "c"}),
    ("POST", "/api/v1/broadcasts/1/cancel", None),
    ("POST", "/api/v1/broadcasts/1/retry", None),
    ("POST", "/api/v1/broadcasts/1/resolve", {"decision": "sent"}),
    ("POST", "/api/v1/campaigns/c/cancel", None),
]
BAD = {
    "none": None,
    "wrong": "bct_000000000000_" + "A" * 43,
    "malformed": "hunter2",
    "revoked": "revoked",
}


def _call(client: TestClient, method: str, path: str, body: object, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request(method, path, json=body, headers=headers).status_code


@pytest.mark.parametrize(("method", "path", "body"), READS + WRITES)
def test_every_endpoint_refuses_missing_wrong_and_revoked_tokens(
    client: TestClient, tokens: Tokens, method: str, path: str, body: object
) -> None:
    for name, token in BAD.items():
        token = tokens.revoked if token == "revoked" else token
        answer = client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"} if token else {}
        )
        assert answer.status_code == 401, name
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.headers["content-type"] == "application/problem+json"
    basic = client.request(method, path, json=body, headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_a_read_token_cannot_write(
    client: TestClient, tokens: Tokens, method: str, path: str, body: object
) -> None:
    assert _call(client, method, path, body, tokens.read) == 403


@pytest.mark.parametrize(("method", "path", "body"), READS + WRITES)
def test_the_right_token_passes(
    client: TestClient, tokens: Tokens, method: str, path: str, body: object
) -> None:
    _call(client, "POST", "/api/v1/broadcasts", {"payload": BODY, "campaign": "c"}, tokens.write)
    token = tokens.read if method == "GET" else tokens.write
    assert _call(client, method, path, body, token) not in (401, 403)


def test_health_and_metrics_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_only_a_hash_is_stored_and_tokens_are_never_logged(
    boot: Bootstrap, client: TestClient, tokens: Tokens
) -> None:
    with boot.engine.begin() as connection:
        rows = connection.execute(select(api_tokens)).all()
    stored = json.dumps([[str(v) for v in row] for row in rows])
    for token in (tokens.write, tokens.read, tokens.revoked):
        assert token not in stored
        secret = TOKEN_SHAPE.match(token)
        assert secret is not None and secret.group(2) not in stored
        assert hashlib.sha256(token.encode()).hexdigest() in stored
    with capture_logs() as logs:
        _call(client, "GET", "/api/v1/broadcasts", None, tokens.write)
        _call(client, "GET", "/api/v1/broadcasts", None, tokens.write + "x")
        _call(client, "GET", "/api/v1/broadcasts/1", None, tokens.revoked)
    assert tokens.write not in json.dumps(logs, default=str)


def test_token_store_names_revoke_and_scope(boot: Bootstrap) -> None:
    store = TokenStore(boot.engine)
    token = store.create("crm-prod", Scope.READ)
    principal = store.authenticate(token)
    assert principal is not None and principal.name == "crm-prod" and not principal.may_write()
    with pytest.raises(TokenError, match="exists already"):
        store.create("crm-prod", Scope.WRITE)
    with pytest.raises(TokenError, match="token name"):
        store.create("bad name\n", Scope.WRITE)
    assert store.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    store.revoke("crm-prod")
    assert store.authenticate(token) is None
    with pytest.raises(TokenError, match="no active token"):
        store.revoke("crm-prod")
    assert [info.name for info in store.list()] == ["crm-prod"]


def test_repeated_failures_are_slowed_down_per_client() -> None:
    throttle = FailureThrottle(0.1)
    delays = [throttle.failed("10.0.0.1", now=100.0 + i) for i in range(8)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8] and delays[-1] == MAX_DELAY_S
    assert throttle.failed("10.0.0.2", now=108.0) == 0.1, "another client is not slowed"
    assert throttle.failed("10.0.0.1", now=200.0) == 0.1, "a minute later it starts over"


def test_failures_wait_before_their_401(boot: Bootstrap, tokens: Tokens) -> None:
    with TestClient(create_app(boot, web_settings(auth_fail_delay_s=0.05))) as client:
        started = time.perf_counter()
        for _ in range(3):
            assert _call(client, "GET", "/api/v1/status", None, "nope") == 401
        assert time.perf_counter() - started >= 0.05 + 0.1 + 0.2
        assert _call(client, "GET", "/api/v1/status", None, tokens.read) == 200


def test_an_unexpected_error_is_a_plain_500_and_its_log_holds_no_token(
    boot: Bootstrap, tokens: Tokens
) -> None:
    app = create_app(boot, web_settings())

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"something broke near {tokens.write}")

    with capture_logs() as logs, TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/boom", headers=tokens.header("write"))
    assert answer.status_code == 500
    assert answer.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "an unexpected error; it has been logged",
    }
    (line,) = [entry for entry in logs if entry["event"] == "web_unexpected_error"]
    assert "RuntimeError" in line["traceback"] and "exc_info" not in line
    assert tokens.write not in json.dumps(logs, default=str)


def test_the_access_log_names_the_route_never_the_token(client: TestClient, tokens: Tokens) -> None:
    with capture_logs() as logs:
        _call(client, "GET", "/api/v1/broadcasts/7", None, tokens.read)
        _call(client, "GET", "/api/v1/broadcasts", None, tokens.read + "x")
    lines = [entry for entry in logs if entry["event"] == "http_request"]
    assert [(line["route"], line["status"], line["token"]) for line in lines] == [
        ("/api/v1/broadcasts/{job_id}", 404, "reader"),
        ("/api/v1/broadcasts", 401, None),
    ]
    assert tokens.read not in json.dumps(logs, default=str)


def test_cors_is_off_unless_origins_are_configured(boot: Bootstrap) -> None:
    preflight = {
        "Origin": "https://crm.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    with TestClient(create_app(boot, web_settings())) as client:
        answer = client.options("/api/v1/broadcasts", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
    allowed = web_settings(cors_origins="https://crm.example.com, https://ops.example.com")
    with TestClient(create_app(boot, allowed)) as client:
        answer = client.options("/api/v1/broadcasts", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://crm.example.com"
        other = client.options(
            "/api/v1/broadcasts", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers


def test_metrics_can_require_a_read_token(boot: Bootstrap, tokens: Tokens) -> None:
    with TestClient(create_app(boot, web_settings(metrics_public=False))) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=tokens.header("read")).status_code == 200
        assert client.get("/healthz").status_code == 200
