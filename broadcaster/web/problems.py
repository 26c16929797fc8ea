"""Every error as RFC 9457 `application/problem+json`; no traceback reaches a client.

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "2 problems in the request", "errors": [{"pointer": "/send_at", "detail": "..."}]}

`errors[].pointer` is a JSON Pointer (RFC 6901) into the request body (or names a query
parameter, header or path parameter as `query:limit`, `header:Idempotency-Key`, ...).
Our own exceptions map by type: a bad job 422, no such job 404, a status that does not
allow the move 409, the database away 503; anything else is a 500 with one generic line
(logged with its traceback server-side, without the request's headers).
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broadcaster.db import first_line
from broadcaster.errors import (
    BroadcasterError,
    InvalidJob,
    InvalidPayload,
    JobNotFound,
    JobStoreError,
    SettingsError,
    StateConflict,
)
from broadcaster.logs import redact_text

log = structlog.get_logger("broadcaster.web")
PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An answer other than success, raised anywhere in a request."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.extra = extra


TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}
"""RFC 9110's names where Python's `HTTPStatus` still has the older ones."""


def title(status: int) -> str:
    return TITLES.get(status) or HTTPStatus(status).phrase


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["pointer", "detail"],
                "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
    },
}


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """Every error answer of the OpenAPI document as problem+json (FastAPI writes its own
    422 shape as application/json, which this app never sends)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = PROBLEM_SCHEMA
    reference = {"schema": {"$ref": "#/components/schemas/Problem"}}
    for path in document.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if "parameters" in operation or "requestBody" in operation:
                responses.setdefault("422", {"description": "invalid input"})
            if "requestBody" in operation:
                responses.setdefault("400", {"description": "the body is not JSON"})
                responses.setdefault("413", {"description": "the body is too large"})
                responses.setdefault("415", {"description": "the body is not sent as JSON"})
            for status, answer in responses.items():
                if status[0] in "45":
                    answer["content"] = {PROBLEM_JSON: reference}
    return document


def problem_response(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title(status),
        "status": status,
        "detail": scrub(detail),
    }
    if errors is not None:
        body["errors"] = [{**e, "detail": scrub(e["detail"])} for e in errors]
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def pointer(location: tuple[Any, ...] | list[Any]) -> str:
    """FastAPI's error location as a JSON Pointer into the body, or `query:NAME`, ..."""
    parts = [str(part) for part in location]
    if parts and parts[0] in ("query", "header", "path", "cookie"):
        return f"{parts[0]}:{'.'.join(parts[1:])}"
    if parts and parts[0] == "body":
        parts = parts[1:]
    # the tagged union of one job or a list of them (models.BroadcastBody)
    if parts and parts[0] in ("one", "many"):
        parts = parts[1:]
    escaped = [part.replace("~", "~0").replace("/", "~1") for part in parts]
    return "/" + "/".join(escaped) if escaped else ""


def validation_errors(raw: list[Any]) -> list[dict[str, str]]:
    errors = []
    for error in raw:
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        errors.append({"pointer": pointer(error.get("loc", ())), "detail": message})
    return errors


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.detail, errors=exc.errors, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = list(exc.errors())
        if any(error.get("type") == "json_invalid" for error in raw):
            where = next(e for e in raw if e.get("type") == "json_invalid")
            position = (where.get("ctx") or {}).get("error", "")
            return problem_response(400, f"the request body is not valid JSON: {position}")
        if _body_error(raw) and not _json_content(request):
            return problem_response(
                415, "send the body as JSON, with Content-Type: application/json"
            )
        errors = validation_errors(raw)
        noun = "problem" if len(errors) == 1 else "problems"
        return problem_response(422, f"{len(errors)} {noun} in the request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(exc.status_code, detail, headers=exc.headers)

    @app.exception_handler(BroadcasterError)
    async def _ours(request: Request, exc: BroadcasterError) -> JSONResponse:
        return problem_response(status_of(exc), str(exc))

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        return problem_response(503, f"database error: {first_line(exc)}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log_unexpected(request.method, request.url.path, exc)
        return problem_response(500, UNEXPECTED)


UNEXPECTED = "an unexpected error; it has been logged"


def log_unexpected(method: str, path: str, exc: BaseException) -> None:
    # A plain traceback, never `exc_info`: a renderer that shows frame locals would
    # print the ASGI scope, and with it the Authorization header.
    log.error(
        "web_unexpected_error",
        method=method,
        path=path,
        error=scrub(f"{type(exc).__name__}: {exc}"),
        traceback=scrub("".join(traceback.format_exception(exc))),
    )


class CatchAll:
    """Answers an unexpected exception with a 500 problem and logs it scrubbed, so that it
    does not travel on to Starlette's and uvicorn's own handlers, which log it again
    with its text unscrubbed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log_unexpected(scope.get("method", ""), scope.get("path", ""), exc)
            if started:
                raise
            await problem_response(500, UNEXPECTED)(scope, receive, send)


TOKEN_TEXT = re.compile(r"bct_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def scrub(text: str) -> str:
    """Text for a log line: secrets masked, and any API token."""
    return TOKEN_TEXT.sub("bct_***", redact_text(text))


def _body_error(raw: list[Any]) -> bool:
    return any(tuple(error.get("loc", ()))[:1] == ("body",) for error in raw)


def _json_content(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def status_of(exc: BroadcasterError) -> int:
    if isinstance(exc, InvalidJob | InvalidPayload):
        return 422
    if isinstance(exc, JobNotFound):
        return 404
    if isinstance(exc, StateConflict):
        return 409
    if isinstance(exc, JobStoreError | SettingsError):
        return 503
    return 500
