"""Delivery per campaign for the overview (staff who confirmed, groups reached), kept in
the background like the /metrics figures: `ReportStore.delivery_counts` (what `status`
shows) sums every sent row, seconds at a million rows, so no page ever waits for it.

It is re-read at most every `refresh_s` (the slower of WEB_METRICS_CACHE_S and 30 s:
confirmations arrive over minutes); 0 reads at every call, in the call (tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from broadcaster.jobs.store import JobStore

log = structlog.get_logger("broadcaster.web")
MIN_REFRESH_S = 30.0


@dataclass(frozen=True)
class Reach:
    """One campaign's sent jobs as the vendor's missions tell them."""

    confirmed: int = 0
    staff: int = 0
    reached: int = 0
    unreached: int = 0

    def plus(self, other: Reach) -> Reach:
        return Reach(
            self.confirmed + other.confirmed,
            self.staff + other.staff,
            self.reached + other.reached,
            self.unreached + other.unreached,
        )


@dataclass
class DeliveryTotals:
    store_of: Callable[[], JobStore]
    refresh_s: float
    _by_campaign: dict[str, Reach] | None = None
    _read_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def every(cls, store_of: Callable[[], JobStore], cache_s: float) -> DeliveryTotals:
        return cls(store_of, 0.0 if cache_s == 0 else max(cache_s, MIN_REFRESH_S))

    def by_campaign(self) -> dict[str, Reach]:
        """The totals in hand (empty until the first read is done); a stale one starts a
        read in the background."""
        if self.refresh_s == 0:
            self._read()
        elif time.monotonic() - self._read_at >= self.refresh_s and self._lock.acquire(
            blocking=False
        ):
            reader = threading.Thread(
                target=self._read_and_release, name="console-delivery", daemon=True
            )
            reader.start()
        return self._by_campaign or {}

    def _read_and_release(self) -> None:
        try:
            self._read()
        finally:
            self._lock.release()

    def _read(self) -> None:
        self._read_at = time.monotonic()
        try:
            totals: dict[str, Reach] = {}
            for row in self.store_of().delivery_counts():
                reach = Reach(
                    int(row.confirmed), int(row.staff), int(row.reached), int(row.unreached)
                )
                name = row.campaign or ""
                totals[name] = totals.get(name, Reach()).plus(reach)
            self._by_campaign = totals
        except Exception as exc:  # a failed read keeps the last totals, never a 500
            log.warning("console_delivery_unavailable", error=str(exc))
