"""The scheduler's and the workers' own metrics, served on `--metrics-port` by
`prometheus_client`'s HTTP server (its exposition; none written by hand).

The web app's `/metrics` counts what the tables say (every process's calls, surviving
restarts); these say what each long-running process is doing now:

- scheduler: `broadcaster_scheduler_ticks_total{result}` and `_tick_seconds`,
  `broadcaster_scheduler_claimed_jobs_total{result="enqueued"|"failed"|"expired"}` (the
  rows its claims took, by what became of them: enqueued is what reached the broker),
  `broadcaster_scheduler_reconcile_passes_total{result="done"|"skipped"|"error"}`,
  `broadcaster_scheduler_reconciled_jobs_total{verdict="found"|"resent"|"failed"|"unsettled"}`.
- workers: `broadcaster_worker_messages_total{outcome}` (each broker message by what it
  came to: `Sender.send`'s Outcome), `broadcaster_worker_vendor_calls_total{outcome}` and
  `broadcaster_worker_vendor_call_seconds` (each create call, timed around the call alone,
  its outcome classified by `jobs.policy.decide` as the sender does).

The workers are several processes (`worker -p N`, restarted by the supervisor), so they
use prometheus_client's multiprocess mode: each writes its figures to files in one
directory (`PROMETHEUS_MULTIPROC_DIR`, set by the supervisor before it starts them), and
the supervisor serves them summed on one port. One scrape target whatever `-p` is, and a
restarted process's counts are not lost (one port per process would need N targets that
move with every restart). The supervisor's own process (and `run`'s scheduler in it)
keeps its values in memory: which kind of value a metric gets is pinned here explicitly
in each process (`prometheus_client.values.ValueClass`), not left to import order.
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.exposition import start_http_server

from broadcaster.errors import SettingsError, VendorError
from broadcaster.jobs.policy import decide
from broadcaster.jobs.states import Outcome
from broadcaster.ports import Vendor

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CALL_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
TICK_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
RECONCILE_VERDICTS = ("found", "resent", "failed", "unsettled")


# ------------------------------------------------------------------ serving
class MetricsServer:
    def __init__(self, server: Any, thread: Any) -> None:
        self._server, self._thread = server, thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve `registry` at http://host:port/metrics (any path answers; port 0: a free one)
    from a daemon thread. Raises SettingsError when it cannot listen."""
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise SettingsError(
            f"--metrics-port: cannot listen on {host}:{port} ({exc.strerror or exc})"
        ) from None
    return MetricsServer(server, thread)


@contextmanager
def serving(
    registry: CollectorRegistry, port: int | None, host: str = "127.0.0.1"
) -> Iterator[MetricsServer | None]:
    """`serve` for the life of a block; nothing when `port` is None."""
    if port is None:
        yield None
        return
    server = serve(registry, port, host)
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ scheduler
class _Tick(Protocol):
    enqueued: int
    failed: int
    expired: int


class _Pass(Protocol):
    skipped: str | None

    def count(self, what: str) -> int: ...


class SchedulerMetrics:
    """The scheduler's figures, in a registry of their own (`run` adds the workers')."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ticks = Counter(
            "broadcaster_scheduler_ticks",
            "Claim ticks by result (error: the tick raised and was logged as tick_failed)",
            ["result"],
            registry=r,
        )
        self.tick_seconds = Histogram(
            "broadcaster_scheduler_tick_seconds",
            "Duration of a claim tick (claim, enqueue and the next due time)",
            buckets=TICK_BUCKETS_S,
            registry=r,
        )
        self.claimed = Counter(
            "broadcaster_scheduler_claimed_jobs",
            "Rows the claims took, by what became of them: enqueued (handed to the "
            "workers), failed (a row that cannot be sent), expired (past expires_at)",
            ["result"],
            registry=r,
        )
        self.passes = Counter(
            "broadcaster_scheduler_reconcile_passes",
            "Reconcile passes by result (skipped: another scheduler held the pass)",
            ["result"],
            registry=r,
        )
        self.reconciled = Counter(
            "broadcaster_scheduler_reconciled_jobs",
            "Jobs a reconcile pass settled by verdict: found at the vendor (sent), resent "
            "(certainly absent), failed, unsettled (the list could not say yet)",
            ["verdict"],
            registry=r,
        )
        for result in ("ok", "error"):
            self.ticks.labels(result)
        for result in ("enqueued", "failed", "expired"):
            self.claimed.labels(result)
        for result in ("done", "skipped", "error"):
            self.passes.labels(result)
        for verdict in RECONCILE_VERDICTS:
            self.reconciled.labels(verdict)

    def tick(self, report: _Tick, seconds: float) -> None:
        self.ticks.labels("ok").inc()
        self.tick_seconds.observe(seconds)
        self.claimed.labels("enqueued").inc(report.enqueued)
        self.claimed.labels("failed").inc(report.failed)
        self.claimed.labels("expired").inc(report.expired)

    def tick_failed(self, seconds: float) -> None:
        self.ticks.labels("error").inc()
        self.tick_seconds.observe(seconds)

    def reconcile_pass(self, report: _Pass) -> None:
        if report.skipped:
            self.passes.labels("skipped").inc()
            return
        self.passes.labels("done").inc()
        for verdict in RECONCILE_VERDICTS:
            self.reconciled.labels(verdict).inc(report.count(verdict))

    def reconcile_failed(self) -> None:
        self.passes.labels("error").inc()


# ------------------------------------------------------------------ workers
def prepare_multiprocess_dir(path: str | None = None) -> str:
    """In the supervisor, before it starts worker processes: the directory their figures
    go to (`path`, else PROMETHEUS_MULTIPROC_DIR if set, else a new temporary one), emptied
    of a previous run's files, and put in the environment the children inherit. This
    process's own metrics stay in memory."""
    path = path or os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="broadcaster-metrics-")
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)
    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.MutexValue
    return path


