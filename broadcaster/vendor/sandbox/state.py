"""What the sandbox vendor knows and enforces, independent of HTTP.

Rules, as DESIGN §1 and §9 describe Weiban's:
- tokens from `access_token/get` expire after `token_ttl_s`; `invalidate_tokens()` kills
  them early (errcode 10001 afterwards);
- quota per (corp, API): the create call and the list call each have their own counters,
  with the same rules and knobs: a 5th call while 4 are processing gets 10052
  (`max_in_flight`); more than `per_minute` calls in 60 s or `per_hour` in an hour get
  10053 and block the corp on that API for `block_s` (minute) or `hour_block_s` (hour);
  calls while blocked get 10053 too;
- a create body that fails validation gets a business error (errcode 20001); a list call
  with a missing or non-integer parameter, a window over 3 days or reversed, a limit
  outside 1..30 or a negative offset gets 40002;
- every created message becomes a mission (`missions.py`: sub-missions per staff, the
  staff-confirmation model with `confirm_after_s`, `never_confirm_share`, `fail_share`),
  listed by `customer_group_msg/result`.
Faults (`Faults`; counts are "the next N calls", served ones are counted in
`faults_served`):
- create: `http_5xx` (answer 502, create nothing); `hang_after_create` (create, then hold
  the answer `hang_s` and close without answering); `force_10053` (block the corp);
  `create_late` (hold the answer `hang_s` and close without answering; the mission is
  created `late_s` after the call arrived, by a timer, the call keeping its in-flight slot
  until then; when `late_s` > `max_processing_s` the vendor abandons the call at
  `max_processing_s` and creates nothing: `create_late_abandoned`);
- list: `list_refuse_errcode` (persistent, 0 = off: every list call answers that errcode,
  "调用此接口需购买基础席位"); `list_slow_ms` (persistent extra delay, in flight);
  `list_malformed` (the next N successful answers are malformed, cycling through: not
  JSON; `missions` missing; missions with odd time text and `msg_data` not JSON).
Everything it creates is recorded, so tests can count messages per job.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broadcaster.errors import InvalidPayload
from broadcaster.vendor.constants import CREATE_API
from broadcaster.vendor.missions import MAX_PAGE_SIZE, MAX_WINDOW_S, RESULT_API
from broadcaster.vendor.payload import parse_payload
from broadcaster.vendor.sandbox.missions import Mission, MissionRegistry

ERR_TOKEN = 10001
ERR_CONCURRENCY = 10052
ERR_FREQUENCY = 10053
ERR_BAD_BODY = 20001
ERR_BAD_SECRET = 40001
ERR_BAD_PARAM = 40002
NO_SEAT_ERRMSG = "调用此接口需购买基础席位"
_INTEGER = re.compile(r"-?[0-9]{1,15}")


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
    confirm_after_s: float = 5.0
    """A sub-mission waits for its staff's confirmation this long after creation."""
    never_confirm_share: float = 0.0
    """This share of sub-missions is never confirmed (see missions.py for which)."""
    fail_share: float = 0.0
    """This share of missions ends `failed` once `confirm_after_s` has passed."""
    max_processing_s: float = 60.0
    """The vendor abandons a request older than this and creates nothing (`create_late`)."""
    corp_latency_ms: dict[str, float] = field(default_factory=dict)
    """corp_id -> that corp's create latency, in place of `latency_ms` (one slow corp
    beside healthy ones: its trouble must hold no other corp's sends)."""


@dataclass
class Faults:
    http_5xx: int = 0
    hang_after_create: int = 0
    hang_s: float = 30.0
    force_10053: int = 0
    create_late: int = 0
    late_s: float = 3.0
    list_refuse_errcode: int = 0
    list_slow_ms: float = 0.0
    list_malformed: int = 0


@dataclass
class Created:
    seq: int
    corp_id: str
    body: dict[str, Any]
    received_at: float
    """When the create call arrived (for `create_late`, before the mission existed)."""
    mission_id: str = ""
    created_at: float = 0.0
    """When the mission was created."""


