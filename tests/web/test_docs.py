"""The docs page loads nothing from outside: its scripts, styles and icon are served by
the app itself (an operator's network may reach no CDN)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from broadcaster.web.docs import ASSETS, ASSETS_URL


def test_docs_page_references_only_its_own_assets(client: TestClient) -> None:
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert not re.search(r"(https?:)?//", html), "no absolute or protocol-relative URL"
    referenced = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(referenced) == sorted(f"{ASSETS_URL}/{name}" for name in ASSETS)
    assert "url: '/api/v1/openapi.json'" in html
    assert '"validatorUrl": null' in html, "the validator badge would call out"
    types = {"js": "javascript", "css": "text/css", "png": "image/png"}
    for url in referenced:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert types[url.rsplit(".", 1)[1]] in asset.headers["content-type"], url
        assert len(asset.content) > 1000, url
    bundle = client.get(f"{ASSETS_URL}/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle


def test_docs_assets_do_not_serve_anything_else(client: TestClient) -> None:
    assert client.get(f"{ASSETS_URL}/../core.py").status_code == 404
    assert client.get(f"{ASSETS_URL}/nope.js").status_code == 404
    assert "/api/v1/docs" not in str(client.get("/api/v1/openapi.json").json()["paths"])
