"""How many of a worker process's threads one corp may hold at once.

Dramatiq gives every process one queue for all corps, and a thread takes whatever message
comes next. A corp whose calls are slow (or whose next paced moment is far) would let its
queued messages take thread after thread, each waiting for that corp's quota, while
another corp's messages wait behind them. So each corp gets a lane: at most `capacity`
threads of this process inside its quota wait or its call; a message for a full lane is
handed back at once (`sending` -> `scheduled` a second later, no quota spent, no attempt
used) and its thread serves the next message. Twice the corp's in-flight limit keeps every
call slot busy and as many threads waiting for the next paced moment, which is what a corp
at full pace needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LANE_PER_CALL = 2
"""Threads per in-flight call a corp may hold: one calling, one waiting for its moment."""


class CorpLanes:
    """Per-process counts of threads each corp holds; `enter` never blocks."""

    def __init__(self, in_flight_for: Callable[[str], int]) -> None:
        self._in_flight_for = in_flight_for
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def capacity(self, corp_id: str) -> int:
        return max(1, self._in_flight_for(corp_id)) * LANE_PER_CALL

    @contextmanager
    def enter(self, corp_id: str) -> Iterator[bool]:
        """Yields True with a place in the corp's lane held until the block ends, or False
        (nothing held) when the lane is full."""
        capacity = self.capacity(corp_id)
        with self._lock:
            held = self._held.get(corp_id, 0)
            entered = held < capacity
            if entered:
                self._held[corp_id] = held + 1
        try:
            yield entered
        finally:
            if entered:
                with self._lock:
                    self._held[corp_id] -= 1

    def held(self, corp_id: str) -> int:
        with self._lock:
            return self._held.get(corp_id, 0)
