"""Who may see and do what in the console.

A page without a session sends the browser to /login (an htmx refresh is told to go
there with `HX-Redirect`). A POST needs a session, the form's CSRF token, and for every
action a write token: anything less is a 403 page, and nothing is changed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from broadcaster.web.console.context import boot_of, render, sessions
from broadcaster.web.console.session import Session


class LoginNeeded(Exception):
    """No (valid) session on a page that needs one."""


class Forbidden(Exception):
    """A POST without a session, the right CSRF token or a write token."""

    def __init__(self, reason_key: str) -> None:
        super().__init__(reason_key)
        self.reason_key = reason_key


def _lookup(request: Request) -> Session | None:
    boot_of(request).store  # noqa: B018 - the schema checked first: a clear 503, not a 500
    return sessions(request).session(request)


async def current(request: Request) -> Session | None:
    return await run_in_threadpool(_lookup, request)


async def viewer(request: Request) -> Session:
    """The session of a page; `LoginNeeded` without one."""
    found = await current(request)
    if found is None:
        raise LoginNeeded
    return found


async def acting(request: Request, *, write: bool = True) -> tuple[Session, FormData]:
    """The session and form of a POST, checked: session, CSRF, then scope."""
    form = await request.form()
    found = await current(request)
    if found is None:
        raise Forbidden("error.login_needed")
    token = form.get("csrf_token")
    if not sessions(request).csrf_ok(request, found, token if isinstance(token, str) else None):
        raise Forbidden("error.csrf")
    if write and not found.may_write:
        raise Forbidden("error.read_only")
    return found, form


def safe_next(target: str | None) -> str:
    """Where to go after login: a path of this site only (never `//host` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def install(app: FastAPI) -> None:
    @app.exception_handler(LoginNeeded)
    async def _login(request: Request, exc: LoginNeeded) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        url = "/login?" + urlencode({"next": target})
        if request.headers.get("hx-request"):
            return Response(status_code=200, headers={"HX-Redirect": url})
        return RedirectResponse(url, status_code=303)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        found = await current(request)
        values: dict[str, Any] = {"reason_key": exc.reason_key}
        return render(request, "forbidden.html", values, session=found, status=403)
