"""The app factory: one FastAPI app over one Bootstrap (the same store, settings and
parts as the scheduler, the worker and the CLI).

FastAPI because its request models are pydantic, like the producer API's `JobRequest`
(reused as is, so validation lives once), and the OpenAPI document comes from them.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import broadcaster
from broadcaster.bootstrap import Bootstrap
from broadcaster.web import api, console, docs, health, problems
from broadcaster.web.auth import FailureThrottle, reader
from broadcaster.web.config import WebSettings
from broadcaster.web.limits import BodyLimit
from broadcaster.web.metrics import RequestMetrics, WebMetrics
from broadcaster.web.tokens import TokenStore

DESCRIPTION = """Schedule WeCom customer-group mass messages through broadcaster.

The API writes the same rows into `broadcast_jobs` as a producer's plain SQL INSERT.
Every request needs `Authorization: Bearer <token>` (`broadcaster tokens create`);
GETs take a read token, the rest a write token. Errors are `application/problem+json`
(RFC 9457), naming each bad field in `errors[].pointer`.
"""


def create_app(boot: Bootstrap, web: WebSettings | None = None) -> FastAPI:
    web = web or WebSettings()
    app = FastAPI(
        title="broadcaster",
        version=getattr(broadcaster, "__version__", "0.1.0"),
        description=DESCRIPTION,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # docs.install: Swagger UI from package files, not a CDN
        redoc_url=None,
    )
    app.state.boot = boot
    app.state.web = web
    app.state.tokens = TokenStore(boot.engine)
    app.state.auth_throttle = FailureThrottle(web.auth_fail_delay_s)
    metrics = WebMetrics(boot, web.metrics_cache_s)
    app.state.metrics = metrics
    problems.install(app)
    app.include_router(api.router)
    app.include_router(health.router)
    docs.install(app)
    console.install(app, web)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.document_problems(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        "/metrics",
        prometheus,
        methods=["GET"],
        include_in_schema=False,
        dependencies=[] if web.metrics_public else [Depends(reader)],
    )

    if web.origins():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=web.origins(),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    app.add_middleware(problems.CatchAll)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(BodyLimit, max_bytes=web.max_body_bytes)
    return app
