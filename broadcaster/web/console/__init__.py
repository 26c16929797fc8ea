"""The operator console (issue 13): server-rendered pages at `/` of the `broadcaster web`
app, beside the API at /api/v1. Jinja2 templates, htmx (vendored under `static/`, no CDN)
for the live parts, SVG charts drawn on the server.

`install(app)` adds its routes, its static files and its two error pages (login needed,
forbidden) to an app built by `broadcaster.web.app.create_app`.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from broadcaster.web.config import WebSettings
from broadcaster.web.console import actions, guard, login, pages
from broadcaster.web.console.context import STATIC
from broadcaster.web.console.delivery import DeliveryTotals
from broadcaster.web.console.session import Sessions


def install(app: FastAPI, web: WebSettings) -> None:
    boot = app.state.boot
    key = web.session_key.get_secret_value() if web.session_key else None
    app.state.console_sessions = Sessions(
        boot.engine, key, trust_forwarded_proto=web.trust_forwarded_proto
    )
    app.state.console_delivery = DeliveryTotals.every(lambda: boot.store, web.metrics_cache_s)
    guard.install(app)
    app.include_router(login.router)
    app.include_router(actions.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="console-static")
