"""Schemathesis against the OpenAPI document: generated requests (valid and not) to every
operation, with a write token; no 5xx, and every answer matches the document. A short run
(derandomized, a few dozen examples an operation) on SQLite and a real Redis."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broadcaster.bootstrap import Bootstrap
from broadcaster.web.app import create_app
from broadcaster.web.tokens import Scope, TokenStore
from tests.conftest import make_settings
from tests.web.conftest import web_settings

FUZZ: dict[str, str] = {}


@pytest.fixture
def web_schema(tmp_path: Path, sqlite_template: Path, redis_url: str) -> Iterator[Any]:
    shutil.copy(sqlite_template, tmp_path / "fuzz.db")
    boot = Bootstrap(
        make_settings(database_url=f"sqlite:///{tmp_path / 'fuzz.db'}", redis_url=redis_url)
    )
    FUZZ["token"] = TokenStore(boot.engine).create("fuzz", Scope.WRITE)
    app = create_app(boot, web_settings())
    yield schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    boot.engine.dispose()


def test_the_api_answers_as_its_document_says(web_schema: Any) -> None:
    """Each operation in turn (schemathesis' own pytest plugin does not load with the
    pytest here, so the operations' strategies are driven by Hypothesis directly)."""
    headers = {"Authorization": f"Bearer {FUZZ['token']}"}
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in web_schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=checks)

        exercise()
