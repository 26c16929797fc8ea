"""`broadcaster run --web` as a user runs it: one command serves the API beside the
scheduler and the workers (same settings), a job posted over HTTP reaches the sandbox,
and SIGTERM stops all of it with exit 0."""

from __future__ import annotations

import shutil
import signal
import socket
from pathlib import Path

import httpx

from broadcaster.db import make_engine
from broadcaster.vendor.sandbox import SandboxServer
from broadcaster.web.tokens import Scope, TokenStore
from tests.helpers import body, wait_until
from tests.system.harness import Service


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_run_web_serves_the_api_beside_the_service_and_stops_on_sigterm(
    redis_url: str, tmp_path: Path, sqlite_template: Path, sandbox: SandboxServer
) -> None:
    shutil.copy(sqlite_template, tmp_path / "run-web.db")
    db_url = f"sqlite:///{tmp_path / 'run-web.db'}"
    engine = make_engine(db_url)
    token = TokenStore(engine).create("run-web", Scope.WRITE)
    engine.dispose()
    port = _free_port()
    service = Service(db_url, redis_url, sandbox, WEB_PORT=str(port), LOG_FORMAT="json")
    process = service.start("run", "--web", "--processes", "1", "--threads", "2")
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.popen.poll() is None, "\n".join(process.lines[-20:])
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, timeout=30, every=0.1)
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        posted = httpx.post(
            f"{base}/api/v1/broadcasts",
            json={"payload": body(name="via-run-web")},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert posted.status_code == 201, posted.text
        wait_until(
            lambda: [m for m in sandbox.state.created_list() if m["body"]["name"] == "via-run-web"],
            timeout=30,
            every=0.1,
        )
    finally:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
        code = process.popen.wait(40)
    assert code == 0, "\n".join(process.lines[-30:])
    assert not [line for line in process.lines if "Traceback" in line]
    wait_until(  # the log is read by a thread: let it catch up
        lambda: process.events("scheduler_stopped") and process.events("worker_stopped"),
        timeout=5,
    )
    try:
        httpx.get(f"{base}/healthz", timeout=1)
        raise AssertionError("the web app still answers after the stop")
    except httpx.TransportError:
        pass


def test_run_web_on_a_taken_port_stops_everything_with_one_line(
    redis_url: str, tmp_path: Path, sqlite_template: Path, sandbox: SandboxServer
) -> None:
    shutil.copy(sqlite_template, tmp_path / "taken.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = Service(
            f"sqlite:///{tmp_path / 'taken.db'}", redis_url, sandbox, WEB_PORT=str(port)
        )
        process = service.start("run", "--web", "--processes", "1", "--threads", "2")
        code = process.popen.wait(40)
    assert code == 1, "\n".join(process.lines[-30:])
    wait_until(
        lambda: any(f"cannot listen on 127.0.0.1:{port}" in line for line in process.lines),
        timeout=5,
    )
    assert not [line for line in process.lines if "Traceback" in line]
