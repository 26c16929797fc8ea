"""GET/POST /login and POST /logout.

The login form takes a token from `broadcaster tokens create` (field `token`), checks it
like the API does (`TokenStore.authenticate`: hash compared in constant time), and sets
the session cookie, which holds the token's public key id and never the token. Refused
tokens are slowed down by the API's `FailureThrottle` (per client address).
"""

from __future__ import annotations

import asyncio

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from broadcaster.web.auth import FailureThrottle
from broadcaster.web.console.context import redirect_with_flash, render, sessions
from broadcaster.web.console.guard import acting, current, safe_next
from broadcaster.web.console.session import COOKIE, LOGIN_COOKIE, SESSION_TTL_S
from broadcaster.web.tokens import Principal, TokenStore

log = structlog.get_logger("broadcaster.web")
router = APIRouter(include_in_schema=False)


@router.get("/login")
async def login_page(request: Request) -> Response:
    found = await current(request)
    if found is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    values = {"next": safe_next(request.query_params.get("next")), "error_key": None}
    return render(request, "login.html", values, session=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    token = form.get("token")
    presented = token.strip() if isinstance(token, str) else ""
    target = form.get("next")
    values = {"next": safe_next(target if isinstance(target, str) else None)}
    csrf = form.get("csrf_token")
    store = sessions(request)
    if not store.csrf_ok(request, None, csrf if isinstance(csrf, str) else None):
        expired = {**values, "error_key": "login.expired"}
        return render(request, "login.html", expired, session=None, status=403)
    tokens: TokenStore = request.app.state.tokens
    found: Principal | None = await run_in_threadpool(tokens.authenticate, presented)
    if found is None:
        throttle: FailureThrottle = request.app.state.auth_throttle
        delay = throttle.failed(request.client.host if request.client else "?")
        if delay:
            await asyncio.sleep(delay)
        refused = {**values, "error_key": "login.error"}
        return render(request, "login.html", refused, session=None, status=401)
    log.info("console_login", token=found.name, scope=found.scope.value)
    response = RedirectResponse(values["next"], status_code=303)
    store.set_cookie(response, request, COOKIE, store.cookie_for(presented), SESSION_TTL_S)
    store.clear_cookie(response, request, LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    if await current(request) is not None:  # a session: its form must carry its CSRF token
        found, _form = await acting(request, write=False)
        log.info("console_logout", token=found.principal.name)
    response = redirect_with_flash(request, "/login", "login.logged_out")
    sessions(request).clear_cookie(response, request, COOKIE)
    return response
