"""A refused secret is remembered (no hammering the token API), but only for that secret:
a corrected secret, after a restart, is tried at once (issue 9, item 9)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from broadcaster.corps import CorpDirectory
from broadcaster.errors import CredentialsRejected
from broadcaster.vendor import WeibanClient
from tests.conftest import make_settings
from tests.helpers import body as vendor_body

CORP = "corp-secret-fix"
BODY = json.dumps(vendor_body(), ensure_ascii=False)


def process_with(
    url: str, redis_client: redis.Redis, secret: str
) -> tuple[WeibanClient, list[str]]:
    """A fresh process's client (a restart), counting its calls to the token API."""
    settings = make_settings(weiban_corp_id=CORP, weiban_secret=secret, weiban_base_url=url)
    client = WeibanClient(url, CorpDirectory(settings), redis_client, timeout_s=5)
    asked: list[str] = []
    fetch = client.tokens.fetch

    def counting(corp_id: str) -> tuple[str, int]:
        asked.append(corp_id)
        return fetch(corp_id)

    client.tokens.fetch = counting  # type: ignore[method-assign]
    return client, asked


def test_a_corrected_secret_is_tried_at_once(sandbox: Any, redis_client: redis.Redis) -> None:
    wrong, asked_wrong = process_with(sandbox.url, redis_client, "wrong-secret-123")
    with pytest.raises(CredentialsRejected):
        wrong.create_group_message(CORP, BODY)
    assert asked_wrong == [CORP]

    again, asked_again = process_with(sandbox.url, redis_client, "wrong-secret-123")
    with pytest.raises(CredentialsRejected):  # the same bad secret: held, not asked again
        again.create_group_message(CORP, BODY)
    assert asked_again == []

    fixed, asked_fixed = process_with(sandbox.url, redis_client, "sandbox-secret")
    fixed.create_group_message(CORP, BODY)  # the corrected secret: no 30 s wait
    assert asked_fixed == [CORP] and sandbox.state.calls == 1
    keys = b" ".join(redis_client.keys(f"broadcaster:weiban:{{{CORP}}}:*"))
    assert b"wrong-secret-123" not in keys and b"sandbox-secret" not in keys
