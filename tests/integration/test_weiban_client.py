"""The Weiban client against the sandbox over real HTTP: tokens shared and refreshed once."""

from __future__ import annotations

import threading

import pytest
import redis
import structlog

from broadcaster.corps import CorpDirectory
from broadcaster.errors import CredentialsRejected, VendorRejected, VendorUnreachable
from broadcaster.vendor import WeibanClient
from tests.conftest import make_settings
from tests.helpers import body


def client_for(
    url: str, redis_client: redis.Redis, secret: str = "sandbox-secret", timeout_s: float = 5
) -> WeibanClient:
    settings = make_settings(weiban_corp_id="corp-a", weiban_secret=secret, weiban_base_url=url)
    return WeibanClient(url, CorpDirectory(settings), redis_client, timeout_s=timeout_s)


def test_a_message_is_created_with_a_cached_token(sandbox, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client = client_for(sandbox.url, redis_client)
    other_process = client_for(sandbox.url, redis_client)
    client.create_group_message(
        "corp-a",
        '{"name":"a","staff_ext_id_list":["s"],'
        '"group_ext_id_list":["g"],"create_staff_ext_id":"s","text":"t"}',
    )
    import json

    other_process.create_group_message("corp-a", json.dumps(body()))
    assert sandbox.state.stats()["created"] == 2
    assert sandbox.state.token_issued == 1, "the second process used the cached token"


def test_an_invalidated_token_is_refreshed_once_for_many_callers(
    sandbox,
    redis_client: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    import json

    sandbox.state.config.max_in_flight = 100  # this is about tokens, not the quota
    clients = [client_for(sandbox.url, redis_client) for _ in range(8)]
    clients[0].create_group_message("corp-a", json.dumps(body()))
    sandbox.state.invalidate_tokens()
    threads = [
        threading.Thread(target=c.create_group_message, args=("corp-a", json.dumps(body())))
        for c in clients
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sandbox.state.stats()["created"] == 9
    assert sandbox.state.token_issued == 2, "one refresh for the one invalidation"


def test_a_business_error_names_the_vendors_reason(sandbox, redis_client: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client = client_for(sandbox.url, redis_client)
    with pytest.raises(VendorRejected) as rejected:
        client.create_group_message("corp-a", '{"name": "only a name"}')
    assert rejected.value.errcode == 20001 and "group_ext_id_list" in rejected.value.errmsg


def test_a_wrong_secret_is_a_clear_error_and_never_echoed(
    sandbox,
    redis_client: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    client = client_for(sandbox.url, redis_client, secret="wrong-secret-123")
    with structlog.testing.capture_logs() as logs, pytest.raises(CredentialsRejected) as refused:
        client.create_group_message("corp-a", "{}")
    assert "check the corp's secret" in str(refused.value)
    assert "wrong-secret-123" not in str(refused.value) + repr(logs)
    with pytest.raises(CredentialsRejected):  # held for a while: no hammering the token API
        client.create_group_message("corp-a", "{}")
    assert sandbox.state.calls == 0


def test_an_unreachable_vendor_is_not_sent(redis_client: redis.Redis) -> None:
    client = client_for("http://127.0.0.1:9", redis_client)
    with pytest.raises(VendorUnreachable, match="not sent"):
        client.create_group_message("corp-a", "{}")
