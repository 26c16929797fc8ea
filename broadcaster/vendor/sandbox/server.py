"""The sandbox's HTTP face: the three vendor endpoints, plus `/sandbox/*` for tests.

POST /open-api/access_token/get                      {"corp_id", "secret"}
POST /open-api/customer_group_msg/add?access_token=T the vendor body
GET  /open-api/customer_group_msg/result?access_token=T&start_time=S&end_time=E&limit=L
     &offset=O[&staff_ext_id=X]                      the corp's missions created in
     [S, E] (unix seconds, inclusive, at most 3 days apart; limit 1..30), oldest first:
     {"errcode": 0, "errmsg": "ok", "missions": [...], "total_count": N}
GET  /sandbox/created   every message created, in order, with its `mission_id`
GET  /sandbox/missions  every mission as the list shows it, unfiltered (`?corp_id=` to pick)
GET  /sandbox/stats     calls, errors by code, peak in-flight and per-minute per corp
                        (create: `calls`, `errors`, `corps`; list: `list_calls`,
                        `list_errors`, `list_corps`)
POST /sandbox/faults    faults: {"http_5xx": n, "hang_after_create": n, "hang_s": x,
                        "force_10053": n, "create_late": n, "late_s": x,
                        "list_refuse_errcode": code (0 = off), "list_slow_ms": x,
                        "list_malformed": n, "invalidate_tokens": true,
                        "block_corp": corp_id (blocked for block_s from now)};
                        knobs: {"latency_ms", "block_s", "hour_block_s", "per_minute",
                        "per_hour", "max_in_flight", "token_ttl_s", "confirm_after_s",
                        "never_confirm_share", "fail_share", "max_processing_s",
                        "corp_latency_ms": {corp_id: ms}}
POST /sandbox/reset     forget calls, messages, missions, blocks and faults
(state.py says what each fault does; missions.py how a mission is modelled.)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from broadcaster.vendor.constants import CREATE_PATH, TOKEN_PATH
from broadcaster.vendor.missions import RESULT_API, RESULT_PATH
from broadcaster.vendor.sandbox.state import SandboxConfig, SandboxState

CONFIG_KNOBS = (
    "latency_ms",
    "block_s",
    "hour_block_s",
    "per_minute",
    "per_hour",
    "max_in_flight",
    "token_ttl_s",
    "confirm_after_s",
    "never_confirm_share",
    "fail_share",
    "max_processing_s",
    "corp_latency_ms",
)
FAULT_KNOBS = (
    "http_5xx",
    "hang_after_create",
    "hang_s",
    "force_10053",
    "create_late",
    "late_s",
    "list_refuse_errcode",
    "list_slow_ms",
    "list_malformed",
)
ODD_TIME_TEXT = "26/11/2030 8pm"
"""What a `list_malformed` page puts in `created_at` / `send_at`."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real vendor's front end
    # Headers and body go out in separate writes; with Nagle's algorithm on, the client's
    # delayed ACK stalls every keep-alive answer by ~40 ms, which is not the vendor's.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests carry tokens in the URL: never print them

    # ------------------------------------------------------------ plumbing
    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def _send(self, payload: Any, status: int = 200) -> None:
        self._send_raw(json.dumps(payload, ensure_ascii=False).encode(), status)

    def _send_raw(
        self, data: bytes, status: int = 200, content_type: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # ------------------------------------------------------------ routes
    def do_GET(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        path = parts.path
        if path == RESULT_PATH:
            self._list(parse_qs(parts.query))
        elif path == "/sandbox/created":
            self._send(state.created_list())
        elif path == "/sandbox/missions":
            corp = next(iter(parse_qs(parts.query).get("corp_id") or []), None)
            self._send(state.missions_list(corp))
        elif path == "/sandbox/stats":
            self._send(state.stats())
        else:
            self._send({"errcode": 404, "errmsg": "not found"}, 404)

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        body = self._body()
        routes = {
            TOKEN_PATH: self._token,
            CREATE_PATH: self._create,
            "/sandbox/faults": self._faults,
            "/sandbox/reset": self._reset,
        }
        route = routes.get(parts.path)
        if route is None:
            self._send({"errcode": 404, "errmsg": "not found"}, 404)
            return
        route(body, parse_qs(parts.query))

    def _token(self, body: Any, _query: dict[str, list[str]]) -> None:
        body = body if isinstance(body, dict) else {}
        self._send(
            self.server.state.issue_token(str(body.get("corp_id", "")), str(body.get("secret", "")))
        )

    def _create(self, body: Any, query: dict[str, list[str]]) -> None:
        state = self.server.state
        received_at = time.time()
        corp, error = state.begin_create((query.get("access_token") or [""])[0])
        if error is not None:
            self._send(error)
            return
        assert corp is not None
        if state.take_fault("http_5xx"):
            state.release(corp)
            self._send({"message": "bad gateway"}, 502)
            return
        if state.take_fault("create_late"):
            state.create_later(corp, body, received_at)  # a timer creates it, or abandons it
            time.sleep(state.faults.hang_s)
            self.close_connection = True
            return
        time.sleep(state.create_delay_s(corp))
        response = state.finish_create(corp, body)
        if state.take_fault("hang_after_create"):
            time.sleep(state.faults.hang_s)
            self.close_connection = True
            return
        self._send(response)

    def _list(self, query: dict[str, list[str]]) -> None:
        state = self.server.state
        corp, error = state.begin_list((query.get("access_token") or [""])[0])
        if error is not None:
            self._send(error)
            return
        assert corp is not None
        try:
            time.sleep(state.list_delay_s())  # in flight all along, as at the vendor
            answer = state.list_missions(corp, query)
        finally:
            state.release(corp, RESULT_API)
        variant = state.take_malformed() if answer.get("errcode") == 0 else None
        if variant == 0:
            self._send_raw(b"<html><body>502 Bad Gateway</body></html>", 200, "text/html")
            return
        if variant == 1:
            answer = {"errcode": 0, "errmsg": "ok"}
        elif variant == 2:
            for mission in answer["missions"]:
                mission.update(created_at=ODD_TIME_TEXT, send_at=ODD_TIME_TEXT)
                mission["msg_data"] = "{text: " + str(mission["msg_data"])[:20]
        self._send(answer)

    def _faults(self, body: Any, _query: dict[str, list[str]]) -> None:
        state = self.server.state
        body = body if isinstance(body, dict) else {}
        for knob in FAULT_KNOBS:
            if knob in body:
                setattr(state.faults, knob, body[knob])
        for knob in CONFIG_KNOBS:
            if knob in body:
                setattr(state.config, knob, body[knob])
        if body.get("invalidate_tokens"):
            state.invalidate_tokens()
        if isinstance(body.get("block_corp"), str):
            state.block_corp(body["block_corp"])
        self._send({"errcode": 0, "errmsg": "ok"})

    def _reset(self, _body: Any, _query: dict[str, list[str]]) -> None:
        self.server.state.reset()
        self._send({"errcode": 0, "errmsg": "ok"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: SandboxState) -> None:
        super().__init__(address, _Handler)
        self.state = state

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timed out, was killed) is part of the game: stay quiet."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class SandboxServer:
    """Start on a free port (or a given one) in a background thread."""

    def __init__(
        self, config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = SandboxState(config)
        self._server = _Server((host, port), self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sandbox", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    def start(self) -> SandboxServer:
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self.state.close()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
