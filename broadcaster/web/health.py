"""`/healthz`: the process answers. `/readyz`: the database is reachable and its schema at
the code's head, Redis answers (when REDIS_URL is set) and RabbitMQ does (when BROKER_URL
is set); else 503 naming what is not (a URL's password never shown)."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from broadcaster.bootstrap import Bootstrap
from broadcaster.broker.rabbitmq import check_broker
from broadcaster.errors import BroadcasterError
from broadcaster.ops.readiness import check_schema

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check(name: str, attempt: Any) -> tuple[str, str | None]:
    try:
        attempt()
    except (BroadcasterError, redis.RedisError, OSError) as exc:
        return name, str(exc)
    return name, None


@router.get("/readyz", summary="Database (schema at head), Redis and RabbitMQ reachable")
def readyz(request: Request) -> JSONResponse:
    boot: Bootstrap = request.app.state.boot
    checks: dict[str, str] = {}
    name, error = _check("database", lambda: check_schema(boot.engine))
    checks[name] = error or "ok"
    if boot.settings.redis_url:
        name, error = _check("redis", lambda: boot.redis.ping())
        checks[name] = error or "ok"
    else:
        checks["redis"] = "not configured (REDIS_URL unset): not checked"
    broker_url = boot.settings.broker_url
    if broker_url:  # unset: the messages go through the Redis checked above
        name, error = _check("rabbitmq", lambda: check_broker(broker_url))
        checks[name] = error or "ok"
    failing = [
        name
        for name, state in checks.items()
        if state != "ok" and not state.startswith("not configured")
    ]
    body: dict[str, Any] = {"status": "ok" if not failing else "unavailable", "checks": checks}
    if failing:
        body["detail"] = "not ready: " + ", ".join(failing)
    return JSONResponse(body, status_code=503 if failing else 200)
