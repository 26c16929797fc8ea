"""How many worker threads keep every configured corp's quota busy (DESIGN §8): the
worker sizes itself with it, and `doctor` checks the shape against it."""

from __future__ import annotations

import math

from broadcaster.corps import CorpDirectory
from broadcaster.settings import Settings

THREADS_PER_CALL = 1.5
"""Threads sized per call a corp may have going (its in-flight limit, plus one waiting
for its paced moment): the share that keeps every corp's calls going when the queue
mixes their jobs."""


MAX_SIZED_THREADS = 64
"""The most threads sizing gives one process: at 100 corps x 4 in flight it would give
379, and a process of 379 threads sent 5 calls/s where one of 64 sent 101 (bench.quota,
2 processes, a loaded 2-core machine): past this, add processes (doctor says so)."""


def sized_threads(settings: Settings, processes: int, threads: int) -> int:
    """Threads per process. WORKER_THREADS, or --threads other than its default, as given;
    else enough that every configured corp can have its in-flight calls going and its
    next call waiting for its moment: (max_in_flight + 1) x THREADS_PER_CALL summed over
    the corps, split over the processes, never below the default (8), at most
    MAX_SIZED_THREADS. With 20 corps at 4 in flight and 2 processes: 64 each, where 2 x 8
    served 0.2-0.24 of the quota."""
    if "worker_threads" in settings.model_fields_set or threads != settings.worker_threads:
        return threads
    corps = CorpDirectory(settings)
    calls = sum(corps.limits(corp).max_in_flight + 1 for corp in corps.known())
    return max(threads, min(MAX_SIZED_THREADS, math.ceil(calls * THREADS_PER_CALL / processes)))
