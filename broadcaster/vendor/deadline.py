"""One overall deadline for a vendor exchange, enforced on every socket read and write.

httpx's timeouts are per operation: a read timeout restarts at each byte, so an answer
that trickles in one byte every 0.8 s keeps a call alive for as long as the vendor (or a
gateway) likes. The in-flight slot that call holds is a lease; when the lease ends first,
other workers take the slot and more than four calls run at once, which the vendor counts
as a violation. So a call must end by a deadline, whatever the peer does.

How: httpcore lets a connection pool use any network backend. `DeadlineBackend` wraps the
default one and clamps the timeout of each connect, read and write to what is left of the
calling thread's deadline (a context variable, set by `deadline_scope`). Once nothing is
left, the next operation raises httpcore's own timeout, which httpx reports as usual. No
watchdog thread, no abandoned request still running behind our back: the socket is
closed by httpx when the timeout propagates.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

_deadline: contextvars.ContextVar[float] = contextvars.ContextVar(
    "broadcaster_vendor_deadline", default=math.inf
)


@contextmanager
def deadline_scope(seconds: float) -> Iterator[float]:
    """Everything in this block must be done `seconds` from now (monotonic clock). A
    scope inside another never extends the outer one's deadline. Yields the deadline."""
    deadline = min(_deadline.get(), time.monotonic() + seconds)
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)


def remaining_s() -> float:
    """Seconds left in the current scope (infinity outside any scope)."""
    return _deadline.get() - time.monotonic()


def deadline_passed() -> bool:
    return remaining_s() <= 0


def _clamp(timeout: float | None) -> float | None:
    left = remaining_s()
    if left == math.inf:
        return timeout
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        clamped = _clamp(timeout)
        if clamped is not None and clamped <= 0:
            raise httpcore.ReadTimeout("the call's deadline passed")
        return self._inner.read(max_bytes, clamped)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        clamped = _clamp(timeout)
        if clamped is not None and clamped <= 0:
            raise httpcore.WriteTimeout("the call's deadline passed")
        self._inner.write(buffer, clamped)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """The default backend, with every operation bounded by the thread's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        clamped = _clamp(timeout)
        if clamped is not None and clamped <= 0:
            raise httpcore.ConnectTimeout("the call's deadline passed")
        stream = self._inner.connect_tcp(host, port, clamped, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        clamped = _clamp(timeout)
        if clamped is not None and clamped <= 0:
            raise httpcore.ConnectTimeout("the call's deadline passed")
        return _DeadlineStream(self._inner.connect_unix_socket(path, clamped, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def deadline_transport(**kwargs: Any) -> httpx.HTTPTransport:
    """An httpx transport whose pool honours `deadline_scope`. httpx builds its pool
    without a way to pass a backend, so the pool's backend is wrapped after the fact
    (`_network_backend` is httpcore's attribute for it, on plain and proxy pools alike;
    tests/integration/test_vendor_hardening.py fails if a release renames it)."""
    transport = httpx.HTTPTransport(**kwargs)
    pool = transport._pool
    pool._network_backend = DeadlineBackend(pool._network_backend)
    return transport