@dataclass
class CorpCounters:
    """One (corp, API)'s quota counters."""

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
        self._buckets: dict[tuple[str, str], CorpCounters] = defaultdict(CorpCounters)
        self.created: list[Created] = []
        self.missions = MissionRegistry()
        self.errors: dict[int, int] = defaultdict(int)  # the create call's
        self.list_errors: dict[int, int] = defaultdict(int)
        self.faults_served: dict[str, int] = defaultdict(int)  # injected faults that fired
        self.token_issued = 0
        self.issued_tokens: list[str] = []
        self.calls = 0  # create calls
        self.list_calls = 0
        self.call_log: list[tuple[float, int, str]] = []  # create: (arrival, errcode, corp)
        self._generation = 0  # bumped by reset(): late creations from before it are void
        self._timers: list[threading.Timer] = []
        self._malformed_served = 0  # since the last reset: picks the next variant

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

    # ------------------------------------------------------------ admission (any API)
    def _admit(self, api: str, corp: str, now: float) -> dict[str, Any] | None:
        """The quota rules on (corp, api); None admits the call (it is then in flight).
        Called under the lock."""
        counters = self._buckets[corp, api]
        if counters.blocked_until > now:
            return self._error(ERR_FREQUENCY, "接口调用频率超限", api)
        if counters.in_flight >= self.config.max_in_flight:
            return self._error(ERR_CONCURRENCY, "不可同时有5个请求在处理中", api)
        if error := self._over_frequency(counters, now, api):
            return error
        counters.calls.append(now)
        counters.in_flight += 1
        counters.peak_in_flight = max(counters.peak_in_flight, counters.in_flight)
        return None

    def _over_frequency(
        self, counters: CorpCounters, now: float, api: str
    ) -> dict[str, Any] | None:
        calls = counters.calls
        while calls and calls[0] <= now - 3600:
            calls.popleft()
        last_minute = len(calls) - _first_index_after(calls, now - 60)
        if last_minute >= self.config.per_minute:
            counters.blocked_until = now + self.config.block_s
            return self._error(ERR_FREQUENCY, "接口调用频率超限(分钟)", api)
        if len(calls) >= self.config.per_hour:
            counters.blocked_until = now + self.config.hour_block_s
            return self._error(ERR_FREQUENCY, "接口调用频率超限(小时)", api)
        counters.peak_per_minute = max(counters.peak_per_minute, last_minute + 1)
        return None

    def release(self, corp: str, api: str = CREATE_API) -> None:
        with self._lock:
            self._buckets[corp, api].in_flight -= 1

    # ------------------------------------------------------------ the create call
    def begin_create(self, token: str) -> tuple[str | None, dict[str, Any] | None]:
        """Admission: (corp, None) to go on, or (None, error response)."""
        with self._lock:
            self.calls += 1
            corp = self._corp_of(token)
            self.call_log.append((time.time(), 0, corp or ""))
            if corp is None:
                return None, self._error(ERR_TOKEN, "access_token无效或已过期")
            now = time.time()
            if self.faults.force_10053 > 0:
                self.faults.force_10053 -= 1
                self._buckets[corp, CREATE_API].blocked_until = now + self.config.block_s
            error = self._admit(CREATE_API, corp, now)
            return (None, error) if error else (corp, None)

    def finish_create(self, corp: str, body: Any) -> dict[str, Any]:
        """Validate and record the message (the call was admitted); frees its slot."""
        return self._create(corp, body, None, self._generation)

    def _create(
        self, corp: str, body: Any, received_at: float | None, generation: int
    ) -> dict[str, Any]:
        try:
            parse_payload(body if isinstance(body, dict) else {"_": body})
        except InvalidPayload as exc:
            with self._lock:
                if generation == self._generation:
                    self._buckets[corp, CREATE_API].in_flight -= 1
                return self._error(ERR_BAD_BODY, f"参数错误: {exc}")
        with self._lock:
            if generation != self._generation:  # a reset came in between: forget it
                return {"errcode": 0, "errmsg": "ok"}
            self._buckets[corp, CREATE_API].in_flight -= 1
            now = time.time()
            mission = self.missions.add(corp, body, now)
            self.created.append(
                Created(
                    len(self.created) + 1,
                    corp,
                    body,
                    now if received_at is None else received_at,
                    mission.id,
                    now,
                )
            )
        return {"errcode": 0, "errmsg": "ok"}

    def create_later(self, corp: str, body: Any, received_at: float) -> None:
        """The `create_late` fault: the admitted call stays in flight and its mission is
        created `late_s` after `received_at`, unless that is past `max_processing_s`, when
        the vendor abandons it then and creates nothing."""
        late_s, limit_s = self.faults.late_s, self.config.max_processing_s
        generation = self._generation

        def fire() -> None:
            if late_s <= limit_s:
                self._create(corp, body, received_at, generation)
                return
            with self._lock:
                if generation == self._generation:
                    self._buckets[corp, CREATE_API].in_flight -= 1
                    self.faults_served["create_late_abandoned"] += 1

        delay = min(late_s, limit_s) - (time.time() - received_at)
        timer = threading.Timer(max(0.0, delay), fire)
        timer.daemon = True
        with self._lock:
            self._timers = [t for t in self._timers if t.is_alive()]
            self._timers.append(timer)
        timer.start()

    # ------------------------------------------------------------ the list call
    def begin_list(self, token: str) -> tuple[str | None, dict[str, Any] | None]:
        """Admission on the list's own bucket: (corp, None) to go on, or (None, error)."""
        with self._lock:
            self.list_calls += 1
            corp = self._corp_of(token)
            if corp is None:
                return None, self._error(ERR_TOKEN, "access_token无效或已过期", RESULT_API)
            error = self._admit(RESULT_API, corp, time.time())
            return (None, error) if error else (corp, None)

    def list_missions(self, corp: str, query: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """The answer to an admitted list call (`query` as `parse_qs` gives it)."""
        with self._lock:
            refuse = self.faults.list_refuse_errcode
            if refuse:
                self.faults_served["list_refuse_errcode"] += 1
                return self._error(int(refuse), NO_SEAT_ERRMSG, RESULT_API)
            numbers: dict[str, int] = {}
            for name in ("start_time", "end_time", "limit", "offset"):
                text = (query.get(name) or [""])[0].strip()
                if not _INTEGER.fullmatch(text):
                    return self._bad_param(f"{name}缺失或不是整数")
                numbers[name] = int(text)
            start, end = numbers["start_time"], numbers["end_time"]
            limit, offset = numbers["limit"], numbers["offset"]
            if end < start:
                return self._bad_param("end_time不能早于start_time")
            if end - start > MAX_WINDOW_S:
                return self._bad_param("start_time与end_time间隔不能超过3天")
            if not 1 <= limit <= MAX_PAGE_SIZE:
                return self._bad_param(f"limit取值范围为1-{MAX_PAGE_SIZE}")
            if offset < 0:
                return self._bad_param("offset不能为负数")
            staff = next(iter(query.get("staff_ext_id") or []), None)
            found = self.missions.query(corp, start, end, staff)
            now = time.time()
            return {
                "errcode": 0,
                "errmsg": "ok",
                "missions": [self._view(m, now) for m in found[offset : offset + limit]],
                "total_count": len(found),
            }

    def _bad_param(self, reason: str) -> dict[str, Any]:
        return self._error(ERR_BAD_PARAM, f"参数错误: {reason}", RESULT_API)

    def _view(self, mission: Mission, now: float) -> dict[str, Any]:
        return mission.view(
            now,
            confirm_after_s=self.config.confirm_after_s,
            never_confirm_share=self.config.never_confirm_share,
            fail_share=self.config.fail_share,
        )

    # ------------------------------------------------------------ faults
    def take_fault(self, name: str) -> bool:
        with self._lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
                self.faults_served[name] += 1
                return True
            return False

    def create_delay_s(self, corp: str) -> float:
        """How long a create call takes for this corp (`corp_latency_ms` or `latency_ms`)."""
        return self.config.corp_latency_ms.get(corp, self.config.latency_ms) / 1000

    def block_corp(self, corp: str, seconds: float | None = None) -> None:
        """Block one corp's create calls now, as a 10053 would (`block_s` by default)."""
        with self._lock:
            until = time.time() + (self.config.block_s if seconds is None else seconds)
            self._buckets[corp, CREATE_API].blocked_until = until

    def list_delay_s(self) -> float:
        """How long a list answer takes: the latency, plus `list_slow_ms` (counted)."""
        with self._lock:
            slow = self.faults.list_slow_ms
            if slow > 0:
                self.faults_served["list_slow_ms"] += 1
            return (self.config.latency_ms + max(0.0, slow)) / 1000

    def take_malformed(self) -> int | None:
        """The `list_malformed` fault: which variant (0, 1, 2 in turn) to serve, or None."""
        with self._lock:
            if self.faults.list_malformed <= 0:
                return None
            self.faults.list_malformed -= 1
            self.faults_served["list_malformed"] += 1
            self._malformed_served += 1
            return (self._malformed_served - 1) % 3

    def _error(self, code: int, message: str, api: str = CREATE_API) -> dict[str, Any]:
        if api != CREATE_API:
            self.list_errors[code] += 1
            return {"errcode": code, "errmsg": message}
        self.errors[code] += 1
        if code in (ERR_TOKEN, ERR_CONCURRENCY, ERR_FREQUENCY) and self.call_log:
            self.call_log[-1] = (self.call_log[-1][0], code, self.call_log[-1][2])
        return {"errcode": code, "errmsg": message}

    # ------------------------------------------------------------ inspection
    def stats(self) -> dict[str, Any]:
        """`corps` are the create call's counters (as before the list existed),
        `list_corps` the list's."""
        with self._lock:
            now = time.time()

            def counters(api: str) -> dict[str, Any]:
                return {
                    corp: {
                        "peak_in_flight": c.peak_in_flight,
                        "in_flight": c.in_flight,
                        "peak_per_minute": c.peak_per_minute,
                        "blocked_for_s": max(0.0, c.blocked_until - now),
                    }
                    for (corp, bucket), c in self._buckets.items()
                    if bucket == api
                }

            return {
                "calls": self.calls,
                "created": len(self.created),
                "errors": {str(code): n for code, n in self.errors.items()},
                "token_issued": self.token_issued,
                "faults_served": dict(self.faults_served),
                "corps": counters(CREATE_API),
                "list_calls": self.list_calls,
                "list_errors": {str(code): n for code, n in self.list_errors.items()},
                "list_corps": counters(RESULT_API),
                "missions": len(self.missions),
            }

    def created_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "seq": c.seq,
                    "corp_id": c.corp_id,
                    "body": c.body,
                    "received_at": c.received_at,
                    "mission_id": c.mission_id,
                    "created_at": c.created_at,
                }
                for c in self.created
            ]

    def missions_list(self, corp_id: str | None = None) -> list[dict[str, Any]]:
        """Every mission (of `corp_id`, or of all corps) as the list shows it, oldest first."""
        with self._lock:
            now = time.time()
            return [self._view(m, now) for m in self.missions.all(corp_id)]

    def reset(self) -> None:
        with self._lock:
            self._generation += 1
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
            self._buckets.clear()
            self.created.clear()
            self.missions.clear()
            self.errors.clear()
            self.list_errors.clear()
            self.faults = Faults()
            self.token_issued = 0
            self.calls = 0
            self.list_calls = 0
            self._malformed_served = 0
            self.call_log.clear()

    def close(self) -> None:
        """Cancel late creations still pending (the server is stopping)."""
        with self._lock:
            self._generation += 1
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()


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
