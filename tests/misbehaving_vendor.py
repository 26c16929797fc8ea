"""A vendor, or a gateway in front of it, that answers strangely: real HTTP on loopback.

The job's own `name` picks the misbehaviour, so every case of a table test runs at once
through one real service: a create whose body is named `case:<kind>:<n>` gets `<kind>`
for its first `CASES[kind].times` calls, then a normal errcode 0. Some kinds arm the
token endpoint instead (its next answer is odd). Everything is recorded: each create
call's kind, duration and concurrency (a call ends when its answer is written or the
client hangs up, seen at once), the tokens issued, and the messages created.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

SECRET = "misbehaving-secret-4c1d"
BAD_SECRET = "refused-secret-9a7e"


@dataclass(frozen=True)
class Case:
    """How one kind misbehaves, and what the job must end as (status, attempts used)."""

    times: int
    status: str
    attempts: int


CASES: dict[str, Case] = {
    "not_json": Case(1, "unknown", 1),
    "no_errcode": Case(1, "unknown", 1),
    "errcode_text": Case(1, "unknown", 1),
    "errcode_digits": Case(1, "sent", 1),  # {"errcode": "0"}: the vendor meant 0
    "huge": Case(1, "unknown", 1),
    "trickle": Case(1, "unknown", 1),
    "redirect": Case(1, "sent", 2),  # not processed: sent again, the 302 cost an attempt
    "http_404": Case(1, "sent", 2),
    "http_429": Case(2, "sent", 1),  # a rate limit: waited out, no attempt used
    "http_502": Case(1, "unknown", 1),
    "http_503": Case(1, "unknown", 1),
    "errmsg_token": Case(1, "failed", 1),  # a business error whose text quotes secrets
    "token_302": Case(1, "sent", 2),  # 10001, then the token refresh answers 302
    "token_429": Case(1, "sent", 1),  # 10001, then the token refresh answers 429
}


@dataclass
class Record:
    created: list[str] = field(default_factory=list)
    calls: list[tuple[str, float]] = field(default_factory=list)  # (kind, seconds)
    tokens_issued: list[str] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0


class MisbehavingVendor:
    def __init__(self, trickle_interval_s: float = 0.3) -> None:
        self.trickle_interval_s = trickle_interval_s
        self.record = Record()
        self._seen: dict[str, int] = {}
        self._token_answers: list[str] = []  # odd answers armed for the token endpoint
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.vendor = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> MisbehavingVendor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---------------------------------------------------------------- decisions
    def kind_for(self, name: str) -> str:
        """What this call of the job `name` gets: its case's kind, or "ok"."""
        parts = name.split(":")
        kind = parts[1] if len(parts) >= 2 and parts[0] == "case" else "ok"
        with self._lock:
            self._seen[name] = self._seen.get(name, 0) + 1
            if kind in CASES and self._seen[name] <= CASES[kind].times:
                if kind in ("token_302", "token_429"):
                    self._token_answers.append(kind)
                return kind
        return "ok"

    def next_token_answer(self) -> str:
        with self._lock:
            return self._token_answers.pop(0) if self._token_answers else "ok"

    def enter(self) -> None:
        with self._lock:
            self.record.in_flight += 1
            self.record.peak_in_flight = max(self.record.peak_in_flight, self.record.in_flight)

    def leave(self, kind: str, seconds: float) -> None:
        with self._lock:
            self.record.in_flight -= 1
            self.record.calls.append((kind, seconds))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    vendor: MisbehavingVendor


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            return None

    def _answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, payload: dict[str, Any], status: int = 200) -> None:
        self._answer(status, json.dumps(payload, ensure_ascii=False).encode())

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path == "/open-api/access_token/get":
            self._token(self._read_json() or {})
        elif path == "/open-api/customer_group_msg/add":
            self._create(self._read_json() or {})
        else:
            self._answer(404, b"no such endpoint")

    def _token(self, request: dict[str, Any]) -> None:
        vendor = self.server.vendor
        if request.get("secret") == BAD_SECRET:  # the vendor quotes the secret it refuses
            self._json({"errcode": 40001, "errmsg": f"invalid secret {BAD_SECRET}"})
            return
        odd = vendor.next_token_answer()
        if odd == "token_302":
            self._answer(302, b"", Location="https://login.example/")
        elif odd == "token_429":
            self._answer(429, b"slow down", Retry_After="1")
        else:
            token = f"tok-{len(vendor.record.tokens_issued)}-{time.time_ns()}"
            vendor.record.tokens_issued.append(token)
            self._json({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200})

    def _create(self, body: dict[str, Any]) -> None:
        vendor = self.server.vendor
        name = str(body.get("name", ""))
        kind = vendor.kind_for(name)
        started = time.monotonic()
        vendor.enter()
        try:
            self._misbehave(kind, name)
        except OSError:
            pass  # the client hung up: that ends the call too
        finally:
            vendor.leave(kind, time.monotonic() - started)

    def _misbehave(self, kind: str, name: str) -> None:
        vendor = self.server.vendor
        token = urlsplit(self.path).query.removeprefix("access_token=")
        if kind == "ok":
            vendor.record.created.append(name)
            self._json({"errcode": 0, "errmsg": "ok"})
        elif kind in ("token_302", "token_429"):
            self._json({"errcode": 10001, "errmsg": "access_token 已过期"})
        elif kind == "not_json":
            self._answer(200, b"<html><body>gateway says hello</body></html>")
        elif kind == "no_errcode":
            self._json({"errmsg": "ok"})
        elif kind == "errcode_text":
            self._answer(200, b'{"errcode": "oops", "errmsg": "ok"}')
        elif kind == "errcode_digits":
            vendor.record.created.append(name)
            self._answer(200, b'{"errcode": "0", "errmsg": "ok"}')
        elif kind == "huge":
            self._huge()
        elif kind == "trickle":
            self._trickle()
        elif kind == "redirect":
            self._answer(302, b"", Location="https://login.example/")
        elif kind.startswith("http_"):
            status = int(kind.removeprefix("http_"))
            self._answer(status, b"<html>busy</html>", Retry_After="1")
        elif kind == "errmsg_token":
            self._json(
                {
                    "errcode": 20001,
                    "errmsg": f"bad request access_token={token} (token {token}, secret {SECRET})",
                }
            )

    def _huge(self) -> None:
        size = 30 * 1024 * 1024
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b'{"errcode": 0, "pad": "' + b"x" * 65_000
        for _ in range(size // len(chunk)):
            self.wfile.write(chunk)

    def _trickle(self) -> None:
        """Headers at once, then one byte per interval: each byte restarts a read timeout.
        A hang-up by the client is seen at once (the socket turns readable with EOF)."""
        body = b'{"errcode": 0, "errmsg": "ok", "padding": "' + b"." * 200 + b'"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        connection: socket.socket = self.connection
        for byte in body:
            readable, _, _ = select.select(
                [connection], [], [], self.server.vendor.trickle_interval_s
            )
            if readable and not connection.recv(1, socket.MSG_PEEK):
                return  # the client hung up
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
