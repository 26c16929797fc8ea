"""What every console page shares: the session, the language, the CSRF token, flashes
and the one Jinja2 environment (autoescape on: stored text is always escaped, and no
template marks stored data `|safe`)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context

from broadcaster.bootstrap import Bootstrap
from broadcaster.errors import InvalidJob
from broadcaster.timeutil import zone
from broadcaster.web.console.i18n import (
    CATALOG,
    HTML_LANG,
    delivery_label,
    outcome_label,
    pick_lang,
    status_label,
    translator,
)
from broadcaster.web.console.session import LOGIN_COOKIE, LOGIN_TTL_S, Session, Sessions

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
LANG_COOKIE = "lang"
FLASH_COOKIE = "broadcaster_flash"
YEAR_S = 365 * 86400
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    # scripts from the package only (htmx, console.js); inline style attributes draw the
    # bars; no framing (clickjacking of the action buttons); forms post here only
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@pass_context
def _when(context: Any, value: Any) -> str:
    """A time as the operators read it, in DEFAULT_TZ: `2026-12-12 20:00:00 +08:00`."""
    if not isinstance(value, datetime):
        return "" if value is None else str(value)
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    local = moment.astimezone(context.get("display_tz") or UTC)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:]}"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["urlpart"] = lambda value: quote(str(value), safe="")
    return env


ENV = _environment()


def sessions(request: Request) -> Sessions:
    found: Sessions = request.app.state.console_sessions
    return found


def boot_of(request: Request) -> Bootstrap:
    boot: Bootstrap = request.app.state.boot
    return boot


def lang_of(request: Request) -> str:
    return pick_lang(
        request.query_params.get("lang"),
        request.cookies.get(LANG_COOKIE),
        request.headers.get("accept-language"),
    )


def page_url(request: Request, **changes: str | None) -> str:
    """This page's URL with some query parameters changed (None drops one)."""
    params = dict(request.query_params)
    params.pop("lang", None)
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    query = urlencode(params)
    return request.url.path + (f"?{query}" if query else "")


def render(
    request: Request,
    template: str,
    values: Mapping[str, Any] | None = None,
    *,
    session: Session | None,
    status: int = 200,
) -> HTMLResponse:
    """A page (or an htmx partial) in the request's language."""
    lang = lang_of(request)
    nonce = None if session is not None else sessions(request).ensure_login_nonce(request)
    context = {
        "lang": lang,
        "html_lang": HTML_LANG[lang],
        "t": translator(lang),
        "status_label": lambda status: status_label(lang, status),
        "delivery_label": lambda state: delivery_label(lang, state),
        "outcome_label": lambda outcome: outcome_label(lang, outcome),
        "session": session,
        "may_write": session is not None and session.may_write,
        "csrf": sessions(request).csrf_for(request, session),
        "path": request.url.path,
        "page_url": lambda **changes: page_url(request, **changes),
        "flash": _flash_of(request),
        "display_tz": _display_tz(request),
        **(values or {}),
    }
    response = HTMLResponse(ENV.get_template(template).render(context), status_code=status)
    response.headers.update(SECURITY_HEADERS)
    store = sessions(request)
    if request.query_params.get("lang") in HTML_LANG:
        store.set_cookie(response, request, LANG_COOKIE, lang, YEAR_S)
    if nonce is not None:
        store.set_cookie(response, request, LOGIN_COOKIE, nonce, LOGIN_TTL_S)
    if FLASH_COOKIE in request.cookies:
        store.clear_cookie(response, request, FLASH_COOKIE)
    return response


def display_zone(name: str) -> tzinfo:
    """DEFAULT_TZ, where the console shows times (UTC should the name be unknown)."""
    try:
        return zone(name)
    except InvalidJob:
        return UTC


def _display_tz(request: Request) -> tzinfo:
    return display_zone(boot_of(request).settings.default_tz)


def _flash_of(request: Request) -> dict[str, Any] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(data, dict) or data.get("key") not in CATALOG:
        return None
    values = data.get("values") if isinstance(data.get("values"), dict) else {}
    return {"key": data["key"], "values": values, "kind": str(data.get("kind", "ok"))}


def redirect_with_flash(
    request: Request, url: str, key: str, kind: str = "ok", **values: Any
) -> Response:
    """303 to `url`, the message shown there once (a short-lived cookie, not the URL: a
    reload does not repeat it, and no text travels in a link)."""
    response = RedirectResponse(url, status_code=303)
    flash = json.dumps({"key": key, "kind": kind, "values": values}, ensure_ascii=True)
    encoded = base64.urlsafe_b64encode(flash.encode()).decode()
    sessions(request).set_cookie(response, request, FLASH_COOKIE, encoded, 60)
    return response