def multiprocess_registry(
    path: str, registry: CollectorRegistry | None = None
) -> CollectorRegistry:
    """A registry that reads the worker processes' files, summed (to `serve`). `run`
    passes the scheduler's registry, so one port serves both."""
    registry = registry or CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


def mark_process_dead(pid: int | None) -> None:
    """A worker process died: its files' counts stay (counters and histograms are summed
    over live and dead processes); only live gauges, if any are added, would drop it."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and pid:
        multiprocess.mark_process_dead(pid, path)


class WorkerMetrics:
    """One worker process's figures. In a process started by a supervisor that serves
    metrics (PROMETHEUS_MULTIPROC_DIR set) they are written to that directory; else they
    stay in memory, in `registry`, unserved (`in_this_process` returns None then)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry
        self.messages = Counter(
            "broadcaster_worker_messages",
            "Broker messages a worker handled, by what each came to (sent, rejected, "
            "ambiguous, busy, ...; ignored: stale or duplicate; quota_wait: no slot in time)",
            ["outcome"],
            registry=registry,
        )
        self.calls = Counter(
            "broadcaster_worker_vendor_calls",
            "Vendor create calls by outcome (as the job's attempt records it)",
            ["outcome"],
            registry=registry,
        )
        self.call_seconds = Histogram(
            "broadcaster_worker_vendor_call_seconds",
            "Duration of a vendor create call, the call alone (no quota wait, no database)",
            buckets=CALL_BUCKETS_S,
            registry=registry,
        )

    @classmethod
    def in_this_process(cls) -> WorkerMetrics | None:
        """In a worker process: its metrics, written for the supervisor to serve, or None
        when no metrics port is set (PROMETHEUS_MULTIPROC_DIR unset)."""
        if not os.environ.get(MULTIPROC_ENV):
            return None
        values.ValueClass = values.MultiProcessValue()
        return cls(registry=None)

    def handled(self, outcome: Outcome | str) -> None:
        self.messages.labels(str(outcome)).inc()

    def called(self, outcome: Outcome | str, seconds: float) -> None:
        self.calls.labels(str(outcome)).inc()
        self.call_seconds.observe(seconds)


def call_outcome(error: VendorError | None) -> Outcome:
    """What a create call's answer is, as the sender's policy names it."""
    return decide(
        error, attempts_before=0, max_attempts=2, on_ambiguous="reconcile", backoff=lambda _n: 0
    ).outcome


class TimedVendor:
    """The vendor client with each create call counted and timed (a `Vendor`)."""

    def __init__(self, vendor: Vendor, metrics: WorkerMetrics) -> None:
        self.vendor, self.metrics = vendor, metrics

    def create_group_message(self, corp_id: str, body: str) -> None:
        started = time.perf_counter()
        try:
            self.vendor.create_group_message(corp_id, body)
        except VendorError as error:
            self.metrics.called(call_outcome(error), time.perf_counter() - started)
            raise
        except Exception:
            self.metrics.called("crashed", time.perf_counter() - started)
            raise
        self.metrics.called(Outcome.SENT, time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:  # the rest of the client, as is
        return getattr(self.vendor, name)
