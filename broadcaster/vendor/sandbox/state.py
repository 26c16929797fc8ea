"""What the sandbox vendor knows and enforces, independent of HTTP.

Rules, as DESIGN §1 describes Weiban's:
- tokens from `access_token/get` expire after `token_ttl_s`; `invalidate_tokens()` kills
  them early (errcode 10001 afterwards);
- per corp: a 5th call while 4 are processing gets 10052 (`max_in_flight`);
- per corp: more than `per_minute` calls in 60 s or `per_hour` in an hour get 10053 and
  block the corp for `block_s` (minute) or `hour_block_s` (hour); calls while blocked get
  10053 too;
- a body that fails validation gets a business error (errcode 20001);
- faults: the next N calls answer 5xx, or create the message and then hang past the
  client's timeout, or get a forced 10053 block.
Everything it creates is recorded, so tests can count messages per job.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from broadcaster.errors import InvalidPayload
from broadcaster.vendor.payload import parse_payload

ERR_TOKEN = 10001
ERR_CONCURRENCY = 10052
ERR_FREQUENCY = 10053
ERR_BAD_BODY = 20001
ERR_BAD_SECRET = 40001


@dataclass
class SandboxConfig:
    per_minute: int = 600
    per_hour: int = 36000
    max_in_flight: int = 4
    latency_ms: float = 20.0
    block_s: float = 60.0
    hour_block_s: float = 3600.0
    token_ttl_s: int = 7200
    secrets: dict[str, str] = field(default_factory=dict)
    """corp_id -> secret; empty accepts any corp whose secret is `default_secret`."""
    default_secret: str = "sandbox-secret"


@dataclass
class Faults:
    http_5xx: int = 0
    hang_after_create: int = 0
    hang_s: float = 30.0
    force_10053: int = 0


@dataclass
class Created:
    seq: int
    corp_id: str
    body: dict[str, Any]
    received_at: float


@dataclass
class CorpCounters:
    in_flight: int = 0
    peak_in_flight: int = 0
    calls: deque[float] = field(default_factory=deque)  # accepted call times, last hour
    blocked_until: float = 0.0
    peak_per_minute: int = 0


class SandboxState:
    """Thread-safe: the HTTP server handles each request on its own thread."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.faults = Faults()
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (corp, expires)
        self._corps: dict[str, CorpCounters] = defaultdict(CorpCounters)
        self.created: list[Created] = []
        self.errors: dict[int, int] = defaultdict(int)
        self.faults_served: dict[str, int] = defaultdict(int)  # injected faults that fired
        self.token_issued = 0
        self.issued_tokens: list[str] = []
        self.calls = 0
        self.call_log: list[tuple[float, int, str]] = []  # (arrival, errcode at admission, corp)

    # ------------------------------------------------------------ tokens
    def issue_token(self, corp_id: str, secret: str) -> dict[str, Any]:
        expected = self.config.secrets.get(corp_id, self.config.default_secret)
        if not corp_id or secret != expected:
            return {"errcode": ERR_BAD_SECRET, "errmsg": "corp_id或secret错误"}
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.issued_tokens.append(token)
            self._tokens[token] = (corp_id, time.time() + self.config.token_ttl_s)
            self.token_issued += 1
        return {
            "errcode": 0,
            "errmsg": "ok",
            "access_token": token,
            "expires_in": self.config.token_ttl_s,
        }

    def invalidate_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def _corp_of(self, token: str) -> str | None:
        corp, expires = self._tokens.get(token, (None, 0.0))
        return corp if expires > time.time() else None

    # ------------------------------------------------------------ the create call
    def begin_create(self, token: str) -> tuple[str | None, dict[str, Any] | None]:
        """Admission: (corp, None) to go on, or (None, error response)."""
        with self._lock:
            self.calls += 1
            corp = self._corp_of(token)
            self.call_log.append((time.time(), 0, corp or ""))
            if corp is None:
                return None, self._error(ERR_TOKEN, "access_token无效或已过期")
            counters = self._corps[corp]
            now = time.time()
            if self.faults.force_10053 > 0:
                self.faults.force_10053 -= 1
                counters.blocked_until = now + self.config.block_s
            if counters.blocked_until > now:
                return None, self._error(ERR_FREQUENCY, "接口调用频率超限")
            if counters.in_flight >= self.config.max_in_flight:
                return None, self._error(ERR_CONCURRENCY, "不可同时有5个请求在处理中")
            if error := self._over_frequency(counters, now):
                return None, error
            counters.calls.append(now)
            counters.in_flight += 1
            counters.peak_in_flight = max(counters.peak_in_flight, counters.in_flight)
            return corp, None

    def _over_frequency(self, counters: CorpCounters, now: float) -> dict[str, Any] | None:
        calls = counters.calls
        while calls and calls[0] <= now - 3600:
            calls.popleft()
        last_minute = len(calls) - _first_index_after(calls, now - 60)
        if last_minute >= self.config.per_minute:
            counters.blocked_until = now + self.config.block_s
            return self._error(ERR_FREQUENCY, "接口调用频率超限(分钟)")
        if len(calls) >= self.config.per_hour:
            counters.blocked_until = now + self.config.hour_block_s
            return self._error(ERR_FREQUENCY, "接口调用频率超限(小时)")
        counters.peak_per_minute = max(counters.peak_per_minute, last_minute + 1)
        return None

    def finish_create(self, corp: str, body: Any) -> dict[str, Any]:
        """Validate and record the message (the call was admitted)."""
        try:
            parse_payload(body if isinstance(body, dict) else {"_": body})
        except InvalidPayload as exc:
            with self._lock:
                self._corps[corp].in_flight -= 1
                return self._error(ERR_BAD_BODY, f"参数错误: {exc}")
        with self._lock:
            self._corps[corp].in_flight -= 1
            self.created.append(Created(len(self.created) + 1, corp, body, time.time()))
        return {"errcode": 0, "errmsg": "ok"}

    def release(self, corp: str) -> None:
        with self._lock:
            self._corps[corp].in_flight -= 1

    def take_fault(self, name: str) -> bool:
        with self._lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
                self.faults_served[name] += 1
                return True
            return False

    def _error(self, code: int, message: str) -> dict[str, Any]:
        self.errors[code] += 1
        if code in (ERR_TOKEN, ERR_CONCURRENCY, ERR_FREQUENCY) and self.call_log:
            self.call_log[-1] = (self.call_log[-1][0], code, self.call_log[-1][2])
        return {"errcode": code, "errmsg": message}

    # ------------------------------------------------------------ inspection
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self.calls,
                "created": len(self.created),
                "errors": {str(code): n for code, n in self.errors.items()},
                "token_issued": self.token_issued,
                "faults_served": dict(self.faults_served),
                "corps": {
                    corp: {
                        "peak_in_flight": c.peak_in_flight,
                        "in_flight": c.in_flight,
                        "peak_per_minute": c.peak_per_minute,
                        "blocked_for_s": max(0.0, c.blocked_until - time.time()),
                    }
                    for corp, c in self._corps.items()
                },
            }

    def created_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"seq": c.seq, "corp_id": c.corp_id, "body": c.body, "received_at": c.received_at}
                for c in self.created
            ]

    def reset(self) -> None:
        with self._lock:
            self._corps.clear()
            self.created.clear()
            self.errors.clear()
            self.faults = Faults()
            self.token_issued = 0
            self.calls = 0
            self.call_log.clear()


def _first_index_after(calls: deque[float], cutoff: float) -> int:
    """Index of the first call after `cutoff` (calls are in time order)."""
    low, high = 0, len(calls)
    while low < high:
        middle = (low + high) // 2
        if calls[middle] <= cutoff:
            low = middle + 1
        else:
            high = middle
    return low
