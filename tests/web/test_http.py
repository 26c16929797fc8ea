"""The app over real HTTP: uvicorn on a free port (in a thread), and the real commands."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from broadcaster.bootstrap import Bootstrap
from broadcaster.jobs.tables import jobs
from broadcaster.web.app import create_app
from tests.conftest import make_settings
from tests.web.conftest import BODY, Tokens, web_settings


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


def serve(boot: Bootstrap) -> tuple[str, Callable[[], None]]:
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(boot, web_settings()), host="127.0.0.1", port=0, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "uvicorn to start")
    port = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture
def base_url(boot: Bootstrap) -> Iterator[str]:
    url, stop = serve(boot)
    yield url
    stop()


def test_concurrent_posts_with_one_key_make_one_job(
    base_url: str, tokens: Tokens, boot: Bootstrap
) -> None:
    headers = {**tokens.header("write"), "Idempotency-Key": "race-1"}
    barrier = threading.Barrier(8)
    answers: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(base_url=base_url, timeout=20) as client:
            barrier.wait()
            answers.append(
                client.post("/api/v1/broadcasts", json={"payload": BODY}, headers=headers)
            )

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200] * 7 + [201], [a.text for a in answers]
    ids = {answer.json()["items"][0]["jobs"][0]["id"] for answer in answers}
    assert len(ids) == 1
    with boot.engine.begin() as connection:
        assert connection.execute(select(func.count()).select_from(jobs)).scalar_one() == 1


def test_metrics_over_http_count_jobs_and_requests(base_url: str, tokens: Tokens) -> None:
    with httpx.Client(base_url=base_url, headers=tokens.header("write")) as client:
        for campaign in ("m1", "m1", "m2"):
            assert (
                client.post(
                    "/api/v1/broadcasts", json={"payload": BODY, "campaign": campaign}
                ).status_code
                == 201
            )
        text = client.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    jobs_by = {
        (s.labels["campaign"], s.labels["status"]): s.value
        for s in families["broadcaster_jobs"].samples
    }
    assert jobs_by == {("m1", "scheduled"): 2.0, ("m2", "scheduled"): 1.0}
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["broadcaster_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests[("/api/v1/broadcasts", "201")] == 3.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_the_commands_tokens_and_web_end_to_end(
    redis_url: str, tmp_path: Path, sqlite_template: Path
) -> None:
    """On SQLite only (each command is a process start; PostgreSQL is covered above)."""
    shutil.copy(sqlite_template, tmp_path / "e2e.db")
    db_url = f"sqlite:///{tmp_path / 'e2e.db'}"
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "WEIBAN_CORP_ID": "corp-default",
        "COLUMNS": "300",
        "LOG_FORMAT": "json",
    }
    env.pop("WEB_PORT", None)
    created = _cli(env, "tokens", "create", "e2e")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("bct_") and created.stdout.strip() == token
    readonly = _cli(env, "tokens", "create", "e2e-ro", "--read-only").stdout.strip()
    listed = _cli(env, "tokens", "list", "--json")
    assert token not in listed.stdout and '"e2e-ro"' in listed.stdout
    web = subprocess.Popen(
        [sys.executable, "-m", "broadcaster.cli.main", "web", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                assert web.poll() is None, web.stderr.read() if web.stderr else ""
                return False

        wait_until(up, 30, "broadcaster web to answer")
        assert httpx.get(f"{base}/readyz").json()["checks"] == {"database": "ok", "redis": "ok"}
        auth = {"Authorization": f"Bearer {token}"}
        answer = httpx.post(f"{base}/api/v1/broadcasts", json={"payload": BODY}, headers=auth)
        assert answer.status_code == 201
        job_id = answer.json()["items"][0]["jobs"][0]["id"]
        shown = httpx.get(
            f"{base}/api/v1/broadcasts/{job_id}", headers={"Authorization": f"Bearer {readonly}"}
        )
        assert shown.json()["status"] == "scheduled"
        assert _cli(env, "tokens", "revoke", "e2e").returncode == 0
        refused = httpx.post(f"{base}/api/v1/broadcasts", json={"payload": BODY}, headers=auth)
        assert refused.status_code == 401
    finally:
        web.send_signal(signal.SIGTERM)
        out, err = web.communicate(timeout=20)
    assert web.returncode == 0, err
    assert token not in out + err and readonly not in out + err


def test_readyz_names_what_is_not_ready(tmp_path: Path, sqlite_template: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()  # a database without the tables
    boot = Bootstrap(
        make_settings(database_url=f"sqlite:///{empty}", redis_url="redis://127.0.0.1:1/0")
    )
    url, stop = serve(boot)
    try:
        answer = httpx.get(f"{url}/readyz", timeout=10)
        assert answer.status_code == 503
        body: dict[str, Any] = answer.json()
        assert "db upgrade" in body["checks"]["database"]
        assert body["checks"]["redis"] != "ok"
        assert body["detail"] == "not ready: database, redis"
        assert httpx.get(f"{url}/healthz").status_code == 200
        tokenless = httpx.get(f"{url}/api/v1/status", headers={"Authorization": "Bearer x"})
        assert tokenless.status_code == 503 and "db upgrade" in tokenless.json()["detail"]
        assert tokenless.headers["content-type"] == "application/problem+json"
        missing = tmp_path / "missing.db"
        boot_missing = Bootstrap(make_settings(database_url=f"sqlite:///{missing}"))
        stop()
        url, stop = serve(boot_missing)
        assert (
            httpx.get(f"{url}/api/v1/status", headers={"Authorization": "Bearer x"}).status_code
            == 503
        )
        assert httpx.get(f"{url}/readyz").status_code == 503
        assert not missing.exists(), "a missing SQLite file is never created"
    finally:
        stop()
    shutil.rmtree(tmp_path, ignore_errors=True)
