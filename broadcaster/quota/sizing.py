"""How many worker threads keep every configured corp's quota busy (DESIGN §8): the
worker sizes itself with it, `doctor` checks the shape the workers will run against it,
and `status` the workers alive (`Shortfall`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from broadcaster.corps import CorpDirectory, QuotaLimits
from broadcaster.settings import Settings

LATENCY_SAMPLES = 2000  # recent sent attempts read to measure the vendor's latency
LATENCY_MIN_SAMPLES = 20  # fewer for a corp: no measured latency, the worst case is assumed

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


def threads_needed(limits: QuotaLimits, latency_ms: float | None) -> int:
    """Threads that keep one corp's quota busy: its calls in flight at once. At latency L a
    corp paced at r calls/s has r x L calls in flight (Little's law), never more than
    `max_in_flight`; without a latency, assume the worst: `max_in_flight`."""
    if latency_ms is None:
        return limits.max_in_flight
    busy = math.ceil(limits.per_second * latency_ms / 1000)
    return max(1, min(limits.max_in_flight, busy))


def measured_latency_ms(engine: Engine, default_corp: str | None) -> dict[str, float]:
    """Mean duration of each corp's recent sent calls, from `broadcast_attempts`: the
    time a worker thread is held per call. Corps with too few samples are left out."""
    query = text(
        "SELECT j.corp_id, a.duration_ms FROM broadcast_attempts a "
        "JOIN broadcast_jobs j ON j.id = a.job_id "
        "WHERE a.outcome = 'sent' AND a.duration_ms IS NOT NULL "
        "ORDER BY a.id DESC LIMIT :limit"
    )
    samples: dict[str, list[int]] = {}
    try:
        with engine.connect() as connection:
            rows = connection.execute(query, {"limit": LATENCY_SAMPLES}).all()
    except SQLAlchemyError:
        return {}  # no measured latency: the worst case is assumed
    for corp_id, duration_ms in rows:
        samples.setdefault(corp_id or default_corp or "", []).append(int(duration_ms))
    return {
        corp: sum(values) / len(values)
        for corp, values in samples.items()
        if len(values) >= LATENCY_MIN_SAMPLES
    }


@dataclass(frozen=True)
class Need:
    """Threads the corps' quota keeps busy at once, and on what basis."""

    threads: int
    corps: int
    per_corp: tuple[int, ...]
    latency_known: bool

    @property
    def basis(self) -> str:
        """`20 corps x 4 in flight` (one figure for all), else `3 corps' calls in flight`;
        `at the measured latency` when latency lowered it below the in-flight caps."""
        if not self.per_corp:
            return "no corp configured"
        if len(set(self.per_corp)) == 1:
            shown = f"{self.corps} corp(s) x {self.per_corp[0]} in flight"
        else:
            shown = f"{self.corps} corps' calls in flight"
        return shown + (" at the measured latency" if self.latency_known else "")


def quota_need(
    corps: CorpDirectory, measured: dict[str, float] | None = None, latency_ms: float | None = None
) -> Need:
    """Sum over the configured corps of `threads_needed`: `latency_ms` (an operator's) wins
    over `measured` (per corp); neither: each corp's in-flight cap."""
    per_corp = []
    known_latency = False
    for corp_id in corps.known():
        latency = latency_ms if latency_ms is not None else (measured or {}).get(corp_id)
        known_latency = known_latency or latency is not None
        per_corp.append(threads_needed(corps.limits(corp_id), latency))
    return Need(sum(per_corp), len(per_corp), tuple(per_corp), known_latency)


@dataclass(frozen=True)
class Shortfall:
    """The worker threads alive (one figure per live process) against what the quota
    needs (`status`)."""

    per_process: tuple[int, ...]
    need: Need

    @property
    def processes(self) -> int:
        return len(self.per_process)

    @property
    def threads(self) -> int:
        return sum(self.per_process)

    @property
    def short(self) -> bool:
        return self.threads < self.need.threads

    def line(self) -> str:
        """One line for the operator: what runs, what is needed, and the fix when short,
        e.g. `workers: 2 process(es) x 8 thread(s) = 16 slot(s) < 20 corp(s) x 4 in
        flight = 80: run more worker processes (WORKER_PROCESSES, --processes) or
        WORKER_THREADS=40 (--threads 40)`."""
        need = self.need
        needed = f"{need.basis} = {need.threads}"
        if not self.processes:
            return (
                "workers: none alive (no worker beat in Redis within "
                "BROKER_HEARTBEAT_TIMEOUT_S): nothing is sent; start `broadcaster worker` "
                f"or `broadcaster run` (the quota needs {needed} slot(s))"
            )
        if len(set(self.per_process)) == 1:
            threads = f"x {self.per_process[0]} thread(s)"
        else:
            threads = "(" + " + ".join(str(n) for n in self.per_process) + " threads)"
        shape = f"{self.processes} process(es) {threads} = {self.threads} slot(s)"
        if not self.short:
            return f"workers: {shape} >= {needed}: enough for the quota"
        per_process = math.ceil(need.threads / self.processes)
        if per_process <= MAX_SIZED_THREADS:
            fix = (
                "run more worker processes (WORKER_PROCESSES, --processes) or "
                f"WORKER_THREADS={per_process} (--threads {per_process})"
            )
        else:  # past MAX_SIZED_THREADS a process sends less, not more: more processes
            processes = math.ceil(need.threads / MAX_SIZED_THREADS)
            fix = (
                f"run {processes} worker processes of {MAX_SIZED_THREADS} threads "
                f"(WORKER_PROCESSES={processes} WORKER_THREADS={MAX_SIZED_THREADS}, "
                "over more hosts if the cores run out)"
            )
        return f"workers: {shape} < {needed}: {fix}"
