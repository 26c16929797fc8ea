"""The docs page (`/api/v1/docs`): Swagger UI from files shipped in a package, never a CDN.

FastAPI's own page loads Swagger UI from a CDN, so on an operator's network without
one it is blank. The files come from `fastapi-offline` (Swagger UI 5, which renders
the OpenAPI 3.1 document FastAPI writes; `swagger-ui-bundle` ships Swagger UI 4, which
refuses 3.1), served under `/api/v1/docs/assets`; the page itself is FastAPI's
`get_swagger_ui_html` pointed at them. No validator badge (it would call out).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

DOCS_URL = "/api/v1/docs"
ASSETS_URL = f"{DOCS_URL}/assets"
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")
"""The files the page loads, all from ASSETS_URL."""


def assets_dir() -> str:
    return str(files("fastapi_offline") / "static")


def install(app: FastAPI) -> None:
    """Serve the docs page and its assets (the app is made with `docs_url=None`)."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
    assert app.openapi_url is not None

    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url),
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    app.add_api_route(DOCS_URL, docs, methods=["GET"], include_in_schema=False)
