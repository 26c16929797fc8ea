"""Helpers the tests share: a valid vendor body, reading the broker queue, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from dramatiq import Message

from broadcaster.broker.messages import ACTOR_NAME, QUEUE_NAME

T = TypeVar("T")


def body(**overrides: Any) -> dict[str, Any]:
    """A vendor body that passes validation."""
    value: dict[str, Any] = {
        "name": "双十二预热",
        "staff_ext_id_list": ["staff-1"],
        "group_ext_id_list": ["group-1", "group-2"],
        "create_staff_ext_id": "staff-1",
        "text": "全场五折，今晚八点开抢",
        "attachments": [
            {"msgtype": "link", "link": {"title": "活动", "url": "https://example.com/p"}}
        ],
    }
    value.update(overrides)
    return value


def queued_messages(client: redis.Redis) -> list[Message]:  # type: ignore[type-arg]
    """Every message waiting in the send_broadcast queue, as Dramatiq encoded it."""
    raw = client.hgetall(f"dramatiq:{QUEUE_NAME}.msgs")
    return [Message.decode(value) for value in raw.values()]


def queued_job_ids(client: redis.Redis) -> list[int]:
    messages = queued_messages(client)
    assert all(m.actor_name == ACTOR_NAME for m in messages)
    return sorted(m.args[0] for m in messages)


def wait_until(check: Callable[[], T], *, timeout: float = 10.0, every: float = 0.02) -> T:
    """Poll `check` until it returns something truthy; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(every)
        value = check()
    return value
